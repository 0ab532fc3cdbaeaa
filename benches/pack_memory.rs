//! `GET /jwt/v1/pack?max=-1` of a directory store of N operator-signed accounts: wall time,
//! server CPU time and RSS growth (peak RSS during the pack minus RSS before it), for one or
//! more server binaries side by side in one run (say, before and after a change), alternating.
//!
//!   cargo bench --no-default-features --bench pack_memory -- [N]
//!   BINS="before=/path/a after=/path/b" ROUNDS=3 cargo bench --no-default-features --bench pack_memory
//!
//! Defaults: N = 100,000, ROUNDS = 2, BINS = "current=target/release/nats-account-server". Each
//! round starts the server afresh (a cold pack: nothing cached, every entry read and verified),
//! reads the body as it arrives without keeping it, then stops the server. The accounts are
//! generated once, in parallel (`nas_testkit::accounts`), into a temporary directory.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` probes bench binaries with --list.
    }
    let count: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    let rounds: usize = env_or("ROUNDS", 2);
    let bins = std::env::var("BINS")
        .unwrap_or_else(|_| "current=target/release/nats-account-server".to_owned());
    let bins: Vec<(String, PathBuf)> = bins
        .split_whitespace()
        .map(|b| {
            let (name, path) = b.split_once('=').expect("BINS entries are name=path");
            (name.to_owned(), PathBuf::from(path))
        })
        .collect();

    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("jwt");
    let started = Instant::now();
    let operator = nas_testkit::accounts::write_dir_store(&store, count);
    std::fs::write(tmp.path().join("operator.jwt"), &operator).expect("operator");
    println!(
        "{count} accounts written in {:.1?} ({})",
        started.elapsed(),
        machine()
    );
    println!("| round | binary | pack time | server CPU | RSS before | RSS growth | body bytes |");
    println!("|---|---|---|---|---|---|---|");
    for round in 1..=rounds {
        for (name, bin) in &bins {
            let m = measure(bin, tmp.path(), &store);
            println!(
                "| {round} | {name} | {:.2?} | {:.2?} | {} MiB | {} MiB | {} |",
                m.wall,
                m.cpu,
                m.rss_before_kib / 1024,
                m.rss_growth_kib / 1024,
                m.bytes
            );
        }
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!("{cpus} CPUs, load average {}", load.join(" "))
}

struct Measured {
    wall: Duration,
    cpu: Duration,
    rss_before_kib: u64,
    rss_growth_kib: u64,
    bytes: usize,
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn measure(bin: &Path, dir: &Path, store: &Path) -> Measured {
    let port = nas_testkit::free_port();
    let config = dir.join("nas.conf");
    std::fs::write(
        &config,
        format!(
            "operatorjwtpath: \"{}\"\nmaxreplicationpack: -1\nhttp {{ host: \"127.0.0.1\", port: {port} }}\nstore {{ dir: \"{}\" }}\nlogging {{ colors: false }}\n",
            dir.join("operator.jwt").display(),
            store.display()
        ),
    )
    .expect("config");
    let child = Command::new(bin)
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let server = Running(child);
    let pid = server.0.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    while nas_testkit::http_request(port, "GET", "/healthz", &[], b"").is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let rss_before_kib = status_kib(pid, "VmRSS:");
    let cpu_before = cpu_time(pid);
    let started = Instant::now();
    let bytes = read_pack(port);
    let wall = started.elapsed();
    let cpu = cpu_time(pid) - cpu_before;
    let rss_growth_kib = status_kib(pid, "VmHWM:").saturating_sub(rss_before_kib);
    drop(server);
    Measured {
        wall,
        cpu,
        rss_before_kib,
        rss_growth_kib,
        bytes,
    }
}

/// Reads the whole response of `GET /jwt/v1/pack?max=-1` as it arrives, keeping nothing;
/// returns the bytes read (headers and chunk framing included).
fn read_pack(port: u16) -> usize {
    use std::io::Write;
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.write_all(b"GET /jwt/v1/pack?max=-1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(e) => panic!("reading the pack: {e}"),
        }
    }
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("field")
}

/// utime + stime of the process (clock ticks of 10 ms).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after_name = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<u64> = after_name
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    Duration::from_millis((fields[11] + fields[12]) * 10)
}
