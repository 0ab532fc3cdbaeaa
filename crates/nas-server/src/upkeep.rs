//! Store upkeep, every `store { cleanupinterval }` (default one minute): counts the stored
//! accounts for `nas_accounts_stored` (once the metrics have been read: the first `/metrics`
//! request starts the first count; until then nothing is listed and the gauge is -1), and
//! with `store { deleteexpired: true }` deletes expired account JWTs (the Go server's semantics: off by default, nothing is deleted
//! silently), each deletion audited as `expiry_purge`.
//!
//! The first round runs one interval after start, never at start, so opening a large store
//! costs nothing up front. The count is kept from the store's writes ([`Store::count_accounts`]):
//! the first count lists the account keys once (no JWT is read) and later rounds list again only
//! after a change the store could not classify (another instance's write, a watched directory,
//! a resync) or on S3, whose instances share a bucket without telling each other. So on a
//! directory store nothing proportional to the store runs periodically unless the purge is
//! on: `deleteexpired` reads every account JWT each round (it must look at every `exp`). On a
//! store shared by several instances every instance purges, which is harmless (the purge
//! re-checks expiry under the key's lock, and deleting an absent key is a no-op).

use std::sync::Arc;
use std::time::Duration;

use nas_store::{Store, StoreError};

use crate::audit::{Audit, AuditRecord};
use crate::config::ExpiryConfig;
use crate::metrics::Metrics;

/// The upkeep task; it stops when dropped.
pub struct Upkeep(tokio::task::JoinHandle<()>);

impl Drop for Upkeep {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Upkeep {
    /// Starts the periodic rounds.
    pub fn start(store: Store, expiry: ExpiryConfig, metrics: Arc<Metrics>, audit: Audit) -> Self {
        let interval = expiry.cleanup_interval.max(Duration::from_secs(1));
        Upkeep(tokio::spawn(async move {
            let mut ticks =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut first_count = std::pin::pin!(metrics.count_first_wanted());
            let mut first_done = false;
            loop {
                tokio::select! {
                    _ = ticks.tick() => {
                        if let Err(e) = round(&store, &expiry, &metrics, &audit).await {
                            tracing::warn!("store upkeep: {e}");
                        }
                    }
                    // The metrics were read for the first time: count now, not a round later.
                    _ = &mut first_count, if !first_done => {
                        first_done = true;
                        if let Err(e) = count(&store, &metrics).await {
                            tracing::warn!("store upkeep: {e}");
                        }
                    }
                }
            }
        }))
    }
}

/// One round: purge (when configured), then count what is left (if anyone reads the count).
pub async fn round(
    store: &Store,
    expiry: &ExpiryConfig,
    metrics: &Metrics,
    audit: &Audit,
) -> Result<(), StoreError> {
    if expiry.delete_expired && !store.read_only() {
        for (key, token) in store.purge_expired_tokens().await? {
            metrics.expired_purged.inc();
            let record = AuditRecord::about("expiry_purge", "", &token, "purged")
                .for_account(&key)
                .because("the JWT expired");
            audit.record(record);
        }
    }
    if metrics.count_wanted() {
        count(store, metrics).await?;
    }
    Ok(())
}

/// Sets `nas_accounts_stored` ([`Store::count_accounts`]: kept from writes once listed).
async fn count(store: &Store, metrics: &Metrics) -> Result<(), StoreError> {
    let stored = store.count_accounts().await?;
    metrics
        .accounts_stored
        .set(i64::try_from(stored).unwrap_or(i64::MAX));
    Ok(())
}
