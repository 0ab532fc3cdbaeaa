//! Following a primary account server over HTTP: a one-shot import of its pack at startup
//! (the Go v1.0 meaning of `primary`) and on-demand fetches of accounts this instance does not
//! hold yet (the Go v0.8 replica, with a bounded cache instead of an unbounded map). Everything
//! fetched is stored through the accept rule; nothing unverified is served.

use std::time::Duration;

use bytes::Bytes;

use crate::accept::{Accepter, WritePath};

/// What the primary said about an account.
#[derive(Debug)]
pub enum Fetched {
    /// 200 with a body.
    Jwt(Bytes),
    /// 404: the primary does not have it either.
    NotFound,
    /// Unreachable, timed out, or another status.
    Failed(String),
}

/// An HTTP client for the primary.
#[derive(Clone, Debug)]
pub struct Primary {
    base: String,
    client: reqwest::Client,
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
        }
    }

    /// The primary's URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET <primary>/jwt/v1/accounts/<key>`.
    pub async fn fetch(&self, key: &str) -> Fetched {
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
        let (mut stored, mut refused) = (0, 0);
        for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let text = String::from_utf8_lossy(line);
            let Some((key, jwt)) = text.split_once('|') else {
                refused += 1;
                continue;
            };
            match accepter
                .accept(
                    WritePath::Primary,
                    Some(key),
                    jwt.as_bytes(),
                    nas_jwt::unix_now(),
                )
                .await
            {
                Ok(_) => stored += 1,
                Err(e) if e.is_superseded() => stored += 1,
                Err(e) => {
                    refused += 1;
                    tracing::warn!("account {key} from the primary refused: {e}");
                }
            }
        }
        Ok((stored, refused))
    }
}
