//! The change listener of a Redis Cluster store: sharded pub/sub.
//!
//! Each group's write script announces on the group's channel with `SPUBLISH`; that channel
//! carries the group's hash tag, so it lives in the group's slot and a script may publish on it.
//! A sharded message goes only to the clients connected to the node that owns the slot (and its
//! replicas), so the listener keeps one RESP3 connection per master that owns at least one
//! group's channel and `SSUBSCRIBE`s each channel there.
//!
//! Why not classic `PUBLISH` (which a cluster forwards to every node over its bus): that
//! forwarding can drop a message while a bus link is re-made, and the subscriber cannot tell, so
//! an instance could keep serving an old version with no resync. Here every announcement travels
//! on a connection the listener holds, so a lost announcement always comes with a sign the
//! listener sees: the connection closes (node killed, failover, network), the node unsubscribes
//! the channel (`sunsubscribe`: its slot moved to another node), a ping goes unanswered, or the
//! bounded push queue overflows. On any of these it throws every subscriber connection away,
//! reads the slot owners again (`CLUSTER SLOTS`), subscribes again and then sends
//! [`EXTERNAL_RESYNC`], exactly as the single-server listener does after re-subscribing.
//! (Keyspace notifications were the other option: they are node-local as well, must be switched
//! on in every node's configuration, and carry no writer id, so an instance would re-read its
//! own writes.)

use std::time::Duration;

use redis::cluster_async::ClusterConnection;
use redis::{ConnectionAddr, ConnectionInfo, PushInfo, PushKind, Value};
use tokio::sync::{broadcast, oneshot};

use super::{forward_announcement, RedisTls, LISTENER_PING};
use crate::EXTERNAL_RESYNC;

/// Pushes (announcements, subscription notices) waiting for the listener; beyond this the
/// listener falls behind, counts the announcements as lost and resyncs.
const PUSH_QUEUE: usize = 4096;

/// What the cluster listener needs.
pub(super) struct Listener {
    /// The backend's cluster connection, for `CLUSTER SLOTS` and `CLUSTER KEYSLOT`.
    pub commands: ClusterConnection,
    /// The first seed node: credentials, TLS and database settings for the node connections.
    pub seed: ConnectionInfo,
    /// Certificates beyond the system defaults.
    pub tls: RedisTls,
    /// Every group's channel.
    pub channels: Vec<String>,
    /// This instance's id (its own announcements are skipped).
    pub own: String,
    /// Where other instances' keys (and resync markers) go.
    pub tx: broadcast::Sender<String>,
    /// Bound of every call.
    pub timeout: Duration,
    /// The backend; the listener ends once it is dropped.
    pub alive: std::sync::Weak<()>,
}

/// The subscriber connections of one round and the pushes they deliver.
struct Subscribed {
    connections: Vec<redis::aio::MultiplexedConnection>,
    pushes: broadcast::Receiver<PushInfo>,
}

/// Runs the listener until the backend is dropped: subscribe everywhere, forward, and after any
/// sign of a lost announcement subscribe again and ask for a resync. `ready` is told once the
/// first subscription covers every channel.
pub(super) fn spawn(listener: Listener, ready: oneshot::Sender<()>) {
    tokio::spawn(async move {
        let mut ready = Some(ready);
        let mut commands = listener.commands.clone();
        loop {
            if listener.alive.strong_count() == 0 {
                return;
            }
            match subscribe_all(&listener, &mut commands).await {
                Ok(subscribed) => {
                    // Only the subscription `open` waited for covers everything since then.
                    let in_time = ready.take().is_some_and(|r| r.send(()).is_ok());
                    if !in_time {
                        let _ = listener.tx.send(EXTERNAL_RESYNC.to_owned());
                    }
                    listen(subscribed, &listener).await;
                    tracing::debug!("redis cluster change subscription lost; re-subscribing");
                }
                Err(e) => tracing::debug!("redis cluster change listener: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

/// Why a subscription round failed (logged at debug level; the round is retried).
#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("no master owns slot {0}")]
    Unowned(i64),
}

async fn bounded<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, RoundError> {
    Ok(tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| RoundError::Timeout(timeout))??)
}

/// One subscription round: the current slot owners, one connection per owner, every channel
/// subscribed on its owner.
async fn subscribe_all(
    listener: &Listener,
    commands: &mut ClusterConnection,
) -> Result<Subscribed, RoundError> {
    let timeout = listener.timeout;
    let owners = bounded(
        timeout,
        redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async::<Value>(commands),
    )
    .await?;
    let owners = slot_owners(&owners);
    let mut by_node: Vec<((String, u16), Vec<&str>)> = Vec::new();
    for channel in &listener.channels {
        let slot: i64 = bounded(
            timeout,
            redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(channel)
                .query_async(commands),
        )
        .await?;
        let node = owners
            .iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .map(|(_, _, node)| node.clone())
            .ok_or(RoundError::Unowned(slot))?;
        match by_node.iter_mut().find(|(n, _)| *n == node) {
            Some((_, channels)) => channels.push(channel),
            None => by_node.push((node, vec![channel])),
        }
    }
    let (push_tx, pushes) = broadcast::channel(PUSH_QUEUE);
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(timeout)
        .set_response_timeout(timeout)
        .set_push_sender(push_tx);
    let mut connections = Vec::new();
    for ((host, port), channels) in by_node {
        let client = node_client(&listener.seed, host, port, &listener.tls)?;
        let conn = bounded(
            timeout,
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await?;
        // One channel per command: each SSUBSCRIBE then has exactly one reply.
        let subscriptions = channels.iter().map(|channel| {
            let mut conn = conn.clone();
            async move {
                redis::cmd("SSUBSCRIBE")
                    .arg(*channel)
                    .exec_async(&mut conn)
                    .await
            }
        });
        bounded(timeout, futures::future::try_join_all(subscriptions)).await?;
        connections.push(conn);
    }
    Ok(Subscribed {
        connections,
        pushes,
    })
}

/// `(first slot, last slot, (host, port) of the master)` of each range in a `CLUSTER SLOTS`
/// answer. Ranges whose master entry is unreadable are left out (their channels then fail the
/// round, which is retried).
fn slot_owners(answer: &Value) -> Vec<(i64, i64, (String, u16))> {
    let Value::Array(ranges) = answer else {
        return Vec::new();
    };
    ranges
        .iter()
        .filter_map(|range| {
            let Value::Array(fields) = range else {
                return None;
            };
            let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                return None;
            };
            let host = match master.first()? {
                Value::BulkString(b) => String::from_utf8(b.clone()).ok()?,
                Value::SimpleString(s) => s.clone(),
                _ => return None,
            };
            let Some(Value::Int(port)) = master.get(1) else {
                return None;
            };
            Some((*start, *end, (host, u16::try_from(*port).ok()?)))
        })
        .collect()
}

/// A RESP3 client for one node: the seed's credentials and TLS, the node's address.
fn node_client(
    seed: &ConnectionInfo,
    host: String,
    port: u16,
    tls: &RedisTls,
) -> redis::RedisResult<redis::Client> {
    let mut info = seed.clone();
    info.addr = match &seed.addr {
        ConnectionAddr::TcpTls { insecure, .. } => ConnectionAddr::TcpTls {
            host,
            port,
            insecure: *insecure,
            tls_params: None,
        },
        _ => ConnectionAddr::Tcp(host, port),
    };
    info.redis.protocol = redis::ProtocolVersion::RESP3;
    if tls.is_empty() {
        redis::Client::open(info)
    } else {
        redis::Client::build_with_tls(info, tls.certificates())
    }
}

/// Forwards announcements until a sign that some may be lost: a connection closed, a channel
/// unsubscribed by its node, a full push queue, an unanswered ping.
async fn listen(mut subscribed: Subscribed, listener: &Listener) {
    let mut ping = tokio::time::interval(LISTENER_PING);
    ping.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            push = subscribed.pushes.recv() => {
                let Ok(push) = push else { return };
                match push.kind {
                    PushKind::SMessage => {
                        if let Some(Value::BulkString(payload)) = push.data.get(1) {
                            if let Ok(text) = std::str::from_utf8(payload) {
                                forward_announcement(text, &listener.own, &listener.tx);
                            }
                        }
                    }
                    PushKind::SUnsubscribe | PushKind::Disconnection => return,
                    _ => {}
                }
            }
            _ = ping.tick() => {
                if listener.alive.strong_count() == 0 {
                    return;
                }
                for conn in &mut subscribed.connections {
                    let answered = tokio::time::timeout(
                        listener.timeout,
                        redis::cmd("PING").query_async::<String>(conn),
                    )
                    .await;
                    if !matches!(answered, Ok(Ok(_))) {
                        return;
                    }
                }
            }
        }
    }
}
