//! The NATS bridge: one connection as a system-account user that publishes change
//! notifications ([`NatsNotifier`]), answers the nats-server resolver protocol on `$SYS`
//! ([`Responder`]: LOOKUP, UPDATE, PACK, LIST, DELETE, plus our own periodic PACK requests),
//! asks full resolvers for accounts an HTTP GET does not find ([`NatsLookup`]), and reads what
//! each nats-server holds for drift checks ([`survey`], [`push`]).
//! Facts: `docs/spec/nats-resolver-protocol.md`.
//!
//! HTTP never waits for NATS: the connection is made in the background and retried forever (or
//! `maxreconnects` times); notifications are queued and published by a background task.

mod lookup;
mod notifier;
mod responder;
mod survey;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event};
use tokio::sync::mpsc;

use crate::config::NatsConfig;
use crate::metrics::Metrics;

pub use lookup::NatsLookup;
pub use notifier::NatsNotifier;
pub use responder::{Responder, ResponderOptions, ResponderRules};
pub use survey::{push, survey, NoProgress, Progress, PushAnswers, Survey, SurveyError};

/// Why the NATS connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The creds file cannot be read.
    #[error("cannot read NATS credentials {path}: {error}")]
    Credentials {
        /// The file.
        path: String,
        /// The error.
        error: std::io::Error,
    },
    /// A server URL does not parse.
    #[error("invalid NATS server URL {0:?}")]
    Url(String),
    /// The client refused the options.
    #[error("NATS connect: {0}")]
    Connect(String),
}

/// Messages one subscription may queue (async-nats's default is 65,536).
pub const SUBSCRIPTION_CAPACITY: usize = 64;

/// Whether the client can publish right now. Publishing while disconnected would fill the
/// client's command channel and then block, so every sender checks this first.
pub(crate) fn is_connected(client: &Client) -> bool {
    client.connection_state() == async_nats::connection::State::Connected
}

/// Connects (in the background) as configured; connection events go to the returned channel.
pub async fn connect(
    config: &NatsConfig,
    metrics: Arc<Metrics>,
) -> Result<(Client, mpsc::UnboundedReceiver<Event>), NatsError> {
    let wait = config.reconnect_wait;
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let ever_connected = Arc::new(AtomicBool::new(false));
    let options = authenticated_options(config)
        .await?
        .name("nats-account-server")
        // Never receive our own notifications and PACK/LOOKUP requests.
        .no_echo()
        // Each subscription queues at most this many messages while the responder's workers
        // are busy; beyond it async-nats drops them (counted as `slow_consumer`), so a flood
        // of 1 MiB UPDATEs holds at most SUBSCRIPTION_CAPACITY MiB per subscription.
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        // `connect` returns at once and the client keeps trying: HTTP must not wait for NATS.
        .retry_on_initial_connect()
        .connection_timeout(config.connect_timeout)
        // async-nats counts the first try of a (re)connection as attempt 1 and calls this
        // before it too: only later tries wait `reconnectwait`, as the Go client's first try
        // of a server does not wait (start-up no longer loses a `reconnectwait` to nothing).
        .reconnect_delay_callback(
            move |attempt| {
                if attempt <= 1 {
                    Duration::ZERO
                } else {
                    wait
                }
            },
        )
        // -1 (the Go default) = forever; async-nats reads `None` as forever.
        .max_reconnects(usize::try_from(config.max_reconnects).ok())
        .event_callback(move |event| {
            let (tx, metrics, ever) = (events_tx.clone(), metrics.clone(), ever_connected.clone());
            async move {
                record_event(&event, &metrics, &ever);
                let _ = tx.send(event);
            }
        });
    let servers = config
        .servers
        .iter()
        .map(|s| {
            s.parse::<async_nats::ServerAddr>()
                .map_err(|_| NatsError::Url(nas_store::redact_url(s)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    tracing::info!(
        "connecting to NATS at {}",
        nas_store::redact_url(&config.servers.join(","))
    );
    let client = options
        .connect(servers)
        .await
        .map_err(|e| NatsError::Connect(e.to_string()))?;
    Ok((client, events_rx))
}

/// Options carrying the system user's credentials and the TLS files.
async fn authenticated_options(config: &NatsConfig) -> Result<ConnectOptions, NatsError> {
    let mut options = match &config.user_credentials {
        Some(path) => ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|error| NatsError::Credentials {
                path: path.display().to_string(),
                error,
            })?,
        None => ConnectOptions::new(),
    };
    if let Some(root) = &config.tls_root {
        options = options.add_root_certificates(root.clone());
    }
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    Ok(options)
}

/// The log line and metric of a connection event. `ever_connected` tells a first connect from
/// a reconnect.
fn record_event(event: &Event, metrics: &Metrics, ever_connected: &AtomicBool) {
    match event {
        Event::Connected => {
            metrics.nats_connected.set(1);
            if ever_connected.swap(true, Ordering::Relaxed) {
                tracing::info!("reconnected to NATS");
            } else {
                tracing::info!("connected to NATS for notifications and the resolver protocol");
            }
        }
        Event::Disconnected => {
            metrics.nats_connected.set(0);
            tracing::warn!("disconnected from NATS, reconnecting");
        }
        Event::SlowConsumer(_) => {
            metrics
                .nats_shed
                .with_label_values(&["slow_consumer"])
                .inc();
        }
        Event::Closed => {
            metrics.nats_connected.set(0);
            tracing::error!("NATS connection closed for good (reconnect attempts exhausted)");
        }
        other => tracing::warn!("NATS: {other}"),
    }
}
