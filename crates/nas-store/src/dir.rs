//! Directory backend in the Go server's (and nats-server's `full` resolver's) layout:
//! `<dir>/<key>.jwt`, or `<dir>/<last two chars>/<key>.jwt` when sharded. Activations live in
//! `<dir>/activations/<hash id>.jwt` so they never mix with account keys.
//!
//! Writes are crash-safe: a temp file in the target directory, fsync, rename over the target,
//! fsync of the directory; a reader sees the old or the new file, never a partial one. Files are
//! 0600 and directories 0700. Compare-and-swap is enforced within this process (a per-key lock
//! around read-compare-write); several processes writing one directory are not coordinated.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use futures::stream::BoxStream;
use notify::Watcher;
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;

use crate::{Backend, Namespace, Precondition, StoreError, Version};

const LOCKS: usize = 256;
const ACTIVATIONS_DIR: &str = "activations";

/// How to open a directory store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirOptions {
    /// Write new files under `<last two chars>/`.
    pub sharded: bool,
    /// Refuse writes (the directory must exist).
    pub read_only: bool,
    /// Watch the directory and report changes made by other programs.
    pub watch: bool,
}

/// The directory backend.
pub struct DirBackend {
    root: PathBuf,
    options: DirOptions,
    locks: Vec<tokio::sync::Mutex<()>>,
    changes: broadcast::Sender<String>,
    _watcher: Option<Mutex<notify::RecommendedWatcher>>,
}

impl std::fmt::Debug for DirBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirBackend")
            .field("root", &self.root)
            .field("options", &self.options)
            .finish()
    }
}

/// Keys reach us validated by [`crate::Store`]; this second check keeps any key that could
/// address a path outside the store (`/`, `..`, NUL, lowercase tricks) from touching the disk.
fn safe_key(ns: Namespace, key: &str) -> Result<(), StoreError> {
    let ok = (2..=64).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'=');
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidKey {
            ns,
            key: key.to_owned(),
        })
    }
}

fn version_of(bytes: &[u8]) -> Version {
    Version(data_encoding::HEXLOWER.encode(&Sha256::digest(bytes)[..16]))
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn create_dir(path: &Path) -> Result<(), StoreError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)?;
    Ok(())
}

fn fsync_dir(path: &Path) -> Result<(), StoreError> {
    fs::File::open(path)?.sync_all()?;
    Ok(())
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `target` atomically and durably.
fn write_atomic(target: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = target
        .parent()
        .ok_or_else(|| StoreError::Io("no parent directory".into()))?;
    create_dir(dir)?;
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("entry");
    let temp = dir.join(format!(
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
        file.sync_all()?;
        fs::rename(&temp, target)?;
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

impl DirBackend {
    /// Opens (and, when writable, creates) a store directory.
    pub fn open(root: &Path, options: DirOptions) -> Result<DirBackend, StoreError> {
        if options.read_only {
            if !root.is_dir() {
                return Err(StoreError::Io(format!(
                    "read-only store directory {} does not exist",
                    root.display()
                )));
            }
        } else {
            create_dir(root)?;
        }
        let (changes, _) = broadcast::channel(4096);
        let watcher = if options.watch {
            Some(Mutex::new(Self::watch(root, changes.clone())?))
        } else {
            None
        };
        Ok(DirBackend {
            root: root.to_owned(),
            options,
            locks: (0..LOCKS).map(|_| tokio::sync::Mutex::new(())).collect(),
            changes,
            _watcher: watcher,
        })
    }

    fn watch(
        root: &Path,
        changes: broadcast::Sender<String>,
    ) -> Result<notify::RecommendedWatcher, StoreError> {
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else { return };
                if event.kind.is_access() {
                    return;
                }
                for path in event.paths {
                    if let Some(key) = account_key_of(&path) {
                        let _ = changes.send(key);
                    }
                }
            })
            .map_err(|e| StoreError::Io(format!("cannot watch {}: {e}", root.display())))?;
        watcher
            .watch(root, notify::RecursiveMode::Recursive)
            .map_err(|e| StoreError::Io(format!("cannot watch {}: {e}", root.display())))?;
        Ok(watcher)
    }

    /// The store directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn flat_path(&self, key: &str) -> PathBuf {
        self.root.join(format!("{key}.jwt"))
    }

    fn sharded_path(&self, key: &str) -> PathBuf {
        let shard = &key[key.len() - 2..];
        self.root.join(shard).join(format!("{key}.jwt"))
    }

    /// Where a key is written, and where else it may be found (the other layout).
    fn paths(&self, ns: Namespace, key: &str) -> (PathBuf, Option<PathBuf>) {
        match ns {
            Namespace::Activations => (
                self.root.join(ACTIVATIONS_DIR).join(format!("{key}.jwt")),
                None,
            ),
            Namespace::Accounts if self.options.sharded => {
                (self.sharded_path(key), Some(self.flat_path(key)))
            }
            Namespace::Accounts => (self.flat_path(key), Some(self.sharded_path(key))),
        }
    }

    fn lock(&self, ns: Namespace, key: &str) -> &tokio::sync::Mutex<()> {
        let digest = Sha256::digest([ns.name().as_bytes(), key.as_bytes()].concat());
        &self.locks[usize::from(digest[0]) % LOCKS]
    }

    fn read_sync(&self, ns: Namespace, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (primary, other) = self.paths(ns, key);
        if let Some(bytes) = read_optional(&primary)? {
            return Ok(Some(bytes));
        }
        match other {
            Some(other) => read_optional(&other),
            None => Ok(None),
        }
    }
}

/// The account key a store path names, if it is a `<key>.jwt` file of the account layout.
fn account_key_of(path: &Path) -> Option<String> {
    if path.components().any(|c| c.as_os_str() == ACTIVATIONS_DIR) {
        return None;
    }
    let name = path.file_name()?.to_str()?;
    let key = name.strip_suffix(".jwt")?;
    nas_jwt::is_valid_public_key(key, nas_jwt::KeyRole::Account).then(|| key.to_owned())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Io(format!("store task failed: {e}")))?
}

#[async_trait::async_trait]
impl Backend for DirBackend {
    fn kind(&self) -> &'static str {
        "dir"
    }

    async fn get(&self, ns: Namespace, key: &str) -> Result<Option<(Bytes, Version)>, StoreError> {
        safe_key(ns, key)?;
        let (primary, other) = self.paths(ns, key);
        let found = blocking(move || {
            if let Some(bytes) = read_optional(&primary)? {
                return Ok(Some(bytes));
            }
            match other {
                Some(other) => read_optional(&other),
                None => Ok(None),
            }
        })
        .await?;
        Ok(found.map(|bytes| {
            let version = version_of(&bytes);
            (Bytes::from(bytes), version)
        }))
    }

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
        let _guard = self.lock(ns, key).lock().await;
        let current = self.read_sync(ns, key)?.map(|b| version_of(&b));
        let holds = match &pre {
            Precondition::Any => true,
            Precondition::Absent => current.is_none(),
            Precondition::Matches(v) => current.as_ref() == Some(v),
        };
        if !holds {
            return Err(StoreError::Conflict);
        }
        let (target, other) = self.paths(ns, key);
        let version = version_of(&value);
        blocking(move || {
            write_atomic(&target, &value)?;
            // One copy per key: a file left in the other layout would shadow nothing but confuse.
            if let Some(other) = other {
                if other.exists() {
                    fs::remove_file(&other)?;
                }
            }
            Ok(())
        })
        .await?;
        Ok(version)
    }

    async fn delete(&self, ns: Namespace, key: &str) -> Result<bool, StoreError> {
        safe_key(ns, key)?;
        if self.options.read_only {
            return Err(StoreError::ReadOnly);
        }
        let _guard = self.lock(ns, key).lock().await;
        let (primary, other) = self.paths(ns, key);
        blocking(move || {
            let mut deleted = false;
            for path in std::iter::once(primary).chain(other) {
                match fs::remove_file(&path) {
                    Ok(()) => {
                        deleted = true;
                        if let Some(dir) = path.parent() {
                            fsync_dir(dir)?;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(deleted)
        })
        .await
    }

    async fn list(
        &self,
        ns: Namespace,
    ) -> Result<BoxStream<'static, Result<String, StoreError>>, StoreError> {
        let root = self.root.clone();
        let keys = blocking(move || {
            let mut keys = HashSet::new();
            let key_of = |name: &str| -> Option<String> {
                let key = name.strip_suffix(".jwt")?;
                safe_key(ns, key).ok().map(|()| key.to_owned())
            };
            let dirs: Vec<PathBuf> = match ns {
                Namespace::Activations => vec![root.join(ACTIVATIONS_DIR)],
                Namespace::Accounts => {
                    // Both layouts: top-level files and two-character shard directories.
                    let mut dirs = vec![root.clone()];
                    if let Ok(entries) = fs::read_dir(&root) {
                        for e in entries.flatten() {
                            let name = e.file_name();
                            let name = name.to_string_lossy();
                            if name.len() == 2 && e.file_type().is_ok_and(|t| t.is_dir()) {
                                dirs.push(e.path());
                            }
                        }
                    }
                    dirs
                }
            };
            for dir in dirs {
                let entries = match fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.into()),
                };
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_file()) {
                        if let Some(key) = key_of(&e.file_name().to_string_lossy()) {
                            if ns == Namespace::Activations
                                || nas_jwt::is_valid_public_key(&key, nas_jwt::KeyRole::Account)
                            {
                                keys.insert(key);
                            }
                        }
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
                Err(StoreError::Io(format!(
                    "{} is not a directory",
                    root.display()
                )))
            }
        })
        .await
    }

    fn read_only(&self) -> bool {
        self.options.read_only
    }

    fn external_changes(&self) -> Option<broadcast::Receiver<String>> {
        self._watcher.as_ref().map(|_| self.changes.subscribe())
    }
}

/// Shared helper for tests and tools: the on-disk path of an account in a given layout.
pub fn account_path(root: &Path, key: &str, sharded: bool) -> PathBuf {
    if sharded && key.len() >= 2 {
        root.join(&key[key.len() - 2..]).join(format!("{key}.jwt"))
    } else {
        root.join(format!("{key}.jwt"))
    }
}
