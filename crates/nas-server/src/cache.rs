//! The verified-JWT cache: the hot path of `GET /jwt/v1/accounts/<key>`.
//!
//! A hit costs a hash lookup and an `Arc` clone: no store read, no signature check, no parsing.
//! A miss loads once per key however many requests wait (a single-flight map), verifies
//! signature, subject and trust, and caches the result; unknown keys are cached as missing for a
//! short time so a flood of misses does not become a flood of store reads.
//!
//! **Ordering.** Every entry carries a *stamp*: the store generation ([`Store::generation`]) its
//! content is known to be current at. Every install — a load, an accepted write, an
//! invalidation — goes through one rule, `may_install`, inside moka's per-key compute, so two
//! installs of one key never interleave:
//!
//! * an entry is replaced only by one with a stamp at least as high (an accepted write of v2
//!   finishing after v3's cannot put v2 back);
//! * a load reads the generation *before* reading the store and installs only if the generation
//!   has not moved meanwhile (a load that read v1 while v3 was written installs nothing, and a
//!   "missing" never covers a just-created account);
//! * a change event removes entries stamped below the change, whether or not an entry exists
//!   when it arrives;
//! * entries stamped below [`Store::floor`] (raised when changes may have been missed) are
//!   read again before they are served.
//!
//! **Stale-if-error.** A verified entry whose reload fails because the store is unreachable is
//! served for at most `maxstale` after the store last confirmed it; any change the instance
//! learns of removes it, so a newer version or a delete is never hidden behind it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt, Shared};
use futures::stream::{BoxStream, StreamExt};

use bytes::Bytes;
use moka::future::Cache;
use moka::ops::compute::Op;
use moka::Expiry;
use nas_jwt::{decode_account_for, OperatorTrust, VerifiedAccount};
use nas_store::{Store, StoreError};
use prometheus::IntCounter;

use crate::metrics::{Metrics, Series};

/// A verified account JWT ready to be served, with its response headers precomputed.
#[derive(Debug)]
pub struct Served {
    /// The account key.
    pub key: String,
    /// The token bytes exactly as stored.
    pub token: Bytes,
    /// `jti` claim.
    pub jti: String,
    /// `"<jti>"`, the ETag.
    pub etag: String,
    /// `exp` claim (0 = never).
    pub exp: i64,
    /// `iat` claim.
    pub iat: i64,
    /// `name` claim.
    pub name: String,
    /// When this entry was verified (a replica re-asks its primary after a while).
    pub loaded_at: Instant,
}

impl Served {
    /// Builds the served form of a verified activation token (`key` is its subject).
    pub fn activation(claims: &nas_jwt::ActivationClaims, token: Bytes) -> Served {
        Served {
            key: claims.sub.clone(),
            token,
            jti: claims.jti.clone(),
            etag: format!("\"{}\"", claims.jti),
            exp: claims.exp,
            iat: claims.iat,
            name: claims.name.clone(),
            loaded_at: Instant::now(),
        }
    }

    /// Builds the served form of a verified account.
    pub fn new(verified: &VerifiedAccount, token: Bytes) -> Served {
        let claims = &verified.claims;
        Served {
            key: claims.sub.clone(),
            token,
            etag: format!("\"{}\"", claims.jti),
            jti: claims.jti.clone(),
            exp: claims.exp,
            iat: claims.iat,
            name: claims.name.clone(),
            loaded_at: Instant::now(),
        }
    }

    /// `Cache-Control` at `now`: never negative (the Go server's defect D5). Tokens without `exp`
    /// get `no-cache` so caches revalidate with the ETag.
    pub fn cache_control(&self, now: i64) -> String {
        if self.exp <= 0 {
            return "no-cache".to_owned();
        }
        let max_age = (self.exp - now).max(0);
        format!("max-age={max_age}, stale-while-revalidate=3600, stale-if-error=3600")
    }

    /// Whether `exp` has passed at `now`.
    pub fn expired(&self, now: i64) -> bool {
        self.exp > 0 && now > self.exp
    }
}

/// What the cache knows about a key.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// A verified JWT.
    Found(Arc<Served>),
    /// Nothing servable (absent, or stored but failing verification).
    Missing,
}

/// Cache sizing.
#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// Maximum number of keys held.
    pub max_entries: u64,
    /// Maximum bytes held (tokens, keys and a fixed per-entry overhead), besides the count.
    pub max_bytes: u64,
    /// Time after which a verified entry is read again from the store (for stores shared by
    /// several instances without a change channel); `None` keeps entries until evicted or
    /// invalidated.
    pub ttl: Option<Duration>,
    /// How long an unknown key is remembered as missing.
    pub negative_ttl: Duration,
    /// How long after the store last confirmed it a verified entry may be served while the
    /// store is unreachable.
    pub max_stale: Duration,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            max_entries: 100_000,
            max_bytes: DEFAULT_MAX_BYTES,
            ttl: None,
            negative_ttl: Duration::from_secs(1),
            max_stale: Duration::from_secs(600),
        }
    }
}

/// `cache { maxbytes }` by default: 100,000 entries of a typical (700-byte) account JWT are
/// charged ~175 MiB, so the count binds first unless JWTs are large.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// What an entry is charged for besides its token and key: the `Served` and slot structs,
/// strings and moka's own bookkeeping (measured RSS per cached account minus the token is
/// about this).
const ENTRY_OVERHEAD: u64 = 1024;

/// An entry's bytes: its key, its token (when found) and the fixed overhead.
fn entry_bytes(key: &str, slot: &Slot) -> u64 {
    let token = match &slot.lookup {
        Some(Lookup::Found(served)) => served.token.len(),
        _ => 0,
    };
    (key.len() + token) as u64 + ENTRY_OVERHEAD
}

/// moka bounds one weighted capacity; both bounds fit in it: with capacity `max_entries`, an
/// entry weighs its share of `max_bytes` in entries, at least 1. Then the total weight stays
/// under `max_entries` only if the count does (every weight ≥ 1) and the bytes do
/// (weight ≥ bytes × max_entries / max_bytes).
fn entry_weight(bytes: u64, max_entries: u64, max_bytes: u64) -> u32 {
    let share =
        (u128::from(bytes) * u128::from(max_entries)).div_ceil(u128::from(max_bytes.max(1)));
    u32::try_from(share.max(1)).unwrap_or(u32::MAX)
}

/// Pack entries verified together, as one signature batch, on one blocking thread: a batch
/// that shares the operator's key costs ~1/4 of checking each alone, gaining little beyond
/// 64 (measured: BENCHMARKS.md), and a batch of JWTs is some 50 KiB.
pub const PACK_VERIFY_BATCH: usize = 64;
/// Pack batches in flight between the reads and the consumer: two verifying (one per core of
/// the 2-core instances we size for) and two more being read meanwhile, so reading the next
/// batches overlaps the checks instead of waiting for them.
pub const PACK_VERIFY_PARALLEL: usize = 4;
/// Pack entries read and held at most besides the store's own read concurrency, however large
/// the store ([`VerifiedCache::verified_pack_stream`]): batches being verified, those queued
/// for the consumer, the one being sent and the one being gathered.
pub const PACK_ENTRIES_IN_FLIGHT: usize = PACK_VERIFY_BATCH * (2 * PACK_VERIFY_PARALLEL + 2);

/// The `(token, key)` a pack must still verify: a read entry not `known` as verified.
fn to_check(entry: &Result<(String, Bytes), StoreError>, known: bool) -> Option<(&[u8], &str)> {
    match entry {
        Ok((key, bytes)) if !known => Some((&bytes[..], key.as_str())),
        _ => None,
    }
}

/// After a failed load, further requests for the key answer with that failure for this long
/// instead of queueing one store timeout each behind it.
const RETRY_AFTER: Duration = Duration::from_millis(250);

/// One cached key.
#[derive(Debug, Clone)]
struct Slot {
    /// What was last read (`None`: only a failure is known).
    lookup: Option<Lookup>,
    /// The store generation `lookup` is current at.
    stamp: u64,
    /// When the store last confirmed `lookup`.
    checked_at: Instant,
    /// The last failed reload, if it is more recent than `checked_at`.
    failure: Option<(Instant, Arc<StoreError>)>,
}

/// The one ordering rule of the cache: `candidate` may replace `current` only if it is at
/// least as current.
fn may_install(current: Option<&Slot>, candidate_stamp: u64) -> bool {
    current.is_none_or(|c| candidate_stamp >= c.stamp)
}

struct PerEntryExpiry {
    negative_ttl: Duration,
}

impl Expiry<String, Slot> for PerEntryExpiry {
    fn expire_after_create(&self, _key: &String, value: &Slot, _now: Instant) -> Option<Duration> {
        match value.lookup {
            // Kept until evicted or invalidated; the TTL and stale-if-error are decided on read.
            Some(Lookup::Found(_)) => None,
            Some(Lookup::Missing) => Some(self.negative_ttl),
            None => Some(RETRY_AFTER),
        }
    }

    fn expire_after_update(
        &self,
        key: &String,
        value: &Slot,
        now: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, value, now)
    }
}

/// The verified cache in front of a [`Store`].
#[derive(Clone)]
pub struct VerifiedCache {
    cache: Cache<String, Slot>,
    store: Store,
    trust: Option<Arc<OperatorTrust>>,
    metrics: Arc<Metrics>,
    ttl: Option<Duration>,
    max_stale: Duration,
    inflight: Arc<Mutex<HashMap<String, SharedLoad>>>,
    /// The runtime the cache was made on (the server's multi-threaded one): packs read and
    /// verify there, on every core, whichever thread consumes them.
    runtime: tokio::runtime::Handle,
    verifications: Arc<VerificationCounters>,
}

/// `nas_jwt_verifications_total` by result, each series looked up once (every miss counts one).
struct VerificationCounters {
    ok: Series<IntCounter>,
    rejected: Series<IntCounter>,
}

fn result_series(metrics: &Metrics, result: &'static str) -> Series<IntCounter> {
    let family = metrics.verifications.clone();
    Series::new(move || family.with_label_values(&[result]))
}

impl VerificationCounters {
    fn new(metrics: &Metrics) -> VerificationCounters {
        VerificationCounters {
            ok: result_series(metrics, "ok"),
            rejected: result_series(metrics, "rejected"),
        }
    }
}

/// A load in flight, awaited by every request that missed the key meanwhile.
/// Its output carries the key's generation when the load started.
type SharedLoad = Shared<BoxFuture<'static, (u64, Result<Lookup, Arc<StoreError>>)>>;

impl VerifiedCache {
    /// Creates the cache and starts invalidating it from the store's change events.
    pub fn new(
        store: Store,
        trust: Option<Arc<OperatorTrust>>,
        metrics: Arc<Metrics>,
        options: &CacheOptions,
    ) -> VerifiedCache {
        let evictions = metrics.cache_evictions.clone();
        let (max_entries, max_bytes) = (options.max_entries, options.max_bytes);
        let cache = Cache::builder()
            .max_capacity(max_entries)
            .weigher(move |key: &String, slot: &Slot| {
                entry_weight(entry_bytes(key, slot), max_entries, max_bytes)
            })
            .expire_after(PerEntryExpiry {
                negative_ttl: options.negative_ttl,
            })
            .eviction_listener(move |_key, _value, cause| {
                if cause.was_evicted() {
                    evictions.inc();
                }
            })
            .build();
        let this = VerifiedCache {
            cache,
            store,
            trust,
            verifications: Arc::new(VerificationCounters::new(&metrics)),
            metrics,
            ttl: options.ttl,
            max_stale: options.max_stale,
            inflight: Arc::default(),
            runtime: tokio::runtime::Handle::current(),
        };
        this.spawn_invalidation();
        this
    }

    fn spawn_invalidation(&self) {
        let mut events = self.store.subscribe();
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(event) => this.forget_below(&event.key, event.seq).await,
                    // Missed events: every entry is read again before it is served.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        this.store.mark_all_stale();
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
    }

    /// Removes `key`'s entry unless it is at least as current as change `seq` (our own accepted
    /// writes install their entry with the change's stamp, before or after the event arrives).
    pub async fn forget_below(&self, key: &str, seq: u64) {
        self.cache
            .entry_by_ref(key)
            .and_compute_with(|current| async move {
                match current {
                    Some(entry) if entry.value().stamp < seq => Op::Remove,
                    _ => Op::Nop,
                }
            })
            .await;
    }

    /// Whether `slot` may be served as it is at `now`.
    fn servable(&self, slot: &Slot, now: Instant) -> bool {
        if slot.stamp < self.store.floor() {
            return false;
        }
        match &slot.lookup {
            Some(Lookup::Found(_)) => self
                .ttl
                .is_none_or(|ttl| now.duration_since(slot.checked_at) < ttl),
            Some(Lookup::Missing) => true,
            None => false,
        }
    }

    /// The cached answer for `key`, if it may be served without asking the store.
    pub async fn get_cached(&self, key: &str) -> Option<Lookup> {
        let slot = self.cache.get(key).await?;
        if !self.servable(&slot, Instant::now()) {
            return None;
        }
        self.metrics.cache_hits.inc();
        slot.lookup
    }

    /// Looks `key` up (the caller has checked it is an account key).
    pub async fn get(&self, key: &str) -> Result<Lookup, Arc<StoreError>> {
        if let Some(hit) = self.get_cached(key).await {
            return Ok(hit);
        }
        self.load_miss(key).await
    }

    /// The miss path of [`VerifiedCache::get`], for a caller that already looked in the cache.
    pub async fn load_miss(&self, key: &str) -> Result<Lookup, Arc<StoreError>> {
        self.metrics.cache_misses.inc();
        self.load_once(key).await
    }

    /// Single-flight: concurrent misses of one key share one load. The load runs on its own
    /// task, so it finishes (and leaves the in-flight map) even when every waiter hangs up.
    /// A request that joins a load started before the key's latest change (one acknowledged
    /// before this request began) must not get that load's older reading: it reads again.
    async fn load_once(&self, key: &str) -> Result<Lookup, Arc<StoreError>> {
        let since = self.store.generation(key);
        let shared = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            match inflight.get(key) {
                Some(load) => load.clone(),
                None => {
                    let (this, owned) = (self.clone(), key.to_owned());
                    let task = tokio::spawn(async move {
                        let started = this.store.generation(&owned);
                        let result = this.refresh(&owned).await;
                        this.inflight
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&owned);
                        (started, result)
                    });
                    let load = async move {
                        task.await.unwrap_or_else(|e| {
                            let error = StoreError::io("cache load failed", e);
                            (0, Err(Arc::new(error)))
                        })
                    }
                    .boxed()
                    .shared();
                    inflight.insert(key.to_owned(), load.clone());
                    load
                }
            }
        };
        match shared.await {
            (started, _) if started < since => self.refresh(key).await,
            (_, result) => result,
        }
    }

    /// Serves what another request just loaded, repeats a recent failure, or reads the store
    /// and installs what it read by the ordering rule. The store is read outside moka's
    /// per-key lock, so a slow read never holds up a write installing its own version.
    async fn refresh(&self, key: &str) -> Result<Lookup, Arc<StoreError>> {
        let now = Instant::now();
        if let Some(slot) = self.cache.get(key).await {
            if self.servable(&slot, now) {
                if let Some(lookup) = &slot.lookup {
                    return Ok(lookup.clone());
                }
            }
            if let Some((at, error)) = &slot.failure {
                if now.duration_since(*at) < RETRY_AFTER {
                    return self.stale_or(&slot, error.clone(), now);
                }
            }
        }
        let stamp = self.store.generation(key);
        let loaded = self.load(key).await;
        let mut answer = None;
        self.cache
            .entry_by_ref(key)
            .and_compute_with(|current| {
                let answer = &mut answer;
                async move {
                    let current = current.map(|e| e.into_value());
                    let (op, result) = self.install_loaded(key, current, stamp, loaded, now);
                    *answer = Some(result);
                    op
                }
            })
            .await;
        answer.unwrap_or(Ok(Lookup::Missing))
    }

    /// Runs under the key's compute lock: what a finished load may install.
    fn install_loaded(
        &self,
        key: &str,
        current: Option<Slot>,
        stamp: u64,
        loaded: Result<Lookup, StoreError>,
        now: Instant,
    ) -> (Op<Slot>, Result<Lookup, Arc<StoreError>>) {
        match loaded {
            Ok(lookup) => {
                // A change overtook the read: serve what was read (this request overlapped the
                // change) but install nothing; the next request reads again.
                if self.store.generation(key) != stamp || !may_install(current.as_ref(), stamp) {
                    return (Op::Nop, Ok(lookup));
                }
                let slot = Slot {
                    lookup: Some(lookup.clone()),
                    stamp,
                    checked_at: now,
                    failure: None,
                };
                (Op::Put(slot), Ok(lookup))
            }
            Err(e) => {
                let error = Arc::new(e);
                let slot = match current {
                    Some(slot) => Slot {
                        failure: Some((now, error.clone())),
                        ..slot
                    },
                    None => Slot {
                        lookup: None,
                        stamp,
                        checked_at: now,
                        failure: Some((now, error.clone())),
                    },
                };
                let result = self.stale_or(&slot, error, now);
                (Op::Put(slot), result)
            }
        }
    }

    /// Stale-if-error: the last verified JWT if the store is unreachable and it was confirmed
    /// within `maxstale`, else the error.
    fn stale_or(
        &self,
        slot: &Slot,
        error: Arc<StoreError>,
        now: Instant,
    ) -> Result<Lookup, Arc<StoreError>> {
        let within = now.duration_since(slot.checked_at) < self.max_stale;
        match (&slot.lookup, &*error) {
            (Some(Lookup::Found(stale)), StoreError::Unavailable(_)) if within => {
                self.metrics.stale_served.inc();
                tracing::warn!(
                    account = stale.key.as_str(),
                    "store unavailable, serving the last verified JWT: {error}"
                );
                Ok(Lookup::Found(stale.clone()))
            }
            _ => Err(error),
        }
    }

    async fn load(&self, key: &str) -> Result<Lookup, StoreError> {
        let Some(bytes) = self.store.get_account(key).await? else {
            return Ok(Lookup::Missing);
        };
        let started = std::time::Instant::now();
        let verified = self.verify(key, &bytes);
        self.metrics
            .verify_duration
            .observe(started.elapsed().as_secs_f64());
        match verified {
            Ok(verified) => {
                self.verifications.ok.get().inc();
                Ok(Lookup::Found(Arc::new(Served::new(&verified, bytes))))
            }
            Err(reason) => {
                self.verifications.rejected.get().inc();
                tracing::warn!(account = key, %reason, "stored JWT fails verification; not serving it");
                Ok(Lookup::Missing)
            }
        }
    }

    /// The PACK every serving path hands out (HTTP pack, NATS PACK and LIST, replica export):
    /// stored, unexpired and verifying — trusted issuer, an account claim whose `sub` is the key
    /// it is stored under. A foreign-signed or misfiled entry is left out (and logged), as a GET
    /// of it answers 404. Collects [`VerifiedCache::verified_pack_stream`].
    pub async fn verified_pack(
        &self,
        max: Option<usize>,
    ) -> Result<Vec<(String, Bytes)>, StoreError> {
        let mut entries = self.verified_pack_stream(max);
        let mut out = Vec::new();
        while let Some(entry) = entries.next().await {
            out.push(entry?);
        }
        Ok(out)
    }

    /// [`VerifiedCache::verified_pack`] as a stream pulled by its consumer (an HTTP body, NATS
    /// publishes), at most `max` entries, in key order, ending after its first error. Entries
    /// are read ([`Store::pack_stream`]) on the cache's runtime, then verified in batches of
    /// [`PACK_VERIFY_BATCH`] on the blocking pool, [`PACK_VERIFY_PARALLEL`] batches at a time,
    /// so reads and checks use every core and stay off the I/O threads. Entries in flight at
    /// most: the store's read concurrency plus [`PACK_ENTRIES_IN_FLIGHT`] (640), whatever the
    /// store size. An entry whose identical bytes are in the cache as verified is not checked again.
    pub fn verified_pack_stream(
        &self,
        max: Option<usize>,
    ) -> BoxStream<'static, Result<(String, Bytes), StoreError>> {
        let (batches, received) = tokio::sync::mpsc::channel(PACK_VERIFY_PARALLEL);
        let this = self.clone();
        // The producer runs on the cache's runtime, so a consumer on a single-threaded one (an
        // HTTP worker) does not serialize the reads; it stops when the consumer hangs up.
        self.runtime.spawn(async move {
            let mut verified = this
                .store
                .pack_stream()
                .ready_chunks(PACK_VERIFY_BATCH)
                .map(|batch| {
                    let this = this.clone();
                    async move { this.keep_verified(batch).await }
                })
                .buffered(PACK_VERIFY_PARALLEL);
            while let Some(batch) = verified.next().await {
                if batches.send(batch).await.is_err() {
                    break;
                }
            }
        });
        let entries = futures::stream::unfold(received, |mut received| async move {
            let batch = received.recv().await?;
            Some((futures::stream::iter(batch), received))
        })
        .flatten()
        .take(max.unwrap_or(usize::MAX));
        nas_store::end_after_error(entries)
    }

    /// The entries of `batch` that verify (errors kept in place), checked on a blocking thread;
    /// those the cache already holds as verified, byte for byte, are kept without a check.
    async fn keep_verified(
        &self,
        batch: Vec<Result<(String, Bytes), StoreError>>,
    ) -> Vec<Result<(String, Bytes), StoreError>> {
        let mut known = Vec::with_capacity(batch.len());
        for entry in &batch {
            known.push(match entry {
                Ok((key, bytes)) => self.holds_verified(key, bytes).await,
                Err(_) => true,
            });
        }
        let this = self.clone();
        let checked = tokio::task::spawn_blocking(move || this.verified_only(batch, &known)).await;
        checked.unwrap_or_else(|e| vec![Err(StoreError::io("pack verification failed", e))])
    }

    /// `batch` without the entries that are neither `known` (verified before) nor verify now;
    /// the others are checked together ([`VerifiedCache::verify_many`]), each refusal logged.
    fn verified_only(
        &self,
        batch: Vec<Result<(String, Bytes), StoreError>>,
        known: &[bool],
    ) -> Vec<Result<(String, Bytes), StoreError>> {
        let pairs: Vec<(&[u8], &str)> = batch
            .iter()
            .zip(known)
            .filter_map(|(entry, known)| to_check(entry, *known))
            .collect();
        let mut verdicts = self.verify_many(&pairs).into_iter();
        let keep: Vec<bool> = batch
            .iter()
            .zip(known)
            .map(|(entry, known)| match to_check(entry, *known) {
                None => true,
                Some((_, key)) => match verdicts.next() {
                    Some(Ok(_)) => true,
                    Some(Err(reason)) => {
                        tracing::warn!(account = key, %reason, "stored JWT fails verification; left out of the pack");
                        false
                    }
                    None => false,
                },
            })
            .collect();
        batch
            .into_iter()
            .zip(keep)
            .filter_map(|(entry, keep)| keep.then_some(entry))
            .collect()
    }

    /// Whether the cache holds `bytes` as the verified JWT of `key` (verification depends only
    /// on the bytes, the key and this cache's trust, so it need not be repeated).
    async fn holds_verified(&self, key: &str, bytes: &Bytes) -> bool {
        match self.cache.get(key).await {
            Some(Slot {
                lookup: Some(Lookup::Found(served)),
                ..
            }) => served.token == *bytes,
            _ => false,
        }
    }

    /// Verification of a stored token: signature, subject, trust; not time (expired tokens are
    /// served, as the Go server does; `?check=true` filters them).
    fn verify(&self, key: &str, bytes: &[u8]) -> Result<VerifiedAccount, nas_jwt::VerifyError> {
        match &self.trust {
            Some(trust) => trust.verify_account_untimed(bytes, Some(key)),
            None => decode_account_for(bytes, Some(key)),
        }
    }

    /// [`VerifiedCache::verify`] of many `(token, key)` pairs, signatures checked as one batch.
    fn verify_many(
        &self,
        items: &[(&[u8], &str)],
    ) -> Vec<Result<VerifiedAccount, nas_jwt::VerifyError>> {
        match &self.trust {
            Some(trust) => trust.verify_accounts_untimed(items),
            None => nas_jwt::decode_accounts_for(items),
        }
    }

    /// Installs a token that was just verified and stored, current at store generation `stamp`
    /// (the write's [`nas_store::Written::seq`]); a more current entry is kept.
    pub async fn install(&self, served: Arc<Served>, stamp: u64) {
        let key = served.key.clone();
        self.cache
            .entry(key)
            .and_compute_with(|current| async move {
                let current = current.map(|e| e.into_value());
                if may_install(current.as_ref(), stamp) {
                    Op::Put(Slot {
                        lookup: Some(Lookup::Found(served)),
                        stamp,
                        checked_at: Instant::now(),
                        failure: None,
                    })
                } else {
                    Op::Nop
                }
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nas_jwt::{encode, AccountClaims, KeyRole, SigningKey};
    use nas_store::memory::MemoryBackend;

    fn served(key: &SigningKey, signer: &SigningKey, iat: i64) -> Arc<Served> {
        let mut claims = AccountClaims::new_account(key.public_key().as_str(), "A");
        let token = encode(&mut claims, signer, iat).expect("encode");
        let verified = decode_account_for(token.as_bytes(), None).expect("verifies");
        Arc::new(Served::new(&verified, Bytes::from(token)))
    }

    /// Holds `n` distinct accounts in a cache with these bounds; returns (entries, bytes held).
    async fn fill(n: usize, max_entries: u64, max_bytes: u64) -> (u64, u64) {
        let store = Store::new(Arc::new(MemoryBackend::new()));
        let options = CacheOptions {
            max_entries,
            max_bytes,
            ..CacheOptions::default()
        };
        let cache = VerifiedCache::new(store, None, Arc::new(Metrics::new()), &options);
        let signer = SigningKey::generate(KeyRole::Operator);
        for i in 0..n {
            let account = SigningKey::generate(KeyRole::Account);
            cache
                .install(served(&account, &signer, 1), i as u64 + 1)
                .await;
        }
        cache.cache.run_pending_tasks().await;
        let bytes = cache
            .cache
            .iter()
            .map(|(key, slot)| entry_bytes(&key, &slot))
            .sum();
        (cache.cache.entry_count(), bytes)
    }

    #[tokio::test]
    async fn the_cache_is_bounded_by_entries_and_by_bytes() {
        // The count binds: 10 entries, bytes to spare.
        let (entries, _) = fill(50, 10, DEFAULT_MAX_BYTES).await;
        assert!(entries <= 10, "{entries} entries");
        // The bytes bind: 1,000 entries allowed, 20 KiB of them (an entry is charged ~1.4 KiB).
        let (entries, bytes) = fill(50, 1000, 20 * 1024).await;
        assert!(bytes <= 20 * 1024, "{bytes} bytes in {entries} entries");
        assert!(
            entries >= 5,
            "the byte bound must still let entries in: {entries}"
        );
    }

    #[test]
    fn an_entry_weighs_its_share_of_the_byte_bound_and_at_least_one() {
        assert_eq!(entry_weight(1_000, 100, 1_000_000), 1);
        assert_eq!(entry_weight(10_000, 100, 1_000_000), 1);
        assert_eq!(entry_weight(10_001, 100, 1_000_000), 2);
        assert_eq!(entry_weight(1_000_000, 100, 1_000_000), 100);
        assert_eq!(entry_weight(5, 1, 0), 5);
    }

    /// Two accepted writes finishing in the opposite order of their store writes: the cache
    /// keeps the one stored last (the higher sequence number).
    #[tokio::test]
    async fn an_install_that_arrives_late_never_replaces_a_newer_one() {
        let store = Store::new(Arc::new(MemoryBackend::new()));
        let cache = VerifiedCache::new(
            store,
            None,
            Arc::new(Metrics::new()),
            &CacheOptions::default(),
        );
        let (account, signer) = (
            SigningKey::generate(KeyRole::Account),
            SigningKey::generate(KeyRole::Operator),
        );
        let (v2, v3) = (served(&account, &signer, 2), served(&account, &signer, 3));
        cache.install(v3.clone(), 6).await;
        cache.install(v2, 5).await;
        match cache.get_cached(account.public_key().as_str()).await {
            Some(Lookup::Found(s)) => assert_eq!(s.token, v3.token),
            other => panic!("{other:?}"),
        }
        // A change event below the entry's stamp leaves it; one above removes it.
        cache.forget_below(account.public_key().as_str(), 6).await;
        assert!(cache
            .get_cached(account.public_key().as_str())
            .await
            .is_some());
        cache.forget_below(account.public_key().as_str(), 7).await;
        assert!(cache
            .get_cached(account.public_key().as_str())
            .await
            .is_none());
    }
}
