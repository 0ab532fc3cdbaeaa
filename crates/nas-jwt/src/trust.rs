//! Trust: which operator keys may issue account JWTs, and the one function that turns raw bytes
//! into a verified account.

use crate::claims::AccountClaims;
use std::collections::HashMap;

use ed25519_dalek::VerifyingKey;

use crate::jwt::{decode, decode_account_with_keys, decode_many_accounts_with_keys, JwtError};
use crate::nkey::{KeyRole, NkeyError, PublicKey};

/// The operator as configured: identity key, signing keys, strict mode, system account.
#[derive(Debug, Clone)]
pub struct OperatorTrust {
    /// Decoded verifying keys of the identity and signing keys: account JWTs are verified
    /// without decompressing the issuer's curve point each time.
    keys: HashMap<String, VerifyingKey>,
    identity: String,
    signing_keys: Vec<String>,
    strict: bool,
    system_account: Option<String>,
    account_server_url: Option<String>,
}

/// Why an operator could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperatorError {
    /// The operator JWT does not decode.
    #[error("operator JWT does not decode: {0}")]
    Decode(#[from] JwtError),
    /// The operator JWT is not self-signed by its identity key or one of its signing keys.
    #[error(
        "operator JWT is signed by {0}, which is neither the operator nor one of its signing keys"
    )]
    NotSelfSigned(String),
    /// A key in the operator JWT is malformed.
    #[error("operator JWT lists an invalid {field} {key:?}: {reason}")]
    BadKey {
        /// Which field.
        field: &'static str,
        /// The key text.
        key: String,
        /// Why.
        reason: NkeyError,
    },
}

impl OperatorTrust {
    /// Builds trust from an operator JWT (raw or decorated).
    pub fn from_operator_jwt(token: &[u8]) -> Result<OperatorTrust, OperatorError> {
        let text = String::from_utf8_lossy(token);
        let token = crate::creds::extract_jwt(&text);
        let (_, claims) = decode(token.as_bytes())?.into_operator()?;
        let identity = PublicKey::parse_role(&claims.sub, KeyRole::Operator).map_err(|reason| {
            OperatorError::BadKey {
                field: "subject",
                key: claims.sub.clone(),
                reason,
            }
        })?;
        for key in &claims.nats.signing_keys {
            PublicKey::parse_role(key, KeyRole::Operator).map_err(|reason| {
                OperatorError::BadKey {
                    field: "signing key",
                    key: key.clone(),
                    reason,
                }
            })?;
        }
        if claims.iss != claims.sub && !claims.nats.signing_keys.contains(&claims.iss) {
            return Err(OperatorError::NotSelfSigned(claims.iss));
        }
        let system_account =
            (!claims.nats.system_account.is_empty()).then(|| claims.nats.system_account.clone());
        if let Some(sys) = &system_account {
            PublicKey::parse_role(sys, KeyRole::Account).map_err(|reason| {
                OperatorError::BadKey {
                    field: "system_account",
                    key: sys.clone(),
                    reason,
                }
            })?;
        }
        let mut keys = HashMap::new();
        for key in std::iter::once(&claims.sub).chain(&claims.nats.signing_keys) {
            if let Ok(vk) = PublicKey::parse(key).and_then(|k| k.verifying_key()) {
                keys.insert(key.clone(), vk);
            }
        }
        Ok(OperatorTrust {
            keys,
            identity: identity.as_str().to_owned(),
            signing_keys: claims.nats.signing_keys.clone(),
            strict: claims.nats.strict_signing_key_usage,
            system_account,
            account_server_url: (!claims.nats.account_server_url.is_empty())
                .then(|| claims.nats.account_server_url.clone()),
        })
    }

    /// Trust built from keys directly (tests, tools).
    pub fn new(identity: &str, signing_keys: Vec<String>, strict: bool) -> OperatorTrust {
        let keys = std::iter::once(identity)
            .chain(signing_keys.iter().map(String::as_str))
            .filter_map(|k| {
                Some((
                    k.to_owned(),
                    PublicKey::parse(k).ok()?.verifying_key().ok()?,
                ))
            })
            .collect();
        OperatorTrust {
            keys,
            identity: identity.to_owned(),
            signing_keys,
            strict,
            system_account: None,
            account_server_url: None,
        }
    }

    /// The operator identity key.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The operator signing keys.
    pub fn signing_keys(&self) -> &[String] {
        &self.signing_keys
    }

    /// Whether only signing keys may issue accounts.
    pub fn strict(&self) -> bool {
        self.strict
    }

    /// The system account named by the operator JWT.
    pub fn system_account(&self) -> Option<&str> {
        self.system_account.as_deref()
    }

    /// The account server URL named by the operator JWT.
    pub fn account_server_url(&self) -> Option<&str> {
        self.account_server_url.as_deref()
    }

    /// Whether `key` is the identity key or a signing key (regardless of strict mode).
    pub fn is_operator_key(&self, key: &str) -> bool {
        key == self.identity || self.signing_keys.iter().any(|k| k == key)
    }

    /// Whether `issuer` may issue account JWTs (Go's `OperatorClaims.DidSign`).
    pub fn trusts_issuer(&self, issuer: &str) -> bool {
        self.signing_keys.iter().any(|k| k == issuer) || (!self.strict && issuer == self.identity)
    }

    /// The check nats-server applies to a CLAIMS.DELETE request: self-signed (`iss == sub`) by a
    /// key the operator trusts.
    pub fn trusts_delete_request(&self, iss: &str, sub: &str) -> bool {
        iss == sub && self.trusts_issuer(iss)
    }
}

/// Why an account JWT is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Does not decode or verify.
    #[error("{0}")]
    Decode(#[from] JwtError),
    /// `sub` is not an account key.
    #[error("subject {0:?} is not a valid account public key")]
    SubjectNotAccount(String),
    /// `sub` is not the account asked for.
    #[error("JWT subject {found} does not match the account {expected}")]
    SubjectMismatch {
        /// The key in the request.
        expected: String,
        /// The token's `sub`.
        found: String,
    },
    /// Self-signed account (never trusted by nats-server).
    #[error(
        "account JWT is self-signed; it must be signed by the operator or one of its signing keys"
    )]
    SelfSigned,
    /// Signed by the identity key of a strict operator.
    #[error("operator requires issuer to be a signing key")]
    StrictIdentityKey,
    /// Signed by a key the operator does not list.
    #[error("account JWT issuer {0} is not trusted by the operator")]
    Untrusted(String),
    /// `exp` has passed.
    #[error("claim is expired")]
    Expired {
        /// The `exp` value.
        exp: i64,
    },
    /// `nbf` is in the future.
    #[error("claim is not yet valid")]
    NotYetValid {
        /// The `nbf` value.
        nbf: i64,
    },
    /// A blocking validation issue in the claims.
    #[error("account validation failed: {0}")]
    Invalid(String),
}

/// An account JWT that decoded, verified, is trusted and was time-valid when checked.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedAccount {
    /// The exact token text.
    pub token: String,
    /// The parsed claims.
    pub claims: AccountClaims,
}

/// The time checks of §7.2: expired when `now > exp`, not yet valid when `nbf > now`.
pub fn check_time(exp: i64, nbf: i64, now: i64) -> Result<(), VerifyError> {
    if exp > 0 && now > exp {
        return Err(VerifyError::Expired { exp });
    }
    if nbf > 0 && nbf > now {
        return Err(VerifyError::NotYetValid { nbf });
    }
    Ok(())
}

impl OperatorTrust {
    /// Decodes, verifies and checks an account JWT: signature, account claims, `sub` is an
    /// account key (and equals `expected_key` when given), issuer trusted by this operator,
    /// blocking validation issues, and time validity at `now` (Unix seconds).
    pub fn verify_account(
        &self,
        token: &[u8],
        expected_key: Option<&str>,
        now: i64,
    ) -> Result<VerifiedAccount, VerifyError> {
        let verified = self.verify_account_untimed(token, expected_key)?;
        check_time(verified.claims.exp, verified.claims.nbf, now)?;
        Ok(verified)
    }

    /// [`verify_account`](Self::verify_account) without the time checks: what a server needs
    /// before serving a stored token, since expired tokens are still served (nats-server decides).
    pub fn verify_account_untimed(
        &self,
        token: &[u8],
        expected_key: Option<&str>,
    ) -> Result<VerifiedAccount, VerifyError> {
        let keys = |iss: &str| self.keys.get(iss).copied();
        self.trusted_untimed(decode_account_with_keys(token, &keys), expected_key)
    }

    /// [`verify_account_untimed`](Self::verify_account_untimed) of many `(token, key)` pairs,
    /// each result what a call for that pair alone gives; the signatures are checked as one
    /// batch ([`decode_many_accounts_with_keys`]), several times cheaper per token than one by one.
    pub fn verify_accounts_untimed(
        &self,
        items: &[(&[u8], &str)],
    ) -> Vec<Result<VerifiedAccount, VerifyError>> {
        let keys = |iss: &str| self.keys.get(iss).copied();
        let tokens: Vec<&[u8]> = items.iter().map(|(token, _)| *token).collect();
        decode_many_accounts_with_keys(&tokens, &keys)
            .into_iter()
            .zip(items)
            .map(|(jwt, (_, key))| self.trusted_untimed(jwt, Some(key)))
            .collect()
    }

    fn trusted_untimed(
        &self,
        jwt: Result<crate::Jwt, JwtError>,
        expected_key: Option<&str>,
    ) -> Result<VerifiedAccount, VerifyError> {
        let verified = account_from(jwt?, expected_key)?;
        self.check_account_claims(&verified.claims, None)?;
        Ok(verified)
    }

    /// The trust, validation and (when `now` is given) time checks on claims that were already
    /// decoded and signature-verified.
    pub fn check_account_claims(
        &self,
        claims: &AccountClaims,
        now: Option<i64>,
    ) -> Result<(), VerifyError> {
        if !self.trusts_issuer(&claims.iss) {
            return Err(if claims.iss == claims.sub {
                VerifyError::SelfSigned
            } else if self.strict && claims.iss == self.identity {
                VerifyError::StrictIdentityKey
            } else {
                VerifyError::Untrusted(claims.iss.clone())
            });
        }
        if let Some(issue) = crate::validate::account_errors(claims).into_iter().next() {
            return Err(VerifyError::Invalid(issue));
        }
        if let Some(now) = now {
            check_time(claims.exp, claims.nbf, now)?;
        }
        Ok(())
    }
}

impl PartialEq for OperatorTrust {
    fn eq(&self, other: &Self) -> bool {
        self.identity == other.identity
            && self.signing_keys == other.signing_keys
            && self.strict == other.strict
            && self.system_account == other.system_account
    }
}

/// Decodes and verifies the signature of an account JWT and checks its subject, without any
/// operator: what can be known about a token when no operator is configured.
pub fn decode_account_for(
    token: &[u8],
    expected_key: Option<&str>,
) -> Result<VerifiedAccount, VerifyError> {
    account_from(decode_account_with_keys(token, &no_keys)?, expected_key)
}

fn no_keys(_: &str) -> Option<ed25519_dalek::VerifyingKey> {
    None
}

/// [`decode_account_for`] of many `(token, key)` pairs, signatures checked as one batch.
pub fn decode_accounts_for(items: &[(&[u8], &str)]) -> Vec<Result<VerifiedAccount, VerifyError>> {
    let tokens: Vec<&[u8]> = items.iter().map(|(token, _)| *token).collect();
    decode_many_accounts_with_keys(&tokens, &no_keys)
        .into_iter()
        .zip(items)
        .map(|(jwt, (_, key))| account_from(jwt?, Some(key)))
        .collect()
}

fn account_from(
    jwt: crate::Jwt,
    expected_key: Option<&str>,
) -> Result<VerifiedAccount, VerifyError> {
    let (token, claims) = jwt.into_account()?;
    if PublicKey::parse_role(&claims.sub, KeyRole::Account).is_err() {
        return Err(VerifyError::SubjectNotAccount(claims.sub));
    }
    if let Some(expected) = expected_key {
        if claims.sub != expected {
            return Err(VerifyError::SubjectMismatch {
                expected: expected.to_owned(),
                found: claims.sub,
            });
        }
    }
    Ok(VerifiedAccount { token, claims })
}
