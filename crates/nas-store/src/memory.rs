//! In-memory backend: for tests and quick starts; everything is lost on restart.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use futures::stream::BoxStream;

use crate::{Backend, Namespace, Precondition, StoreError, Version};

/// A map behind a mutex. Every operation is atomic (one lock hold); versions come from a
/// per-store write counter, so every write, even of identical bytes, gets a new version.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    state: Mutex<State>,
    read_only: bool,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<(Namespace, String), (Bytes, u64)>,
    writes: u64,
}

impl MemoryBackend {
    /// An empty, writable store.
    pub fn new() -> MemoryBackend {
        MemoryBackend::default()
    }

    /// A store frozen with these accounts (the Go v0.8 "read-only memory store"; also lets the
    /// read-only conformance checks run without a disk). Every write is refused.
    pub fn new_read_only(accounts: impl IntoIterator<Item = (String, Bytes)>) -> MemoryBackend {
        let mut state = State::default();
        for (key, bytes) in accounts {
            state.writes += 1;
            state
                .entries
                .insert((Namespace::Accounts, key), (bytes, state.writes));
        }
        MemoryBackend {
            state: Mutex::new(state),
            read_only: true,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // No code path panics while holding the lock with the map half-updated.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl Backend for MemoryBackend {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, ns: Namespace, key: &str) -> Result<Option<(Bytes, Version)>, StoreError> {
        Ok(self
            .state()
            .entries
            .get(&(ns, key.to_owned()))
            .map(|(b, v)| (b.clone(), Version(v.to_string()))))
    }

    async fn put(
        &self,
        ns: Namespace,
        key: &str,
        value: Bytes,
        pre: Precondition,
    ) -> Result<Version, StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        let mut state = self.state();
        let id = (ns, key.to_owned());
        let current = state.entries.get(&id).map(|(_, v)| Version(v.to_string()));
        if !pre.holds(current.as_ref()) {
            return Err(StoreError::Conflict);
        }
        state.writes += 1;
        let version = state.writes;
        state.entries.insert(id, (value, version));
        Ok(Version(version.to_string()))
    }

    async fn delete(
        &self,
        ns: Namespace,
        key: &str,
        expected: Option<&Version>,
    ) -> Result<bool, StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        let mut state = self.state();
        let id = (ns, key.to_owned());
        let Some((_, current)) = state.entries.get(&id) else {
            return Ok(false);
        };
        if expected.is_some_and(|v| v.0 != current.to_string()) {
            return Err(StoreError::Conflict);
        }
        Ok(state.entries.remove(&id).is_some())
    }

    /// A snapshot of the keys at the time of the call.
    async fn list(
        &self,
        ns: Namespace,
    ) -> Result<BoxStream<'static, Result<String, StoreError>>, StoreError> {
        let keys: Vec<Result<String, StoreError>> = self
            .state()
            .entries
            .keys()
            .filter(|(n, _)| *n == ns)
            .map(|(_, k)| Ok(k.clone()))
            .collect();
        Ok(Box::pin(futures::stream::iter(keys)))
    }

    async fn health(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn read_only(&self) -> bool {
        self.read_only
    }
}
