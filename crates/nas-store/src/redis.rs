//! Redis backend, for several account-server instances sharing one store.
//!
//! Layout under a key prefix: one hash per entry (`<prefix>a:<key>` / `<prefix>v:<hash id>`) with
//! fields `jwt`, `ver` (a global counter value, the CAS version) and `sha` (SHA-256 of the JWT);
//! a set per namespace listing the keys; `<prefix>packhash`, the PACK hash kept by the same Lua
//! script that writes, so every instance reads one agreed value; and a pub/sub channel
//! `<prefix>changes` on which each write announces `<instance id> <key>` so the other instances
//! drop their cached copy within moments.
//!
//! Every call is bounded by a timeout well under nats-server's 1.9 s fetch limit; an unreachable
//! Redis gives [`StoreError::Unavailable`] and the connection manager reconnects by itself.

use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;

use crate::{Backend, Namespace, Precondition, StoreError, Version};

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://`, `rediss://` or `unix://` URL.
    pub url: String,
    /// Prefix of every key (several deployments can share one Redis).
    pub prefix: String,
    /// Bound of every operation.
    pub timeout: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            url: "redis://127.0.0.1:6379/".into(),
            prefix: "nas:".into(),
            timeout: Duration::from_millis(800),
        }
    }
}

/// The Redis backend.
pub struct RedisBackend {
    conn: ConnectionManager,
    options: RedisOptions,
    instance: String,
    changes: broadcast::Sender<String>,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("prefix", &self.options.prefix)
            .finish()
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

/// Writes (or deletes, when ARGV[2] is empty and ARGV[1] is "delete") an entry atomically:
/// checks the precondition, updates value, version, key set and PACK hash in one step.
/// KEYS: entry hash, key set, version counter, pack hash (accounts only; else a dummy).
/// ARGV: mode (any|absent|match|delete), expected version, jwt, sha (32 raw bytes), key,
/// whether the PACK hash applies ("1"/"0").
const WRITE_SCRIPT: &str = r#"
local cur = redis.call('HGET', KEYS[1], 'ver')
local mode = ARGV[1]
if mode == 'absent' and cur then return {err = 'CONFLICT'} end
if mode == 'match' and cur ~= ARGV[2] then return {err = 'CONFLICT'} end
if mode == 'delete' and not cur then return 0 end
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
if mode == 'delete' then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[5])
  return 1
end
local ver = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[1], 'jwt', ARGV[3], 'ver', ver, 'sha', ARGV[4])
redis.call('SADD', KEYS[2], ARGV[5])
return ver
"#;

impl RedisBackend {
    /// Connects (failing if Redis does not answer within the timeout) and starts listening for
    /// other instances' changes.
    pub async fn open(options: RedisOptions) -> Result<RedisBackend, StoreError> {
        let client = redis::Client::open(options.url.as_str())
            .map_err(|e| StoreError::Io(format!("invalid redis URL: {e}")))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(options.timeout)
            .set_response_timeout(options.timeout)
            .set_number_of_retries(1);
        let conn = tokio::time::timeout(
            options.timeout * 2,
            client.get_connection_manager_with_config(config),
        )
        .await
        .map_err(|_| {
            unavailable(format!(
                "no answer from {} within {:?}",
                options.url,
                options.timeout * 2
            ))
        })?
        .map_err(unavailable)?;
        let (changes, _) = broadcast::channel(4096);
        let instance = data_encoding::HEXLOWER.encode(
            &Sha256::digest(format!(
                "{:?}{}",
                std::time::SystemTime::now(),
                std::process::id()
            ))[..8],
        );
        let backend = RedisBackend {
            conn,
            options,
            instance,
            changes,
        };
        backend.spawn_listener(client);
        Ok(backend)
    }

    fn channel(&self) -> String {
        format!("{}changes", self.options.prefix)
    }

    /// Subscribes to the change channel, reconnecting after failures, forwarding other
    /// instances' account keys.
    fn spawn_listener(&self, client: redis::Client) {
        let (channel, own, tx) = (self.channel(), self.instance.clone(), self.changes.clone());
        tokio::spawn(async move {
            loop {
                match client.get_async_pubsub().await {
                    Ok(mut pubsub) => {
                        if pubsub.subscribe(&channel).await.is_ok() {
                            let mut messages = pubsub.on_message();
                            while let Some(msg) = messages.next().await {
                                let Ok(text) = msg.get_payload::<String>() else {
                                    continue;
                                };
                                let Some((instance, key)) = text.split_once(' ') else {
                                    continue;
                                };
                                // Our own writes already updated this instance.
                                if instance != own {
                                    let _ = tx.send(key.to_owned());
                                }
                            }
                        }
                    }
                    Err(e) => tracing::debug!("redis change listener: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }

    fn entry_key(&self, ns: Namespace, key: &str) -> String {
        match ns {
            Namespace::Accounts => format!("{}a:{key}", self.options.prefix),
            Namespace::Activations => format!("{}v:{key}", self.options.prefix),
        }
    }

    fn set_key(&self, ns: Namespace) -> String {
        format!("{}{}", self.options.prefix, ns.name())
    }

    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.options.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if e.to_string().contains("CONFLICT") => Err(StoreError::Conflict),
            Ok(Err(e)) => Err(unavailable(e)),
            Err(_) => Err(unavailable(format!(
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
        let mut conn = self.conn.clone();
        let script = redis::Script::new(WRITE_SCRIPT);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(self.entry_key(ns, key))
            .key(self.set_key(ns))
            .key(format!("{}version", self.options.prefix))
            .key(format!("{}packhash", self.options.prefix))
            .arg(mode)
            .arg(expected)
            .arg(value)
            .arg(&sha[..])
            .arg(key)
            .arg(if ns == Namespace::Accounts { "1" } else { "0" });
        let result: i64 = self.bounded(invocation.invoke_async(&mut conn)).await?;
        if ns == Namespace::Accounts && result != 0 {
            // Best effort: a lost announcement only delays other instances until their TTL.
            let _: Result<i64, _> = self
                .bounded(
                    redis::cmd("PUBLISH")
                        .arg(self.channel())
                        .arg(format!("{} {key}", self.instance))
                        .query_async(&mut conn),
                )
                .await;
        }
        Ok(result)
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

    async fn delete(&self, ns: Namespace, key: &str) -> Result<bool, StoreError> {
        Ok(self.write(ns, key, "delete", "", b"").await? == 1)
    }

    async fn list(
        &self,
        ns: Namespace,
    ) -> Result<BoxStream<'static, Result<String, StoreError>>, StoreError> {
        let mut conn = self.conn.clone();
        let keys: Vec<String> = self
            .bounded(
                redis::cmd("SMEMBERS")
                    .arg(self.set_key(ns))
                    .query_async(&mut conn),
            )
            .await?;
        Ok(Box::pin(futures::stream::iter(keys.into_iter().map(Ok))))
    }

    async fn health(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: String = self
            .bounded(redis::cmd("PING").query_async(&mut conn))
            .await?;
        Ok(())
    }

    fn external_changes(&self) -> Option<broadcast::Receiver<String>> {
        Some(self.changes.subscribe())
    }

    async fn shared_pack_hash(&self) -> Result<Option<[u8; 32]>, StoreError> {
        let mut conn = self.conn.clone();
        let raw: Option<Vec<u8>> = self
            .bounded(
                redis::cmd("GET")
                    .arg(format!("{}packhash", self.options.prefix))
                    .query_async(&mut conn),
            )
            .await?;
        Ok(Some(match raw {
            Some(bytes) if bytes.len() == 32 => {
                let mut out = [0u8; 32];
                out.copy_from_slice(&bytes);
                out
            }
            _ => [0u8; 32],
        }))
    }
}
