//! Change notifications to nats-servers. The HTTP layer only knows this trait; the NATS bridge
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

/// Publishes account changes to nats-servers.
#[async_trait::async_trait]
pub trait Notifier: Send + Sync + 'static {
    /// An accepted change: publish once on `$SYS.ACCOUNT.<key>.CLAIMS.UPDATE`.
    async fn account_changed(&self, key: &str, jwt: &Bytes) -> NotifyOutcome;
    /// An explicit request (`?notify=true`) to publish the stored JWT again.
    async fn republish(&self, key: &str, jwt: &Bytes) -> NotifyOutcome {
        self.account_changed(key, jwt).await
    }
}

/// The notifier used when NATS is not configured.
#[derive(Debug, Default)]
pub struct NoNats;

#[async_trait::async_trait]
impl Notifier for NoNats {
    async fn account_changed(&self, key: &str, _jwt: &Bytes) -> NotifyOutcome {
        tracing::debug!(
            "skipping notification for {}, no NATS configured",
            &key[..12.min(key.len())]
        );
        NotifyOutcome::NotConfigured
    }
}
