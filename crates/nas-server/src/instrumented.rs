//! A store backend decorator that records duration and errors of every operation, so any
//! backend gets the same metrics without knowing about them.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::stream::BoxStream;
use nas_store::{Backend, Namespace, Precondition, StoreError, Version};
use prometheus::{Histogram, IntCounter};

use crate::metrics::{Metrics, Series};

/// Wraps a backend and records `nas_store_operation_duration_seconds` / `nas_store_errors_total`.
pub struct Instrumented {
    inner: Arc<dyn Backend>,
    get: OpMetrics,
    put: OpMetrics,
    delete: OpMetrics,
    list: OpMetrics,
    health: OpMetrics,
}

/// One operation's duration histogram and error counter, looked up once: a labelled lookup
/// hashes the labels under a lock, and every store read (each cache miss) records one.
struct OpMetrics {
    duration: Series<Histogram>,
    errors: Series<IntCounter>,
}

impl OpMetrics {
    fn new(metrics: &Metrics, kind: &'static str, op: &'static str) -> OpMetrics {
        OpMetrics {
            duration: {
                let family = metrics.store_duration.clone();
                Series::new(move || family.with_label_values(&[kind, op]))
            },
            errors: {
                let family = metrics.store_errors.clone();
                Series::new(move || family.with_label_values(&[kind, op]))
            },
        }
    }

    fn record(&self, started: Instant, failed: bool) {
        self.duration.get().observe(started.elapsed().as_secs_f64());
        if failed {
            self.errors.get().inc();
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl std::fmt::Debug for Instrumented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instrumented")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl Instrumented {
    /// Decorates `inner`.
    pub fn new(inner: Arc<dyn Backend>, metrics: Arc<Metrics>) -> Instrumented {
        let kind = inner.kind();
        let op = |name: &'static str| OpMetrics::new(&metrics, kind, name);
        Instrumented {
            get: op("get"),
            put: op("put"),
            delete: op("delete"),
            list: op("list"),
            health: op("health"),
            inner,
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
        self.get.record(started, result.is_err());
        result
    }

    async fn get_value(&self, ns: Namespace, key: &str) -> Result<Option<Bytes>, StoreError> {
        let started = Instant::now();
        let result = self.inner.get_value(ns, key).await;
        self.get.record(started, result.is_err());
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
        self.put.record(started, failed);
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
        self.delete.record(started, result.is_err());
        result
    }

    async fn list(
        &self,
        ns: Namespace,
    ) -> Result<BoxStream<'static, Result<String, StoreError>>, StoreError> {
        let started = Instant::now();
        let result = self.inner.list(ns).await;
        self.list.record(started, result.is_err());
        result
    }

    async fn health(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        let result = self.inner.health().await;
        self.health.record(started, result.is_err());
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
