//! Read-only backend over an nsc operator folder: `<folder>/accounts/<name>/<name>.jwt`, looked
//! up by the account's public key (the JWT's `sub`), with the operator JWT beside it
//! (`<folder>/<folder name>.jwt`).
//!
//! The index (`sub` → file) is built when opening (nsc folders hold tens to hundreds of
//! accounts) and rebuilt on every change under the folder; every account whose file changed,
//! appeared or disappeared is reported on [`Backend::external_changes`]. A file caught
//! half-written by nsc keeps its previous index entry until it parses again, so a rewrite never
//! looks like a deletion.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use notify::Watcher;
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;

use crate::{Backend, Cause, Namespace, Precondition, StoreError, Version, EXTERNAL_RESYNC};

/// A new account directory may get its JWT before the watcher watches it: look again after
/// this delay.
const NEW_DIR_RESCAN_DELAY: Duration = Duration::from_millis(250);

type Index = HashMap<String, PathBuf>;

/// The nsc backend: always read-only.
pub struct NscBackend {
    folder: PathBuf,
    /// account public key → JWT file.
    index: Arc<RwLock<Index>>,
    changes: broadcast::Sender<String>,
    _watcher: Mutex<notify::RecommendedWatcher>,
}

impl std::fmt::Debug for NscBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NscBackend")
            .field("folder", &self.folder)
            .finish()
    }
}

/// `sub` of each `accounts/<name>/<name>.jwt`. Files that exist but do not parse (being
/// rewritten) keep the entry they had in `previous`.
fn scan(folder: &Path, previous: &Index) -> Index {
    let mut index = Index::new();
    let Ok(entries) = std::fs::read_dir(folder.join("accounts")) else {
        return index;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path().join(format!("{name}.jwt"));
        let sub = match std::fs::read(&path) {
            Ok(bytes) => {
                let token = nas_jwt::creds::extract_jwt(&String::from_utf8_lossy(&bytes));
                nas_jwt::jwt::peek_payload(token.as_bytes())
                    .ok()
                    .and_then(|p| p.get("sub").and_then(|v| v.as_str()).map(str::to_owned))
                    .filter(|sub| nas_jwt::is_valid_public_key(sub, nas_jwt::KeyRole::Account))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(_) => None,
        };
        match sub {
            Some(sub) => {
                index.insert(sub, path);
            }
            None => {
                for (key, old) in previous {
                    if *old == path {
                        index.insert(key.clone(), path.clone());
                    }
                }
            }
        }
    }
    index
}

fn is_operator_dir(dir: &Path) -> bool {
    let own_jwt = dir
        .file_name()
        .is_some_and(|n| dir.join(format!("{}.jwt", n.to_string_lossy())).is_file());
    dir.join(".nsc").is_file() || dir.join("accounts").is_dir() || own_jwt
}

/// Where the operator JWT of the nsc folder `path` names is: `<operator folder>/<its name>.jwt`
/// (the folder found as [`NscBackend::open`] finds it).
pub fn operator_jwt_path(path: &Path) -> Result<PathBuf, StoreError> {
    let folder = resolve_operator_dir(path)?;
    let name = folder
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(folder.join(format!("{name}.jwt")))
}

/// The operator folder `path` names: itself, or the only operator of an nsc store directory
/// (`<nsc home>/stores` or `<nsc home>`).
fn resolve_operator_dir(path: &Path) -> Result<PathBuf, StoreError> {
    if !path.is_dir() {
        return Err(StoreError::Config(Cause::new(format!(
            "nsc folder {} does not exist",
            path.display()
        ))));
    }
    if is_operator_dir(path) {
        return Ok(path.to_owned());
    }
    let stores = if path.join("stores").is_dir() {
        path.join("stores")
    } else {
        path.to_owned()
    };
    let mut operators: Vec<PathBuf> = std::fs::read_dir(&stores)
        .map_err(|e| StoreError::io(stores.display(), e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && is_operator_dir(p))
        .collect();
    operators.sort();
    match operators.len() {
        1 => Ok(operators.remove(0)),
        0 => Err(StoreError::Config(Cause::new(format!(
            "{} is not an nsc operator folder (no .nsc, accounts/ or <name>.jwt) nor an nsc store holding one",
            path.display()
        )))),
        _ => Err(StoreError::Config(Cause::new(format!(
            "{} holds several nsc operators ({}); name the operator folder",
            stores.display(),
            operators
                .iter()
                .filter_map(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        )))),
    }
}

/// Rebuilds the index and reports every account whose file is among `touched` or whose entry
/// appeared, disappeared or moved.
fn refresh(
    folder: &Path,
    index: &RwLock<Index>,
    changes: &broadcast::Sender<String>,
    touched: &[PathBuf],
) {
    let report: HashSet<String> = {
        let mut index = index.write().unwrap_or_else(|p| p.into_inner());
        let fresh = scan(folder, &index);
        let mut report = HashSet::new();
        for (key, path) in fresh.iter() {
            if index.get(key) != Some(path) || touched.contains(path) {
                report.insert(key.clone());
            }
        }
        for (key, path) in index.iter() {
            if !fresh.contains_key(key) || touched.contains(path) {
                report.insert(key.clone());
            }
        }
        *index = fresh;
        report
    };
    // After the index is replaced: a reader woken by the key finds the new file.
    for key in report {
        let _ = changes.send(key);
    }
}

impl NscBackend {
    /// Opens an nsc operator folder (one holding `.nsc`, `accounts/` or `<folder name>.jwt`), or
    /// an nsc store directory (`<nsc home>` or `<nsc home>/stores`) that holds exactly one
    /// operator. Reads every account JWT once to index them by public key, and starts watching.
    pub fn open(path: &Path) -> Result<NscBackend, StoreError> {
        let folder = resolve_operator_dir(path)?;
        let index = Arc::new(RwLock::new(scan(&folder, &Index::new())));
        let (changes, _) = broadcast::channel(1024);
        let accounts = folder.join("accounts");
        let (idx, tx, root) = (index.clone(), changes.clone(), folder.clone());
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let event = match event {
                    Ok(event) => event,
                    Err(e) => {
                        tracing::warn!(error = %e, "nsc folder watcher error; resyncing");
                        refresh(&root, &idx, &tx, &[]);
                        let _ = tx.send(EXTERNAL_RESYNC.to_owned());
                        return;
                    }
                };
                if event.kind.is_access() || !event.paths.iter().any(|p| p.starts_with(&accounts)) {
                    return;
                }
                refresh(&root, &idx, &tx, &event.paths);
                if event.need_rescan() {
                    let _ = tx.send(EXTERNAL_RESYNC.to_owned());
                }
                // A new account directory: its JWT may land before the directory is watched.
                if event.kind.is_create() && event.paths.iter().any(|p| p.is_dir()) {
                    let (root, idx, tx) = (root.clone(), idx.clone(), tx.clone());
                    let _ = std::thread::Builder::new()
                        .name("nas-nsc-rescan".into())
                        .spawn(move || {
                            std::thread::sleep(NEW_DIR_RESCAN_DELAY);
                            refresh(&root, &idx, &tx, &[]);
                        });
                }
            })
            .map_err(|e| StoreError::io(format!("cannot watch {}", folder.display()), e))?;
        watcher
            .watch(&folder, notify::RecursiveMode::Recursive)
            .map_err(|e| StoreError::io(format!("cannot watch {}", folder.display()), e))?;
        Ok(NscBackend {
            folder,
            index,
            changes,
            _watcher: Mutex::new(watcher),
        })
    }

    /// The operator folder served.
    pub fn folder(&self) -> &Path {
        &self.folder
    }

    fn path_of(&self, key: &str) -> Option<PathBuf> {
        self.index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }
}

#[async_trait::async_trait]
impl Backend for NscBackend {
    fn kind(&self) -> &'static str {
        "nsc"
    }

    /// Reads the account's file now (the index only says where it is). nsc holds no
    /// activations or tombstones: always `None` for them.
    async fn get(&self, ns: Namespace, key: &str) -> Result<Option<(Bytes, Version)>, StoreError> {
        if ns != Namespace::Accounts {
            return Ok(None);
        }
        let Some(path) = self.path_of(key) else {
            return Ok(None);
        };
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io(path.display(), e)),
        };
        // nsc may store decorated JWTs; serve the bare token.
        let token = nas_jwt::creds::extract_jwt(&String::from_utf8_lossy(&bytes));
        let version =
            Version(data_encoding::HEXLOWER.encode(&Sha256::digest(token.as_bytes())[..16]));
        Ok(Some((Bytes::from(token), version)))
    }

    /// Always [`StoreError::ReadOnly`]: accounts are changed with nsc.
    async fn put(
        &self,
        _: Namespace,
        _: &str,
        _: Bytes,
        _: Precondition,
    ) -> Result<Version, StoreError> {
        Err(StoreError::ReadOnly)
    }

    /// Always [`StoreError::ReadOnly`].
    async fn delete(&self, _: Namespace, _: &str, _: Option<&Version>) -> Result<bool, StoreError> {
        Err(StoreError::ReadOnly)
    }

    async fn list(
        &self,
        ns: Namespace,
    ) -> Result<BoxStream<'static, Result<String, StoreError>>, StoreError> {
        let keys: Vec<Result<String, StoreError>> = match ns {
            Namespace::Activations | Namespace::Tombstones => Vec::new(),
            Namespace::Accounts => self
                .index
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .keys()
                .map(|k| Ok(k.clone()))
                .collect(),
        };
        Ok(Box::pin(futures::stream::iter(keys)))
    }

    async fn health(&self) -> Result<(), StoreError> {
        if self.folder.is_dir() {
            Ok(())
        } else {
            Err(StoreError::Io(Cause::new(format!(
                "{} is gone",
                self.folder.display()
            ))))
        }
    }

    fn read_only(&self) -> bool {
        true
    }

    fn external_changes(&self) -> Option<broadcast::Receiver<String>> {
        Some(self.changes.subscribe())
    }
}
