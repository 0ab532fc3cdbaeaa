//! The delete rule: an operator-signed generic claim listing accounts (what `nsc push --prune`
//! sends to `$SYS.REQ.CLAIMS.DELETE`, `docs/spec/nats-resolver-protocol.md` §7) deletes them,
//! leaving tombstones. NATS DELETE and HTTP DELETE both call [`Deleter::delete`], so both apply
//! the same checks, with nats-server's wording, and the same ordering rule.

use std::sync::Arc;

use bytes::Bytes;
use nas_jwt::{is_valid_public_key, AnyClaims, KeyRole, OperatorTrust};
use nas_store::{DeleteOutcome, Store, StoreError};
use serde_json::Value;

use crate::audit::{Audit, AuditRecord};
use crate::cache::{Served, VerifiedCache};

/// Why a delete request was refused or only partly applied. The `Display` texts are
/// nats-server's, which `nsc` shows.
#[derive(Debug, thiserror::Error)]
pub enum DeleteRefusal {
    /// `allowdelete` is off.
    #[error("delete must be enabled in server config")]
    Disabled,
    /// The request is not a JWT.
    #[error("{0}")]
    Undecodable(#[source] nas_jwt::JwtError),
    /// Issuer and subject differ.
    #[error("not self signed")]
    NotSelfSigned,
    /// Not signed by the operator or one of its signing keys.
    #[error("not trusted")]
    NotTrusted,
    /// `exp` has passed (nats-server does not check; a captured request must not delete a
    /// re-created account later).
    #[error("request expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("request not yet valid")]
    NotYetValid,
    /// Not a generic claim with an `accounts` array of account keys.
    #[error("malformed request")]
    Malformed,
    /// The list names the system account.
    #[error("not allowed to delete system account")]
    SystemAccount,
    /// HTTP DELETE of one account whose request does not list it.
    #[error("the delete request does not list {0}")]
    NotListed(String),
    /// Some accounts could not be deleted (a newer JWT is stored, the store failed).
    #[error("deleted {deleted} accounts, failed for {} - {}", failures.len(), failures.join("\n"))]
    Partial {
        /// Accounts deleted (or already absent).
        deleted: usize,
        /// One line per account that was not.
        failures: Vec<String>,
        /// Whether a failure was the store being unavailable (retrying may help).
        unavailable: bool,
        /// Whether a failure was a JWT issued after the request (it stays).
        newer_stored: bool,
    },
}

/// A refused delete request: who asked (the claim's subject, empty when unreadable) and why.
#[derive(Debug, thiserror::Error)]
#[error("delete accounts request by {requester} failed - {refusal}")]
pub struct DeleteError {
    /// The requester (the operator key that signed the request).
    pub requester: String,
    /// Why.
    #[source]
    pub refusal: DeleteRefusal,
}

/// Where a delete request arrived (the audit record's path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteVia {
    /// `DELETE /jwt/v1/accounts/<key>`.
    Http,
    /// `$SYS.REQ.CLAIMS.DELETE`.
    Nats,
}

impl DeleteVia {
    fn label(self) -> &'static str {
        match self {
            DeleteVia::Http => "http_delete",
            DeleteVia::Nats => "nats_delete",
        }
    }
}

/// A request that passed the checks.
struct DeleteRequest {
    iat: i64,
    keys: Vec<String>,
    /// The request as received: stored as each tombstone's value.
    token: Bytes,
}

/// Applies delete requests to the store and keeps this instance's cache in step.
#[derive(Clone)]
pub struct Deleter {
    store: Store,
    cache: VerifiedCache,
    trust: Option<Arc<OperatorTrust>>,
    /// The configured system account, protected like the operator's.
    system_account: Option<Arc<Served>>,
    allowed: bool,
    audit: Audit,
}

impl Deleter {
    /// The rule over `store`; `allowed` is `nats { allowdelete }`.
    pub fn new(
        store: Store,
        cache: VerifiedCache,
        trust: Option<Arc<OperatorTrust>>,
        system_account: Option<Arc<Served>>,
        allowed: bool,
    ) -> Deleter {
        let audit = Audit::off();
        Deleter {
            store,
            cache,
            trust,
            system_account,
            allowed,
            audit,
        }
    }

    /// The same rule, recording every decision in `audit`.
    pub fn with_audit(mut self, audit: Audit) -> Deleter {
        self.audit = audit;
        self
    }

    /// Checks `token` and deletes the accounts it lists; returns how many were deleted.
    /// `origin` (remote address or subject) goes into the audit record.
    pub async fn delete(
        &self,
        via: DeleteVia,
        origin: &str,
        token: &[u8],
    ) -> Result<usize, DeleteError> {
        let audit = |outcome| AuditRecord::about(via.label(), origin, token, outcome);
        let Checked { requester, request } = self.check(token).inspect_err(|e| {
            self.audit.record(audit("refused").because(&e.refusal));
        })?;
        self.apply(request, &audit)
            .await
            .map_err(|refusal| DeleteError { requester, refusal })
    }

    /// HTTP DELETE `/accounts/<key>`: checks `token` like [`Deleter::delete`], requires it to
    /// list `key`, and deletes that account only (the URL says what is deleted).
    pub async fn delete_one(
        &self,
        origin: &str,
        token: &[u8],
        key: &str,
    ) -> Result<(), DeleteError> {
        let audit = |outcome| {
            AuditRecord::about(DeleteVia::Http.label(), origin, token, outcome).for_account(key)
        };
        let refused = |e: &DeleteError| self.audit.record(audit("refused").because(&e.refusal));
        let Checked {
            requester,
            mut request,
        } = self.check(token).inspect_err(refused)?;
        if !request.keys.iter().any(|k| k == key) {
            let refusal = DeleteRefusal::NotListed(key.to_owned());
            let e = DeleteError { requester, refusal };
            refused(&e);
            return Err(e);
        }
        request.keys = vec![key.to_owned()];
        self.apply(request, &audit)
            .await
            .map(|_| ())
            .map_err(|refusal| DeleteError { requester, refusal })
    }

    /// nats-server's checks in its order, then ours (expiry, not-before).
    fn check(&self, token: &[u8]) -> Result<Checked, DeleteError> {
        let token = Bytes::copy_from_slice(token.trim_ascii());
        let jwt = nas_jwt::decode_generic(&token).map_err(|e| DeleteError {
            requester: String::new(),
            refusal: DeleteRefusal::Undecodable(e),
        })?;
        let claims = jwt.claims();
        let requester = claims.sub().to_owned();
        let refuse = |refusal| DeleteError {
            requester: requester.clone(),
            refusal,
        };
        if !self.allowed {
            return Err(refuse(DeleteRefusal::Disabled));
        }
        if claims.iss() != claims.sub() {
            return Err(refuse(DeleteRefusal::NotSelfSigned));
        }
        let trusted = self.trust.as_ref();
        if !trusted.is_some_and(|t| t.trusts_delete_request(claims.iss(), claims.sub())) {
            return Err(refuse(DeleteRefusal::NotTrusted));
        }
        let now = nas_jwt::unix_now();
        if claims.exp() > 0 && now > claims.exp() {
            return Err(refuse(DeleteRefusal::Expired));
        }
        if claims.nbf() > now {
            return Err(refuse(DeleteRefusal::NotYetValid));
        }
        let keys = self.listed_accounts(claims).map_err(refuse)?;
        let request = DeleteRequest {
            iat: claims.iat(),
            keys,
            token,
        };
        Ok(Checked { requester, request })
    }

    /// The `accounts` the request lists. nats-server checks entry by entry, so the first
    /// offending entry picks the message.
    fn listed_accounts(&self, claims: &AnyClaims) -> Result<Vec<String>, DeleteRefusal> {
        let AnyClaims::Generic(generic) = claims else {
            return Err(DeleteRefusal::Malformed);
        };
        let Some(Value::Array(accounts)) = generic.nats.get("accounts") else {
            return Err(DeleteRefusal::Malformed);
        };
        let configured = self.system_account.as_ref().map(|s| s.key.as_str());
        let system = self
            .trust
            .as_ref()
            .and_then(|t| t.system_account())
            .or(configured);
        let mut keys = Vec::with_capacity(accounts.len());
        for account in accounts {
            match account.as_str() {
                Some(k) if !is_valid_public_key(k, KeyRole::Account) => {
                    return Err(DeleteRefusal::Malformed)
                }
                Some(k) if Some(k) == system => return Err(DeleteRefusal::SystemAccount),
                Some(k) => keys.push(k.to_owned()),
                None => return Err(DeleteRefusal::Malformed),
            }
        }
        Ok(keys)
    }

    /// Deletes each listed account through the store's ordering rule (a JWT issued after the
    /// request survives it).
    async fn apply(
        &self,
        request: DeleteRequest,
        audit: &(dyn Fn(&'static str) -> AuditRecord + Sync),
    ) -> Result<usize, DeleteRefusal> {
        let iat = request.iat;
        let (mut deleted, mut failures) = (0, Vec::new());
        let (mut unavailable, mut newer_stored) = (false, false);
        for key in &request.keys {
            match self
                .store
                .delete_account_by(key, request.token.clone(), iat)
                .await
            {
                Ok(DeleteOutcome::Deleted | DeleteOutcome::Absent) => {
                    deleted += 1;
                    self.audit.record(audit("deleted").for_account(key));
                    // Read-your-writes on this instance; the change event does the same later.
                    let next = self.store.generation(key).saturating_add(1);
                    self.cache.forget_below(key, next).await;
                }
                Ok(DeleteOutcome::Stale { stored_iat }) => {
                    newer_stored = true;
                    let reason = format!(
                        "the stored account JWT (issued at {stored_iat}) is newer than the delete request (issued at {iat})"
                    );
                    let record = audit("stale").for_account(key).because(&reason);
                    self.audit.record(record);
                    failures.push(format!("{key}: {reason}"));
                }
                Err(e) => {
                    if matches!(e, StoreError::Unavailable(_)) {
                        // The delete may have landed unheard (our own changes are not echoed
                        // back): the cached account must be read again, as after a put.
                        unavailable = true;
                        self.cache.forget_below(key, u64::MAX).await;
                    }
                    self.audit
                        .record(audit("error").for_account(key).because(&e));
                    failures.push(format!("{key}: {e}"));
                }
            }
        }
        if failures.is_empty() {
            Ok(deleted)
        } else {
            Err(DeleteRefusal::Partial {
                deleted,
                failures,
                unavailable,
                newer_stored,
            })
        }
    }
}

/// A checked request and its requester.
struct Checked {
    requester: String,
    request: DeleteRequest,
}
