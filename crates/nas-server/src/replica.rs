//! Following a primary account server over HTTP: a one-shot import of its pack at startup
//! (the Go v1.0 meaning of `primary`) and on-demand fetches of accounts this instance does not
//! hold yet (the Go v0.8 replica, with a bounded cache instead of an unbounded map). Everything
//! fetched is stored through the accept rule; nothing unverified is served.

use std::time::Duration;

use bytes::Bytes;

use crate::accept::{Accepter, WritePath};
use crate::cache::{Lookup, VerifiedCache};
use crate::resolver::{Fetched as Answer, Upstream};

/// What the primary said about an account.
#[derive(Debug, Clone)]
pub enum Fetched {
    /// 200 with a body.
    Jwt(Bytes),
    /// 404: the primary does not have it either.
    NotFound,
    /// Unreachable, timed out, or another status.
    Failed(String),
}

/// How long a "not found" from the primary is remembered: a flood of GETs for random keys
/// on a replica must not become a flood of requests to the primary.
const NOT_FOUND_MEMORY: Duration = Duration::from_secs(1);
/// Keys with a fetch in flight or a remembered "not found", at most.
const MEMORY_ENTRIES: u64 = 100_000;

/// An HTTP client for the primary.
#[derive(Clone)]
pub struct Primary {
    base: String,
    client: reqwest::Client,
    /// Single flight per key (concurrent misses share one request) and a short memory of
    /// "not found".
    recent: moka::future::Cache<String, Fetched>,
}

impl std::fmt::Debug for Primary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Primary").field("base", &self.base).finish()
    }
}

impl Primary {
    /// `base` is the primary's URL (`http(s)://host:port`, a trailing `/` is dropped).
    pub fn new(base: &str, timeout: Duration) -> Primary {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Primary {
            base: base.trim_end_matches('/').to_owned(),
            client,
            recent: moka::future::Cache::builder()
                .max_capacity(MEMORY_ENTRIES)
                .time_to_live(NOT_FOUND_MEMORY)
                .build(),
        }
    }

    /// The primary's URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET <primary>/jwt/v1/accounts/<key>`, once for all concurrent callers; a "not found"
    /// is remembered for a second, anything else is asked again next time.
    pub async fn fetch(&self, key: &str) -> Fetched {
        let fetched = self
            .recent
            .get_with_by_ref(key, self.fetch_uncached(key))
            .await;
        if !matches!(fetched, Fetched::NotFound) {
            self.recent.invalidate(key).await;
        }
        fetched
    }

    async fn fetch_uncached(&self, key: &str) -> Fetched {
        let url = format!("{}/jwt/v1/accounts/{key}", self.base);
        match self.client.get(&url).send().await {
            Ok(res) if res.status() == reqwest::StatusCode::OK => match res.bytes().await {
                Ok(body) => Fetched::Jwt(body),
                Err(e) => Fetched::Failed(e.to_string()),
            },
            Ok(res) if res.status() == reqwest::StatusCode::NOT_FOUND => Fetched::NotFound,
            Ok(res) => Fetched::Failed(format!("primary answered {}", res.status())),
            Err(e) => Fetched::Failed(e.to_string()),
        }
    }

    /// Imports `<primary>/jwt/v1/pack?max=<max>` through the accept rule; returns how many
    /// accounts were stored or already current, and how many were refused.
    pub async fn import_pack(
        &self,
        max: i64,
        accepter: &Accepter,
    ) -> Result<(usize, usize), String> {
        let url = format!("{}/jwt/v1/pack?max={max}", self.base);
        let res = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if res.status() != reqwest::StatusCode::OK {
            return Err(format!(
                "server returned status {:?}",
                res.status().to_string()
            ));
        }
        let body = res.bytes().await.map_err(|e| e.to_string())?;
        let merged = crate::pack::merge(accepter, WritePath::Primary, &self.base, &body).await;
        let (stored, refused) = (merged.changed + merged.kept, merged.refused);
        Ok((stored, refused))
    }
}

/// The primary as the resolver's [`Upstream`]: what it sends is stored through the accept rule
/// (path `primary`) and served only then.
pub struct PrimaryUpstream {
    primary: Primary,
    accepter: Accepter,
    cache: VerifiedCache,
    validity: Duration,
}

impl PrimaryUpstream {
    /// Follows `primary`; accounts are asked for again once older than `validity`.
    pub fn new(
        primary: Primary,
        accepter: Accepter,
        cache: VerifiedCache,
        validity: Duration,
    ) -> PrimaryUpstream {
        PrimaryUpstream {
            primary,
            accepter,
            cache,
            validity,
        }
    }
}

#[async_trait::async_trait]
impl Upstream for PrimaryUpstream {
    async fn fetch(&self, key: &str) -> Answer {
        let body = match self.primary.fetch(key).await {
            Fetched::Jwt(body) => body,
            Fetched::NotFound => return Answer::Missing,
            Fetched::Failed(e) => {
                return Answer::Unreachable(format!(
                    "the primary account server {} is unreachable, try again: {e}",
                    self.primary.base()
                ))
            }
        };
        let now = nas_jwt::unix_now();
        match self
            .accepter
            .accept(
                WritePath::Primary,
                self.primary.base(),
                Some(key),
                &body,
                now,
            )
            .await
        {
            Ok((_, served)) => Answer::Found(served),
            // We already hold a newer JWT (a notification overtook the primary's answer): keep
            // serving ours.
            Err(e) if e.is_superseded() => match self.cache.get(key).await {
                Ok(Lookup::Found(served)) => Answer::Found(served),
                _ => Answer::Missing,
            },
            Err(e) => {
                tracing::warn!("account {key} from the primary refused: {e}");
                Answer::Missing
            }
        }
    }

    fn validity(&self) -> Option<Duration> {
        Some(self.validity)
    }
}
