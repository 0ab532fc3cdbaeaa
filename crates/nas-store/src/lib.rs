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
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use nas_jwt::{is_valid_public_key, KeyRole};
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, watch, Notify};

pub use order::Rank;

mod count;
pub mod dir;
pub mod fault;
pub mod memory;
pub mod nsc;
pub mod order;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "s3")]
pub mod s3;

/// The two kinds of things stored. Each namespace is a separate key space: the same string can
/// never name an account and an activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Namespace {
    /// Account JWTs, keyed by account public nkey.
    Accounts,
    /// Activation tokens, keyed by their hash id (not an nkey).
    Activations,
    /// Tombstones of deleted accounts, keyed by account key; the value is the operator-signed
    /// delete request that deleted the account (its `iat` is the tombstone's rank).
    Tombstones,
}

impl Namespace {
    /// Name used in paths and messages.
    pub fn name(self) -> &'static str {
        match self {
            Namespace::Accounts => "accounts",
            Namespace::Activations => "activations",
            Namespace::Tombstones => "tombstones",
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

impl Precondition {
    /// Whether the precondition holds for the key's `current` version (`None`: absent). The
    /// one check every backend that compares versions itself applies.
    pub fn holds(&self, current: Option<&Version>) -> bool {
        match self {
            Precondition::Any => true,
            Precondition::Absent => current.is_none(),
            Precondition::Matches(v) => current == Some(v),
        }
    }
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
    Unavailable(#[source] Cause),
    /// A local I/O error (the OS error is the source).
    #[error("store I/O error: {0}")]
    Io(#[source] Cause),
    /// The backend cannot be used with these settings (a malformed URL, a missing bucket, a
    /// folder that is not an nsc operator folder); nothing was changed. Not retried.
    #[error("store configuration: {0}")]
    Config(#[source] Cause),
    /// A stored (or offered) value cannot be read as what it should be.
    #[error("corrupt entry {key}: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// Why the backend could not be used: a message for people, and the backend's own error when
/// there is one (kept as the `source`, for logs and for decisions by kind; never in the message
/// twice). Secrets never enter either: backends redact URLs before they build one.
#[derive(Debug, Clone)]
pub struct Cause {
    message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl Cause {
    /// A cause with no underlying error (a timeout, a state).
    pub fn new(message: impl Into<String>) -> Cause {
        Cause {
            message: message.into(),
            source: None,
        }
    }

    /// `error` as the source, shown after `context`.
    pub fn of(context: &str, error: impl std::error::Error + Send + Sync + 'static) -> Cause {
        Cause {
            message: format!("{context}: {error}"),
            source: Some(Arc::new(error)),
        }
    }

    /// `error` as the source and the whole message.
    pub fn of_bare(error: impl std::error::Error + Send + Sync + 'static) -> Cause {
        Cause {
            message: error.to_string(),
            source: Some(Arc::new(error)),
        }
    }

    /// The underlying error, if any, to inspect by type (`downcast_ref`).
    pub fn inner(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.source.as_deref()
    }
}

/// Causes compare by message: the source is detail for logs and downcasts.
impl PartialEq for Cause {
    fn eq(&self, other: &Cause) -> bool {
        self.message == other.message
    }
}

impl Eq for Cause {}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<String> for Cause {
    fn from(message: String) -> Cause {
        Cause::new(message)
    }
}

impl From<&str> for Cause {
    fn from(message: &str) -> Cause {
        Cause::new(message)
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::io("", e)
    }
}

impl StoreError {
    /// A local I/O error with what was being done (`context`, may be empty) and the error kept
    /// as the source.
    pub fn io(
        context: impl std::fmt::Display,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> StoreError {
        let context = context.to_string();
        StoreError::Io(if context.is_empty() {
            Cause::of_bare(e)
        } else {
            Cause::of(&context, e)
        })
    }
}

/// Key groups of a Redis Cluster store unless configured otherwise: enough to spread over a
/// few masters, few enough that listing, health and the PACK hash (one call per group) stay
/// cheap. Here, outside the `redis` feature, so the config reader knows it in every build.
pub const REDIS_CLUSTER_GROUPS: u16 = 16;
/// The most key groups a Redis Cluster store may have.
pub const REDIS_CLUSTER_MAX_GROUPS: u16 = 1024;

/// How many times a delete request re-decides after losing a race to a concurrent write.
const MAX_DELETE_RACES: usize = 8;

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
    /// [`Backend::get`] without the version, for readers that do not write back (a GET's cache
    /// miss): a backend that computes versions by hashing the value may skip that.
    async fn get_value(&self, ns: Namespace, key: &str) -> Result<Option<Bytes>, StoreError> {
        Ok(self.get(ns, key).await?.map(|(bytes, _)| bytes))
    }
    /// Writes `value` if `pre` holds, atomically; returns the version of the written value. On a
    /// lost race (`pre` no longer holds) returns [`StoreError::Conflict`] having written nothing.
    async fn put(
        &self,
        ns: Namespace,
        key: &str,
        value: Bytes,
        pre: Precondition,
    ) -> Result<Version, StoreError>;
    /// Removes the key; `false` if it was absent. With `expected`, only if the key's current
    /// version is that one, atomically with the check (like [`Precondition::Matches`]):
    /// otherwise [`StoreError::Conflict`] and nothing is removed, so a delete decided on a
    /// value read earlier never removes a newer value another writer stored meanwhile.
    async fn delete(
        &self,
        ns: Namespace,
        key: &str,
        expected: Option<&Version>,
    ) -> Result<bool, StoreError>;
    /// The keys of a namespace, each once, in no particular order.
    async fn list(
        &self,
        ns: Namespace,
    ) -> Result<BoxStream<'static, Result<String, StoreError>>, StoreError>;
    /// Whether the backend is reachable and usable.
    async fn health(&self) -> Result<(), StoreError>;
    /// Whether [`Backend::list`] yields keys in ascending byte order (S3 does), so a pack can
    /// consume the listing as it comes instead of collecting and sorting every key first.
    fn lists_sorted(&self) -> bool {
        false
    }
    /// How many reads a pack or a hash scan keeps in flight: enough to hide the latency of a
    /// remote backend, few enough to leave the blocking pool (dir) or the connection pool free
    /// for requests. Default [`READ_CONCURRENCY`] (8).
    fn read_concurrency(&self) -> usize {
        READ_CONCURRENCY
    }
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
    /// Whether the outside changes this backend reports were made by other account-server
    /// instances sharing it (Redis), which announce their own writes to NATS: this instance must
    /// then not announce them again (one notification per change per deployment). `false` for
    /// changes made by other programs (a watched directory, nsc), which nobody else announces.
    fn peers_announce(&self) -> bool {
        false
    }
    /// Whether every change to the stored accounts is made through a [`Store`] over this
    /// backend or reported by [`Backend::external_changes`] (a directory, memory, nsc, Redis,
    /// PostgreSQL). `false` for a backend other instances share without telling (S3): a count
    /// kept from this instance's writes would drift, so [`Store::count_accounts`] lists every
    /// time.
    fn sees_every_change(&self) -> bool {
        true
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

/// The payload fields [`TokenMeta`] reads, each as whatever JSON it holds.
#[derive(serde::Deserialize)]
struct MetaFields {
    #[serde(default)]
    jti: serde_json::Value,
    #[serde(default)]
    iat: serde_json::Value,
    #[serde(default)]
    exp: serde_json::Value,
}

impl From<MetaFields> for TokenMeta {
    fn from(f: MetaFields) -> TokenMeta {
        TokenMeta {
            jti: f.jti.as_str().unwrap_or_default().to_owned(),
            iat: f.iat.as_i64().unwrap_or(0),
            exp: f.exp.as_i64().unwrap_or(0),
        }
    }
}

impl TokenMeta {
    /// Reads the claims of stored bytes without verifying them (they were verified on write).
    /// Fails with [`StoreError::Corrupt`] (with an empty key) when the bytes are not a JWT.
    pub fn read(bytes: &[u8]) -> Result<TokenMeta, StoreError> {
        let corrupt = |e: nas_jwt::JwtError| StoreError::Corrupt {
            key: String::new(),
            reason: e.to_string(),
        };
        let json = nas_jwt::jwt::payload_json(bytes).map_err(corrupt)?;
        // The three fields alone, skipping the rest unparsed (a pack reads this for every
        // entry). Anything this reading refuses, such as a repeated field, takes the full
        // parse below, so the answer is always the full parse's. Only an object: serde would
        // read a struct from an array too.
        if json.first() == Some(&b'{') {
            if let Ok(fields) = serde_json::from_slice::<MetaFields>(&json) {
                return Ok(fields.into());
            }
        }
        let payload = nas_jwt::jwt::peek_payload(bytes).map_err(corrupt)?;
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
    /// The account was deleted by a request issued at or after this JWT's `iat` (a tombstone
    /// holds it); nothing written.
    Deleted {
        /// `iat` of the delete request.
        deleted_at: i64,
    },
    /// A different JWT with the same `iat` is stored and wins the tie-break of [`Rank`]
    /// (a same-second re-issue): nothing written; the client must re-issue.
    TieLost {
        /// The `iat` both JWTs share.
        iat: i64,
    },
}

/// What [`Store::delete_account_by`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// The account was deleted; its tombstone is stored.
    Deleted,
    /// There was no account; its tombstone is stored (a later PACK cannot bring it in).
    Absent,
    /// The stored account was issued after the delete request: nothing changed.
    Stale {
        /// `iat` of the stored account JWT.
        stored_iat: i64,
    },
}

/// A write's outcome and the store sequence number of the state it leaves: the stamp with which
/// caches above the store install what the write stored (see [`Store::generation`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// What the write did.
    pub outcome: PutOutcome,
    /// The sequence number of the change (for `Created`/`Replaced`, or an `Unchanged` that
    /// completed an earlier write's side effects) or the key's generation at the time of the
    /// decision (otherwise).
    pub seq: u64,
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
    /// For changes made through this store: whether the writer asked for the change to be
    /// announced to nats-servers (a change learned from NATS is not announced back).
    pub announce: bool,
    /// Sequence number of the change in this store (strictly increasing over all keys; see
    /// [`Store::generation`]).
    pub seq: u64,
}

/// A synchronous observer of changes, called in the order of the changes of each key while the
/// key's lock is held (so it sees one key's changes in store order, with no lag and no loss).
/// It must be quick and must not call back into the store.
pub type ChangeObserver = Arc<dyn Fn(&ChangeEvent) + Send + Sync>;

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
/// Reads in flight during scans and packs by default ([`Backend::read_concurrency`]): enough
/// to hide latency of remote backends, few enough to leave the blocking pool free for requests.
pub const READ_CONCURRENCY: usize = 8;
/// Buckets of per-key generations: a key's generation is the sequence number of the latest
/// change of any key in its bucket, so memory stays fixed however many keys change.
const GENERATION_BUCKETS: usize = 4096;
/// Lost CAS races retried before giving up with `Conflict` (only a backend that never lets a
/// precondition hold, i.e. a bug, or an extreme write storm from other instances, gets there).
const MAX_CAS_RETRIES: usize = 64;

struct Inner {
    backend: Arc<dyn Backend>,
    events: broadcast::Sender<ChangeEvent>,
    hash: Mutex<PackHash>,
    scan: watch::Sender<ScanState>,
    /// Wakes the scanner: the hash is wanted, a resync was requested, or the store is being
    /// dropped.
    rescan: Arc<Notify>,
    /// Whether the first scan was asked for (see [`Store::new`]).
    scan_started: std::sync::atomic::AtomicBool,
    locks: Vec<tokio::sync::Mutex<()>>,
    /// The last sequence number handed out (see [`Store::generation`]).
    seq: AtomicU64,
    /// Per bucket of keys: the sequence number of the bucket's latest change.
    generations: Box<[AtomicU64]>,
    /// Every generation is at least this (raised by [`Store::mark_all_stale`]).
    floor: AtomicU64,
    observers: RwLock<Vec<ChangeObserver>>,
    /// The number of stored accounts, kept from writes once seeded (see `count.rs`).
    count: Mutex<count::AccountCount>,
    /// Serializes the listings that seed `count`.
    count_listing: tokio::sync::Mutex<()>,
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

/// A PostgreSQL connection string with any password replaced by `***`: in the user part and the `password=` query
/// parameter of a `postgres://` URL, or the `password=` setting of the `key=value` form.
pub fn redact_dsn(url: &str) -> String {
    if url.contains("://") {
        let redacted = crate::redact_url(url);
        let Some((base, query)) = redacted.split_once('?') else {
            return redacted;
        };
        let query: Vec<&str> = query
            .split('&')
            .map(|kv| {
                if kv.starts_with("password=") {
                    "password=***"
                } else {
                    kv
                }
            })
            .collect();
        return format!("{base}?{}", query.join("&"));
    }
    let mut shown = Vec::new();
    let mut in_quoted_password = false;
    for word in url.split_whitespace() {
        if in_quoted_password {
            // The rest of a quoted password that held spaces.
            in_quoted_password = !word.ends_with('\'');
        } else if let Some(value) = word.strip_prefix("password=") {
            shown.push("password=***");
            in_quoted_password =
                value.starts_with('\'') && (value.len() == 1 || !value.ends_with('\''));
        } else {
            shown.push(word);
        }
    }
    shown.join(" ")
}

/// `url` with any password replaced by `***` (`redis://:pw@host` → `redis://:***@host`), for
/// logs, errors and `-dump`; several URLs separated by commas are each redacted.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let Some(scheme_end) = one.find("://").map(|i| i + 3) else {
                return one.to_owned();
            };
            let rest = &one[scheme_end..];
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let Some(at) = rest[..authority_end].rfind('@') else {
                return one.to_owned();
            };
            match rest[..at].find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &one[..scheme_end],
                    &rest[..colon],
                    &rest[at..]
                ),
                // `user@host`: with no password the user part may still be a token.
                None => format!("{}***{}", &one[..scheme_end], &rest[at..]),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// What the ordering rule says of an offered token (ranked `offered`) against the `stored`
/// bytes: `None` when the offer replaces them, else the refusal (`Unchanged`, `Stale`,
/// `TieLost`). Stored bytes that are not a JWT are always replaced, as nats-server does.
fn refusal(offered: &Rank, stored: &[u8]) -> Option<PutOutcome> {
    let meta = TokenMeta::read(stored).ok()?;
    match order::compare(offered, &Rank::of(meta.iat, stored)) {
        order::Verdict::Newer => None,
        order::Verdict::Same => Some(PutOutcome::Unchanged),
        order::Verdict::Older => Some(PutOutcome::Stale {
            stored_iat: meta.iat,
        }),
        order::Verdict::TieLost => Some(PutOutcome::TieLost { iat: offered.iat }),
    }
}

/// The `iat` of stored bytes, 0 when they are not a JWT (then any dated token ranks above).
fn iat_or_zero(bytes: &[u8]) -> i64 {
    TokenMeta::read(bytes).map_or(0, |m| m.iat)
}

/// Whether stored bytes belong in a pack at `now`: not empty, not expired (a value that is not
/// a JWT is left to the verifier above, which refuses it).
fn packable(bytes: &[u8], now: i64) -> bool {
    !bytes.is_empty() && !TokenMeta::read(bytes).is_ok_and(|m| m.expired(now))
}

/// `stream` up to and including its first error: a consumer of a failed listing or read sees
/// the error once, then the end, never entries after a gap.
pub fn end_after_error<T: Send + 'static, E: Send + 'static>(
    stream: impl futures::Stream<Item = Result<T, E>> + Send + 'static,
) -> BoxStream<'static, Result<T, E>> {
    stream
        .scan(false, |failed, item| {
            let next = if *failed {
                None
            } else {
                *failed = item.is_err();
                Some(item)
            };
            futures::future::ready(next)
        })
        .boxed()
}

/// The generation bucket of a key.
fn bucket_of(key: &str) -> usize {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() % GENERATION_BUCKETS as u64) as usize
}

/// Runs a write on its own task so that dropping the caller's future (a client hanging up)
/// cannot stop it between the backend write and the hash/event update.
async fn detached<T: Send + 'static>(
    f: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::spawn(f)
        .await
        .map_err(|e| StoreError::io("store task failed", e))?
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
                scan_started: std::sync::atomic::AtomicBool::new(false),
                locks: (0..KEY_LOCKS)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
                seq: AtomicU64::new(0),
                generations: (0..GENERATION_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
                floor: AtomicU64::new(0),
                observers: RwLock::new(Vec::new()),
                count: Mutex::default(),
                count_listing: tokio::sync::Mutex::new(()),
            }),
        };
        // A backend that reports outside changes which nobody else announces (a watched
        // directory, nsc) needs every key's digest from the start, to tell after a resync which
        // keys changed; for every other backend nothing proportional to the store runs until
        // the PACK hash is first asked for (by the NATS PACK responder), or never.
        let backend = &store.inner.backend;
        if backend.external_changes().is_some() && !backend.peers_announce() {
            store.start_scan();
        }
        tokio::spawn(scanner(Arc::downgrade(&store.inner), rescan));
        if let Some(external) = store.inner.backend.external_changes() {
            tokio::spawn(forward_external(Arc::downgrade(&store.inner), external));
        }
        store
    }

    /// Changes may have been missed: every cached entry is read again before it is served, and
    /// once the hash is kept (a scan ran), a rescan reports the keys that differ. Before any
    /// scan there is nothing to compare with, and the stale marks are enough.
    fn resync(&self) {
        self.lock_count().unknown();
        self.mark_all_stale();
        if self.inner.scan_started.load(AtomicOrdering::SeqCst) {
            self.inner.rescan.notify_one();
        }
    }

    /// Asks for the first hash scan (once; later calls do nothing).
    fn start_scan(&self) {
        if !self.inner.scan_started.swap(true, AtomicOrdering::SeqCst) {
            self.inner.rescan.notify_one();
        }
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

    fn lock_count(&self) -> std::sync::MutexGuard<'_, count::AccountCount> {
        // Every update is a single step, so a poisoned lock still holds a consistent count.
        self.inner.count.lock().unwrap_or_else(|p| p.into_inner())
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

    /// Calls `observer` with every later change, synchronously and in order per key (see
    /// [`ChangeObserver`]). Register observers before the store is used.
    pub fn observe(&self, observer: ChangeObserver) {
        self.inner
            .observers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(observer);
    }

    /// The generation of `key`: a number that grows whenever the key may have changed (it is at
    /// least the sequence number of the key's latest change seen by this store). A cache that
    /// reads the generation, then the store, may install what it read only if the generation is
    /// still the same: otherwise a change overtook its read. Two keys can share a generation, so
    /// it can grow without a change of the key itself, never the other way round.
    pub fn generation(&self, key: &str) -> u64 {
        let bucket = self.inner.generations[bucket_of(key)].load(AtomicOrdering::SeqCst);
        bucket.max(self.inner.floor.load(AtomicOrdering::SeqCst))
    }

    /// The generation every key has at least: entries stamped below it may have missed a change
    /// and must be read again before they are served.
    pub fn floor(&self) -> u64 {
        self.inner.floor.load(AtomicOrdering::SeqCst)
    }

    /// Declares that changes may have been missed for any key (a change channel was re-made, a
    /// NATS connection came back): raises every generation, so caches re-read each entry
    /// before serving it again. Returns the new floor.
    pub fn mark_all_stale(&self) -> u64 {
        let seq = self.inner.seq.fetch_add(1, AtomicOrdering::SeqCst) + 1;
        self.inner.floor.fetch_max(seq, AtomicOrdering::SeqCst);
        seq
    }

    /// Records a change under the key's lock: a new sequence number, the key's generation,
    /// the observers, then the broadcast. Returns the sequence number.
    fn emit(
        &self,
        key: &str,
        old: Option<Bytes>,
        new: Option<Bytes>,
        external: bool,
        announce: bool,
    ) -> u64 {
        let seq = self.inner.seq.fetch_add(1, AtomicOrdering::SeqCst) + 1;
        self.inner.generations[bucket_of(key)].fetch_max(seq, AtomicOrdering::SeqCst);
        let event = ChangeEvent {
            key: key.to_owned(),
            old,
            new,
            external,
            announce,
            seq,
        };
        for observer in self
            .inner
            .observers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            observer(&event);
        }
        // No subscriber is not an error: events are for whoever listens.
        let _ = self.inner.events.send(event);
        seq
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
            .buffer_unordered(self.inner.backend.read_concurrency().max(1));
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
        // Created, replaced or deleted: only a listing can tell.
        self.lock_count().unknown();
        self.emit(key, None, new, true, false);
    }

    /// The stored account JWT (exactly the stored bytes), or `None`. Invalid keys fail with
    /// [`StoreError::InvalidKey`] without touching the backend.
    pub async fn get_account(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        check_account_key(key)?;
        self.inner.backend.get_value(Namespace::Accounts, key).await
    }

    /// Newer-wins write of an account JWT the caller has verified (`meta` describes `token`),
    /// announced (see [`Store::put_account`]).
    pub async fn put_account_if_newer(
        &self,
        key: &str,
        token: Bytes,
        meta: &TokenMeta,
    ) -> Result<PutOutcome, StoreError> {
        Ok(self.put_account(key, token, meta, true).await?.outcome)
    }

    /// Newer-wins write of an account JWT the caller has verified (`meta` describes `token`),
    /// by the ordering rule of [`order`]: identical bytes → `Unchanged`; stored version ranks
    /// higher → `Stale` or `TieLost`; absent but deleted by a request issued at or after the
    /// token's `iat` → `Deleted`; otherwise an atomic create/replace. A stored value that is not
    /// a JWT is replaced. `announce` is copied into the change event for observers that notify
    /// nats-servers.
    ///
    /// Writers of one key through this store are serialized; a race lost to another instance
    /// sharing the backend is retried from the fresh value, so concurrent writers always end with
    /// the highest rank stored. A write whose outcome is unknown (the backend answered
    /// `Unavailable`) is read back: if it landed, its side effects (PACK hash, event) happen
    /// now. An `Unchanged` write of bytes this store has not recorded yet (an earlier attempt
    /// that timed out but landed, or a change nobody announced) completes those side effects
    /// too. Readers see the old or the new token, never a mix.
    pub async fn put_account(
        &self,
        key: &str,
        token: Bytes,
        meta: &TokenMeta,
        announce: bool,
    ) -> Result<Written, StoreError> {
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
        detached(async move { store.put_locked(&key, token, &meta, announce).await }).await
    }

    async fn put_locked(
        &self,
        key: &str,
        token: Bytes,
        meta: &TokenMeta,
        announce: bool,
    ) -> Result<Written, StoreError> {
        let _guard = self.lock_key(key).await;
        let backend = &self.inner.backend;
        let offered = Rank::of(meta.iat, &token);
        for _ in 0..MAX_CAS_RETRIES {
            let current = backend.get(Namespace::Accounts, key).await?;
            let (pre, previous) = match current {
                None => {
                    if let Some(deleted_at) = self.tombstone_iat(key).await? {
                        if order::compare(&offered, &Rank::tombstone(deleted_at))
                            != order::Verdict::Newer
                        {
                            return Ok(self.decided(key, PutOutcome::Deleted { deleted_at }));
                        }
                    }
                    (Precondition::Absent, None)
                }
                Some((bytes, version)) => {
                    if bytes == token {
                        return Ok(self.unchanged(key, &token, announce));
                    }
                    if let Some(outcome) = refusal(&offered, &bytes) {
                        return Ok(self.decided(key, outcome));
                    }
                    (Precondition::Matches(version), Some(bytes))
                }
            };
            match backend
                .put(Namespace::Accounts, key, token.clone(), pre)
                .await
            {
                Ok(_) => return Ok(self.completed(key, previous, token, announce)),
                // Another instance wrote in between: decide again against its value.
                Err(StoreError::Conflict) => continue,
                Err(e @ StoreError::Unavailable(_)) => {
                    // The write may have landed: if it did, it must not go unannounced.
                    return match backend.get(Namespace::Accounts, key).await {
                        Ok(Some((stored, _))) if stored == token => {
                            Ok(self.completed(key, previous, token, announce))
                        }
                        _ => Err(e),
                    };
                }
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict)
    }

    /// A write that changed nothing, stamped with the key's current generation.
    fn decided(&self, key: &str, outcome: PutOutcome) -> Written {
        Written {
            outcome,
            seq: self.generation(key),
        }
    }

    /// The side effects of a write that landed: PACK hash, then the change event.
    fn completed(
        &self,
        key: &str,
        previous: Option<Bytes>,
        token: Bytes,
        announce: bool,
    ) -> Written {
        self.lock_hash().set(key, Some(&token));
        if previous.is_none() {
            self.lock_count().created(key);
        }
        let seq = self.emit(key, previous.clone(), Some(token), false, announce);
        let outcome = match previous {
            None => PutOutcome::Created,
            Some(previous) => PutOutcome::Replaced { previous },
        };
        Written { outcome, seq }
    }

    /// The stored bytes are the offered ones. If this store has not recorded them (the hash
    /// holds another digest for the key), an earlier write landed without its side effects:
    /// they happen now.
    fn unchanged(&self, key: &str, token: &Bytes, announce: bool) -> Written {
        let recorded = {
            let hash = self.lock_hash();
            hash.per_key.get(key) == Some(&sha(token))
        };
        let seq = if recorded {
            self.generation(key)
        } else {
            self.lock_hash().set(key, Some(token));
            // Whether that earlier write created the key is not known here.
            self.lock_count().unknown();
            self.emit(key, None, Some(token.clone()), false, announce)
        };
        Written {
            outcome: PutOutcome::Unchanged,
            seq,
        }
    }

    /// The `iat` of the delete request that left a tombstone for `key`, if any.
    async fn tombstone_iat(&self, key: &str) -> Result<Option<i64>, StoreError> {
        let Some((bytes, _)) = self.inner.backend.get(Namespace::Tombstones, key).await? else {
            return Ok(None);
        };
        // An unreadable tombstone still says "deleted"; only its time is unknown, so any
        // later-issued JWT may re-create the account.
        Ok(Some(iat_or_zero(&bytes)))
    }

    /// The tombstone of `key`: the delete request that deleted it, or `None`.
    pub async fn get_tombstone(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        check_account_key(key)?;
        self.inner
            .backend
            .get_value(Namespace::Tombstones, key)
            .await
    }

    /// Deletes an account without leaving a tombstone (expiry purge, tests); emits one
    /// [`ChangeEvent`] with `new: None` when something was deleted. Serialized with writes of
    /// the key through this store.
    pub async fn delete_account(&self, key: &str) -> Result<bool, StoreError> {
        check_account_key(key)?;
        if self.read_only() {
            return Err(StoreError::ReadOnly);
        }
        let (store, key) = (self.clone(), key.to_owned());
        detached(async move {
            let _guard = store.lock_key(&key).await;
            store.remove_locked(&key).await
        })
        .await
    }

    async fn remove_locked(&self, key: &str) -> Result<bool, StoreError> {
        let backend = &self.inner.backend;
        let old = backend.get(Namespace::Accounts, key).await?;
        let Some((bytes, version)) = old else {
            return Ok(false);
        };
        self.remove_version(key, bytes, &version).await
    }

    /// Removes `key` only while it still holds `version` (read as `bytes`): a newer value
    /// another instance stored since is never removed ([`StoreError::Conflict`] instead).
    async fn remove_version(
        &self,
        key: &str,
        bytes: Bytes,
        version: &Version,
    ) -> Result<bool, StoreError> {
        let backend = &self.inner.backend;
        let deleted = match backend
            .delete(Namespace::Accounts, key, Some(version))
            .await
        {
            Err(e @ StoreError::Unavailable(_)) => {
                // The delete may have landed: if it did, it must not go unannounced (as a put).
                match backend.get(Namespace::Accounts, key).await {
                    Ok(None) => true,
                    _ => return Err(e),
                }
            }
            other => other?,
        };
        if deleted {
            self.lock_hash().set(key, None);
            self.lock_count().deleted(key);
            self.emit(key, Some(bytes), None, false, false);
        }
        Ok(deleted)
    }

    /// Deletes an account on behalf of a verified delete `request` (an operator-signed JWT
    /// issued at `iat`) and leaves a tombstone holding the request, so the account cannot come
    /// back through a PACK merge, a LOOKUP answer or a replica import of an older JWT: only an
    /// account JWT issued after `iat` re-creates it. Refused with `Stale` when the stored
    /// account was issued after the request (a replayed or overtaken request); an account that
    /// is already absent still gets its tombstone. The tombstone is written before the account
    /// is removed, so a crash in between leaves the account served and the delete to retry.
    pub async fn delete_account_by(
        &self,
        key: &str,
        request: Bytes,
        iat: i64,
    ) -> Result<DeleteOutcome, StoreError> {
        check_account_key(key)?;
        if self.read_only() {
            return Err(StoreError::ReadOnly);
        }
        let (store, key) = (self.clone(), key.to_owned());
        detached(async move {
            let _guard = store.lock_key(&key).await;
            let backend = &store.inner.backend;
            // A lost race (another instance wrote the account after our read) decides again
            // against the value it wrote; bounded, as every retry means someone else won.
            for _ in 0..MAX_DELETE_RACES {
                let current = backend.get(Namespace::Accounts, &key).await?;
                if let Some((bytes, _)) = &current {
                    let stored_iat = iat_or_zero(bytes);
                    if stored_iat > iat {
                        return Ok(DeleteOutcome::Stale { stored_iat });
                    }
                }
                if store.tombstone_iat(&key).await?.is_none_or(|t| t < iat) {
                    backend
                        .put(
                            Namespace::Tombstones,
                            &key,
                            request.clone(),
                            Precondition::Any,
                        )
                        .await?;
                }
                let Some((bytes, version)) = current else {
                    return Ok(DeleteOutcome::Absent);
                };
                match store.remove_version(&key, bytes, &version).await {
                    Ok(true) => return Ok(DeleteOutcome::Deleted),
                    Ok(false) => return Ok(DeleteOutcome::Absent),
                    Err(StoreError::Conflict) => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(StoreError::Conflict)
        })
        .await
    }

    /// Deletes every expired account (`exp` in the past) — only when the operator configured
    /// expiry clean-up; nothing else ever deletes expired JWTs. Emits a deletion event for each
    /// and returns their keys. A newer token written meanwhile is kept: through this store the
    /// key's lock orders it, from another instance the delete is conditional on the version
    /// read ([`Backend::delete`] with `expected`), so it fails and the key is skipped.
    pub async fn purge_expired(&self) -> Result<Vec<String>, StoreError> {
        let purged = self.purge_expired_tokens().await?;
        Ok(purged.into_iter().map(|(key, _)| key).collect())
    }

    /// [`Store::purge_expired`], returning each purged key with the JWT it held (for the audit
    /// log).
    pub async fn purge_expired_tokens(&self) -> Result<Vec<(String, Bytes)>, StoreError> {
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
                let Some((bytes, version)) = backend.get(Namespace::Accounts, &key).await? else {
                    continue;
                };
                if !TokenMeta::read(&bytes).is_ok_and(|m| m.expired(now)) {
                    continue;
                }
                // A newer JWT another instance stored since the read is kept: skip the key.
                match store.remove_version(&key, bytes.clone(), &version).await {
                    Ok(true) => purged.push((key, bytes)),
                    Ok(false) | Err(StoreError::Conflict) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(purged)
        })
        .await
    }

    /// How many account keys the store holds (expired ones included). Kept from this store's
    /// writes once known; the first call (and the first after a change this store could not
    /// classify, see `count.rs`) lists the keys once — no JWT is read. A backend that does not
    /// see every change ([`Backend::sees_every_change`]) is listed on every call.
    pub async fn count_accounts(&self) -> Result<usize, StoreError> {
        let counted = self.inner.backend.sees_every_change();
        if let Some(n) = self.lock_count().known().filter(|_| counted) {
            return Ok(usize::try_from(n).unwrap_or(usize::MAX));
        }
        let store = self.clone();
        // On its own task: a listing abandoned half-way would leave the count seeding forever.
        let n = detached(async move {
            let _one_at_a_time = store.inner.count_listing.lock().await;
            if let Some(n) = store.lock_count().known().filter(|_| counted) {
                return Ok(n);
            }
            store.lock_count().begin_listing();
            match store.listed_keys().await {
                Ok(keys) => Ok(store.lock_count().end_listing(&keys)),
                Err(e) => {
                    store.lock_count().abort_listing();
                    Err(e)
                }
            }
        })
        .await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// The account keys, each once (as [`Backend::list`] promises), unordered: counting needs
    /// neither an order nor a set, so a million keys cost one copy and no sort.
    async fn listed_keys(&self) -> Result<Vec<String>, StoreError> {
        let mut stream = self.inner.backend.list(Namespace::Accounts).await?;
        let mut keys = Vec::new();
        while let Some(key) = stream.next().await {
            let key = key?;
            // A backend over foreign files may hold names that are not account keys.
            if check_account_key(&key).is_ok() {
                keys.push(key);
            }
        }
        Ok(keys)
    }

    /// The account keys in key order, each once. Sorted and deduplicated in place: a pack holds
    /// this list while it runs, and one copy of the keys is what it may hold.
    async fn sorted_keys(&self) -> Result<Vec<String>, StoreError> {
        let mut keys = self.listed_keys().await?;
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }

    /// Every stored, unexpired, non-empty account as `(key, bytes)`, sorted by key, at most
    /// `max`. Expired JWTs are left out, never deleted. Each entry is one consistent read; the
    /// whole is not a snapshot (writes during the call may or may not show). Must be called
    /// within a tokio runtime. Collects
    /// [`Store::pack_stream`]; serving paths stream it instead.
    pub async fn pack(&self, max: Option<usize>) -> Result<Vec<(String, Bytes)>, StoreError> {
        self.pack_where(max, |_, _| true).await
    }

    /// [`Store::pack`] of only the entries `keep` accepts (say, those that verify), counted
    /// towards `max` after the filter.
    pub async fn pack_where(
        &self,
        max: Option<usize>,
        keep: impl Fn(&str, &[u8]) -> bool,
    ) -> Result<Vec<(String, Bytes)>, StoreError> {
        let mut entries = self.pack_stream();
        let limit = max.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(entry) = entries.next().await else {
                break;
            };
            let (key, bytes) = entry?;
            if keep(&key, &bytes) {
                out.push((key, bytes));
            }
        }
        Ok(out)
    }

    /// Every stored, unexpired, non-empty account as `(key, bytes)`, in key order, as a stream
    /// pulled by its consumer: keys are listed and values read only as the consumer asks for
    /// more, with at most [`Backend::read_concurrency`] reads in flight (and the entries they
    /// return) however large the store — a slow consumer holds the reads, not a buffer of the
    /// store. The key listing is consumed as a stream too when the backend lists in key order
    /// ([`Backend::lists_sorted`]); otherwise the keys (about 100 bytes each) are collected and
    /// sorted first, the one part that grows with the store. The stream ends after its first
    /// error (listing or reading), so a consumer never mistakes a failure for the end.
    pub fn pack_stream(&self) -> BoxStream<'static, Result<(String, Bytes), StoreError>> {
        let now = now();
        let store = self.clone();
        let backend = self.inner.backend.clone();
        let concurrency = backend.read_concurrency().max(1);
        let keys =
            futures::stream::once(async move { store.account_keys().await }).flat_map(|listed| {
                match listed {
                    Ok(keys) => keys,
                    Err(e) => futures::stream::iter([Err(e)]).boxed(),
                }
            });
        // Each read runs on its own task: a consumer that stops pulling for a while (a slow
        // client) leaves the reads in flight finished and waiting, instead of frozen mid-call
        // until their timeout passes (an S3 GET bounded by `timeout` would then fail).
        let reads = keys
            .map(move |key| {
                let backend = backend.clone();
                let read = tokio::spawn(async move {
                    let key = key?;
                    let got = backend.get(Namespace::Accounts, &key).await?;
                    Ok(got.map(|(bytes, _)| (key, bytes)))
                });
                async move {
                    read.await
                        .unwrap_or_else(|e| Err(StoreError::io("pack read failed", e)))
                }
            })
            .buffered(concurrency)
            .filter_map(move |read: Result<Option<(String, Bytes)>, StoreError>| {
                futures::future::ready(match read {
                    Ok(Some((key, bytes))) if packable(&bytes, now) => Some(Ok((key, bytes))),
                    Ok(_) => None, // deleted since listed, empty or expired
                    Err(e) => Some(Err(e)),
                })
            });
        end_after_error(reads)
    }

    /// The account keys in key order, each once, skipping names that are not account keys:
    /// the backend's listing as it comes when it lists in order, else collected and sorted.
    async fn account_keys(
        &self,
    ) -> Result<BoxStream<'static, Result<String, StoreError>>, StoreError> {
        if !self.inner.backend.lists_sorted() {
            let keys = self.sorted_keys().await?;
            return Ok(futures::stream::iter(keys.into_iter().map(Ok)).boxed());
        }
        let listed = self.inner.backend.list(Namespace::Accounts).await?;
        let mut last: Option<String> = None;
        let keys = listed.filter_map(move |key| {
            let item = match key {
                // A backend over foreign files may hold names that are not account keys; a
                // key listed twice in a row (a page boundary seen twice) is sent once.
                Ok(key) if check_account_key(&key).is_err() || last.as_ref() == Some(&key) => None,
                Ok(key) => {
                    last = Some(key.clone());
                    Some(Ok(key))
                }
                Err(e) => Some(Err(e)),
            };
            futures::future::ready(item)
        });
        Ok(keys.boxed())
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
        self.start_scan();
        let mut scan = self.inner.scan.subscribe();
        loop {
            let state = scan.borrow_and_update().clone();
            match state {
                ScanState::Done => break,
                ScanState::Failed(e) => {
                    return Err(StoreError::Unavailable(Cause::new(format!(
                        "the store hash is not known yet: {e}"
                    ))))
                }
                ScanState::Running => {}
            }
            if scan.changed().await.is_err() {
                break;
            }
        }
        Ok(self.lock_hash().total)
    }

    /// Every stored activation as `(hash id, bytes)`, in no particular order. Each entry is one
    /// consistent read; the whole is not a snapshot.
    pub async fn activations(&self) -> Result<Vec<(String, Bytes)>, StoreError> {
        let backend = self.inner.backend.clone();
        let mut ids = Vec::new();
        let mut stream = backend.list(Namespace::Activations).await?;
        while let Some(id) = stream.next().await {
            let id = id?;
            if check_hash_id(&id).is_ok() {
                ids.push(id);
            }
        }
        let mut reads = futures::stream::iter(ids)
            .map(|id| {
                let backend = backend.clone();
                async move { (backend.get(Namespace::Activations, &id).await, id) }
            })
            .buffer_unordered(READ_CONCURRENCY);
        let mut out = Vec::new();
        while let Some((got, id)) = reads.next().await {
            if let Some((bytes, _)) = got? {
                out.push((id, bytes));
            }
        }
        Ok(out)
    }

    /// An activation token by hash id (exactly the stored bytes), or `None`.
    pub async fn get_activation(&self, hash_id: &str) -> Result<Option<Bytes>, StoreError> {
        check_hash_id(hash_id)?;
        self.inner
            .backend
            .get_value(Namespace::Activations, hash_id)
            .await
    }

    /// Stores an activation token under its hash id, atomically; the same hash id overwrites
    /// (last writer wins). Activations are not accounts: no event, no effect on the PACK hash.
    /// Prefer [`Store::put_activation_if_newer`].
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

    /// Stores an activation token under its hash id by the ordering rule of [`order`] (the
    /// caller has verified it; `iat` is its issue time): `Created`, `Replaced`, `Unchanged`,
    /// `Stale` or `TieLost`, as for accounts. Writers of one hash id are serialized; a race
    /// lost to another instance is decided again.
    pub async fn put_activation_if_newer(
        &self,
        hash_id: &str,
        token: Bytes,
        iat: i64,
    ) -> Result<PutOutcome, StoreError> {
        check_hash_id(hash_id)?;
        if self.read_only() {
            return Err(StoreError::ReadOnly);
        }
        let (store, hash_id) = (self.clone(), hash_id.to_owned());
        detached(async move {
            let _guard = store.lock_key(&hash_id).await;
            let backend = &store.inner.backend;
            let offered = Rank::of(iat, &token);
            for _ in 0..MAX_CAS_RETRIES {
                let current = backend.get(Namespace::Activations, &hash_id).await?;
                let (pre, previous) = match current {
                    None => (Precondition::Absent, None),
                    Some((bytes, version)) => match refusal(&offered, &bytes) {
                        Some(outcome) => return Ok(outcome),
                        None => (Precondition::Matches(version), Some(bytes)),
                    },
                };
                match backend
                    .put(Namespace::Activations, &hash_id, token.clone(), pre)
                    .await
                {
                    Ok(_) => {
                        return Ok(match previous {
                            None => PutOutcome::Created,
                            Some(previous) => PutOutcome::Replaced { previous },
                        })
                    }
                    Err(StoreError::Conflict) => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(StoreError::Conflict)
        })
        .await
    }
}

/// The background scanner: computes the PACK hash once (retrying while the backend is
/// unreachable), then re-reads the store whenever a resync is requested. Holds only a weak
/// reference between rounds so dropping the last [`Store`] ends it.
async fn scanner(weak: Weak<Inner>, wake: Arc<Notify>) {
    // Until someone wants the hash (or a resync, or the store is dropped).
    wake.notified().await;
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
            // Some changes may have been missed: every cached entry must be read again before
            // it is served, and the differences are reported once everything is re-read.
            Ok(key) if key == EXTERNAL_RESYNC => store.resync(),
            Ok(key) => store.external_change(&key).await,
            Err(broadcast::error::RecvError::Lagged(_)) => store.resync(),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unsigned token with `payload` (TokenMeta reads claims without verifying them).
    fn token_with(payload: &str) -> Vec<u8> {
        let b64 = data_encoding::BASE64URL_NOPAD;
        let header = b64.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
        format!("{header}.{}.c2ln", b64.encode(payload.as_bytes())).into_bytes()
    }

    #[test]
    fn token_meta_reads_the_fields_as_the_full_parse_does() {
        let cases = [
            (
                r#"{"jti":"J","iat":5,"exp":9,"nats":{"x":[1,{"y":2}]}}"#,
                ("J", 5, 9),
            ),
            (r#"{"iat":5}"#, ("", 5, 0)),
            // Not a string / not an integer: read as absent, as the full parse does.
            (r#"{"jti":7,"iat":"5","exp":1.5}"#, ("", 0, 0)),
            // A repeated field: the fast reading refuses it; the full parse keeps the last.
            (r#"{"jti":"A","iat":1,"iat":8}"#, ("A", 8, 0)),
        ];
        for (payload, (jti, iat, exp)) in cases {
            let meta = TokenMeta::read(&token_with(payload)).unwrap();
            assert_eq!(
                (meta.jti.as_str(), meta.iat, meta.exp),
                (jti, iat, exp),
                "{payload}"
            );
        }
        for bad in ["[1,2]", "not json"] {
            assert!(matches!(
                TokenMeta::read(&token_with(bad)),
                Err(StoreError::Corrupt { .. })
            ));
        }
    }

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
    fn passwords_never_leave_a_url() {
        for (url, shown) in [
            ("redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"),
            ("rediss://user:s3cret@h/", "rediss://user:***@h/"),
            ("nats://tok3n@h:4222", "nats://***@h:4222"),
            ("redis://h:6379/", "redis://h:6379/"),
            (
                "redis://a:x@h1,redis://a:y@h2",
                "redis://a:***@h1,redis://a:***@h2",
            ),
            ("unix:///tmp/redis.sock", "unix:///tmp/redis.sock"),
        ] {
            assert_eq!(redact_url(url), shown);
            assert!(!redact_url(url).contains("s3cret"));
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
