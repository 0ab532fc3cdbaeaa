//! Wiring: config → store → cache → accept rule → HTTP listeners.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_server::ServerHandle;
use actix_web::{middleware, web, App};
use bytes::Bytes;
use nas_jwt::OperatorTrust;
use nas_store::{Backend, Store, StoreError};

use crate::accept::Accepter;
use crate::audit::Audit;
use crate::backend;
use crate::cache::{CacheOptions, Served, VerifiedCache};
use crate::config::Config;
use crate::delete::Deleter;
use crate::http::{self, AppState};
use crate::instrumented::Instrumented;
use crate::listener;
use crate::metrics::Metrics;
use crate::notify::{NoNats, Notifier};
use crate::replica::Primary;
use crate::resolver::{Resolver, Upstream};
use crate::upkeep::Upkeep;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A JWT file could not be read or is invalid.
    #[error("{0}")]
    Jwt(String),
    /// TLS material is unusable.
    #[error("TLS is not configured: {0}")]
    Tls(String),
    /// NATS options are unusable (a connection failure is not an error: it is retried).
    #[error("NATS: {0}")]
    Nats(String),
    /// The audit file cannot be opened.
    #[error("{0}")]
    Audit(String),
    /// The backend could not be opened.
    #[error(transparent)]
    Open(#[from] crate::backend::OpenError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        /// The address.
        addr: String,
        /// The OS error.
        error: std::io::Error,
    },
}

/// A running server.
pub struct Server {
    http: ServerHandle,
    metrics_http: Option<ServerHandle>,
    /// Bound address of the API listener.
    pub http_addr: SocketAddr,
    /// Bound address of the metrics listener, if separate.
    pub metrics_addr: Option<SocketAddr>,
    /// The store.
    pub store: Store,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Whether the API is served over TLS.
    pub tls: bool,
    /// The NATS connection, when configured.
    pub nats: Option<async_nats::Client>,
    /// Store upkeep (account count, expiry purge); stops with the server.
    _upkeep: Upkeep,
    /// The periodic drift check (`sync { interval }`); stops with the server.
    _drift: Option<crate::drift::DriftWatch>,
}

fn read_file(what: &str, path: &std::path::Path) -> Result<Bytes, StartError> {
    std::fs::read(path)
        .map(Bytes::from)
        .map_err(|e| StartError::Jwt(format!("cannot read {what} {}: {e}", path.display())))
}

fn tls_config(config: &Config) -> Result<Option<rustls::ServerConfig>, StartError> {
    let (Some(cert), Some(key)) = (&config.http.tls_cert, &config.http.tls_key) else {
        return Ok(None);
    };
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert)
            .map_err(|e| StartError::Tls(format!("{}: {e}", cert.display())))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .map_err(|e| StartError::Tls(format!("{}: {e}", cert.display())))?;
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key).map_err(|e| StartError::Tls(format!("{}: {e}", key.display())))?,
    ))
    .map_err(|e| StartError::Tls(e.to_string()))?
    .ok_or_else(|| StartError::Tls(format!("no private key in {}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map(Some)
        .map_err(|e| StartError::Tls(e.to_string()))
}

impl Server {
    /// Opens the store, loads the operator and system account, connects to NATS (in the
    /// background) and starts the listeners. Must run inside a tokio runtime.
    pub async fn start(config: &Config) -> Result<Server, StartError> {
        Server::start_with(config, |backend| backend).await
    }

    /// [`Server::start`] with the configured backend passed through `wrap` first (a decorator
    /// such as [`nas_store::fault::FaultBackend`] for fault-injection tests, or an embedding's
    /// own instrumentation).
    pub async fn start_with(
        config: &Config,
        wrap: impl FnOnce(Arc<dyn Backend>) -> Arc<dyn Backend>,
    ) -> Result<Server, StartError> {
        tracing::info!(
            "starting NATS Account server, version {}",
            env!("CARGO_PKG_VERSION")
        );
        let metrics = Arc::new(Metrics::new());
        let nats = NatsParts::connect(config, &metrics).await?;
        let store = open_store(config, wrap, &metrics, &nats).await?;
        let (operator_jwt, trust) = load_operator(config)?;
        let system_account = load_system_account(config, trust.as_deref())?;
        let audit = start_audit(config, &nats, &metrics)?;
        let core = Core::new(config, store, trust, metrics, system_account, audit);
        let upkeep = Upkeep::start(
            core.store.clone(),
            config.expiry.clone(),
            core.metrics.clone(),
            core.audit.clone(),
        );
        let primary = follow_primary(config, &core.accepter).await;
        start_nats_bridge(config, &nats, &core).await?;
        let drift = watch_drift(config, &nats, &core);
        let resolver = Resolver::new(
            core.cache.clone(),
            core.system_account.clone(),
            upstream(config, &nats, primary.as_ref(), &core),
        );
        let state = app_state(
            config,
            &core,
            nats.notifier(),
            operator_jwt,
            resolver,
            primary,
            &nats,
        );
        let (http, http_addr, tls) = start_api_listener(config, state, &core.metrics)?;
        let (metrics_http, metrics_addr) = start_metrics_listener(config, &core.metrics)?;
        log_resolver_line(config, tls, http_addr);
        Ok(Server {
            http,
            metrics_http,
            http_addr,
            metrics_addr,
            store: core.store,
            metrics: core.metrics,
            tls,
            nats: nats.client,
            _upkeep: upkeep,
            _drift: drift,
        })
    }

    /// The base URL of the API (`http://127.0.0.1:<port>`).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.http_addr.port())
    }

    /// Stops the listeners gracefully (in-flight requests finish).
    pub async fn stop(&self) {
        tracing::info!("stopping http server");
        self.http.stop(true).await;
        if let Some(m) = &self.metrics_http {
            m.stop(true).await;
        }
        tracing::info!("http server stopped");
        if let Some(nats) = &self.nats {
            // Drain sends what the client still buffers; bounded so a dead server cannot hang
            // the shutdown.
            let drained =
                tokio::time::timeout(std::time::Duration::from_secs(2), nats.drain()).await;
            if !matches!(drained, Ok(Ok(()))) {
                tracing::warn!("NATS did not drain cleanly");
            }
            tracing::info!("disconnected from NATS");
        }
    }
}

/// The parts every front end shares.
struct Core {
    store: Store,
    cache: VerifiedCache,
    accepter: Accepter,
    deleter: Deleter,
    metrics: Arc<Metrics>,
    system_account: Option<Arc<Served>>,
    audit: Audit,
}

impl Core {
    /// The verified cache and the accept rule over `store`.
    fn new(
        config: &Config,
        store: Store,
        trust: Option<Arc<OperatorTrust>>,
        metrics: Arc<Metrics>,
        system_account: Option<Arc<Served>>,
        audit: Audit,
    ) -> Core {
        let cache = VerifiedCache::new(
            store.clone(),
            trust.clone(),
            metrics.clone(),
            &CacheOptions {
                max_entries: config.cache.max_entries,
                max_bytes: config.cache.max_bytes,
                ttl: config.cache.ttl,
                negative_ttl: config.cache.negative_ttl,
                max_stale: config.cache.max_stale,
            },
        );
        let deleter = Deleter::new(
            store.clone(),
            cache.clone(),
            trust.clone(),
            system_account.clone(),
            config.nats.allow_delete,
        )
        .with_audit(audit.clone());
        let accepter = Accepter::new(
            store.clone(),
            trust,
            cache.clone(),
            metrics.clone(),
            backend::read_only_hint(&config.store),
        )
        .with_audit(audit.clone());
        Core {
            store,
            cache,
            accepter,
            deleter,
            metrics,
            system_account,
            audit,
        }
    }
}

/// The audit log's sinks (`audit { file, subject }`), opened anew at every (re)start.
fn start_audit(
    config: &Config,
    nats: &NatsParts,
    metrics: &Arc<Metrics>,
) -> Result<Audit, StartError> {
    let subject = config.audit.subject.clone();
    let publish = nats.client.clone().zip(subject);
    Audit::start(config.audit.file.as_deref(), publish, metrics.clone())
        .map_err(|e| StartError::Audit(e.to_string()))
}

/// The NATS connection (in the background: a server that is down is retried) and its
/// notifier, when NATS is configured.
struct NatsParts {
    client: Option<async_nats::Client>,
    notifier: Option<Arc<crate::nats::NatsNotifier>>,
}

impl NatsParts {
    async fn connect(config: &Config, metrics: &Arc<Metrics>) -> Result<NatsParts, StartError> {
        if config.nats.servers.is_empty() {
            tracing::info!("NATS is not configured, server will not fire notifications on update");
            return Ok(NatsParts {
                client: None,
                notifier: None,
            });
        }
        let (client, events) = crate::nats::connect(&config.nats, metrics.clone())
            .await
            .map_err(|e| StartError::Nats(e.to_string()))?;
        let notifier = crate::nats::NatsNotifier::new(client.clone(), metrics.clone(), events);
        Ok(NatsParts {
            client: Some(client),
            notifier: Some(notifier),
        })
    }

    /// Where accepted changes are announced (nowhere without NATS).
    fn notifier(&self) -> Arc<dyn Notifier> {
        match &self.notifier {
            Some(n) => n.clone(),
            None => Arc::new(NoNats),
        }
    }
}

/// Opens the configured backend behind `wrap` and the metrics decorator.
async fn open_store(
    config: &Config,
    wrap: impl FnOnce(Arc<dyn Backend>) -> Arc<dyn Backend>,
    metrics: &Arc<Metrics>,
    nats: &NatsParts,
) -> Result<Store, StartError> {
    let backend = wrap(backend::open_backend(&config.store).await?);
    tracing::info!(
        "creating a {} store ({})",
        backend.kind(),
        config.store.describe()
    );
    let store = Store::new(Arc::new(Instrumented::new(backend, metrics.clone())));
    if let Some(n) = &nats.notifier {
        // Updates other instances published while we were disconnected were missed.
        let store = store.clone();
        n.on_connect(move || {
            store.mark_all_stale();
        });
    }
    Ok(store)
}

/// `operatorjwtpath`, or for an nsc store the operator JWT inside its operator folder (the
/// file to watch for trust changes; `None` when the operator is inline or not configured).
pub fn operator_path(config: &Config) -> Option<std::path::PathBuf> {
    if config.operator_jwt.is_some() {
        return None;
    }
    config
        .operator_jwt_path
        .clone()
        .or_else(|| backend::nsc_operator_jwt(&config.store))
}

/// A JWT given inline or as a file: its bytes and where they came from (for messages).
fn jwt_from(
    what: &str,
    inline: Option<&String>,
    path: Option<&std::path::Path>,
) -> Result<Option<(Bytes, String)>, StartError> {
    if let Some(jwt) = inline {
        return Ok(Some((Bytes::from(jwt.clone()), "(inline)".to_owned())));
    }
    let Some(path) = path else {
        return Ok(None);
    };
    tracing::info!("loading {what} from {}", path.display());
    Ok(Some((read_file(what, path)?, path.display().to_string())))
}

/// The operator JWT (served verbatim) and the trust it defines, when one is configured
/// (`operator`, `operatorjwtpath`, or an nsc store's operator).
pub fn load_operator(
    config: &Config,
) -> Result<(Option<Bytes>, Option<Arc<OperatorTrust>>), StartError> {
    let path = operator_path(config);
    let inline = config.operator_jwt.as_ref();
    let Some((bytes, source)) = jwt_from("operator JWT", inline, path.as_deref())? else {
        tracing::warn!(
            "No Operator is configured - You will NOT be able to push jwt to this account server"
        );
        return Ok((None, None));
    };
    let trust = OperatorTrust::from_operator_jwt(&bytes)
        .map_err(|e| StartError::Jwt(format!("operator JWT {source}: {e}")))?;
    tracing::info!("Operator: {}", trust.identity());
    Ok((Some(bytes), Some(Arc::new(trust))))
}

/// The configured system account, verified against the operator (and matching the operator's
/// own `system_account` when it names one).
fn load_system_account(
    config: &Config,
    trust: Option<&OperatorTrust>,
) -> Result<Option<Arc<Served>>, StartError> {
    let inline = config.system_account_jwt.as_ref();
    let path = config.system_account_jwt_path.as_deref();
    let Some((bytes, source)) = jwt_from("system account JWT", inline, path)? else {
        return Ok(None);
    };
    let token = nas_jwt::creds::extract_jwt(&String::from_utf8_lossy(&bytes));
    let verified = match trust {
        Some(t) => t.verify_account_untimed(token.as_bytes(), None),
        None => nas_jwt::decode_account_for(token.as_bytes(), None),
    }
    .map_err(|e| StartError::Jwt(format!("system account JWT {source}: {e}")))?;
    if let Some(sys) = trust.and_then(|t| t.system_account()) {
        if sys != verified.claims.sub {
            return Err(StartError::Jwt(format!(
                "the operator's system account {sys} differs from the configured system account {}",
                verified.claims.sub
            )));
        }
    }
    tracing::info!(
        "System Account: {} ({})",
        verified.claims.sub,
        verified.claims.name
    );
    let token = Bytes::from(verified.token.clone());
    Ok(Some(Arc::new(Served::new(&verified, token))))
}

/// A replica's primary, after the one-shot import of its pack (the Go v1.0 `primary`).
async fn follow_primary(config: &Config, accepter: &Accepter) -> Option<Primary> {
    let primary = Primary::new(config.primary.as_deref()?, config.replication_timeout);
    if config.max_replication_pack == 0 {
        tracing::info!(
            "skipping initial JWT pack from primary, config has MaxReplicationPack of 0"
        );
        return Some(primary);
    }
    tracing::info!("grabbing initial JWT pack from primary {}", primary.base());
    match primary
        .import_pack(config.max_replication_pack, accepter)
        .await
    {
        Ok((stored, refused)) => {
            tracing::info!("imported {stored} account(s) from the primary, refused {refused}")
        }
        Err(e) => {
            tracing::warn!("unable to initialize from primary, {e}, will use what is on disk")
        }
    }
    Some(primary)
}

/// Announcements of accepted changes and, with NATS, the resolver protocol responder.
async fn start_nats_bridge(
    config: &Config,
    nats: &NatsParts,
    core: &Core,
) -> Result<(), StartError> {
    let notifier = nats.notifier();
    announce_accepted_changes(&core.store, notifier.clone());
    let Some(client) = &nats.client else {
        return Ok(());
    };
    spawn_external_announcer(&core.store, &core.cache, notifier);
    // LOOKUP is answered from this instance alone: asking other servers would loop.
    let local = Resolver::new(core.cache.clone(), core.system_account.clone(), None);
    let rules = crate::nats::ResponderRules {
        accepter: core.accepter.clone(),
        cache: core.cache.clone(),
        resolver: local,
        store: core.store.clone(),
        deleter: core.deleter.clone(),
    };
    crate::nats::Responder::spawn(
        client.clone(),
        rules,
        core.metrics.clone(),
        crate::nats::ResponderOptions {
            lookup_miss_reply: config.nats.lookup_miss_reply,
            pack_interval: config.nats.pack_interval,
            server_name: config.nats.name.clone(),
            replica: config.primary.is_some(),
        },
    )
    .await
    .map_err(|e| StartError::Nats(e.to_string()))
}

/// The periodic drift check, when `sync { interval }` is set (and NATS is configured).
fn watch_drift(config: &Config, nats: &NatsParts, core: &Core) -> Option<crate::drift::DriftWatch> {
    let interval = config.sync.interval?;
    let client = nats.client.clone()?;
    tracing::info!("comparing the store with the nats-servers every {interval:?}");
    Some(crate::drift::DriftWatch::start(
        client,
        core.cache.clone(),
        core.metrics.clone(),
        interval,
        config.sync.timeout,
    ))
}

/// Where GET looks when the store misses: a replica asks its primary; everyone else asks full
/// resolvers over NATS.
fn upstream(
    config: &Config,
    nats: &NatsParts,
    primary: Option<&Primary>,
    core: &Core,
) -> Option<Arc<dyn Upstream>> {
    if let Some(primary) = primary {
        return Some(Arc::new(crate::replica::PrimaryUpstream::new(
            primary.clone(),
            core.accepter.clone(),
            core.cache.clone(),
            config.replica_validity,
        )));
    }
    let client = nats.client.as_ref()?;
    Some(Arc::new(crate::nats::NatsLookup::new(
        client.clone(),
        core.accepter.clone(),
        core.metrics.clone(),
        config.sign_request_timeout,
        config.cache.negative_ttl,
    )))
}

fn app_state(
    config: &Config,
    core: &Core,
    notifier: Arc<dyn Notifier>,
    operator_jwt: Option<Bytes>,
    resolver: Resolver,
    primary: Option<Primary>,
    nats: &NatsParts,
) -> web::Data<AppState> {
    web::Data::new(AppState {
        activations: crate::activation::Activations::new(
            core.cache.clone(),
            core.store.clone(),
            config.max_activations_per_account,
        ),
        cache: core.cache.clone(),
        accepter: core.accepter.clone(),
        deleter: core.deleter.clone(),
        signing: config.sign_request_subject.clone().map(|subject| {
            crate::signing::SigningService::new(
                nats.client.clone(),
                subject,
                config.sign_request_timeout,
            )
        }),
        store: core.store.clone(),
        metrics: core.metrics.clone(),
        notifier,
        operator_jwt,
        resolver,
        max_pack: config.max_replication_pack,
        metrics_on_main: config.metrics.on_main_listener && config.metrics.listen.is_none(),
        primary_url: primary.as_ref().map(|p| p.base().to_owned()),
        request_deadline: config.http.read_timeout,
        body_limit: config.http.body_limit,
        health: Default::default(),
    })
}

/// The API listener (HTTPS when `http.tls` is configured).
fn start_api_listener(
    config: &Config,
    state: web::Data<AppState>,
    metrics: &Metrics,
) -> Result<(ServerHandle, SocketAddr, bool), StartError> {
    let bind = config.http_bind();
    let tls = tls_config(config)?;
    let is_tls = tls.is_some();
    let body_limit = config.http.body_limit;
    let listener = listener::bind(
        &bind,
        &listener_limits(config),
        tls,
        connection_metrics(metrics, "api"),
        move || {
            listener::mount(
                App::new()
                    .app_data(state.clone())
                    .app_data(web::PayloadConfig::new(body_limit))
                    .wrap(middleware::from_fn(http::observe))
                    .configure(http::routes),
            )
        },
    )
    .map_err(|error| StartError::Listen {
        addr: bind.clone(),
        error,
    })?;
    let addr = listener.addr;
    tracing::info!(
        "{} listening on {addr}",
        if is_tls { "https" } else { "http" }
    );
    Ok((listener.spawn(), addr, is_tls))
}

/// The separate metrics listener (`metrics { listen }`), with the API's connection bounds.
fn start_metrics_listener(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> Result<(Option<ServerHandle>, Option<SocketAddr>), StartError> {
    let Some(listen) = &config.metrics.listen else {
        return Ok((None, None));
    };
    let limits = listener::Limits {
        workers: 1,
        ..listener_limits(config)
    };
    let shared = web::Data::from(metrics.clone());
    let listener = listener::bind(
        listen,
        &limits,
        None,
        connection_metrics(metrics, "metrics"),
        move || {
            listener::mount(
                App::new()
                    .app_data(shared.clone())
                    .route("/metrics", web::get().to(http::metrics_only)),
            )
        },
    )
    .map_err(|error| StartError::Listen {
        addr: listen.clone(),
        error,
    })?;
    tracing::info!("metrics listening on {listen}");
    let addr = listener.addr;
    Ok((Some(listener.spawn()), Some(addr)))
}

fn connection_metrics(metrics: &Metrics, listener: &str) -> listener::ConnectionMetrics {
    listener::ConnectionMetrics {
        open: metrics.http_open_connections.with_label_values(&[listener]),
        write_timeouts: metrics.http_write_timeouts.clone(),
    }
}

/// The line operators copy into their nats-server config.
fn log_resolver_line(config: &Config, tls: bool, addr: SocketAddr) {
    let host = match config.http.host.as_str() {
        "" | "0.0.0.0" | "::" => "127.0.0.1".to_owned(),
        h => h.to_owned(),
    };
    let scheme = if tls { "https" } else { "http" };
    tracing::info!("nats-account-server is running");
    tracing::info!("configure the nats-server with:");
    tracing::info!(
        "  resolver: URL({scheme}://{host}:{}/jwt/v1/accounts/)",
        addr.port()
    );
}

/// The PEM files of `store { tls { ca, cert, key } }`, read for `rediss://`.
/// The API listener's connection bounds from `http { … }`.
fn listener_limits(config: &Config) -> crate::listener::Limits {
    let http = &config.http;
    crate::listener::Limits {
        read_timeout: http.read_timeout,
        write_timeout: http.write_timeout,
        idle_timeout: http.idle_timeout.unwrap_or(http.read_timeout),
        max_keepalive_requests: http.max_keepalive_requests,
        max_connections: http.max_connections,
        shutdown_timeout: http.shutdown_timeout,
        workers: http.workers,
    }
}

/// Accepted changes that ask for it are announced by the store's observer, under the key's
/// lock, so nats-servers hear one account's versions in store order.
fn announce_accepted_changes(store: &Store, notifier: Arc<dyn Notifier>) {
    store.observe(Arc::new(move |event: &nas_store::ChangeEvent| {
        if let (false, true, Some(new)) = (event.external, event.announce, &event.new) {
            notifier.account_changed(&event.key, new, event.seq);
        }
    }));
}

/// Changes made to the store by other programs (a watched read-only directory, nsc) are
/// announced to nats-servers once they verify — the legacy read-only mode's notifications.
/// Changes made by other account-server instances sharing the store are not: the instance that
/// accepted a change announces it (one notification per change per deployment).
fn spawn_external_announcer(store: &Store, cache: &VerifiedCache, notifier: Arc<dyn Notifier>) {
    if store.backend().peers_announce() {
        return;
    }
    let mut events = store.subscribe();
    let cache = cache.clone();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) if event.external && event.new.is_some() => {
                    cache.forget_below(&event.key, event.seq).await;
                    if let Ok(crate::cache::Lookup::Found(served)) = cache.get(&event.key).await {
                        // Only what verifies, and only the version this event is about.
                        if Some(&served.token) == event.new.as_ref() {
                            notifier.account_changed(&served.key, &served.token, event.seq);
                        }
                    }
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });
}
