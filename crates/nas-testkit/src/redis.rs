//! A real redis-server process.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use tempfile::TempDir;

use crate::discover::{require_redis_server, ServiceBinary};
use crate::net::exchange;
use crate::process::Supervised;

const START_TIMEOUT: Duration = Duration::from_secs(10);

/// True when `PING` gets `+PONG` (or an auth error, which also proves the
/// server is serving commands).
fn redis_ready(port: u16, _log: &str) -> bool {
    exchange(port, b"PING\r\n", b"\r\n", Duration::from_millis(500)).is_some_and(|r| {
        r.starts_with(b"+PONG") || r.starts_with(b"-NOAUTH") || r.starts_with(b"-ERR AUTH")
    })
}

/// A running redis-server on `127.0.0.1:<ephemeral port>`, killed on drop.
///
/// Started with `--bind 127.0.0.1 --save "" --appendonly no` and its working
/// directory in a temporary dir, so nothing is persisted: after
/// [`restart`](Self::restart) the database is empty (unless persistence was
/// turned back on through [`start_with_args`](Self::start_with_args)).
pub struct RedisServer {
    // Declared first so the process is killed before the directory is removed.
    proc: Supervised,
    port: u16,
    bin: ServiceBinary,
    dir: TempDir,
}

fn path_arg(path: &Path) -> String {
    path.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 path {}", path.display()))
        .to_owned()
}

impl RedisServer {
    /// Starts redis-server, waiting (up to 10 s) until it answers `PING`.
    /// Panics with an install hint if redis-server is missing.
    pub fn start() -> RedisServer {
        Self::start_with_args(&[])
    }

    /// Like [`start`](Self::start) with extra command-line arguments appended
    /// after the defaults (later ones win), e.g. `["--requirepass", "pw"]`.
    pub fn start_with_args(extra: &[&str]) -> RedisServer {
        let bin = require_redis_server();
        let dir = tempfile::Builder::new()
            .prefix("nas-testkit-redis-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create temp dir: {e}"));
        let dir_path = dir.path().to_path_buf();
        let extra: Vec<OsString> = extra.iter().map(OsString::from).collect();
        let args_for = |port: u16| -> Vec<OsString> {
            let mut a: Vec<OsString> = [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--logfile",
                "",
            ]
            .iter()
            .map(OsString::from)
            .collect();
            a.push("--dir".into());
            a.push(dir_path.clone().into());
            a.extend(extra.iter().cloned());
            a
        };
        let mut proc = Supervised::new(
            "redis-server",
            &bin.path,
            &dir_path,
            dir_path.join("redis-server.log"),
            START_TIMEOUT,
        );
        let port = proc.start_on_free_port(&args_for, &redis_ready);
        RedisServer {
            proc,
            port,
            bin,
            dir,
        }
    }

    /// Starts redis-server with TLS on a second port besides the plain one (which the readiness
    /// check uses): `cert`/`key` are the server's PEM files, `ca` the CA clients are checked
    /// against (client certificates are not required). Returns the server and the TLS port.
    pub fn start_tls(cert: &Path, key: &Path, ca: &Path) -> (RedisServer, u16) {
        let tls_port = crate::free_port().to_string();
        let (cert, key, ca) = (path_arg(cert), path_arg(key), path_arg(ca));
        let server = Self::start_with_args(&[
            "--tls-port",
            &tls_port,
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "no",
        ]);
        let port = tls_port.parse().unwrap_or_else(|e| panic!("port: {e}"));
        (server, port)
    }

    /// Connection URL, `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The binary this server runs.
    pub fn binary(&self) -> &ServiceBinary {
        &self.bin
    }

    /// The server's temporary (working) directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's stdout+stderr so far (all runs).
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// Process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// True while the process is alive.
    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// Kills the server (SIGKILL) and reaps it; a no-op when stopped.
    pub fn stop(&mut self) {
        self.proc.kill();
    }

    /// (Re)starts the server on the same port with the same arguments,
    /// killing it first if running. The data set starts empty again.
    pub fn restart(&mut self) {
        self.proc.restart_same_port(self.port, &redis_ready);
    }
}

impl std::fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisServer")
            .field("version", &self.bin.version)
            .field("url", &self.url())
            .finish()
    }
}
