//! The self-signed account flow (`signrequestsubject`; `docs/spec/http-api.md` §4.5): a POSTed
//! account JWT whose issuer is not trusted is sent over NATS to the operator's signing service;
//! a signed answer then goes through the accept rule like any other upload, anything else is
//! passed back to the client. The Go server's checks and messages, in its order.

use std::time::Duration;

use bytes::Bytes;
use nas_store::{Store, StoreError};

/// The signing service on NATS.
#[derive(Clone)]
pub struct SigningService {
    client: Option<async_nats::Client>,
    subject: String,
    timeout: Duration,
}

/// What came of asking for a signature.
#[derive(Debug, PartialEq, Eq)]
pub enum Signed {
    /// An account JWT came back: it replaces the upload (and is then checked as one).
    Jwt(Bytes),
    /// Something else came back ("your request will be audited"): passed to the client as is,
    /// nothing stored.
    Pending(String),
}

/// Why the flow stopped. `Display` is the Go server's message.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// No stored account and the upload is not signed by the account itself.
    #[error("bad JWT Issuer/Subject pair in request")]
    IssuerSubjectPair,
    /// A stored account exists, and it or the upload is not self-signed.
    #[error("bad JWT issuer is not trusted")]
    NotTrusted,
    /// The stored account could not be read.
    #[error("error reading the stored account JWT: {0}")]
    Store(#[source] StoreError),
    /// Not connected to NATS.
    #[error("Failure during signature request. nats-server unavailable.")]
    NotConnected,
    /// No answer within `signrequesttimeout`.
    #[error("Failure during signature request. signing service unavailable.")]
    Timeout,
    /// Any other request failure (no responders, …).
    #[error("Failure during signature request. Try again at a later time. Error: {0}")]
    Failed(String),
}

impl SigningService {
    /// The service on `subject`, asked through `client` (`None`: NATS not configured).
    pub fn new(client: Option<async_nats::Client>, subject: String, timeout: Duration) -> Self {
        SigningService {
            client,
            subject,
            timeout,
        }
    }

    /// §4.5 for an upload of `key` whose issuer `iss` is not trusted.
    pub async fn sign(
        &self,
        store: &Store,
        key: &str,
        iss: &str,
        token: &[u8],
    ) -> Result<Signed, SigningError> {
        let stored = store.get_account(key).await.map_err(SigningError::Store)?;
        match stored {
            None if iss != key => return Err(SigningError::IssuerSubjectPair),
            Some(stored) if iss != key || !self_signed(&stored) => {
                return Err(SigningError::NotTrusted)
            }
            _ => {}
        }
        self.request(token).await
    }

    async fn request(&self, token: &[u8]) -> Result<Signed, SigningError> {
        let client = self.client.as_ref().ok_or(SigningError::NotConnected)?;
        if client.connection_state() != async_nats::connection::State::Connected {
            return Err(SigningError::NotConnected);
        }
        let payload = Bytes::copy_from_slice(token);
        let asked = client.request(self.subject.clone(), payload);
        let reply = match tokio::time::timeout(self.timeout, asked).await {
            Err(_) => return Err(SigningError::Timeout),
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::TimedOut => {
                return Err(SigningError::Timeout)
            }
            Ok(Err(e)) => return Err(SigningError::Failed(e.to_string())),
            Ok(Ok(reply)) => reply.payload,
        };
        let is_account = nas_jwt::decode(&reply).is_ok_and(|jwt| jwt.into_account().is_ok());
        Ok(if is_account {
            Signed::Jwt(reply)
        } else {
            Signed::Pending(String::from_utf8_lossy(&reply).into_owned())
        })
    }
}

/// Whether a stored account JWT is signed by the account itself.
fn self_signed(token: &[u8]) -> bool {
    nas_jwt::jwt::peek_payload(token).is_ok_and(|claims| {
        let field = |name: &str| claims.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        field("iss").is_some() && field("iss") == field("sub")
    })
}
