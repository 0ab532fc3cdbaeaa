//! Read-only backend over an nsc operator folder: `<folder>/accounts/<name>/<name>.jwt`, looked
//! up by the account's public key (the JWT's `sub`), with the operator JWT beside it
//! (`<folder>/<folder name>.jwt`). nsc rewrites files in place; a watcher re-indexes and reports
//! which account changed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use futures::stream::BoxStream;
use notify::Watcher;
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;

use crate::{Backend, Namespace, Precondition, StoreError, Version};

/// The nsc backend.
pub struct NscBackend {
    folder: PathBuf,
    /// account public key → JWT file.
    index: Arc<RwLock<HashMap<String, PathBuf>>>,
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

/// `sub` of each `accounts/<name>/<name>.jwt`.
fn scan(folder: &Path) -> HashMap<String, PathBuf> {
    let mut index = HashMap::new();
    let Ok(entries) = std::fs::read_dir(folder.join("accounts")) else {
        return index;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path().join(format!("{name}.jwt"));
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let token = nas_jwt::creds::extract_jwt(&String::from_utf8_lossy(&bytes));
        if let Ok(payload) = nas_jwt::jwt::peek_payload(token.as_bytes()) {
            if let Some(sub) = payload.get("sub").and_then(|v| v.as_str()) {
                if nas_jwt::is_valid_public_key(sub, nas_jwt::KeyRole::Account) {
                    index.insert(sub.to_owned(), path);
                }
            }
        }
    }
    index
}

impl NscBackend {
    /// Opens an nsc operator folder (it must contain `accounts/`).
    pub fn open(folder: &Path) -> Result<NscBackend, StoreError> {
        if !folder.join("accounts").is_dir() {
            return Err(StoreError::Io(format!(
                "{:?} is not an nsc operator folder (no accounts/ directory)",
                folder.display().to_string()
            )));
        }
        let index = Arc::new(RwLock::new(scan(folder)));
        let (changes, _) = broadcast::channel(1024);
        let (idx, tx, root) = (index.clone(), changes.clone(), folder.to_owned());
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else { return };
                if event.kind.is_access()
                    || !event
                        .paths
                        .iter()
                        .any(|p| p.extension().is_some_and(|e| e == "jwt"))
                {
                    return;
                }
                let fresh = scan(&root);
                let mut index = idx.write().unwrap_or_else(|p| p.into_inner());
                for path in &event.paths {
                    for (key, file) in fresh.iter().chain(index.iter()) {
                        if file == path {
                            let _ = tx.send(key.clone());
                        }
                    }
                }
                *index = fresh;
            })
            .map_err(|e| StoreError::Io(e.to_string()))?;
        watcher
            .watch(&folder.join("accounts"), notify::RecursiveMode::Recursive)
            .map_err(|e| StoreError::Io(e.to_string()))?;
        Ok(NscBackend {
            folder: folder.to_owned(),
            index,
            changes,
            _watcher: Mutex::new(watcher),
        })
    }

    /// The operator JWT (`<folder>/<folder name>.jwt`), if present.
    pub fn operator_jwt(&self) -> Option<Bytes> {
        let name = self.folder.file_name()?.to_string_lossy().into_owned();
        std::fs::read(self.folder.join(format!("{name}.jwt")))
            .ok()
            .map(Bytes::from)
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

    async fn get(&self, ns: Namespace, key: &str) -> Result<Option<(Bytes, Version)>, StoreError> {
        if ns == Namespace::Activations {
            return Ok(None);
        }
        let Some(path) = self.path_of(key) else {
            return Ok(None);
        };
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        // nsc may store decorated JWTs; serve the bare token.
        let token = nas_jwt::creds::extract_jwt(&String::from_utf8_lossy(&bytes));
        let version =
            Version(data_encoding::HEXLOWER.encode(&Sha256::digest(token.as_bytes())[..16]));
        Ok(Some((Bytes::from(token), version)))
    }

    async fn put(
        &self,
        _: Namespace,
        _: &str,
        _: Bytes,
        _: Precondition,
    ) -> Result<Version, StoreError> {
        Err(StoreError::ReadOnly)
    }

    async fn delete(&self, _: Namespace, _: &str) -> Result<bool, StoreError> {
        Err(StoreError::ReadOnly)
    }

    async fn list(
        &self,
        ns: Namespace,
    ) -> Result<BoxStream<'static, Result<String, StoreError>>, StoreError> {
        let keys: Vec<Result<String, StoreError>> = match ns {
            Namespace::Activations => Vec::new(),
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
        if self.folder.join("accounts").is_dir() {
            Ok(())
        } else {
            Err(StoreError::Io(format!("{} is gone", self.folder.display())))
        }
    }

    fn read_only(&self) -> bool {
        true
    }

    fn external_changes(&self) -> Option<broadcast::Receiver<String>> {
        Some(self.changes.subscribe())
    }
}
