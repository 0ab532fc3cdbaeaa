//! The backend `migrate` puts under each [`Store`](nas_store::Store) it opens.
//!
//! * Its `list` is empty, so the store's background PACK-hash scan reads nothing (a migration
//!   has no use for the hash and would read every account twice); `migrate` lists keys
//!   through the raw backend.
//! * With `--dry-run` writes land in an in-memory overlay and never reach the backend, while
//!   reads see the backend under the overlay: the store's newer-wins decisions, and so the
//!   summary, are those of a real run, and nothing is written.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::stream::BoxStream;
use nas_store::{Backend, Namespace, Precondition, StoreError, Version};

/// A written or deleted value of the overlay (`None`: deleted).
type Entry = Option<(Bytes, Version)>;

/// A backend seen by a migration; see the module documentation.
#[derive(Debug)]
pub struct MigrationBackend {
    inner: Arc<dyn Backend>,
    dry: Option<Mutex<Overlay>>,
}

#[derive(Debug, Default)]
struct Overlay {
    entries: HashMap<(Namespace, String), Entry>,
    writes: u64,
}

impl MigrationBackend {
    /// `inner` as a migration sees it; with `dry_run`, writes stay in memory.
    pub fn new(inner: Arc<dyn Backend>, dry_run: bool) -> MigrationBackend {
        MigrationBackend {
            inner,
            dry: dry_run.then(|| Mutex::new(Overlay::default())),
        }
    }

    fn overlay(dry: &Mutex<Overlay>) -> std::sync::MutexGuard<'_, Overlay> {
        // Nothing panics while holding the lock with the map half-updated.
        dry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The overlay's entry for the key, if the dry run wrote or deleted it.
    fn overlaid(&self, ns: Namespace, key: &str) -> Option<Entry> {
        let dry = self.dry.as_ref()?;
        Self::overlay(dry)
            .entries
            .get(&(ns, key.to_owned()))
            .cloned()
    }
}

#[async_trait::async_trait]
impl Backend for MigrationBackend {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn get(&self, ns: Namespace, key: &str) -> Result<Option<(Bytes, Version)>, StoreError> {
        match self.overlaid(ns, key) {
            Some(entry) => Ok(entry),
            None => self.inner.get(ns, key).await,
        }
    }

    async fn put(
        &self,
        ns: Namespace,
        key: &str,
        value: Bytes,
        pre: Precondition,
    ) -> Result<Version, StoreError> {
        let Some(dry) = &self.dry else {
            return self.inner.put(ns, key, value, pre).await;
        };
        let current = self.get(ns, key).await?;
        if !pre.holds(current.as_ref().map(|(_, v)| v)) {
            return Err(StoreError::Conflict);
        }
        let mut overlay = Self::overlay(dry);
        overlay.writes += 1;
        let version = Version(format!("dry-run-{}", overlay.writes));
        overlay
            .entries
            .insert((ns, key.to_owned()), Some((value, version.clone())));
        Ok(version)
    }

    async fn delete(
        &self,
        ns: Namespace,
        key: &str,
        expected: Option<&Version>,
    ) -> Result<bool, StoreError> {
        let Some(dry) = &self.dry else {
            return self.inner.delete(ns, key, expected).await;
        };
        let current = self.get(ns, key).await?;
        let existed = match (&current, expected) {
            (None, _) => false,
            (Some((_, v)), Some(expected)) if v != expected => return Err(StoreError::Conflict),
            (Some(_), _) => true,
        };
        Self::overlay(dry)
            .entries
            .insert((ns, key.to_owned()), None);
        Ok(existed)
    }

    async fn list(
        &self,
        _ns: Namespace,
    ) -> Result<BoxStream<'static, Result<String, StoreError>>, StoreError> {
        Ok(Box::pin(futures::stream::empty()))
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.inner.health().await
    }

    fn read_only(&self) -> bool {
        self.inner.read_only()
    }
}
