//! The JWT store: a small [`Backend`] trait every storage implements, and [`Store`], the policy
//! written once above it (newer-wins, change events, the PACK hash, expiry filtering).
//!
//! Backends only know bytes under keys in two namespaces, with compare-and-swap; they never parse
//! JWTs. Everything that gives the bytes meaning lives in [`Store`], so every backend behaves the
//! same (the conformance suite in `tests/conformance` runs against each of them; later backends
//! call the same functions from their own test files with a factory of fresh backends).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use nas_jwt::{is_valid_public_key, KeyRole};
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, watch, Notify};

pub mod dir;
pub mod memory;
pub mod nsc;
pub mod redis;
pub mod s3;

/// The two kinds of things stored. Each namespace is a separate key space: the same string can
/// never name an account and an activation.
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

/// An opaque token naming one stored value, used for compare-and-swap. Two versions of one key
/// compare equal only if the stored bytes are the same (backends may, but need not, also give a
/// rewrite of identical bytes a new version). Versions of different backends are unrelated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(pub String);

/// The condition a [`Backend::put`] checks atomically together with the write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// Write unconditionally (last writer wins).
    Any,
    /// Write only if the key does not exist (create).
    Absent,
    /// Write only if the key's current version is this one (replace what was read).
    Matches(Version),
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Not an account nkey / activation hash id (also: anything that could escape a directory).
    /// Returned before the backend is touched.
    #[error("invalid {} key {key:?}", ns.name())]
    InvalidKey {
        /// Namespace.
        ns: Namespace,
        /// The key as given.
        key: String,
    },
    /// The store does not accept writes; nothing was changed.
    #[error("the store is read-only")]
    ReadOnly,
    /// A compare-and-swap precondition did not hold (someone else wrote first); nothing was
    /// written.
    #[error("the stored value changed concurrently")]
    Conflict,
    /// The backend cannot be reached or timed out (answer 503, retry later). Whether a write that
    /// failed this way took effect is unknown.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A local I/O error.
    #[error("store I/O error: {0}")]
    Io(String),
    /// A stored (or offered) value cannot be read as what it should be.
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

/// The key a backend sends on [`Backend::external_changes`] when it may have missed changes
/// (a watcher queue overflowed, a directory was moved in, a pub/sub connection was re-made):
/// [`Store`] then re-reads the whole account namespace and emits an event per difference.
pub const EXTERNAL_RESYNC: &str = "";

/// The primitives a storage implements. Guarantees every implementation gives:
///
/// * `put` is atomic: a concurrent `get` sees the old or the new value, never a mix, and the
///   precondition is checked and the value written as one step; when the precondition does not
///   hold nothing is written and [`StoreError::Conflict`] is returned. Of several writers racing
///   with the same `Matches(v)`, at most one succeeds (within one process for `dir`; across
///   processes for shared backends such as S3 and Redis).
/// * A successful `put`/`delete` is durable when it returns (for persistent backends), and a
///   `get` that starts after it returned sees it (read-your-writes).
/// * `list` streams the keys present at some point during the call (no key is listed twice);
///   keys written or deleted while it runs may or may not appear.
/// * Keys are validated by [`Store`] before they reach a backend; backends that map keys to
///   paths or prefixes still refuse (with [`StoreError::InvalidKey`]) keys that could address
///   anything outside their own space.
/// * Read-only backends answer every `put`/`delete` with [`StoreError::ReadOnly`] and change
///   nothing.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug + 'static {
    /// Short name for metrics and logs (`dir`, `memory`, `nsc`, `s3`, `redis`).
    fn kind(&self) -> &'static str;
    /// The value and its version, or `None` when absent. Never returns a partially written value.
    async fn get(&self, ns: Namespace, key: &str) -> Result<Option<(Bytes, Version)>, StoreError>;
    /// Writes `value` if `pre` holds, atomically; returns the version of the written value. On a
    /// lost race (`pre` no longer holds) returns [`StoreError::Conflict`] having written nothing.
    async fn put(
        &self,
        ns: Namespace,
        key: &str,
        value: Bytes,
        pre: Precondition,
    ) -> Result<Version, StoreError>;
    /// Removes the key; `false` if it was absent. Unconditional.
    async fn delete(&self, ns: Namespace, key: &str) -> Result<bool, StoreError>;
    /// The keys of a namespace, each once, in no particular order.
    async fn list(
        &self,
        ns: Namespace,
    ) -> Result<BoxStream<'static, Result<String, StoreError>>, StoreError>;
    /// Whether the backend is reachable and usable.
    async fn health(&self) -> Result<(), StoreError>;
    /// Whether writes are refused.
    fn read_only(&self) -> bool {
        false
    }
    /// Account keys changed by someone else (a watched directory, nsc, another instance), sent
    /// after the change is visible to `get`. A key may be sent more than once per change
    /// ([`Store`] drops repeats by comparing content); [`EXTERNAL_RESYNC`] means "changes may
    /// have been missed". `None` when the backend cannot observe outside changes.
    fn external_changes(&self) -> Option<broadcast::Receiver<String>> {
        None
    }
    /// The PACK hash, for a backend shared by several instances that maintains it itself,
    /// atomically with its writes (so every instance reports one agreed value). `None` (the
    /// default) lets [`Store`] keep it from its own writes and scans.
    async fn shared_pack_hash(&self) -> Result<Option<[u8; 32]>, StoreError> {
        Ok(None)
    }
}

/// What newer-wins needs to know about a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenMeta {
    /// `jti` (empty if absent).
    pub jti: String,
    /// `iat` (0 if absent).
    pub iat: i64,
    /// `exp` (0 = never).
    pub exp: i64,
}

impl TokenMeta {
    /// Reads the claims of stored bytes without verifying them (they were verified on write).
    /// Fails with [`StoreError::Corrupt`] (with an empty key) when the bytes are not a JWT.
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

    /// Whether `exp` has passed at `now` (unix seconds).
    pub fn expired(&self, now: i64) -> bool {
        self.exp > 0 && now > self.exp
    }
}

/// What [`Store::put_account_if_newer`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    /// The key was new; the token is stored.
    Created,
    /// An older (or equally old, other `jti`) JWT was replaced.
    Replaced {
        /// The replaced bytes.
        previous: Bytes,
    },
    /// The same JWT (same `jti`, or identical bytes) is stored; nothing written.
    Unchanged,
    /// The stored JWT is newer; nothing written.
    Stale {
        /// `iat` of the stored JWT.
        stored_iat: i64,
    },
}

/// One effective change of an account (never sent for `Unchanged`/`Stale`, nor for a write that
/// failed). Events for one key are sent in the order the changes were made through this store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeEvent {
    /// The account key.
    pub key: String,
    /// Bytes before (if we know them; `None` for external changes and creations).
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
    /// Keys changed while a scan runs: the scan's (older) reading of them must not win.
    touched_during_scan: Option<HashSet<String>>,
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
    fn set_digest(&mut self, key: &str, digest: Option<[u8; 32]>) {
        if let Some(old) = self.per_key.remove(key) {
            xor(&mut self.total, &old);
        }
        if let Some(digest) = digest {
            xor(&mut self.total, &digest);
            self.per_key.insert(key.to_owned(), digest);
        }
        if let Some(touched) = &mut self.touched_during_scan {
            touched.insert(key.to_owned());
        }
    }

    fn set(&mut self, key: &str, bytes: Option<&[u8]>) {
        self.set_digest(key, bytes.map(sha));
    }
}

/// Where the background hash scan stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ScanState {
    Running,
    Done,
    /// The last attempt failed (it is retried in the background).
    Failed(String),
}

/// Policy operations on one key are serialized through one of these locks, so the PACK hash
/// and the event order always follow the order of the writes (two writers of one key could
/// otherwise update the hash in the opposite order of their writes).
const KEY_LOCKS: usize = 64;
/// Reads in flight during scans and packs: enough to hide latency of remote backends, few
/// enough to leave the blocking pool free for requests.
const READ_CONCURRENCY: usize = 8;
/// Lost CAS races retried before giving up with `Conflict` (only a backend that never lets a
/// precondition hold, i.e. a bug, or an extreme write storm from other instances, gets there).
const MAX_CAS_RETRIES: usize = 64;

struct Inner {
    backend: Arc<dyn Backend>,
    events: broadcast::Sender<ChangeEvent>,
    hash: Mutex<PackHash>,
    scan: watch::Sender<ScanState>,
    /// Wakes the scanner: a resync was requested, or the store is being dropped.
    rescan: Arc<Notify>,
    locks: Vec<tokio::sync::Mutex<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Lets the scanner task notice that the store is gone and exit.
        self.rescan.notify_one();
    }
}

/// The policy layer over a backend; cheap to clone (all clones share state).
///
/// Every write goes through newer-wins, updates the PACK hash and emits one [`ChangeEvent`] per
/// effective change. Writes are cancellation-safe: once called, a write runs to completion (hash
/// and event included) on its own task even if the caller's future is dropped.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.inner.backend)
            .finish_non_exhaustive()
    }
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

/// An activation hash id: 56 characters of padded base32 (52 of `[A-Z2-7]`, then `====`), the
/// encoding of a SHA-256 digest. Anything else (lowercase, `/`, `.`, NUL, other lengths) is not.
pub fn is_valid_hash_id(key: &str) -> bool {
    key.len() == 56
        && key.ends_with("====")
        && key.as_bytes()[..52]
            .iter()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(b))
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

/// Runs a write on its own task so that dropping the caller's future (a client hanging up)
/// cannot stop it between the backend write and the hash/event update.
async fn detached<T: Send + 'static>(
    f: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::spawn(f)
        .await
        .map_err(|e| StoreError::Io(format!("store task failed: {e}")))?
}

impl Store {
    /// Wraps a backend; starts the background PACK-hash scan and the forwarding of external
    /// changes. Returns at once: nothing is read before it returns, so a store of any size can
    /// answer `get` immediately. Must be called within a tokio runtime (panics otherwise); the
    /// background tasks end when the last clone is dropped.
    pub fn new(backend: Arc<dyn Backend>) -> Store {
        let (events, _) = broadcast::channel(4096);
        let (scan, _) = watch::channel(ScanState::Running);
        let rescan = Arc::new(Notify::new());
        let store = Store {
            inner: Arc::new(Inner {
                backend,
                events,
                hash: Mutex::new(PackHash::default()),
                scan,
                rescan: rescan.clone(),
                locks: (0..KEY_LOCKS)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
            }),
        };
        tokio::spawn(scanner(Arc::downgrade(&store.inner), rescan));
        if let Some(external) = store.inner.backend.external_changes() {
            tokio::spawn(forward_external(Arc::downgrade(&store.inner), external));
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

    /// Change events of every effective change made through this store (or any clone of it) or
    /// reported by the backend as made by someone else, from now on. A receiver that falls more
    /// than 4096 events behind gets `Lagged` and should treat every cached value as stale.
    pub fn subscribe(&self) -> broadcast::Receiver<ChangeEvent> {
        self.inner.events.subscribe()
    }

    fn lock_hash(&self) -> std::sync::MutexGuard<'_, PackHash> {
        // A panic while holding this lock leaves a consistent map (the updates have no early
        // exits), so a poisoned lock is still usable.
        self.inner.hash.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn lock_key(&self, key: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        let index = (hasher.finish() % KEY_LOCKS as u64) as usize;
        self.inner.locks[index].lock().await
    }

    fn emit(&self, key: &str, old: Option<Bytes>, new: Option<Bytes>, external: bool) {
        // No subscriber is not an error: events are for whoever listens.
        let _ = self.inner.events.send(ChangeEvent {
            key: key.to_owned(),
            old,
            new,
            external,
        });
    }

    /// Reads every account's digest (concurrently, in the background).
    async fn read_digests(&self) -> Result<HashMap<String, [u8; 32]>, StoreError> {
        let backend = self.inner.backend.clone();
        let keys = self.sorted_keys().await?;
        let mut reads = futures::stream::iter(keys)
            .map(|key| {
                let backend = backend.clone();
                async move {
                    let got = backend.get(Namespace::Accounts, &key).await;
                    (key, got)
                }
            })
            .buffer_unordered(READ_CONCURRENCY);
        let mut digests = HashMap::new();
        while let Some((key, got)) = reads.next().await {
            match got {
                Ok(Some((bytes, _))) => {
                    digests.insert(key, sha(&bytes));
                }
                Ok(None) => {} // deleted since listed
                Err(e @ StoreError::Unavailable(_)) => return Err(e),
                // One unreadable entry must not keep the hash unknown forever.
                Err(e) => tracing::warn!(key, error = %e, "store entry left out of the hash"),
            }
        }
        Ok(digests)
    }

    /// One scan. The first one installs the digests; later ones (resyncs after missed external
    /// changes) return the keys that differ, which the caller re-reads one by one.
    async fn scan_once(&self, first: bool) -> Result<Vec<String>, StoreError> {
        self.lock_hash().touched_during_scan = Some(HashSet::new());
        let fresh = match self.read_digests().await {
            Ok(fresh) => fresh,
            Err(e) => {
                self.lock_hash().touched_during_scan = None;
                return Err(e);
            }
        };
        let mut hash = self.lock_hash();
        let touched = hash.touched_during_scan.take().unwrap_or_default();
        if first {
            // Keys changed during the scan keep what the change set; every other key takes
            // what the scan read.
            let mut per_key: HashMap<String, [u8; 32]> = fresh
                .into_iter()
                .filter(|(k, _)| !touched.contains(k))
                .collect();
            for key in &touched {
                if let Some(d) = hash.per_key.get(key) {
                    per_key.insert(key.clone(), *d);
                }
            }
            let mut total = [0u8; 32];
            for d in per_key.values() {
                xor(&mut total, d);
            }
            hash.per_key = per_key;
            hash.total = total;
            Ok(Vec::new())
        } else {
            let mut differ: Vec<String> = fresh
                .iter()
                .filter(|(k, d)| !touched.contains(*k) && hash.per_key.get(*k) != Some(d))
                .map(|(k, _)| k.clone())
                .collect();
            differ.extend(
                hash.per_key
                    .keys()
                    .filter(|k| !touched.contains(*k) && !fresh.contains_key(*k))
                    .cloned(),
            );
            Ok(differ)
        }
    }

    /// Re-reads a key someone else changed; updates the hash and emits one event if the content
    /// differs from what the hash knows (watchers report one change several times).
    async fn external_change(&self, key: &str) {
        if check_account_key(key).is_err() {
            return;
        }
        // Serialized with our own writes of the key, so a watcher seeing our own write finds the
        // hash already updated and stays silent.
        let _guard = self.lock_key(key).await;
        let new = match self.inner.backend.get(Namespace::Accounts, key).await {
            Ok(v) => v.map(|(b, _)| b),
            Err(e) => {
                tracing::warn!(key, error = %e, "cannot read an externally changed account");
                return;
            }
        };
        let digest = new.as_deref().map(sha);
        {
            let mut hash = self.lock_hash();
            let known = hash.per_key.get(key).copied();
            if known == digest && hash.touched_during_scan.is_none() {
                return;
            }
            let same = known == digest;
            hash.set_digest(key, digest);
            if same {
                return;
            }
        }
        // A file caught half-written by a non-atomic writer: the hash follows the bytes, but the
        // event waits for the write that completes it (the watcher reports that one too).
        if new.as_deref().is_some_and(|b| TokenMeta::read(b).is_err()) {
            return;
        }
        self.emit(key, None, new, true);
    }

    /// The stored account JWT (exactly the stored bytes), or `None`. Invalid keys fail with
    /// [`StoreError::InvalidKey`] without touching the backend.
    pub async fn get_account(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        check_account_key(key)?;
        Ok(self
            .inner
            .backend
            .get(Namespace::Accounts, key)
            .await?
            .map(|(bytes, _)| bytes))
    }

    /// Newer-wins write of an account JWT the caller has verified (`meta` describes `token`):
    /// same `jti` (or identical bytes) → `Unchanged`; stored `iat` greater → `Stale`; otherwise
    /// an atomic create/replace. A stored value that is not a JWT is replaced.
    ///
    /// Writers of one key through this store are serialized; a race lost to another instance
    /// sharing the backend is retried from the fresh value, so concurrent writers always end with
    /// the highest `iat` stored. Emits exactly one [`ChangeEvent`] and updates the PACK hash on
    /// `Created`/`Replaced`, nothing otherwise. Readers see the old or the new token, never a mix.
    pub async fn put_account_if_newer(
        &self,
        key: &str,
        token: Bytes,
        meta: &TokenMeta,
    ) -> Result<PutOutcome, StoreError> {
        check_account_key(key)?;
        if token.is_empty() {
            return Err(StoreError::Corrupt {
                key: key.to_owned(),
                reason: "empty JWT".into(),
            });
        }
        if self.read_only() {
            return Err(StoreError::ReadOnly);
        }
        let (store, key, meta) = (self.clone(), key.to_owned(), meta.clone());
        detached(async move { store.put_locked(&key, token, &meta).await }).await
    }

    async fn put_locked(
        &self,
        key: &str,
        token: Bytes,
        meta: &TokenMeta,
    ) -> Result<PutOutcome, StoreError> {
        let _guard = self.lock_key(key).await;
        let backend = &self.inner.backend;
        for _ in 0..MAX_CAS_RETRIES {
            let current = backend.get(Namespace::Accounts, key).await?;
            let (pre, previous) = match current {
                None => (Precondition::Absent, None),
                Some((bytes, version)) => {
                    if bytes == token {
                        return Ok(PutOutcome::Unchanged);
                    }
                    // An unreadable stored value is replaced, as nats-server does.
                    if let Ok(stored) = TokenMeta::read(&bytes) {
                        if !meta.jti.is_empty() && stored.jti == meta.jti {
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
                    self.emit(key, previous.clone(), Some(token), false);
                    return Ok(match previous {
                        None => PutOutcome::Created,
                        Some(previous) => PutOutcome::Replaced { previous },
                    });
                }
                // Another instance wrote in between: decide again against its value.
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict)
    }

    /// Deletes an account; emits one [`ChangeEvent`] with `new: None` when something was deleted
    /// (none when it was absent). Serialized with writes of the key through this store.
    pub async fn delete_account(&self, key: &str) -> Result<bool, StoreError> {
        check_account_key(key)?;
        if self.read_only() {
            return Err(StoreError::ReadOnly);
        }
        let (store, key) = (self.clone(), key.to_owned());
        detached(async move {
            let _guard = store.lock_key(&key).await;
            let old = store
                .inner
                .backend
                .get(Namespace::Accounts, &key)
                .await?
                .map(|(b, _)| b);
            let deleted = store
                .inner
                .backend
                .delete(Namespace::Accounts, &key)
                .await?;
            if deleted {
                store.lock_hash().set(&key, None);
                store.emit(&key, old, None, false);
            }
            Ok(deleted)
        })
        .await
    }

    /// Deletes every expired account (`exp` in the past) — only when the operator configured
    /// expiry clean-up; nothing else ever deletes expired JWTs. Emits a deletion event for each
    /// and returns their keys. A newer token written through this store meanwhile is kept (the
    /// expiry is re-checked under the key's lock); one written by another instance between the
    /// check and the delete can be lost (backends have no conditional delete).
    pub async fn purge_expired(&self) -> Result<Vec<String>, StoreError> {
        if self.read_only() {
            return Err(StoreError::ReadOnly);
        }
        let store = self.clone();
        detached(async move {
            let now = now();
            let mut purged = Vec::new();
            for key in store.sorted_keys().await? {
                let _guard = store.lock_key(&key).await;
                let backend = &store.inner.backend;
                let Some((bytes, _)) = backend.get(Namespace::Accounts, &key).await? else {
                    continue;
                };
                if !TokenMeta::read(&bytes).is_ok_and(|m| m.expired(now)) {
                    continue;
                }
                if backend.delete(Namespace::Accounts, &key).await? {
                    store.lock_hash().set(&key, None);
                    store.emit(&key, Some(bytes), None, false);
                    purged.push(key);
                }
            }
            Ok(purged)
        })
        .await
    }

    async fn sorted_keys(&self) -> Result<Vec<String>, StoreError> {
        let mut stream = self.inner.backend.list(Namespace::Accounts).await?;
        let mut keys = Vec::new();
        while let Some(key) = stream.next().await {
            let key = key?;
            // A backend over foreign files may hold names that are not account keys.
            if check_account_key(&key).is_ok() {
                keys.push(key);
            }
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// Every stored, unexpired, non-empty account as `(key, bytes)`, sorted by key, at most
    /// `max`. Expired JWTs are left out, never deleted. Each entry is one consistent read; the
    /// whole is not a snapshot (writes during the call may or may not show).
    pub async fn pack(&self, max: Option<usize>) -> Result<Vec<(String, Bytes)>, StoreError> {
        let now = now();
        let backend = self.inner.backend.clone();
        let keys = self.sorted_keys().await?;
        let mut reads = futures::stream::iter(keys)
            .map(|key| {
                let backend = backend.clone();
                async move {
                    let got = backend.get(Namespace::Accounts, &key).await;
                    (key, got)
                }
            })
            .buffered(READ_CONCURRENCY);
        let limit = max.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        while out.len() < limit {
            let Some((key, got)) = reads.next().await else {
                break;
            };
            let Some((bytes, _)) = got? else {
                continue;
            };
            if bytes.is_empty() || TokenMeta::read(&bytes).is_ok_and(|m| m.expired(now)) {
                continue;
            }
            out.push((key, bytes));
        }
        Ok(out)
    }

    /// Keys of the stored, unexpired accounts, sorted.
    pub async fn list_accounts(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.pack(None).await?.into_iter().map(|(k, _)| k).collect())
    }

    /// The PACK hash: XOR of SHA-256 of every stored account JWT's bytes (expired ones
    /// included, as nats-server does; 32 zero bytes for an empty store). Kept up to date by every
    /// write, never by rereading the store (or taken from [`Backend::shared_pack_hash`] when the
    /// backend keeps it). Waits for the initial background scan of a freshly
    /// opened store; if that scan failed (backend unreachable) returns
    /// [`StoreError::Unavailable`] while it is retried.
    pub async fn pack_hash(&self) -> Result<[u8; 32], StoreError> {
        if let Some(shared) = self.inner.backend.shared_pack_hash().await? {
            return Ok(shared);
        }
        let mut scan = self.inner.scan.subscribe();
        loop {
            let state = scan.borrow_and_update().clone();
            match state {
                ScanState::Done => break,
                ScanState::Failed(e) => {
                    return Err(StoreError::Unavailable(format!(
                        "the store hash is not known yet: {e}"
                    )))
                }
                ScanState::Running => {}
            }
            if scan.changed().await.is_err() {
                break;
            }
        }
        Ok(self.lock_hash().total)
    }

    /// An activation token by hash id (exactly the stored bytes), or `None`.
    pub async fn get_activation(&self, hash_id: &str) -> Result<Option<Bytes>, StoreError> {
        check_hash_id(hash_id)?;
        Ok(self
            .inner
            .backend
            .get(Namespace::Activations, hash_id)
            .await?
            .map(|(b, _)| b))
    }

    /// Stores an activation token under its hash id, atomically; the same hash id overwrites
    /// (last writer wins). Activations are not accounts: no event, no effect on the PACK hash.
    pub async fn put_activation(&self, hash_id: &str, token: Bytes) -> Result<(), StoreError> {
        check_hash_id(hash_id)?;
        if self.read_only() {
            return Err(StoreError::ReadOnly);
        }
        let backend = self.inner.backend.clone();
        let hash_id = hash_id.to_owned();
        detached(async move {
            backend
                .put(Namespace::Activations, &hash_id, token, Precondition::Any)
                .await
                .map(|_| ())
        })
        .await
    }
}

/// The background scanner: computes the PACK hash once (retrying while the backend is
/// unreachable), then re-reads the store whenever a resync is requested. Holds only a weak
/// reference between rounds so dropping the last [`Store`] ends it.
async fn scanner(weak: Weak<Inner>, wake: Arc<Notify>) {
    let mut first = true;
    let mut backoff = Duration::from_millis(500);
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let store = Store { inner };
        match store.scan_once(first).await {
            Ok(differ) => {
                backoff = Duration::from_millis(500);
                if first {
                    first = false;
                    store.inner.scan.send_replace(ScanState::Done);
                }
                for key in differ {
                    store.external_change(&key).await;
                }
                drop(store);
                wake.notified().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read the store to compute its hash; retrying");
                if first {
                    store
                        .inner
                        .scan
                        .send_replace(ScanState::Failed(e.to_string()));
                }
                drop(store);
                // Either the backoff passes or a resync/drop wakes us early.
                let _ = tokio::time::timeout(backoff, wake.notified()).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Forwards keys the backend reports as changed by someone else into the store.
async fn forward_external(weak: Weak<Inner>, mut external: broadcast::Receiver<String>) {
    loop {
        let received = external.recv().await;
        let Some(inner) = weak.upgrade() else { return };
        let store = Store { inner };
        match received {
            Ok(key) if key == EXTERNAL_RESYNC => store.inner.rescan.notify_one(),
            Ok(key) => store.external_change(&key).await,
            // Some keys were missed: re-read everything and report the differences.
            Err(broadcast::error::RecvError::Lagged(_)) => store.inner.rescan.notify_one(),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_ids() {
        let good = "GDSU3HNZKL7I5NBIY7OOCYKE2HSB3SSYRV7UNGZ5GF6NM5Z7TKUA====";
        assert!(is_valid_hash_id(good));
        for bad in [
            "",
            "../../etc/passwd",
            &good.to_lowercase(),
            &good[..55],
            &format!("{good}="),
            "GDSU3HNZKL7I5NBIY7OOCYKE2HSB3SSYRV7UNGZ5GF6NM5Z7TK/A====",
            "GDSU3HNZKL7I5NBIY7OOCYKE2HSB3SSYRV7UNGZ5GF6NM5Z7TK\0A====",
            "GDSU3HNZKL7I5NBIY7OOCYKE2HSB3SSYRV7UNGZ5GF6NM5Z7TK1A====",
            "GDSU3HNZKL7I5NBIY7OOCYKE2HSB3SSYRV7UNGZ5GF6NM5Z7TKUAA===",
        ] {
            assert!(!is_valid_hash_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn pack_hash_bookkeeping() {
        let mut h = PackHash::default();
        h.set("A", Some(b"one"));
        h.set("B", Some(b"two"));
        h.set("A", Some(b"three"));
        let mut want = sha(b"two");
        xor(&mut want, &sha(b"three"));
        assert_eq!(h.total, want);
        h.set("B", None);
        h.set("A", None);
        assert_eq!(h.total, [0u8; 32]);
        assert!(h.per_key.is_empty());
    }

    #[test]
    fn token_meta_of_garbage_is_corrupt() {
        assert!(matches!(
            TokenMeta::read(b"not a jwt"),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
