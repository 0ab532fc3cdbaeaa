//! The server's configuration: every key of the Go nats-account-server (case-insensitive, same
//! defaults and type rules), plus new blocks (`store.type`, `cache`, `metrics`, `http.bodylimit`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use nas_conf::{Map, Spanned, Value};

mod store;
pub use store::{
    DirStore, ExpiryConfig, NscStore, PostgresStore, RedisStore, RedisTarget, S3Store, StoreConfig,
    StoreTls, DEFAULT_REDIS_CLUSTER_GROUPS, MAX_REDIS_CLUSTER_GROUPS,
};

/// A configuration error, naming the key and where it is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be parsed.
    #[error("{0}")]
    Parse(#[from] nas_conf::ConfError),
    /// A value has the wrong type or is out of range.
    #[error("{pos}: error parsing {key} option {value}: {reason}")]
    Value {
        /// The key.
        key: String,
        /// The value as written.
        value: String,
        /// Where.
        pos: String,
        /// What is wrong.
        reason: String,
    },
    /// A combination of settings cannot work.
    #[error("{0}")]
    Invalid(String),
}

/// `http { … }`.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    /// Listen host (`""` = all interfaces).
    pub host: String,
    /// Listen port (0 = ephemeral).
    pub port: u16,
    /// Read timeout.
    pub read_timeout: Duration,
    /// Longest a response write may make no progress before the connection is closed.
    pub write_timeout: Duration,
    /// Longest an idle keep-alive connection is kept (`None` = the read timeout, as Go).
    pub idle_timeout: Option<Duration>,
    /// Open connections, all workers together; more wait in the listen backlog.
    pub max_connections: usize,
    /// Requests served on one connection before it is closed (0 = no limit).
    pub max_keepalive_requests: u32,
    /// How long a graceful stop waits for in-flight requests before closing them.
    pub shutdown_timeout: Duration,
    /// Certificate (PEM) for HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) for HTTPS.
    pub tls_key: Option<PathBuf>,
    /// Largest request body accepted (JWTs are capped at 1 MiB).
    pub body_limit: usize,
    /// Worker threads (0 = one per core).
    pub workers: usize,
}

/// `nats { … }`. Its `Debug` shows server URLs without passwords (creds are paths, shown).
#[derive(Clone, PartialEq)]
pub struct NatsConfig {
    /// Server URLs; empty = no NATS.
    pub servers: Vec<String>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Reconnect wait (also the period of our PACK requests).
    pub reconnect_wait: Duration,
    /// Max reconnect attempts; -1 = forever.
    pub max_reconnects: i64,
    /// CA file.
    pub tls_root: Option<PathBuf>,
    /// Client certificate.
    pub tls_cert: Option<PathBuf>,
    /// Client key.
    pub tls_key: Option<PathBuf>,
    /// Creds of a system-account user.
    pub user_credentials: Option<PathBuf>,
    /// Honour `$SYS.REQ.CLAIMS.DELETE` (new; off by default, as nats-server's `allow_delete`).
    pub allow_delete: bool,
    /// Answer LOOKUP misses with an empty message (new; turn off for nats-server 2.9.10–2.9.16).
    pub lookup_miss_reply: bool,
    /// How often to request PACKs from full resolvers and merge them (new; 0 = never).
    pub pack_interval: Option<Duration>,
    /// `server.name` in resolver replies (new).
    pub name: String,
}

impl std::fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let servers: Vec<String> = self
            .servers
            .iter()
            .map(|s| nas_store::redact_url(s))
            .collect();
        f.debug_struct("NatsConfig")
            .field("servers", &servers)
            .field("connect_timeout", &self.connect_timeout)
            .field("reconnect_wait", &self.reconnect_wait)
            .field("max_reconnects", &self.max_reconnects)
            .field("tls_root", &self.tls_root)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("user_credentials", &self.user_credentials)
            .field("allow_delete", &self.allow_delete)
            .field("lookup_miss_reply", &self.lookup_miss_reply)
            .field("pack_interval", &self.pack_interval)
            .field("name", &self.name)
            .finish()
    }
}

/// `key` holding either a JWT (kept inline) or a path (as nats-server's `operator:`); naming
/// the same thing twice (with the `…jwtpath` key) is an error.
fn read_jwt_or_path(
    root: &Block<'_>,
    key: &str,
    inline: &mut Option<String>,
    path: &mut Option<PathBuf>,
) -> Result<(), ConfigError> {
    let Some(value) = Reader::string(root, key)?.filter(|s| !s.trim().is_empty()) else {
        return Ok(());
    };
    if path.is_some() {
        return Err(ConfigError::Invalid(format!(
            "{key} and {key}jwtpath both name the {key} JWT: keep one"
        )));
    }
    let value = value.trim();
    if value.starts_with("eyJ") && value.matches('.').count() == 2 && !value.contains('/') {
        *inline = Some(value.to_owned());
    } else {
        *path = Some(PathBuf::from(value));
    }
    Ok(())
}

/// `logging { … }`.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggingConfig {
    /// Timestamps.
    pub time: bool,
    /// Debug level.
    pub debug: bool,
    /// Trace level.
    pub trace: bool,
    /// ANSI colours.
    pub colors: bool,
    /// `[pid]` prefix.
    pub pid: bool,
    /// JSON lines instead of human text.
    pub json: bool,
}

/// `cache { … }` (new).
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    /// Maximum accounts held.
    pub max_entries: u64,
    /// Maximum bytes held (`maxbytes`; tokens, keys and ~1 KiB of overhead per entry).
    pub max_bytes: u64,
    /// Revalidation interval for stores shared by several instances (`None` = never).
    pub ttl: Option<Duration>,
    /// How long an unknown account is remembered as missing.
    pub negative_ttl: Duration,
    /// How long after it was last confirmed by the store a verified JWT may still be served
    /// while the store is unreachable (stale-if-error).
    pub max_stale: Duration,
}

/// Default of `cache { maxstale }`.
pub const DEFAULT_MAX_STALE: Duration = Duration::from_secs(600);

/// `metrics { … }` (new).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsConfig {
    /// Serve `/metrics` on the main listener.
    pub on_main_listener: bool,
    /// A separate `host:port` for `/metrics`.
    pub listen: Option<String>,
}

/// `audit { file, subject }` (new): where write decisions are recorded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditConfig {
    /// Append one JSON line per decision to this file (reopened when SIGHUP restarts the server).
    pub file: Option<PathBuf>,
    /// Publish each line on this NATS subject (needs `nats { servers }`).
    pub subject: Option<String>,
}

/// `sync { interval, timeout }` (new): the periodic drift check against the nats-servers.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncConfig {
    /// How often to compare the store with every nats-server (`None` = never, the default).
    pub interval: Option<Duration>,
    /// Bound of each request of a check and of collecting fanned-out answers.
    pub timeout: Duration,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            interval: None,
            timeout: Duration::from_secs(1),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Operator JWT file (`operatorjwtpath`, or `operator` naming a file). Watched: trust is
    /// reloaded when it changes.
    pub operator_jwt_path: Option<PathBuf>,
    /// The operator JWT itself (`operator` holding a JWT, as nats-server's `operator:` may).
    pub operator_jwt: Option<String>,
    /// System account JWT file (`systemaccountjwtpath`, or `systemaccount` naming a file).
    pub system_account_jwt_path: Option<PathBuf>,
    /// The system account JWT itself (`systemaccount` holding a JWT).
    pub system_account_jwt: Option<String>,
    /// Subject of the signing service for self-signed accounts.
    pub sign_request_subject: Option<String>,
    /// Timeout of sign requests and of NATS lookups.
    pub sign_request_timeout: Duration,
    /// URL of a primary account server.
    pub primary: Option<String>,
    /// HTTP timeout towards the primary.
    pub replication_timeout: Duration,
    /// `max` of pack imports and upper bound of `/jwt/v1/pack` (negative = none).
    pub max_replication_pack: i64,
    /// Activations one account may hold (new; see `nas_server::activation`).
    pub max_activations_per_account: usize,
    /// How long a replica serves an account before asking the primary again (new).
    pub replica_validity: Duration,
    /// Logging.
    pub logging: LoggingConfig,
    /// HTTP listener.
    pub http: HttpConfig,
    /// NATS connection.
    pub nats: NatsConfig,
    /// Store.
    pub store: StoreConfig,
    /// What happens to expired JWTs (`store { deleteexpired, cleanupinterval }`).
    pub expiry: ExpiryConfig,
    /// Verified cache.
    pub cache: CacheConfig,
    /// Metrics.
    pub metrics: MetricsConfig,
    /// The audit log.
    pub audit: AuditConfig,
    /// The periodic drift check.
    pub sync: SyncConfig,
    /// Where the config came from (for SIGHUP reloads).
    pub source: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            operator_jwt_path: None,
            operator_jwt: None,
            system_account_jwt_path: None,
            system_account_jwt: None,
            sign_request_subject: None,
            sign_request_timeout: Duration::from_millis(1000),
            primary: None,
            replication_timeout: Duration::from_millis(5000),
            max_replication_pack: 10_000,
            max_activations_per_account: 1000,
            replica_validity: Duration::from_secs(3600),
            logging: LoggingConfig {
                time: true,
                debug: false,
                trace: false,
                colors: true,
                pid: false,
                json: false,
            },
            http: HttpConfig {
                host: "localhost".into(),
                port: 9090,
                read_timeout: Duration::from_millis(5000),
                write_timeout: Duration::from_millis(5000),
                idle_timeout: None,
                max_connections: 4096,
                max_keepalive_requests: 1000,
                shutdown_timeout: Duration::from_millis(5000),
                tls_cert: None,
                tls_key: None,
                // A 1 MiB token may arrive with a trailing CR/LF.
                body_limit: nas_jwt::MAX_TOKEN_BYTES + 2,
                workers: 0,
            },
            nats: NatsConfig {
                servers: Vec::new(),
                connect_timeout: Duration::from_millis(5000),
                reconnect_wait: Duration::from_millis(1000),
                max_reconnects: -1,
                tls_root: None,
                tls_cert: None,
                tls_key: None,
                user_credentials: None,
                allow_delete: false,
                lookup_miss_reply: true,
                pack_interval: Some(Duration::from_secs(60)),
                name: "nats-account-server".into(),
            },
            store: StoreConfig::default(),
            expiry: ExpiryConfig::default(),
            cache: CacheConfig {
                max_entries: 100_000,
                max_bytes: crate::cache::DEFAULT_MAX_BYTES,
                ttl: None,
                negative_ttl: Duration::from_secs(1),
                max_stale: DEFAULT_MAX_STALE,
            },
            metrics: MetricsConfig {
                on_main_listener: true,
                listen: None,
            },
            audit: AuditConfig::default(),
            sync: SyncConfig::default(),
            source: None,
        }
    }
}

/// Reads typed values out of conf blocks with the Go server's type rules.
struct Reader;

/// A conf block being read. It remembers which keys were read, and when it is dropped it reports
/// every key nobody read as unknown: each key is named once, where it is read, and the
/// "unknown key" warnings come from this one place.
struct Block<'a> {
    map: &'a Map,
    name: String,
    read: std::cell::RefCell<Vec<String>>,
    /// Said after each unread key's warning (why a known key may still be unread).
    unread_hint: std::cell::RefCell<Option<String>>,
    warnings: &'a std::cell::RefCell<Vec<String>>,
}

impl<'a> Block<'a> {
    fn new(map: &'a Map, name: String, warnings: &'a std::cell::RefCell<Vec<String>>) -> Self {
        Block {
            map,
            name,
            read: Default::default(),
            unread_hint: Default::default(),
            warnings,
        }
    }

    /// The value of `key` (case-insensitive, as nats-server), marking it read.
    fn get(&self, key: &str) -> Option<&'a Spanned<Value>> {
        let (written, value) = self.map.get_key_value(key)?;
        self.read.borrow_mut().push(written.value.clone());
        Some(value)
    }

    /// Whether `key` is present, without marking it read.
    fn has(&self, key: &str) -> bool {
        self.map.get_key_value(key).is_some()
    }

    /// Adds `hint` to the warning of every key left unread.
    fn set_unread_hint(&self, hint: String) {
        *self.unread_hint.borrow_mut() = Some(hint);
    }

    /// Records a warning about this block.
    fn warn(&self, warning: String) {
        self.warnings.borrow_mut().push(warning);
    }
}

impl Drop for Block<'_> {
    fn drop(&mut self) {
        let read = self.read.borrow();
        for (key, _) in self.map.iter() {
            if read.contains(&key.value) {
                continue;
            }
            let name = if self.name.is_empty() {
                key.value.clone()
            } else {
                format!("{}.{}", self.name, key.value)
            };
            let hint = match &*self.unread_hint.borrow() {
                Some(hint) => format!(" ({hint})"),
                None => String::new(),
            };
            self.warn(format!(
                "{}: unknown config key `{name}` ignored{hint}",
                key.pos
            ));
        }
    }
}

fn describe(value: &Spanned<Value>) -> String {
    value.value.to_string()
}

impl Reader {
    fn err(key: &str, value: &Spanned<Value>, reason: &str) -> ConfigError {
        ConfigError::Value {
            key: key.to_owned(),
            value: describe(value),
            pos: value.pos.to_string(),
            reason: reason.to_owned(),
        }
    }

    fn string(map: &Block<'_>, key: &str) -> Result<Option<String>, ConfigError> {
        match map.get(key) {
            None => Ok(None),
            Some(v) => match v.as_str() {
                Some(s) => Ok(Some(s.to_owned())),
                None => Err(Self::err(key, v, "expected a string")),
            },
        }
    }

    fn path(map: &Block<'_>, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        Ok(Self::string(map, key)?
            .filter(|s| !s.is_empty())
            .map(PathBuf::from))
    }

    fn int(map: &Block<'_>, key: &str) -> Result<Option<i64>, ConfigError> {
        match map.get(key) {
            None => Ok(None),
            Some(v) => match (&v.value, v.as_i64()) {
                (_, Some(n)) => Ok(Some(n)),
                (Value::String(s), None) => s
                    .trim()
                    .parse::<i64>()
                    .map(Some)
                    .map_err(|_| Self::err(key, v, "expected an integer")),
                _ => Err(Self::err(key, v, "expected an integer")),
            },
        }
    }

    fn millis(map: &Block<'_>, key: &str) -> Result<Option<Duration>, ConfigError> {
        match map.get(key) {
            Some(v)
                if matches!(v.value, Value::String(_))
                    && v.as_str().is_some_and(|s| s.parse::<i64>().is_err()) =>
            {
                // New-style durations ("5s") are accepted besides the Go server's milliseconds.
                v.as_duration().map(Some).ok_or_else(|| {
                    Self::err(key, v, "expected milliseconds or a duration like \"5s\"")
                })
            }
            _ => match Self::int(map, key)? {
                None => Ok(None),
                Some(n) if n < 0 => Err(Self::err(
                    key,
                    map.get(key).expect("present"),
                    "must not be negative",
                )),
                Some(n) => Ok(Some(Duration::from_millis(n as u64))),
            },
        }
    }

    fn boolean(map: &Block<'_>, key: &str) -> Result<Option<bool>, ConfigError> {
        match map.get(key) {
            None => Ok(None),
            Some(v) => match &v.value {
                Value::Bool(b) => Ok(Some(*b)),
                Value::String(s) => Ok(Some(s.eq_ignore_ascii_case("true"))),
                _ => Err(Self::err(key, v, "expected a boolean")),
            },
        }
    }

    fn strings(map: &Block<'_>, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        match map.get(key) {
            None => Ok(None),
            Some(v) => match &v.value {
                Value::Array(items) => items
                    .iter()
                    .map(|i| {
                        i.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| Self::err(key, i, "expected a string"))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some),
                Value::String(s) => Ok(Some(vec![s.clone()])),
                _ => Err(Self::err(
                    key,
                    v,
                    "expected a string or an array of strings",
                )),
            },
        }
    }

    fn block<'a>(map: &Block<'a>, key: &str) -> Result<Option<Block<'a>>, ConfigError> {
        let Some(v) = map.get(key) else {
            return Ok(None);
        };
        let inner = v
            .as_map()
            .ok_or_else(|| Self::err(key, v, "expected a block { … }"))?;
        let name = if map.name.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", map.name)
        };
        Ok(Some(Block::new(inner, name, map.warnings)))
    }
}

fn set<T>(target: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *target = v;
    }
}

impl Config {
    /// Reads a config file; returns the config and warnings (unknown keys).
    pub fn from_file(path: &Path) -> Result<(Config, Vec<String>), ConfigError> {
        let doc = nas_conf::parse_file(path)?;
        let (mut config, warnings) = Config::from_map(doc.root())?;
        config.source = Some(path.to_owned());
        Ok((config, warnings))
    }

    /// Reads config text (tests).
    pub fn from_text(text: &str) -> Result<(Config, Vec<String>), ConfigError> {
        let doc = nas_conf::parse_str(text)?;
        Config::from_map(doc.root())
    }

    /// Builds a config from a parsed conf tree.
    pub fn from_map(root: &Map) -> Result<(Config, Vec<String>), ConfigError> {
        let warnings = std::cell::RefCell::new(Vec::new());
        let config = Config::read(&Block::new(root, String::new(), &warnings))?;
        Ok((config, warnings.into_inner()))
    }

    /// Every key of the tree, block by block; unread keys are reported as the blocks drop.
    fn read(root: &Block<'_>) -> Result<Config, ConfigError> {
        let mut c = Config {
            operator_jwt_path: Reader::path(root, "operatorjwtpath")?,
            system_account_jwt_path: Reader::path(root, "systemaccountjwtpath")?,
            sign_request_subject: Reader::string(root, "signrequestsubject")?
                .filter(|s| !s.is_empty()),
            ..Config::default()
        };
        set(
            &mut c.sign_request_timeout,
            Reader::millis(root, "signrequesttimeout")?,
        );
        read_jwt_or_path(
            root,
            "operator",
            &mut c.operator_jwt,
            &mut c.operator_jwt_path,
        )?;
        read_jwt_or_path(
            root,
            "systemaccount",
            &mut c.system_account_jwt,
            &mut c.system_account_jwt_path,
        )?;
        c.primary = Reader::string(root, "primary")?.filter(|s| !s.is_empty());
        set(
            &mut c.replication_timeout,
            Reader::millis(root, "replicationtimeout")?,
        );
        set(
            &mut c.replica_validity,
            Reader::millis(root, "replicavalidity")?,
        );
        set(
            &mut c.max_replication_pack,
            Reader::int(root, "maxreplicationpack")?,
        );
        if let Some(n) = Reader::int(root, "maxactivationsperaccount")? {
            c.max_activations_per_account = usize::try_from(n).unwrap_or(0);
        }

        if let Some(ref m) = Reader::block(root, "logging")? {
            read_logging(m, &mut c.logging)?;
        }
        if let Some(ref m) = Reader::block(root, "http")? {
            read_http(m, &mut c.http)?;
        }
        if let Some(ref m) = Reader::block(root, "nats")? {
            read_nats(m, &mut c.nats)?;
        }
        if let Some(ref m) = Reader::block(root, "store")? {
            (c.store, c.expiry) = store::read(m)?;
        }
        if let Some(ref m) = Reader::block(root, "cache")? {
            read_cache(m, &mut c.cache)?;
        }
        if let Some(ref m) = Reader::block(root, "metrics")? {
            read_metrics(m, &mut c.metrics)?;
        }
        if let Some(ref m) = Reader::block(root, "audit")? {
            c.audit.file = Reader::path(m, "file")?;
            c.audit.subject = Reader::string(m, "subject")?.filter(|s| !s.is_empty());
        }
        if let Some(ref m) = Reader::block(root, "sync")? {
            if let Some(d) = Reader::millis(m, "interval")? {
                c.sync.interval = (!d.is_zero()).then_some(d);
            }
            set(&mut c.sync.timeout, Reader::millis(m, "timeout")?);
        }
        c.validate()?;
        Ok(c)
    }

    /// Checks combinations that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.http.tls_cert.is_some() != self.http.tls_key.is_some() {
            return Err(ConfigError::Invalid(
                "TLS is not configured: http.tls needs both cert and key".into(),
            ));
        }
        if self.audit.subject.is_some() && self.nats.servers.is_empty() {
            return Err(ConfigError::Invalid(
                "audit.subject needs a NATS connection (nats { servers })".into(),
            ));
        }
        if self.sync.interval.is_some() && self.nats.servers.is_empty() {
            return Err(ConfigError::Invalid(
                "sync.interval needs a NATS connection (nats { servers })".into(),
            ));
        }
        if self.primary.is_some() && matches!(self.store, StoreConfig::Nsc(_)) {
            return Err(ConfigError::Invalid(
                "replicas cannot be run in NSC mode".into(),
            ));
        }
        Ok(())
    }

    /// The `host:port` string to bind.
    pub fn http_bind(&self) -> String {
        let host = if self.http.host.is_empty() {
            "0.0.0.0"
        } else {
            &self.http.host
        };
        format!("{host}:{}", self.http.port)
    }
}

/// `logging { … }`.
fn read_logging(m: &Block<'_>, l: &mut LoggingConfig) -> Result<(), ConfigError> {
    set(&mut l.time, Reader::boolean(m, "time")?);
    set(&mut l.debug, Reader::boolean(m, "debug")?);
    set(&mut l.trace, Reader::boolean(m, "trace")?);
    set(&mut l.colors, Reader::boolean(m, "colors")?);
    set(&mut l.pid, Reader::boolean(m, "pid")?);
    set(&mut l.json, Reader::boolean(m, "json")?);
    Ok(())
}

/// `http { … }`.
fn read_http(m: &Block<'_>, h: &mut HttpConfig) -> Result<(), ConfigError> {
    set(&mut h.host, Reader::string(m, "host")?);
    if let Some(port) = Reader::int(m, "port")? {
        h.port = u16::try_from(port).map_err(|_| {
            Reader::err(
                "http.port",
                m.get("port").expect("present"),
                "not a port number",
            )
        })?;
    }
    set(&mut h.read_timeout, Reader::millis(m, "readtimeout")?);
    set(&mut h.write_timeout, Reader::millis(m, "writetimeout")?);
    h.idle_timeout = Reader::millis(m, "idletimeout")?.or(h.idle_timeout);
    set(
        &mut h.shutdown_timeout,
        Reader::millis(m, "shutdowntimeout")?,
    );
    if let Some(n) = Reader::int(m, "maxconnections")? {
        h.max_connections = usize::try_from(n).unwrap_or(1).max(1);
    }
    if let Some(n) = Reader::int(m, "maxkeepaliverequests")? {
        h.max_keepalive_requests = u32::try_from(n.max(0)).unwrap_or(u32::MAX);
    }
    if let Some(limit) = Reader::int(m, "bodylimit")? {
        h.body_limit = usize::try_from(limit)
            .unwrap_or(0)
            .clamp(1, nas_jwt::MAX_TOKEN_BYTES + 2);
    }
    if let Some(w) = Reader::int(m, "workers")? {
        h.workers = usize::try_from(w).unwrap_or(0);
    }
    if let Some(ref tls) = Reader::block(m, "tls")? {
        if let Some(root) = tls.get("root") {
            tls.warn(format!(
                "{}: http.tls.root is ignored: this server does not ask clients for certificates",
                root.pos
            ));
        }
        h.tls_cert = Reader::path(tls, "cert")?;
        h.tls_key = Reader::path(tls, "key")?;
    }
    Ok(())
}

/// `nats { … }`.
fn read_nats(m: &Block<'_>, n: &mut NatsConfig) -> Result<(), ConfigError> {
    set(&mut n.servers, Reader::strings(m, "servers")?);
    set(&mut n.connect_timeout, Reader::millis(m, "connecttimeout")?);
    set(&mut n.reconnect_wait, Reader::millis(m, "reconnectwait")?);
    set(&mut n.max_reconnects, Reader::int(m, "maxreconnects")?);
    n.user_credentials = Reader::path(m, "usercredentials")?;
    set(&mut n.allow_delete, Reader::boolean(m, "allowdelete")?);
    set(
        &mut n.lookup_miss_reply,
        Reader::boolean(m, "lookupmissreply")?,
    );
    if let Some(d) = Reader::millis(m, "packinterval")? {
        n.pack_interval = (!d.is_zero()).then_some(d);
    }
    set(&mut n.name, Reader::string(m, "name")?);
    if let Some(ref tls) = Reader::block(m, "tls")? {
        n.tls_root = Reader::path(tls, "root")?;
        n.tls_cert = Reader::path(tls, "cert")?;
        n.tls_key = Reader::path(tls, "key")?;
    }
    Ok(())
}

/// `cache { … }`.
fn read_cache(m: &Block<'_>, cache: &mut CacheConfig) -> Result<(), ConfigError> {
    if let Some(n) = Reader::int(m, "maxentries")? {
        cache.max_entries = u64::try_from(n).unwrap_or(0).max(1);
    }
    if let Some(n) = Reader::int(m, "maxbytes")? {
        // Below one JWT's worth the cache could hold nothing useful.
        cache.max_bytes = u64::try_from(n).unwrap_or(0).max(64 * 1024);
    }
    cache.ttl = Reader::millis(m, "ttl")?.filter(|d| !d.is_zero());
    set(&mut cache.negative_ttl, Reader::millis(m, "negativettl")?);
    set(&mut cache.max_stale, Reader::millis(m, "maxstale")?);
    Ok(())
}

/// `metrics { … }`.
fn read_metrics(m: &Block<'_>, metrics: &mut MetricsConfig) -> Result<(), ConfigError> {
    metrics.listen = Reader::string(m, "listen")?.filter(|s| !s.is_empty());
    set(
        &mut metrics.on_main_listener,
        Reader::boolean(m, "onmainlistener")?,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_example_config_parses() {
        let text = r#"
# nats-account-server
OperatorJWTPath: "/etc/nas/operator.jwt"
systemaccountjwtpath: "/etc/nas/SYS.jwt"
primary: "http://primary.example.com:9090"
http: { host: "0.0.0.0", port: 9090, readtimeout: 5000, writetimeout: 5000 }
store: { dir: "/var/lib/nas/jwt", shard: false, cleanupinterval: 60000 }
logging: { debug: false, trace: false, time: true, colors: false, pid: true }
nats: {
  servers: ["nats://a.example.com:4222", "nats://b.example.com:4222"]
  usercredentials: "/etc/nas/sys-user.creds"
  ConnectTimeout: 5000
  ReconnectWait: 10000
}
"#;
        let (c, warnings) = Config::from_text(text).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            c.operator_jwt_path.as_deref(),
            Some(Path::new("/etc/nas/operator.jwt"))
        );
        assert_eq!(c.http.host, "0.0.0.0");
        assert_eq!(c.store, StoreConfig::Dir(DirStore::new("/var/lib/nas/jwt")));
        assert_eq!(c.nats.servers.len(), 2);
        assert_eq!(c.nats.reconnect_wait, Duration::from_secs(10));
        assert!(c.logging.pid && !c.logging.colors);
    }

    #[test]
    fn unknown_keys_warn_with_position() {
        let (_, warnings) = Config::from_text("http { port: 1, prot: 2 }\nbogus: 1\n").unwrap();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("`http.prot`") && w.contains(":1:17")),
            "{warnings:?}"
        );
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("`bogus`") && w.contains(":2:1")),
            "{warnings:?}"
        );
    }

    #[test]
    fn type_errors_name_key_and_position() {
        let err = Config::from_text("http {\n  port: \"abc\"\n}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("port") && err.contains(":2:"), "{err}");
        let err = Config::from_text("store { dir: \"\" }")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "store directory is required");
        let err = Config::from_text("http { tls { cert: a.pem } }")
            .unwrap_err()
            .to_string();
        assert!(err.contains("TLS is not configured"), "{err}");
        assert!(Config::from_text("http: [").is_err());
    }

    #[test]
    fn go_type_rules() {
        let (c, _) =
            Config::from_text("http { port: \"8080\" }\nlogging { debug: \"TRUE\" }").unwrap();
        assert_eq!(c.http.port, 8080);
        assert!(c.logging.debug);
        let (c, _) = Config::from_text("nats { servers: \"nats://x:4222\" }").unwrap();
        assert_eq!(c.nats.servers, vec!["nats://x:4222".to_owned()]);
    }
}

#[cfg(test)]
mod store_tests {
    use super::*;

    fn store_of(text: &str) -> Result<(StoreConfig, Vec<String>), String> {
        Config::from_text(text)
            .map(|(c, warnings)| (c.store, warnings))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_backend_is_chosen_by_type_then_nsc_then_dir() {
        let (s, _) = store_of("store { nsc: \"/ops/nsc/nats/O\" }").unwrap();
        assert_eq!(
            s,
            StoreConfig::Nsc(NscStore {
                folder: "/ops/nsc/nats/O".into()
            })
        );
        let (s, _) = store_of("store { type: MEMORY }").unwrap();
        assert_eq!(s, StoreConfig::Memory);
        let (s, _) = store_of("store { shard: true, readonly: true }").unwrap();
        let want = DirStore {
            shard: true,
            read_only: true,
            ..DirStore::new("./data")
        };
        assert_eq!(s, StoreConfig::Dir(want));
    }

    #[test]
    fn each_backend_reads_only_its_own_keys() {
        let (s, warnings) =
            store_of("store { type: redis, url: \"redis://r:6379/\", bucket: b, timeout: 300 }")
                .unwrap();
        let want = RedisStore {
            timeout: Duration::from_millis(300),
            ..RedisStore::new("redis://r:6379/")
        };
        assert_eq!(s, StoreConfig::Redis(want));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("`store.bucket` ignored (not an option of a redis store)"),
            "{warnings:?}"
        );
    }

    #[test]
    fn a_backend_without_its_required_key_is_refused() {
        for (text, message) in [
            ("store { type: redis }", "store type redis needs store.url"),
            (
                "store { type: s3, url: x }",
                "store type s3 needs store.bucket",
            ),
            ("store { type: nsc }", "store type nsc needs store.nsc"),
            (
                "store { type: redis, url: x, tls { cert: c.pem } }",
                "store.tls needs both cert and key",
            ),
            ("store { type: sqlite }", "unknown store type \"sqlite\""),
            (
                "store { type: redis, url: x, cluster: [y] }",
                "store.url and store.cluster both set",
            ),
            (
                "store { type: redis, url: x, groups: 4 }",
                "store.groups applies to a redis cluster",
            ),
            (
                "store { type: redis, cluster: [] }",
                "store.cluster needs at least one node URL",
            ),
            (
                "store { type: redis, cluster: [x], groups: 0 }",
                "store.groups must be 1 to 1024, not 0",
            ),
            (
                "store { type: redis, cluster: [x], groups: 5000 }",
                "store.groups must be 1 to 1024, not 5000",
            ),
            (
                "store { type: redis, cluster: 7 }",
                "expected a string or an array of strings",
            ),
        ] {
            let err = store_of(text).unwrap_err();
            assert!(err.contains(message), "{text}: {err}");
        }
    }

    #[test]
    fn a_redis_cluster_store_names_its_seed_nodes() {
        let (s, warnings) = store_of(
            "store { type: redis, cluster: [\"redis://:pw@a:7000\", \"redis://:pw@b:7001\"], groups: 8, prefix: \"c:\" }",
        )
        .unwrap();
        let want = RedisStore {
            prefix: "c:".into(),
            target: RedisTarget::Cluster {
                seeds: vec!["redis://:pw@a:7000".into(), "redis://:pw@b:7001".into()],
                groups: 8,
            },
            ..RedisStore::cluster(Vec::new())
        };
        assert_eq!(s, StoreConfig::Redis(want));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(!format!("{s:?}").contains("pw"), "{s:?}");
        assert!(!s.describe().contains("pw"), "{}", s.describe());
        // One string with commas (an environment variable) names several nodes; groups default.
        let (s, _) =
            store_of("store { type: redis, cluster: \"redis://a:1, redis://b:2\" }").unwrap();
        let StoreConfig::Redis(r) = s else {
            panic!("not redis")
        };
        assert_eq!(
            r.target,
            RedisTarget::Cluster {
                seeds: vec!["redis://a:1".into(), "redis://b:2".into()],
                groups: DEFAULT_REDIS_CLUSTER_GROUPS,
            }
        );
    }

    #[test]
    fn secrets_can_come_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let url_file = dir.path().join("url");
        std::fs::write(&url_file, "redis://:pw@r:6379/\n").unwrap();
        let key_file = dir.path().join("key");
        std::fs::write(&key_file, "s3cret\n").unwrap();
        let (s, _) = store_of(&format!(
            "store {{ type: redis, urlfile: \"{}\" }}",
            url_file.display()
        ))
        .unwrap();
        assert_eq!(
            s,
            StoreConfig::Redis(RedisStore::new("redis://:pw@r:6379/"))
        );
        let (s, _) = store_of(&format!(
            "store {{ type: s3, bucket: b, secretaccesskeyfile: \"{}\" }}",
            key_file.display()
        ))
        .unwrap();
        let StoreConfig::S3(s3) = s else {
            panic!("{s:?}")
        };
        assert_eq!(s3.secret_access_key.as_deref(), Some("s3cret"));
        let both = format!(
            "store {{ type: redis, url: x, urlfile: \"{}\" }}",
            url_file.display()
        );
        assert!(store_of(&both).unwrap_err().contains("both set"));
        let missing = "store { type: postgres, urlfile: \"/nonexistent/url\" }";
        assert!(store_of(missing).unwrap_err().contains("store.urlfile"));
    }

    #[test]
    fn operator_and_system_account_take_a_jwt_or_a_path() {
        let jwt = "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJzdWIiOiJPIn0.c2ln";
        let (c, _) =
            Config::from_text(&format!("operator: {jwt}\nsystemaccount: /etc/sys.jwt")).unwrap();
        assert_eq!(c.operator_jwt.as_deref(), Some(jwt));
        assert_eq!(c.operator_jwt_path, None);
        assert_eq!(
            c.system_account_jwt_path,
            Some(PathBuf::from("/etc/sys.jwt"))
        );
        let err = Config::from_text("operator: /a.jwt\noperatorjwtpath: /b.jwt")
            .unwrap_err()
            .to_string();
        assert!(err.contains("keep one"), "{err}");
    }

    #[test]
    fn expiry_keys_apply_to_every_backend() {
        let (c, warnings) =
            Config::from_text("store { type: memory, deleteexpired: true, cleanupinterval: 0 }")
                .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(c.expiry.delete_expired);
        assert_eq!(c.expiry.cleanup_interval, Duration::from_secs(60));
    }

    #[test]
    fn the_drift_check_is_off_by_default_and_needs_nats() {
        assert_eq!(Config::default().sync, SyncConfig::default());
        assert_eq!(SyncConfig::default().interval, None);
        let text = "nats { servers: [\"nats://127.0.0.1:4222\"] }\nsync { interval: \"5m\", timeout: 2000 }";
        let (c, warnings) = Config::from_text(text).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(c.sync.interval, Some(Duration::from_secs(300)));
        assert_eq!(c.sync.timeout, Duration::from_secs(2));
        let (c, _) = Config::from_text("nats { servers: [x] }\nsync { interval: 0 }").unwrap();
        assert_eq!(c.sync.interval, None);
        let err = Config::from_text("sync { interval: \"5m\" }")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sync.interval needs a NATS connection"),
            "{err}"
        );
    }
}

#[cfg(test)]
mod redaction_tests {
    use super::*;

    #[test]
    fn debug_of_the_config_shows_no_secret() {
        let mut c = Config {
            store: StoreConfig::Redis(RedisStore::new("redis://:hunter2@127.0.0.1:6379/")),
            ..Config::default()
        };
        c.nats.servers = vec!["nats://u:hunter3@127.0.0.1:4222".into()];
        let s3 = StoreConfig::S3(S3Store {
            secret_access_key: Some("wJalrXUtnFEMI/K7MDENG".into()),
            ..S3Store::new("b")
        });
        let dumped = format!("{c:#?}{s3:?}");
        for secret in ["hunter2", "wJalrXUtnFEMI", "hunter3"] {
            assert!(!dumped.contains(secret), "{secret} in {dumped}");
        }
        assert!(dumped.contains("redis://:***@127.0.0.1:6379/"), "{dumped}");
        assert!(dumped.contains("<redacted>"), "{dumped}");
    }
}
