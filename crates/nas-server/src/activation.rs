//! The accept rule for activation tokens (`POST /jwt/v1/activations`).
//!
//! The Go server stored any correctly self-signed activation, so any key pair could fill the
//! store. Here an activation is stored only when:
//!
//! 1. it decodes and its signature verifies (Go: "bad activation JWT in request");
//! 2. its subject is an account key and its hash id can be computed (Go's other two answers);
//! 3. it is issued by an account this server serves — verified against the operator like any
//!    GET — or by one of that account's signing keys (then `issuer_account` names the account);
//! 4. it is valid now: not expired, not before its `nbf`;
//! 5. it is newer than what is stored under its hash id, by the ordering rule of accounts
//!    ([`nas_store::order`]): an older one is refused, identical bytes are a no-op;
//! 6. its issuing account holds fewer than `maxactivationsperaccount` (default 1,000) other
//!    activations: one account's keys cannot fill the store. The count is taken from the store
//!    at the first activation write after start, then kept by this instance's own writes
//!    (instances sharing a store each apply the bound to what they know).
//!
//! GET serves a stored activation only when it passes 1–3 again (a tampered store cannot
//! hand out a foreign-signed token), from a small verified cache: this instance's writes
//! replace entries at once, other instances' writes show within [`SERVED_TTL`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use moka::future::Cache;
use nas_jwt::{is_valid_public_key, ActivationClaims, KeyRole};
use nas_store::{PutOutcome, Store, StoreError};

use crate::cache::{Lookup, Served, VerifiedCache};

/// How long a verified activation is served without reading the store again.
pub const SERVED_TTL: Duration = Duration::from_secs(1);
/// Verified activations kept for GET at most.
const SERVED_MAX: u64 = 10_000;

/// Why an activation was refused; mapped to one HTTP status and message at the edge.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// Not a decodable, correctly signed activation.
    #[error("bad activation JWT in request")]
    Malformed,
    /// `sub` is not an account key.
    #[error("bad activation JWT Subject in request")]
    BadSubject,
    /// The hash id cannot be computed.
    #[error("bad activation hash in request")]
    BadHash,
    /// The issuing account is not one this server serves (or the key is not its signing key).
    #[error("untrusted activation issuer: {0} is not an account this server holds, nor one of its signing keys")]
    UnknownIssuer(String),
    /// `exp` has passed.
    #[error("activation JWT has expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("activation JWT is not valid yet")]
    NotYetValid,
    /// The issuing account already holds as many activations as allowed.
    #[error("account {account} already holds {limit} activations (maxactivationsperaccount)")]
    TooMany {
        /// The issuing account.
        account: String,
        /// The bound.
        limit: usize,
    },
    /// A newer (or same-second winning) activation is stored under this hash id.
    #[error("a newer activation is stored for this hash id (stored JWT issued at {stored_iat}); re-issue it")]
    Stale {
        /// `iat` of the stored activation (the offered one's for a same-second loss).
        stored_iat: i64,
    },
    /// The store is read-only.
    #[error("the store is read-only")]
    ReadOnly,
    /// The store failed.
    #[error("error saving activation JWT: {0}")]
    Store(#[source] StoreError),
}

/// Activation tokens: the accept rule, the per-account bound and the verified cache for GET.
#[derive(Clone)]
pub struct Activations {
    accounts: VerifiedCache,
    store: Store,
    max_per_account: usize,
    served: Cache<String, Arc<Served>>,
    /// Hash ids per issuing account, loaded from the store at the first write. The lock also
    /// serializes activation writes, so two writes cannot both take an account's last slot.
    held: Arc<tokio::sync::Mutex<Option<HeldByAccount>>>,
}

impl Activations {
    /// Activations of `store`, issued by the accounts `accounts` serves.
    pub fn new(accounts: VerifiedCache, store: Store, max_per_account: usize) -> Activations {
        Activations {
            accounts,
            store,
            max_per_account,
            served: Cache::builder()
                .max_capacity(SERVED_MAX)
                .time_to_live(SERVED_TTL)
                .build(),
            held: Arc::new(tokio::sync::Mutex::new(None)),
        }
    }

    /// Checks and stores an activation; returns its hash id.
    pub async fn accept(&self, body: &[u8], now: i64) -> Result<String, ActivationError> {
        let (token, claims, hash) = decode_activation(body)?;
        if self.store.read_only() {
            return Err(ActivationError::ReadOnly);
        }
        check_issuer(&self.accounts, issuing_account(&claims), &claims.iss).await?;
        if claims.exp > 0 && now > claims.exp {
            return Err(ActivationError::Expired);
        }
        if claims.nbf > now {
            return Err(ActivationError::NotYetValid);
        }
        let account = issuing_account(&claims).to_owned();
        let mut held = self.held.lock().await;
        if held.is_none() {
            *held = Some(self.count_stored().await.map_err(ActivationError::Store)?);
        }
        let ids = held
            .get_or_insert_with(HashMap::new)
            .entry(account.clone())
            .or_default();
        if !ids.contains(&hash) && ids.len() >= self.max_per_account {
            return Err(ActivationError::TooMany {
                account,
                limit: self.max_per_account,
            });
        }
        let token = Bytes::from(token);
        let outcome = self
            .store
            .put_activation_if_newer(&hash, token.clone(), claims.iat)
            .await
            .map_err(|e| match e {
                StoreError::ReadOnly => ActivationError::ReadOnly,
                other => ActivationError::Store(other),
            })?;
        match outcome {
            PutOutcome::Stale { stored_iat } => Err(ActivationError::Stale { stored_iat }),
            PutOutcome::TieLost { iat } => Err(ActivationError::Stale { stored_iat: iat }),
            _ => {
                ids.insert(hash.clone());
                let served = Arc::new(Served::activation(&claims, token));
                self.served.insert(hash.clone(), served).await;
                Ok(hash)
            }
        }
    }

    /// The stored activation under `hash`, if it still passes the rule's checks 1–3.
    pub async fn get(&self, hash: &str) -> Result<Option<Arc<Served>>, StoreError> {
        if let Some(served) = self.served.get(hash).await {
            return Ok(Some(served));
        }
        let Some(bytes) = self.store.get_activation(hash).await? else {
            return Ok(None);
        };
        match self.verify(&bytes).await {
            Ok((_, claims, id)) if id == hash => {
                let served = Arc::new(Served::activation(&claims, bytes));
                self.served.insert(hash.to_owned(), served.clone()).await;
                Ok(Some(served))
            }
            Err(ActivationError::Store(e)) => Err(e),
            Ok(_) | Err(_) => {
                tracing::warn!("stored activation {hash} does not verify; not served");
                Ok(None)
            }
        }
    }

    /// Checks 1–3 of the rule: decodes, verifies, and finds the issuer among held accounts.
    async fn verify(&self, body: &[u8]) -> Result<Decoded, ActivationError> {
        let (token, claims, hash) = decode_activation(body)?;
        check_issuer(&self.accounts, issuing_account(&claims), &claims.iss).await?;
        Ok((token, claims, hash))
    }

    /// Hash ids of the stored activations by issuing account (undecodable ones count for none).
    async fn count_stored(&self) -> Result<HeldByAccount, StoreError> {
        let mut held = HeldByAccount::new();
        for (hash, bytes) in self.store.activations().await? {
            if let Ok((_, claims)) = nas_jwt::decode(&bytes).and_then(|j| j.into_activation()) {
                held.entry(issuing_account(&claims).to_owned())
                    .or_default()
                    .insert(hash);
            }
        }
        Ok(held)
    }
}

/// Hash ids of stored activations by issuing account.
type HeldByAccount = HashMap<String, HashSet<String>>;

/// A verified activation: its token, claims and hash id.
type Decoded = (String, ActivationClaims, String);

/// Checks 1–2 of the rule: a correctly signed activation for an account, with a hash id.
fn decode_activation(body: &[u8]) -> Result<Decoded, ActivationError> {
    let (token, claims) = nas_jwt::decode(body)
        .and_then(|j| j.into_activation())
        .map_err(|_| ActivationError::Malformed)?;
    if !is_valid_public_key(&claims.sub, KeyRole::Account) {
        return Err(ActivationError::BadSubject);
    }
    let hash = nas_jwt::activation_hash_id(&claims).map_err(|_| ActivationError::BadHash)?;
    Ok((token, claims, hash))
}

/// The account an activation speaks for: `issuer_account` when a signing key issued it.
fn issuing_account(claims: &ActivationClaims) -> &str {
    if claims.nats.issuer_account.is_empty() {
        &claims.iss
    } else {
        &claims.nats.issuer_account
    }
}

/// The issuing account must be served here (so it verified against the operator), and a
/// signing key must be one of its own.
async fn check_issuer(
    cache: &VerifiedCache,
    account: &str,
    signer: &str,
) -> Result<(), ActivationError> {
    let unknown = || ActivationError::UnknownIssuer(signer.to_owned());
    if !is_valid_public_key(account, KeyRole::Account) {
        return Err(unknown());
    }
    let served = match cache.get(account).await {
        Ok(Lookup::Found(served)) => served,
        Ok(Lookup::Missing) => return Err(unknown()),
        Err(e) => return Err(ActivationError::Store((*e).clone())),
    };
    if signer == account {
        return Ok(());
    }
    let claims = nas_jwt::decode(&served.token)
        .and_then(|j| j.into_account())
        .map(|(_, c)| c)
        .map_err(|_| unknown())?;
    if claims.signing_key_strings().any(|k| k == signer) {
        Ok(())
    } else {
        Err(unknown())
    }
}
