//! `sync-status`: compares the store with what every nats-server holds (the rule of
//! [`nas_server::drift`], the same one the periodic `sync { interval }` task applies), prints a
//! table per server, and with `--repair` pushes the store's JWTs to the servers that lack them.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use indicatif::ProgressBar;
use nas_server::cache::{CacheOptions, VerifiedCache};
use nas_server::config::{Config, NatsConfig};
use nas_server::drift::{Pushed, Report, ServerDrift};
use nas_server::metrics::Metrics;
use serde_json::{json, Value};

use super::{CliError, EXIT_REFUSED, EXIT_USAGE};

/// The end of `sync-status --help`: columns, classification, exit codes.
pub const AFTER_HELP: &str = "\
WHAT IS COMPARED (per nats-server, found with $SYS.REQ.SERVER.PING on each --nats URL):
  Accounts it has loaded, with the JWT it uses ($SYS.REQ.SERVER.<id>.ACCOUNTZ), by version;
  accounts a full or cache resolver stores ($SYS.REQ.CLAIMS.LIST), by presence. The store side
  is what this server serves: stored, unexpired JWTs that verify against the operator.

COLUMNS:
  in-sync  accounts it holds in the store's version (by presence where only stored)
  missing  store accounts a full resolver does not store (cache and URL resolvers hold only
           the accounts they were asked for: what they lack is not drift)
  older    accounts it uses in a version older than the store's
  newer    accounts it uses in a version newer than the store's (the store is behind)
  extra    accounts it holds that the store does not serve

REPAIR:
  --repair pushes the store's JWT of every missing and older account on
  $SYS.REQ.ACCOUNT.<key>.CLAIMS.UPDATE (not accounts some server holds newer), then checks
  again. Extra accounts are not deleted (nsc push --prune does that); newer ones need the newer
  JWT pushed to this server (nsc push).

EXIT CODES:
  0 every nats-server is in sync (after --repair: it is now); 1 drift found (after --repair:
  some remains); 2 usage error, the store or NATS cannot be reached, or a nats-server did not
  answer.";

/// `sync-status`'s arguments.
#[derive(Debug, clap::Args)]
pub struct SyncStatusArgs {
    /// This server's configuration file: its nats block (servers, usercredentials, tls), store
    /// block and operator are used.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// NATS URL of a system-account connection (repeat for servers that are not clustered
    /// together; each URL is a connection of its own). Replaces the config's nats.servers.
    #[arg(long = "nats", value_name = "URL")]
    pub nats: Vec<String>,
    /// Creds file of a system-account user (replaces nats.usercredentials).
    #[arg(long, value_name = "FILE")]
    pub creds: Option<PathBuf>,
    /// The store to compare with, as `migrate` names stores (default: the config's store).
    #[arg(long, value_name = "STORE")]
    pub store: Option<String>,
    /// Operator JWT file the store's JWTs are verified against (default: the config's).
    #[arg(long, value_name = "OPERATOR.JWT")]
    pub operator: Option<PathBuf>,
    /// Push the store's JWTs to the servers that lack them, then check again.
    #[arg(long)]
    pub repair: bool,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Bound of each NATS request and of collecting the answers of many servers (ms).
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub timeout: u64,
    /// List the accounts of every kind of drift under the table.
    #[arg(short, long)]
    pub verbose: bool,
}

/// Runs `sync-status`.
pub async fn run(args: &SyncStatusArgs) -> ExitCode {
    match sync_status(args).await {
        Ok(outcome) => {
            outcome.print(args);
            outcome.exit_code()
        }
        Err(e) => e.exit("sync-status"),
    }
}

/// A check, and with `--repair` what was pushed and the check after it.
struct Outcome {
    first: Report,
    repair: Option<(Vec<Pushed>, Report)>,
}

impl Outcome {
    fn last(&self) -> &Report {
        self.repair.as_ref().map_or(&self.first, |(_, r)| r)
    }

    fn exit_code(&self) -> ExitCode {
        let last = self.last();
        if last.drifted() {
            ExitCode::from(EXIT_REFUSED)
        } else if !last.unanswered.is_empty() {
            ExitCode::from(EXIT_USAGE)
        } else {
            ExitCode::SUCCESS
        }
    }

    fn print(&self, args: &SyncStatusArgs) {
        if args.json {
            let mut v = report_json(self.last());
            if let Some((pushed, _)) = &self.repair {
                v["before"] = report_json(&self.first);
                v["pushed"] = pushed_json(pushed);
            }
            println!("{v}");
            return;
        }
        if let Some((pushed, after)) = &self.repair {
            println!("before --repair:");
            print_table(&self.first, args.verbose);
            print_pushed(pushed);
            println!("after --repair:");
            print_table(after, args.verbose);
        } else {
            print_table(&self.first, args.verbose);
        }
    }
}

async fn sync_status(args: &SyncStatusArgs) -> Result<Outcome, CliError> {
    let config = effective_config(args)?;
    let cache = open_store(args, &config).await?;
    let timeout = Duration::from_millis(args.timeout.max(1));
    let clients = connect(&config.nats).await?;
    let bar = Bar(super::progress(0, "checking"));
    let first = check(&clients, &cache, timeout, &bar).await?;
    let repair = if args.repair && first.drifted() {
        bar.0.set_message("repairing");
        let pushed = nas_server::drift::repair(&clients, &cache, &first, timeout, &bar).await;
        bar.0.set_message("checking again");
        let after = check(&clients, &cache, timeout, &bar).await?;
        Some((pushed, after))
    } else {
        None
    };
    bar.0.finish_and_clear();
    // Every request was answered or timed out: nothing is left to flush.
    drop(clients);
    Ok(Outcome { first, repair })
}

async fn check(
    clients: &[async_nats::Client],
    cache: &VerifiedCache,
    timeout: Duration,
    bar: &Bar,
) -> Result<Report, CliError> {
    nas_server::drift::check(clients, cache, timeout, bar)
        .await
        .map_err(|e| CliError::Io(e.to_string()))
}

/// The config file (if any) with the flags applied, as the server applies `-nats`/`-creds`.
fn effective_config(args: &SyncStatusArgs) -> Result<Config, CliError> {
    let mut config = match &args.config {
        Some(path) => {
            let (config, warnings) = Config::from_file(path)
                .map_err(|e| CliError::Io(format!("{}: {e}", path.display())))?;
            for w in warnings {
                eprintln!("warning: {w}");
            }
            config
        }
        None => Config::default(),
    };
    if !args.nats.is_empty() {
        config.nats.servers = args.nats.clone();
    }
    if let Some(creds) = &args.creds {
        config.nats.user_credentials = Some(creds.clone());
    }
    if let Some(operator) = &args.operator {
        config.operator_jwt_path = Some(operator.clone());
        config.operator_jwt = None;
    }
    if config.nats.servers.is_empty() {
        return Err(CliError::Usage(
            "no NATS servers: pass --nats <url> or -c with a config that has nats { servers }"
                .into(),
        ));
    }
    Ok(config)
}

/// The store named by `--store` (or the config's), behind the verified cache that decides what
/// the server serves.
async fn open_store(args: &SyncStatusArgs, config: &Config) -> Result<VerifiedCache, CliError> {
    let mut config = config.clone();
    match &args.store {
        Some(url) => {
            let spec = super::store_url::parse(url).map_err(|e| CliError::Usage(e.to_string()))?;
            config.store = spec.store;
            if config.operator_jwt_path.is_none() && config.operator_jwt.is_none() {
                config.operator_jwt_path = spec.operator;
            }
        }
        None if args.config.is_none() => {
            return Err(CliError::Usage(
                "no store: pass --store <store> or -c with a config that has a store block".into(),
            ))
        }
        None => {}
    }
    let (_, trust) =
        nas_server::server::load_operator(&config).map_err(|e| CliError::Usage(e.to_string()))?;
    let backend = nas_server::backend::open_backend(&config.store)
        .await
        .map_err(|e| CliError::Io(format!("store {}: {e}", config.store.describe())))?;
    let store = nas_store::Store::new(backend);
    Ok(VerifiedCache::new(
        store,
        trust,
        Arc::new(Metrics::new()),
        &CacheOptions::default(),
    ))
}

/// One connection per server URL, made as the server makes its own (system user, TLS) and all
/// at once, each waited for up to `connecttimeout`.
async fn connect(nats: &NatsConfig) -> Result<Vec<async_nats::Client>, CliError> {
    futures::future::try_join_all(nats.servers.iter().map(|url| connect_one(nats, url))).await
}

async fn connect_one(nats: &NatsConfig, url: &str) -> Result<async_nats::Client, CliError> {
    let config = NatsConfig {
        servers: vec![url.to_owned()],
        // async-nats waits this long before every attempt, the first included; a command
        // retries quickly within its connect timeout instead.
        reconnect_wait: Duration::from_millis(50),
        ..nats.clone()
    };
    let fail = |why: String| CliError::Io(format!("NATS {}: {why}", nas_store::redact_url(url)));
    let (client, mut events) = nas_server::nats::connect(&config, Arc::new(Metrics::new()))
        .await
        .map_err(|e| fail(e.to_string()))?;
    let connected = async {
        while let Some(event) = events.recv().await {
            if matches!(event, async_nats::Event::Connected) {
                return true;
            }
        }
        false
    };
    match tokio::time::timeout(nats.connect_timeout, connected).await {
        Ok(true) => Ok(client),
        _ => Err(fail(format!(
            "not connected within {:?}",
            nats.connect_timeout
        ))),
    }
}

/// The progress bar as the survey's progress.
struct Bar(ProgressBar);

impl nas_server::nats::Progress for Bar {
    fn planned(&self, n: u64) {
        self.0.inc_length(n);
    }
    fn done(&self, n: u64) {
        self.0.inc(n);
    }
}

fn status(d: &ServerDrift) -> &'static str {
    if d.drifted() {
        "drift"
    } else {
        "in sync"
    }
}

fn report_json(r: &Report) -> Value {
    let servers: Vec<Value> = r
        .drifts
        .iter()
        .map(|d| {
            json!({
                "name": d.server.name,
                "id": d.server.id,
                "version": d.server.version,
                "resolver": d.kind.name(),
                "status": status(d),
                "in_sync": d.in_sync,
                "missing": d.missing,
                "older": d.older,
                "newer": d.newer,
                "extra": d.extra,
            })
        })
        .collect();
    let unanswered: Vec<Value> = r
        .unanswered
        .iter()
        .map(|(name, reason)| json!({ "name": name, "reason": reason }))
        .collect();
    json!({
        "in_sync": !r.drifted() && r.unanswered.is_empty(),
        "store_accounts": r.store.len(),
        "servers": servers,
        "unanswered": unanswered,
    })
}

fn pushed_json(pushed: &[Pushed]) -> Value {
    pushed
        .iter()
        .map(|p| {
            let (ok, text) = match &p.result {
                Ok(m) => (true, m),
                Err(e) => (false, e),
            };
            json!({ "server": p.server, "account": p.account, "ok": ok, "result": text })
        })
        .collect()
}

fn print_table(r: &Report, verbose: bool) {
    println!(
        "{:<24}{:<12}{:<10}{:>9}{:>9}{:>7}{:>7}{:>7}  status",
        "nats-server", "resolver", "version", "in-sync", "missing", "older", "newer", "extra"
    );
    for d in &r.drifts {
        let [missing, older, newer, extra] = d.counts();
        println!(
            "{:<24}{:<12}{:<10}{:>9}{missing:>9}{older:>7}{newer:>7}{extra:>7}  {}",
            d.server.name,
            d.kind.name(),
            d.server.version,
            d.in_sync,
            status(d)
        );
    }
    for (name, reason) in &r.unanswered {
        println!("{name:<24}not checked: {reason}");
    }
    if verbose {
        for d in &r.drifts {
            for (kind, keys) in [
                ("missing", &d.missing),
                ("older", &d.older),
                ("newer", &d.newer),
                ("extra", &d.extra),
            ] {
                for key in keys {
                    println!("  {} {kind} {key}", d.server.name);
                }
            }
        }
    }
    let in_sync = r.drifts.iter().filter(|d| !d.drifted()).count();
    println!(
        "{in_sync} of {} nats-servers in sync with the store's {} accounts",
        r.drifts.len() + r.unanswered.len(),
        r.store.len()
    );
}

fn print_pushed(pushed: &[Pushed]) {
    for p in pushed {
        match &p.result {
            Ok(m) => println!("pushed {} to {}: {m}", p.account, p.server),
            Err(e) => println!("not repaired {} on {}: {e}", p.account, p.server),
        }
    }
}
