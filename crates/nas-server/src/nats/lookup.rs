//! The HTTP GET fallback over NATS: an account this server does not hold is asked for on
//! `$SYS.REQ.ACCOUNT.<key>.CLAIMS.LOOKUP` (answered by `full` resolvers), as the Go v1.0 server
//! does — but the answer goes through the accept rule before it is served or stored, and an
//! empty answer is a 404 (the Go server's defect D9: unvalidated replies, empty reply = 500).

use std::sync::Arc;
use std::time::Duration;

use async_nats::client::RequestErrorKind;
use async_nats::Client;
use bytes::Bytes;
use moka::future::Cache;

use super::is_connected;
use crate::accept::{AcceptError, Accepter, WritePath};
use crate::cache::Served;
use crate::metrics::Metrics;

/// Keys remembered at most; bounds memory under a flood of GETs for unknown keys.
const MAX_REMEMBERED: u64 = 10_000;

/// Asks nats-servers for accounts on an HTTP GET miss.
pub struct NatsLookup {
    client: Client,
    accepter: Accepter,
    metrics: Arc<Metrics>,
    timeout: Duration,
    /// Single flight per key and a short memory of the answer, so a burst of GETs for one
    /// missing key sends one LOOKUP, not one per request.
    recent: Cache<String, Option<Arc<Served>>>,
}

impl NatsLookup {
    /// `timeout` bounds each LOOKUP (`signrequesttimeout`); answers are remembered for
    /// `remember` (the cache's negative TTL).
    pub fn new(
        client: Client,
        accepter: Accepter,
        metrics: Arc<Metrics>,
        timeout: Duration,
        remember: Duration,
    ) -> NatsLookup {
        NatsLookup {
            client,
            accepter,
            metrics,
            timeout,
            recent: Cache::builder()
                .max_capacity(MAX_REMEMBERED)
                .time_to_live(remember.max(Duration::from_millis(1)))
                .build(),
        }
    }

    fn count(&self, result: &str) {
        self.metrics
            .resolver_requests
            .with_label_values(&["lookup_sent", result])
            .inc();
    }

    /// The verified account from a nats-server, or `None` (not found, no responders, timeout,
    /// refused, or NATS is down — a GET never waits for a reconnect).
    pub async fn fetch(&self, key: &str) -> Option<Arc<Served>> {
        if !is_connected(&self.client) {
            self.count("disconnected");
            return None;
        }
        self.recent.get_with(key.to_owned(), self.ask(key)).await
    }

    async fn ask(&self, key: &str) -> Option<Arc<Served>> {
        let subject = format!("$SYS.REQ.ACCOUNT.{key}.CLAIMS.LOOKUP");
        let started = std::time::Instant::now();
        let asked =
            tokio::time::timeout(self.timeout, self.client.request(subject, Bytes::new())).await;
        let result = match &asked {
            Ok(Ok(_)) => "ok",
            Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => "no_responders",
            Ok(Err(_)) => "error",
            Err(_) => "timeout",
        };
        self.metrics
            .nats_request_duration
            .with_label_values(&["lookup", result])
            .observe(started.elapsed().as_secs_f64());
        let reply = match asked {
            Err(_) => {
                self.count("timeout");
                return None;
            }
            Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => {
                self.count("no_responders");
                return None;
            }
            Ok(Err(e)) => {
                self.count("error");
                tracing::debug!("LOOKUP of {key} over NATS failed: {e}");
                return None;
            }
            Ok(Ok(reply)) => reply,
        };
        if reply.payload.is_empty() {
            self.count("missing");
            return None;
        }
        let now = nas_jwt::unix_now();
        match self
            .accepter
            .accept(
                WritePath::NatsLookup,
                &reply.subject,
                Some(key),
                &reply.payload,
                now,
            )
            .await
        {
            Ok((_, served)) => {
                self.count("found");
                Some(served)
            }
            // A read-only store cannot keep it; serve it verified, without storing.
            Err(AcceptError::ReadOnly(_)) => {
                match self.accepter.check(Some(key), &reply.payload, now) {
                    Ok(verified) => {
                        self.count("found");
                        let token = Bytes::from(verified.token.clone());
                        Some(Arc::new(Served::new(&verified, token)))
                    }
                    Err(e) => self.refused(key, &e),
                }
            }
            Err(e) => self.refused(key, &e),
        }
    }

    fn refused(&self, key: &str, e: &AcceptError) -> Option<Arc<Served>> {
        self.count("refused");
        tracing::warn!("LOOKUP reply for {key} from NATS refused: {e}");
        None
    }
}

#[async_trait::async_trait]
impl crate::resolver::Upstream for NatsLookup {
    async fn fetch(&self, key: &str) -> crate::resolver::Fetched {
        match NatsLookup::fetch(self, key).await {
            Some(served) => crate::resolver::Fetched::Found(served),
            None => crate::resolver::Fetched::Missing,
        }
    }
}
