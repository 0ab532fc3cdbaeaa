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
//!    ([`nas_store::order`]): an older one is refused, identical bytes are a no-op.

use bytes::Bytes;
use nas_jwt::{is_valid_public_key, KeyRole};
use nas_store::{PutOutcome, Store, StoreError};

use crate::cache::{Lookup, VerifiedCache};

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

/// Checks and stores an activation; returns its hash id.
pub async fn accept_activation(
    cache: &VerifiedCache,
    store: &Store,
    body: &[u8],
    now: i64,
) -> Result<String, ActivationError> {
    let (token, claims) = nas_jwt::decode(body)
        .and_then(|j| j.into_activation())
        .map_err(|_| ActivationError::Malformed)?;
    if !is_valid_public_key(&claims.sub, KeyRole::Account) {
        return Err(ActivationError::BadSubject);
    }
    let hash = nas_jwt::activation_hash_id(&claims).map_err(|_| ActivationError::BadHash)?;
    if store.read_only() {
        return Err(ActivationError::ReadOnly);
    }
    let account = if claims.nats.issuer_account.is_empty() {
        &claims.iss
    } else {
        &claims.nats.issuer_account
    };
    check_issuer(cache, account, &claims.iss).await?;
    if claims.exp > 0 && now > claims.exp {
        return Err(ActivationError::Expired);
    }
    if claims.nbf > now {
        return Err(ActivationError::NotYetValid);
    }
    let outcome = store
        .put_activation_if_newer(&hash, Bytes::from(token), claims.iat)
        .await
        .map_err(|e| match e {
            StoreError::ReadOnly => ActivationError::ReadOnly,
            other => ActivationError::Store(other),
        })?;
    match outcome {
        PutOutcome::Stale { stored_iat } => Err(ActivationError::Stale { stored_iat }),
        PutOutcome::TieLost { iat } => Err(ActivationError::Stale { stored_iat: iat }),
        _ => Ok(hash),
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
