//! NATS nkeys and JWTs for the account server: decode (v1 and v2), verify, trust, `jti`,
//! encode/sign, creds and decorated files, activation hash ids.
//!
//! Facts come from `docs/spec/nats-jwt.md`; every behaviour is pinned by the Go-made fixtures in
//! `tests/fixtures/jwt`. No async and no I/O here: callers pass bytes and a clock.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod activation;
pub mod claims;
pub mod creds;
pub mod encode;
pub mod jti;
pub mod jwt;
pub mod nkey;
pub mod trust;
pub mod validate;

pub use activation::{activation_hash_id, hash_id, HashIdError};
pub use claims::{
    AccountClaims, ActivationClaims, Claims, GenericClaims, OperatorClaims, UserClaims,
};
pub use encode::{encode, unix_now, EncodeError};
pub use jwt::{decode, decode_generic, AnyClaims, ClaimKind, Jwt, JwtError, MAX_TOKEN_BYTES};
pub use nkey::{is_valid_public_key, KeyRole, NkeyError, PublicKey, SigningKey};
pub use trust::{
    check_time, decode_account_for, decode_accounts_for, OperatorError, OperatorTrust,
    VerifiedAccount, VerifyError,
};
