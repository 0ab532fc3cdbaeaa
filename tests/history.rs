//! A Jepsen-style history check of "newest wins" across three account-server processes on one
//! real redis-server (durable: AOF, fsync always), with faults injected while clients POST
//! versioned JWTs and GET them: `CLIENT PAUSE … WRITE`, `CLIENT KILL TYPE pubsub`, a SIGKILL
//! and restart of redis-server, a SIGKILL and restart of an instance.
//!
//! Every operation is recorded with its start and end time; the checker then asserts:
//! 1. no acknowledged version is lost (each account ends at or above its newest 200);
//! 2. a GET on the instance that acknowledged a version, starting after the 200, returns that
//!    version or a newer one;
//! 3. a GET on any instance starting more than [`STALENESS_BOUND`] after a 200 returns that
//!    version or a newer one (the bound the README states for Redis deployments);
//! 4. once the faults stop, every instance serves the same, newest stored version.
//!
//! A PostgreSQL run does the same with three instances on one real PostgreSQL (LISTEN/NOTIFY
//! between them, a resync after a listener reconnect) and PostgreSQL's faults: a restart of
//! the database (fast shutdown + start on the same data), `pg_terminate_backend` of the
//! listener sessions, `pg_terminate_backend` of every pooled session, and a SIGKILL and
//! restart of an instance. Same 2 s staleness bound: a terminated listener reconnects after
//! 200 ms; across a database restart the listener backs off (200 ms doubling) while the database
//! is down, and every write in that time fails (503), so what it can miss is only what was
//! written between the database's return and its next attempt.
//!
//! Another run does the same with one instance on a directory store announcing to a real
//! nats-server (restarted as a fault), and checks that each account's notifications arrive in
//! version order with the newest last.
//!
//! Seeded and bounded: `NAS_HISTORY_SEED` replays a run, `NAS_HISTORY_SECS` (default 20) sets
//! its length; `scripts/soak.sh` runs it for ten minutes.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nas_jwt::SigningKey;
use nas_testkit::{free_port, RedisServer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

mod common;
use common::{reissue, Operator};

const BIN: &str = env!("CARGO_BIN_EXE_nats-account-server");
/// Cross-instance staleness bound for one Redis (pub/sub, and a resync after a reconnect).
const STALENESS_BOUND: Duration = Duration::from_secs(2);
const INSTANCES: usize = 3;
/// Table prefix of the PostgreSQL run: its pool sessions are named `nas-store history`, its
/// listener sessions `nas-store history listener` (`application_name`).
#[cfg(feature = "postgres")]
const PG_TABLE: &str = "history";
const ACCOUNTS: usize = 4;
const CLIENTS: usize = 6;

/// One account-server process on a fixed port, restartable.
struct Instance {
    port: u16,
    config: std::path::PathBuf,
    child: Option<Child>,
}

impl Instance {
    /// An instance on one shared Redis.
    fn on_redis(dir: &Path, index: usize, redis_url: &str) -> Instance {
        let store = format!("store {{ type: redis, url: \"{redis_url}\", prefix: \"history:\" }}");
        Instance::new(dir, index, &store)
    }

    /// An instance on one shared PostgreSQL database.
    #[cfg(feature = "postgres")]
    fn on_postgres(dir: &Path, index: usize, pg_url: &str) -> Instance {
        let store = format!("store {{ type: postgres, url: \"{pg_url}\", table: \"{PG_TABLE}\" }}");
        Instance::new(dir, index, &store)
    }

    /// An instance with `body` (store and NATS blocks) in its config.
    fn new(dir: &Path, index: usize, body: &str) -> Instance {
        let port = free_port();
        let config = dir.join(format!("nas-{index}.conf"));
        let mut f = std::fs::File::create(&config).unwrap();
        writeln!(
            f,
            "operatorjwtpath: \"{}\"\nhttp {{ host: \"127.0.0.1\", port: {port} }}\n{body}",
            dir.join("operator.jwt").display()
        )
        .unwrap();
        let mut instance = Instance {
            port,
            config,
            child: None,
        };
        instance.start();
        instance
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn start(&mut self) {
        // The log is kept beside the config, so a failed start says why.
        let log_path = self.config.with_extension("log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(BIN)
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
            assert!(exited.is_none(), "instance exited ({exited:?}):\n{}", log());
            assert!(
                Instant::now() < deadline,
                "instance never listened:\n{}",
                log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Post(i64),
    Get,
}

#[derive(Debug, Clone)]
struct Record {
    instance: usize,
    account: usize,
    kind: Kind,
    start: Duration,
    end: Duration,
    status: u16,
    /// `iat` of the JWT a GET returned.
    got: Option<i64>,
}

fn iat_of(body: &[u8]) -> Option<i64> {
    nas_store::TokenMeta::read(body).ok().map(|m| m.iat)
}

/// Runs one client until `deadline`, appending to `history`.
#[allow(clippy::too_many_arguments)]
async fn client(
    seed: u64,
    urls: Arc<Vec<String>>,
    op: Arc<Operator>,
    keys: Arc<Vec<SigningKey>>,
    next: Arc<Vec<AtomicI64>>,
    t0: Instant,
    deadline: Instant,
    history: Arc<Mutex<Vec<Record>>>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    while Instant::now() < deadline {
        let instance = rng.gen_range(0..urls.len());
        let account = rng.gen_range(0..keys.len());
        let key = keys[account].public_key().as_str().to_owned();
        let url = format!("{}/jwt/v1/accounts/{key}", urls[instance]);
        let start = t0.elapsed();
        let (kind, sent) = if rng.gen_bool(0.3) {
            let iat = next[account].fetch_add(1, Ordering::SeqCst);
            let jwt = reissue(&op, &keys[account], "H", iat, |_| {});
            (Kind::Post(iat), http.post(&url).body(jwt).send().await)
        } else {
            (Kind::Get, http.get(&url).send().await)
        };
        let (status, body) = match sent {
            Ok(res) => {
                let status = res.status().as_u16();
                (status, res.bytes().await.unwrap_or_default())
            }
            Err(_) => (0, Default::default()),
        };
        let got = match (&kind, status) {
            (Kind::Get, 200) => iat_of(&body),
            _ => None,
        };
        history.lock().unwrap().push(Record {
            instance,
            account,
            kind,
            start,
            end: t0.elapsed(),
            status,
            got,
        });
    }
}

/// Injects one fault every ~1.5 s, chosen by the seed; returns what it did.
async fn faults(
    seed: u64,
    redis: Arc<Mutex<RedisServer>>,
    instances: Arc<Mutex<Vec<Instance>>>,
    deadline: Instant,
    t0: Instant,
) -> Vec<(Duration, String)> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xfa17);
    let url = redis.lock().unwrap().url();
    let mut done = Vec::new();
    while Instant::now() + Duration::from_secs(2) < deadline {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(1000..2000))).await;
        let at = t0.elapsed();
        let what = match rng.gen_range(0..4) {
            0 => {
                admin(&url, &["CLIENT", "PAUSE", "500", "WRITE"]).await;
                "CLIENT PAUSE 500 WRITE".to_owned()
            }
            1 => {
                admin(&url, &["CLIENT", "KILL", "TYPE", "pubsub"]).await;
                "CLIENT KILL TYPE pubsub".to_owned()
            }
            2 => {
                let redis = redis.clone();
                tokio::task::spawn_blocking(move || {
                    let mut r = redis.lock().unwrap();
                    r.stop();
                    r.restart();
                })
                .await
                .unwrap();
                "redis-server SIGKILL + restart".to_owned()
            }
            _ => {
                let which = rng.gen_range(0..INSTANCES);
                let instances = instances.clone();
                tokio::task::spawn_blocking(move || {
                    let mut all = instances.lock().unwrap();
                    all[which].kill();
                    all[which].start();
                })
                .await
                .unwrap();
                format!("instance {which} SIGKILL + restart")
            }
        };
        done.push((at, what));
    }
    done
}

async fn admin(url: &str, args: &[&str]) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    let _: Result<redis::Value, _> = cmd.query_async(&mut conn).await;
}

/// Acknowledged versions of one account ordered by acknowledgement time, with the running
/// maximum, so "the newest version acknowledged before t" is a binary search.
struct AckTimeline {
    ends: Vec<Duration>,
    max_so_far: Vec<i64>,
}

impl AckTimeline {
    fn new(mut acks: Vec<(Duration, i64)>) -> AckTimeline {
        acks.sort();
        let mut max = 0;
        let max_so_far = acks
            .iter()
            .map(|(_, v)| {
                max = max.max(*v);
                max
            })
            .collect();
        AckTimeline {
            ends: acks.into_iter().map(|(end, _)| end).collect(),
            max_so_far,
        }
    }

    /// The newest version acknowledged strictly before `t`, if any.
    fn newest_before(&self, t: Duration) -> Option<i64> {
        let n = self.ends.partition_point(|end| *end < t);
        n.checked_sub(1).map(|i| self.max_so_far[i])
    }
}

/// The checker: every violation of properties 1–3, as text. O(n log n) in the history.
fn violations(history: &[Record], finals: &HashMap<usize, i64>) -> Vec<String> {
    let mut anywhere: HashMap<usize, Vec<(Duration, i64)>> = HashMap::new();
    let mut same: HashMap<(usize, usize), Vec<(Duration, i64)>> = HashMap::new();
    for r in history.iter().filter(|r| r.status == 200) {
        if let Kind::Post(v) = r.kind {
            anywhere.entry(r.account).or_default().push((r.end, v));
            same.entry((r.account, r.instance))
                .or_default()
                .push((r.end, v));
        }
    }
    let mut found = Vec::new();
    for (account, acks) in &anywhere {
        let newest = acks.iter().map(|(_, v)| *v).max().unwrap_or(0);
        if finals.get(account).copied().unwrap_or(0) < newest {
            found.push(format!("account {account}: acknowledged {newest} lost"));
        }
    }
    let anywhere: HashMap<usize, AckTimeline> = anywhere
        .into_iter()
        .map(|(k, v)| (k, AckTimeline::new(v)))
        .collect();
    let same: HashMap<(usize, usize), AckTimeline> = same
        .into_iter()
        .map(|(k, v)| (k, AckTimeline::new(v)))
        .collect();
    for get in history.iter().filter(|r| matches!(r.kind, Kind::Get)) {
        if get.status != 200 && get.status != 404 {
            continue; // unavailable: allowed, it is not an answer
        }
        let got = get.got.unwrap_or(0);
        let on_same = same
            .get(&(get.account, get.instance))
            .and_then(|t| t.newest_before(get.start));
        let elsewhere = get
            .start
            .checked_sub(STALENESS_BOUND)
            .and_then(|t| anywhere.get(&get.account)?.newest_before(t));
        if let Some(owed) = on_same.max(elsewhere).filter(|owed| got < *owed) {
            found.push(format!(
                "GET {:?}..{:?} of account {} on instance {} returned {got} ({}) after {owed} was acknowledged",
                get.start, get.end, get.account, get.instance, get.status
            ));
        }
    }
    found
}

/// The seed and length of a run, from the environment (printed so a failure can be replayed).
fn seed_and_secs(what: &str) -> (u64, u64) {
    let seed: u64 = std::env::var("NAS_HISTORY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    let secs: u64 = std::env::var("NAS_HISTORY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    println!("{what}: seed {seed}, {secs} s (replay with NAS_HISTORY_SEED={seed})");
    (seed, secs)
}

/// Concurrent clients POSTing new versions and GETting, recording every operation.
struct Workload {
    op: Arc<Operator>,
    keys: Arc<Vec<SigningKey>>,
    next: Arc<Vec<AtomicI64>>,
    history: Arc<Mutex<Vec<Record>>>,
    t0: Instant,
    deadline: Instant,
}

impl Workload {
    fn new(op: Arc<Operator>, secs: u64) -> Workload {
        let keys = (0..ACCOUNTS)
            .map(|i| op.account(&i.to_string()).0)
            .collect();
        let base = common::now() + 10;
        let t0 = Instant::now();
        Workload {
            op,
            keys: Arc::new(keys),
            next: Arc::new((0..ACCOUNTS).map(|_| AtomicI64::new(base)).collect()),
            history: Arc::default(),
            t0,
            deadline: t0 + Duration::from_secs(secs),
        }
    }

    fn spawn_clients(
        &self,
        seed: u64,
        urls: &Arc<Vec<String>>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        (0..CLIENTS)
            .map(|c| {
                tokio::spawn(client(
                    seed.wrapping_add(c as u64),
                    urls.clone(),
                    self.op.clone(),
                    self.keys.clone(),
                    self.next.clone(),
                    self.t0,
                    self.deadline,
                    self.history.clone(),
                ))
            })
            .collect()
    }

    /// Waits until every instance serves the same version of every account; returns it.
    async fn converge(&self, urls: &[String]) -> HashMap<usize, i64> {
        let http = reqwest::Client::new();
        let settle = Instant::now() + Duration::from_secs(15);
        loop {
            let mut per_account = HashMap::new();
            let mut agree = true;
            for (account, key) in self.keys.iter().enumerate() {
                let mut seen = Vec::new();
                for url in urls {
                    let res = http
                        .get(format!("{url}/jwt/v1/accounts/{}", key.public_key()))
                        .send()
                        .await;
                    seen.push(match res {
                        Ok(r) if r.status() == 200 => iat_of(&r.bytes().await.unwrap_or_default()),
                        _ => None,
                    });
                }
                agree &= seen.windows(2).all(|w| w[0] == w[1]);
                if let Some(Some(v)) = seen.first() {
                    per_account.insert(account, *v);
                }
            }
            if agree {
                return per_account;
            }
            assert!(Instant::now() < settle, "instances never converged");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Prints the figures of the run and asserts the checker found nothing.
    fn check(&self, seed: u64, finals: &HashMap<usize, i64>, injected: &[(Duration, String)]) {
        let history = self.history.lock().unwrap().clone();
        let posts = history
            .iter()
            .filter(|r| matches!(r.kind, Kind::Post(_)))
            .count();
        let acked = history
            .iter()
            .filter(|r| matches!(r.kind, Kind::Post(_)) && r.status == 200)
            .count();
        let unavailable = history
            .iter()
            .filter(|r| r.status == 0 || r.status == 503)
            .count();
        let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
        for (_, what) in injected {
            let kind: String = what.chars().filter(|c| !c.is_ascii_digit()).collect();
            *kinds.entry(kind).or_default() += 1;
        }
        println!(
            "history check: {} operations ({posts} POSTs, {acked} acknowledged, {unavailable} unavailable), {} faults: {kinds:?}",
            history.len(),
            injected.len()
        );
        let found = violations(&history, finals);
        assert!(
            found.is_empty(),
            "seed {seed}: {} violation(s):\n{}",
            found.len(),
            found.join("\n")
        );
        assert!(
            acked > 0,
            "no POST was acknowledged: the run checked nothing"
        );
        assert!(!injected.is_empty(), "no fault was injected");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_of_concurrent_posts_and_gets_under_faults_is_newest_wins() {
    let (seed, secs) = seed_and_secs("history check (redis)");
    let redis = RedisServer::start_with_args(&["--appendonly", "yes", "--appendfsync", "always"]);
    let tmp = tempfile::tempdir().unwrap();
    let op = Arc::new(Operator::new("history"));
    std::fs::write(tmp.path().join("operator.jwt"), &op.jwt).unwrap();
    let instances: Vec<Instance> = (0..INSTANCES)
        .map(|i| Instance::on_redis(tmp.path(), i, &redis.url()))
        .collect();
    let urls = Arc::new(instances.iter().map(Instance::url).collect::<Vec<_>>());
    let instances = Arc::new(Mutex::new(instances));
    let redis = Arc::new(Mutex::new(redis));
    let work = Workload::new(op, secs);
    let tasks = work.spawn_clients(seed, &urls);
    let injected = faults(
        seed,
        redis.clone(),
        instances.clone(),
        work.deadline,
        work.t0,
    )
    .await;
    for t in tasks {
        t.await.unwrap();
    }
    let finals = work.converge(&urls).await;
    work.check(seed, &finals, &injected);
}

/// The PostgreSQL shape: three instances on one database (LISTEN/NOTIFY between them), same
/// clients and checker as the Redis run, with PostgreSQL's faults.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_on_postgres_under_faults_is_newest_wins() {
    let (seed, secs) = seed_and_secs("history check (postgres)");
    let pg = nas_testkit::PostgresServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let op = Arc::new(Operator::new("history-pg"));
    std::fs::write(tmp.path().join("operator.jwt"), &op.jwt).unwrap();
    let instances: Vec<Instance> = (0..INSTANCES)
        .map(|i| Instance::on_postgres(tmp.path(), i, &pg.url()))
        .collect();
    let urls = Arc::new(instances.iter().map(Instance::url).collect::<Vec<_>>());
    let instances = Arc::new(Mutex::new(instances));
    let pg = Arc::new(Mutex::new(pg));
    let work = Workload::new(op, secs);
    let tasks = work.spawn_clients(seed, &urls);
    let injected = pg_faults(seed, pg.clone(), instances.clone(), work.deadline, work.t0).await;
    for t in tasks {
        t.await.unwrap();
    }
    let finals = work.converge(&urls).await;
    for (at, what) in &injected {
        println!("  {at:.1?}: {what}");
    }
    work.check(seed, &finals, &injected);
}

/// Faults of the PostgreSQL shape, one every 1–2 s chosen by the seed: a restart of the
/// database (fast shutdown, then the same data directory and port again), `pg_terminate_backend`
/// of every listener session, of every pooled session of ours, and an instance SIGKILL +
/// restart.
#[cfg(feature = "postgres")]
async fn pg_faults(
    seed: u64,
    pg: Arc<Mutex<nas_testkit::PostgresServer>>,
    instances: Arc<Mutex<Vec<Instance>>>,
    deadline: Instant,
    t0: Instant,
) -> Vec<(Duration, String)> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x9057);
    let mut done = Vec::new();
    let terminate = |pg: &Arc<Mutex<nas_testkit::PostgresServer>>, name: String| {
        let pg = pg.clone();
        tokio::task::spawn_blocking(move || {
            let out = pg.lock().unwrap().psql(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = '{name}'"
            ));
            out.lines().filter(|l| *l == "t").count()
        })
    };
    while Instant::now() + Duration::from_secs(2) < deadline {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(1000..2000))).await;
        let at = t0.elapsed();
        let what = match rng.gen_range(0..4) {
            0 => {
                let pg = pg.clone();
                let down = tokio::task::spawn_blocking(move || {
                    let mut pg = pg.lock().unwrap();
                    let t = Instant::now();
                    pg.stop();
                    pg.start_again();
                    t.elapsed()
                })
                .await
                .unwrap();
                format!("postgres stop + start_again ({} ms down)", down.as_millis())
            }
            1 => {
                let n = terminate(&pg, format!("nas-store {PG_TABLE} listener"))
                    .await
                    .unwrap();
                format!("pg_terminate_backend listeners ({n})")
            }
            2 => {
                let n = terminate(&pg, format!("nas-store {PG_TABLE}"))
                    .await
                    .unwrap();
                format!("pg_terminate_backend pool sessions ({n})")
            }
            _ => {
                let which = rng.gen_range(0..INSTANCES);
                let instances = instances.clone();
                tokio::task::spawn_blocking(move || {
                    let mut all = instances.lock().unwrap();
                    all[which].kill();
                    all[which].start();
                })
                .await
                .unwrap();
                format!("instance {which} SIGKILL + restart")
            }
        };
        done.push((at, what));
    }
    done
}

/// The NATS shape: one instance on a directory store announcing to a real nats-server, whose
/// restarts (and the instance's SIGKILLs) are the faults. Besides the checks above: every
/// account's notifications arrive in increasing version order, and the last one is the newest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_on_a_directory_store_with_nats_announces_newest_last() {
    use futures::StreamExt;
    let (seed, secs) = seed_and_secs("history check (dir + NATS)");
    let bin = nas_testkit::require_nats_servers().pop().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let op = Arc::new(Operator::new("history-nats"));
    std::fs::write(tmp.path().join("operator.jwt"), &op.jwt).unwrap();
    std::fs::write(tmp.path().join("sys.creds"), common::system_user_creds(&op)).unwrap();
    let nats_port = free_port();
    let nats = nas_testkit::NatsServer::builder(&bin)
        .port(nats_port)
        .config(common::cache_or_full_config(&op, "cache", ""))
        .start();
    let body = format!(
        "store {{ dir: \"{}\" }}\nnats {{ servers: [\"nats://127.0.0.1:{nats_port}\"], usercredentials: \"{}\", reconnectwait: 200, packinterval: 0 }}",
        tmp.path().join("jwt").display(),
        tmp.path().join("sys.creds").display()
    );
    let instances = Arc::new(Mutex::new(vec![Instance::new(tmp.path(), 0, &body)]));
    let urls = Arc::new(vec![instances.lock().unwrap()[0].url()]);
    let watcher = async_nats::ConnectOptions::with_credentials_file(tmp.path().join("sys.creds"))
        .await
        .unwrap()
        .retry_on_initial_connect()
        .reconnect_delay_callback(|_| Duration::from_millis(100))
        .connect(nats.url())
        .await
        .unwrap();
    let mut updates = watcher
        .subscribe("$SYS.ACCOUNT.*.CLAIMS.UPDATE")
        .await
        .unwrap();
    watcher.flush().await.unwrap();
    let heard: Arc<Mutex<HashMap<String, Vec<i64>>>> = Arc::default();
    let recorder = {
        let heard = heard.clone();
        tokio::spawn(async move {
            while let Some(msg) = updates.next().await {
                let key = msg
                    .subject
                    .as_str()
                    .split('.')
                    .nth(2)
                    .unwrap_or_default()
                    .to_owned();
                if let Some(iat) = iat_of(&msg.payload) {
                    heard.lock().unwrap().entry(key).or_default().push(iat);
                }
            }
        })
    };
    let nats = Arc::new(Mutex::new(nats));
    let work = Workload::new(op.clone(), secs);
    let tasks = work.spawn_clients(seed, &urls);
    let injected = nats_faults(
        seed,
        nats.clone(),
        instances.clone(),
        work.deadline,
        work.t0,
    )
    .await;
    for t in tasks {
        t.await.unwrap();
    }
    let mut finals = work.converge(&urls).await;
    // A last version per account, once the watcher is surely connected, must be heard last.
    watcher.flush().await.unwrap();
    let http = reqwest::Client::new();
    for (account, key) in work.keys.iter().enumerate() {
        let iat = work.next[account].fetch_add(1, Ordering::SeqCst);
        let jwt = reissue(&op, key, "H", iat, |_| {});
        let res = http
            .post(format!("{}/jwt/v1/accounts/{}", urls[0], key.public_key()))
            .body(jwt)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        finals.insert(account, iat);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let done = work.keys.iter().enumerate().all(|(account, key)| {
            heard
                .lock()
                .unwrap()
                .get(key.public_key().as_str())
                .and_then(|v| v.last().copied())
                == finals.get(&account).copied()
        });
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the newest versions were never announced"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    recorder.abort();
    for (key, iats) in heard.lock().unwrap().iter() {
        assert!(
            iats.windows(2).all(|w| w[0] < w[1]),
            "seed {seed}: {key} announced out of order: {iats:?}"
        );
    }
    work.check(seed, &finals, &injected);
}

/// Faults of the NATS shape: nats-server SIGKILL + restart, instance SIGKILL + restart.
async fn nats_faults(
    seed: u64,
    nats: Arc<Mutex<nas_testkit::NatsServer>>,
    instances: Arc<Mutex<Vec<Instance>>>,
    deadline: Instant,
    t0: Instant,
) -> Vec<(Duration, String)> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x4a75);
    let mut done = Vec::new();
    while Instant::now() + Duration::from_secs(2) < deadline {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(1000..2000))).await;
        let at = t0.elapsed();
        let what = if rng.gen_bool(0.5) {
            let nats = nats.clone();
            tokio::task::spawn_blocking(move || nats.lock().unwrap().restart())
                .await
                .unwrap();
            "nats-server restart"
        } else {
            let instances = instances.clone();
            tokio::task::spawn_blocking(move || {
                let mut all = instances.lock().unwrap();
                all[0].kill();
                all[0].start();
            })
            .await
            .unwrap();
            "instance SIGKILL + restart"
        };
        done.push((at, what.to_owned()));
    }
    done
}

#[test]
fn the_checker_flags_lost_acks_and_stale_reads() {
    let at = Duration::from_millis;
    let post = |instance, v, end| Record {
        instance,
        account: 0,
        kind: Kind::Post(v),
        start: at(0),
        end: at(end),
        status: 200,
        got: None,
    };
    let get = |instance, got: Option<i64>, status, start| Record {
        instance,
        account: 0,
        kind: Kind::Get,
        start: at(start),
        end: at(start + 1),
        status,
        got,
    };
    let finals = HashMap::from([(0, 7)]);
    // Same instance after the ack: must see it. Another instance: only after the bound.
    let ok = [
        post(0, 7, 10),
        get(0, Some(7), 200, 11),
        get(1, Some(6), 200, 12),
    ];
    assert!(violations(&ok, &finals).is_empty());
    let stale_same = [post(0, 7, 10), get(0, Some(6), 200, 11)];
    assert_eq!(violations(&stale_same, &finals).len(), 1);
    let missing_later = [post(0, 7, 10), get(1, None, 404, 10 + 2_001)];
    assert_eq!(violations(&missing_later, &finals).len(), 1);
    let lost = [post(0, 8, 10)];
    assert_eq!(
        violations(&lost, &finals).len(),
        1,
        "final 7 < acknowledged 8"
    );
    let unavailable = [post(0, 7, 10), get(0, None, 503, 11)];
    assert!(violations(&unavailable, &finals).is_empty());
}
