//! `nats-account-server`: serves operator-signed NATS account JWTs over HTTP (and NATS).
//!
//! Flags are the Go server's, including its single-dash long flags (`-dir`, `-hp`, …); they are
//! applied on top of the config file.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use nas_server::config::{Config, DirStore, ExpiryConfig, NscStore, StoreConfig};
use nas_server::server::Server;

mod cli;
mod init;

/// Command-line flags, compatible with the Go nats-account-server.
#[derive(Debug, Parser)]
#[command(
    name = "nats-account-server",
    version,
    disable_version_flag = true,
    about = "Serves operator-signed NATS account JWTs to nats-servers (URL resolver) and nsc",
    after_help = "Go-style single-dash long flags work too: -dir, -hp, -operator, -nats, -creds, -primary, -nsc, -ro, -dump, -DV."
)]
struct Cli {
    /// Configuration file; other flags take precedence over it.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory to store and serve account JWTs from (replaces the config's store block).
    #[arg(long = "dir", value_name = "PATH")]
    dir: Option<PathBuf>,
    /// Operator JWT path: the operator whose signed accounts this server accepts.
    #[arg(long = "operator", value_name = "PATH")]
    operator: Option<PathBuf>,
    /// NATS server URL for notifications and the resolver protocol (default: no NATS).
    #[arg(long = "nats", value_name = "URL")]
    nats: Option<String>,
    /// Creds file of a system-account user for the NATS connection.
    #[arg(long = "creds", value_name = "FILE")]
    creds: Option<PathBuf>,
    /// URL of the primary account server, http(s)://host:port/.
    #[arg(long = "primary", value_name = "URL")]
    primary: Option<String>,
    /// HTTP host:port to listen on (default localhost:9090; ":9090" = all interfaces).
    #[arg(long = "hp", value_name = "HOST:PORT")]
    hp: Option<String>,
    /// Serve an nsc operator folder read-only (`accounts/<name>/<name>.jwt`).
    #[arg(long = "nsc", value_name = "PATH")]
    nsc: Option<PathBuf>,
    /// Serve the -dir store read-only, watching it for changes made by other tools.
    #[arg(long = "ro")]
    read_only: bool,
    /// Log the effective configuration at startup.
    #[arg(long = "dump")]
    dump: bool,
    /// Turn on debug logging.
    #[arg(short = 'D')]
    debug: bool,
    /// Turn on verbose (trace) logging.
    #[arg(short = 'V')]
    verbose: bool,
    /// Turn on debug and verbose logging.
    #[arg(long = "DV")]
    debug_verbose: bool,
    /// Print the version and exit.
    #[arg(long = "version", action = clap::ArgAction::Version)]
    version: (),
    #[command(subcommand)]
    command: Option<Command>,
}

/// Tools besides serving.
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Create a test operator (with a signing key), a system account and user, one account with
    /// one user, a config for this server and a nats-server config that uses it. For trying the
    /// product out: the keys are test keys.
    Init {
        /// Folder to create.
        #[arg(long, default_value = "nas-quickstart")]
        dir: PathBuf,
        /// HTTP port of the account server.
        #[arg(long, default_value_t = 9090)]
        port: u16,
        /// Client port of the nats-server.
        #[arg(long, default_value_t = 4222)]
        nats_port: u16,
    },
    /// Decode a JWT (account, operator, user, activation, generic; or a creds or decorated
    /// file), show its header and claims, verify its signature and, with --operator, say
    /// whether this server would accept it and why not.
    #[command(after_help = cli::inspect::AFTER_HELP)]
    Inspect(cli::inspect::InspectArgs),
    /// Copy every account, activation and tombstone from one store to another, through the
    /// accept rule and newer-wins.
    #[command(after_help = cli::migrate::AFTER_HELP)]
    Migrate(cli::migrate::MigrateArgs),
    /// Compare the store with what every nats-server holds (missing, older, newer and extra
    /// accounts per server), as a system-account user over NATS; --repair pushes the store's
    /// JWTs to the servers that lack them.
    #[command(after_help = cli::sync_status::AFTER_HELP)]
    SyncStatus(cli::sync_status::SyncStatusArgs),
    /// Print configuration for other programs.
    #[command(subcommand)]
    Config(cli::nats_config::ConfigCommand),
}

/// The Go flag package accepts `-name` for long flags; clap wants `--name`.
fn go_style_args() -> Vec<String> {
    const LONG: &[&str] = &[
        "dir", "operator", "nats", "creds", "primary", "hp", "nsc", "ro", "dump", "DV", "config",
        "help", "version",
    ];
    std::env::args()
        .enumerate()
        .map(|(i, arg)| {
            if i > 0 && arg.starts_with('-') && !arg.starts_with("--") {
                let name = arg[1..].split('=').next().unwrap_or_default();
                if LONG.contains(&name) {
                    return format!("-{arg}");
                }
            }
            arg
        })
        .collect()
}

fn expand_home(path: PathBuf) -> PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => path,
    }
}

fn apply_flags(cli: &Cli, config: &mut Config) -> Result<(), String> {
    if let Some(dir) = &cli.dir {
        // As in the Go server, -dir replaces the whole store block.
        config.store = StoreConfig::Dir(DirStore::new(expand_home(dir.clone())));
        config.expiry = ExpiryConfig::default();
    }
    if let Some(nsc) = &cli.nsc {
        config.store = StoreConfig::Nsc(NscStore {
            folder: expand_home(nsc.clone()),
        });
    }
    if cli.read_only {
        match &mut config.store {
            StoreConfig::Dir(d) => d.read_only = true,
            StoreConfig::Nsc(_) => {}
            other => {
                return Err(format!(
                    "-readonly applies to a directory store, not to a {} store",
                    other.type_name()
                ))
            }
        }
    }
    if let Some(op) = &cli.operator {
        config.operator_jwt_path = Some(op.clone());
    }
    if let Some(url) = &cli.nats {
        config.nats.servers = vec![url.clone()];
    }
    if let Some(creds) = &cli.creds {
        config.nats.user_credentials = Some(expand_home(creds.clone()));
    }
    if let Some(primary) = &cli.primary {
        config.primary = Some(primary.clone());
    }
    if let Some(hp) = &cli.hp {
        let (host, port) = hp
            .rsplit_once(':')
            .ok_or_else(|| format!("error parsing hostport: missing port in address {hp:?}"))?;
        config.http.host = host.to_owned();
        config.http.port = port
            .parse()
            .map_err(|_| format!("error parsing hostport: invalid port {port:?}"))?;
    }
    config.logging.debug |= cli.debug || cli.debug_verbose;
    config.logging.trace |= cli.verbose || cli.debug_verbose;
    config.validate().map_err(|e| e.to_string())
}

fn init_logging(config: &Config) {
    let level = if config.logging.trace {
        "trace"
    } else if config.logging.debug {
        "debug"
    } else {
        "info"
    };
    // `-D`/`-V` raise our own crates only: libraries log at debug and trace what we must never
    // print (async-nats logs server URLs with their passwords, HTTP clients log headers).
    let ours = [
        "nats_account_server",
        "nas_server",
        "nas_store",
        "nas_jwt",
        "nas_conf",
    ];
    let directives: Vec<String> = std::iter::once("warn".to_owned())
        .chain(ours.iter().map(|c| format!("{c}={level}")))
        .collect();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(directives.join(",")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(config.logging.colors && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    if config.logging.json {
        builder.json().init();
    } else if config.logging.time {
        builder.init();
    } else {
        builder.without_time().init();
    }
}

fn load_config(cli: &Cli) -> Result<Config, String> {
    let mut config = match &cli.config {
        Some(path) => {
            let path = expand_home(path.clone());
            let (config, warnings) = Config::from_file(&path)
                .map_err(|e| format!("error reading configuration file {}: {e}", path.display()))?;
            for w in warnings {
                eprintln!("warning: {w}");
            }
            config
        }
        None => Config::default(),
    };
    apply_flags(cli, &mut config)?;
    Ok(config)
}

/// Runs a subcommand instead of the server.
async fn run_command(command: &Command) -> ExitCode {
    match command {
        Command::Init {
            dir,
            port,
            nats_port,
        } => match init::run(dir, *port, *nats_port).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("init failed: {e}");
                ExitCode::from(1)
            }
        },
        Command::Inspect(args) => cli::inspect::run(args).await,
        Command::Migrate(args) => cli::migrate::run(args).await,
        Command::SyncStatus(args) => cli::sync_status::run(args).await,
        Command::Config(cli::nats_config::ConfigCommand::NatsServer(args)) => {
            cli::nats_config::run(args)
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse_from(go_style_args());
    if let Some(command) = &cli.command {
        return run_command(command).await;
    }
    let config = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    init_logging(&config);
    if cli.dump {
        tracing::info!("effective configuration: {config:#?}");
    }
    let mut signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let mut config = config;
    loop {
        // Watching starts before the server reads the file, so no change can fall in between.
        let mut operator_watch = watch_operator(&config);
        let server = match Server::start(&config).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::from(1);
            }
        };
        match next_event(&mut signals, operator_watch.as_mut()).await {
            Signal::Stop => {
                tracing::info!("received stop signal, shutting down");
                server.stop().await;
                return ExitCode::SUCCESS;
            }
            Signal::Reload => {
                tracing::info!("reloading configuration");
                match load_config(&cli) {
                    Ok(new) => config = new,
                    Err(e) => {
                        tracing::error!("reload failed, keeping the running configuration: {e}")
                    }
                }
                server.stop().await;
            }
        }
    }
}

enum Signal {
    Stop,
    Reload,
}

/// A watch on the operator JWT file, when there is one.
fn watch_operator(config: &Config) -> Option<nas_server::watch::FileWatch> {
    let path = nas_server::server::operator_path(config)?;
    match nas_server::watch::FileWatch::new(&path) {
        Ok(watch) => Some(watch),
        Err(e) => {
            tracing::warn!("cannot watch {}: {e}; reload with SIGHUP", path.display());
            None
        }
    }
}

/// The next stop or reload: a signal, or a change of the operator JWT file (trust reloads as on
/// SIGHUP, so a new signing key or a Kubernetes ConfigMap update needs no signal).
async fn next_event(
    signals: &mut Signals,
    watch: Option<&mut nas_server::watch::FileWatch>,
) -> Signal {
    let operator_changed = async {
        match watch {
            Some(w) => w.changed().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        signal = signals.next() => signal,
        () = operator_changed => {
            tracing::info!("the operator JWT changed, reloading");
            Signal::Reload
        }
    }
}

/// The stop and reload signals, installed once before the first start: a SIGHUP that arrives
/// while the server starts must reload it, not end the process (the default action).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop,
            _ = self.int.recv() => Signal::Stop,
            _ = self.hup.recv() => {
                tracing::info!("received sig-hup");
                Signal::Reload
            }
        }
    }
}
