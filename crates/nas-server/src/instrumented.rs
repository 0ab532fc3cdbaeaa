//! A store backend decorator that records duration and errors of every operation, so any
//! backend gets the same metrics without knowing about them.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::stream::BoxStream;
use nas_store::{Backend, Namespace, Precondition, StoreError, Version};

use crate::metrics::Metrics;

/// Wraps a backend and records `nas_store_operation_duration_seconds` / `nas_store_errors_total`.
#[derive(Debug)]
pub struct Instrumented {
    inner: Arc<dyn Backend>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Instrumented {
    /// Decorates `inner`.
    pub fn new(inner: Arc<dyn Backend>, metrics: Arc<Metrics>) -> Instrumented {
        Instrumented { inner, metrics }
    }

    fn record(&self, op: &str, started: Instant, failed: bool) {
        let kind = self.inner.kind();
        self.metrics
            .store_duration
            .with_label_values(&[kind, op])
            .observe(started.elapsed().as_secs_f64());
        if failed {
            self.metrics
                .store_errors
                .with_label_values(&[kind, op])
                .inc();
        }
    }
}

#[async_trait::async_trait]
impl Backend for Instrumented {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn get(&self, ns: Namespace, key: &str) -> Result<Option<(Bytes, Version)>, StoreError> {
        let started = Instant::now();
        let result = self.inner.get(ns, key).await;
        self.record("get", started, result.is_err());
        result
    }

    async fn put(
        &self,
        ns: Namespace,
        key: &str,
        value: Bytes,
        pre: Precondition,
    ) -> Result<Version, StoreError> {
        let started = Instant::now();
        let result = self.inner.put(ns, key, value, pre).await;
        // A lost compare-and-swap is normal contention, not an error.
        let failed = matches!(&result, Err(e) if !matches!(e, StoreError::Conflict));
        self.record("put", started, failed);
        result
    }

    async fn delete(
        &self,
        ns: Namespace,
        key: &str,
        expected: Option<&Version>,
    ) -> Result<bool, StoreError> {
        let started = Instant::now();
        let result = self.inner.delete(ns, key, expected).await;
        self.record("delete", started, result.is_err());
        result
    }

    async fn list(
        &self,
        ns: Namespace,
    ) -> Result<BoxStream<'static, Result<String, StoreError>>, StoreError> {
        let started = Instant::now();
        let result = self.inner.list(ns).await;
        self.record("list", started, result.is_err());
        result
    }

    async fn health(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        let result = self.inner.health().await;
        self.record("health", started, result.is_err());
        result
    }

    fn read_only(&self) -> bool {
        self.inner.read_only()
    }

    fn lists_sorted(&self) -> bool {
        self.inner.lists_sorted()
    }

    fn read_concurrency(&self) -> usize {
        self.inner.read_concurrency()
    }

    async fn shared_pack_hash(&self) -> Result<Option<[u8; 32]>, StoreError> {
        self.inner.shared_pack_hash().await
    }

    fn peers_announce(&self) -> bool {
        self.inner.peers_announce()
    }

    fn external_changes(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        self.inner.external_changes()
    }
}
