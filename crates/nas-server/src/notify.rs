//! Change notifications to nats-servers. The core only knows this trait; the NATS bridge
//! implements it, and without NATS notifications are skipped with a log line (as the Go server).

use bytes::Bytes;

/// Result of a notification attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyOutcome {
    /// Published (or queued for publication after a reconnect).
    Sent,
    /// No NATS is configured.
    NotConfigured,
    /// Publishing failed.
    Failed(String),
}

/// Publishes account changes to nats-servers. Calls are synchronous and cheap (they queue), so
/// the store can make them while it holds the account's lock: the order of the calls for one
/// account is then the order of its stored versions.
pub trait Notifier: Send + Sync + 'static {
    /// A stored change, `seq` its store sequence number: publish once on
    /// `$SYS.ACCOUNT.<key>.CLAIMS.UPDATE`. A queued change with a higher `seq` is never
    /// replaced by a lower one.
    fn account_changed(&self, key: &str, jwt: &Bytes, seq: u64) -> NotifyOutcome;
    /// An explicit request (`?notify=true`) to publish the served JWT again; never replaces a
    /// queued change.
    fn republish(&self, key: &str, jwt: &Bytes) -> NotifyOutcome;
}

/// The notifier used when NATS is not configured.
#[derive(Debug, Default)]
pub struct NoNats;

impl Notifier for NoNats {
    fn account_changed(&self, key: &str, _jwt: &Bytes, _seq: u64) -> NotifyOutcome {
        tracing::debug!(
            "skipping notification for {}, no NATS configured",
            crate::accept::short_key(key)
        );
        NotifyOutcome::NotConfigured
    }

    fn republish(&self, key: &str, jwt: &Bytes) -> NotifyOutcome {
        self.account_changed(key, jwt, 0)
    }
}
