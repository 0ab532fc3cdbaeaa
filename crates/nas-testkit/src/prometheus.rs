//! A real Prometheus server (Debian package `prometheus`) and its `promtool`.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::discover::{require_prometheus, PrometheusBinaries};
use crate::net::{http_request, HttpResponse};
use crate::process::Supervised;

const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Ready once `/-/ready` answers 200 (the TSDB is open and the config loaded).
fn prometheus_ready(port: u16, _log: &str) -> bool {
    http_request(port, "GET", "/-/ready", &[], b"").is_ok_and(|r| r.status == 200)
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A running Prometheus on `127.0.0.1:<ephemeral port>` with its TSDB in a temporary directory,
/// killed on drop.
///
/// The caller supplies the whole `prometheus.yml` (scrape interval, targets, `rule_files` with
/// absolute paths); it is written to [`dir`](Self::dir)`/prometheus.yml`.
pub struct PrometheusServer {
    // Declared first so the process is killed before the directory is removed.
    proc: Supervised,
    port: u16,
    bin: PrometheusBinaries,
    dir: TempDir,
}

impl PrometheusServer {
    /// Starts Prometheus with `config` (the text of `prometheus.yml`), waiting (up to 20 s)
    /// until `/-/ready` answers 200. Panics with an install hint if Prometheus is missing, and
    /// with its log if it refuses the config.
    pub fn start(config: &str) -> PrometheusServer {
        let bin = require_prometheus();
        let dir = tempfile::Builder::new()
            .prefix("nas-testkit-prometheus-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create temp dir: {e}"));
        let dir_path = dir.path().to_path_buf();
        let config_path = dir_path.join("prometheus.yml");
        std::fs::write(&config_path, config)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", config_path.display()));
        let data = dir_path.join("data");
        let args_for = |port: u16| -> Vec<std::ffi::OsString> {
            vec![
                format!("--config.file={}", config_path.display()).into(),
                format!("--storage.tsdb.path={}", data.display()).into(),
                format!("--web.listen-address=127.0.0.1:{port}").into(),
                "--storage.tsdb.retention.time=1h".into(),
                "--log.level=warn".into(),
            ]
        };
        let mut proc = Supervised::new(
            "prometheus",
            &bin.prometheus,
            &dir_path,
            dir_path.join("prometheus.log"),
            START_TIMEOUT,
        );
        let port = proc.start_on_free_port(&args_for, &prometheus_ready);
        PrometheusServer {
            proc,
            port,
            bin,
            dir,
        }
    }

    /// Base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The programs this server runs.
    pub fn binaries(&self) -> &PrometheusBinaries {
        &self.bin
    }

    /// The server's temporary directory (config, TSDB, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's stdout+stderr so far.
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// Process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// A GET of `path` (with its query string) on the HTTP API, e.g. `/api/v1/rules`.
    pub fn get(&self, path: &str) -> std::io::Result<HttpResponse> {
        http_request(self.port, "GET", path, &[], b"")
    }

    /// An instant query (`POST /api/v1/query`, evaluated now). The response is Prometheus's
    /// JSON (`{"status": "success", "data": {"resultType": …, "result": […]}}`, or
    /// `"status": "error"` with `errorType` and `error` and a 4xx status).
    pub fn query(&self, promql: &str) -> std::io::Result<HttpResponse> {
        let body = format!("query={}", form_encode(promql));
        http_request(
            self.port,
            "POST",
            "/api/v1/query",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            body.as_bytes(),
        )
    }
}

/// Runs `promtool` with `args` (e.g. `["check", "rules", "alerts.yml"]`) and returns its
/// output. Panics with an install hint if Prometheus (which ships promtool) is missing.
pub fn promtool(args: &[&str]) -> Output {
    let bin = require_prometheus();
    run(&bin.promtool, args)
}

fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
}

impl std::fmt::Debug for PrometheusServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusServer")
            .field("version", &self.bin.version)
            .field("url", &self.url())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::form_encode;

    #[test]
    fn form_encoding_escapes_promql() {
        assert_eq!(
            form_encode(r#"sum by (le) (rate(x{a=~"b.*"}[5m]))"#),
            "sum+by+%28le%29+%28rate%28x%7Ba%3D~%22b.%2A%22%7D%5B5m%5D%29%29"
        );
    }
}
