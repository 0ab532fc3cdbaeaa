//! `config nats-server`: the `operator`, `system_account` and resolver part of a nats-server
//! configuration that matches this account server's configuration
//! (`docs/spec/config-and-cli.md` §10).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use nas_server::config::Config;

use super::CliError;

/// Which nats-server resolver to configure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// `resolver: URL(…)`: nats-server fetches accounts from this server over HTTP.
    Url,
    /// `resolver { type: cache }`: nats-server asks over NATS (LOOKUP, answered by this
    /// server's NATS responder) and keeps what it learns in a bounded directory cache.
    Cache,
    /// `resolver { type: full }`: nats-server keeps every account in its own directory, kept in
    /// step with this server over NATS (PACK, updates, deletes).
    Full,
}

/// `config nats-server`'s arguments.
#[derive(Debug, clap::Args)]
pub struct NatsServerArgs {
    /// The resolver to configure.
    #[arg(long, value_enum, default_value = "url")]
    pub shape: Shape,
    /// This account server's configuration file (operatorjwtpath, systemaccountjwtpath, http,
    /// nats.allowdelete are read from it).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Operator JWT file (default: the config's operatorjwtpath).
    #[arg(long, value_name = "OPERATOR.JWT")]
    pub operator: Option<PathBuf>,
    /// This account server's URL as the nats-servers reach it, e.g. `https://nas.example.com:9443`
    /// (default: from the config's http block). For --shape url.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// nats-server's resolver directory, for --shape cache and full (one per nats-server).
    #[arg(long, value_name = "DIR", default_value = "./jwt")]
    pub resolver_dir: PathBuf,
}

/// The end of `config nats-server --help`: exit codes.
pub const AFTER_HELP: &str = "\
EXIT CODES:
  0 printed; 2 usage error (no operator, a system account JWT the operator does not trust), or a
  file cannot be read.";

/// `config`'s subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Print the operator, system_account and resolver lines (and the system account's
    /// resolver_preload for cache/full) of a nats-server config that uses this account server.
    /// Paste them into nats-server.conf; check with `nats-server -t -c nats-server.conf`.
    #[command(after_help = AFTER_HELP)]
    NatsServer(NatsServerArgs),
}

/// Runs `config nats-server`.
pub fn run(args: &NatsServerArgs) -> ExitCode {
    match render(args) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => e.exit("config nats-server"),
    }
}

/// What the output is made from.
struct Facts {
    operator_path: PathBuf,
    system_account: Option<String>,
    /// The system account JWT, when the config names its file.
    system_jwt: Option<String>,
    config: Config,
}

fn read_config(path: Option<&Path>) -> Result<Config, CliError> {
    let Some(path) = path else {
        return Ok(Config::default());
    };
    let (config, warnings) =
        Config::from_file(path).map_err(|e| CliError::Io(format!("{}: {e}", path.display())))?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    Ok(config)
}

fn facts(args: &NatsServerArgs) -> Result<Facts, CliError> {
    let config = read_config(args.config.as_deref())?;
    let operator_path = args
        .operator
        .clone()
        .or_else(|| config.operator_jwt_path.clone())
        .or_else(|| nas_server::backend::nsc_operator_jwt(&config.store))
        .ok_or_else(|| {
            CliError::Usage(
                "no operator: pass --operator or -c with a config that names operatorjwtpath"
                    .into(),
            )
        })?;
    let trust = super::load_operator(&operator_path)?;
    let operator_path = std::path::absolute(&operator_path)
        .map_err(|e| CliError::Io(format!("{}: {e}", operator_path.display())))?;
    let system_jwt = match &config.system_account_jwt_path {
        Some(path) => Some(read_system_account(path, &trust)?),
        None => None,
    };
    let from_jwt = system_jwt
        .as_deref()
        .and_then(|j| nas_jwt::jwt::peek_payload(j.as_bytes()).ok())
        .and_then(|p| p.get("sub").and_then(|s| s.as_str()).map(str::to_owned));
    let system_account = trust.system_account().map(str::to_owned).or(from_jwt);
    Ok(Facts {
        operator_path,
        system_account,
        system_jwt,
        config,
    })
}

/// The system account JWT (verified against the operator, as the server does at start).
fn read_system_account(path: &Path, trust: &nas_jwt::OperatorTrust) -> Result<String, CliError> {
    let bytes =
        std::fs::read(path).map_err(|e| CliError::Io(format!("{}: {e}", path.display())))?;
    let token = nas_jwt::creds::extract_jwt(&String::from_utf8_lossy(&bytes));
    let verified = trust
        .verify_account_untimed(token.as_bytes(), None)
        .map_err(|e| CliError::Usage(format!("system account JWT {}: {e}", path.display())))?;
    if let Some(sys) = trust.system_account() {
        if sys != verified.claims.sub {
            return Err(CliError::Usage(format!(
                "the operator's system account {sys} differs from the configured system account {}",
                verified.claims.sub
            )));
        }
    }
    Ok(verified.token)
}

/// A string as a nats-server config string literal.
fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

fn render(args: &NatsServerArgs) -> Result<String, CliError> {
    let f = facts(args)?;
    let mut out = format!(
        "# nats-server resolver settings for this account server ({} resolver),\n\
         # printed by `nats-account-server config nats-server`.\n",
        shape_name(args.shape)
    );
    // Writing into a String cannot fail.
    let _ = writeln!(
        out,
        "operator: {}",
        quoted(&f.operator_path.to_string_lossy())
    );
    match &f.system_account {
        Some(sys) => {
            let _ = writeln!(out, "system_account: {sys}");
        }
        None => out.push_str(
            "# the operator names no system account and the config has no systemaccountjwtpath\n",
        ),
    }
    match args.shape {
        Shape::Url => out.push_str(&url_resolver(args, &f.config)?),
        Shape::Cache | Shape::Full => out.push_str(&dir_resolver(args, &f)),
    }
    Ok(out)
}

fn shape_name(shape: Shape) -> &'static str {
    match shape {
        Shape::Url => "URL",
        Shape::Cache => "cache",
        Shape::Full => "full",
    }
}

/// `resolver: URL(<base>/jwt/v1/accounts/)`.
fn url_resolver(args: &NatsServerArgs, config: &Config) -> Result<String, CliError> {
    let base = match &args.url {
        Some(url) => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(CliError::Usage(format!(
                    "--url {url:?} is not an http(s):// URL"
                )));
            }
            let url = url.trim_end_matches('/');
            let url = url.strip_suffix("/jwt/v1/accounts").unwrap_or(url);
            url.strip_suffix("/jwt/v1").unwrap_or(url).to_owned()
        }
        None => configured_base(config),
    };
    let mut out = format!("resolver: URL({base}/jwt/v1/accounts/)\n");
    if base.starts_with("https://") {
        out.push_str("# for a certificate nats-server does not trust by default:\n# resolver_tls { ca_file: \"/path/to/ca.pem\" }\n");
    }
    Ok(out)
}

/// The URL the config's http block listens on (a wildcard host becomes localhost).
fn configured_base(config: &Config) -> String {
    let scheme = if config.http.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let host = match config.http.host.as_str() {
        "" | "0.0.0.0" | "::" | "[::]" => "localhost",
        host => host,
    };
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    format!("{scheme}://{host}:{}", config.http.port)
}

/// `resolver { type: cache|full, … }` and the system account's preload.
fn dir_resolver(args: &NatsServerArgs, f: &Facts) -> String {
    let dir = quoted(&args.resolver_dir.to_string_lossy());
    let mut out = String::from("resolver {\n");
    match args.shape {
        Shape::Cache => {
            let _ = write!(
                out,
                "  type: cache\n  dir: {dir}\n  ttl: \"1h\"\n  limit: 1000\n  timeout: \"1900ms\"\n"
            );
        }
        _ => {
            let _ = write!(
                out,
                "  type: full\n  dir: {dir}\n  allow_delete: {}\n  interval: \"2m\"\n  timeout: \"1900ms\"\n",
                f.config.nats.allow_delete
            );
        }
    }
    out.push_str("}\n");
    match (&f.system_account, &f.system_jwt) {
        (Some(sys), Some(jwt)) => {
            let _ = write!(out, "resolver_preload {{\n  {sys}: {}\n}}\n", quoted(jwt));
        }
        _ => out.push_str("# no systemaccountjwtpath in the account server's config: preload the system account\n# here, or have the account server connect as a user signed by its identity key.\n"),
    }
    if f.config.nats.servers.is_empty() {
        out.push_str("# note: the account server's config has no nats { servers }: it must connect to these\n# nats-servers to answer their lookups and send them updates.\n");
    }
    out
}
