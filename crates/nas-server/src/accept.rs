//! The one rule every write path goes through (HTTP POST, NATS updates, pack merges, replica
//! fills): size → decode → subject → issuer → trust (strict mode) → validation and time →
//! newer-wins store write (the ordering rule of [`nas_store::order`], tombstones included) →
//! cache install stamped with the write's sequence number. Nothing writes around it.
//!
//! Notifications are not sent from here: the store calls its observers (the notifier among
//! them) with each change while the key's lock is held, so nats-servers hear one account's
//! changes in the order they were stored, whatever order the requests finish in.

use std::sync::Arc;

use bytes::Bytes;
use nas_jwt::{
    is_valid_public_key, JwtError, KeyRole, OperatorTrust, VerifyError, MAX_TOKEN_BYTES,
};
use nas_store::{PutOutcome, Store, StoreError, TokenMeta};

use crate::audit::{Audit, AuditRecord};
use crate::cache::{Served, VerifiedCache};
use crate::metrics::Metrics;

/// Why a JWT was refused. Each variant maps to one HTTP status and message at the edge.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// Body over the size limit.
    #[error("JWT of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Bytes received.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not a decodable, correctly signed account JWT.
    #[error("bad JWT in request: {0}")]
    Malformed(JwtError),
    /// The key in the URL/subject is not the JWT's `sub`.
    #[error("pub keys don't match: the JWT is for {sub}, not {key}")]
    KeyMismatch {
        /// Key the client addressed.
        key: String,
        /// The token's subject.
        sub: String,
    },
    /// `sub` is not an account key.
    #[error("bad JWT Subject in request")]
    SubjectNotAccount,
    /// Self-signed account JWT and no signing service.
    #[error("Signing service not enabled")]
    SelfSigned,
    /// Issued by an account key other than the subject.
    #[error("Bad JWT Issuer in request")]
    IssuerNotOperator,
    /// No operator is configured, so nothing can be trusted.
    #[error("untrusted issuer in request: no operator is configured on this account server")]
    NoOperator,
    /// Signed by an operator key the configured operator does not list.
    #[error("untrusted issuer in request: {0} is not the operator or one of its signing keys")]
    Untrusted(String),
    /// Signed by the identity key of a strict operator.
    #[error("untrusted issuer in request: operator requires issuer to be a signing key")]
    StrictIdentityKey,
    /// Blocking validation issues, time checks included.
    #[error("The server was unable to update your account JWT. One more more validation issues occurred.")]
    Invalid(Vec<String>),
    /// Older than the stored JWT.
    #[error("JWT is older than the stored one (issued at {new_iat}, stored JWT issued at {stored_iat}); re-issue it")]
    Stale {
        /// `iat` of the stored JWT.
        stored_iat: i64,
        /// `iat` of the refused JWT.
        new_iat: i64,
    },
    /// A different JWT issued in the same second is stored and wins the tie-break.
    #[error("a different JWT for this account issued in the same second (iat {iat}) is already stored; re-issue the JWT (wait a second, then edit the account again) and push it")]
    SameSecond {
        /// The `iat` both JWTs share.
        iat: i64,
    },
    /// The account was deleted by a request issued at or after this JWT.
    #[error("the account was deleted by a request issued at {deleted_at} (this JWT was issued at {new_iat}); only a JWT issued after the deletion re-creates it")]
    Deleted {
        /// `iat` of the delete request.
        deleted_at: i64,
        /// `iat` of the refused JWT.
        new_iat: i64,
    },
    /// The store is read-only.
    #[error("this account server's store is read-only; {0}")]
    ReadOnly(String),
    /// The store failed.
    #[error("error saving JWT: {0}")]
    Store(StoreError),
}

impl AcceptError {
    /// Whether the JWT was refused only because its issuer is not trusted (self-signed,
    /// another account, an unknown operator key): what the signing service may fix.
    pub fn is_untrusted_issuer(&self) -> bool {
        matches!(
            self,
            AcceptError::SelfSigned
                | AcceptError::IssuerNotOperator
                | AcceptError::Untrusted(_)
                | AcceptError::NoOperator
        )
    }

    /// Whether the store holds something that ranks above the offered JWT (an older JWT, a
    /// same-second loser, a deleted account): the offer is not wrong, just overtaken.
    pub fn is_superseded(&self) -> bool {
        matches!(
            self,
            AcceptError::Stale { .. }
                | AcceptError::SameSecond { .. }
                | AcceptError::Deleted { .. }
        )
    }
}

/// What an accepted write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// A new account.
    Created,
    /// A newer JWT replaced the stored one.
    Updated,
    /// The same JWT (same `jti`) was already stored.
    Unchanged,
}

impl Accepted {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Accepted::Created => "created",
            Accepted::Updated => "updated",
            Accepted::Unchanged => "unchanged",
        }
    }
}

/// Where a write came from: decides the metric label and whether nats-servers must be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WritePath {
    /// HTTP POST (`nsc push` over HTTP).
    Http,
    /// An update received over NATS: every nats-server got the same message, so it is never
    /// re-published (the Go server's defect D4).
    NatsUpdate,
    /// A line of a PACK reply merged from a nats-server or another account server.
    PackMerge,
    /// Imported from a primary account server.
    Primary,
    /// The answer to our own LOOKUP on an HTTP GET miss: a nats-server already holds it, and
    /// those that lack it fetch it themselves, so it is not re-published.
    NatsLookup,
}

impl WritePath {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            WritePath::Http => "http",
            WritePath::NatsUpdate => "nats_update",
            WritePath::PackMerge => "pack_merge",
            WritePath::Primary => "primary",
            WritePath::NatsLookup => "nats_lookup",
        }
    }

    fn notifies(self) -> bool {
        !matches!(self, WritePath::NatsUpdate | WritePath::NatsLookup)
    }
}

/// Everything the accept rule needs.
#[derive(Clone)]
pub struct Accepter {
    store: Store,
    trust: Option<Arc<OperatorTrust>>,
    cache: VerifiedCache,
    metrics: Arc<Metrics>,
    audit: Audit,
    read_only_hint: String,
}

impl Accepter {
    /// Builds the rule. `read_only_hint` tells clients of a read-only store where to write.
    pub fn new(
        store: Store,
        trust: Option<Arc<OperatorTrust>>,
        cache: VerifiedCache,
        metrics: Arc<Metrics>,
        read_only_hint: String,
    ) -> Accepter {
        let audit = Audit::off();
        Accepter {
            store,
            trust,
            cache,
            metrics,
            audit,
            read_only_hint,
        }
    }

    /// The same rule, recording every decision in `audit`.
    pub fn with_audit(mut self, audit: Audit) -> Accepter {
        self.audit = audit;
        self
    }

    /// The operator, if configured.
    pub fn trust(&self) -> Option<&Arc<OperatorTrust>> {
        self.trust.as_ref()
    }

    /// Checks a JWT without storing it: everything up to (not including) newer-wins.
    pub fn check(
        &self,
        key: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<nas_jwt::VerifiedAccount, AcceptError> {
        if body.len() > MAX_TOKEN_BYTES + 1 {
            return Err(AcceptError::TooLarge {
                size: body.len(),
                limit: MAX_TOKEN_BYTES,
            });
        }
        if let Some(trust) = &self.trust {
            reject_foreign_operator(trust, body)?;
        }
        let (token, claims) = nas_jwt::decode(body)
            .and_then(|jwt| jwt.into_account())
            .map_err(|e| match e {
                JwtError::TooLarge(size) => AcceptError::TooLarge {
                    size,
                    limit: MAX_TOKEN_BYTES,
                },
                other => AcceptError::Malformed(other),
            })?;
        check_subject_and_issuer(key, &claims)?;
        let Some(trust) = &self.trust else {
            return Err(AcceptError::NoOperator);
        };
        // One parse and one signature check (against `iss`, now known to be trusted or
        // refused just below): the trust and validation rules run on the decoded claims.
        trust
            .check_account_claims(&claims, Some(now))
            .map(|()| nas_jwt::VerifiedAccount { token, claims })
            .map_err(AcceptError::from)
    }

    /// Verifies and stores an account JWT arriving on `path`.
    /// `origin` (a remote address, a subject, a primary's URL) goes into the audit record.
    pub async fn accept(
        &self,
        path: WritePath,
        origin: &str,
        key: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<(Accepted, Arc<Served>), AcceptError> {
        let result = self.accept_inner(path, key, body, now).await;
        let label = match &result {
            Ok((outcome, _)) => outcome.label(),
            Err(e) if e.is_superseded() => "stale",
            Err(AcceptError::Store(_)) => "store_error",
            Err(AcceptError::ReadOnly(_)) => "read_only",
            Err(_) => "rejected",
        };
        self.metrics
            .writes
            .with_label_values(&[path.label(), label])
            .inc();
        self.audit_decision(path, origin, body, &result);
        result
    }

    /// Background merges repeat the same accounts every interval: for them, only changes and
    /// refusals are worth a line.
    fn audit_decision(
        &self,
        path: WritePath,
        origin: &str,
        body: &[u8],
        result: &Result<(Accepted, Arc<Served>), AcceptError>,
    ) {
        if !self.audit.is_on() {
            return;
        }
        let background = matches!(
            path,
            WritePath::PackMerge | WritePath::Primary | WritePath::NatsLookup
        );
        let record = |outcome| AuditRecord::about(path.label(), origin, body, outcome);
        let record = match result {
            Ok((Accepted::Unchanged, _)) if background => return,
            Ok((accepted, _)) => record(accepted.label()),
            Err(e) if e.is_superseded() && background => return,
            Err(e) if e.is_superseded() => record("stale").because(e),
            Err(e @ AcceptError::Store(_)) => record("error").because(e),
            Err(e) => record("refused").because(e),
        };
        self.audit.record(record);
    }

    async fn accept_inner(
        &self,
        path: WritePath,
        key: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<(Accepted, Arc<Served>), AcceptError> {
        let verified = self.check(key, body, now)?;
        if self.store.read_only() {
            return Err(AcceptError::ReadOnly(self.read_only_hint.clone()));
        }
        let claims = &verified.claims;
        let meta = TokenMeta {
            jti: claims.jti.clone(),
            iat: claims.iat,
            exp: claims.exp,
        };
        // Store the canonical token (a trailing newline from the client is dropped).
        let token = Bytes::from(verified.token.clone());
        let written = self
            .store
            .put_account(&claims.sub, token.clone(), &meta, path.notifies())
            .await;
        if matches!(written, Err(StoreError::Unavailable(_))) {
            // The write may have landed without our hearing of it (our own announcements are
            // not echoed back): the cached version may be superseded, so it is read again.
            self.cache.forget_below(&claims.sub, u64::MAX).await;
        }
        let written = written.map_err(|e| match e {
            StoreError::ReadOnly => AcceptError::ReadOnly(self.read_only_hint.clone()),
            other => AcceptError::Store(other),
        })?;
        let new_iat = claims.iat;
        let accepted = match written.outcome {
            PutOutcome::Created => Accepted::Created,
            PutOutcome::Replaced { .. } => Accepted::Updated,
            PutOutcome::Unchanged => Accepted::Unchanged,
            PutOutcome::Stale { stored_iat } => {
                return Err(AcceptError::Stale {
                    stored_iat,
                    new_iat,
                })
            }
            PutOutcome::TieLost { iat } => return Err(AcceptError::SameSecond { iat }),
            PutOutcome::Deleted { deleted_at } => {
                return Err(AcceptError::Deleted {
                    deleted_at,
                    new_iat,
                })
            }
        };
        // The stored bytes are exactly `token` in every accepted case (Unchanged means
        // identical bytes), so the verified entry is what the store holds at `written.seq`;
        // installing it also restarts a replica's validity period for the entry.
        let served = Arc::new(Served::new(&verified, token));
        self.cache.install(served.clone(), written.seq).await;
        if accepted != Accepted::Unchanged {
            tracing::info!(
                "updated JWT for account - {} - {}",
                short_key(&served.key),
                served.jti
            );
        }
        Ok((accepted, served))
    }
}

/// Refuses, before any signature check, a token whose `iss` is an operator key this server does
/// not trust: a flood of foreign-signed tokens costs a base64 and JSON pass each, not an
/// ed25519 verification. Anything it cannot read goes on to the full decode, which says why.
fn reject_foreign_operator(trust: &OperatorTrust, body: &[u8]) -> Result<(), AcceptError> {
    let Ok(payload) = nas_jwt::jwt::peek_payload(body) else {
        return Ok(());
    };
    let Some(iss) = payload.get("iss").and_then(|v| v.as_str()) else {
        return Ok(());
    };
    let is_operator = is_valid_public_key(iss, KeyRole::Operator);
    if is_operator && !trust.is_operator_key(iss) {
        return Err(AcceptError::Untrusted(iss.to_owned()));
    }
    Ok(())
}

/// The first 12 characters of a key, for log lines (the whole key when shorter).
pub fn short_key(key: &str) -> &str {
    key.get(..12).unwrap_or(key)
}

/// The subject is the account named in the URL (when there is one) and an account key; the
/// issuer is an operator key (a self-signed account gets its own message).
fn check_subject_and_issuer(
    key: Option<&str>,
    claims: &nas_jwt::AccountClaims,
) -> Result<(), AcceptError> {
    if let Some(key) = key {
        if claims.sub != key {
            return Err(AcceptError::KeyMismatch {
                key: key.to_owned(),
                sub: claims.sub.clone(),
            });
        }
    }
    if !is_valid_public_key(&claims.sub, KeyRole::Account) {
        return Err(AcceptError::SubjectNotAccount);
    }
    if !is_valid_public_key(&claims.iss, KeyRole::Operator) {
        return Err(if claims.iss == claims.sub {
            AcceptError::SelfSigned
        } else {
            AcceptError::IssuerNotOperator
        });
    }
    Ok(())
}

impl From<VerifyError> for AcceptError {
    fn from(e: VerifyError) -> AcceptError {
        match e {
            VerifyError::StrictIdentityKey => AcceptError::StrictIdentityKey,
            VerifyError::Untrusted(iss) => AcceptError::Untrusted(iss),
            VerifyError::SelfSigned => AcceptError::SelfSigned,
            VerifyError::Invalid(issue) => AcceptError::Invalid(vec![issue]),
            e @ (VerifyError::Expired { .. } | VerifyError::NotYetValid { .. }) => {
                AcceptError::Invalid(vec![e.to_string()])
            }
            VerifyError::Decode(e) => AcceptError::Malformed(e),
            VerifyError::SubjectNotAccount(_) => AcceptError::SubjectNotAccount,
            VerifyError::SubjectMismatch { expected, found } => AcceptError::KeyMismatch {
                key: expected,
                sub: found,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CacheOptions;
    use nas_jwt::{encode, AccountClaims, SigningKey};
    use nas_store::memory::MemoryBackend;

    fn accepter(trusted: &SigningKey) -> Accepter {
        let store = Store::new(Arc::new(MemoryBackend::new()));
        let trust = Arc::new(OperatorTrust::new(
            trusted.public_key().as_str(),
            Vec::new(),
            false,
        ));
        let metrics = Arc::new(Metrics::new());
        let cache = VerifiedCache::new(
            store.clone(),
            Some(trust.clone()),
            metrics.clone(),
            &CacheOptions::default(),
        );
        Accepter::new(store, Some(trust), cache, metrics, String::new())
    }

    /// A foreign operator's token is refused before its signature is looked at: one with a
    /// broken signature gets the same answer as a well-signed one (a signature check first
    /// would call it malformed).
    #[tokio::test]
    async fn a_foreign_issuer_is_refused_before_any_signature_check() {
        let ours = SigningKey::generate(KeyRole::Operator);
        let foreign = SigningKey::generate(KeyRole::Operator);
        let account = SigningKey::generate(KeyRole::Account);
        let mut claims = AccountClaims::new_account(account.public_key().as_str(), "A");
        let token = encode(&mut claims, &foreign, nas_jwt::unix_now()).expect("encode");
        let mut broken = token.clone().into_bytes();
        let last = broken.len() - 2;
        broken[last] = if broken[last] == b'A' { b'B' } else { b'A' };
        let accepter = accepter(&ours);
        for body in [token.as_bytes(), &broken[..]] {
            match accepter.check(None, body, nas_jwt::unix_now()) {
                Err(AcceptError::Untrusted(iss)) => assert_eq!(iss, foreign.public_key().as_str()),
                other => panic!("{other:?}"),
            }
        }
        // A token of our operator with a broken signature is still refused, as malformed.
        let good = encode(&mut claims, &ours, nas_jwt::unix_now()).expect("encode");
        let mut tampered = good.into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(matches!(
            accepter.check(None, &tampered, nas_jwt::unix_now()),
            Err(AcceptError::Malformed(_))
        ));
    }
}
