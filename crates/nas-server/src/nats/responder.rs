//! The resolver protocol responder on the system account: LOOKUP, UPDATE (three subjects),
//! PACK (both directions), LIST and DELETE, as nats-servers speak it
//! (`docs/spec/nats-resolver-protocol.md` §3–§7). Every JWT that arrives goes through the
//! accept rule; replies use nats-server's JSON shape so `nsc` counts us as a server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, Message};
use bytes::Bytes;
use futures::StreamExt;
use nas_jwt::{is_valid_public_key, KeyRole};
use nas_store::Store;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use super::NatsError;
use crate::accept::{AcceptError, Accepted, Accepter, WritePath};
use crate::cache::VerifiedCache;
use crate::delete::{DeleteVia, Deleter};
use crate::metrics::Metrics;
use crate::resolver::{Resolved, Resolver};

/// Requests handled at the same time at most; further messages wait in the subscription, so a
/// flood of requests cannot spawn unbounded work.
const MAX_IN_FLIGHT: usize = 64;
/// Refused updates are logged at info level once a second at most (the rest at debug): any
/// system user can send them, and a log line per message would turn a flood into disk use.
static REFUSAL_LOG: crate::metrics::OncePerSecond = crate::metrics::OncePerSecond::new();
/// Gap after which a PACK reply stream we requested is considered finished without its end
/// marker (a responder that died mid-stream).
const PACK_GAP: Duration = Duration::from_secs(2);

/// Options of the resolver responder.
#[derive(Debug, Clone)]
pub struct ResponderOptions {
    /// Reply to LOOKUP misses with an empty message (nats-server ≥ 2.9.17 reads it as "not
    /// found"); `false` stays silent, which 2.9.10–2.9.16 need.
    pub lookup_miss_reply: bool,
    /// How often to ask full resolvers for their accounts (`None` = never).
    pub pack_interval: Option<Duration>,
    /// `server.name` in replies (nsc requires one).
    pub server_name: String,
    /// This instance replicates a primary account server: it applies every update it hears
    /// (through the accept rule) and answers LOOKUP, but is no write target — it does not answer
    /// updates, LIST, DELETE or PACK requests and sends no PACK requests: the primary does.
    pub replica: bool,
}

/// The rules the responder applies: the same ones HTTP applies.
pub struct ResponderRules {
    /// UPDATE and PACK lines.
    pub accepter: Accepter,
    /// PACK answers: only entries that verify.
    pub cache: VerifiedCache,
    /// LOOKUP (local only: asking other servers would loop).
    pub resolver: Resolver,
    /// LIST and PACK.
    pub store: Store,
    /// DELETE.
    pub deleter: Deleter,
}

/// Answers the resolver protocol on the system account.
pub struct Responder {
    client: Client,
    accepter: Accepter,
    cache: VerifiedCache,
    resolver: Resolver,
    store: Store,
    deleter: Deleter,
    metrics: Arc<Metrics>,
    options: ResponderOptions,
    server_id: String,
    seq: AtomicU64,
    in_flight: Arc<Semaphore>,
}

impl Responder {
    /// Subscribes to every resolver subject and serves them until the client closes.
    pub async fn spawn(
        client: Client,
        rules: ResponderRules,
        metrics: Arc<Metrics>,
        options: ResponderOptions,
    ) -> Result<(), NatsError> {
        let responder = Arc::new(Responder {
            server_id: nas_jwt::SigningKey::generate(KeyRole::Server)
                .public_key()
                .as_str()
                .to_owned(),
            client: client.clone(),
            accepter: rules.accepter,
            cache: rules.cache,
            resolver: rules.resolver,
            store: rules.store,
            deleter: rules.deleter,
            metrics,
            options,
            seq: AtomicU64::new(0),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        });
        let replica = responder.options.replica;
        // Subscriptions are registered with the client even before it is connected; it sends
        // them on every (re)connect.
        let mut subjects = vec![
            "$SYS.REQ.ACCOUNT.*.CLAIMS.LOOKUP",
            // Other account servers' notifications (and old-style updates).
            "$SYS.ACCOUNT.*.CLAIMS.UPDATE",
            // `nsc push -u nats://…` and other update requests.
            "$SYS.REQ.CLAIMS.UPDATE",
            "$SYS.REQ.ACCOUNT.*.CLAIMS.UPDATE",
        ];
        if !replica {
            subjects.extend(["$SYS.REQ.CLAIMS.LIST", "$SYS.REQ.CLAIMS.DELETE"]);
        }
        for subject in subjects {
            let sub = client
                .subscribe(subject)
                .await
                .map_err(|e| NatsError::Connect(e.to_string()))?;
            responder.clone().serve(sub);
        }
        if !replica {
            // One member of the group answers each request, as among full nats-servers.
            let pack = client
                .queue_subscribe("$SYS.REQ.CLAIMS.PACK", "responder".into())
                .await
                .map_err(|e| NatsError::Connect(e.to_string()))?;
            responder.clone().serve(pack);
        }
        if let Some(interval) = responder.options.pack_interval.filter(|_| !replica) {
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
                // Nothing we answer is larger than a JWT: bigger payloads are shed before any
                // decoding or queueing.
                if msg.payload.len() > nas_jwt::MAX_TOKEN_BYTES {
                    self.metrics
                        .nats_shed
                        .with_label_values(&["oversized"])
                        .inc();
                    continue;
                }
                let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
                    return;
                };
                let this = self.clone();
                tokio::spawn(async move {
                    this.handle(msg).await;
                    drop(permit);
                });
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
            "time": crate::view::rfc3339_now(),
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
        match self.resolver.resolve_local(key).await {
            Resolved::Found(served) => {
                self.count("lookup", "found");
                self.reply(msg, served.token.clone()).await;
            }
            Resolved::Missing => {
                self.count("lookup", "missing");
                if self.options.lookup_miss_reply {
                    self.reply(msg, Bytes::new()).await;
                }
            }
            Resolved::StoreUnavailable(e) => {
                self.count("lookup", "error");
                tracing::warn!("LOOKUP {key}: {e}");
            }
            Resolved::UpstreamUnreachable(why) => {
                self.count("lookup", "error");
                tracing::warn!("LOOKUP {key}: {why}");
            }
        }
    }

    /// UPDATE on any of the three subjects, through the single accept rule. A replica applies
    /// updates (they are what its primary accepted too) but never answers: it is no write target,
    /// and an answer would make `nsc push` count it as one.
    async fn update(&self, msg: &Message, subject_key: Option<&str>) {
        let body = self
            .apply_update(&msg.subject, &msg.payload, subject_key)
            .await;
        if !self.options.replica {
            self.reply_json(msg, body).await;
        }
    }

    async fn apply_update(
        &self,
        subject: &str,
        payload: &[u8],
        subject_key: Option<&str>,
    ) -> Value {
        if payload.is_empty() {
            self.count("update", "rejected");
            return json!({"error": {"account": subject_key.unwrap_or("n/a"), "code": 500, "description": "jwt update error - request body is empty"}});
        }
        let now = nas_jwt::unix_now();
        match self
            .accepter
            .accept(WritePath::NatsUpdate, subject, subject_key, payload, now)
            .await
        {
            Ok((outcome, served)) => {
                let result = match outcome {
                    Accepted::Unchanged => "unchanged",
                    Accepted::Created | Accepted::Updated => "stored",
                };
                self.count("update", result);
                json!({"data": {"account": served.key, "code": 200, "message": "jwt updated"}})
            }
            Err(e) => {
                self.count(
                    "update",
                    if e.is_superseded() {
                        "stale"
                    } else {
                        "rejected"
                    },
                );
                let account = nas_jwt::jwt::peek_payload(payload)
                    .ok()
                    .and_then(|p| p.get("sub").and_then(|s| s.as_str()).map(str::to_owned))
                    .or_else(|| subject_key.map(str::to_owned))
                    .unwrap_or_else(|| "n/a".to_owned());
                let reason = match &e {
                    AcceptError::KeyMismatch { .. } => {
                        "subject does not match jwt content".to_owned()
                    }
                    other => other.to_string(),
                };
                if REFUSAL_LOG.admit() {
                    tracing::info!("refused an update for {account} over NATS: {reason}");
                } else {
                    tracing::debug!("refused an update for {account} over NATS: {reason}");
                }
                json!({"error": {"account": account, "code": 500, "description": format!("jwt update resulted in error - {reason}")}})
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
        // One message per entry, each published before the next entry is pulled: a slow
        // connection (async-nats' bounded send queue) holds the store reads, not a buffer.
        let mut entries = self.cache.verified_pack_stream(None);
        while let Some(entry) = entries.next().await {
            match entry {
                Ok((key, jwt)) => {
                    let line = crate::pack::encode_line(&key, &jwt);
                    self.reply(msg, Bytes::from(line)).await;
                }
                // No end marker, even after some lines: the requester times out rather than
                // believing it has the whole store (the lines it got are merged by the
                // accept rule, so they are harmless).
                Err(e) => {
                    self.count("pack", "error");
                    tracing::warn!("PACK: {e}");
                    return;
                }
            }
        }
        self.count("pack", "sent");
        self.reply(msg, Bytes::new()).await;
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
        let mut merged = crate::pack::Merged::default();
        while let Ok(Some(reply)) = tokio::time::timeout(PACK_GAP, sub.next()).await {
            if reply.payload.is_empty() {
                break;
            }
            let lines = crate::pack::merge(
                &self.accepter,
                WritePath::PackMerge,
                &reply.subject,
                &reply.payload,
            )
            .await;
            merged.add(lines);
        }
        if merged.changed + merged.refused > 0 {
            tracing::info!(
                "PACK sync: merged {} account(s), refused {}",
                merged.changed,
                merged.refused
            );
        }
    }

    /// LIST: the keys of every unexpired account.
    async fn list(&self, msg: &Message) {
        if msg.reply.is_none() {
            return;
        }
        // Only the keys are kept as the pack streams by: the reply is one JSON message, but
        // the JWTs never pile up beside it.
        let mut entries = self.cache.verified_pack_stream(None);
        let mut keys = Vec::new();
        while let Some(entry) = entries.next().await {
            match entry {
                Ok((key, _)) => keys.push(key),
                Err(e) => {
                    self.count("list", "error");
                    tracing::warn!("LIST: {e}");
                    return;
                }
            }
        }
        self.count("list", "ok");
        self.reply_json(msg, json!({"data": keys})).await;
    }

    /// DELETE: an operator-signed generic JWT listing accounts, with nats-server's checks and
    /// error strings.
    async fn delete(&self, msg: &Message) {
        let body = match self
            .deleter
            .delete(DeleteVia::Nats, &msg.subject, &msg.payload)
            .await
        {
            Ok(n) => {
                self.count("delete", "ok");
                json!({"data": {"code": 200, "message": format!("deleted {n} accounts")}})
            }
            Err(e) => {
                self.count("delete", "rejected");
                json!({"error": {"code": 500, "description": e.to_string()}})
            }
        };
        self.reply_json(msg, body).await;
    }
}
