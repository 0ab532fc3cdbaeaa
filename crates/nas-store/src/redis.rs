//! Redis backend, for several account-server instances sharing one store: a single server or a
//! Redis Cluster.
//!
//! Layout: keys live in *groups*, each named by a hash tag, so a Redis Cluster keeps one
//! group's keys in one slot and the write script can touch them together. A single server has
//! one group, tagged `{<prefix>}`; a cluster store has `groups` of them (default 16), tagged
//! `{<prefix>g0}` … `{<prefix>g15}`, and a key belongs to group `SHA-256(key)[0..2] mod groups`,
//! so the accounts spread over the cluster's masters. Under each tag: one hash per entry
//! (`a:<key>`, `v:<hash id>`, `t:<key>`) with fields `jwt`, `ver` (the group's counter value,
//! the CAS version) and `sha` (SHA-256 of the JWT); a set per namespace listing the group's
//! keys; `packhash`, the XOR of the group's account digests, kept by the same Lua script that
//! writes (the PACK hash is the XOR of every group's partial, so every instance reads one agreed
//! value); and a channel `changes` on which each write announces `<instance id> <key>` so the
//! other instances drop their cached copy within moments (`PUBLISH` on a single server,
//! sharded `SPUBLISH` in a cluster: see `redis/sharded.rs`). After a subscription is re-made (Redis
//! restarted, connection lost, a slot moved) the backend asks [`Store`](crate::Store) to re-read
//! everything, since announcements may have been missed meanwhile. A cluster store records its
//! group count in `{<prefix>}groups` and refuses to open with another one: the count decides
//! where every key lives.
//!
//! Every call is bounded by a timeout well under nats-server's 1.9 s fetch limit; an unreachable
//! Redis gives [`StoreError::Unavailable`] and the connections are re-made by themselves.

use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, oneshot};

use crate::{Backend, Cause, Namespace, Precondition, StoreError, Version, EXTERNAL_RESYNC};

mod sharded;

pub use crate::{
    REDIS_CLUSTER_GROUPS as DEFAULT_CLUSTER_GROUPS, REDIS_CLUSTER_MAX_GROUPS as MAX_CLUSTER_GROUPS,
};

/// PEM material for `rediss://` connections. Empty fields use the system's trust store and no
/// client certificate.
#[derive(Debug, Clone, Default)]
pub struct RedisTls {
    /// CA certificate(s) the server's certificate must chain to, instead of the system roots.
    pub root_cert: Option<Vec<u8>>,
    /// Client certificate and private key, for servers that require them (Redis's own
    /// `tls-auth-clients yes` default).
    pub client_cert_key: Option<(Vec<u8>, Vec<u8>)>,
}

impl RedisTls {
    fn is_empty(&self) -> bool {
        self.root_cert.is_none() && self.client_cert_key.is_none()
    }

    fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self
                .client_cert_key
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: self.root_cert.clone(),
        }
    }
}

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://`, `rediss://` or `unix://` URL; with `cluster`, one or more seed nodes
    /// separated by commas.
    pub url: String,
    /// Prefix of every key (several deployments can share one Redis); must not contain braces.
    pub prefix: String,
    /// Bound of every operation.
    pub timeout: Duration,
    /// Talk to a Redis Cluster (slot routing, redirections, failover).
    pub cluster: bool,
    /// Key groups of a cluster store (1..=[`MAX_CLUSTER_GROUPS`]); must stay the same for the
    /// store's life. Ignored for a single server.
    pub groups: u16,
    /// Certificates for `rediss://` beyond the system defaults.
    pub tls: RedisTls,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            url: "redis://127.0.0.1:6379/".into(),
            prefix: "nas:".into(),
            timeout: Duration::from_millis(800),
            cluster: false,
            groups: DEFAULT_CLUSTER_GROUPS,
            tls: RedisTls::default(),
        }
    }
}

/// A connection to a single server or to a cluster, both re-made by themselves after failures.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The Redis backend.
pub struct RedisBackend {
    conn: Conn,
    options: RedisOptions,
    /// The hash tag of each key group (`{<prefix>}` alone on a single server): the start of
    /// every key and channel name of that group.
    tags: Vec<String>,
    instance: String,
    changes: broadcast::Sender<String>,
    /// The change listener runs while this lives (it holds a weak reference).
    _alive: std::sync::Arc<()>,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("prefix", &self.options.prefix)
            .field("cluster", &self.options.cluster)
            .finish()
    }
}

/// A failed Redis call, its error kept as the source.
fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(crate::Cause::of("redis", e))
}

/// Redis did not answer in time.
fn no_answer(what: String) -> StoreError {
    StoreError::Unavailable(crate::Cause::new(format!("redis: {what}")))
}

/// Writes (or deletes, when ARGV[1] is "delete") an entry atomically: checks the precondition,
/// updates value, version, key set and PACK hash, and announces the change, in one step (one
/// round trip, and no change is ever stored without its announcement being sent).
/// KEYS: entry hash, key set, version counter, pack hash.
/// ARGV: mode (any|absent|match|delete), expected version ("" = any, for delete too), jwt,
/// sha (32 raw bytes), key,
/// whether the PACK hash applies ("1"/"0"), channel, announcement ("" = none), the publishing
/// command (`PUBLISH`, or `SPUBLISH` in a cluster, whose channel is in the keys' slot).
/// All KEYS share one hash tag, so in a cluster the script runs on the one node owning them.
const WRITE_SCRIPT: &str = r#"
local cur = redis.call('HGET', KEYS[1], 'ver')
local mode = ARGV[1]
if mode == 'absent' and cur then return {err = 'CONFLICT'} end
if mode == 'match' and cur ~= ARGV[2] then return {err = 'CONFLICT'} end
if mode == 'delete' and not cur then return 0 end
if mode == 'delete' and ARGV[2] ~= '' and cur ~= ARGV[2] then return {err = 'CONFLICT'} end
local function xor32(a, b)
  local out = {}
  for i = 1, 32 do out[i] = string.char(bit.bxor(string.byte(a, i), string.byte(b, i))) end
  return table.concat(out)
end
if ARGV[6] == '1' then
  local total = redis.call('GET', KEYS[4]) or string.rep('\0', 32)
  local old = redis.call('HGET', KEYS[1], 'sha')
  if old then total = xor32(total, old) end
  if mode ~= 'delete' then total = xor32(total, ARGV[4]) end
  redis.call('SET', KEYS[4], total)
end
local result = 1
if mode == 'delete' then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[5])
else
  result = redis.call('INCR', KEYS[3])
  redis.call('HSET', KEYS[1], 'jwt', ARGV[3], 'ver', result, 'sha', ARGV[4])
  redis.call('SADD', KEYS[2], ARGV[5])
end
if ARGV[8] ~= '' then redis.call(ARGV[9], ARGV[7], ARGV[8]) end
return result
"#;

/// How often the change listener checks that its subscription is alive: a connection that
/// died without a reset (a network partition) would otherwise wait silently forever.
const LISTENER_PING: Duration = Duration::from_secs(5);

fn client_for(url: &str, tls: &RedisTls) -> Result<redis::Client, StoreError> {
    let invalid = |e: redis::RedisError| {
        let context = format!("invalid redis URL {:?}", crate::redact_url(url));
        StoreError::Config(Cause::of(&context, e))
    };
    if tls.is_empty() {
        redis::Client::open(url).map_err(invalid)
    } else {
        redis::Client::build_with_tls(url, tls.certificates()).map_err(invalid)
    }
}

/// The URLs of `options.url` (comma-separated, several only in cluster mode), after the checks
/// that need no connection.
fn checked_urls(options: &RedisOptions) -> Result<Vec<String>, StoreError> {
    if options.prefix.contains(['{', '}']) {
        return Err(StoreError::Config(Cause::new(format!(
            "redis key prefix {:?} must not contain braces (they would change the hash tag)",
            options.prefix
        ))));
    }
    let urls: Vec<String> = options
        .url
        .split(',')
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .collect();
    if urls.is_empty() {
        return Err(StoreError::Config(Cause::new("no redis URL")));
    }
    if options.cluster && !(1..=MAX_CLUSTER_GROUPS).contains(&options.groups) {
        return Err(StoreError::Config(Cause::new(format!(
            "redis cluster groups must be 1 to {MAX_CLUSTER_GROUPS}, not {}",
            options.groups
        ))));
    }
    if urls.len() > 1 && !options.cluster {
        return Err(StoreError::Config(Cause::new(format!(
            "several redis URLs ({}) need cluster mode",
            crate::redact_url(&options.url)
        ))));
    }
    Ok(urls)
}

/// The command connection (a cluster client, or a connection manager that reconnects by
/// itself), failing if Redis does not answer within `bound`.
async fn connect(
    options: &RedisOptions,
    urls: &[String],
    first: &redis::Client,
    bound: Duration,
) -> Result<Conn, StoreError> {
    let shown = crate::redact_url(&options.url);
    let no_answer = || no_answer(format!("no answer from {shown} within {bound:?}"));
    if options.cluster {
        let mut builder = redis::cluster::ClusterClientBuilder::new(urls.to_vec())
            .connection_timeout(options.timeout)
            .response_timeout(options.timeout)
            .retries(1);
        if !options.tls.is_empty() {
            builder = builder.certs(options.tls.certificates());
        }
        let client = builder
            .build()
            .map_err(|e| StoreError::Config(Cause::of("invalid redis cluster URLs", e)))?;
        let conn = tokio::time::timeout(bound, client.get_async_connection())
            .await
            .map_err(|_| no_answer())?
            .map_err(unavailable)?;
        return Ok(Conn::Cluster(conn));
    }
    // One plain attempt first: the manager retries a refused TLS handshake until the bound,
    // which would hide the reason (an unknown CA) behind "no answer".
    tokio::time::timeout(bound, first.get_multiplexed_async_connection())
        .await
        .map_err(|_| no_answer())?
        .map_err(unavailable)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(options.timeout)
        .set_response_timeout(options.timeout)
        .set_number_of_retries(1);
    let conn = tokio::time::timeout(bound, first.get_connection_manager_with_config(config))
        .await
        .map_err(|_| no_answer())?
        .map_err(unavailable)?;
    Ok(Conn::Single(conn))
}

impl RedisBackend {
    /// Connects (failing if Redis does not answer within the timeout) and subscribes to other
    /// instances' changes (waiting for the subscription up to the timeout, so a change made
    /// right after `open` returns is heard).
    pub async fn open(options: RedisOptions) -> Result<RedisBackend, StoreError> {
        let urls = checked_urls(&options)?;
        // Every URL is checked now, so a typo is a startup error, not an outage.
        let clients = urls
            .iter()
            .map(|u| client_for(u, &options.tls))
            .collect::<Result<Vec<_>, _>>()?;
        let bound = options.timeout * 2;
        let conn = connect(&options, &urls, &clients[0], bound).await?;
        let (changes, _) = broadcast::channel(4096);
        let instance = data_encoding::HEXLOWER.encode(
            &Sha256::digest(format!(
                "{:?}{}{:p}",
                std::time::SystemTime::now(),
                std::process::id(),
                &changes
            ))[..8],
        );
        let tags = group_tags(&options);
        let backend = RedisBackend {
            conn,
            options,
            tags,
            instance,
            changes,
            _alive: std::sync::Arc::new(()),
        };
        let (ready_tx, ready_rx) = oneshot::channel();
        if backend.options.cluster {
            backend.check_group_count().await?;
            backend.spawn_sharded_listener(urls, ready_tx)?;
        } else {
            backend.spawn_listener(clients, ready_tx);
        }
        // Not subscribed in time is not fatal: the listener keeps trying and asks for a full
        // re-read once it is subscribed.
        if tokio::time::timeout(bound, ready_rx).await.is_err() {
            tracing::warn!(
                "redis change channel not subscribed yet; other instances' writes are picked up once it is"
            );
        }
        Ok(backend)
    }

    /// Records the group count of a new cluster store, or checks it against the recorded one:
    /// opening with another count would look for every key in the wrong group.
    async fn check_group_count(&self) -> Result<(), StoreError> {
        let key = format!("{{{}}}groups", self.options.prefix);
        let mut conn = self.conn.clone();
        let want = self.options.groups.to_string();
        let recorded: String = self
            .bounded(
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&want)
                    .arg("NX")
                    .arg("GET")
                    .query_async::<Option<String>>(&mut conn),
            )
            .await?
            .unwrap_or_else(|| want.clone());
        if recorded != want {
            return Err(StoreError::Config(Cause::new(format!(
                "this redis cluster store (prefix {:?}) was created with {recorded} groups; \
                 store.groups must stay {recorded} (it is {want})",
                self.options.prefix
            ))));
        }
        Ok(())
    }

    /// Starts the cluster's change listener ([`sharded`]): one subscriber connection per master
    /// owning a group's channel.
    fn spawn_sharded_listener(
        &self,
        urls: Vec<String>,
        ready: oneshot::Sender<()>,
    ) -> Result<(), StoreError> {
        let Conn::Cluster(conn) = &self.conn else {
            unreachable!("a cluster store has a cluster connection")
        };
        let seed = redis::IntoConnectionInfo::into_connection_info(urls[0].as_str())
            .map_err(|e| StoreError::Config(Cause::of("invalid redis cluster URL", e)))?;
        sharded::spawn(
            sharded::Listener {
                commands: conn.clone(),
                seed,
                tls: self.options.tls.clone(),
                channels: (0..self.tags.len()).map(|g| self.channel(g)).collect(),
                own: self.instance.clone(),
                tx: self.changes.clone(),
                timeout: self.options.timeout,
                alive: std::sync::Arc::downgrade(&self._alive),
            },
            ready,
        );
        Ok(())
    }

    /// The group of a key: the only one on a single server; in a cluster a fixed function of
    /// the key, the same on every instance.
    fn group_of(&self, key: &str) -> usize {
        if self.tags.len() == 1 {
            return 0;
        }
        let digest = Sha256::digest(key.as_bytes());
        usize::from(u16::from_be_bytes([digest[0], digest[1]])) % self.tags.len()
    }

    fn channel(&self, group: usize) -> String {
        format!("{}changes", self.tags[group])
    }

    /// Subscribes to the change channel and forwards other instances' account keys, re-making
    /// the subscription after failures (trying each node in turn; in a cluster a PUBLISH on any
    /// node reaches subscribers on every node). After a re-subscription it sends
    /// [`EXTERNAL_RESYNC`]: announcements made while it was away are lost.
    fn spawn_listener(&self, clients: Vec<redis::Client>, ready: oneshot::Sender<()>) {
        let (channel, own, tx) = (self.channel(0), self.instance.clone(), self.changes.clone());
        let timeout = self.options.timeout;
        let alive = std::sync::Arc::downgrade(&self._alive);
        tokio::spawn(async move {
            let mut ready = Some(ready);
            for client in clients.iter().cycle() {
                if alive.strong_count() == 0 {
                    return; // the backend was dropped
                }
                let pubsub = tokio::time::timeout(timeout, async {
                    let mut pubsub = client.get_async_pubsub().await?;
                    pubsub.subscribe(&channel).await?;
                    Ok::<_, redis::RedisError>(pubsub)
                })
                .await;
                match pubsub {
                    Ok(Ok(pubsub)) => {
                        // Only the subscription `open` waited for covers everything since
                        // then; any later one (or one `open` gave up on) may have missed
                        // announcements.
                        let in_time = ready.take().is_some_and(|r| r.send(()).is_ok());
                        if !in_time {
                            let _ = tx.send(EXTERNAL_RESYNC.to_owned());
                        }
                        listen(pubsub, &own, &tx, timeout, &alive).await;
                        tracing::debug!("redis change subscription lost; re-subscribing");
                    }
                    Ok(Err(e)) => tracing::debug!("redis change listener: {e}"),
                    Err(_) => {
                        tracing::debug!("redis change listener: no answer within {timeout:?}")
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }

    fn entry_key(&self, ns: Namespace, key: &str) -> String {
        let tag = &self.tags[self.group_of(key)];
        match ns {
            Namespace::Accounts => format!("{tag}a:{key}"),
            Namespace::Activations => format!("{tag}v:{key}"),
            Namespace::Tombstones => format!("{tag}t:{key}"),
        }
    }

    fn set_key(&self, ns: Namespace, group: usize) -> String {
        format!("{}{}", self.tags[group], ns.name())
    }

    fn pack_hash_key(&self, group: usize) -> String {
        format!("{}packhash", self.tags[group])
    }

    /// Runs `call` for every group at once (one call per group: they live on different nodes),
    /// each bounded by the timeout; the results in group order.
    async fn each_group<T, F, Fut>(&self, call: F) -> Result<Vec<T>, StoreError>
    where
        F: Fn(usize, Conn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let calls = (0..self.tags.len()).map(|g| self.bounded(call(g, self.conn.clone())));
        futures::future::try_join_all(calls).await
    }

    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.options.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if e.code() == Some("CONFLICT") => Err(StoreError::Conflict),
            Ok(Err(e)) => Err(unavailable(e)),
            Err(_) => Err(no_answer(format!(
                "no answer within {:?}",
                self.options.timeout
            ))),
        }
    }

    async fn write(
        &self,
        ns: Namespace,
        key: &str,
        mode: &str,
        expected: &str,
        value: &[u8],
    ) -> Result<i64, StoreError> {
        let sha: [u8; 32] = Sha256::digest(value).into();
        let accounts = ns == Namespace::Accounts;
        // Published by the script after its writes: a subscriber that reads on hearing it
        // sees the new value.
        let announcement = if accounts {
            format!("{} {key}", self.instance)
        } else {
            String::new()
        };
        let mut conn = self.conn.clone();
        let group = self.group_of(key);
        let script = redis::Script::new(WRITE_SCRIPT);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(self.entry_key(ns, key))
            .key(self.set_key(ns, group))
            .key(format!("{}version", self.tags[group]))
            .key(self.pack_hash_key(group))
            .arg(mode)
            .arg(expected)
            .arg(value)
            .arg(&sha[..])
            .arg(key)
            .arg(if accounts { "1" } else { "0" })
            .arg(self.channel(group))
            .arg(announcement)
            .arg(if self.options.cluster {
                "SPUBLISH"
            } else {
                "PUBLISH"
            });
        self.bounded(invocation.invoke_async(&mut conn)).await
    }
}

/// The hash tag of each key group: `{<prefix>}` alone on a single server (the layout of every
/// store written before clusters were supported), `{<prefix>g<n>}` for each group of a cluster.
fn group_tags(options: &RedisOptions) -> Vec<String> {
    if !options.cluster {
        return vec![format!("{{{}}}", options.prefix)];
    }
    (0..options.groups)
        .map(|g| format!("{{{}g{g}}}", options.prefix))
        .collect()
}

/// Passes on the key of an announcement `<instance id> <key>` made by another instance (our own
/// writes already updated this one); anything else on the channel is ignored.
fn forward_announcement(text: &str, own: &str, tx: &broadcast::Sender<String>) {
    if let Some((instance, key)) = text.split_once(' ') {
        if instance != own {
            let _ = tx.send(key.to_owned());
        }
    }
}

/// Forwards announcements until the subscription fails (or stops answering pings).
async fn listen(
    pubsub: redis::aio::PubSub,
    own: &str,
    tx: &broadcast::Sender<String>,
    timeout: Duration,
    alive: &std::sync::Weak<()>,
) {
    let (mut sink, mut messages) = pubsub.split();
    let mut ping = tokio::time::interval(LISTENER_PING);
    ping.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            msg = messages.next() => {
                let Some(msg) = msg else { return };
                if let Ok(text) = msg.get_payload::<String>() {
                    forward_announcement(&text, own, tx);
                }
            }
            _ = ping.tick() => {
                if alive.strong_count() == 0 {
                    return;
                }
                let answered = tokio::time::timeout(timeout, sink.ping::<String>()).await;
                if !matches!(answered, Ok(Ok(_))) {
                    return;
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl Backend for RedisBackend {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn get(&self, ns: Namespace, key: &str) -> Result<Option<(Bytes, Version)>, StoreError> {
        let mut conn = self.conn.clone();
        let (jwt, ver): (Option<Vec<u8>>, Option<String>) = self
            .bounded(
                redis::cmd("HMGET")
                    .arg(self.entry_key(ns, key))
                    .arg("jwt")
                    .arg("ver")
                    .query_async(&mut conn),
            )
            .await?;
        Ok(match (jwt, ver) {
            (Some(jwt), Some(ver)) => Some((Bytes::from(jwt), Version(ver))),
            _ => None,
        })
    }

    async fn put(
        &self,
        ns: Namespace,
        key: &str,
        value: Bytes,
        pre: Precondition,
    ) -> Result<Version, StoreError> {
        let (mode, expected) = match &pre {
            Precondition::Any => ("any", ""),
            Precondition::Absent => ("absent", ""),
            Precondition::Matches(v) => ("match", v.0.as_str()),
        };
        let version = self.write(ns, key, mode, expected, &value).await?;
        Ok(Version(version.to_string()))
    }

    async fn delete(
        &self,
        ns: Namespace,
        key: &str,
        expected: Option<&Version>,
    ) -> Result<bool, StoreError> {
        let expected = expected.map_or("", |v| v.0.as_str());
        Ok(self.write(ns, key, "delete", expected, b"").await? == 1)
    }

    async fn list(
        &self,
        ns: Namespace,
    ) -> Result<BoxStream<'static, Result<String, StoreError>>, StoreError> {
        // One SMEMBERS per group: unlike SSCAN it never repeats a key, and 100,000 account keys
        // are about 6 MB, one round trip. The sets are kept by the write script, so a cluster
        // is listed without scanning every master (and through failovers, by slot routing).
        let groups = self
            .each_group(|g, mut conn| {
                let set = self.set_key(ns, g);
                async move {
                    redis::cmd("SMEMBERS")
                        .arg(set)
                        .query_async::<Vec<String>>(&mut conn)
                        .await
                }
            })
            .await?;
        let keys = groups.into_iter().flatten().map(Ok);
        Ok(Box::pin(futures::stream::iter(keys)))
    }

    /// The other writers of a Redis store are account-server instances, which announce their
    /// own writes.
    fn peers_announce(&self) -> bool {
        true
    }

    async fn health(&self) -> Result<(), StoreError> {
        // EXISTS on each group's own key: in a cluster it reaches the node that holds that
        // group's slot, and every one of them must be up.
        self.each_group(|g, mut conn| {
            let key = self.pack_hash_key(g);
            async move {
                redis::cmd("EXISTS")
                    .arg(key)
                    .query_async::<i64>(&mut conn)
                    .await
            }
        })
        .await?;
        Ok(())
    }

    fn external_changes(&self) -> Option<broadcast::Receiver<String>> {
        Some(self.changes.subscribe())
    }

    async fn shared_pack_hash(&self) -> Result<Option<[u8; 32]>, StoreError> {
        // The XOR of the groups' partial hashes. The reads are not one snapshot: a write
        // between two of them gives a hash of no single moment, which only costs a PACK peer
        // one more exchange (the hash is compared for equality, never stored).
        let partials = self
            .each_group(|g, mut conn| {
                let key = self.pack_hash_key(g);
                async move {
                    redis::cmd("GET")
                        .arg(key)
                        .query_async::<Option<Vec<u8>>>(&mut conn)
                        .await
                }
            })
            .await?;
        let mut total = [0u8; 32];
        for partial in partials.into_iter().flatten() {
            if partial.len() == 32 {
                for (t, p) in total.iter_mut().zip(&partial) {
                    *t ^= p;
                }
            }
        }
        Ok(Some(total))
    }
}
