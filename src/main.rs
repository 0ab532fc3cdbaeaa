//! `nats-account-server`: serves operator-signed NATS account JWTs over HTTP and NATS.

#![forbid(unsafe_code)]

use clap::Parser;

/// Command-line flags, compatible with the Go nats-account-server.
#[derive(Debug, Parser)]
#[command(name = "nats-account-server", version, about, long_about = None)]
struct Cli {
    /// Configuration file.
    #[arg(short = 'c', long = "config")]
    config: Option<std::path::PathBuf>,
}

fn main() {
    let cli = Cli::parse();
    eprintln!(
        "nats-account-server {}: the server itself is not implemented yet (config: {:?})",
        env!("CARGO_PKG_VERSION"),
        cli.config
    );
    std::process::exit(2);
}
