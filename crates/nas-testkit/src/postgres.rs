//! A real PostgreSQL server (`initdb` + `postgres`) in a temporary directory.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::discover::{require_postgres, PostgresBinaries};
use crate::net::accepts_tcp;
use crate::process::Supervised;

const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a fast shutdown may take before the server is killed outright.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// What the server logs once it takes queries (its port may accept TCP a little earlier,
/// while it is still starting up).
const READY_LINE: &str = "database system is ready to accept connections";

/// Ready when this run logged that it accepts connections and the port answers.
fn postgres_ready(port: u16, log: &str) -> bool {
    log.contains(READY_LINE) && accepts_tcp(port)
}

/// The system user PostgreSQL runs as when the tests run as root (it refuses to run as root).
const SYSTEM_USER: &str = "postgres";

/// A running PostgreSQL on `127.0.0.1:<ephemeral port>` with a fresh cluster (trust
/// authentication, superuser `postgres`, `fsync` off), stopped on drop.
///
/// When the tests run as root the server runs as the `postgres` system user (created by the
/// Debian package) through `setpriv`, which execs: [`pid`](Self::pid) is the server's own pid.
/// Unlike [`RedisServer`](crate::RedisServer), data survives [`stop`](Self::stop) and
/// [`start_again`](Self::start_again): the data directory is kept.
pub struct PostgresServer {
    // Declared first so the process is stopped before the directory is removed.
    proc: Supervised,
    port: u16,
    bin: PostgresBinaries,
    dir: TempDir,
}

fn path_arg(path: &Path) -> String {
    path.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 path {}", path.display()))
        .to_owned()
}

/// `(uid, gid)` of a system user, read from `/etc/passwd`.
fn system_user(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() > 3 && fields[0] == name)
            .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
            .flatten()
    })
}

/// How to run the PostgreSQL programs: directly, or (as root) through `setpriv` as the
/// `postgres` user. Returns the program and the arguments that come before the real ones.
fn launcher(dir: &Path) -> (PathBuf, Vec<OsString>) {
    // The owner of a directory we just created is our effective uid (std has no geteuid).
    let euid = std::fs::metadata(dir)
        .unwrap_or_else(|e| panic!("cannot stat {}: {e}", dir.display()))
        .uid();
    if euid != 0 {
        return (PathBuf::new(), Vec::new());
    }
    let (uid, gid) = system_user(SYSTEM_USER).unwrap_or_else(|| {
        panic!(
            "running as root, and PostgreSQL refuses to: no `{SYSTEM_USER}` system user to run \
             it as; install it with `apt-get install postgresql` (creates the user)"
        )
    });
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("cannot chown {} to {SYSTEM_USER}: {e}", dir.display()));
    let prefix = [
        format!("--reuid={SYSTEM_USER}"),
        format!("--regid={SYSTEM_USER}"),
        "--init-groups".into(),
        "--".into(),
    ];
    (
        PathBuf::from("setpriv"),
        prefix.into_iter().map(OsString::from).collect(),
    )
}

/// `program args…`, through the launcher when there is one.
fn command_line(
    launcher: &(PathBuf, Vec<OsString>),
    program: &Path,
    args: Vec<OsString>,
) -> (PathBuf, Vec<OsString>) {
    if launcher.0.as_os_str().is_empty() {
        return (program.to_path_buf(), args);
    }
    let mut all = launcher.1.clone();
    all.push(program.into());
    all.extend(args);
    (launcher.0.clone(), all)
}

/// Creates the cluster in `data` (superuser `postgres`, trust authentication for local tests).
fn initdb(launcher: &(PathBuf, Vec<OsString>), bin: &PostgresBinaries, data: &Path) {
    let args = [
        "-D",
        &path_arg(data),
        "-U",
        "postgres",
        "-A",
        "trust",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
    ];
    let (program, args) = command_line(
        launcher,
        &bin.initdb,
        args.iter().map(OsString::from).collect(),
    );
    let out = Command::new(&program)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run initdb ({}): {e}", program.display()));
    if !out.status.success() {
        panic!(
            "initdb failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Writes `dir/name` with mode 0600, owned by the owner of `dir` (the server's user).
fn write_private(dir: &Path, name: &str, contents: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, contents)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
    let owner =
        std::fs::metadata(dir).unwrap_or_else(|e| panic!("cannot stat {}: {e}", dir.display()));
    std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid()))
        .unwrap_or_else(|e| panic!("cannot chown {}: {e}", path.display()));
}

impl PostgresServer {
    /// Runs `initdb` into a temporary directory and starts `postgres` on 127.0.0.1 (TCP only
    /// there; its Unix socket in the temporary directory), waiting (up to 20 s) until it logs
    /// that it accepts connections and its port answers. Panics with an install hint if
    /// PostgreSQL is missing.
    pub fn start() -> PostgresServer {
        Self::start_with_args(&[])
    }

    /// Like [`start`](Self::start) with extra `postgres` arguments appended after the
    /// defaults (later ones win), e.g. `["-c", "ssl=on"]`.
    pub fn start_with_args(extra: &[&str]) -> PostgresServer {
        Self::start_with_files(extra, &[])
    }

    /// Starts with TLS on (`ssl=on`; plain connections are still accepted): `cert` and `key`
    /// are the server's PEM certificate (chain) and private key.
    pub fn start_tls(cert: &[u8], key: &[u8]) -> PostgresServer {
        Self::start_with_files(
            &[
                "-c",
                "ssl=on",
                "-c",
                "ssl_cert_file=server.crt",
                "-c",
                "ssl_key_file=server.key",
            ],
            &[("server.crt", cert), ("server.key", key)],
        )
    }

    /// Like [`start_with_args`](Self::start_with_args), first writing `files` (name,
    /// contents) into the data directory, readable by the server only (as PostgreSQL demands
    /// of a key file), so `-c` settings can name them relative to it.
    pub fn start_with_files(extra: &[&str], files: &[(&str, &[u8])]) -> PostgresServer {
        let bin = require_postgres();
        let dir = tempfile::Builder::new()
            .prefix("nas-testkit-pg-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create temp dir: {e}"));
        let dir_path = dir.path().to_path_buf();
        let launcher = launcher(&dir_path);
        let data = dir_path.join("data");
        initdb(&launcher, &bin, &data);
        for (name, contents) in files {
            write_private(&data, name, contents);
        }
        let extra: Vec<OsString> = extra.iter().map(OsString::from).collect();
        let (program, _) = command_line(&launcher, &bin.postgres, Vec::new());
        let args_for = |port: u16| -> Vec<OsString> {
            let mut args: Vec<OsString> = [
                "-D".into(),
                path_arg(&data),
                "-p".into(),
                port.to_string(),
                "-h".into(),
                "127.0.0.1".into(),
                "-k".into(),
                path_arg(&dir_path),
                "-F".into(),
                "-c".into(),
                "max_connections=200".into(),
            ]
            .into_iter()
            .map(OsString::from)
            .collect();
            args.extend(extra.iter().cloned());
            command_line(&launcher, &bin.postgres, args).1
        };
        let mut proc = Supervised::new(
            "postgres",
            &program,
            &dir_path,
            dir_path.join("postgres.log"),
            START_TIMEOUT,
        );
        let port = proc.start_on_free_port(&args_for, &postgres_ready);
        PostgresServer {
            proc,
            port,
            bin,
            dir,
        }
    }

    /// Connection URL of the superuser, `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// Connection URL of another role (trust authentication: no password).
    pub fn url_for(&self, role: &str) -> String {
        format!("postgres://{role}@127.0.0.1:{}/postgres", self.port)
    }

    /// TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs `sql` as the superuser with the `psql` next to `postgres` (`-X -A -t`: no psqlrc,
    /// unaligned, tuples only) and returns its output; panics when psql fails. For what a test
    /// does beside the code under test: terminating sessions, counting them.
    pub fn psql(&self, sql: &str) -> String {
        let psql = self.bin.postgres.with_file_name("psql");
        let out = Command::new(&psql)
            .args([
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
            ])
            .args([
                "postgres",
                "-d",
                "postgres",
                "-p",
                &self.port.to_string(),
                "-c",
                sql,
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", psql.display()));
        if !out.status.success() {
            panic!(
                "psql -c {sql:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The binaries this server runs.
    pub fn binaries(&self) -> &PostgresBinaries {
        &self.bin
    }

    /// The temporary directory (the cluster is in `data/` below it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's stdout+stderr so far (all runs).
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// Process id of the postmaster while running.
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// True while the postmaster is alive.
    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// Fast shutdown (SIGINT: sessions are terminated, the data is kept), waiting for the
    /// server to exit; killed (SIGKILL) if it takes longer than 10 s. A no-op when stopped.
    pub fn stop(&mut self) {
        let Some(pid) = self.proc.pid() else { return };
        if self.proc.is_running() {
            // std can only SIGKILL a child; a SIGKILLed postmaster would leave its backends
            // behind, holding the shared memory a restart needs.
            let _ = Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + STOP_TIMEOUT;
            while self.proc.is_running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(25));
            }
        }
        self.proc.kill();
    }

    /// Starts the stopped server again on the same port and data directory (stopping it first
    /// if it runs), waiting until it accepts connections.
    pub fn start_again(&mut self) {
        self.stop();
        self.proc.restart_same_port(self.port, &postgres_ready);
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for PostgresServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresServer")
            .field("version", &self.bin.version)
            .field("url", &self.url())
            .finish()
    }
}
