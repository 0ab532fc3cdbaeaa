//! `store { … }`: which backend keeps the JWTs, each with only its own options.
//!
//! The backend is chosen first (`type`, else `nsc` when that key is present, else a directory,
//! as in the Go server), then only that backend's keys are read. A key of another backend is
//! therefore never silently half-applied: it is left unread and reported by the block's
//! unknown-key warning, which names the chosen backend.

use std::path::PathBuf;
use std::time::Duration;

use super::{set, Block, ConfigError, Reader};

/// The default key prefix of the shared backends.
const DEFAULT_PREFIX: &str = "nas:";
/// The default bound of every shared-backend call: well under nats-server's 1.9 s fetch budget.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(800);

/// `store { … }`: the backend and its options. Invalid combinations (an S3 bucket on a Redis
/// store, a Redis store without a URL) cannot be expressed. Its `Debug` (what `-dump` prints)
/// shows URLs without passwords and never a secret key.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreConfig {
    /// A directory in the Go server's layout (the default, `./data`).
    Dir(DirStore),
    /// In memory (lost on restart).
    Memory,
    /// An nsc operator folder, served read-only.
    Nsc(NscStore),
    /// Redis, shared by several instances.
    Redis(RedisStore),
    /// An S3-compatible bucket, shared by several instances.
    S3(S3Store),
    /// PostgreSQL, shared by several instances.
    Postgres(PostgresStore),
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::Dir(DirStore::new("./data"))
    }
}

impl StoreConfig {
    /// The backend's name as `store.type` spells it.
    pub fn type_name(&self) -> &'static str {
        match self {
            StoreConfig::Dir(_) => "dir",
            StoreConfig::Memory => "memory",
            StoreConfig::Nsc(_) => "nsc",
            StoreConfig::Redis(_) => "redis",
            StoreConfig::S3(_) => "s3",
            StoreConfig::Postgres(_) => "postgres",
        }
    }

    /// One line for the start-up log (no secrets).
    pub fn describe(&self) -> String {
        match self {
            StoreConfig::Memory => "in memory".to_owned(),
            StoreConfig::S3(s) => format!("s3 bucket {} prefix {:?}", s.bucket, s.prefix),
            StoreConfig::Redis(r) => match &r.target {
                RedisTarget::Server(_) => {
                    format!("redis {} prefix {:?}", r.target.redacted(), r.prefix)
                }
                RedisTarget::Cluster { groups, .. } => format!(
                    "redis cluster {} prefix {:?}, {groups} key groups",
                    r.target.redacted(),
                    r.prefix
                ),
            },
            StoreConfig::Dir(d) => format!(
                "{}{}{}",
                d.dir.display(),
                if d.shard { ", sharded" } else { "" },
                if d.read_only { ", read-only" } else { "" }
            ),
            StoreConfig::Nsc(n) => format!("nsc folder {}, read-only", n.folder.display()),
            StoreConfig::Postgres(p) => format!(
                "postgres {} tables {}_*",
                nas_store::redact_dsn(&p.url),
                p.table
            ),
        }
    }
}

/// A directory store.
#[derive(Debug, Clone, PartialEq)]
pub struct DirStore {
    /// The directory.
    pub dir: PathBuf,
    /// Shard by the last two characters of the key.
    pub shard: bool,
    /// Serve without writing (watching the directory for changes made by others).
    pub read_only: bool,
}

impl DirStore {
    /// A writable, unsharded directory store at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> DirStore {
        DirStore {
            dir: dir.into(),
            shard: false,
            read_only: false,
        }
    }
}

/// An nsc store.
#[derive(Debug, Clone, PartialEq)]
pub struct NscStore {
    /// The nsc operator folder (`~/.nsc/nats/<operator>`).
    pub folder: PathBuf,
}

/// Client TLS files of a shared backend (`store { tls { ca, cert, key } }`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreTls {
    /// CA certificate (PEM) the server's certificate must chain to (default: the system's
    /// roots).
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM), for servers that ask for one.
    pub cert: Option<PathBuf>,
    /// Key of `cert` (PEM).
    pub key: Option<PathBuf>,
}

/// The key groups of a Redis Cluster store unless `store { groups }` says otherwise.
pub const DEFAULT_REDIS_CLUSTER_GROUPS: u16 = nas_store::REDIS_CLUSTER_GROUPS;
/// The most key groups a Redis Cluster store may have.
pub const MAX_REDIS_CLUSTER_GROUPS: u16 = nas_store::REDIS_CLUSTER_MAX_GROUPS;

/// Where a Redis store lives: one server (`url`) or a Redis Cluster (`cluster`).
#[derive(Clone, PartialEq)]
pub enum RedisTarget {
    /// One server: `redis://`, `rediss://` (TLS) or `unix://`.
    Server(String),
    /// A Redis Cluster: seed node URLs (any of the nodes; the rest is discovered).
    Cluster {
        /// Seed nodes, `redis://` or `rediss://`.
        seeds: Vec<String>,
        /// Key groups the accounts are spread over (fixed for the store's life).
        groups: u16,
    },
}

impl RedisTarget {
    /// The URL(s) with passwords redacted, several separated by commas.
    pub fn redacted(&self) -> String {
        match self {
            RedisTarget::Server(url) => nas_store::redact_url(url),
            RedisTarget::Cluster { seeds, .. } => nas_store::redact_url(&seeds.join(",")),
        }
    }
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisTarget::Server(_) => f.debug_tuple("Server").field(&self.redacted()).finish(),
            RedisTarget::Cluster { groups, .. } => f
                .debug_struct("Cluster")
                .field("seeds", &self.redacted())
                .field("groups", groups)
                .finish(),
        }
    }
}

/// A Redis store. `Debug` redacts the password in the URL.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisStore {
    /// One server or a cluster.
    pub target: RedisTarget,
    /// Client TLS for `rediss://`.
    pub tls: StoreTls,
    /// Key prefix.
    pub prefix: String,
    /// Bound of every call.
    pub timeout: Duration,
}

impl RedisStore {
    /// A Redis store on the server at `url` with the default prefix and timeout.
    pub fn new(url: impl Into<String>) -> RedisStore {
        Self::on(RedisTarget::Server(url.into()))
    }

    /// A Redis Cluster store with these seed nodes, the default groups, prefix and timeout.
    pub fn cluster(seeds: Vec<String>) -> RedisStore {
        Self::on(RedisTarget::Cluster {
            seeds,
            groups: DEFAULT_REDIS_CLUSTER_GROUPS,
        })
    }

    fn on(target: RedisTarget) -> RedisStore {
        RedisStore {
            target,
            tls: StoreTls::default(),
            prefix: DEFAULT_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// An S3-compatible store. `Debug` never shows the secret access key.
#[derive(Clone, PartialEq)]
pub struct S3Store {
    /// The bucket (must exist).
    pub bucket: String,
    /// Key prefix.
    pub prefix: String,
    /// Region.
    pub region: Option<String>,
    /// S3-compatible endpoint URL (default: AWS).
    pub endpoint: Option<String>,
    /// Path-style requests.
    pub path_style: bool,
    /// Allow a plain-HTTP endpoint.
    pub allow_http: bool,
    /// Access key id (else `AWS_ACCESS_KEY_ID`).
    pub access_key_id: Option<String>,
    /// Secret access key (else `AWS_SECRET_ACCESS_KEY`).
    pub secret_access_key: Option<String>,
    /// Bound of every call.
    pub timeout: Duration,
}

impl S3Store {
    /// An S3 store on `bucket` with the default prefix and timeout, credentials from the
    /// environment.
    pub fn new(bucket: impl Into<String>) -> S3Store {
        S3Store {
            bucket: bucket.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            region: None,
            endpoint: None,
            path_style: false,
            allow_http: false,
            access_key_id: None,
            secret_access_key: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("path_style", &self.path_style)
            .field("allow_http", &self.allow_http)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A PostgreSQL store. `Debug` redacts the password in the URL.
#[derive(Clone, PartialEq)]
pub struct PostgresStore {
    /// `postgres://user:password@host:port/database` (or the `key=value` form).
    pub url: String,
    /// Prefix of the table names (`<table>_entries`, …).
    pub table: String,
    /// Most pooled connections (the change listener holds one more).
    pub pool: usize,
    /// Bound of every call, the wait for a pooled connection included.
    pub timeout: Duration,
    /// Client TLS; without `ca` the connection is not encrypted.
    pub tls: StoreTls,
}

impl PostgresStore {
    /// A PostgreSQL store at `url` with the default tables, pool and timeout.
    pub fn new(url: impl Into<String>) -> PostgresStore {
        PostgresStore {
            url: url.into(),
            table: "nas".to_owned(),
            pool: 8,
            timeout: DEFAULT_TIMEOUT,
            tls: StoreTls::default(),
        }
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &nas_store::redact_dsn(&self.url))
            .field("table", &self.table)
            .field("pool", &self.pool)
            .field("timeout", &self.timeout)
            .field("tls", &self.tls)
            .finish()
    }
}

/// `store { deleteexpired, cleanupinterval }`: what happens to expired JWTs (every backend).
#[derive(Debug, Clone, PartialEq)]
pub struct ExpiryConfig {
    /// Delete expired JWTs from the store (off by default: nothing is deleted silently).
    pub delete_expired: bool,
    /// How often expired JWTs are looked for (Go: `cleanupinterval`, ms; 0 = 1 minute).
    pub cleanup_interval: Duration,
}

impl Default for ExpiryConfig {
    fn default() -> Self {
        ExpiryConfig {
            delete_expired: false,
            cleanup_interval: Duration::from_secs(60),
        }
    }
}

/// Reads a `store { … }` block: the backend, then the expiry keys every backend shares.
pub(super) fn read(m: &Block<'_>) -> Result<(StoreConfig, ExpiryConfig), ConfigError> {
    let mut expiry = ExpiryConfig::default();
    set(
        &mut expiry.delete_expired,
        Reader::boolean(m, "deleteexpired")?,
    );
    if let Some(d) = Reader::millis(m, "cleanupinterval")? {
        expiry.cleanup_interval = if d.is_zero() {
            Duration::from_secs(60)
        } else {
            d
        };
    }
    let store = match chosen_type(m)?.as_str() {
        "dir" | "directory" => StoreConfig::Dir(read_dir(m)?),
        "memory" | "mem" => StoreConfig::Memory,
        "nsc" => StoreConfig::Nsc(NscStore {
            folder: Reader::path(m, "nsc")?.ok_or_else(|| {
                ConfigError::Invalid(
                    "store type nsc needs store.nsc (the nsc operator folder)".into(),
                )
            })?,
        }),
        "redis" => StoreConfig::Redis(read_redis(m)?),
        "s3" => StoreConfig::S3(read_s3(m)?),
        "postgres" | "postgresql" => StoreConfig::Postgres(read_postgres(m)?),
        other => {
            let v = m.get("type").expect("the type key was read");
            return Err(Reader::err(
                "store.type",
                v,
                &format!("unknown store type {other:?} (expected dir, memory, nsc, redis, s3 or postgres)"),
            ));
        }
    };
    m.set_unread_hint(format!("not an option of a {} store", store.type_name()));
    Ok((store, expiry))
}

/// `type`, else `nsc` when the block names an nsc folder (the Go server's way), else `dir`.
fn chosen_type(m: &Block<'_>) -> Result<String, ConfigError> {
    if let Some(kind) = Reader::string(m, "type")? {
        return Ok(kind.to_ascii_lowercase());
    }
    Ok(if m.has("nsc") { "nsc" } else { "dir" }.to_owned())
}

fn read_dir(m: &Block<'_>) -> Result<DirStore, ConfigError> {
    let mut d = DirStore::new("./data");
    if let Some(dir) = Reader::string(m, "dir")? {
        if dir.is_empty() {
            return Err(ConfigError::Invalid("store directory is required".into()));
        }
        d.dir = PathBuf::from(dir);
    }
    set(&mut d.shard, Reader::boolean(m, "shard")?);
    set(&mut d.read_only, Reader::boolean(m, "readonly")?);
    Ok(d)
}

fn read_tls(m: &Block<'_>) -> Result<StoreTls, ConfigError> {
    let Some(ref tls) = Reader::block(m, "tls")? else {
        return Ok(StoreTls::default());
    };
    let files = StoreTls {
        ca: Reader::path(tls, "ca")?,
        cert: Reader::path(tls, "cert")?,
        key: Reader::path(tls, "key")?,
    };
    if files.cert.is_some() != files.key.is_some() {
        return Err(ConfigError::Invalid(
            "store.tls needs both cert and key for a client certificate".into(),
        ));
    }
    Ok(files)
}

/// `key`, or the contents of the file `<key>file` names (a Kubernetes Secret mounted as a
/// file; trailing whitespace dropped). Naming both is an error.
fn secret(m: &Block<'_>, key: &str) -> Result<Option<String>, ConfigError> {
    let direct = Reader::string(m, key)?.filter(|v| !v.is_empty());
    let file_key = format!("{key}file");
    let Some(path) = Reader::path(m, &file_key)? else {
        return Ok(direct);
    };
    if direct.is_some() {
        return Err(ConfigError::Invalid(format!(
            "store.{key} and store.{file_key} both set: keep one"
        )));
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ConfigError::Invalid(format!("store.{file_key} {}: {e}", path.display())))?;
    Ok(Some(text.trim_end().to_owned()).filter(|v| !v.is_empty()))
}

fn read_redis(m: &Block<'_>) -> Result<RedisStore, ConfigError> {
    let mut r = RedisStore::on(read_redis_target(m)?);
    r.tls = read_tls(m)?;
    set(&mut r.prefix, Reader::string(m, "prefix")?);
    set(&mut r.timeout, Reader::millis(m, "timeout")?);
    Ok(r)
}

/// `url` (one server) or `cluster` (seed nodes, with `groups`): exactly one of them.
fn read_redis_target(m: &Block<'_>) -> Result<RedisTarget, ConfigError> {
    let url = secret(m, "url")?;
    let seeds = Reader::strings(m, "cluster")?;
    let groups = Reader::int(m, "groups")?;
    match (url, seeds) {
        (Some(_), Some(_)) => Err(ConfigError::Invalid(
            "store.url and store.cluster both set: a redis store is one server or one cluster"
                .into(),
        )),
        (Some(url), None) => match groups {
            Some(_) => Err(ConfigError::Invalid(
                "store.groups applies to a redis cluster (store.cluster) only".into(),
            )),
            None => Ok(RedisTarget::Server(url)),
        },
        (None, Some(seeds)) => {
            // One string may hold several URLs separated by commas (`cluster: $NAS_REDIS_NODES`).
            let seeds: Vec<String> = seeds
                .iter()
                .flat_map(|s| s.split(','))
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
            if seeds.is_empty() {
                return Err(ConfigError::Invalid(
                    "store.cluster needs at least one node URL (redis://host:7000)".into(),
                ));
            }
            let groups = match groups {
                None => DEFAULT_REDIS_CLUSTER_GROUPS,
                Some(n) => u16::try_from(n)
                    .ok()
                    .filter(|n| (1..=MAX_REDIS_CLUSTER_GROUPS).contains(n))
                    .ok_or_else(|| {
                        ConfigError::Invalid(format!(
                            "store.groups must be 1 to {MAX_REDIS_CLUSTER_GROUPS}, not {n}"
                        ))
                    })?,
            };
            Ok(RedisTarget::Cluster { seeds, groups })
        }
        (None, None) => Err(ConfigError::Invalid(
            "store type redis needs store.url (redis://host:6379/) or store.cluster \
             ([\"redis://host:7000\", …])"
                .into(),
        )),
    }
}

fn read_s3(m: &Block<'_>) -> Result<S3Store, ConfigError> {
    let non_empty = |key: &str| -> Result<Option<String>, ConfigError> {
        Ok(Reader::string(m, key)?.filter(|v| !v.is_empty()))
    };
    let bucket = non_empty("bucket")?
        .ok_or_else(|| ConfigError::Invalid("store type s3 needs store.bucket".into()))?;
    let mut s = S3Store::new(bucket);
    set(&mut s.prefix, Reader::string(m, "prefix")?);
    set(&mut s.timeout, Reader::millis(m, "timeout")?);
    s.region = non_empty("region")?;
    s.endpoint = non_empty("endpoint")?;
    set(&mut s.path_style, Reader::boolean(m, "pathstyle")?);
    set(&mut s.allow_http, Reader::boolean(m, "allowhttp")?);
    s.access_key_id = non_empty("accesskeyid")?;
    s.secret_access_key = secret(m, "secretaccesskey")?;
    Ok(s)
}

fn read_postgres(m: &Block<'_>) -> Result<PostgresStore, ConfigError> {
    let url = secret(m, "url")?.ok_or_else(|| {
        ConfigError::Invalid(
            "store type postgres needs store.url (postgres://user@host:5432/db)".into(),
        )
    })?;
    let mut p = PostgresStore::new(url);
    set(&mut p.table, Reader::string(m, "table")?);
    if let Some(n) = Reader::int(m, "pool")? {
        p.pool = usize::try_from(n).unwrap_or(1).max(1);
    }
    set(&mut p.timeout, Reader::millis(m, "timeout")?);
    p.tls = read_tls(m)?;
    if p.tls.ca.is_none() && p.tls.cert.is_some() {
        return Err(ConfigError::Invalid(
            "store.tls for postgres needs ca (the CA the server's certificate chains to)".into(),
        ));
    }
    Ok(p)
}
