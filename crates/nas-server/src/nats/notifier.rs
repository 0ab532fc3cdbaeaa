//! Change notifications on `$SYS.ACCOUNT.<key>.CLAIMS.UPDATE`.
//!
//! Writers never wait for NATS: a change is put in a queue (one entry per account; the change
//! with the highest store sequence number wins, whatever order the calls come in) and one
//! background task publishes the queue whenever the connection is up. The store calls
//! [`Notifier::account_changed`] under the account's lock, so changes of one account are queued
//! in store order; one publisher keeps the wire order equal to the order of the changes, so a
//! nats-server never receives an older JWT after a newer one (a full resolver would store it
//! unconditionally).
//! A batch is removed from the queue only after a flush confirmed the server received it;
//! otherwise it goes back (unless a newer change for the account arrived meanwhile) and is
//! published after the reconnect.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use async_nats::{Client, Event};
use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

use super::is_connected;
use crate::metrics::Metrics;
use crate::notify::{Notifier, NotifyOutcome};

/// Accounts with an unpublished change at most; beyond that a change is refused loudly (logged
/// and counted as `dropped`) instead of growing memory without bound during a long outage.
const MAX_PENDING: usize = 100_000;
/// How often the publisher re-checks the queue without a wake-up: covers the moment between
/// async-nats announcing `Connected` and reporting the state as connected.
const RETRY_TICK: Duration = Duration::from_millis(250);
/// Bound of one publish or flush, so a half-dead connection cannot stall the publisher.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// `?notify=true` republishes an account at most this often: anyone who can GET can ask, and
/// each request would otherwise be a message to every nats-server.
const REPUBLISH_INTERVAL: Duration = Duration::from_secs(1);
/// Accounts whose last on-demand republish is remembered at most; when full (after forgetting
/// those older than the interval), further requests are coalesced into nothing.
const MAX_REPUBLISHED: usize = 10_000;

/// The subject nats-servers (and other account servers) listen on for account changes.
pub(crate) fn update_subject(key: &str) -> String {
    format!("$SYS.ACCOUNT.{key}.CLAIMS.UPDATE")
}

#[derive(Default)]
struct Queue {
    /// Orders publication across accounts (oldest queued first).
    next_seq: u64,
    /// Per account: store sequence number of the change, queue order, JWT.
    pending: HashMap<String, (u64, u64, Bytes)>,
}

/// Publishes accepted changes on `$SYS.ACCOUNT.<key>.CLAIMS.UPDATE`, queueing them while the
/// connection is down.
pub struct NatsNotifier {
    client: Client,
    queue: Mutex<Queue>,
    wake: Notify,
    /// Reconnect attempts are exhausted: nothing can be published any more.
    closed: AtomicBool,
    /// Called on every (re)connect: updates published by others while we were away were missed.
    on_connect: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
    /// When each account was last republished on demand ([`REPUBLISH_INTERVAL`]).
    republished: Mutex<HashMap<String, Instant>>,
    metrics: Arc<Metrics>,
}

impl NatsNotifier {
    /// A notifier over `client`; `events` are the connection events from [`super::connect`].
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        events: mpsc::UnboundedReceiver<Event>,
    ) -> Arc<NatsNotifier> {
        let notifier = Arc::new(NatsNotifier {
            client,
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            on_connect: Mutex::new(None),
            republished: Mutex::new(HashMap::new()),
            metrics,
        });
        tokio::spawn(publisher(Arc::downgrade(&notifier), events));
        notifier
    }

    /// Sets what to do whenever the connection is (re)established, e.g. mark every cached
    /// account for re-reading since updates from other instances may have been missed.
    pub fn on_connect(&self, f: impl Fn() + Send + Sync + 'static) {
        *self.on_connect.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(f));
    }

    /// Number of changes waiting for publication.
    pub fn pending(&self) -> usize {
        self.queue().pending.len()
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        // The queue stays consistent even if a holder panicked: every update is one insert.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, result: &str) {
        self.metrics
            .notifications
            .with_label_values(&[result])
            .inc();
    }

    /// Whether an on-demand republish of `key` may go out now (at most one per account per
    /// [`REPUBLISH_INTERVAL`], memory bounded by [`MAX_REPUBLISHED`]).
    fn may_republish(&self, key: &str) -> bool {
        let now = Instant::now();
        let mut recent = self.republished.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() >= MAX_REPUBLISHED {
            recent.retain(|_, at| now.duration_since(*at) < REPUBLISH_INTERVAL);
        }
        match recent.get(key) {
            Some(at) if now.duration_since(*at) < REPUBLISH_INTERVAL => false,
            _ if recent.len() >= MAX_REPUBLISHED => false,
            _ => {
                recent.insert(key.to_owned(), now);
                true
            }
        }
    }

    /// Queues `jwt` for `key` unless a change with a higher `seq` is queued (`replace: false`:
    /// only if nothing is queued for the key).
    fn enqueue(&self, key: &str, jwt: &Bytes, seq: u64, replace: bool) -> NotifyOutcome {
        if self.closed.load(Ordering::Relaxed) {
            self.count("dropped");
            tracing::error!("notification for {key} dropped: the NATS connection is closed");
            return NotifyOutcome::Failed("the NATS connection is closed".into());
        }
        {
            let mut queue = self.queue();
            if queue.pending.len() >= MAX_PENDING && !queue.pending.contains_key(key) {
                drop(queue);
                self.count("dropped");
                tracing::error!(
                    "notification for {key} dropped: {MAX_PENDING} accounts already wait for NATS"
                );
                return NotifyOutcome::Failed("notification queue full".into());
            }
            let newest = match queue.pending.get(key) {
                None => true,
                Some((queued, _, _)) => replace && seq >= *queued,
            };
            if newest {
                queue.next_seq += 1;
                let order = queue.next_seq;
                queue
                    .pending
                    .insert(key.to_owned(), (seq, order, jwt.clone()));
            }
            self.metrics
                .notification_queue
                .set(queue.pending.len() as i64);
        }
        if !is_connected(&self.client) {
            self.count("queued");
            tracing::info!("NATS is down: notification for {key} queued until the reconnect");
        }
        self.wake.notify_one();
        NotifyOutcome::Sent
    }

    /// Publishes everything queued, oldest change first, when connected.
    async fn publish_pending(&self) {
        if !is_connected(&self.client) {
            return;
        }
        let mut batch: Vec<(String, u64, u64, Bytes)> = self
            .queue()
            .pending
            .drain()
            .map(|(key, (seq, order, jwt))| (key, seq, order, jwt))
            .collect();
        self.metrics.notification_queue.set(0);
        if batch.is_empty() {
            return;
        }
        batch.sort_by_key(|(_, _, order, _)| *order);
        match self.send(&batch).await {
            Ok(()) => {
                self.metrics
                    .notifications
                    .with_label_values(&["sent"])
                    .inc_by(batch.len() as u64);
            }
            Err(e) => {
                self.count("failed");
                tracing::warn!(
                    "publishing {} notification(s) failed ({e}); retrying after the reconnect",
                    batch.len()
                );
                let mut queue = self.queue();
                for (key, seq, order, jwt) in batch {
                    // An entry present now is a later change of that account: it wins.
                    queue.pending.entry(key).or_insert((seq, order, jwt));
                }
                self.metrics
                    .notification_queue
                    .set(queue.pending.len() as i64);
            }
        }
    }

    async fn send(&self, batch: &[(String, u64, u64, Bytes)]) -> Result<(), String> {
        for (key, _, _, jwt) in batch {
            tokio::time::timeout(
                SEND_TIMEOUT,
                self.client.publish(update_subject(key), jwt.clone()),
            )
            .await
            .map_err(|_| "publish timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        }
        // A flush makes "published" mean "the server has it": a disconnect right after the
        // publish cannot drop the messages from the client's buffer unnoticed.
        tokio::time::timeout(SEND_TIMEOUT, self.client.flush())
            .await
            .map_err(|_| "flush timed out".to_owned())?
            .map_err(|e| e.to_string())
    }
}

/// The single publisher: wakes on a new change, on connection events and on a short tick.
async fn publisher(notifier: Weak<NatsNotifier>, mut events: mpsc::UnboundedReceiver<Event>) {
    loop {
        let Some(this) = notifier.upgrade() else {
            return;
        };
        tokio::select! {
            () = this.wake.notified() => {}
            () = tokio::time::sleep(RETRY_TICK) => {}
            event = events.recv() => match event {
                Some(Event::Closed) => this.closed.store(true, Ordering::Relaxed),
                Some(Event::Connected) => {
                    if let Some(f) = &*this.on_connect.lock().unwrap_or_else(|p| p.into_inner()) {
                        f();
                    }
                }
                Some(_) => {}
                // The client is gone (the server stopped): nothing can be published any more.
                None => return,
            },
        }
        this.publish_pending().await;
    }
}

impl Notifier for NatsNotifier {
    fn account_changed(&self, key: &str, jwt: &Bytes, seq: u64) -> NotifyOutcome {
        self.enqueue(key, jwt, seq, true)
    }

    fn republish(&self, key: &str, jwt: &Bytes) -> NotifyOutcome {
        if !self.may_republish(key) {
            // Coalesced with the republish of less than a second ago: the nats-servers have it.
            self.count("coalesced");
            return NotifyOutcome::Sent;
        }
        self.enqueue(key, jwt, 0, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that never connects (nothing listens on the port) but exists: the state of a
    /// notifier during an outage.
    async fn offline_client() -> Client {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(1);
        async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .reconnect_delay_callback(|_| Duration::from_secs(60))
            .connect(format!("nats://127.0.0.1:{port}"))
            .await
            .expect("retrying client")
    }

    #[tokio::test]
    async fn changes_wait_for_the_connection_coalesced_per_account() {
        let metrics = Arc::new(Metrics::new());
        let (_tx, events) = mpsc::unbounded_channel();
        let notifier = NatsNotifier::new(offline_client().await, metrics.clone(), events);
        let (a1, a2, b) = (
            Bytes::from_static(b"a1"),
            Bytes::from_static(b"a2"),
            Bytes::from_static(b"b"),
        );
        assert_eq!(notifier.account_changed("A", &a1, 1), NotifyOutcome::Sent);
        assert_eq!(notifier.account_changed("B", &b, 2), NotifyOutcome::Sent);
        assert_eq!(notifier.account_changed("A", &a2, 3), NotifyOutcome::Sent);
        assert_eq!(notifier.pending(), 2, "one entry per account");
        let queue = notifier.queue();
        let (_, order_a, jwt_a) = &queue.pending["A"];
        assert_eq!(jwt_a, &a2, "the latest change wins");
        assert!(
            *order_a > queue.pending["B"].1,
            "A's latest change is the newest"
        );
        drop(queue);
        assert_eq!(
            metrics.notifications.with_label_values(&["queued"]).get(),
            3
        );
        assert_eq!(metrics.notifications.with_label_values(&["sent"]).get(), 0);
    }

    #[tokio::test]
    async fn an_older_change_arriving_late_never_replaces_a_newer_one() {
        let metrics = Arc::new(Metrics::new());
        let (_tx, events) = mpsc::unbounded_channel();
        let notifier = NatsNotifier::new(offline_client().await, metrics, events);
        let (v2, v3) = (Bytes::from_static(b"v2"), Bytes::from_static(b"v3"));
        notifier.account_changed("A", &v3, 6);
        notifier.account_changed("A", &v2, 5);
        notifier.republish("A", &v2);
        assert_eq!(
            notifier.queue().pending["A"].2,
            v3,
            "v3 (seq 6) stays queued"
        );
    }

    #[tokio::test]
    async fn a_closed_connection_reports_failure_instead_of_queueing_forever() {
        let metrics = Arc::new(Metrics::new());
        let (tx, events) = mpsc::unbounded_channel();
        let notifier = NatsNotifier::new(offline_client().await, metrics.clone(), events);
        tx.send(Event::Closed).expect("publisher listens");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !notifier.closed.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(matches!(
            notifier.account_changed("A", &Bytes::from_static(b"a"), 1),
            NotifyOutcome::Failed(_)
        ));
        assert_eq!(
            metrics.notifications.with_label_values(&["dropped"]).get(),
            1
        );
    }
}
