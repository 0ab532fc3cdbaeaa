//! Writing v2 tokens: used by our tests, the `init` tool and anything that mints claims.

use serde::Serialize;

use crate::claims::{Account, Activation, Claims, Generic, Operator, User};
use crate::jwt::{base64url_encode, ClaimKind, V2_HEADER};
use crate::nkey::{KeyRole, SigningKey};

/// Why a claim could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// `sub` is empty.
    #[error("subject is not set")]
    NoSubject,
    /// The signer's role may not issue this claim type.
    #[error("invalid signing key of type {role}: expecting {allowed}")]
    SignerRole {
        /// The signer's role.
        role: KeyRole,
        /// The roles allowed.
        allowed: &'static str,
    },
    /// Serialization failed.
    #[error("cannot serialize claims: {0}")]
    Json(String),
}

/// A `nats` object type that knows its claim type.
pub trait NatsClaims: Serialize {
    /// The claim type.
    const KIND: ClaimKind;
    /// Sets `type` and `version` before signing.
    fn stamp(&mut self);
}

macro_rules! typed_nats {
    ($ty:ty, $kind:expr) => {
        impl NatsClaims for $ty {
            const KIND: ClaimKind = $kind;
            fn stamp(&mut self) {
                self.common.kind = Self::KIND.name().to_owned();
                self.common.version = 2;
            }
        }
    };
}

typed_nats!(Operator, ClaimKind::Operator);
typed_nats!(Account, ClaimKind::Account);
typed_nats!(User, ClaimKind::User);
typed_nats!(Activation, ClaimKind::Activation);

impl NatsClaims for Generic {
    const KIND: ClaimKind = ClaimKind::Generic;
    fn stamp(&mut self) {
        self.insert("version".into(), 2.into());
    }
}

/// Signs `claims` with `signer` as jwt v2 does: sets `iss`, `iat` (= `issued_at`), `jti`,
/// `nats.type`/`nats.version`, and returns the token.
pub fn encode<N: NatsClaims>(
    claims: &mut Claims<N>,
    signer: &SigningKey,
    issued_at: i64,
) -> Result<String, EncodeError> {
    if claims.sub.is_empty() {
        return Err(EncodeError::NoSubject);
    }
    let (allowed, names) = N::KIND.allowed_issuers();
    if !allowed.is_empty() && !allowed.contains(&signer.role()) {
        return Err(EncodeError::SignerRole {
            role: signer.role(),
            allowed: names,
        });
    }
    claims.iss = signer.public_key().as_str().to_owned();
    claims.iat = issued_at;
    claims.jti = crate::jti::compute_v2(claims);
    claims.nats.stamp();
    let payload = serde_json::to_vec(claims).map_err(|e| EncodeError::Json(e.to_string()))?;
    let mut token = base64url_encode(V2_HEADER.as_bytes());
    token.push('.');
    token.push_str(&base64url_encode(&payload));
    let signature = signer.sign(token.as_bytes());
    token.push('.');
    token.push_str(&base64url_encode(&signature));
    Ok(token)
}

/// Current Unix time in seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl<N: Default> Claims<N> {
    /// Empty claims about `subject` with a name.
    pub fn new(subject: &str, name: &str) -> Claims<N> {
        Claims {
            sub: subject.to_owned(),
            name: name.to_owned(),
            ..Claims::default()
        }
    }
}

impl Claims<Account> {
    /// Account claims with the limits `nsc add account` writes (unlimited, no JetStream).
    pub fn new_account(subject: &str, name: &str) -> Claims<Account> {
        let mut claims = Claims::<Account>::new(subject, name);
        claims.nats.limits = crate::claims::OperatorLimits::unlimited();
        claims
    }
}

impl Claims<User> {
    /// User claims with unlimited NATS limits, as `nsc add user` writes them.
    pub fn new_user(subject: &str, name: &str) -> Claims<User> {
        let mut claims = Claims::<User>::new(subject, name);
        claims.nats.limits.subs = -1;
        claims.nats.limits.data = -1;
        claims.nats.limits.payload = -1;
        claims
    }
}
