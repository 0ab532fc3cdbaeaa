//! The JWT store: a small [`Backend`] trait every storage implements, and [`Store`], the policy
//! written once above it (newer-wins, change events, the PACK hash, expiry filtering).
//!
//! Backends only know bytes under keys in two namespaces, with compare-and-swap; they never parse
//! JWTs. Everything that gives the bytes meaning lives in [`Store`], so every backend behaves the
//! same (the conformance suite in `tests/conformance` runs against each of them).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use nas_jwt::{is_valid_public_key, KeyRole};
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, watch};

pub mod dir;
pub mod memory;
pub mod nsc;

/// The two kinds of things stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Namespace {
    /// Account JWTs, keyed by account public nkey.
    Accounts,
    /// Activation tokens, keyed by their hash id (not an nkey).
    Activations,
}

impl Namespace {
    /// Name used in paths and messages.
    pub fn name(self) -> &'static str {
        match self {
            Namespace::Accounts => "accounts",
            Namespace::Activations => "activations",
        }
    }
}

/// An opaque token naming one stored value; it changes on every write of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(pub String);

/// The condition a [`Backend::put`] checks atomically before writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// Write unconditionally.
    Any,
    /// Write only if the key does not exist.
    Absent,
    /// Write only if the key's current version is this one.
    Matches(Version),
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Not an account nkey / activation hash id (also: anything that could escape a directory).
    #[error("invalid {} key {key:?}", ns.name())]
    InvalidKey {
        /// Namespace.
        ns: Namespace,
        /// The key as given.
        key: String,
    },
    /// The store does not accept writes.
    #[error("the store is read-only")]
    ReadOnly,
    /// A compare-and-swap precondition did not hold (someone else wrote first).
    #[error("the stored value changed concurrently")]
    Conflict,
    /// The backend cannot be reached (answer 503, retry later).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A local I/O error.
    #[error("store I/O error: {0}")]
    Io(String),
    /// A stored value cannot be read as what it should be.
    #[error("corrupt entry {key}: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}

/// The primitives a storage implements. Guarantees every implementation gives:
///
/// * `put` is atomic: a concurrent `get` sees the old or the new value, never a mix, and the
///   precondition is checked and the value written as one step; when the precondition does not
///   hold nothing is written and [`StoreError::Conflict`] is returned.
/// * A successful `put` is durable when it returns (for persistent backends).
/// * `list` streams the keys present at some point during the call (no key is listed twice).
/// * Keys are validated by [`Store`] before they reach a backend; backends still refuse keys that
///   could address anything outside their own space.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug + 'static {
    /// Short name for metrics and logs (`dir`, `memory`, `nsc`, `s3`, `redis`).
    fn kind(&self) -> &'static str;
    /// The value and its version, or `None`.
    async fn get(&self, ns: Namespace, key: &str) -> Result<Option<(Bytes, Version)>, StoreError>;
    /// Writes `value` if `pre` holds; returns the new version.
    async fn put(
        &self,
        ns: Namespace,
        key: &str,
        value: Bytes,
        pre: Precondition,
    ) -> Result<Version, StoreError>;
    /// Removes the key; `false` if it was absent.
    async fn delete(&self, ns: Namespace, key: &str) -> Result<bool, StoreError>;
    /// The keys of a namespace.
    async fn list(
        &self,
        ns: Namespace,
    ) -> Result<BoxStream<'static, Result<String, StoreError>>, StoreError>;
    /// Whether the backend is reachable.
    async fn health(&self) -> Result<(), StoreError>;
    /// Whether writes are refused.
    fn read_only(&self) -> bool {
        false
    }
    /// Account keys changed by someone else (a watched directory, nsc, another instance).
    fn external_changes(&self) -> Option<broadcast::Receiver<String>> {
        None
    }
}

/// What newer-wins needs to know about a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenMeta {
    /// `jti`.
    pub jti: String,
    /// `iat`.
    pub iat: i64,
    /// `exp` (0 = never).
    pub exp: i64,
}

impl TokenMeta {
    /// Reads the claims of stored bytes without verifying them (they were verified on write).
    pub fn read(bytes: &[u8]) -> Result<TokenMeta, StoreError> {
        let payload = nas_jwt::jwt::peek_payload(bytes).map_err(|e| StoreError::Corrupt {
            key: String::new(),
            reason: e.to_string(),
        })?;
        let text = |k: &str| {
            payload
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let int = |k: &str| payload.get(k).and_then(|v| v.as_i64()).unwrap_or(0);
        Ok(TokenMeta {
            jti: text("jti"),
            iat: int("iat"),
            exp: int("exp"),
        })
    }

    /// Whether `exp` has passed at `now`.
    pub fn expired(&self, now: i64) -> bool {
        self.exp > 0 && now > self.exp
    }
}

/// What [`Store::put_account_if_newer`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    /// The key was new.
    Created,
    /// An older JWT was replaced.
    Replaced {
        /// The replaced bytes.
        previous: Bytes,
    },
    /// The same JWT (same `jti`) is stored; nothing written.
    Unchanged,
    /// The stored JWT is newer; nothing written.
    Stale {
        /// `iat` of the stored JWT.
        stored_iat: i64,
    },
}

/// One effective change of an account (never sent for `Unchanged`/`Stale`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeEvent {
    /// The account key.
    pub key: String,
    /// Bytes before (if we know them).
    pub old: Option<Bytes>,
    /// Bytes after (`None` = deleted).
    pub new: Option<Bytes>,
    /// Made by someone else (a watched directory, nsc, another instance), not through this
    /// store: such changes have not been verified or announced yet.
    pub external: bool,
}

/// The PACK hash: XOR of SHA-256 of every stored account JWT, kept per key so each change
/// updates it in O(1) instead of rereading the store.
#[derive(Default)]
struct PackHash {
    per_key: HashMap<String, [u8; 32]>,
    total: [u8; 32],
    /// Keys written or deleted while the initial scan runs: the scan must not overwrite them.
    touched_during_scan: Option<std::collections::HashSet<String>>,
}

fn xor(into: &mut [u8; 32], with: &[u8; 32]) {
    for (a, b) in into.iter_mut().zip(with) {
        *a ^= b;
    }
}

fn sha(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl PackHash {
    fn set(&mut self, key: &str, bytes: Option<&[u8]>) {
        if let Some(old) = self.per_key.remove(key) {
            xor(&mut self.total, &old);
        }
        if let Some(bytes) = bytes {
            let digest = sha(bytes);
            xor(&mut self.total, &digest);
            self.per_key.insert(key.to_owned(), digest);
        }
        if let Some(touched) = &mut self.touched_during_scan {
            touched.insert(key.to_owned());
        }
    }
}

struct Inner {
    backend: Arc<dyn Backend>,
    events: broadcast::Sender<ChangeEvent>,
    hash: Mutex<PackHash>,
    /// `true` once the initial hash scan finished.
    scanned: watch::Sender<bool>,
}

/// The policy layer over a backend; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

fn now() -> i64 {
    nas_jwt::unix_now()
}

/// An account key: a valid account public nkey.
fn check_account_key(key: &str) -> Result<(), StoreError> {
    if is_valid_public_key(key, KeyRole::Account) {
        Ok(())
    } else {
        Err(StoreError::InvalidKey {
            ns: Namespace::Accounts,
            key: key.to_owned(),
        })
    }
}

/// An activation hash id: 56 characters of padded base32 (`[A-Z2-7]`, `=` at the end).
pub fn is_valid_hash_id(key: &str) -> bool {
    key.len() == 56
        && key.ends_with("====")
        && key[..52]
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
}

fn check_hash_id(key: &str) -> Result<(), StoreError> {
    if is_valid_hash_id(key) {
        Ok(())
    } else {
        Err(StoreError::InvalidKey {
            ns: Namespace::Activations,
            key: key.to_owned(),
        })
    }
}

impl Store {
    /// Wraps a backend; starts the background PACK-hash scan and the forwarding of external
    /// changes (needs a tokio runtime).
    pub fn new(backend: Arc<dyn Backend>) -> Store {
        let (events, _) = broadcast::channel(4096);
        let (scanned, _) = watch::channel(false);
        let store = Store {
            inner: Arc::new(Inner {
                backend,
                events,
                hash: Mutex::new(PackHash {
                    touched_during_scan: Some(Default::default()),
                    ..PackHash::default()
                }),
                scanned,
            }),
        };
        let scan = store.clone();
        tokio::spawn(async move { scan.initial_scan().await });
        if let Some(mut external) = store.inner.backend.external_changes() {
            let weak = Arc::downgrade(&store.inner);
            tokio::spawn(async move {
                while let Ok(key) = external.recv().await {
                    let Some(inner) = weak.upgrade() else { break };
                    Store { inner }.external_change(&key).await;
                }
            });
        }
        store
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// Whether writes are refused.
    pub fn read_only(&self) -> bool {
        self.inner.backend.read_only()
    }

    /// Change events of every effective change made through this store or reported by the
    /// backend as made by someone else.
    pub fn subscribe(&self) -> broadcast::Receiver<ChangeEvent> {
        self.inner.events.subscribe()
    }

    fn lock_hash(&self) -> std::sync::MutexGuard<'_, PackHash> {
        // A panic while holding this lock leaves a consistent map (set() has no early exits).
        self.inner.hash.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn initial_scan(&self) {
        // Computed in the background so that opening a large store answers at once.
        if let Ok(mut keys) = self.inner.backend.list(Namespace::Accounts).await {
            while let Some(Ok(key)) = keys.next().await {
                if let Ok(Some((bytes, _))) =
                    self.inner.backend.get(Namespace::Accounts, &key).await
                {
                    let mut hash = self.lock_hash();
                    if hash
                        .touched_during_scan
                        .as_ref()
                        .is_some_and(|t| !t.contains(&key))
                    {
                        let digest = sha(&bytes);
                        if let Some(old) = hash.per_key.insert(key, digest) {
                            xor(&mut hash.total, &old);
                        }
                        xor(&mut hash.total, &digest);
                    }
                }
            }
        } else {
            tracing::warn!("could not list the store to compute its hash");
        }
        self.lock_hash().touched_during_scan = None;
        self.inner.scanned.send_replace(true);
    }

    async fn external_change(&self, key: &str) {
        let new = match self.inner.backend.get(Namespace::Accounts, key).await {
            Ok(v) => v.map(|(b, _)| b),
            Err(_) => return,
        };
        self.lock_hash().set(key, new.as_deref());
        let _ = self.inner.events.send(ChangeEvent {
            key: key.to_owned(),
            old: None,
            new,
            external: true,
        });
    }

    /// The stored account JWT.
    pub async fn get_account(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        check_account_key(key)?;
        Ok(self
            .inner
            .backend
            .get(Namespace::Accounts, key)
            .await?
            .map(|(bytes, _)| bytes))
    }

    /// Newer-wins write of an account JWT the caller has verified: same `jti` → `Unchanged`;
    /// stored `iat` greater → `Stale`; otherwise an atomic create/replace, retried when another
    /// writer got in between (so concurrent writers end with the highest `iat`). Emits one
    /// [`ChangeEvent`] and updates the PACK hash on `Created`/`Replaced`.
    pub async fn put_account_if_newer(
        &self,
        key: &str,
        token: Bytes,
        meta: &TokenMeta,
    ) -> Result<PutOutcome, StoreError> {
        check_account_key(key)?;
        if self.read_only() {
            return Err(StoreError::ReadOnly);
        }
        let backend = &self.inner.backend;
        loop {
            let current = backend.get(Namespace::Accounts, key).await?;
            let (pre, previous) = match current {
                None => (Precondition::Absent, None),
                Some((bytes, version)) => {
                    // An unreadable stored value is replaced, as nats-server does.
                    if let Ok(stored) = TokenMeta::read(&bytes) {
                        if stored.jti == meta.jti {
                            return Ok(PutOutcome::Unchanged);
                        }
                        if stored.iat > meta.iat {
                            return Ok(PutOutcome::Stale {
                                stored_iat: stored.iat,
                            });
                        }
                    }
                    (Precondition::Matches(version), Some(bytes))
                }
            };
            match backend
                .put(Namespace::Accounts, key, token.clone(), pre)
                .await
            {
                Ok(_) => {
                    self.lock_hash().set(key, Some(&token));
                    let _ = self.inner.events.send(ChangeEvent {
                        key: key.to_owned(),
                        old: previous.clone(),
                        new: Some(token),
                        external: false,
                    });
                    return Ok(match previous {
                        None => PutOutcome::Created,
                        Some(previous) => PutOutcome::Replaced { previous },
                    });
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Deletes an account; emits a [`ChangeEvent`] with `new: None` when something was deleted.
    pub async fn delete_account(&self, key: &str) -> Result<bool, StoreError> {
        check_account_key(key)?;
        if self.read_only() {
            return Err(StoreError::ReadOnly);
        }
        let old = self
            .inner
            .backend
            .get(Namespace::Accounts, key)
            .await?
            .map(|(b, _)| b);
        let deleted = self.inner.backend.delete(Namespace::Accounts, key).await?;
        if deleted {
            self.lock_hash().set(key, None);
            let _ = self.inner.events.send(ChangeEvent {
                key: key.to_owned(),
                old,
                new: None,
                external: false,
            });
        }
        Ok(deleted)
    }

    async fn sorted_keys(&self) -> Result<Vec<String>, StoreError> {
        let mut stream = self.inner.backend.list(Namespace::Accounts).await?;
        let mut keys = Vec::new();
        while let Some(key) = stream.next().await {
            keys.push(key?);
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// Every stored, unexpired account as `(key, bytes)`, sorted by key, at most `max`.
    /// Expired JWTs are left out, never deleted.
    pub async fn pack(&self, max: Option<usize>) -> Result<Vec<(String, Bytes)>, StoreError> {
        let now = now();
        let mut out = Vec::new();
        for key in self.sorted_keys().await? {
            if max.is_some_and(|m| out.len() >= m) {
                break;
            }
            let Some((bytes, _)) = self.inner.backend.get(Namespace::Accounts, &key).await? else {
                continue;
            };
            if bytes.is_empty() || TokenMeta::read(&bytes).is_ok_and(|m| m.expired(now)) {
                continue;
            }
            out.push((key, bytes));
        }
        Ok(out)
    }

    /// Keys of the stored, unexpired accounts.
    pub async fn list_accounts(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.pack(None).await?.into_iter().map(|(k, _)| k).collect())
    }

    /// The PACK hash (XOR of SHA-256 of every stored account JWT, expired ones included; 32 zero
    /// bytes for an empty store). Waits for the initial scan of a freshly opened store.
    pub async fn pack_hash(&self) -> Result<[u8; 32], StoreError> {
        let mut scanned = self.inner.scanned.subscribe();
        while !*scanned.borrow_and_update() {
            if scanned.changed().await.is_err() {
                break;
            }
        }
        Ok(self.lock_hash().total)
    }

    /// An activation token by hash id.
    pub async fn get_activation(&self, hash_id: &str) -> Result<Option<Bytes>, StoreError> {
        check_hash_id(hash_id)?;
        Ok(self
            .inner
            .backend
            .get(Namespace::Activations, hash_id)
            .await?
            .map(|(b, _)| b))
    }

    /// Stores an activation token under its hash id (the same hash id overwrites).
    pub async fn put_activation(&self, hash_id: &str, token: Bytes) -> Result<(), StoreError> {
        check_hash_id(hash_id)?;
        if self.read_only() {
            return Err(StoreError::ReadOnly);
        }
        self.inner
            .backend
            .put(Namespace::Activations, hash_id, token, Precondition::Any)
            .await
            .map(|_| ())
    }
}
