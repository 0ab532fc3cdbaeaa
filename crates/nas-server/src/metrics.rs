//! Prometheus metrics (namespace `nas_`), one registry per server so tests can run side by side.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every metric family the server exports.
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by route pattern, method and status.
    pub http_requests: IntCounterVec,
    /// HTTP request duration by route pattern.
    pub http_duration: HistogramVec,
    /// API requests being handled now.
    pub http_in_flight: IntGauge,
    /// Connections open now by listener (`api`, bounded by `http { maxconnections }`, or
    /// `metrics`).
    pub http_open_connections: IntGaugeVec,
    /// API connections closed because the peer read nothing for `http { writetimeout }`.
    pub http_write_timeouts: IntCounter,
    /// Verified-cache hits.
    pub cache_hits: IntCounter,
    /// Verified-cache misses.
    pub cache_misses: IntCounter,
    /// Entries evicted for size.
    pub cache_evictions: IntCounter,
    /// Verified JWTs served from the cache because the store was unreachable (stale-if-error).
    pub stale_served: IntCounter,
    /// NATS messages shed by reason (`oversized`, `slow_consumer`).
    pub nats_shed: IntCounterVec,
    /// JWT verifications by result (`ok`, `rejected`).
    pub verifications: IntCounterVec,
    /// Accepted writes by outcome (`created`, `updated`, `unchanged`) and refusals by reason.
    pub writes: IntCounterVec,
    /// Store operation duration by backend and operation.
    pub store_duration: HistogramVec,
    /// Store errors by backend and operation.
    pub store_errors: IntCounterVec,
    /// Accounts in the store: -1 until counted. Counting starts when `/metrics` is first
    /// rendered (nothing proportional to the store runs for a gauge nobody reads), then follows
    /// every `store { cleanupinterval }`.
    pub accounts_stored: IntGauge,
    /// Set by the first [`Metrics::render`]; wakes the upkeep task to count the accounts.
    count_wanted: CountWanted,
    /// Expired account JWTs deleted by the expiry purge (`store { deleteexpired }`).
    pub expired_purged: IntCounter,
    /// Audit records dropped because the writer was behind.
    pub audit_dropped: IntCounter,
    /// Time to verify a stored JWT on a cache miss (decode, signature, trust).
    pub verify_duration: prometheus::Histogram,
    /// Changed accounts waiting to be announced on NATS.
    pub notification_queue: IntGauge,
    /// Round trips of our own NATS requests by kind (`lookup`: LOOKUPs on HTTP GET misses)
    /// and result.
    pub nats_request_duration: HistogramVec,
    /// 1 while connected to NATS.
    pub nats_connected: IntGauge,
    /// Change notifications by result: `sent`, `queued` (NATS was down), `failed` (a publish
    /// that will be retried), `dropped` (queue full or connection closed for good).
    pub notifications: IntCounterVec,
    /// Resolver protocol requests by kind (`lookup`, `update`, `pack`, `list`, `delete`, and
    /// `lookup_sent` for our own LOOKUPs on HTTP GET misses) and result.
    pub resolver_requests: IntCounterVec,
    /// Accounts that differ between the store and a nats-server, by server name and kind
    /// (`missing`, `older`, `newer`, `extra`), set by the periodic drift check
    /// (`sync { interval }`); at most [`crate::drift::MAX_SERVER_LABELS`] server labels.
    pub drift_accounts: IntGaugeVec,
}

/// Admits one event per wall-clock second (for log lines a client can cause at will).
pub struct OncePerSecond(std::sync::atomic::AtomicU64);

impl OncePerSecond {
    /// Nothing admitted yet.
    pub const fn new() -> OncePerSecond {
        OncePerSecond(std::sync::atomic::AtomicU64::new(0))
    }

    /// Whether this is the first event of the current second.
    pub fn admit(&self) -> bool {
        let second = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.0.swap(second, std::sync::atomic::Ordering::Relaxed) != second
    }
}

impl Default for OncePerSecond {
    fn default() -> Self {
        OncePerSecond::new()
    }
}

/// One series of a labelled metric family, looked up on its first use and then kept: a
/// labelled lookup hashes the label values under a lock on every call, and the cache-miss path
/// records several. Like a lookup per call, the series appears in the output only once used.
pub struct Series<M> {
    lookup: Box<dyn Fn() -> M + Send + Sync>,
    series: OnceLock<M>,
}

impl<M> Series<M> {
    /// The series `lookup` finds (for example `family.with_label_values(&[..])`).
    pub fn new(lookup: impl Fn() -> M + Send + Sync + 'static) -> Series<M> {
        Series {
            lookup: Box::new(lookup),
            series: OnceLock::new(),
        }
    }

    /// The series, looked up the first time.
    pub fn get(&self) -> &M {
        self.series.get_or_init(&self.lookup)
    }
}

/// Holds a gauge one higher while it lives (in-flight requests, open connections).
pub struct GaugeGuard(IntGauge);

impl GaugeGuard {
    /// Increments `gauge` until the guard is dropped.
    pub fn inc(gauge: &IntGauge) -> GaugeGuard {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    // Names are unique constants of this module, so registration cannot collide.
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|e| panic!("metric registration: {e}"));
    metric
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let vec = IntCounterVec::new(Opts::new(name, help).namespace("nas"), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    register(registry, vec)
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::with_opts(Opts::new(name, help).namespace("nas"))
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    register(registry, c)
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::with_opts(Opts::new(name, help).namespace("nas"))
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    register(registry, g)
}

fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help)
            .namespace("nas")
            .buckets(buckets),
        labels,
    )
    .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    register(registry, h)
}

impl Metrics {
    /// Creates and registers every family.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let fast = vec![
            0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.0,
        ];
        Metrics {
            http_requests: counter_vec(
                &registry,
                "http_requests_total",
                "HTTP requests by route pattern, method and status",
                &["route", "method", "status"],
            ),
            http_duration: histogram_vec(
                &registry,
                "http_request_duration_seconds",
                "HTTP request duration by route pattern",
                &["route"],
                fast.clone(),
            ),
            http_in_flight: gauge(
                &registry,
                "http_requests_in_flight",
                "API requests being handled now",
            ),
            http_open_connections: {
                let opts = Opts::new(
                    "http_open_connections",
                    "Connections open now by listener (api: bounded by http.maxconnections)",
                )
                .namespace("nas");
                let vec = IntGaugeVec::new(opts, &["listener"])
                    .unwrap_or_else(|e| panic!("metric http_open_connections: {e}"));
                register(&registry, vec)
            },
            http_write_timeouts: counter(
                &registry,
                "http_write_timeouts_total",
                "API connections closed because the peer read nothing for http.writetimeout",
            ),
            cache_hits: counter(&registry, "cache_hits_total", "Verified-JWT cache hits"),
            cache_misses: counter(&registry, "cache_misses_total", "Verified-JWT cache misses"),
            cache_evictions: counter(
                &registry,
                "cache_evictions_total",
                "Verified-JWT cache entries evicted for size",
            ),
            nats_shed: counter_vec(
                &registry,
                "nats_shed_total",
                "NATS messages shed unanswered, by reason",
                &["reason"],
            ),
            stale_served: counter(
                &registry,
                "stale_served_total",
                "Verified JWTs served while the store was unreachable (stale-if-error)",
            ),
            verifications: counter_vec(
                &registry,
                "jwt_verifications_total",
                "JWT signature/trust verifications by result",
                &["result"],
            ),
            writes: counter_vec(
                &registry,
                "writes_total",
                "Account writes by path and outcome",
                &["path", "outcome"],
            ),
            store_duration: histogram_vec(
                &registry,
                "store_operation_duration_seconds",
                "Store operation duration",
                &["backend", "op"],
                fast.clone(),
            ),
            store_errors: counter_vec(
                &registry,
                "store_errors_total",
                "Store operation errors",
                &["backend", "op"],
            ),
            accounts_stored: {
                let g = gauge(
                    &registry,
                    "accounts_stored",
                    "Accounts in the store (-1 until first counted)",
                );
                g.set(-1);
                g
            },
            count_wanted: CountWanted::default(),
            expired_purged: counter(
                &registry,
                "expired_purged_total",
                "Expired account JWTs deleted by the expiry purge",
            ),
            verify_duration: {
                let opts = HistogramOpts::new(
                    "jwt_verification_duration_seconds",
                    "Time to verify a stored JWT on a cache miss",
                )
                .namespace("nas")
                .buckets(fast.clone());
                let h = prometheus::Histogram::with_opts(opts)
                    .unwrap_or_else(|e| panic!("metric verification: {e}"));
                register(&registry, h)
            },
            notification_queue: gauge(
                &registry,
                "notification_queue_depth",
                "Changed accounts waiting to be announced on NATS",
            ),
            nats_request_duration: histogram_vec(
                &registry,
                "nats_request_duration_seconds",
                "Round trips of this server's own NATS requests by kind and result",
                &["kind", "result"],
                fast,
            ),
            audit_dropped: counter(
                &registry,
                "audit_dropped_total",
                "Audit records dropped because the audit writer was behind",
            ),
            nats_connected: gauge(&registry, "nats_connected", "1 while connected to NATS"),
            notifications: counter_vec(
                &registry,
                "notifications_total",
                "Change notifications by result (sent, queued, failed, dropped)",
                &["result"],
            ),
            resolver_requests: counter_vec(
                &registry,
                "resolver_requests_total",
                "NATS resolver requests by kind and result",
                &["kind", "result"],
            ),
            drift_accounts: {
                let opts = Opts::new(
                    "drift_accounts",
                    "Accounts that differ between the store and a nats-server, by server and kind",
                )
                .namespace("nas");
                let vec = IntGaugeVec::new(opts, &["server", "kind"])
                    .unwrap_or_else(|e| panic!("metric drift_accounts: {e}"));
                register(&registry, vec)
            },
            registry,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        self.count_wanted.ask();
        let mut out = Vec::new();
        // Encoding into a Vec only fails on invalid metric data, which the typed API prevents.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!("metrics encoding failed: {e}");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Metrics {
    /// Whether anyone has read the metrics, so the account count is worth keeping.
    pub fn count_wanted(&self) -> bool {
        self.count_wanted.asked.load(Ordering::Relaxed)
    }

    /// Resolves once the metrics are first read (at once if they already were).
    pub async fn count_first_wanted(&self) {
        let notified = self.count_wanted.first.notified();
        if !self.count_wanted() {
            notified.await;
        }
    }
}

/// Whether the account count was asked for, and a wake-up for the first time it is.
#[derive(Default)]
struct CountWanted {
    asked: AtomicBool,
    first: tokio::sync::Notify,
}

impl CountWanted {
    fn ask(&self) {
        if !self.asked.swap(true, Ordering::Relaxed) {
            self.first.notify_waiters();
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
