//! Spawning, readiness-polling and killing of service processes.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::discover::INSTALL_HINT;
use crate::net::free_port;

const POLL: Duration = Duration::from_millis(25);
const START_ATTEMPTS: usize = 5;

/// Startup timeout: `$NAS_TESTKIT_START_TIMEOUT_SECS` or `default`.
fn start_timeout(default: Duration) -> Duration {
    std::env::var("NAS_TESTKIT_START_TIMEOUT_SECS")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(default)
}

enum Outcome {
    Ready,
    Exited(String),
    TimedOut(Duration),
}

/// A child process whose stdout+stderr go to a log file; killed on drop.
pub(crate) struct Supervised {
    name: &'static str,
    program: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    cwd: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    timeout: Duration,
}

impl Supervised {
    pub(crate) fn new(
        name: &'static str,
        program: &Path,
        cwd: &Path,
        log_path: PathBuf,
        default_timeout: Duration,
    ) -> Self {
        Self {
            name,
            program: program.to_path_buf(),
            args: Vec::new(),
            envs: Vec::new(),
            cwd: cwd.to_path_buf(),
            log_path,
            child: None,
            timeout: start_timeout(default_timeout),
        }
    }

    pub(crate) fn env(&mut self, key: &str, value: &str) {
        self.envs.push((key.into(), value.into()));
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything logged so far (all runs, separated by marker lines).
    pub(crate) fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log_path)
            .map(|m| m.len())
            .unwrap_or(0)
    }

    fn log_since(&self, offset: u64) -> String {
        let bytes = std::fs::read(&self.log_path).unwrap_or_default();
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }

    fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub(crate) fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILLs and reaps the child (no-op when not running).
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Spawns the child and polls `ready(log_of_this_run)` until it is true,
    /// the child exits, or the startup timeout passes. Returns the outcome and
    /// the log of this run.
    fn run_until_ready(&mut self, ready: &mut dyn FnMut(&str) -> bool) -> (Outcome, String) {
        self.kill();
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.log_path.display()));
        let cmdline = std::iter::once(self.program.as_os_str())
            .chain(self.args.iter().map(OsString::as_os_str))
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(log, "=== nas-testkit: starting {cmdline}");
        let offset = self.log_len();
        let stderr = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot clone log file handle: {e}"));
        let child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({}): {e}; {INSTALL_HINT}",
                    self.name,
                    self.program.display()
                )
            });
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return (Outcome::Exited(status.to_string()), self.log_since(offset));
                }
            }
            let run_log = self.log_since(offset);
            if ready(&run_log) {
                return (Outcome::Ready, run_log);
            }
            if started.elapsed() >= self.timeout {
                self.kill();
                return (Outcome::TimedOut(self.timeout), self.log_since(offset));
            }
            std::thread::sleep(POLL);
        }
    }

    fn fail(&mut self, outcome: Outcome, port: u16) -> ! {
        self.kill();
        let what = match outcome {
            Outcome::Ready => "was ready".to_string(),
            Outcome::Exited(status) => format!("exited during startup ({status})"),
            Outcome::TimedOut(t) => format!("was not ready within {:.1} s", t.as_secs_f64()),
        };
        panic!(
            "{} ({}) on 127.0.0.1:{port} {what}; log {}:\n{}",
            self.name,
            self.program.display(),
            self.log_path.display(),
            self.log_tail(40)
        );
    }

    /// Starts the process on a fresh free port, retrying with another port
    /// when the chosen one turned out to be taken. Returns the port.
    /// Sets the arguments for the next start.
    pub(crate) fn set_args(&mut self, args: Vec<OsString>) {
        self.args = args;
    }

    pub(crate) fn start_on_free_port(
        &mut self,
        args_for: &dyn Fn(u16) -> Vec<OsString>,
        ready: &dyn Fn(u16, &str) -> bool,
    ) -> u16 {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port();
            self.args = args_for(port);
            let (outcome, log) = self.run_until_ready(&mut |l| ready(port, l));
            match outcome {
                Outcome::Ready => return port,
                Outcome::Exited(_) if address_in_use(&log) && attempt < START_ATTEMPTS => {}
                other => self.fail(other, port),
            }
        }
    }

    /// Starts the process again with the previous arguments (same port),
    /// waiting up to the startup timeout for the port to become free.
    pub(crate) fn restart_same_port(&mut self, port: u16, ready: &dyn Fn(u16, &str) -> bool) {
        let deadline = Instant::now() + self.timeout;
        loop {
            let (outcome, log) = self.run_until_ready(&mut |l| ready(port, l));
            match outcome {
                Outcome::Ready => return,
                Outcome::Exited(_) if address_in_use(&log) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                other => self.fail(other, port),
            }
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.kill();
    }
}

fn address_in_use(log: &str) -> bool {
    log.to_ascii_lowercase().contains("address already in use")
}
