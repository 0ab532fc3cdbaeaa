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

/// How long a fresh cluster may take to agree on its slots (`cluster_state:ok` on every node).
const CLUSTER_OK_TIMEOUT: Duration = Duration::from_secs(20);

/// A real Redis Cluster of `masters` redis-server processes (no replicas), each on
/// `127.0.0.1:<ephemeral port>` with its own temporary directory and `nodes.conf`, joined with
/// `redis-cli --cluster create` (slots split evenly). Every node is killed on drop.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts the nodes, creates the cluster and waits (up to 20 s) until every node reports
    /// `cluster_state:ok`. Panics with an install hint if redis-server or redis-cli is missing,
    /// and with redis-cli's output if the cluster cannot be created.
    pub fn start(masters: usize) -> RedisCluster {
        assert!(
            masters >= 3,
            "redis-cli --cluster create needs at least 3 masters"
        );
        let nodes: Vec<RedisServer> = (0..masters)
            .map(|_| {
                RedisServer::start_with_args(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                ])
            })
            .collect();
        let cli = redis_cli(&nodes[0].bin);
        let mut create = std::process::Command::new(&cli);
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let out = create
            .arg("--cluster-yes")
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}; {}", cli.display(), crate::INSTALL_HINT));
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_until_ok();
        cluster
    }

    fn wait_until_ok(&self) {
        let deadline = std::time::Instant::now() + CLUSTER_OK_TIMEOUT;
        for node in &self.nodes {
            loop {
                let info = exchange(
                    node.port,
                    b"CLUSTER INFO\r\n",
                    b"cluster_known_nodes",
                    Duration::from_millis(500),
                )
                .unwrap_or_default();
                if String::from_utf8_lossy(&info).contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "redis cluster not ok after {CLUSTER_OK_TIMEOUT:?}: {}",
                    String::from_utf8_lossy(&info)
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Seed URLs, one per node (`redis://127.0.0.1:PORT/`).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The nodes, in the order they were started.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Kills node `i` (SIGKILL); its slots stay unserved (no replicas) until
    /// [`restart_node`](Self::restart_node).
    pub fn stop_node(&mut self, i: usize) {
        self.nodes[i].stop();
    }

    /// Kills node `i` (SIGKILL) and starts it again on the same port and directory: it keeps
    /// its cluster identity and slots (`nodes.conf`) but comes back with no data. Waits until
    /// every node reports `cluster_state:ok` again.
    pub fn restart_node(&mut self, i: usize) {
        self.nodes[i].restart();
        self.wait_until_ok();
    }
}

impl std::fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCluster")
            .field("urls", &self.urls())
            .finish()
    }
}

/// `redis-cli` beside the redis-server in use (Debian installs both in /usr/bin), else on PATH.
fn redis_cli(server: &ServiceBinary) -> std::path::PathBuf {
    let beside = server.path.with_file_name("redis-cli");
    if beside.is_file() {
        return beside;
    }
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("redis-cli"))
                .find(|c| c.is_file())
        })
        .unwrap_or_else(|| panic!("redis-cli not found; {}", crate::INSTALL_HINT))
}
