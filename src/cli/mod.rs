//! The operator subcommands (`inspect`, `migrate`, `sync-status`, `config nats-server`) and what
//! they share:
//! exit codes, reading inputs, the operator, the accept rule, progress bars.
//!
//! Exit codes of every subcommand: 0 ok; 1 refused, invalid, drift or errors found; 2 usage or
//! I/O error (clap's own usage errors exit 2 as well).

use std::io::{IsTerminal, Read};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nas_jwt::OperatorTrust;
use nas_server::accept::Accepter;

pub mod inspect;
pub mod migrate;
pub mod nats_config;
pub mod overlay;
pub mod store_url;
pub mod sync_status;

/// Exit code: something was refused, invalid, or found wrong.
pub const EXIT_REFUSED: u8 = 1;
/// Exit code: bad usage, or a file, URL or store could not be read or written.
pub const EXIT_USAGE: u8 = 2;

/// A failure that ends a subcommand with exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The arguments do not make sense together.
    #[error("{0}")]
    Usage(String),
    /// A file, URL or store could not be used.
    #[error("{0}")]
    Io(String),
}

impl CliError {
    /// Prints the error and returns exit code 2.
    pub fn exit(&self, command: &str) -> ExitCode {
        eprintln!("{command}: {self}");
        ExitCode::from(EXIT_USAGE)
    }
}

/// Reads a file, `-` (standard input) or an `http(s)://` URL (GET, 2xx only).
pub async fn read_source(source: &str) -> Result<Vec<u8>, CliError> {
    if source == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| CliError::Io(format!("standard input: {e}")))?;
        return Ok(buf);
    }
    if source.starts_with("http://") || source.starts_with("https://") {
        return fetch(source).await;
    }
    std::fs::read(source).map_err(|e| CliError::Io(format!("{source}: {e}")))
}

async fn fetch(url: &str) -> Result<Vec<u8>, CliError> {
    let fail = |e: String| CliError::Io(format!("GET {}: {e}", nas_store::redact_url(url)));
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| fail(e.to_string()))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| fail(e.to_string()))?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        return Err(fail(format!("{status}: {}", text.trim())));
    }
    Ok(body.to_vec())
}

/// The operator a `--operator` file (raw or decorated JWT) defines.
pub fn load_operator(path: &Path) -> Result<OperatorTrust, CliError> {
    let bytes =
        std::fs::read(path).map_err(|e| CliError::Io(format!("{}: {e}", path.display())))?;
    OperatorTrust::from_operator_jwt(&bytes)
        .map_err(|e| CliError::Usage(format!("operator JWT {}: {e}", path.display())))
}

/// The server's accept rule for `trust`, over a store it never writes: only
/// [`Accepter::check`] is used, so a JWT is refused for exactly the reason a POST gives.
pub fn accepter(trust: OperatorTrust) -> Accepter {
    let store = nas_store::Store::new(Arc::new(nas_store::memory::MemoryBackend::new()));
    let trust = Some(Arc::new(trust));
    let metrics = Arc::new(nas_server::metrics::Metrics::new());
    let cache = nas_server::cache::VerifiedCache::new(
        store.clone(),
        trust.clone(),
        metrics.clone(),
        &nas_server::cache::CacheOptions::default(),
    );
    Accepter::new(store, trust, cache, metrics, String::new())
}

/// The reason text of a refused POST: the error's message, with the validation issues an
/// [`AcceptError::Invalid`](nas_server::accept::AcceptError::Invalid) lists after it.
pub fn refusal_text(error: &nas_server::accept::AcceptError) -> String {
    match error {
        nas_server::accept::AcceptError::Invalid(issues) => {
            format!("{error} {}", issues.join("; "))
        }
        other => other.to_string(),
    }
}

/// A progress bar with rate and ETA on standard error, drawn only when it is a terminal.
pub fn progress(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, ETA {eta})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(what.to_owned());
    bar
}

/// A Unix time as `2024-01-31T12:00:00Z` (proleptic Gregorian calendar, UTC).
pub fn format_time(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_format_in_utc() {
        assert_eq!(super::format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::format_time(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(super::format_time(951_782_400), "2000-02-29T00:00:00Z");
    }
}
