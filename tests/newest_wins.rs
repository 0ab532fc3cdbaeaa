//! "After a newer trusted JWT is acknowledged, no instance serves an older one": one staged
//! race or fault per defect of the newest-wins issue, each made deterministic with the
//! fault-injecting backend decorator (a read held after it has its value, a store that fails on
//! one instance) or a real redis-server (a pub/sub connection killed while a change is made).

use std::sync::Arc;
use std::time::{Duration, Instant};

use nas_server::config::{Config, StoreConfig};
use nas_server::server::Server;
use nas_store::fault::{FaultBackend, Op, Point};
use nas_store::{Backend, StoreError};
#[cfg(feature = "redis")]
use nas_testkit::RedisServer;

mod common;
use common::{reissue, Operator};

async fn start(
    dir: &std::path::Path,
    op: &Operator,
    tweak: impl FnOnce(&mut Config),
) -> (Server, Arc<FaultBackend>) {
    std::fs::write(dir.join("operator.jwt"), &op.jwt).unwrap();
    let mut config = Config::default();
    config.http.host = "127.0.0.1".into();
    config.http.port = 0;
    config.store = StoreConfig::Memory;
    config.operator_jwt_path = Some(dir.join("operator.jwt"));
    tweak(&mut config);
    let mut faults = None;
    let server = Server::start_with(&config, |inner| {
        let f = FaultBackend::new(inner);
        faults = Some(f.clone());
        f as Arc<dyn Backend>
    })
    .await
    .unwrap();
    (server, faults.unwrap())
}

#[cfg(feature = "redis")]
fn redis_config(url: String) -> impl FnOnce(&mut Config) {
    move |c: &mut Config| {
        c.store = StoreConfig::Redis(nas_server::config::RedisStore {
            prefix: "newest:".into(),
            ..nas_server::config::RedisStore::new(url)
        });
    }
}

async fn post(server: &Server, key: &str, jwt: &str) -> (u16, String) {
    let res = reqwest::Client::new()
        .post(format!("{}/jwt/v1/accounts/{key}", server.url()))
        .body(jwt.to_owned())
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

async fn get(base: &str, key: &str) -> (u16, String) {
    let res = reqwest::get(format!("{base}/jwt/v1/accounts/{key}"))
        .await
        .unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

/// Waits (bounded) until `done` holds: for an event another task produces, not for time.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_load_that_read_an_old_version_cannot_overwrite_a_newer_write() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("race");
    let (server, faults) = start(tmp.path(), &op, |_| {}).await;
    let (acc, v1) = op.account("A");
    let key = acc.public_key().as_str().to_owned();
    assert_eq!(post(&server, &key, &v1).await.0, 200);
    // Make the next GET load from the store, and hold that load once it has read v1.
    server.store.mark_all_stale();
    let held = faults.pause(Op::Get, Point::After, Some(&key));
    let base = server.url();
    let slow_get = tokio::spawn({
        let (base, key) = (base.clone(), key.clone());
        async move { get(&base, &key).await }
    });
    held.reached().await;
    let v3 = reissue(&op, &acc, "A3", common::now() + 5, |_| {});
    assert_eq!(post(&server, &key, &v3).await.0, 200);
    held.release();
    // The held GET overlapped the POST: either version is a correct answer for it.
    let (status, _) = slow_get.await.unwrap();
    assert_eq!(status, 200);
    for _ in 0..3 {
        assert_eq!(get(&base, &key).await, (200, v3.clone()), "v1 came back");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_load_that_found_nothing_cannot_hide_a_just_created_account() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("create-race");
    let (server, faults) = start(tmp.path(), &op, |_| {}).await;
    let (acc, v1) = op.account("A");
    let key = acc.public_key().as_str().to_owned();
    let held = faults.pause(Op::Get, Point::After, Some(&key));
    let base = server.url();
    let slow_get = tokio::spawn({
        let (base, key) = (base.clone(), key.clone());
        async move { get(&base, &key).await }
    });
    held.reached().await;
    assert_eq!(post(&server, &key, &v1).await.0, 200);
    held.release();
    let _ = slow_get.await.unwrap();
    assert_eq!(get(&base, &key).await, (200, v1), "404 after a 200");
    server.stop().await;
}

#[tokio::test]
async fn a_post_whose_write_timed_out_but_landed_is_served_and_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("unknown-outcome");
    let (server, faults) = start(tmp.path(), &op, |_| {}).await;
    let (acc, v1) = op.account("A");
    let key = acc.public_key().as_str().to_owned();
    faults.fail(
        Op::Put,
        Point::After,
        Some(&key),
        StoreError::Unavailable("injected timeout".into()),
        1,
    );
    assert_eq!(post(&server, &key, &v1).await.0, 200);
    assert_eq!(get(&server.url(), &key).await, (200, v1));
    server.stop().await;
}

/// The write lands, its reply is lost and so is the read-back that would have told: the client
/// hears 503 (nothing was acknowledged), and this instance must not go on serving the version it
/// had cached, since nobody will tell it (its own writes are not echoed back).
#[tokio::test]
async fn a_write_of_unknown_outcome_that_landed_unheard_is_served_next() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("unheard");
    let (server, faults) = start(tmp.path(), &op, |_| {}).await;
    let (acc, v1) = op.account("A");
    let key = acc.public_key().as_str().to_owned();
    assert_eq!(post(&server, &key, &v1).await.0, 200);
    assert_eq!(
        get(&server.url(), &key).await,
        (200, v1.clone()),
        "v1 cached"
    );
    let v2 = reissue(&op, &acc, "A2", common::now() + 5, |_| {});
    // Hold the write once it has decided (after its first read), then make the write land but
    // report a timeout, and make the read-back fail too.
    let held = faults.pause(Op::Put, Point::Before, Some(&key));
    let posting = tokio::spawn({
        let (url, key, v2) = (server.url(), key.clone(), v2.clone());
        async move {
            let res = reqwest::Client::new()
                .post(format!("{url}/jwt/v1/accounts/{key}"))
                .body(v2)
                .send()
                .await
                .unwrap();
            res.status().as_u16()
        }
    });
    held.reached().await;
    let lost = || StoreError::Unavailable("injected timeout".into());
    faults.fail(Op::Put, Point::After, Some(&key), lost(), 1);
    faults.fail(Op::Get, Point::Before, Some(&key), lost(), 1);
    held.release();
    assert_eq!(
        posting.await.unwrap(),
        503,
        "an unknown outcome is not acknowledged"
    );
    assert_eq!(
        get(&server.url(), &key).await,
        (200, v2),
        "the instance kept serving the version the landed write replaced"
    );
    server.stop().await;
}

/// A delete that lands while its reply is lost: with the read-back answering, the delete is
/// reported done; with the read-back lost too, the client hears 503 and the deleted account is
/// not served from this instance's cache any more.
#[tokio::test]
async fn a_delete_of_unknown_outcome_is_read_back_and_never_served_from_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("unheard-delete");
    std::fs::write(tmp.path().join("SYS.jwt"), &op.system_jwt).unwrap();
    let (server, faults) = start(tmp.path(), &op, |c| {
        c.nats.allow_delete = true;
        c.system_account_jwt_path = Some(tmp.path().join("SYS.jwt"));
    })
    .await;
    let lost = || StoreError::Unavailable("injected timeout".into());
    for read_back_lost in [false, true] {
        let (acc, v1) = op.account("A");
        let key = acc.public_key().as_str().to_owned();
        assert_eq!(post(&server, &key, &v1).await.0, 200);
        assert_eq!(get(&server.url(), &key).await.0, 200, "cached");
        let held = faults.pause(Op::Delete, Point::Before, Some(&key));
        let deleting = tokio::spawn({
            let (url, key) = (server.url(), key.clone());
            let body = common::delete_request(vec![key.clone()], &op.signing_key, common::now(), 0);
            async move {
                let res = reqwest::Client::new()
                    .delete(format!("{url}/jwt/v1/accounts/{key}"))
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                res.status().as_u16()
            }
        });
        held.reached().await;
        faults.fail(Op::Delete, Point::After, Some(&key), lost(), 1);
        if read_back_lost {
            faults.fail(Op::Get, Point::Before, Some(&key), lost(), 1);
        }
        held.release();
        let expected = if read_back_lost { 503 } else { 200 };
        assert_eq!(
            deleting.await.unwrap(),
            expected,
            "read-back lost: {read_back_lost}"
        );
        assert_eq!(
            get(&server.url(), &key).await.0,
            404,
            "a deleted account was served (read-back lost: {read_back_lost})"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn concurrent_posts_end_with_the_newest_served() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("posts");
    let (server, _faults) = start(tmp.path(), &op, |_| {}).await;
    let (acc, _) = op.account("A");
    let key = acc.public_key().as_str().to_owned();
    let base = common::now() + 10;
    let versions: Vec<String> = (0..40)
        .map(|i| reissue(&op, &acc, "A", base + i, |_| {}))
        .collect();
    let url = server.url();
    let mut tasks = Vec::new();
    for v in versions.iter().rev().cloned() {
        let (url, key) = (url.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{url}/jwt/v1/accounts/{key}"))
                .body(v)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        let status = t.await.unwrap();
        assert!(status == 200 || status == 409, "{status}");
    }
    assert_eq!(get(&url, &key).await, (200, versions[39].clone()));
    server.stop().await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn stale_if_error_never_serves_a_version_replaced_on_another_instance() {
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("stale");
    let (a, _) = start(tmp.path(), &op, redis_config(redis.url())).await;
    let (b, b_faults) = start(tmp.path(), &op, redis_config(redis.url())).await;
    let (acc, v1) = op.account("A");
    let key = acc.public_key().as_str().to_owned();
    assert_eq!(post(&a, &key, &v1).await.0, 200);
    assert_eq!(get(&b.url(), &key).await, (200, v1.clone()));
    let before = b.store.generation(&key);
    let v2 = reissue(&op, &acc, "A2", common::now() + 5, |_| {});
    assert_eq!(post(&a, &key, &v2).await.0, 200);
    until("B hearing of A's write", || {
        b.store.generation(&key) > before
    })
    .await;
    // B's store goes away. B must not fall back to v1, which it verified earlier.
    b_faults.fail(
        Op::Get,
        Point::Before,
        None,
        StoreError::Unavailable("injected outage".into()),
        usize::MAX,
    );
    let (status, body) = get(&b.url(), &key).await;
    assert_ne!(body, v1, "a replaced version was served as stale-if-error");
    assert_eq!(status, 503, "{body}");
    b_faults.clear();
    // Failures are remembered briefly (no stampede on a down store); then v2, never v1.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get(&b.url(), &key).await;
        assert_ne!(body, v1);
        if status == 200 {
            assert_eq!(body, v2);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B never recovered: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn stale_if_error_serves_the_current_version_during_an_outage() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("outage");
    let (server, faults) = start(tmp.path(), &op, |c| {
        c.cache.ttl = Some(Duration::from_millis(1));
    })
    .await;
    let (acc, v1) = op.account("A");
    let key = acc.public_key().as_str().to_owned();
    assert_eq!(post(&server, &key, &v1).await.0, 200);
    faults.fail(
        Op::Get,
        Point::Before,
        None,
        StoreError::Unavailable("injected outage".into()),
        usize::MAX,
    );
    // Past the TTL, the reload fails: the last verified version is served (within maxstale).
    let checked = Instant::now();
    until("the TTL to pass", || {
        checked.elapsed() > Duration::from_millis(2)
    })
    .await;
    assert_eq!(get(&server.url(), &key).await, (200, v1));
    assert_eq!(server.metrics.stale_served.get(), 1);
    server.stop().await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn a_change_missed_during_a_pubsub_reconnect_is_picked_up_by_the_resync() {
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("resync");
    let (a, _) = start(tmp.path(), &op, redis_config(redis.url())).await;
    let (b, _) = start(tmp.path(), &op, redis_config(redis.url())).await;
    let (acc, v1) = op.account("A");
    let key = acc.public_key().as_str().to_owned();
    assert_eq!(post(&a, &key, &v1).await.0, 200);
    assert_eq!(get(&b.url(), &key).await, (200, v1.clone()));
    let floor = b.store.floor();
    let mut admin = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut admin)
        .await
        .unwrap();
    let v2 = reissue(&op, &acc, "A2", common::now() + 5, |_| {});
    assert_eq!(post(&a, &key, &v2).await.0, 200);
    // B re-subscribes and declares everything it cached possibly stale.
    until("B's resync after the reconnect", || b.store.floor() > floor).await;
    assert_eq!(get(&b.url(), &key).await, (200, v2));
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_same_second_reissue_is_either_served_or_refused_with_409() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("same-second");
    let (server, _faults) = start(tmp.path(), &op, |_| {}).await;
    let (acc, _) = op.account("A");
    let key = acc.public_key().as_str().to_owned();
    let iat = common::now();
    let x = reissue(&op, &acc, "A", iat, |c| c.nats.limits.conn = 1);
    let y = reissue(&op, &acc, "A", iat, |c| c.nats.limits.conn = 2);
    assert_eq!(post(&server, &key, &x).await.0, 200);
    let (status, body) = post(&server, &key, &y).await;
    let served = get(&server.url(), &key).await.1;
    match status {
        200 => assert_eq!(served, y, "200 but the first JWT is still served"),
        409 => {
            assert!(body.contains("re-issue"), "{body}");
            assert_eq!(served, x);
        }
        other => panic!("{other}: {body}"),
    }
    // Whichever order they arrive in, the same one ends up stored (every instance converges).
    let (other, _) = start(tmp.path(), &op, |_| {}).await;
    post(&other, &key, &y).await;
    post(&other, &key, &x).await;
    assert_eq!(get(&other.url(), &key).await.1, served);
    server.stop().await;
    other.stop().await;
}

/// The history checker found this one: a GET that starts after a POST was acknowledged must
/// not join a load that began before the POST and get its older reading.
#[tokio::test]
async fn a_get_after_an_ack_never_joins_an_older_load() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("join");
    let (server, faults) = start(tmp.path(), &op, |_| {}).await;
    let (acc, v1) = op.account("A");
    let key = acc.public_key().as_str().to_owned();
    assert_eq!(post(&server, &key, &v1).await.0, 200);
    server.store.mark_all_stale();
    let held = faults.pause(Op::Get, Point::After, Some(&key));
    let base = server.url();
    let early = tokio::spawn({
        let (base, key) = (base.clone(), key.clone());
        async move { get(&base, &key).await }
    });
    held.reached().await;
    let v3 = reissue(&op, &acc, "A3", common::now() + 5, |_| {});
    assert_eq!(post(&server, &key, &v3).await.0, 200);
    // Make the late GET miss the cache, so it finds the early load (holding v1) in flight.
    server.store.mark_all_stale();
    let misses = server.metrics.cache_misses.get();
    let late = tokio::spawn({
        let (base, key) = (base.clone(), key.clone());
        async move { get(&base, &key).await }
    });
    until("the late GET to join the load", || {
        server.metrics.cache_misses.get() > misses
    })
    .await;
    held.release();
    assert_eq!(late.await.unwrap(), (200, v3));
    let _ = early.await.unwrap();
    server.stop().await;
}
