//! The NATS bridge: one connection as a system-account user that publishes change
//! notifications and answers the nats-server resolver protocol (LOOKUP, UPDATE, PACK, LIST,
//! DELETE) on `$SYS`, plus our own periodic PACK requests to merge what full resolvers hold.
//! Facts: `shared/spec/nats-resolver-protocol.md`.
//!
//! HTTP never waits for NATS: the connection is made in the background and retried forever (or
//! `maxreconnects` times); changes accepted while disconnected are queued (latest JWT per
//! account) and published after the reconnect.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event, Message};
use bytes::Bytes;
use futures::StreamExt;
use nas_jwt::{is_valid_public_key, KeyRole, OperatorTrust};
use nas_store::Store;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::accept::{Accepted, Accepter, WritePath};
use crate::cache::{Lookup, VerifiedCache};
use crate::config::NatsConfig;
use crate::metrics::Metrics;
use crate::notify::{Notifier, NotifyOutcome};

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

/// Connects (in the background) as configured; connection events go to the returned channel.
pub async fn connect(
    config: &NatsConfig,
    metrics: Arc<Metrics>,
) -> Result<(Client, mpsc::UnboundedReceiver<Event>), NatsError> {
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
    let wait = config.reconnect_wait;
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    options = options
        .name("nats-account-server")
        .no_echo()
        .retry_on_initial_connect()
        .connection_timeout(config.connect_timeout)
        .reconnect_delay_callback(move |_| wait)
        .max_reconnects(usize::try_from(config.max_reconnects).ok())
        .event_callback(move |event| {
            let (tx, metrics) = (events_tx.clone(), metrics.clone());
            async move {
                match &event {
                    Event::Connected => {
                        metrics.nats_connected.set(1);
                        tracing::info!("connected to NATS");
                    }
                    Event::Disconnected => {
                        metrics.nats_connected.set(0);
                        tracing::warn!("disconnected from NATS, reconnecting");
                    }
                    Event::Closed => {
                        metrics.nats_connected.set(0);
                        tracing::error!("NATS connection closed for good");
                    }
                    other => tracing::warn!("NATS: {other}"),
                }
                let _ = tx.send(event);
            }
        });
    let servers = config
        .servers
        .iter()
        .map(|s| {
            s.parse::<async_nats::ServerAddr>()
                .map_err(|_| NatsError::Url(s.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    tracing::info!("connecting to NATS at {}", config.servers.join(","));
    let client = options
        .connect(servers)
        .await
        .map_err(|e| NatsError::Connect(e.to_string()))?;
    Ok((client, events_rx))
}

/// Publishes accepted changes on `$SYS.ACCOUNT.<key>.CLAIMS.UPDATE`, queueing them while the
/// connection is down.
pub struct NatsNotifier {
    client: Client,
    /// Latest undelivered JWT per account: a newer change supersedes an older queued one.
    pending: Mutex<BTreeMap<String, Bytes>>,
    metrics: Arc<Metrics>,
}

fn update_subject(key: &str) -> String {
    format!("$SYS.ACCOUNT.{key}.CLAIMS.UPDATE")
}

impl NatsNotifier {
    /// A notifier over `client`; `events` are the connection events from [`connect`].
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        mut events: mpsc::UnboundedReceiver<Event>,
    ) -> Arc<NatsNotifier> {
        let notifier = Arc::new(NatsNotifier {
            client,
            pending: Mutex::new(BTreeMap::new()),
            metrics,
        });
        let weak = Arc::downgrade(&notifier);
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if matches!(event, Event::Connected) {
                    let Some(notifier) = weak.upgrade() else {
                        break;
                    };
                    notifier.flush_pending().await;
                }
            }
        });
        notifier
    }

    fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Bytes>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn publish(&self, key: &str, jwt: &Bytes) -> Result<(), String> {
        self.client
            .publish(update_subject(key), jwt.clone())
            .await
            .map_err(|e| e.to_string())?;
        // Flushing makes "published" mean "handed to the server", so a disconnect right after
        // cannot drop it from the client's buffer unnoticed.
        tokio::time::timeout(Duration::from_secs(2), self.client.flush())
            .await
            .map_err(|_| "flush timed out".to_owned())?
            .map_err(|e| e.to_string())
    }

    async fn flush_pending(&self) {
        let queued: Vec<(String, Bytes)> =
            std::mem::take(&mut *self.pending()).into_iter().collect();
        if !queued.is_empty() {
            tracing::info!(
                "publishing {} notification(s) queued while NATS was down",
                queued.len()
            );
        }
        for (key, jwt) in queued {
            self.send_or_queue(&key, &jwt).await;
        }
    }

    async fn send_or_queue(&self, key: &str, jwt: &Bytes) -> NotifyOutcome {
        if self.connected() {
            match self.publish(key, jwt).await {
                Ok(()) => {
                    self.metrics
                        .notifications
                        .with_label_values(&["sent"])
                        .inc();
                    return NotifyOutcome::Sent;
                }
                Err(e) => {
                    tracing::warn!("notification for {key} failed ({e}); queued for the reconnect")
                }
            }
        }
        self.metrics
            .notifications
            .with_label_values(&["queued"])
            .inc();
        self.pending().insert(key.to_owned(), jwt.clone());
        // The connection may have come back between the check and the insert.
        if self.connected() {
            Box::pin(self.flush_pending()).await;
        }
        NotifyOutcome::Sent
    }
}

#[async_trait::async_trait]
impl Notifier for NatsNotifier {
    async fn account_changed(&self, key: &str, jwt: &Bytes) -> NotifyOutcome {
        self.send_or_queue(key, jwt).await
    }

    async fn republish(&self, key: &str, jwt: &Bytes) -> NotifyOutcome {
        match self.publish(key, jwt).await {
            Ok(()) => {
                self.metrics
                    .notifications
                    .with_label_values(&["sent"])
                    .inc();
                NotifyOutcome::Sent
            }
            Err(e) => {
                self.metrics
                    .notifications
                    .with_label_values(&["failed"])
                    .inc();
                NotifyOutcome::Failed(e)
            }
        }
    }
}

/// Options of the resolver responder.
#[derive(Debug, Clone)]
pub struct ResponderOptions {
    /// Reply to LOOKUP misses with an empty message (nats-server ≥ 2.9.17 reads it as "not
    /// found"); `false` stays silent, which 2.9.10–2.9.16 need.
    pub lookup_miss_reply: bool,
    /// Honour `$SYS.REQ.CLAIMS.DELETE`.
    pub allow_delete: bool,
    /// How often to ask full resolvers for their accounts (`None` = never).
    pub pack_interval: Option<Duration>,
    /// `server.name` in replies (nsc requires one).
    pub server_name: String,
}

/// Answers the resolver protocol on the system account.
pub struct Responder {
    client: Client,
    accepter: Accepter,
    cache: VerifiedCache,
    store: Store,
    trust: Option<Arc<OperatorTrust>>,
    metrics: Arc<Metrics>,
    options: ResponderOptions,
    server_id: String,
    seq: AtomicU64,
}

/// RFC 3339 UTC with microseconds, as nats-server writes `server.time`.
fn rfc3339_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let day = secs.rem_euclid(86_400);
    format!(
        "{}T{:02}:{:02}:{:02}.{:06}Z",
        crate::view::utc_date(secs),
        day / 3600,
        day % 3600 / 60,
        day % 60,
        now.subsec_micros()
    )
}

impl Responder {
    /// Subscribes to every resolver subject and serves them until the client closes.
    pub async fn spawn(
        client: Client,
        accepter: Accepter,
        cache: VerifiedCache,
        store: Store,
        metrics: Arc<Metrics>,
        options: ResponderOptions,
    ) -> Result<(), NatsError> {
        let trust = accepter.trust().cloned();
        let responder = Arc::new(Responder {
            server_id: nas_jwt::SigningKey::generate(KeyRole::Server)
                .public_key()
                .as_str()
                .to_owned(),
            client: client.clone(),
            accepter,
            cache,
            store,
            trust,
            metrics,
            options,
            seq: AtomicU64::new(0),
        });
        let subjects = [
            "$SYS.REQ.ACCOUNT.*.CLAIMS.LOOKUP",
            "$SYS.REQ.CLAIMS.UPDATE",
            "$SYS.REQ.ACCOUNT.*.CLAIMS.UPDATE",
            "$SYS.ACCOUNT.*.CLAIMS.UPDATE",
            "$SYS.REQ.CLAIMS.LIST",
            "$SYS.REQ.CLAIMS.DELETE",
        ];
        for subject in subjects {
            let sub = client
                .subscribe(subject)
                .await
                .map_err(|e| NatsError::Connect(e.to_string()))?;
            responder.clone().serve(sub);
        }
        let pack = client
            .queue_subscribe("$SYS.REQ.CLAIMS.PACK", "responder".into())
            .await
            .map_err(|e| NatsError::Connect(e.to_string()))?;
        responder.clone().serve(pack);
        if let Some(interval) = responder.options.pack_interval {
            let r = responder.clone();
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(interval);
                ticker.tick().await; // the first sync after one interval, as full servers do
                loop {
                    ticker.tick().await;
                    r.pull_pack().await;
                }
            });
        }
        Ok(())
    }

    fn serve(self: Arc<Self>, mut sub: async_nats::Subscriber) {
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let this = self.clone();
                tokio::spawn(async move { this.handle(msg).await });
            }
        });
    }

    fn server_info(&self) -> Value {
        json!({
            "name": self.options.server_name,
            "host": "0.0.0.0",
            "id": self.server_id,
            "ver": env!("CARGO_PKG_VERSION"),
            "jetstream": false,
            "flags": 0,
            "seq": self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            "time": rfc3339_now(),
        })
    }

    async fn reply(&self, msg: &Message, payload: Bytes) {
        if let Some(reply) = &msg.reply {
            if let Err(e) = self.client.publish(reply.clone(), payload).await {
                tracing::warn!("reply on {reply} failed: {e}");
            }
        }
    }

    async fn reply_json(&self, msg: &Message, body: Value) {
        let mut body = body;
        body["server"] = self.server_info();
        self.reply(msg, Bytes::from(body.to_string())).await;
    }

    fn count(&self, kind: &str, result: &str) {
        self.metrics
            .resolver_requests
            .with_label_values(&[kind, result])
            .inc();
    }

    async fn handle(&self, msg: Message) {
        let subject = msg.subject.as_str().to_owned();
        let tokens: Vec<&str> = subject.split('.').collect();
        match tokens.as_slice() {
            ["$SYS", "REQ", "ACCOUNT", key, "CLAIMS", "LOOKUP"] => self.lookup(&msg, key).await,
            ["$SYS", "REQ", "CLAIMS", "UPDATE"] => self.update(&msg, None).await,
            ["$SYS", "REQ", "ACCOUNT", key, "CLAIMS", "UPDATE"]
            | ["$SYS", "ACCOUNT", key, "CLAIMS", "UPDATE"] => self.update(&msg, Some(key)).await,
            ["$SYS", "REQ", "CLAIMS", "PACK"] => self.pack(&msg).await,
            ["$SYS", "REQ", "CLAIMS", "LIST"] => self.list(&msg).await,
            ["$SYS", "REQ", "CLAIMS", "DELETE"] => self.delete(&msg).await,
            _ => {}
        }
    }

    /// LOOKUP: the verified JWT, an empty message on a miss (or silence, as configured), and
    /// no answer when the store cannot be read (so other responders decide).
    async fn lookup(&self, msg: &Message, key: &str) {
        if msg.reply.is_none() {
            return;
        }
        if !is_valid_public_key(key, KeyRole::Account) {
            self.count("lookup", "invalid");
            return;
        }
        match self.cache.get(key).await {
            Ok(Lookup::Found(served)) => {
                self.count("lookup", "found");
                self.reply(msg, served.token.clone()).await;
            }
            Ok(Lookup::Missing) => {
                self.count("lookup", "missing");
                if self.options.lookup_miss_reply {
                    self.reply(msg, Bytes::new()).await;
                }
            }
            Err(e) => {
                self.count("lookup", "error");
                tracing::warn!("LOOKUP {key}: {e}");
            }
        }
    }

    /// UPDATE on any of the three subjects, through the single accept rule.
    async fn update(&self, msg: &Message, subject_key: Option<&str>) {
        if msg.payload.is_empty() {
            self.count("update", "rejected");
            self.reply_json(
                msg,
                json!({"error": {"account": subject_key.unwrap_or("n/a"), "code": 500, "description": "jwt update error - request body is empty"}}),
            )
            .await;
            return;
        }
        let now = nas_jwt::unix_now();
        match self
            .accepter
            .accept(WritePath::NatsUpdate, subject_key, &msg.payload, now)
            .await
        {
            Ok((outcome, served)) => {
                self.count(
                    "update",
                    if outcome == Accepted::Unchanged {
                        "unchanged"
                    } else {
                        "stored"
                    },
                );
                self.reply_json(
                    msg,
                    json!({"data": {"account": served.key, "code": 200, "message": "jwt updated"}}),
                )
                .await;
            }
            Err(e) => {
                self.count("update", "rejected");
                let account = nas_jwt::jwt::peek_payload(&msg.payload)
                    .ok()
                    .and_then(|p| p.get("sub").and_then(|s| s.as_str()).map(str::to_owned))
                    .or_else(|| subject_key.map(str::to_owned))
                    .unwrap_or_else(|| "n/a".to_owned());
                let reason = match &e {
                    crate::accept::AcceptError::KeyMismatch { .. } => {
                        "subject does not match jwt content".to_owned()
                    }
                    other => other.to_string(),
                };
                tracing::info!("refused an update for {account} over NATS: {reason}");
                self.reply_json(
                    msg,
                    json!({"error": {"account": account, "code": 500, "description": format!("jwt update resulted in error - {reason}")}}),
                )
                .await;
            }
        }
    }

    /// PACK: only the end marker when the requester's hash equals ours, else one `key|jwt`
    /// message per unexpired account and the end marker.
    async fn pack(&self, msg: &Message) {
        if msg.reply.is_none() {
            return;
        }
        let ours = match self.store.pack_hash().await {
            Ok(h) => h,
            Err(e) => {
                self.count("pack", "error");
                tracing::warn!("PACK: {e}");
                return;
            }
        };
        if msg.payload.as_ref() == ours.as_slice() {
            self.count("pack", "in_sync");
            self.reply(msg, Bytes::new()).await;
            return;
        }
        match self.store.pack(None).await {
            Ok(entries) => {
                self.count("pack", "sent");
                for (key, jwt) in entries {
                    let mut line = Vec::with_capacity(key.len() + 1 + jwt.len());
                    line.extend_from_slice(key.as_bytes());
                    line.push(b'|');
                    line.extend_from_slice(&jwt);
                    self.reply(msg, Bytes::from(line)).await;
                }
                self.reply(msg, Bytes::new()).await;
            }
            // No end marker: the requester times out rather than believing an empty store.
            Err(e) => {
                self.count("pack", "error");
                tracing::warn!("PACK: {e}");
            }
        }
    }

    /// Asks the full resolvers for what they hold and merges every line through accept.
    pub async fn pull_pack(&self) {
        let Ok(hash) = self.store.pack_hash().await else {
            return;
        };
        let inbox = self.client.new_inbox();
        let Ok(mut sub) = self.client.subscribe(inbox.clone()).await else {
            return;
        };
        if self
            .client
            .publish_with_reply("$SYS.REQ.CLAIMS.PACK", inbox, Bytes::copy_from_slice(&hash))
            .await
            .is_err()
        {
            return;
        }
        let (mut merged, mut refused) = (0, 0);
        while let Ok(Some(reply)) = tokio::time::timeout(Duration::from_secs(2), sub.next()).await {
            if reply.payload.is_empty() {
                break;
            }
            for line in reply
                .payload
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
            {
                let text = String::from_utf8_lossy(line);
                let Some((key, jwt)) = text.split_once('|') else {
                    refused += 1;
                    continue;
                };
                match self
                    .accepter
                    .accept(
                        WritePath::PackMerge,
                        Some(key),
                        jwt.as_bytes(),
                        nas_jwt::unix_now(),
                    )
                    .await
                {
                    Ok((Accepted::Unchanged, _)) => {}
                    Ok(_) => merged += 1,
                    Err(crate::accept::AcceptError::Stale { .. }) => {}
                    Err(e) => {
                        refused += 1;
                        tracing::debug!("PACK line for {key} refused: {e}");
                    }
                }
            }
        }
        if merged + refused > 0 {
            tracing::info!("PACK sync: merged {merged} account(s), refused {refused}");
        }
    }

    /// LIST: the keys of every unexpired account.
    async fn list(&self, msg: &Message) {
        if msg.reply.is_none() {
            return;
        }
        match self.store.list_accounts().await {
            Ok(keys) => {
                self.count("list", "ok");
                self.reply_json(msg, json!({"data": keys})).await;
            }
            Err(e) => {
                self.count("list", "error");
                tracing::warn!("LIST: {e}");
            }
        }
    }

    /// DELETE: an operator-signed generic JWT listing accounts, with nats-server's checks and
    /// error strings.
    async fn delete(&self, msg: &Message) {
        let result = self.delete_accounts(&msg.payload).await;
        let body = match result {
            Ok(n) => {
                self.count("delete", "ok");
                json!({"data": {"code": 200, "message": format!("deleted {n} accounts")}})
            }
            Err((sub, reason)) => {
                self.count("delete", "rejected");
                json!({"error": {"code": 500, "description": format!("delete accounts request by {sub} failed - {reason}")}})
            }
        };
        self.reply_json(msg, body).await;
    }

    async fn delete_accounts(&self, payload: &[u8]) -> Result<usize, (String, String)> {
        let jwt = nas_jwt::decode_generic(payload).map_err(|e| (String::new(), e.to_string()))?;
        let claims = jwt.claims();
        let sub = claims.sub().to_owned();
        let fail = |reason: &str| Err((sub.clone(), reason.to_owned()));
        if !self.options.allow_delete {
            return fail("delete must be enabled in server config");
        }
        if claims.iss() != claims.sub() {
            return fail("not self signed");
        }
        if !self
            .trust
            .as_ref()
            .is_some_and(|t| t.trusts_delete_request(claims.iss(), claims.sub()))
        {
            return fail("not trusted");
        }
        let nas_jwt::AnyClaims::Generic(generic) = claims else {
            return fail("malformed request");
        };
        let Some(Value::Array(accounts)) = generic.nats.get("accounts") else {
            return fail("malformed request");
        };
        let mut keys = Vec::new();
        for a in accounts {
            match a.as_str() {
                Some(k) if is_valid_public_key(k, KeyRole::Account) => keys.push(k.to_owned()),
                _ => return fail("malformed request"),
            }
        }
        if keys.is_empty() {
            return fail("malformed request");
        }
        let system = self.trust.as_ref().and_then(|t| t.system_account());
        if keys.iter().any(|k| Some(k.as_str()) == system) {
            return fail("not allowed to delete system account");
        }
        let (mut deleted, mut errors) = (0, Vec::new());
        for key in &keys {
            match self.store.delete_account(key).await {
                Ok(_) => {
                    deleted += 1;
                    self.cache.invalidate(key).await;
                }
                Err(e) => errors.push(format!("{key}: {e}")),
            }
        }
        if errors.is_empty() {
            Ok(deleted)
        } else {
            Err((
                sub,
                format!(
                    "deleted {deleted} accounts, failed for {} - {}",
                    errors.len(),
                    errors.join("\n")
                ),
            ))
        }
    }
}
