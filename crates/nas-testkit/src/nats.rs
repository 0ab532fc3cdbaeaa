//! A real nats-server process.

use std::cell::Cell;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::discover::NatsBinary;
use crate::net::{accepts_tcp, free_port};
use crate::process::Supervised;

const READY: &str = "Server is ready";
const START_TIMEOUT: Duration = Duration::from_secs(10);
const CONFIG_FILE: &str = "nats-server.conf";
const LOG_FILE: &str = "nats-server.log";
/// Placeholder replaced by the server's temporary directory in configs.
const DIR_PLACEHOLDER: &str = "{{dir}}";

/// Prepares a [`NatsServer`]: its temporary directory exists as soon as the
/// builder does, so files (operator JWT, creds, resolver dirs) can be written
/// there and referenced from the config before the server starts.
pub struct NatsServerBuilder {
    bin: NatsBinary,
    config: String,
    monitoring: bool,
    port: Option<u16>,
    dir: TempDir,
}

impl NatsServerBuilder {
    /// Listens on this port instead of a free one (for peers that must know the URL before the
    /// server starts, such as an account server started first). Take it from
    /// [`free_port`](crate::free_port).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// The server's temporary directory (deleted when the server is dropped).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Sets the configuration text. Every `{{dir}}` in it is replaced with
    /// [`dir`](Self::dir). `listen`/`port`/`host` in it are overridden by
    /// command-line flags (`-a 127.0.0.1 -p <free port>`).
    /// The config file lives in `dir()`, so relative `include` paths (the only
    /// kind nats-server accepts) resolve there.
    pub fn config(mut self, config: impl Into<String>) -> Self {
        self.config = config.into();
        self
    }

    /// Writes `contents` to `dir()/name` (creating parent directories).
    /// Panics on I/O errors.
    pub fn file(self, name: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> Self {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
        }
        std::fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        self
    }

    /// Also enables the HTTP monitoring endpoint on another free port
    /// (see [`NatsServer::monitoring_url`]).
    pub fn monitoring(mut self) -> Self {
        self.monitoring = true;
        self
    }

    /// Writes the config and starts the server, waiting until it logs
    /// "Server is ready" and accepts TCP connections. Panics (with the log
    /// tail) if it does not within 10 s.
    pub fn start(self) -> NatsServer {
        let dir_path = self.dir.path().to_path_buf();
        let dir_str = dir_path.to_string_lossy().into_owned();
        let config = self.config.replace(DIR_PLACEHOLDER, &dir_str);
        let config_path = dir_path.join(CONFIG_FILE);
        std::fs::write(&config_path, &config)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", config_path.display()));

        // JetStream would default to a store dir shared between tests; point
        // it into our temp dir unless the config chooses one itself (nats-server
        // rejects both). Harmless when JetStream is not enabled.
        let own_store_dir = !config.contains("store_dir");
        let monitoring = self.monitoring;
        let monitoring_port = Cell::new(None);
        let args_for = |port: u16| -> Vec<OsString> {
            let mut a: Vec<OsString> = vec![
                "-c".into(),
                config_path.clone().into(),
                "-a".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port.to_string().into(),
            ];
            if monitoring {
                let m = free_port();
                monitoring_port.set(Some(m));
                a.extend(["-m".into(), m.to_string().into()]);
            }
            if own_store_dir {
                a.extend(["-sd".into(), dir_path.clone().into()]);
            }
            a
        };
        let mut proc = Supervised::new(
            "nats-server",
            &self.bin.path,
            &dir_path,
            dir_path.join(LOG_FILE),
            START_TIMEOUT,
        );
        let port = match self.port {
            Some(port) => {
                proc.set_args(args_for(port));
                proc.restart_same_port(port, &nats_ready);
                port
            }
            None => proc.start_on_free_port(&args_for, &nats_ready),
        };
        NatsServer {
            proc,
            port,
            monitoring_port: monitoring_port.get(),
            bin: self.bin,
            config_path,
            dir: self.dir,
        }
    }
}

fn nats_ready(port: u16, log: &str) -> bool {
    log.contains(READY) && accepts_tcp(port)
}

/// A running nats-server on `127.0.0.1:<ephemeral port>`, killed on drop.
///
/// Its temporary [`dir`](Self::dir) holds `nats-server.conf`,
/// `nats-server.log` (stdout+stderr of every run) and, when JetStream is on
/// without an explicit `store_dir`, the JetStream store (which survives
/// [`restart`](Self::restart)).
pub struct NatsServer {
    // Declared first so the process is killed before the directory is removed.
    proc: Supervised,
    port: u16,
    monitoring_port: Option<u16>,
    bin: NatsBinary,
    config_path: PathBuf,
    dir: TempDir,
}

impl NatsServer {
    /// Starts `bin` with `config` (see [`NatsServerBuilder::config`]).
    pub fn start(bin: &NatsBinary, config: &str) -> NatsServer {
        Self::builder(bin).config(config).start()
    }

    /// A builder, for writing extra files or enabling monitoring first.
    pub fn builder(bin: &NatsBinary) -> NatsServerBuilder {
        let dir = tempfile::Builder::new()
            .prefix("nas-testkit-nats-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create temp dir: {e}"));
        NatsServerBuilder {
            bin: bin.clone(),
            config: String::new(),
            monitoring: false,
            port: None,
            dir,
        }
    }

    /// Client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:MPORT` when started with
    /// [`NatsServerBuilder::monitoring`].
    pub fn monitoring_url(&self) -> Option<String> {
        self.monitoring_port
            .map(|p| format!("http://127.0.0.1:{p}"))
    }

    /// The binary this server runs.
    pub fn binary(&self) -> &NatsBinary {
        &self.bin
    }

    /// The server's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The config file in use. Edits to it take effect on
    /// [`restart`](Self::restart) or [`reload`](Self::reload).
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Path of the log file.
    pub fn log_path(&self) -> &Path {
        self.proc.log_path()
    }

    /// The server's stdout+stderr so far (all runs; each run starts with a
    /// `=== nas-testkit: starting …` line).
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// Polls the whole log (all runs) until it contains `needle`; false on
    /// timeout.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
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
    /// Clients see the connection drop. Use [`restart`](Self::restart) to
    /// bring it back on the same port.
    pub fn stop(&mut self) {
        self.proc.kill();
    }

    /// (Re)starts the server with the same binary, port and config file,
    /// killing it first if running. Waits until it is ready again.
    pub fn restart(&mut self) {
        self.proc.restart_same_port(self.port, &nats_ready);
    }

    /// Asks the running server to reload its config file
    /// (`nats-server --signal reload=PID`) and waits up to 10 s for
    /// "Reloaded server configuration" in the log. Errors carry the log's
    /// reload failure or a timeout message.
    pub fn reload(&self) -> Result<(), String> {
        let pid = self.pid().ok_or("nats-server is not running")?;
        let from = self.log().len();
        let out = Command::new(&self.bin.path)
            .arg("--signal")
            .arg(format!("reload={pid}"))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run nats-server --signal: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "nats-server --signal reload={pid} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            let new = log.get(from..).unwrap_or_default();
            if new.contains("Reloaded server configuration") {
                return Ok(());
            }
            if let Some(line) = new
                .lines()
                .find(|l| l.contains("Failed to reload server configuration"))
            {
                return Err(line.to_string());
            }
            if Instant::now() >= deadline {
                return Err("no reload confirmation in the log within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl std::fmt::Debug for NatsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsServer")
            .field("version", &self.bin.reported_version)
            .field("url", &self.url())
            .field("dir", &self.dir.path())
            .finish()
    }
}
