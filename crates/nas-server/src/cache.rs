//! The verified-JWT cache: the hot path of `GET /jwt/v1/accounts/<key>`.
//!
//! A hit costs a hash lookup and an `Arc` clone: no store read, no signature check, no parsing.
//! A miss loads once per key however many requests wait (moka's single-flight `try_get_with`),
//! verifies signature, subject and trust, and caches the result; unknown keys are cached as
//! missing for a short time so a flood of misses does not become a flood of store reads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::future::Cache;
use moka::Expiry;
use nas_jwt::{decode_account_for, OperatorTrust, VerifiedAccount};
use nas_store::{Store, StoreError};

use crate::metrics::Metrics;

/// A verified account JWT ready to be served, with its response headers precomputed.
#[derive(Debug)]
pub struct Served {
    /// The account key.
    pub key: String,
    /// The token bytes exactly as stored.
    pub token: Bytes,
    /// `jti` claim.
    pub jti: String,
    /// `"<jti>"`, the ETag.
    pub etag: String,
    /// `exp` claim (0 = never).
    pub exp: i64,
    /// `iat` claim.
    pub iat: i64,
    /// `name` claim.
    pub name: String,
    /// When this entry was verified (a replica re-asks its primary after a while).
    pub loaded_at: Instant,
}

impl Served {
    /// Builds the served form of a verified account.
    pub fn new(verified: &VerifiedAccount, token: Bytes) -> Served {
        let claims = &verified.claims;
        Served {
            key: claims.sub.clone(),
            token,
            etag: format!("\"{}\"", claims.jti),
            jti: claims.jti.clone(),
            exp: claims.exp,
            iat: claims.iat,
            name: claims.name.clone(),
            loaded_at: Instant::now(),
        }
    }

    /// `Cache-Control` at `now`: never negative (the Go server's defect D5). Tokens without `exp`
    /// get `no-cache` so caches revalidate with the ETag.
    pub fn cache_control(&self, now: i64) -> actix_web::http::header::HeaderValue {
        use actix_web::http::header::HeaderValue;
        if self.exp <= 0 {
            return HeaderValue::from_static("no-cache");
        }
        let max_age = (self.exp - now).max(0);
        let text = format!("max-age={max_age}, stale-while-revalidate=3600, stale-if-error=3600");
        // Digits and ASCII punctuation only: always a valid header value.
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("no-cache"))
    }

    /// Whether `exp` has passed at `now`.
    pub fn expired(&self, now: i64) -> bool {
        self.exp > 0 && now > self.exp
    }
}

/// What the cache knows about a key.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// A verified JWT.
    Found(Arc<Served>),
    /// Nothing servable (absent, or stored but failing verification).
    Missing,
}

/// Cache sizing.
#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// Maximum number of keys held.
    pub max_entries: u64,
    /// Time after which a verified entry is reloaded (for stores shared by several instances);
    /// `None` keeps entries until evicted or invalidated.
    pub ttl: Option<Duration>,
    /// How long an unknown key is remembered as missing.
    pub negative_ttl: Duration,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            max_entries: 100_000,
            ttl: None,
            negative_ttl: Duration::from_secs(1),
        }
    }
}

struct PerEntryExpiry {
    ttl: Option<Duration>,
    negative_ttl: Duration,
}

impl Expiry<String, Lookup> for PerEntryExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Lookup,
        _now: Instant,
    ) -> Option<Duration> {
        match value {
            Lookup::Found(_) => self.ttl,
            Lookup::Missing => Some(self.negative_ttl),
        }
    }

    fn expire_after_update(
        &self,
        key: &String,
        value: &Lookup,
        now: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, value, now)
    }
}

/// The verified cache in front of a [`Store`].
#[derive(Clone)]
pub struct VerifiedCache {
    cache: Cache<String, Lookup>,
    /// The last verified JWT per account, without TTL: served when a reload fails because the
    /// store is unreachable (stale-if-error), so an outage never turns a known account into 503.
    last_good: Cache<String, Arc<Served>>,
    store: Store,
    trust: Option<Arc<OperatorTrust>>,
    metrics: Arc<Metrics>,
}

impl VerifiedCache {
    /// Creates the cache and starts invalidating it from the store's change events.
    pub fn new(
        store: Store,
        trust: Option<Arc<OperatorTrust>>,
        metrics: Arc<Metrics>,
        options: &CacheOptions,
    ) -> VerifiedCache {
        let evictions = metrics.cache_evictions.clone();
        let cache = Cache::builder()
            .max_capacity(options.max_entries)
            .expire_after(PerEntryExpiry {
                ttl: options.ttl,
                negative_ttl: options.negative_ttl,
            })
            .eviction_listener(move |_key, _value, cause| {
                if cause.was_evicted() {
                    evictions.inc();
                }
            })
            .build();
        let this = VerifiedCache {
            cache,
            last_good: Cache::new(options.max_entries),
            store,
            trust,
            metrics,
        };
        this.spawn_invalidation();
        this
    }

    fn spawn_invalidation(&self) {
        let mut events = self.store.subscribe();
        let cache = self.cache.clone();
        let last_good = self.last_good.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(event) => {
                        // Only an entry that differs from the new value is dropped: our own
                        // accepted writes insert the verified entry themselves (before or after
                        // the event arrives), and an absent entry has nothing to invalidate.
                        let current = cache.get(&event.key).await;
                        let stale = match (&current, &event.new) {
                            (None, _) => false,
                            (Some(Lookup::Found(served)), Some(new)) => served.token != *new,
                            _ => true,
                        };
                        if stale {
                            cache.invalidate(&event.key).await;
                        }
                        if event.new.is_none() {
                            last_good.invalidate(&event.key).await;
                        }
                    }
                    // Missed events: drop everything rather than serve something stale.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        cache.invalidate_all()
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
    }

    /// The cached answer for `key`, if any (no store access).
    pub async fn get_cached(&self, key: &str) -> Option<Lookup> {
        let hit = self.cache.get(key).await;
        if hit.is_some() {
            self.metrics.cache_hits.inc();
        }
        hit
    }

    /// Looks `key` up (the caller has checked it is an account key).
    pub async fn get(&self, key: &str) -> Result<Lookup, Arc<StoreError>> {
        if let Some(hit) = self.get_cached(key).await {
            return Ok(hit);
        }
        self.metrics.cache_misses.inc();
        match self.cache.try_get_with_by_ref(key, self.load(key)).await {
            Ok(Lookup::Found(served)) => {
                self.last_good.insert(key.to_owned(), served.clone()).await;
                Ok(Lookup::Found(served))
            }
            Err(e) if matches!(*e, StoreError::Unavailable(_)) => {
                match self.last_good.get(key).await {
                    Some(stale) => {
                        tracing::warn!(
                            account = key,
                            "store unavailable, serving the last verified JWT: {e}"
                        );
                        Ok(Lookup::Found(stale))
                    }
                    None => Err(e),
                }
            }
            other => other,
        }
    }

    async fn load(&self, key: &str) -> Result<Lookup, StoreError> {
        let Some(bytes) = self.store.get_account(key).await? else {
            return Ok(Lookup::Missing);
        };
        match self.verify(key, &bytes) {
            Ok(verified) => {
                self.metrics.verifications.with_label_values(&["ok"]).inc();
                Ok(Lookup::Found(Arc::new(Served::new(&verified, bytes))))
            }
            Err(reason) => {
                self.metrics
                    .verifications
                    .with_label_values(&["rejected"])
                    .inc();
                tracing::warn!(account = key, %reason, "stored JWT fails verification; not serving it");
                Ok(Lookup::Missing)
            }
        }
    }

    /// Verification of a stored token: signature, subject, trust; not time (expired tokens are
    /// served, as the Go server does; `?check=true` filters them).
    fn verify(&self, key: &str, bytes: &[u8]) -> Result<VerifiedAccount, nas_jwt::VerifyError> {
        match &self.trust {
            Some(trust) => trust.verify_account_untimed(bytes, Some(key)),
            None => decode_account_for(bytes, Some(key)),
        }
    }

    /// Puts a token that was just verified and stored (saves the reload on the next GET).
    pub async fn insert(&self, served: Arc<Served>) {
        self.last_good
            .insert(served.key.clone(), served.clone())
            .await;
        self.cache
            .insert(served.key.clone(), Lookup::Found(served))
            .await;
    }

    /// Forgets `key` (the stale-if-error copy is kept until a deletion is seen).
    pub async fn invalidate(&self, key: &str) {
        self.cache.invalidate(key).await;
    }

    /// Number of entries (approximate).
    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }
}
