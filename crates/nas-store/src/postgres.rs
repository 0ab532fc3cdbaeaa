//! PostgreSQL backend, for several account-server instances sharing one store.
//!
//! Layout (every name starts with the configured table prefix `<t>`, default `nas`, so several
//! deployments can share one database):
//!
//! * `<t>_entries (ns, key, jwt bytea, iat, jti, exp, version, updated_at)`, primary key
//!   `(ns, key)`: one row per stored value of any namespace (`accounts`, `activations`,
//!   `tombstones`). `version` comes from the sequence `<t>_version`, so every write gets a new
//!   one (the compare-and-swap token). `iat`/`jti`/`exp` are read from the JWT for people
//!   querying the table; bytes that are not a JWT are stored anyway with `0`/`''` (the backend
//!   never refuses bytes: [`Store`](crate::Store) validates).
//! * `<t>_packhash`: one row, the PACK hash (XOR of SHA-256 of every account JWT), kept in the
//!   same transaction as each account write, so every instance reads one agreed value — the
//!   same bookkeeping as the Redis backend's write script (remove the old value's digest, add
//!   the new one's). Account writes lock this row first, which serializes them across the
//!   deployment (a handful of round trips each; account writes are rare) and keeps the digest
//!   of the replaced value exact; other namespaces are one statement each, without it.
//! * `<t>_schema`: one row, the schema version. [`PostgresBackend::open`] creates or migrates
//!   the schema inside a transaction holding an advisory lock, so instances starting together
//!   do not race; a role without DDL rights can use tables created beforehand.
//!
//! The backend's job is the atomic compare-and-swap only: the newer-wins rule is decided once,
//! above every backend, by [`Store`](crate::Store), and is not repeated in SQL.
//!
//! Every account write and delete also calls
//! `pg_notify('<t>_changes', '<instance> <key> <version | deleted>')` in
//! its transaction (PostgreSQL delivers it on commit, so a listener that reads on hearing it
//! sees the change; the payload never holds the JWT). A dedicated connection, outside the pool,
//! `LISTEN`s and forwards other instances' keys to [`Backend::external_changes`]; it drops its
//! own instance's, as the Redis backend does. After it reconnects (the database restarted, the
//! session was terminated) it sends [`EXTERNAL_RESYNC`]: notifications are not queued for a
//! session that is gone.
//!
//! Every call is bounded by the configured timeout (well under nats-server's 1.9 s fetch
//! budget), pool wait included; a database that is down or slow gives
//! [`StoreError::Unavailable`]. Pooled connections are checked before reuse, so the pool
//! recovers by itself after a database restart.
//!
//! Needs PostgreSQL 11 or later (`sha256()` in SQL). Tables are created in the first schema of
//! the role's `search_path` (set another with `options=-c search_path=…` in the URL; the URL's
//! `options` then replace the default server-side `statement_timeout`, set to the timeout).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{AsyncMessage, Socket};

use crate::{
    Backend, Cause, Namespace, Precondition, StoreError, TokenMeta, Version, EXTERNAL_RESYNC,
};

/// PEM files for TLS connections (`sslmode=require` or `verify-full` in the URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificate(s) the server's certificate must chain to.
    pub ca: PathBuf,
    /// Client certificate, for servers that require one (`clientcert=verify-full`); given
    /// together with `key`.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key.
    pub key: Option<PathBuf>,
}

/// How to reach PostgreSQL.
#[derive(Clone)]
pub struct PostgresOptions {
    /// `postgres://user:password@host:port/database?sslmode=…` (or the `key=value` form).
    /// Shown only with the password redacted.
    pub url: String,
    /// Prefix of the table names (`<table>_entries`, …): lowercase letters, digits and `_`,
    /// starting with a letter or `_`, at most 40 characters.
    pub table: String,
    /// Most pooled connections (the change listener has one more of its own).
    pub pool: usize,
    /// Bound of every operation, waiting for a pooled connection included.
    pub timeout: Duration,
    /// TLS material; `None` connects without TLS (a URL asking for TLS then fails to connect).
    pub tls: Option<TlsFiles>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            url: "postgres://127.0.0.1:5432/postgres".into(),
            table: "nas".into(),
            pool: 8,
            timeout: Duration::from_millis(1500),
            tls: None,
        }
    }
}

/// Shows the URL with its password replaced by `***`.
impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &crate::redact_dsn(&self.url))
            .field("table", &self.table)
            .field("pool", &self.pool)
            .field("timeout", &self.timeout)
            .field("tls", &self.tls)
            .finish()
    }
}

/// The schema steps, in order: step `i` takes the schema from version `i` to `i + 1`. `{p}`
/// is the table prefix. Later versions append steps; a step never changes once released.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE IF NOT EXISTS "{p}_schema" (
    id smallint PRIMARY KEY CHECK (id = 1),
    version integer NOT NULL
);
CREATE SEQUENCE IF NOT EXISTS "{p}_version";
CREATE TABLE IF NOT EXISTS "{p}_entries" (
    ns text NOT NULL CHECK (ns IN ('accounts', 'activations', 'tombstones')),
    key text NOT NULL,
    jwt bytea NOT NULL,
    iat bigint NOT NULL DEFAULT 0,
    jti text NOT NULL DEFAULT '',
    exp bigint NOT NULL DEFAULT 0,
    version bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ns, key)
);
CREATE TABLE IF NOT EXISTS "{p}_packhash" (
    id smallint PRIMARY KEY CHECK (id = 1),
    hash bytea NOT NULL CHECK (length(hash) = 32)
);
INSERT INTO "{p}_packhash" (id, hash) VALUES (1, decode(repeat('00', 32), 'hex'))
    ON CONFLICT (id) DO NOTHING;
"#];

/// The schema version this code writes (and the newest it understands).
const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Longest table prefix: the longest derived name (`<t>_packhash`) stays well under
/// PostgreSQL's 63-byte identifiers.
const MAX_PREFIX: usize = 40;

/// How often the listener checks that its session is alive: a connection that died without a
/// reset (a network partition) would otherwise wait silently forever.
const LISTENER_PING: Duration = Duration::from_secs(5);
/// First and longest wait before the listener reconnects.
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The statements, built once for the table prefix (identifiers cannot be parameters).
#[derive(Debug)]
struct Sql {
    prefix: String,
    channel: String,
    get: String,
    list: String,
    insert: String,
    update: String,
    upsert: String,
    delete: String,
    lock_hash: String,
    set_hash: String,
    read_hash: String,
}

impl Sql {
    fn new(prefix: &str) -> Sql {
        let entries = format!("\"{prefix}_entries\"");
        let packhash = format!("\"{prefix}_packhash\"");
        let next = format!("nextval('\"{prefix}_version\"')");
        let columns = "(ns, key, jwt, iat, jti, exp, version)";
        let values = format!("($1, $2, $3, $4, $5, $6, {next})");
        Sql {
            prefix: prefix.to_owned(),
            channel: format!("{prefix}_changes"),
            get: format!("SELECT jwt, version FROM {entries} WHERE ns = $1 AND key = $2"),
            list: format!("SELECT key FROM {entries} WHERE ns = $1"),
            insert: format!(
                "INSERT INTO {entries} {columns} VALUES {values} \
                 ON CONFLICT (ns, key) DO NOTHING RETURNING version"
            ),
            update: format!(
                "UPDATE {entries} SET jwt = $3, iat = $4, jti = $5, exp = $6, version = {next}, \
                 updated_at = now() WHERE ns = $1 AND key = $2 AND version = $7 RETURNING version"
            ),
            upsert: format!(
                "INSERT INTO {entries} {columns} VALUES {values} ON CONFLICT (ns, key) DO UPDATE \
                 SET jwt = EXCLUDED.jwt, iat = EXCLUDED.iat, jti = EXCLUDED.jti, \
                 exp = EXCLUDED.exp, version = EXCLUDED.version, updated_at = now() \
                 RETURNING version"
            ),
            // $3: the expected version, or NULL for an unconditional delete.
            delete: format!(
                "DELETE FROM {entries} WHERE ns = $1 AND key = $2 \
                 AND ($3::bigint IS NULL OR version = $3)"
            ),
            // Locking the one hash row serializes the account writers of the deployment, so
            // the digest of the old value read here is still the stored one when the write
            // runs (entry rows are only locked after it: one lock order, no deadlock).
            lock_hash: format!(
                "SELECT p.hash, sha256(e.jwt) FROM {packhash} p LEFT JOIN {entries} e \
                 ON e.ns = 'accounts' AND e.key = $1 WHERE p.id = 1 FOR UPDATE OF p"
            ),
            set_hash: format!("UPDATE {packhash} SET hash = $1 WHERE id = 1"),
            read_hash: format!("SELECT hash FROM {packhash} WHERE id = 1"),
        }
    }

    /// The statements of the schema steps after `from`.
    fn migrations(&self, from: i32) -> String {
        let mut script: String = MIGRATIONS
            .iter()
            .skip(usize::try_from(from).unwrap_or(0))
            .map(|step| step.replace("{p}", &self.prefix))
            .collect();
        script.push_str(&format!(
            "INSERT INTO \"{p}_schema\" (id, version) VALUES (1, {SCHEMA_VERSION}) \
             ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version;",
            p = self.prefix
        ));
        script
    }
}

/// Why a statement sequence stopped: a database error, or a precondition that did not hold.
enum Failure {
    Db(tokio_postgres::Error),
    Conflict,
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Failure {
        Failure::Db(e)
    }
}

/// `context` with what the driver's error shows only as its source: the server's own message
/// (the error itself says "db error") or the cause of a failed connection (a refused
/// certificate, a refused TCP connection).
fn with_server_message(context: String, e: &tokio_postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{context} ({cause})"),
        None => context,
    }
}

/// A failed database call, its error kept as the source.
fn unavailable(context: &str, e: tokio_postgres::Error) -> StoreError {
    let context = with_server_message(format!("postgres: {context}"), &e);
    StoreError::Unavailable(Cause::of(&context, e))
}

/// The database did not answer within the bound.
fn no_answer(context: &str, bound: Duration) -> StoreError {
    StoreError::Unavailable(Cause::new(format!(
        "postgres: {context}: no answer within {bound:?}"
    )))
}

/// A pool failure: the connection error itself when there is one.
fn pool_error(e: deadpool_postgres::PoolError, bound: Duration) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => unavailable("cannot connect", e),
        deadpool_postgres::PoolError::Timeout(_) => no_answer("no pooled connection", bound),
        other => StoreError::Unavailable(Cause::of("postgres: connection pool", other)),
    }
}

/// A dedicated (unpooled) connection whose notifications arrive on the receiver.
type Listening = (tokio_postgres::Client, mpsc::Receiver<AsyncMessage>);
/// Opens a [`Listening`] connection (generic over the TLS connector, which is chosen once).
type Connector =
    Arc<dyn Fn() -> BoxFuture<'static, Result<Listening, tokio_postgres::Error>> + Send + Sync>;

/// The PostgreSQL backend.
pub struct PostgresBackend {
    pool: Pool,
    sql: Arc<Sql>,
    timeout: Duration,
    /// Marks this instance's own notifications, which the listener drops.
    instance: String,
    changes: broadcast::Sender<String>,
    /// The listener runs while this lives (dropping it ends the listener and its session).
    _listener: oneshot::Sender<()>,
}

impl std::fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBackend")
            .field("table", &self.sql.prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Table prefixes are spliced into SQL as identifiers, so only plain names are accepted.
fn check_prefix(prefix: &str) -> Result<(), StoreError> {
    let mut chars = prefix.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if first_ok && rest_ok && prefix.len() <= MAX_PREFIX {
        Ok(())
    } else {
        Err(StoreError::Config(Cause::new(format!(
            "postgres table prefix {prefix:?} must be 1 to {MAX_PREFIX} lowercase letters, \
             digits or '_', not starting with a digit"
        ))))
    }
}

/// The URL parsed, with our defaults where it sets none: connect timeout, a server-side
/// statement timeout (so abandoned work stops on the server too) and an application name.
fn pg_config(options: &PostgresOptions) -> Result<tokio_postgres::Config, StoreError> {
    let mut config: tokio_postgres::Config = options.url.parse().map_err(|e| {
        let context = format!("invalid postgres URL {}", crate::redact_dsn(&options.url));
        StoreError::Config(Cause::of(&context, e))
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(options.timeout);
    }
    if config.get_options().is_none() {
        config.options(format!(
            "-c statement_timeout={}",
            options.timeout.as_millis().max(1)
        ));
    }
    if config.get_application_name().is_none() {
        config.application_name(format!("nas-store {}", options.table));
    }
    Ok(config)
}

/// The rustls client configuration for `files` (ring provider, as the rest of the workspace).
fn tls_config(files: &TlsFiles) -> Result<rustls::ClientConfig, StoreError> {
    let read = |path: &PathBuf| {
        std::fs::read(path)
            .map_err(|e| StoreError::io(format_args!("cannot read {}", path.display()), e))
    };
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        StoreError::Config(Cause::new(format!("{what}: {e}")))
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut read(&files.ca)?.as_slice()) {
        let cert = cert.map_err(|e| bad("postgres TLS CA file", &e))?;
        roots
            .add(cert)
            .map_err(|e| bad("postgres TLS CA certificate", &e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("postgres TLS", &e))?
        .with_root_certificates(roots);
    match (&files.cert, &files.key) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            let chain = rustls_pemfile::certs(&mut read(cert)?.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad("postgres TLS client certificate", &e))?;
            let key = rustls_pemfile::private_key(&mut read(key)?.as_slice())
                .map_err(|e| bad("postgres TLS client key", &e))?
                .ok_or_else(|| {
                    StoreError::Config(Cause::new("postgres TLS client key: no key found"))
                })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| bad("postgres TLS client certificate", &e))
        }
        _ => Err(StoreError::Config(Cause::new(
            "postgres TLS: a client certificate needs its key, and a key its certificate",
        ))),
    }
}

/// The pool and the listener's connector over one TLS connector type.
fn connect_with<T>(
    config: tokio_postgres::Config,
    tls: T,
    options: &PostgresOptions,
) -> Result<(Pool, Connector), StoreError>
where
    T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let manager = Manager::from_config(
        config.clone(),
        tls.clone(),
        ManagerConfig {
            // A connection is tried before reuse: after a database restart, pooled sessions
            // are dead and are replaced instead of failing the next call.
            recycling_method: RecyclingMethod::Verified,
        },
    );
    let bound = Some(options.timeout);
    let pool = Pool::builder(manager)
        .max_size(options.pool.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(bound)
        .create_timeout(bound)
        .recycle_timeout(bound)
        .build()
        .map_err(|e| StoreError::Config(Cause::of("postgres pool", e)))?;
    let connector = listener_connector(config, tls);
    Ok((pool, connector))
}

/// Opens the listener's sessions: the pool's settings, under a name of its own (for people,
/// and tests, looking at `pg_stat_activity`).
fn listener_connector<T>(mut config: tokio_postgres::Config, tls: T) -> Connector
where
    T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let name = format!(
        "{} listener",
        config.get_application_name().unwrap_or("nas-store")
    );
    config.application_name(name);
    Arc::new(move || {
        let (config, tls) = (config.clone(), tls.clone());
        Box::pin(async move {
            let (client, mut connection) = config.connect(tls).await?;
            let (tx, rx) = mpsc::channel(1024);
            // Drives the session; ends when it closes or the listener drops the receiver.
            tokio::spawn(async move {
                let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(Ok(message)) = messages.next().await {
                    if tx.send(message).await.is_err() {
                        return;
                    }
                }
            });
            Ok((client, rx))
        })
    })
}

/// A random id for this backend instance (in its notifications).
fn instance_id(changes: &broadcast::Sender<String>) -> String {
    let seed = format!(
        "{:?}{}{:p}",
        std::time::SystemTime::now(),
        std::process::id(),
        changes
    );
    data_encoding::HEXLOWER.encode(&Sha256::digest(seed)[..8])
}

/// The advisory-lock key of a prefix's schema: the same for every instance of a deployment.
fn schema_lock_key(prefix: &str) -> i64 {
    let digest = Sha256::digest(format!("nas-store schema {prefix}"));
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// `iat`, `jti`, `exp` of the bytes, or `0`, `''`, `0` when they are not a JWT.
fn columns_of(value: &[u8]) -> (i64, String, i64) {
    match TokenMeta::read(value) {
        Ok(meta) => (meta.iat, meta.jti, meta.exp),
        Err(_) => (0, String::new(), 0),
    }
}

fn xor_into(total: &mut [u8; 32], digest: &[u8]) {
    for (a, b) in total.iter_mut().zip(digest) {
        *a ^= b;
    }
}

/// A stored hash as 32 bytes (the table's check constraint keeps it so; anything else is
/// taken as the empty store's).
fn hash_of(raw: &[u8]) -> [u8; 32] {
    <[u8; 32]>::try_from(raw).unwrap_or([0u8; 32])
}

impl PostgresBackend {
    /// Connects, creates or migrates the schema (failing with a message naming the missing
    /// right when the role may not), and starts the change listener (waiting for it up to the
    /// timeout, so a change made right after `open` returns is heard).
    pub async fn open(options: PostgresOptions) -> Result<PostgresBackend, StoreError> {
        check_prefix(&options.table)?;
        let config = pg_config(&options)?;
        let (pool, connector) = match &options.tls {
            None => connect_with(config, tokio_postgres::NoTls, &options)?,
            Some(files) => connect_with(
                config,
                tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(files)?),
                &options,
            )?,
        };
        let sql = Arc::new(Sql::new(&options.table));
        let (changes, _) = broadcast::channel(4096);
        let (stop, stopped) = oneshot::channel();
        let backend = PostgresBackend {
            pool,
            sql,
            timeout: options.timeout,
            instance: instance_id(&changes),
            changes,
            _listener: stop,
        };
        backend.migrate().await?;
        let (ready_tx, ready_rx) = oneshot::channel();
        let listener = Listener {
            connector,
            sql: backend.sql.clone(),
            own: backend.instance.clone(),
            tx: backend.changes.clone(),
            timeout: backend.timeout,
        };
        tokio::spawn(listener.run(stopped, ready_tx));
        // Not listening in time is not fatal: the listener keeps trying and asks for a full
        // re-read once it listens.
        if tokio::time::timeout(backend.timeout * 2, ready_rx)
            .await
            .is_err()
        {
            tracing::warn!(
                "postgres change listener not connected yet; other instances' writes are picked up once it is"
            );
        }
        Ok(backend)
    }

    /// A pooled connection, waiting at most until `deadline`.
    async fn client(&self, deadline: Instant) -> Result<Object, StoreError> {
        match tokio::time::timeout_at(deadline, self.pool.get()).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(pool_error(e, self.timeout)),
            Err(_) => Err(no_answer("no connection", self.timeout)),
        }
    }

    /// Runs `work` on a pooled connection within the timeout. A connection whose call timed out
    /// is discarded, not pooled again: it may still be busy with (or blocked in) that call.
    async fn run<T>(
        &self,
        what: &str,
        work: impl for<'c> FnOnce(&'c mut Object) -> BoxFuture<'c, Result<T, Failure>>,
    ) -> Result<T, StoreError> {
        let deadline = Instant::now() + self.timeout;
        let mut client = self.client(deadline).await?;
        let outcome = tokio::time::timeout_at(deadline, work(&mut client)).await;
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(Failure::Conflict)) => Err(StoreError::Conflict),
            Ok(Err(Failure::Db(e))) => Err(unavailable(what, e)),
            Err(_) => {
                drop(Object::take(client));
                Err(no_answer(what, self.timeout))
            }
        }
    }
}

/// The role and schema the schema step runs as and in, for messages.
struct Who {
    role: String,
    schema: String,
}

/// A right the role needs for a step of [`PostgresBackend::migrate`], and how to grant it.
struct Right {
    what: String,
    grant: String,
}

impl Right {
    fn create(who: &Who) -> Right {
        Right {
            what: format!("CREATE privilege on schema {:?}", who.schema),
            grant: format!("GRANT CREATE ON SCHEMA {:?} TO {:?}", who.schema, who.role),
        }
    }

    fn select(table: &str, who: &Who) -> Right {
        Right {
            what: format!("SELECT privilege on table {table}"),
            grant: format!("GRANT SELECT ON {table} TO {:?}", who.role),
        }
    }
}

/// A failed schema step: a missing right is named, with the statement that grants it (decided
/// by SQLSTATE 42501, never by the message text, which depends on the server's language).
fn schema_error(right: &Right, who: &Who, e: tokio_postgres::Error) -> StoreError {
    if e.code() != Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
        return unavailable("schema", e);
    }
    let message = format!(
        "postgres: role {:?} lacks the {} needed to create or migrate the tables ({}), or \
         create them once with a role that has it",
        who.role, right.what, right.grant
    );
    StoreError::Unavailable(Cause::of(&with_server_message(message, &e), e))
}

impl PostgresBackend {
    /// Creates or migrates the schema, once per deployment even when instances start together
    /// (a transaction-scoped advisory lock; `IF NOT EXISTS` alone races in the catalog). A
    /// schema that is already current needs no DDL right, only `SELECT` on `<t>_schema`.
    async fn migrate(&self) -> Result<(), StoreError> {
        // Start-up, not a request: instances starting together queue on the schema lock, and a
        // loaded database may be slow to answer the first time. Requests keep `timeout`.
        let bound = (self.timeout * 4).max(Duration::from_secs(10));
        let deadline = Instant::now() + bound;
        let mut client = self.client(deadline).await?;
        let sql = self.sql.clone();
        let work = async {
            let row = client
                .query_one(
                    "SELECT current_user::text, coalesce(current_schema()::text, '')",
                    &[],
                )
                .await
                .map_err(|e| unavailable("schema", e))?;
            let who = Who {
                role: row.get(0),
                schema: row.get(1),
            };
            let tx = client
                .transaction()
                .await
                .map_err(|e| unavailable("schema", e))?;
            tx.execute(
                "SELECT pg_advisory_xact_lock($1)",
                &[&schema_lock_key(&sql.prefix)],
            )
            .await
            .map_err(|e| unavailable("schema lock", e))?;
            let version = schema_version(&tx, &sql.prefix, &who).await?;
            if version > SCHEMA_VERSION {
                return Err(StoreError::Config(Cause::new(format!(
                    "postgres: the tables {}_* have schema version {version}, newer than this \
                     server's {SCHEMA_VERSION}: upgrade the server",
                    sql.prefix
                ))));
            }
            if version < SCHEMA_VERSION {
                tx.batch_execute(&sql.migrations(version))
                    .await
                    .map_err(|e| schema_error(&Right::create(&who), &who, e))?;
            }
            tx.commit().await.map_err(|e| unavailable("schema", e))
        };
        match tokio::time::timeout_at(deadline, work).await {
            Ok(result) => result,
            Err(_) => {
                drop(Object::take(client));
                Err(no_answer("schema", bound))
            }
        }
    }
}

/// The stored schema version, 0 when the tables do not exist yet.
async fn schema_version(
    tx: &deadpool_postgres::Transaction<'_>,
    prefix: &str,
    who: &Who,
) -> Result<i32, StoreError> {
    let table = format!("\"{prefix}_schema\"");
    let exists: bool = tx
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await
        .map_err(|e| unavailable("schema", e))?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let row = tx
        .query_opt(&format!("SELECT version FROM {table} WHERE id = 1"), &[])
        .await
        .map_err(|e| schema_error(&Right::select(&table, who), who, e))?;
    Ok(row.map_or(0, |r| r.get(0)))
}

/// The SQL and expected version of a precondition (`None`: it can never hold).
fn statement_for<'s>(sql: &'s Sql, pre: &Precondition) -> Option<(&'s str, Option<i64>)> {
    match pre {
        Precondition::Any => Some((&sql.upsert, None)),
        Precondition::Absent => Some((&sql.insert, None)),
        // Versions are numbers we handed out; anything else matches nothing.
        Precondition::Matches(v) => v.0.parse().ok().map(|v| (sql.update.as_str(), Some(v))),
    }
}

/// One value to write, with the columns read from it.
struct Row {
    ns: &'static str,
    key: String,
    value: Bytes,
    iat: i64,
    jti: String,
    exp: i64,
}

impl Row {
    fn new(ns: Namespace, key: &str, value: Bytes) -> Row {
        let (iat, jti, exp) = columns_of(&value);
        Row {
            ns: ns.name(),
            key: key.to_owned(),
            value,
            iat,
            jti,
            exp,
        }
    }
}

/// Runs the write statement; `None` when the precondition did not hold (no row written).
async fn write_row(
    client: &impl deadpool_postgres::GenericClient,
    statement: &str,
    expected: Option<i64>,
    row: &Row,
) -> Result<Option<i64>, tokio_postgres::Error> {
    let statement = client.prepare_cached(statement).await?;
    let value: &[u8] = &row.value;
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
        vec![&row.ns, &row.key, &value, &row.iat, &row.jti, &row.exp];
    if let Some(expected) = &expected {
        params.push(expected);
    }
    Ok(client
        .query_opt(&statement, &params)
        .await?
        .map(|r| r.get(0)))
}

/// The current PACK hash and the digest of the account's stored value, locking the hash row
/// until the transaction ends.
async fn lock_hash(
    tx: &deadpool_postgres::Transaction<'_>,
    sql: &Sql,
    key: &str,
) -> Result<([u8; 32], Option<Vec<u8>>), tokio_postgres::Error> {
    let statement = tx.prepare_cached(&sql.lock_hash).await?;
    let row = tx.query_one(&statement, &[&key]).await?;
    let hash: Vec<u8> = row.get(0);
    Ok((hash_of(&hash), row.get(1)))
}

/// Stores the new PACK hash and announces the key, both taking effect at commit.
async fn finish_account_write(
    tx: &deadpool_postgres::Transaction<'_>,
    sql: &Sql,
    hash: [u8; 32],
    announcement: &str,
) -> Result<(), tokio_postgres::Error> {
    let (set, notify) = futures::try_join!(
        tx.prepare_cached(&sql.set_hash),
        tx.prepare_cached("SELECT pg_notify($1, $2)")
    )?;
    let hash: &[u8] = &hash;
    let (set_params, notify_params): (
        [&(dyn tokio_postgres::types::ToSql + Sync); 1],
        [&(dyn tokio_postgres::types::ToSql + Sync); 2],
    ) = ([&hash], [&sql.channel, &announcement]);
    // Sent together: tokio-postgres pipelines concurrent statements on one session.
    futures::try_join!(
        tx.execute(&set, &set_params),
        tx.execute(&notify, &notify_params)
    )?;
    Ok(())
}

/// An account write: compare-and-swap, PACK hash and announcement in one transaction.
async fn put_account(
    client: &mut Object,
    sql: &Sql,
    statement: &str,
    expected: Option<i64>,
    row: &Row,
    announcement: &str,
) -> Result<i64, Failure> {
    let tx = client.transaction().await?;
    let (mut hash, old) = lock_hash(&tx, sql, &row.key).await?;
    let Some(version) = write_row(&tx, statement, expected, row).await? else {
        tx.rollback().await?;
        return Err(Failure::Conflict);
    };
    if let Some(old) = old {
        xor_into(&mut hash, &old);
    }
    xor_into(&mut hash, &Sha256::digest(&row.value));
    let announcement = format!("{announcement} {version}");
    finish_account_write(&tx, sql, hash, &announcement).await?;
    tx.commit().await?;
    Ok(version)
}

/// An account delete: the row, PACK hash and announcement in one transaction.
async fn delete_account(
    client: &mut Object,
    sql: &Sql,
    key: &str,
    expected: Option<i64>,
    announcement: &str,
) -> Result<bool, Failure> {
    let tx = client.transaction().await?;
    let (mut hash, old) = lock_hash(&tx, sql, key).await?;
    let Some(old) = old else {
        tx.rollback().await?;
        return Ok(false);
    };
    let statement = tx.prepare_cached(&sql.delete).await?;
    if tx
        .execute(&statement, &[&"accounts", &key, &expected])
        .await?
        == 0
    {
        // The row exists (read under the hash lock, which every account writer takes first):
        // only the version can have failed to match.
        tx.rollback().await?;
        return Err(Failure::Conflict);
    }
    xor_into(&mut hash, &old);
    let announcement = format!("{announcement} deleted");
    finish_account_write(&tx, sql, hash, &announcement).await?;
    tx.commit().await?;
    Ok(true)
}

impl PostgresBackend {
    /// What this instance announces for an account change (its id marks its own).
    fn announcement(&self, key: &str) -> String {
        format!("{} {key}", self.instance)
    }
}

#[async_trait::async_trait]
impl Backend for PostgresBackend {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn get(&self, ns: Namespace, key: &str) -> Result<Option<(Bytes, Version)>, StoreError> {
        let (sql, key) = (self.sql.clone(), key.to_owned());
        self.run("get", move |client| {
            Box::pin(async move {
                let statement = client.prepare_cached(&sql.get).await?;
                let row = client.query_opt(&statement, &[&ns.name(), &key]).await?;
                Ok(row.map(|r| {
                    let (jwt, version): (Vec<u8>, i64) = (r.get(0), r.get(1));
                    (Bytes::from(jwt), Version(version.to_string()))
                }))
            })
        })
        .await
    }

    async fn put(
        &self,
        ns: Namespace,
        key: &str,
        value: Bytes,
        pre: Precondition,
    ) -> Result<Version, StoreError> {
        let Some((statement, expected)) = statement_for(&self.sql, &pre) else {
            return Err(StoreError::Conflict);
        };
        let statement = statement.to_owned();
        let (sql, row) = (self.sql.clone(), Row::new(ns, key, value));
        let announcement = self.announcement(key);
        let version = self
            .run("put", move |client| {
                Box::pin(async move {
                    if ns == Namespace::Accounts {
                        return put_account(
                            client,
                            &sql,
                            &statement,
                            expected,
                            &row,
                            &announcement,
                        )
                        .await;
                    }
                    // Other namespaces have no hash and no announcement: one statement is
                    // the whole compare-and-swap.
                    write_row(&*client, &statement, expected, &row)
                        .await?
                        .ok_or(Failure::Conflict)
                })
            })
            .await?;
        Ok(Version(version.to_string()))
    }

    async fn delete(
        &self,
        ns: Namespace,
        key: &str,
        expected: Option<&Version>,
    ) -> Result<bool, StoreError> {
        let expected = match expected {
            // A version this backend never issued matches nothing that is stored.
            Some(v) => Some(v.0.parse::<i64>().map_err(|_| StoreError::Conflict)?),
            None => None,
        };
        let (sql, key) = (self.sql.clone(), key.to_owned());
        let announcement = self.announcement(&key);
        self.run("delete", move |client| {
            Box::pin(async move {
                if ns == Namespace::Accounts {
                    return delete_account(client, &sql, &key, expected, &announcement).await;
                }
                let statement = client.prepare_cached(&sql.delete).await?;
                if client
                    .execute(&statement, &[&ns.name(), &key, &expected])
                    .await?
                    > 0
                {
                    return Ok(true);
                }
                let get = client.prepare_cached(&sql.get).await?;
                match client.query_opt(&get, &[&ns.name(), &key]).await? {
                    Some(_) if expected.is_some() => Err(Failure::Conflict),
                    _ => Ok(false),
                }
            })
        })
        .await
    }

    async fn list(
        &self,
        ns: Namespace,
    ) -> Result<BoxStream<'static, Result<String, StoreError>>, StoreError> {
        // One query: the keys of 100,000 accounts are about 6 MB, one round trip, and a
        // primary key never lists a key twice.
        let sql = self.sql.clone();
        let keys: Vec<String> = self
            .run("list", move |client| {
                Box::pin(async move {
                    let statement = client.prepare_cached(&sql.list).await?;
                    let rows = client.query(&statement, &[&ns.name()]).await?;
                    Ok(rows.iter().map(|r| r.get(0)).collect())
                })
            })
            .await?;
        Ok(Box::pin(futures::stream::iter(keys.into_iter().map(Ok))))
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.run("health", |client| {
            Box::pin(async move {
                client.simple_query("SELECT 1").await?;
                Ok(())
            })
        })
        .await
    }

    /// The other writers of a PostgreSQL store are account-server instances, which announce
    /// their own writes.
    fn peers_announce(&self) -> bool {
        true
    }

    fn external_changes(&self) -> Option<broadcast::Receiver<String>> {
        Some(self.changes.subscribe())
    }

    async fn shared_pack_hash(&self) -> Result<Option<[u8; 32]>, StoreError> {
        let sql = self.sql.clone();
        self.run("pack hash", move |client| {
            Box::pin(async move {
                let statement = client.prepare_cached(&sql.read_hash).await?;
                let row = client.query_opt(&statement, &[]).await?;
                Ok(Some(row.map_or([0u8; 32], |r| hash_of(r.get(0)))))
            })
        })
        .await
    }
}

/// The change listener: a session of its own (outside the pool), re-made after failures.
struct Listener {
    connector: Connector,
    sql: Arc<Sql>,
    own: String,
    tx: broadcast::Sender<String>,
    timeout: Duration,
}

/// Why [`Listener::forward`] returned.
#[derive(PartialEq, Eq)]
enum Ended {
    /// The session failed: connect again.
    Lost,
    /// The backend was dropped: stop.
    Shutdown,
}

impl Listener {
    /// Connects and listens, forwarding other instances' keys, until the backend is dropped
    /// (`stopped` resolves). After any session but the one `open` waited for it sends
    /// [`EXTERNAL_RESYNC`]: notifications made while nobody listened are lost.
    async fn run(self, mut stopped: oneshot::Receiver<()>, ready: oneshot::Sender<()>) {
        let mut ready = Some(ready);
        let mut backoff = MIN_BACKOFF;
        loop {
            let attempt = tokio::time::timeout(self.timeout, self.listen());
            let connected = tokio::select! {
                _ = &mut stopped => return,
                connected = attempt => connected,
            };
            match connected {
                Ok(Ok((client, messages))) => {
                    backoff = MIN_BACKOFF;
                    let in_time = ready.take().is_some_and(|r| r.send(()).is_ok());
                    if !in_time {
                        let _ = self.tx.send(EXTERNAL_RESYNC.to_owned());
                    }
                    if self.forward(&client, messages, &mut stopped).await == Ended::Shutdown {
                        return;
                    }
                    tracing::debug!("postgres change listener lost its session; reconnecting");
                }
                Ok(Err(e)) => tracing::debug!("postgres change listener: {e}"),
                Err(_) => tracing::debug!(
                    "postgres change listener: no answer within {:?}",
                    self.timeout
                ),
            }
            tokio::select! {
                _ = &mut stopped => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// A new session that listens on the channel.
    async fn listen(&self) -> Result<Listening, tokio_postgres::Error> {
        let (client, messages) = (self.connector)().await?;
        client
            .batch_execute(&format!("LISTEN \"{}\"", self.sql.channel))
            .await?;
        Ok((client, messages))
    }

    /// Forwards notifications until the session fails (or stops answering pings) or the
    /// backend is dropped.
    async fn forward(
        &self,
        client: &tokio_postgres::Client,
        mut messages: mpsc::Receiver<AsyncMessage>,
        stopped: &mut oneshot::Receiver<()>,
    ) -> Ended {
        let mut ping = tokio::time::interval(LISTENER_PING);
        ping.tick().await; // the first tick is immediate
        loop {
            tokio::select! {
                _ = &mut *stopped => return Ended::Shutdown,
                message = messages.recv() => match message {
                    None => return Ended::Lost,
                    Some(AsyncMessage::Notification(n)) => self.forward_one(n.payload()),
                    Some(_) => {} // notices
                },
                _ = ping.tick() => {
                    let answered =
                        tokio::time::timeout(self.timeout, client.simple_query("SELECT 1")).await;
                    if !matches!(answered, Ok(Ok(_))) {
                        return Ended::Lost;
                    }
                }
            }
        }
    }

    fn forward_one(&self, payload: &str) {
        // `<instance> <key> <version | deleted>`: the version is for people watching the
        // channel; receivers re-read the key either way.
        let mut fields = payload.split(' ');
        let (Some(instance), Some(key)) = (fields.next(), fields.next()) else {
            return;
        };
        // Our own writes already updated this instance.
        if instance != self.own {
            let _ = self.tx.send(key.to_owned());
        }
    }
}
