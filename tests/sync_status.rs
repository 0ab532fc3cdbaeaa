//! Drift against real nats-servers (operator mode, full resolvers, 2.9.10 and 2.15.1 mixed):
//! `sync-status` over four unclustered servers — one in sync, one missing accounts, one using
//! an older version of an account, and a cache resolver, which lacks every account without that
//! being drift — with its table, JSON and exit code 1; `--repair` fixes both
//! (exit 0) and a re-run finds everything in sync. Then the periodic task of `sync { interval }`:
//! `nas_drift_accounts` shows a missing and an extra account of a real server and follows a
//! repair. A two-server cluster is surveyed through one connection. And the usage and connection
//! errors (exit 2).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use nas_jwt::SigningKey;
use nas_server::config::{Config, DirStore, StoreConfig};
use nas_server::server::Server;
use nas_testkit::{require_nats_servers, NatsBinary, NatsServer};
use serde_json::Value;

mod common;
use common::{cache_or_full_config, now, reissue, system_user_creds, user_creds, Operator};

const BIN: &str = env!("CARGO_BIN_EXE_nats-account-server");

/// A finished run of the binary.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", self.stdout, self.stderr))
    }
}

fn nas(args: &[&str]) -> Run {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("run the binary");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// An operator, its accounts (newest JWT each) and the files the tools need.
struct Setup {
    op: Operator,
    accounts: Vec<(SigningKey, String)>,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(count: usize) -> Setup {
        let op = Operator::new("drifting");
        let accounts = (0..count)
            .map(|i| {
                let key = SigningKey::generate(nas_jwt::KeyRole::Account);
                let jwt = reissue(&op, &key, &format!("A{i}"), now() - 100, |_| {});
                (key, jwt)
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("operator.jwt"), &op.jwt).unwrap();
        std::fs::write(dir.path().join("sys.creds"), system_user_creds(&op)).unwrap();
        Setup { op, accounts, dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn key(&self, i: usize) -> String {
        self.accounts[i].0.public_key().as_str().to_owned()
    }

    /// The store: a directory in the Go layout holding the newest JWT of `which` accounts.
    fn write_store(&self, which: impl Iterator<Item = usize>) -> PathBuf {
        let store = self.path("store");
        std::fs::create_dir_all(&store).unwrap();
        for i in which {
            let file = store.join(format!("{}.jwt", self.key(i)));
            std::fs::write(file, &self.accounts[i].1).unwrap();
        }
        store
    }

    /// A standalone full-resolver nats-server named `name` whose directory holds `files`.
    fn full_server(&self, bin: &NatsBinary, name: &str, files: &[(String, String)]) -> NatsServer {
        self.server(bin, name, "full", files)
    }

    /// A standalone `kind` (full or cache) resolver nats-server named `name`.
    fn server(
        &self,
        bin: &NatsBinary,
        name: &str,
        kind: &str,
        files: &[(String, String)],
    ) -> NatsServer {
        self.server_with(bin, name, kind, "", files)
    }

    /// [`Setup::server`] with `extra` config lines (a cluster block).
    fn server_with(
        &self,
        bin: &NatsBinary,
        name: &str,
        kind: &str,
        extra: &str,
        files: &[(String, String)],
    ) -> NatsServer {
        let config = format!(
            "server_name: {name}\n{extra}\n{}",
            cache_or_full_config(&self.op, kind, "")
        );
        let mut builder = NatsServer::builder(bin).config(config);
        for (key, jwt) in files {
            builder = builder.file(format!("jwt/{key}.jwt"), jwt);
        }
        builder.start()
    }

    fn files(&self, which: impl Iterator<Item = usize>) -> Vec<(String, String)> {
        which
            .map(|i| (self.key(i), self.accounts[i].1.clone()))
            .collect()
    }
}

/// A client of account `key`'s user, so the server loads (and uses) that account.
async fn connect_user(setup: &Setup, i: usize, server: &NatsServer) -> async_nats::Client {
    let creds = user_creds(&setup.accounts[i].0, "user");
    async_nats::ConnectOptions::with_credentials(&creds)
        .unwrap()
        .connect(server.url())
        .await
        .unwrap_or_else(|e| panic!("a user of A{i} connects to {}: {e}", server.url()))
}

fn server_entry<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no server {name} in {report}"))
}

fn keys(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect()
}

/// The table row of server `name`: resolver, version, in-sync, missing, older, newer, extra,
/// status.
fn row(stdout: &str, name: &str) -> Vec<String> {
    let line = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row for {name}:\n{stdout}"));
    line.split_whitespace().skip(1).map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_status_finds_missing_and_older_accounts_and_repair_fixes_them() {
    let started = Instant::now();
    let bins = require_nats_servers();
    let (old_bin, new_bin) = (&bins[0], &bins[bins.len() - 1]);
    let setup = Setup::new(5);
    let store = setup.write_store(0..5);
    // s3 stores and uses an older version of A0.
    let older_a0 = reissue(&setup.op, &setup.accounts[0].0, "A0", now() - 200, |_| {});
    let mut s3_files = setup.files(1..5);
    s3_files.push((setup.key(0), older_a0));
    let s1 = setup.full_server(new_bin, "s1", &setup.files(0..5));
    let s2 = setup.full_server(new_bin, "s2", &setup.files(0..2));
    let s3 = setup.full_server(old_bin, "s3", &s3_files);
    let s4 = setup.server(old_bin, "s4", "cache", &[]);
    let _users = [
        connect_user(&setup, 0, &s1).await,
        connect_user(&setup, 0, &s3).await,
    ];

    let store_url = format!("dir:{}", store.display());
    let (op, creds) = (setup.path("operator.jwt"), setup.path("sys.creds"));
    let (op, creds) = (op.to_str().unwrap(), creds.to_str().unwrap());
    let urls = [s1.url(), s2.url(), s3.url(), s4.url()];
    let args = |extra: &[&'static str]| -> Vec<String> {
        let mut a: Vec<String> = vec!["sync-status".into()];
        for url in &urls {
            a.extend(["--nats".into(), url.clone()]);
        }
        a.extend(["--creds", creds, "--store", &store_url, "--operator", op].map(String::from));
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |extra: &[&'static str]| {
        let a = args(extra);
        nas(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };

    // The table.
    let table = run(&[]);
    eprintln!("{}", table.stdout);
    assert_eq!(table.code, 1, "{}\n{}", table.stdout, table.stderr);
    let v = |name| row(&table.stdout, name);
    assert_eq!(
        v("s1")[0..7],
        [
            "full",
            new_bin.reported_version.as_str(),
            "5",
            "0",
            "0",
            "0",
            "0"
        ]
    );
    assert_eq!(v("s1")[7], "in");
    assert_eq!(v("s2")[2..7], ["2", "3", "0", "0", "0"]);
    assert_eq!(v("s2")[7], "drift");
    assert_eq!(
        v("s3")[0..7],
        [
            "full",
            old_bin.reported_version.as_str(),
            "4",
            "0",
            "1",
            "0",
            "0"
        ]
    );
    assert_eq!(v("s4")[0], "cache");
    assert_eq!(v("s4")[2..8], ["0", "0", "0", "0", "0", "in"]);
    assert!(table
        .stdout
        .contains("2 of 4 nats-servers in sync with the store's 5 accounts"));

    // The JSON: which accounts.
    let report = run(&["--json"]);
    assert_eq!(report.code, 1, "{}", report.stderr);
    let report = report.json();
    assert_eq!(report["in_sync"], false);
    assert_eq!(report["store_accounts"], 5);
    let s1_entry = server_entry(&report, "s1");
    assert_eq!(s1_entry["status"], "in sync");
    assert_eq!(s1_entry["resolver"], "full");
    let mut missing: Vec<String> = (2..5).map(|i| setup.key(i)).collect();
    missing.sort();
    let s2_entry = server_entry(&report, "s2");
    assert_eq!(keys(&s2_entry["missing"]), missing);
    assert_eq!(s2_entry["status"], "drift");
    let s3_entry = server_entry(&report, "s3");
    assert_eq!(keys(&s3_entry["older"]), [setup.key(0)]);
    assert!(keys(&s3_entry["missing"]).is_empty());
    let s4_entry = server_entry(&report, "s4");
    assert_eq!(s4_entry["resolver"], "cache");
    assert_eq!(s4_entry["status"], "in sync");
    for entry in [s1_entry, s2_entry, s3_entry, s4_entry] {
        assert!(keys(&entry["extra"]).is_empty(), "{entry}");
        assert!(keys(&entry["newer"]).is_empty(), "{entry}");
    }

    // --repair pushes the three missing accounts to s2 and A0 to s3, then checks again.
    let repaired = run(&["--repair", "--json"]);
    assert_eq!(repaired.code, 0, "{}\n{}", repaired.stdout, repaired.stderr);
    let repaired = repaired.json();
    let pushed = repaired["pushed"].as_array().unwrap();
    assert_eq!(pushed.len(), 4, "{repaired}");
    for p in pushed {
        assert_eq!(p["ok"], true, "{p}");
        assert_eq!(p["result"], "jwt updated", "{p}");
    }
    assert_eq!(repaired["before"]["in_sync"], false);
    assert_eq!(repaired["in_sync"], true, "{repaired}");

    // A run of its own agrees: everything in sync, exit 0 — this time with the server's own
    // config file (its nats and store blocks and operator), as README shows it.
    let servers: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    let config = format!(
        "operatorjwtpath: {op:?}\nstore {{ dir: {store:?} }}\nnats {{ servers: [{}], usercredentials: {creds:?} }}\n",
        servers.join(", ")
    );
    let config = write(setup.dir.path(), "nas.conf", &config);
    let after = nas(&["sync-status", "-c", &config]);
    assert_eq!(after.code, 0, "{}\n{}", after.stdout, after.stderr);
    for name in ["s1", "s2", "s3", "s4"] {
        assert_eq!(row(&after.stdout, name)[7], "in", "{}", after.stdout);
    }
    assert_eq!(row(&after.stdout, "s2")[2], "5");
    assert!(after.stdout.contains("4 of 4 nats-servers in sync"));
    eprintln!(
        "sync-status over four nats-servers ({} and {}): {:.1} s",
        old_bin.reported_version,
        new_bin.reported_version,
        started.elapsed().as_secs_f64()
    );
}

/// Waits until every server reachable through `url` knows `count` servers (a cluster has
/// formed and its members have heard of each other over `$SYS`).
async fn wait_for_cluster(url: &str, creds: &Path, count: u64) {
    let client = async_nats::ConnectOptions::with_credentials_file(creds)
        .await
        .unwrap()
        .connect(url)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let inbox = client.new_inbox();
        let mut sub = client.subscribe(inbox.clone()).await.unwrap();
        client
            .publish_with_reply("$SYS.REQ.SERVER.PING", inbox, "".into())
            .await
            .unwrap();
        let mut known = Vec::new();
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            known.push(v["statsz"]["active_servers"].as_u64().unwrap_or(0));
        }
        if known.len() as u64 == count && known.iter().all(|k| *k == count) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no cluster of {count}: {known:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_is_surveyed_through_one_connection() {
    let bins = require_nats_servers();
    let bin = &bins[bins.len() - 1];
    let setup = Setup::new(3);
    let store = setup.write_store(0..3);
    let (p1, p2) = (nas_testkit::free_port(), nas_testkit::free_port());
    let cluster = |own: u16, other: u16| {
        format!("cluster {{ name: c, listen: \"127.0.0.1:{own}\", routes: [\"nats-route://127.0.0.1:{other}\"] }}")
    };
    let c1 = setup.server_with(bin, "c1", "full", &cluster(p1, p2), &setup.files(0..3));
    let c2 = setup.server_with(bin, "c2", "full", &cluster(p2, p1), &setup.files(0..1));
    wait_for_cluster(&c1.url(), &setup.path("sys.creds"), 2).await;

    let store_url = format!("dir:{}", store.display());
    let (op, creds) = (setup.path("operator.jwt"), setup.path("sys.creds"));
    let base = [
        "sync-status",
        "--nats",
        &c1.url(),
        "--creds",
        creds.to_str().unwrap(),
        "--store",
        &store_url,
        "--operator",
        op.to_str().unwrap(),
        "--json",
    ];
    let run = nas(&base);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let report = run.json();
    assert_eq!(server_entry(&report, "c1")["status"], "in sync");
    let mut missing: Vec<String> = (1..3).map(|i| setup.key(i)).collect();
    missing.sort();
    assert_eq!(keys(&server_entry(&report, "c2")["missing"]), missing);

    let run = nas(&[&base[..], &["--repair"]].concat());
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let report = run.json();
    assert_eq!(
        report["pushed"].as_array().map(Vec::len),
        Some(2),
        "{report}"
    );
    assert_eq!(server_entry(&report, "c2")["in_sync"], 3);
    drop(c2);
}

/// Polls the server's metrics until they contain every line of `wanted` (an effect, not a
/// timing assertion).
async fn metrics_show(server: &Server, wanted: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = server.metrics.render();
        if wanted.iter().all(|w| text.lines().any(|l| l == w)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed {wanted:?}:\n{}",
            text.lines()
                .filter(|l| l.starts_with("nas_drift"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn drift_line(server: &str, kind: &str, n: usize) -> String {
    format!(r#"nas_drift_accounts{{kind="{kind}",server="{server}"}} {n}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_check_sets_the_drift_gauge_per_server() {
    let bins = require_nats_servers();
    let setup = Setup::new(4);
    // The store holds A0–A2; the server stores A0, A1 (A2 missing) and A3 (extra).
    let store = setup.write_store(0..3);
    let files = setup.files([0, 1, 3].into_iter());
    let nats = setup.full_server(&bins[bins.len() - 1], "t1", &files);

    let mut config = Config::default();
    config.http.host = "127.0.0.1".into();
    config.http.port = 0;
    config.store = StoreConfig::Dir(DirStore::new(store));
    config.operator_jwt_path = Some(setup.path("operator.jwt"));
    config.nats.servers = vec![nats.url()];
    config.nats.user_credentials = Some(setup.path("sys.creds"));
    config.nats.pack_interval = None;
    config.sync.interval = Some(Duration::from_millis(200));
    let server = Server::start(&config).await.unwrap();

    let wanted = |missing| {
        [
            drift_line("t1", "missing", missing),
            drift_line("t1", "older", 0),
            drift_line("t1", "newer", 0),
            drift_line("t1", "extra", 1),
        ]
    };
    metrics_show(&server, &wanted(1)).await;
    // Announcing A2 again (GET ?notify=true) makes the full resolver store it: the gauge
    // follows on a later round.
    let url = format!(
        "{}/jwt/v1/accounts/{}?notify=true",
        server.url(),
        setup.key(2)
    );
    assert_eq!(reqwest::get(url).await.unwrap().status(), 200);
    metrics_show(&server, &wanted(0)).await;
    server.stop().await;
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn usage_and_connection_errors_exit_2() {
    let setup = Setup::new(1);
    let store = setup.write_store(0..1);
    let store_url = format!("dir:{}", store.display());
    // No NATS servers at all.
    let run = nas(&["sync-status", "--store", &store_url]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("no NATS servers"), "{}", run.stderr);
    // No store.
    let run = nas(&["sync-status", "--nats", "nats://127.0.0.1:1"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("no store"), "{}", run.stderr);
    // A config whose NATS cannot be reached: exit 2 after its connecttimeout.
    let port = nas_testkit::free_port();
    let config = format!(
        "operatorjwtpath: {:?}\nstore {{ dir: {:?} }}\nnats {{ servers: [\"nats://127.0.0.1:{port}\"], connecttimeout: 300 }}\n",
        setup.path("operator.jwt"),
        store,
    );
    let config = write(setup.dir.path(), "nas.conf", &config);
    let run = nas(&["sync-status", "-c", &config]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("not connected within"),
        "{}",
        run.stderr
    );
}
