//! Several instances on one PostgreSQL database, end to end over HTTP: a write accepted by A is
//! served by B within a second (LISTEN/NOTIFY), concurrent POSTs on A and B end with the newest
//! iat, a database outage keeps cached accounts served while misses and POSTs answer 503 (never
//! 404) — then everything recovers without restarting our servers — and terminated listener
//! sessions resync.

#![cfg(feature = "postgres")]

use std::time::{Duration, Instant};

use nas_server::config::{Config, PostgresStore, StoreConfig};
use nas_server::server::Server;
use nas_testkit::PostgresServer;

mod common;
use common::{reissue, Operator};

/// Cross-instance staleness bound on one database while the listener sessions are up (and
/// after one is terminated: it reconnects after 200 ms and asks for a full re-read).
const BOUND: Duration = Duration::from_secs(1);
/// How long recovery after a database restart may take: the listener reconnects with a
/// backoff of up to 5 s (plus one connect).
const RECOVERY: Duration = Duration::from_secs(10);
const TABLE: &str = "shared";

async fn instance(dir: &std::path::Path, op: &Operator, pg_url: &str) -> Server {
    std::fs::write(dir.join("operator.jwt"), &op.jwt).unwrap();
    let mut config = Config::default();
    config.http.host = "127.0.0.1".into();
    config.http.port = 0;
    config.store = StoreConfig::Postgres(PostgresStore {
        table: TABLE.into(),
        ..PostgresStore::new(pg_url)
    });
    config.operator_jwt_path = Some(dir.join("operator.jwt"));
    Server::start(&config).await.unwrap()
}

async fn post(server: &Server, key: &str, jwt: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{}/jwt/v1/accounts/{key}", server.url()))
        .body(jwt.to_owned())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn get(server: &Server, key: &str) -> (u16, String) {
    let res = reqwest::get(format!("{}/jwt/v1/accounts/{key}", server.url()))
        .await
        .unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

fn iat(jwt: &str) -> i64 {
    nas_store::TokenMeta::read(jwt.as_bytes()).unwrap().iat
}

/// Polls `server` until it serves `want` (a 200 with those bytes), failing after `bound`;
/// returns how long it took.
async fn served_within(server: &Server, key: &str, want: &str, bound: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let (status, body) = get(server, key).await;
        if status == 200 && body == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < bound,
            "not served within {bound:?} (last answer {status}, iat {:?}, want {})",
            nas_store::TokenMeta::read(body.as_bytes())
                .ok()
                .map(|m| m.iat),
            iat(want)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs blocking work (the test PostgreSQL's stop/start, psql) off the runtime that drives the
/// instances' listener sessions.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_instance_is_served_by_the_other_within_a_second() {
    let pg = PostgresServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("pg-coherent");
    let a = instance(tmp.path(), &op, &pg.url()).await;
    let b = instance(tmp.path(), &op, &pg.url()).await;
    let (acc, jwt) = op.account("APP");
    let key = acc.public_key().as_str().to_owned();

    assert_eq!(post(&a, &key, &jwt).await, 200);
    // B reads it on its first GET (a miss) and caches it.
    assert_eq!(get(&b, &key).await, (200, jwt.clone()));
    // Then each side changes it in turn; the other serves the change within the bound
    // (a notification, not a TTL: there is none).
    let mut slowest = Duration::ZERO;
    for round in 0..4i64 {
        let (writer, reader) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let newer = reissue(&op, &acc, "APP-2", common::now() + 1 + round, |_| {});
        assert_eq!(post(writer, &key, &newer).await, 200);
        assert_eq!(get(writer, &key).await, (200, newer.clone()), "own write");
        slowest = slowest.max(served_within(reader, &key, &newer, BOUND).await);
    }
    println!("slowest cross-instance visibility: {slowest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_posts_on_two_instances_end_with_the_newest_iat() {
    let pg = PostgresServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("pg-race");
    let a = instance(tmp.path(), &op, &pg.url()).await;
    let b = instance(tmp.path(), &op, &pg.url()).await;
    let (acc, jwt) = op.account("APP");
    let key = acc.public_key().as_str().to_owned();
    assert_eq!(post(&a, &key, &jwt).await, 200);
    // Both cache the first version, so the newest must reach them as a change.
    assert_eq!(get(&a, &key).await.0, 200);
    assert_eq!(get(&b, &key).await.0, 200);

    // 40 versions with distinct iats, signed beforehand, sent all at once, alternating between
    // the instances, in an order that is not the iat order.
    let base = common::now() + 10;
    let versions: Vec<(i64, String)> = (0..40)
        .map(|n| (n * 7) % 40)
        .map(|n| {
            let jwt = reissue(&op, &acc, "APP-race", base + n, |_| {});
            (base + n, jwt)
        })
        .collect();
    let client = reqwest::Client::new();
    let tasks: Vec<_> = versions
        .into_iter()
        .enumerate()
        .map(|(i, (iat, jwt))| {
            let url = format!(
                "{}/jwt/v1/accounts/{key}",
                if i % 2 == 0 { a.url() } else { b.url() }
            );
            let client = client.clone();
            tokio::spawn(async move {
                let status = client.post(url).body(jwt).send().await.unwrap().status();
                (iat, status.as_u16())
            })
        })
        .collect();
    let mut acked = Vec::new();
    for t in tasks {
        let (iat, status) = t.await.unwrap();
        assert!(status == 200 || status == 409, "iat {iat}: {status}");
        if status == 200 {
            acked.push(iat);
        }
    }
    let newest = base + 39;
    assert!(acked.contains(&newest), "the newest version was refused");
    let newest_jwt = reissue(&op, &acc, "APP-race", newest, |_| {});
    for server in [&a, &b] {
        served_within(server, &key, &newest_jwt, BOUND).await;
    }
    // The database holds it too, and nothing acknowledged is newer than what is served.
    let stored = pg.psql(&format!(
        "SELECT iat FROM {TABLE}_entries WHERE ns = 'accounts' AND key = '{key}'"
    ));
    assert_eq!(stored.trim(), newest.to_string());
    for server in [&a, &b] {
        let (_, body) = get(server, &key).await;
        let served = iat(&body);
        assert!(acked.iter().all(|v| *v <= served), "{acked:?} > {served}");
    }
    println!("{} of 40 POSTs acknowledged", acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_answers_503_serves_cached_accounts_and_recovers() {
    let pg = std::sync::Arc::new(std::sync::Mutex::new(PostgresServer::start()));
    let url = pg.lock().unwrap().url();
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("pg-outage");
    let a = instance(tmp.path(), &op, &url).await;
    let b = instance(tmp.path(), &op, &url).await;
    let (acc, jwt) = op.account("APP");
    let key = acc.public_key().as_str().to_owned();
    assert_eq!(post(&a, &key, &jwt).await, 200);
    assert_eq!(get(&a, &key).await, (200, jwt.clone()));
    assert_eq!(get(&b, &key).await, (200, jwt.clone()));

    let (missing, missing_jwt) = op.account("MISSING");
    let missing_key = missing.public_key().as_str().to_owned();
    let stopped = pg.clone();
    blocking(move || stopped.lock().unwrap().stop()).await;
    for server in [&a, &b] {
        assert_eq!(
            get(server, &key).await,
            (200, jwt.clone()),
            "cached account served during the outage"
        );
        let (status, body) = get(server, &missing_key).await;
        assert_eq!(status, 503, "a miss during the outage: {body}");
        assert!(body.contains("unavailable"), "{body}");
    }
    assert_eq!(post(&a, &missing_key, &missing_jwt).await, 503);
    let newer = reissue(&op, &acc, "APP-2", common::now() + 1, |_| {});
    assert_eq!(post(&b, &key, &newer).await, 503);
    let health: serde_json::Value = serde_json::from_slice(
        &reqwest::get(format!("{}/healthz", a.url()))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(health["status"], "degraded", "{health}");
    // Still 503 — never 404 — when asked again after the outage has lasted a while.
    assert_eq!(get(&b, &missing_key).await.0, 503);

    // The same database (data kept) comes back; our servers were not restarted. The first
    // requests work: pooled sessions are checked before reuse.
    let started = pg.clone();
    blocking(move || started.lock().unwrap().start_again()).await;
    let back = Instant::now();
    assert_eq!(post(&a, &missing_key, &missing_jwt).await, 200);
    assert_eq!(get(&b, &missing_key).await, (200, missing_jwt.clone()));
    assert_eq!(get(&a, &missing_key).await, (200, missing_jwt.clone()));
    // A changes the account both have cached; B's listener reconnects (it backs off while
    // the database is down) and re-reads what it may have missed.
    assert_eq!(post(&a, &key, &newer).await, 200);
    served_within(&a, &key, &newer, BOUND).await;
    let took = served_within(&b, &key, &newer, RECOVERY).await;
    println!(
        "B served A's write {took:?} after the ack ({:?} after the database was back)",
        back.elapsed()
    );
    // And after the resync, changes are heard as they happen again.
    let newest = reissue(&op, &acc, "APP-3", common::now() + 2, |_| {});
    assert_eq!(post(&a, &key, &newest).await, 200);
    served_within(&b, &key, &newest, BOUND).await;
    let metrics = a.metrics.render();
    assert!(
        metrics.contains("nas_store_errors_total{backend=\"postgres\""),
        "outage counted in metrics"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_listener_sessions_resync_and_serve_the_write_within_the_bound() {
    let pg = std::sync::Arc::new(PostgresServer::start());
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("pg-listener");
    let a = instance(tmp.path(), &op, &pg.url()).await;
    let b = instance(tmp.path(), &op, &pg.url()).await;
    let (acc, jwt) = op.account("APP");
    let key = acc.public_key().as_str().to_owned();
    assert_eq!(post(&a, &key, &jwt).await, 200);
    assert_eq!(get(&b, &key).await, (200, jwt.clone()));

    for round in 0..3i64 {
        listeners_up(&pg).await;
        let newer = reissue(&op, &acc, "APP-2", common::now() + 1 + round, |_| {});
        // Both listeners are terminated while A writes: B may miss the notification, and must
        // then re-read once its listener is back.
        let admin = pg.clone();
        let terminate = blocking(move || {
            admin.psql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name LIKE '%listener'",
            )
        });
        let (terminated, status) = tokio::join!(terminate, post(&a, &key, &newer));
        assert_eq!(status, 200);
        assert_eq!(
            terminated.lines().filter(|l| *l == "t").count(),
            2,
            "both listeners were found and terminated: {terminated:?}"
        );
        let acked = Instant::now();
        served_within(&b, &key, &newer, BOUND).await;
        println!(
            "round {round}: B served the write {:?} after the ack",
            acked.elapsed()
        );
    }
    listeners_up(&pg).await;
}

/// Waits (bounded) until both instances' listener sessions are connected.
async fn listeners_up(pg: &std::sync::Arc<PostgresServer>) {
    let start = Instant::now();
    loop {
        let admin = pg.clone();
        let count = blocking(move || {
            admin.psql(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE '%listener'",
            )
        })
        .await;
        if count.trim() == "2" {
            return;
        }
        assert!(
            start.elapsed() < RECOVERY,
            "listener sessions: {count:?}, not 2"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
