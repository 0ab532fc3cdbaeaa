//! Directory backend in the Go server's (and nats-server's `full` resolver's) layout:
//! `<dir>/<key>.jwt`, or `<dir>/<last two chars>/<key>.jwt` when sharded. File content is exactly
//! the stored bytes, so a directory written by the Go server opens unchanged and vice versa.
//!
//! * **Both layouts are read.** A key is looked up in the configured layout first, then in the
//!   other one, and `list` walks both; a write goes to the configured layout and removes the copy
//!   in the other layout, so switching `shard` on an existing store needs no migration and never
//!   leaves two copies of a rewritten key. (The Go server indexes both layouts but can only reach
//!   the configured one by key.)
//! * **Activations** live in `<dir>/activations/<hash id>.jwt`, apart from account keys (the Go
//!   v0.8 server mixed them in as `<dir>/<hash id>.jwt`, sharded under `<dir>/==/`; those legacy
//!   files are still found, and moved on rewrite).
//! * **Crash-safe writes**: a temp file (`.<name>.<pid>.<n>.tmp`) in `<dir>/.tmp/`, fsync,
//!   rename over the target, fsync of the target's directory. A reader sees the old or the new
//!   file, never a partial one; after a crash the file holds the old or the new bytes. Temp files
//!   are never listed or served; ones left by a crash are removed in the background when the
//!   store is next opened writable (after they are ten minutes old, so a live writer is never
//!   disturbed) — a read of `.tmp/` alone, before `open` returns, so opening a store of a million accounts costs
//!   nothing proportional to it. (Versions before this staged temp files beside their target;
//!   such leftovers are still never listed, but no longer swept.)
//! * Files are created 0600 and directories 0700.
//! * **Compare-and-swap is enforced within this process** (a per-key lock around
//!   read-compare-write). Several processes writing one directory are not coordinated: run a
//!   single writer process per directory (any number of read-only ones).
//! * Opening reads nothing but the directory's existence; a `get` reads one file.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::stream::BoxStream;
use notify::Watcher;
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;

use crate::{Backend, Cause, Namespace, Precondition, StoreError, Version, EXTERNAL_RESYNC};

const LOCKS: usize = 256;
/// Subdirectory holding activations.
pub const ACTIVATIONS_DIR: &str = "activations";
/// Where tombstones of deleted accounts live: `<dir>/tombstones/<key>.jwt`, holding the delete
/// request that made them (see [`crate::Store::delete_account_by`]).
pub const TOMBSTONES_DIR: &str = "tombstones";
/// The shard directory the Go v0.8 server used for activations (last two chars of a hash id).
const LEGACY_ACTIVATION_SHARD: &str = "==";
/// Where writes stage their temp files (`<dir>/.tmp/`), so that finding a crash's leftovers
/// reads that directory alone, not every account file.
pub const TEMP_DIR: &str = ".tmp";
/// Temp files older than this are leftovers of a crash.
const STALE_TEMP_AGE: Duration = Duration::from_secs(600);
/// Poll interval when the kernel's file watching is unavailable.
const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// How to open a directory store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirOptions {
    /// Write new files under `<last two chars>/`. Files in either layout are read regardless.
    pub sharded: bool,
    /// Refuse writes with [`StoreError::ReadOnly`]; never create, write or delete anything (the
    /// directory must exist).
    pub read_only: bool,
    /// Watch the directory and report account files changed by other programs through
    /// [`Backend::external_changes`] (inotify on the root and each shard directory; polling
    /// every 2 s where that is unavailable).
    pub watch: bool,
}

/// The directory backend. See the module documentation for layout and guarantees.
pub struct DirBackend {
    root: PathBuf,
    options: DirOptions,
    /// Per-key write locks, owned so a write keeps its lock while it finishes on the blocking
    /// pool even if the caller's future is dropped.
    locks: Vec<Arc<tokio::sync::Mutex<()>>>,
    changes: broadcast::Sender<String>,
    watcher: Option<WatcherSlot>,
}

impl std::fmt::Debug for DirBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirBackend")
            .field("root", &self.root)
            .field("options", &self.options)
            .finish()
    }
}

/// Keys reach us validated by [`crate::Store`]; checking again here keeps any key that could
/// address a path outside the store (`/`, `..`, NUL, lowercase tricks) from touching the disk,
/// and keeps the namespaces apart even where their files share a directory (legacy layouts): an
/// account key is never a hash id and a hash id never an account key.
fn safe_key(ns: Namespace, key: &str) -> Result<(), StoreError> {
    let ok = match ns {
        Namespace::Accounts => nas_jwt::is_valid_public_key(key, nas_jwt::KeyRole::Account),
        Namespace::Activations => crate::is_valid_hash_id(key),
        Namespace::Tombstones => nas_jwt::is_valid_public_key(key, nas_jwt::KeyRole::Account),
    };
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidKey {
            ns,
            key: key.to_owned(),
        })
    }
}

/// Content hash: equal versions mean equal bytes, so a stale `Matches` can never overwrite a
/// different value, and reading the version costs nothing beyond reading the file.
fn version_of(bytes: &[u8]) -> Version {
    Version(data_encoding::HEXLOWER.encode(&Sha256::digest(bytes)[..16]))
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io(path.display(), e)),
    }
}

fn fsync_dir(path: &Path) -> Result<(), StoreError> {
    fs::File::open(path)?.sync_all()?;
    Ok(())
}

/// Creates `dir` (0700) if missing and makes its entry durable in the parent, so a file renamed
/// into a brand-new shard directory survives a crash too.
fn ensure_dir(dir: &Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| StoreError::io(format!("cannot create {}", dir.display()), e))?;
    if let Some(parent) = dir.parent() {
        fsync_dir(parent)?;
    }
    Ok(())
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

/// Writes `bytes` to `target` atomically and durably, staged in `temp_dir` (on the same file
/// system: the rename into place must not copy).
fn write_atomic(temp_dir: &Path, target: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = target
        .parent()
        .ok_or_else(|| StoreError::Io(Cause::new("no parent directory")))?;
    ensure_dir(dir)?;
    ensure_dir(temp_dir)?;
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("entry");
    let temp = temp_dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(bytes)?;
        // Data on disk before the rename makes it visible: no crash can expose a short file.
        file.sync_all()?;
        fs::rename(&temp, target)?;
        // The rename itself on disk before we acknowledge the write.
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result.map_err(|e| StoreError::io(format!("writing {}", target.display()), e))
}

/// Removes `path` if present (and makes the removal durable); whether it was there.
/// Renames an account file to `<file>.deleted` (what nats-server's full resolver does without
/// `hard_delete`), so an operator can restore it by hand; `false` if it was absent.
fn retire_durably(path: &Path) -> Result<bool, StoreError> {
    let mut retired = path.as_os_str().to_owned();
    retired.push(".deleted");
    match fs::rename(path, &retired) {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                fsync_dir(dir)?;
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::io(format!("retiring {}", path.display()), e)),
    }
}

fn remove_durably(path: &Path) -> Result<bool, StoreError> {
    match fs::remove_file(path) {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                fsync_dir(dir)?;
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::io(format!("removing {}", path.display()), e)),
    }
}

/// Where a key lives: written to `primary`, also looked for (and cleaned up) in `others`.
struct Locations {
    primary: PathBuf,
    others: Vec<PathBuf>,
}

impl Locations {
    fn read(&self) -> Result<Option<Vec<u8>>, StoreError> {
        for path in std::iter::once(&self.primary).chain(&self.others) {
            if let Some(bytes) = read_optional(path)? {
                return Ok(Some(bytes));
            }
        }
        Ok(None)
    }
}

/// The directories of a store that may hold account files: the root and its two-character
/// shard directories.
fn account_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![root.to_owned()];
    if let Ok(entries) = fs::read_dir(root) {
        for e in entries.flatten() {
            if e.file_name().len() == 2 && e.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(e.path());
            }
        }
    }
    dirs
}

/// Removes temp files a crashed writer left behind (old enough not to belong to a live write).
/// Reads [`TEMP_DIR`] only: the cost is the leftovers', not the store's.
fn sweep_temp_files(root: &Path) {
    let now = SystemTime::now();
    {
        let Ok(entries) = fs::read_dir(root.join(TEMP_DIR)) else {
            return;
        };
        for e in entries.flatten() {
            if !is_temp_name(&e.file_name().to_string_lossy()) {
                continue;
            }
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age > STALE_TEMP_AGE);
            if old {
                match fs::remove_file(e.path()) {
                    Ok(()) => {
                        tracing::info!(path = %e.path().display(), "removed a temp file left by a crash")
                    }
                    Err(err) => {
                        tracing::warn!(path = %e.path().display(), error = %err, "cannot remove a stale temp file")
                    }
                }
            }
        }
    }
}

impl DirBackend {
    /// Opens a store directory. Writable: creates it (0700) if missing and removes crash
    /// leftovers from [`TEMP_DIR`]. Read-only: the directory must exist and nothing is created.
    /// With `watch`, starts watching before returning, so every change made after `open`
    /// returns is reported.
    pub fn open(root: &Path, options: DirOptions) -> Result<DirBackend, StoreError> {
        if options.read_only {
            if !root.is_dir() {
                return Err(StoreError::Config(Cause::new(format!(
                    "read-only store directory {} does not exist",
                    root.display()
                ))));
            }
        } else {
            ensure_dir(root)?;
            // At once: it reads the leftovers' directory only, however large the store.
            sweep_temp_files(root);
        }
        let (changes, _) = broadcast::channel(4096);
        let watcher = if options.watch {
            Some(watch(root, changes.clone())?)
        } else {
            None
        };
        Ok(DirBackend {
            root: root.to_owned(),
            options,
            locks: (0..LOCKS)
                .map(|_| Arc::new(tokio::sync::Mutex::new(())))
                .collect(),
            changes,
            watcher,
        })
    }

    /// The store directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a key is written, and where else it may be found.
    fn locations(&self, ns: Namespace, key: &str) -> Locations {
        let file = format!("{key}.jwt");
        match ns {
            Namespace::Tombstones => Locations {
                primary: self.root.join(TOMBSTONES_DIR).join(&file),
                others: Vec::new(),
            },
            Namespace::Activations => Locations {
                primary: self.root.join(ACTIVATIONS_DIR).join(&file),
                others: vec![
                    self.root.join(&file),
                    self.root.join(LEGACY_ACTIVATION_SHARD).join(&file),
                ],
            },
            Namespace::Accounts => {
                let flat = account_path(&self.root, key, false);
                let sharded = account_path(&self.root, key, true);
                let (primary, other) = if self.options.sharded {
                    (sharded, flat)
                } else {
                    (flat, sharded)
                };
                Locations {
                    primary,
                    others: vec![other],
                }
            }
        }
    }

    fn lock(&self, ns: Namespace, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let digest = Sha256::digest([ns.name().as_bytes(), key.as_bytes()].concat());
        self.locks[usize::from(digest[0]) % LOCKS].clone()
    }
}

/// The account key a changed path names, if it is a `<key>.jwt` file of either account layout
/// (directly in the root or in a two-character shard directory).
fn account_key_of(root: &Path, path: &Path) -> Option<String> {
    let relative = path.strip_prefix(root).ok()?;
    let parts: Vec<Component<'_>> = relative.components().collect();
    let name = match parts.as_slice() {
        [Component::Normal(name)] => name,
        [Component::Normal(shard), Component::Normal(name)] if shard.len() == 2 => name,
        _ => return None,
    };
    let key = name.to_str()?.strip_suffix(".jwt")?;
    nas_jwt::is_valid_public_key(key, nas_jwt::KeyRole::Account).then(|| key.to_owned())
}

/// Whether a changed path is a shard directory itself (created, moved in or out, removed): its
/// files were not reported one by one.
fn is_shard_dir(root: &Path, path: &Path) -> bool {
    path.strip_prefix(root).is_ok_and(|r| {
        let parts: Vec<Component<'_>> = r.components().collect();
        matches!(parts.as_slice(), [Component::Normal(d)] if d.len() == 2)
    })
}

/// The watcher, shared with the thread that adds watches for new shard directories.
type WatcherSlot = Arc<Mutex<Option<Box<dyn Watcher + Send>>>>;

/// Watches the root and each shard directory, each non-recursively: one inotify watch per
/// directory, added without walking the (possibly 100,000) files, and nothing below a shard
/// (activations are not account changes). A shard directory appearing later gets its watch
/// then, followed by a resync for files written into it before the watch existed.
fn watch(root: &Path, changes: broadcast::Sender<String>) -> Result<WatcherSlot, StoreError> {
    let slot: WatcherSlot = Arc::new(Mutex::new(None));
    // Weak: the watcher owns this handler, so a strong reference would keep it alive forever.
    let handler = |root: PathBuf, changes: broadcast::Sender<String>, slot: Weak<_>| {
        move |event: notify::Result<notify::Event>| {
            let event = match event {
                Ok(event) => event,
                Err(e) => {
                    // Queue overflow and the like: whatever happened is unknown, re-read it all.
                    tracing::warn!(error = %e, "store directory watcher error; resyncing");
                    let _ = changes.send(EXTERNAL_RESYNC.to_owned());
                    return;
                }
            };
            if event.need_rescan() {
                let _ = changes.send(EXTERNAL_RESYNC.to_owned());
                return;
            }
            if event.kind.is_access() {
                return;
            }
            for path in &event.paths {
                if let Some(key) = account_key_of(&root, path) {
                    let _ = changes.send(key);
                } else if is_shard_dir(&root, path) {
                    if path.is_dir() {
                        watch_new_shard(slot.clone(), path.clone(), changes.clone());
                    } else {
                        // Removed or moved away: its files were not reported one by one.
                        let _ = changes.send(EXTERNAL_RESYNC.to_owned());
                    }
                }
            }
        }
    };
    let native = notify::recommended_watcher(handler(
        root.to_owned(),
        changes.clone(),
        Arc::downgrade(&slot),
    ))
    .and_then(|mut w| {
        watch_dirs(&mut w, root)?;
        Ok(w)
    });
    let watcher: Box<dyn Watcher + Send> = match native {
        Ok(w) => Box::new(w),
        Err(e) => {
            // inotify can be exhausted (max_user_watches) or absent (some network filesystems).
            tracing::warn!(dir = %root.display(), error = %e, "cannot watch natively; polling every 2 s");
            let mut w = notify::PollWatcher::new(
                handler(root.to_owned(), changes, Arc::downgrade(&slot)),
                notify::Config::default().with_poll_interval(POLL_INTERVAL),
            )
            .map_err(|e| StoreError::io(format!("cannot watch {}", root.display()), e))?;
            watch_dirs(&mut w, root)
                .map_err(|e| StoreError::io(format!("cannot watch {}", root.display()), e))?;
            Box::new(w)
        }
    };
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(watcher);
    Ok(slot)
}

fn watch_dirs(watcher: &mut impl Watcher, root: &Path) -> notify::Result<()> {
    for dir in account_dirs(root) {
        watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
    }
    Ok(())
}

/// Adds a watch for a new shard directory, then asks for a resync. On its own thread: the
/// handler runs on the watcher's event loop, which `watch` needs free to answer.
fn watch_new_shard(
    slot: Weak<Mutex<Option<Box<dyn Watcher + Send>>>>,
    dir: PathBuf,
    changes: broadcast::Sender<String>,
) {
    let fallback = changes.clone();
    let spawned = std::thread::Builder::new()
        .name("nas-store-watch".into())
        .spawn(move || {
            if let Some(slot) = slot.upgrade() {
                let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(watcher) = slot.as_mut() {
                    if let Err(e) = watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
                        tracing::warn!(dir = %dir.display(), error = %e, "cannot watch a new shard directory");
                    }
                }
            }
            let _ = changes.send(EXTERNAL_RESYNC.to_owned());
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start watching a new shard directory");
        let _ = fallback.send(EXTERNAL_RESYNC.to_owned());
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::io("store task failed", e))?
}

#[async_trait::async_trait]
impl Backend for DirBackend {
    fn kind(&self) -> &'static str {
        "dir"
    }

    /// Reads one file (two for a key absent from the configured layout), on the calling
    /// thread, as nginx reads static files: a JWT file is a few hundred bytes, usually in the
    /// page cache, and handing each read to the blocking pool cost more CPU than the read
    /// (thread wake-ups both ways and one pool thread per concurrent miss; `benches/scale.sh`,
    /// BENCHMARKS.md). On a disk whose cache is cold the caller waits for the disk, as an
    /// nginx worker does. Writes still go to the blocking pool: they fsync.
    async fn get(&self, ns: Namespace, key: &str) -> Result<Option<(Bytes, Version)>, StoreError> {
        safe_key(ns, key)?;
        let found = self.locations(ns, key).read()?;
        Ok(found.map(|bytes| {
            let version = version_of(&bytes);
            (Bytes::from(bytes), version)
        }))
    }

    /// [`Backend::get`] without hashing the content for its version.
    async fn get_value(&self, ns: Namespace, key: &str) -> Result<Option<Bytes>, StoreError> {
        safe_key(ns, key)?;
        Ok(self.locations(ns, key).read()?.map(Bytes::from))
    }

    /// Atomic and durable when it returns; the precondition is checked under a per-key lock of
    /// this process (not across processes).
    async fn put(
        &self,
        ns: Namespace,
        key: &str,
        value: Bytes,
        pre: Precondition,
    ) -> Result<Version, StoreError> {
        safe_key(ns, key)?;
        if self.options.read_only {
            return Err(StoreError::ReadOnly);
        }
        let guard = self.lock(ns, key).lock_owned().await;
        let locations = self.locations(ns, key);
        let temp_dir = self.root.join(TEMP_DIR);
        blocking(move || {
            // The guard lives until the write is done, even if the caller went away.
            let _guard = guard;
            let current = locations.read()?.map(|b| version_of(&b));
            if !pre.holds(current.as_ref()) {
                return Err(StoreError::Conflict);
            }
            write_atomic(&temp_dir, &locations.primary, &value)?;
            // One copy per key: a stale copy in another layout would reappear on delete.
            for other in &locations.others {
                remove_durably(other)?;
            }
            Ok(version_of(&value))
        })
        .await
    }

    /// Removes the key from every layout, durably; `expected` is checked under the same
    /// per-key lock as `put`'s precondition.
    async fn delete(
        &self,
        ns: Namespace,
        key: &str,
        expected: Option<&Version>,
    ) -> Result<bool, StoreError> {
        safe_key(ns, key)?;
        if self.options.read_only {
            return Err(StoreError::ReadOnly);
        }
        let guard = self.lock(ns, key).lock_owned().await;
        let locations = self.locations(ns, key);
        let expected = expected.cloned();
        blocking(move || {
            let _guard = guard;
            if let Some(expected) = expected {
                match locations.read()?.map(|b| version_of(&b)) {
                    None => return Ok(false),
                    Some(current) if current != expected => return Err(StoreError::Conflict),
                    Some(_) => {}
                }
            }
            let mut deleted = false;
            for path in std::iter::once(&locations.primary).chain(&locations.others) {
                deleted |= if ns == Namespace::Accounts {
                    retire_durably(path)?
                } else {
                    remove_durably(path)?
                };
            }
            Ok(deleted)
        })
        .await
    }

    /// Walks both layouts (one directory read per shard; no file is opened). Only names that
    /// are valid keys of the namespace count: temp files, `.jwt.deleted` files and foreign
    /// files are skipped.
    async fn list(
        &self,
        ns: Namespace,
    ) -> Result<BoxStream<'static, Result<String, StoreError>>, StoreError> {
        let root = self.root.clone();
        let keys = blocking(move || {
            let mut keys = HashSet::new();
            let dirs: Vec<PathBuf> = match ns {
                Namespace::Activations => vec![
                    root.join(ACTIVATIONS_DIR),
                    root.clone(),
                    root.join(LEGACY_ACTIVATION_SHARD),
                ],
                Namespace::Accounts => account_dirs(&root),
                Namespace::Tombstones => vec![root.join(TOMBSTONES_DIR)],
            };
            for dir in dirs {
                let entries = match fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(StoreError::io(dir.display(), e)),
                };
                for e in entries.flatten() {
                    let name = e.file_name();
                    let Some(key) = name.to_str().and_then(|n| n.strip_suffix(".jwt")) else {
                        continue;
                    };
                    let valid = match ns {
                        Namespace::Accounts => {
                            nas_jwt::is_valid_public_key(key, nas_jwt::KeyRole::Account)
                        }
                        Namespace::Activations => crate::is_valid_hash_id(key),
                        Namespace::Tombstones => {
                            nas_jwt::is_valid_public_key(key, nas_jwt::KeyRole::Account)
                        }
                    };
                    if valid && e.file_type().is_ok_and(|t| t.is_file()) {
                        keys.insert(key.to_owned());
                    }
                }
            }
            Ok(keys)
        })
        .await?;
        Ok(Box::pin(futures::stream::iter(keys.into_iter().map(Ok))))
    }

    async fn health(&self) -> Result<(), StoreError> {
        let root = self.root.clone();
        blocking(move || {
            if fs::metadata(&root)?.is_dir() {
                Ok(())
            } else {
                Err(StoreError::Io(Cause::new(format!(
                    "{} is not a directory",
                    root.display()
                ))))
            }
        })
        .await
    }

    fn read_only(&self) -> bool {
        self.options.read_only
    }

    /// With `watch`: every account file created, rewritten, renamed or removed by anyone
    /// (including this process; [`crate::Store`] drops what it already knows).
    fn external_changes(&self) -> Option<broadcast::Receiver<String>> {
        self.watcher.as_ref().map(|_| self.changes.subscribe())
    }
}

/// The on-disk path of an account in a given layout (for tests and tools that build store
/// directories the way the Go server does).
pub fn account_path(root: &Path, key: &str, sharded: bool) -> PathBuf {
    match key.get(key.len().saturating_sub(2)..) {
        Some(shard) if sharded && shard.len() == 2 => root.join(shard).join(format!("{key}.jwt")),
        _ => root.join(format!("{key}.jwt")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_changed_paths() {
        let root = Path::new("/data/activations/store");
        let key = "ABVRZKJ6Z7NIMPIYJRCHEYFRUO7ENN6NWOKQDFLFDFVPSM36UPX2UCPP";
        assert_eq!(
            account_key_of(root, &root.join(format!("{key}.jwt"))).as_deref(),
            Some(key)
        );
        assert_eq!(
            account_key_of(root, &account_path(root, key, true)).as_deref(),
            Some(key)
        );
        for other in [
            root.join(ACTIVATIONS_DIR).join(format!("{key}.jwt")),
            root.join(format!(".{key}.jwt.1.2.tmp")),
            root.join(format!("{key}.jwt.deleted")),
            root.join("a/b").join(format!("{key}.jwt")),
            PathBuf::from(format!("/elsewhere/{key}.jwt")),
        ] {
            assert_eq!(account_key_of(root, &other), None, "{}", other.display());
        }
        assert!(is_shard_dir(root, &root.join("PP")));
        assert!(!is_shard_dir(root, &root.join("activations")));
    }

    #[test]
    fn path_tricks_are_refused() {
        let hash = "GDSU3HNZKL7I5NBIY7OOCYKE2HSB3SSYRV7UNGZ5GF6NM5Z7TKUA====";
        let account = "ABVRZKJ6Z7NIMPIYJRCHEYFRUO7ENN6NWOKQDFLFDFVPSM36UPX2UCPP";
        for bad in ["../x", "A/B", "AB\0", "ab", "A", "A.B", "", hash] {
            assert!(safe_key(Namespace::Accounts, bad).is_err(), "{bad:?}");
        }
        for bad in ["../x", "A/B", "", account] {
            assert!(safe_key(Namespace::Activations, bad).is_err(), "{bad:?}");
        }
        assert!(safe_key(Namespace::Accounts, account).is_ok());
        assert!(safe_key(Namespace::Activations, hash).is_ok());
    }
}
