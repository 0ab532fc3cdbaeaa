//! The activation token "HashID" nsc and the legacy account server use to name activations.

use data_encoding::BASE32;
use sha2::{Digest, Sha256};

use crate::claims::ActivationClaims;

/// Why a hash id cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashIdError {
    /// `iss`, `sub` or `nats.subject` is empty (Go's message, typo included).
    #[error("not enough data in the activaion claims to create a hash")]
    NotEnoughData,
}

/// The subject up to its first wildcard token; `_` when it starts with one.
pub fn clean_subject(subject: &str) -> String {
    let tokens: Vec<&str> = subject.split('.').collect();
    match tokens.iter().position(|t| *t == "*" || *t == ">") {
        Some(0) => "_".to_owned(),
        Some(n) => tokens[..n].join("."),
        None => subject.to_owned(),
    }
}

/// Base32 (padded) SHA-256 of `iss.sub.<cleaned subject>`.
pub fn hash_id(iss: &str, sub: &str, subject: &str) -> Result<String, HashIdError> {
    if iss.is_empty() || sub.is_empty() || subject.is_empty() {
        return Err(HashIdError::NotEnoughData);
    }
    let base = format!("{iss}.{sub}.{}", clean_subject(subject));
    Ok(BASE32.encode(&Sha256::digest(base.as_bytes())))
}

/// The hash id of an activation's claims.
pub fn activation_hash_id(claims: &ActivationClaims) -> Result<String, HashIdError> {
    hash_id(&claims.iss, &claims.sub, &claims.nats.subject)
}
