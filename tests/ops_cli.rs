//! The operator subcommands end to end, the real binary against real services: `inspect` of
//! every JWT kind, `migrate` of 1,000 accounts dir → Redis → S3 → sharded dir (refusals, a
//! newer JWT at the destination, a tombstone, `--dry-run`, an interrupted run resumed into
//! PostgreSQL), and `config nats-server` output checked by real nats-servers.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use bytes::Bytes;
use futures::StreamExt;
use nas_jwt::{encode, AccountClaims, ActivationClaims, KeyRole, SigningKey};
use nas_server::accept::AcceptError;
use nas_server::config::{Config, DirStore, StoreConfig};
use nas_store::{Backend, Namespace, Store, TokenMeta};
use serde_json::Value;

mod common;
use common::{delete_request, now, user_creds, Operator};

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

fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("AWS_ACCESS_KEY_ID", nas_testkit::S3_ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", nas_testkit::S3_SECRET_ACCESS_KEY);
    cmd
}

fn nas(args: &[&str]) -> Run {
    let out = command(args).output().expect("run the binary");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

fn account_jwt(signer: &SigningKey, key: &SigningKey, name: &str, iat: i64, exp: i64) -> String {
    let mut claims = AccountClaims::new_account(key.public_key().as_str(), name);
    claims.exp = exp;
    encode(&mut claims, signer, iat).unwrap()
}

fn activation_jwt(issuer: &SigningKey, subject: &str, iat: i64) -> (String, String) {
    let importer = SigningKey::generate(KeyRole::Account);
    let mut claims = ActivationClaims::new(importer.public_key().as_str(), "grant");
    claims.nats.subject = subject.into();
    claims.nats.kind = "service".into();
    let jwt = encode(&mut claims, issuer, iat).unwrap();
    let decoded = nas_jwt::decode(jwt.as_bytes())
        .unwrap()
        .into_activation()
        .unwrap();
    (nas_jwt::activation_hash_id(&decoded.1).unwrap(), jwt)
}

/// `count` accounts of `op` issued at `iat`, signed on two threads.
fn mint(op: &Operator, count: usize, iat: i64) -> Vec<(SigningKey, String)> {
    std::thread::scope(|s| {
        let halves: Vec<_> = [0, 1]
            .map(|half| {
                s.spawn(move || {
                    (0..count)
                        .filter(|i| i % 2 == half)
                        .map(|i| {
                            let key = SigningKey::generate(KeyRole::Account);
                            let jwt =
                                account_jwt(&op.signing_key, &key, &format!("ACC-{i}"), iat, 0);
                            (key, jwt)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .into_iter()
            .collect();
        halves.into_iter().flat_map(|h| h.join().unwrap()).collect()
    })
}

/// What a store holds: accounts, tombstones, activations.
#[derive(Debug, PartialEq, Eq, Default, Clone)]
struct Snapshot {
    accounts: BTreeMap<String, Bytes>,
    tombstones: BTreeMap<String, Bytes>,
    activations: BTreeMap<String, Bytes>,
}

async fn read_ns(backend: &dyn Backend, ns: Namespace) -> BTreeMap<String, Bytes> {
    let keys: Vec<String> = backend
        .list(ns)
        .await
        .unwrap()
        .map(|k| k.unwrap())
        .collect()
        .await;
    let reads = futures::stream::iter(keys)
        .map(|key| async move {
            let got = backend.get(ns, &key).await.unwrap();
            (key, got.map(|(bytes, _)| bytes))
        })
        .buffer_unordered(16);
    reads
        .filter_map(|(k, v)| async move { v.map(|v| (k, v)) })
        .collect()
        .await
}

async fn snapshot(store: &StoreConfig) -> Snapshot {
    let backend = nas_server::backend::open_backend(store).await.unwrap();
    Snapshot {
        accounts: read_ns(&*backend, Namespace::Accounts).await,
        tombstones: read_ns(&*backend, Namespace::Tombstones).await,
        activations: read_ns(&*backend, Namespace::Activations).await,
    }
}

/// A store opened for seeding (the store policy writes without verifying).
async fn open(store: &StoreConfig) -> Store {
    Store::new(nas_server::backend::open_backend(store).await.unwrap())
}

async fn put(store: &Store, jwt: &str) {
    let payload = nas_jwt::jwt::peek_payload(jwt.as_bytes()).unwrap();
    let key = payload["sub"].as_str().unwrap();
    let meta = TokenMeta::read(jwt.as_bytes()).unwrap();
    store
        .put_account_if_newer(key, Bytes::from(jwt.to_owned()), &meta)
        .await
        .unwrap();
}

/// The counts of one kind in a summary: copied, unchanged, skipped_older, skipped_deleted,
/// refused, failed.
fn counts(summary: &Value, kind: &str) -> [u64; 6] {
    let c = &summary[kind];
    [
        "copied",
        "unchanged",
        "skipped_older",
        "skipped_deleted",
        "refused",
        "failed",
    ]
    .map(|k| {
        c[k].as_u64()
            .unwrap_or_else(|| panic!("{kind}.{k} in {summary}"))
    })
}

/// The source of the migration test and what every destination must end with.
struct Fixture {
    op: Operator,
    /// Accepted newest JWTs by key (10 of them issued later at the first destination).
    expected: BTreeMap<String, Bytes>,
    /// JWTs the first destination holds beforehand (10 newer ones and one the tombstone
    /// deletes).
    preseed: Vec<String>,
    /// Keys refused, with the reason expected (for the foreign ones) or `None` (expired).
    refused: BTreeMap<String, Option<String>>,
    deleted_key: String,
    deleted_jwt: String,
    tombstone: Bytes,
    activations: BTreeMap<String, Bytes>,
}

const ACCOUNTS: usize = 1000;
const NEWER_AT_DESTINATION: usize = 10;
const FOREIGN: usize = 20;
const EXPIRED: usize = 5;

/// Writes the source store (1,000 good accounts, foreign and expired ones, a tombstone, two
/// activations) and returns what must come out of it.
async fn fixture(source: &StoreConfig) -> Fixture {
    let op = Operator::new("migrating");
    let base = now() - 1000;
    let store = open(source).await;
    let good = mint(&op, ACCOUNTS, base);
    let mut expected = BTreeMap::new();
    let mut preseed = Vec::new();
    for (i, (key, jwt)) in good.iter().enumerate() {
        put(&store, jwt).await;
        let mut kept = jwt.clone();
        if i < NEWER_AT_DESTINATION {
            kept = account_jwt(&op.signing_key, key, "NEWER", base + 500, 0);
            preseed.push(kept.clone());
        }
        expected.insert(key.public_key().as_str().to_owned(), Bytes::from(kept));
    }
    let refused = seed_refused(&store, &op, base).await;
    let (deleted_key, deleted_jwt, tombstone) = seed_tombstone(&store, &op, base).await;
    preseed.push(deleted_jwt.clone());
    let mut activations = BTreeMap::new();
    for subject in ["svc.a", "svc.b"] {
        let (id, jwt) = activation_jwt(&good[0].0, subject, base);
        let jwt = Bytes::from(jwt);
        store
            .put_activation_if_newer(&id, jwt.clone(), base)
            .await
            .unwrap();
        activations.insert(id, jwt);
    }
    Fixture {
        op,
        expected,
        preseed,
        refused,
        deleted_key,
        deleted_jwt,
        tombstone,
        activations,
    }
}

/// Foreign-operator and expired accounts, with the reason each must be refused for (`None`:
/// expired).
async fn seed_refused(store: &Store, op: &Operator, base: i64) -> BTreeMap<String, Option<String>> {
    let foreign = Operator::new("foreign");
    let mut refused = BTreeMap::new();
    for i in 0..FOREIGN + EXPIRED {
        let key = SigningKey::generate(KeyRole::Account);
        let (jwt, reason) = if i < FOREIGN {
            let iss = foreign.signing_key.public_key().as_str().to_owned();
            let jwt = account_jwt(&foreign.signing_key, &key, "FOREIGN", base, 0);
            (jwt, Some(AcceptError::Untrusted(iss).to_string()))
        } else {
            let jwt = account_jwt(&op.signing_key, &key, "EXPIRED", base - 1000, base);
            (jwt, None)
        };
        put(store, &jwt).await;
        refused.insert(key.public_key().as_str().to_owned(), reason);
    }
    refused
}

/// An account deleted by an operator-signed request: its key, its (older) JWT, the request.
async fn seed_tombstone(store: &Store, op: &Operator, base: i64) -> (String, String, Bytes) {
    let deleted = SigningKey::generate(KeyRole::Account);
    let key = deleted.public_key().as_str().to_owned();
    let jwt = account_jwt(&op.signing_key, &deleted, "DELETED", base - 100, 0);
    put(store, &jwt).await;
    let request = Bytes::from(delete_request(vec![key.clone()], &op.signing_key, base, 0));
    store
        .delete_account_by(&key, request.clone(), base)
        .await
        .unwrap();
    (key, jwt, request)
}

impl Fixture {
    fn final_state(&self) -> Snapshot {
        Snapshot {
            accounts: self.expected.clone(),
            tombstones: BTreeMap::from([(self.deleted_key.clone(), self.tombstone.clone())]),
            activations: self.activations.clone(),
        }
    }

    fn check_refusals(&self, summary: &Value) {
        let refused = summary["refused"].as_array().unwrap();
        assert_eq!(refused.len(), FOREIGN + EXPIRED, "{summary}");
        let invalid = AcceptError::Invalid(Vec::new()).to_string();
        for item in refused {
            let key = item["key"].as_str().unwrap();
            let reason = item["reason"].as_str().unwrap();
            assert_eq!(item["kind"], "account");
            match &self.refused[key] {
                Some(expected) => assert_eq!(reason, expected),
                None => assert!(
                    reason.starts_with(&invalid) && reason.contains("claim is expired"),
                    "{reason}"
                ),
            }
        }
    }
}

fn migrate(from: &str, to: &str, extra: &[&str]) -> Run {
    let mut args = vec!["migrate", "--from", from, "--to", to];
    args.extend_from_slice(extra);
    nas(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_dir_to_redis_to_s3_to_sharded_dir() {
    let redis = nas_testkit::RedisServer::start();
    let s3 = nas_testkit::S3Server::start();
    s3.create_bucket("nas");
    let tmp = tempfile::tempdir().unwrap();
    let src_dir = tmp.path().join("src");
    let fx = fixture(&StoreConfig::Dir(DirStore::new(&src_dir))).await;
    let operator = write(tmp.path(), "operator.jwt", &fx.op.jwt);
    let config = format!("operatorjwtpath: {operator:?}\nstore {{ dir: {src_dir:?} }}\n");
    let config = write(tmp.path(), "src.conf", &config);
    let redis_url = format!("{}?prefix=mig:", redis.url());
    first_hop(&fx, &format!("config:{config}"), &redis_url).await;
    tombstone_keeps_older_out(&fx, tmp.path(), &redis_url, &operator).await;

    // Redis → S3 → sharded dir: everything arrives; a second run changes nothing.
    let s3_url = format!(
        "s3://nas/mig/?endpoint={}&region={}&pathstyle=true&allowhttp=true",
        s3.endpoint(),
        nas_testkit::S3_REGION
    );
    let sharded = tmp.path().join("sharded");
    let sharded_url = format!("dir:{}?shard=true", sharded.display());
    for (from, to) in [(&redis_url, &s3_url), (&s3_url, &sharded_url)] {
        let run = migrate(from, to, &["--json", "--operator", &operator]);
        assert_eq!(run.code, 0, "{from} -> {to}: {}{}", run.stdout, run.stderr);
        let summary = run.json();
        assert_eq!(counts(&summary, "tombstones"), [1, 0, 0, 0, 0, 0]);
        assert_eq!(
            counts(&summary, "accounts"),
            [ACCOUNTS as u64, 0, 0, 0, 0, 0]
        );
        assert_eq!(counts(&summary, "activations"), [2, 0, 0, 0, 0, 0]);
        assert_eq!(snapshot(&test_store(to)).await, fx.final_state(), "{to}");
    }
    let key = fx.expected.keys().next().unwrap();
    let shard = &key[key.len() - 2..];
    assert!(sharded.join(shard).join(format!("{key}.jwt")).is_file());
    rerun_changes_nothing(&s3_url, &sharded_url, &operator);
}

/// Into a real 3-master Redis Cluster (`redis+cluster://`) and out of it again: the same first
/// hop and tombstone checks as for one Redis, then cluster → sharded dir brings everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_into_and_out_of_a_redis_cluster() {
    let cluster = nas_testkit::RedisCluster::start(3);
    let tmp = tempfile::tempdir().unwrap();
    let src_dir = tmp.path().join("src");
    let fx = fixture(&StoreConfig::Dir(DirStore::new(&src_dir))).await;
    let operator = write(tmp.path(), "operator.jwt", &fx.op.jwt);
    let config = format!("operatorjwtpath: {operator:?}\nstore {{ dir: {src_dir:?} }}\n");
    let config = write(tmp.path(), "src.conf", &config);
    let nodes: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port()))
        .collect();
    let cluster_url = format!("redis+cluster://{}?prefix=mig:", nodes.join(","));
    first_hop(&fx, &format!("config:{config}"), &cluster_url).await;
    tombstone_keeps_older_out(&fx, tmp.path(), &cluster_url, &operator).await;
    let out = format!("dir:{}?shard=true", tmp.path().join("out").display());
    let run = migrate(&cluster_url, &out, &["--json", "--operator", &operator]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let summary = run.json();
    assert_eq!(counts(&summary, "tombstones"), [1, 0, 0, 0, 0, 0]);
    assert_eq!(
        counts(&summary, "accounts"),
        [ACCOUNTS as u64, 0, 0, 0, 0, 0]
    );
    assert_eq!(counts(&summary, "activations"), [2, 0, 0, 0, 0, 0]);
    assert_eq!(snapshot(&test_store(&out)).await, fx.final_state());
    rerun_changes_nothing(&cluster_url, &out, &operator);
}

/// dir (through `config:`) → Redis holding 10 newer JWTs and the JWT the tombstone deletes: a
/// dry run first (same summary, nothing written), then the real run.
async fn first_hop(fx: &Fixture, from: &str, to: &str) {
    let redis_store = test_store(to);
    let seeded = open(&redis_store).await;
    for jwt in &fx.preseed {
        put(&seeded, jwt).await;
    }
    drop(seeded);
    let before = snapshot(&redis_store).await;
    let dry = migrate(from, to, &["--dry-run", "--json"]);
    assert_eq!(dry.code, 1, "{}{}", dry.stdout, dry.stderr);
    assert_eq!(snapshot(&redis_store).await, before, "--dry-run wrote");
    let real = migrate(from, to, &["--json"]);
    assert_eq!(real.code, 1, "{}{}", real.stdout, real.stderr);
    let (dry, real) = (dry.json(), real.json());
    assert_eq!(dry["dry_run"], true);
    for kind in ["tombstones", "accounts", "activations"] {
        assert_eq!(counts(&dry, kind), counts(&real, kind), "{kind}");
    }
    assert_eq!(counts(&real, "tombstones"), [1, 0, 0, 0, 0, 0]);
    let copied = (ACCOUNTS - NEWER_AT_DESTINATION) as u64;
    let refused = (FOREIGN + EXPIRED) as u64;
    let accounts = [copied, 0, NEWER_AT_DESTINATION as u64, 0, refused, 0];
    assert_eq!(counts(&real, "accounts"), accounts);
    assert_eq!(counts(&real, "activations"), [2, 0, 0, 0, 0, 0]);
    fx.check_refusals(&real);
    assert_eq!(snapshot(&redis_store).await, fx.final_state());
}

/// The carried tombstone keeps the deleted account's older JWT out of the destination.
async fn tombstone_keeps_older_out(fx: &Fixture, tmp: &Path, to: &str, operator: &str) {
    let stale_dir = tmp.join("stale");
    let stale_store = open(&StoreConfig::Dir(DirStore::new(&stale_dir))).await;
    put(&stale_store, &fx.deleted_jwt).await;
    let from = format!("dir:{}", stale_dir.display());
    let stale = migrate(&from, to, &["--json", "--operator", operator]);
    assert_eq!(stale.code, 0, "{}{}", stale.stdout, stale.stderr);
    assert_eq!(counts(&stale.json(), "accounts"), [0, 0, 0, 1, 0, 0]);
    assert_eq!(snapshot(&test_store(to)).await, fx.final_state());
}

/// A second run over the same stores finds everything there (human summary).
fn rerun_changes_nothing(from: &str, to: &str, operator: &str) {
    let again = migrate(from, to, &["--operator", operator]);
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    let row = |name: &str| -> Vec<String> {
        let line = again.stdout.lines().find(|l| l.starts_with(name));
        let cells = line.unwrap_or_default().split_whitespace().skip(1);
        cells.map(str::to_owned).collect()
    };
    let out = &again.stdout;
    assert_eq!(row("accounts"), ["0", "1000", "0", "0", "0", "0"], "{out}");
    assert_eq!(row("tombstones"), ["0", "1", "0", "0", "0", "0"], "{out}");
    assert_eq!(row("activations"), ["0", "2", "0", "0", "0", "0"], "{out}");
}

/// A store URL as the test's own code opens it (the binary's grammar, re-implemented only as
/// far as the test needs: redis, s3, dir).
fn test_store(url: &str) -> StoreConfig {
    let mut store = test_store_default(url);
    // moto and a PostgreSQL on a loaded machine can take longer than the server's 800 ms.
    match &mut store {
        StoreConfig::Redis(r) => r.timeout = std::time::Duration::from_secs(30),
        StoreConfig::S3(s) => s.timeout = std::time::Duration::from_secs(30),
        StoreConfig::Postgres(p) => p.timeout = std::time::Duration::from_secs(30),
        _ => {}
    }
    store
}

fn test_store_default(url: &str) -> StoreConfig {
    let (head, query) = url.split_once('?').unwrap_or((url, ""));
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .map(str::to_owned)
    };
    if let Some(path) = head.strip_prefix("dir:") {
        let mut dir = DirStore::new(path);
        dir.shard = param("shard").is_some();
        return StoreConfig::Dir(dir);
    }
    if let Some(nodes) = head.strip_prefix("redis+cluster://") {
        let seeds = nodes.split(',').map(|n| format!("redis://{n}")).collect();
        let mut redis = nas_server::config::RedisStore::cluster(seeds);
        redis.prefix = param("prefix").unwrap();
        return StoreConfig::Redis(redis);
    }
    if head.starts_with("redis://") {
        let mut redis = nas_server::config::RedisStore::new(head);
        redis.prefix = param("prefix").unwrap();
        return StoreConfig::Redis(redis);
    }
    if let Some(rest) = head.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap();
        let mut s3 = nas_server::config::S3Store::new(bucket);
        s3.prefix = prefix.to_owned();
        s3.endpoint = param("endpoint");
        s3.region = param("region");
        s3.path_style = true;
        s3.allow_http = true;
        s3.access_key_id = Some(nas_testkit::S3_ACCESS_KEY_ID.into());
        s3.secret_access_key = Some(nas_testkit::S3_SECRET_ACCESS_KEY.into());
        return StoreConfig::S3(s3);
    }
    let mut pg = nas_server::config::PostgresStore::new(head);
    pg.table = param("table").unwrap();
    StoreConfig::Postgres(pg)
}

/// SIGKILLed part-way (the verbose lines fill the unread stderr pipe, so the child cannot get
/// far past the line that proved some accounts were written), the migration is completed by
/// running it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_migration_is_resumed_by_running_it_again() {
    let pg = nas_testkit::PostgresServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("resumed");
    let operator = write(tmp.path(), "operator.jwt", &op.jwt);
    let src_dir = tmp.path().join("src");
    let source = open(&StoreConfig::Dir(DirStore::new(&src_dir))).await;
    let mut expected = BTreeMap::new();
    for (key, jwt) in mint(&op, ACCOUNTS, now() - 10) {
        put(&source, &jwt).await;
        expected.insert(key.public_key().as_str().to_owned(), Bytes::from(jwt));
    }
    let from = format!("dir:{}", src_dir.display());
    let to = format!("{}?table=resumed", pg.url());
    let mut child = command(&[
        "migrate",
        "--from",
        &from,
        "--to",
        &to,
        "--operator",
        &operator,
        "--concurrency",
        "1",
        "-v",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(
        first.starts_with("account ") && first.ends_with(" copied"),
        "{first}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let store = test_store(&to);
    let written = snapshot(&store).await.accounts.len();
    assert!(
        written > 0 && written < ACCOUNTS,
        "{written} accounts written before the kill"
    );

    let run = migrate(&from, &to, &["--json", "--operator", &operator]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let summary = run.json();
    let accounts = [(ACCOUNTS - written) as u64, written as u64, 0, 0, 0, 0];
    assert_eq!(counts(&summary, "accounts"), accounts, "{summary}");
    assert_eq!(snapshot(&store).await.accounts, expected);
}

#[test]
fn migrate_refuses_bad_usage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = format!("dir:{}", tmp.path().display());
    let other = format!("dir:{}/other", tmp.path().display());
    let run = migrate(&dir, &other, &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("refusing to migrate without an operator"),
        "{}",
        run.stderr
    );
    let run = migrate(&dir, &format!("nsc:{}", tmp.path().display()), &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("nsc folder is read-only"),
        "{}",
        run.stderr
    );
    for bad in ["/no/scheme", "dir:/x?shrd=1", "ftp://x", "s3:bucket"] {
        let run = migrate(bad, &other, &[]);
        assert_eq!(run.code, 2, "{bad}: {}", run.stderr);
    }
    let run = migrate(
        &format!("dir:{}/missing", tmp.path().display()),
        &other,
        &[],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    // A dry run into a directory that does not exist does not create it.
    let op = Operator::new("dry");
    let operator = write(tmp.path(), "operator.jwt", &op.jwt);
    let fresh = tmp.path().join("fresh");
    let to = format!("dir:{}", fresh.display());
    let run = migrate(&dir, &to, &["--dry-run", "--operator", &operator]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("dry run: nothing was written") && !fresh.exists());
    let help = nas(&["migrate", "--help"]);
    assert_eq!(help.code, 0);
    for needle in [
        "STORE URLS",
        "redis://",
        "s3://",
        "postgres://",
        "config:<file>",
        "RESUMING",
        "EXIT CODES",
    ] {
        assert!(
            help.stdout.contains(needle),
            "{needle} missing:\n{}",
            help.stdout
        );
    }
}

/// Runs `inspect` on `file` (with `extra` arguments) and returns the exit code and JSON.
fn inspect(file: &str, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["inspect", file, "--json"];
    args.extend_from_slice(extra);
    let run = nas(&args);
    (run.code, run.json())
}

/// An operator, one of its accounts, and a file of each JWT kind.
struct Inspected {
    tmp: tempfile::TempDir,
    op: Operator,
    operator: String,
    app: SigningKey,
    app_jwt: String,
    files: Vec<(&'static str, String)>,
}

impl Inspected {
    fn new() -> Inspected {
        let tmp = tempfile::tempdir().unwrap();
        let op = Operator::new("inspected");
        let operator = write(tmp.path(), "operator.jwt", &op.jwt);
        let (app, app_jwt) = op.account("APP");
        let (_, activation) = activation_jwt(&app, "svc.x", now());
        let listed = vec![app.public_key().as_str().to_owned()];
        let delete = String::from_utf8(delete_request(listed, &op.signing_key, now(), 0)).unwrap();
        let files = vec![
            ("operator", write(tmp.path(), "op.jwt", &op.jwt)),
            ("account", write(tmp.path(), "app.jwt", &app_jwt)),
            (
                "user",
                write(tmp.path(), "user.creds", &user_creds(&app, "u")),
            ),
            ("activation", write(tmp.path(), "act.jwt", &activation)),
            ("generic", write(tmp.path(), "del.jwt", &delete)),
        ];
        Inspected {
            tmp,
            op,
            operator,
            app,
            app_jwt,
            files,
        }
    }
}

#[test]
fn inspect_decodes_every_kind_human_and_json() {
    let x = Inspected::new();
    for (kind, file) in &x.files {
        let (code, out) = inspect(file, &[]);
        assert_eq!((code, out["kind"].as_str()), (0, Some(*kind)), "{out}");
        assert_eq!(out["signature"]["valid"], true);
        assert!(out["operator"].is_null());
        let human = nas(&["inspect", file]);
        assert_eq!(human.code, 0, "{}", human.stderr);
        let first = format!("{kind} JWT (v2), signature valid");
        assert!(human.stdout.starts_with(&first), "{}", human.stdout);
    }
    // A creds file: its JWT is shown, its seed never.
    let creds_file = &x.files[2].1;
    let creds = nas(&["inspect", creds_file]);
    let text = std::fs::read_to_string(creds_file).unwrap();
    let seed = nas_jwt::creds::extract_seed(&text).unwrap();
    assert!(
        creds.stdout.contains("with a user seed (not shown)"),
        "{}",
        creds.stdout
    );
    assert!(!creds.stdout.contains(&seed));
    assert!(!inspect(creds_file, &[]).1.to_string().contains(&seed));
    // A broken signature is invalid; unreadable input is an I/O error.
    let mut tampered = x.app_jwt.clone().into_bytes();
    let at = tampered.len() - 3;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = write(
        x.tmp.path(),
        "tampered.jwt",
        &String::from_utf8(tampered).unwrap(),
    );
    let (code, out) = inspect(&tampered, &[]);
    assert_eq!(
        (code, &out["signature"]["valid"]),
        (1, &Value::Bool(false)),
        "{out}"
    );
    assert_eq!(nas(&["inspect", "/no/such/file"]).code, 2);
    assert_eq!(
        nas(&["inspect", &x.files[1].1, "--operator", "/no/such/op.jwt"]).code,
        2
    );
    assert_eq!(nas(&["inspect"]).code, 2);
}

#[test]
fn inspect_with_the_operator_gives_the_reasons_of_a_refused_post() {
    let x = Inspected::new();
    // The account and the activation are acceptable; the others are refused as a POST of them
    // would be.
    for (kind, file) in &x.files {
        let (code, out) = inspect(file, &["--operator", &x.operator]);
        let acceptable = matches!(*kind, "account" | "activation");
        assert_eq!(code, if acceptable { 0 } else { 1 }, "{kind}: {out}");
        assert_eq!(out["operator"]["accepted"], acceptable, "{out}");
        if !acceptable {
            let reason = out["operator"]["reason"].as_str().unwrap_or_default();
            let expected = match *kind {
                // Untyped claims decode as (v1) account claims, whose signature check fails.
                "generic" => "bad JWT in request: claim failed V1 signature verification",
                _ => "bad JWT in request: not account claim",
            };
            assert_eq!(reason, expected, "{kind}");
        }
    }
    let human = nas(&["inspect", &x.files[1].1, "--operator", &x.operator]);
    let accepted = format!("operator {}: accepted", x.op.identity.public_key());
    assert!(human.stdout.contains(&accepted), "{}", human.stdout);

    // A foreign operator's account and an expired one are refused with the POST's reasons.
    let foreign = Operator::new("foreign");
    let (_, foreign_jwt) = foreign.account("OTHER");
    let foreign_file = write(x.tmp.path(), "foreign.jwt", &foreign_jwt);
    let (code, out) = inspect(&foreign_file, &["--operator", &x.operator]);
    let untrusted = AcceptError::Untrusted(foreign.signing_key.public_key().as_str().into());
    let reason = Value::from(untrusted.to_string());
    assert_eq!((code, &out["operator"]["reason"]), (1, &reason));
    let human = nas(&["inspect", &foreign_file, "--operator", &x.operator]);
    assert!(
        human.stdout.contains(&format!("REFUSED: {untrusted}")),
        "{}",
        human.stdout
    );
    let t = now();
    let expired = account_jwt(&x.op.signing_key, &x.app, "OLD", t - 100, t - 10);
    let expired_file = write(x.tmp.path(), "expired.jwt", &expired);
    let (code, out) = inspect(&expired_file, &[]);
    assert_eq!(
        (code, &out["times"]["expired"]),
        (0, &Value::Bool(true)),
        "{out}"
    );
    let (code, out) = inspect(&expired_file, &["--operator", &x.operator]);
    let reason = out["operator"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(code, 1);
    let invalid = AcceptError::Invalid(Vec::new()).to_string();
    assert!(
        reason.starts_with(&invalid) && reason.contains("claim is expired"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_reads_standard_input_and_urls() {
    let x = Inspected::new();
    let mut child = command(&["inspect", "-", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), x.app_jwt.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let out: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out["kind"], "account");
    let mut config = Config::default();
    config.http.host = "127.0.0.1".into();
    config.http.port = 0;
    config.store = StoreConfig::Dir(DirStore::new(x.tmp.path().join("served")));
    config.operator_jwt_path = Some(x.operator.clone().into());
    let server = nas_server::server::Server::start(&config).await.unwrap();
    put(&server.store, &x.app_jwt).await;
    let url = format!("{}/jwt/v1/accounts/{}", server.url(), x.app.public_key());
    let operator = x.operator.clone();
    let (code, out) =
        tokio::task::spawn_blocking(move || inspect(&url, &["--operator", &operator]))
            .await
            .unwrap();
    assert_eq!(
        (code, out["claims"]["name"].as_str()),
        (0, Some("APP")),
        "{out}"
    );
    let missing = format!(
        "{}/jwt/v1/accounts/{}",
        server.url(),
        x.op.system.public_key()
    );
    let run = tokio::task::spawn_blocking(move || nas(&["inspect", &missing]))
        .await
        .unwrap();
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("404"), "{}", run.stderr);
    server.stop().await;
}

#[test]
fn config_nats_server_output_is_accepted_by_nats_server() {
    let servers = nas_testkit::require_nats_servers();
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("configured");
    let operator = write(tmp.path(), "operator.jwt", &op.jwt);
    let system = write(tmp.path(), "SYS.jwt", &op.system_jwt);
    let config = write(
        tmp.path(),
        "nas.conf",
        &format!(
            "operatorjwtpath: {operator:?}\nsystemaccountjwtpath: {system:?}\nhttp {{ host: \"127.0.0.1\", port: 9123 }}\nnats {{ servers: [\"nats://127.0.0.1:4222\"], allowdelete: true }}\nstore {{ dir: {:?} }}\n",
            tmp.path().join("jwt").display()
        ),
    );
    let resolver_dir = tmp.path().join("resolver").to_string_lossy().into_owned();
    let shapes: [(&str, &[&str], &str); 4] = [
        (
            "url",
            &[],
            "resolver: URL(http://127.0.0.1:9123/jwt/v1/accounts/)",
        ),
        (
            "url",
            &["--url", "https://nas.example.com:9443/"],
            "resolver: URL(https://nas.example.com:9443/jwt/v1/accounts/)",
        ),
        ("cache", &[], "type: cache"),
        ("full", &[], "allow_delete: true"),
    ];
    for (i, (shape, extra, needle)) in shapes.iter().enumerate() {
        let mut args = vec![
            "config",
            "nats-server",
            "-c",
            &config,
            "--shape",
            shape,
            "--resolver-dir",
            &resolver_dir,
        ];
        args.extend_from_slice(extra);
        let run = nas(&args);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(
            run.stdout.contains(needle),
            "{needle} missing:\n{}",
            run.stdout
        );
        assert!(run
            .stdout
            .contains(&format!("system_account: {}", op.system.public_key())));
        if *shape != "url" {
            assert!(run.stdout.contains("resolver_preload"), "{}", run.stdout);
        }
        let file = write(tmp.path(), &format!("nats-{i}.conf"), &run.stdout);
        for bin in &servers {
            let out = Command::new(&bin.path)
                .args(["-t", "-c", &file])
                .output()
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.status.success() && text.contains("is valid"),
                "nats-server {} refused {shape}:\n{}\n{text}",
                bin.reported_version,
                run.stdout
            );
        }
    }
    let run = nas(&["config", "nats-server"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("no operator"), "{}", run.stderr);
}
