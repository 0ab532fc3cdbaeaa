//! "Find the account for this key": the one lookup chain every front end uses (HTTP GET, NATS
//! LOOKUP, and anything else that needs an account).
//!
//! The chain, in order:
//! 1. the verified cache (hot path; only valid keys are ever cached, so an invalid key is
//!    refused only on a miss);
//! 2. the store, through the cache (single-flight, negative caching, stale-if-error);
//! 3. the configured system account, for its own key, when the store does not hold it;
//! 4. an [`Upstream`] when the store misses (a replica's primary, or full resolvers over NATS):
//!    what it returns has been through the accept rule and stored; an account an upstream
//!    vouches for is asked again once it is older than [`Upstream::validity`].
//!
//! The answer is a domain outcome, never an HTTP response: front ends render it.

use std::sync::Arc;
use std::time::Duration;

use nas_jwt::{is_valid_public_key, KeyRole};
use nas_store::StoreError;

use crate::cache::{Lookup, Served, VerifiedCache};

/// What the chain found.
#[derive(Debug, Clone)]
pub enum Resolved {
    /// A verified account (or the configured system account).
    Found(Arc<Served>),
    /// Nobody has it (or the key is not an account key).
    Missing,
    /// The store failed and nothing verified is at hand.
    StoreUnavailable(Arc<StoreError>),
    /// The upstream could not be asked; the message says which and why.
    UpstreamUnreachable(String),
}

/// What an upstream said.
#[derive(Debug, Clone)]
pub enum Fetched {
    /// The account, accepted and stored.
    Found(Arc<Served>),
    /// It does not have it (or what it sent was refused).
    Missing,
    /// It could not be asked.
    Unreachable(String),
}

/// Where to look when the store misses.
#[async_trait::async_trait]
pub trait Upstream: Send + Sync {
    /// Asks for `key`. Whatever comes back has been through the accept rule and stored.
    async fn fetch(&self, key: &str) -> Fetched;

    /// How long an account obtained from this upstream is served before asking again
    /// (`None`: until a change is learnt of).
    fn validity(&self) -> Option<Duration> {
        None
    }
}

/// The lookup chain.
#[derive(Clone)]
pub struct Resolver {
    cache: VerifiedCache,
    system_account: Option<Arc<Served>>,
    upstream: Option<Arc<dyn Upstream>>,
}

impl Resolver {
    /// A chain over `cache`, with the configured system account and an optional upstream.
    pub fn new(
        cache: VerifiedCache,
        system_account: Option<Arc<Served>>,
        upstream: Option<Arc<dyn Upstream>>,
    ) -> Resolver {
        Resolver {
            cache,
            system_account,
            upstream,
        }
    }

    /// The whole chain (steps 1–4).
    pub async fn resolve(&self, key: &str) -> Resolved {
        match self.resolve_local(key).await {
            Resolved::Found(served) => self.refresh_if_due(served).await,
            Resolved::Missing if is_valid_public_key(key, KeyRole::Account) => {
                match &self.upstream {
                    Some(upstream) => from_upstream(upstream.fetch(key).await),
                    None => Resolved::Missing,
                }
            }
            other => other,
        }
    }

    /// Steps 1–3 only: what this instance can answer by itself (a NATS LOOKUP is answered from
    /// here; asking other servers on their behalf would loop).
    pub async fn resolve_local(&self, key: &str) -> Resolved {
        let looked_up = match self.cache.get_cached(key).await {
            Some(hit) => Ok(hit),
            None if !is_valid_public_key(key, KeyRole::Account) => return Resolved::Missing,
            None => self.cache.load_miss(key).await,
        };
        match looked_up {
            Ok(Lookup::Found(served)) => Resolved::Found(served),
            Ok(Lookup::Missing) => match &self.system_account {
                Some(sys) if sys.key == key => Resolved::Found(sys.clone()),
                _ => Resolved::Missing,
            },
            Err(e) => Resolved::StoreUnavailable(e),
        }
    }

    /// An account older than the upstream's validity is asked for again; an unreachable
    /// upstream keeps what we have (the Go v0.8 replica's behaviour), a "missing" is followed.
    async fn refresh_if_due(&self, served: Arc<Served>) -> Resolved {
        let Some(upstream) = &self.upstream else {
            return Resolved::Found(served);
        };
        match upstream.validity() {
            Some(validity) if served.loaded_at.elapsed() > validity => {
                match upstream.fetch(&served.key).await {
                    Fetched::Found(fresh) => Resolved::Found(fresh),
                    Fetched::Missing => Resolved::Missing,
                    Fetched::Unreachable(_) => Resolved::Found(served),
                }
            }
            _ => Resolved::Found(served),
        }
    }
}

fn from_upstream(fetched: Fetched) -> Resolved {
    match fetched {
        Fetched::Found(served) => Resolved::Found(served),
        Fetched::Missing => Resolved::Missing,
        Fetched::Unreachable(why) => Resolved::UpstreamUnreachable(why),
    }
}
