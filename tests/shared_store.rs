//! Several instances on one Redis: a write accepted by A is served by B (pub/sub invalidation),
//! concurrent POSTs on A and B end with the newest iat, and a Redis outage keeps cached accounts
//! served while misses and POSTs answer 503 and /healthz reports it — then everything recovers.
//! The same coherence on a real 3-master Redis Cluster.

use std::time::{Duration, Instant};

use nas_server::config::{Config, RedisStore, S3Store, StoreConfig};
use nas_server::server::Server;
use nas_testkit::{RedisCluster, RedisServer};

mod common;
use common::{reissue, Operator};

async fn instance(dir: &std::path::Path, op: &Operator, redis_url: &str) -> Server {
    instance_on(dir, op, RedisStore::new(redis_url)).await
}

/// An instance on the Redis store `redis` (prefix `shared:`).
async fn instance_on(dir: &std::path::Path, op: &Operator, redis: RedisStore) -> Server {
    std::fs::write(dir.join("operator.jwt"), &op.jwt).unwrap();
    let mut config = Config::default();
    config.http.host = "127.0.0.1".into();
    config.http.port = 0;
    config.store = StoreConfig::Redis(RedisStore {
        prefix: "shared:".into(),
        ..redis
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

/// `writer` stores a new account, `reader` serves (and caches) it, then `writer` stores a newer
/// version of it. Returns the account and the newer JWT.
async fn cache_then_change(
    op: &Operator,
    name: &str,
    writer: &Server,
    reader: &Server,
) -> (nas_jwt::SigningKey, String) {
    let (acc, jwt) = op.account(name);
    let key = acc.public_key().as_str().to_owned();
    assert_eq!(post(writer, &key, &jwt).await, 200);
    assert_eq!(get(reader, &key).await, (200, jwt.clone()));
    let newer = reissue(op, &acc, &format!("{name}-2"), common::now() + 1, |_| {});
    assert_eq!(post(writer, &key, &newer).await, 200);
    (acc, newer)
}

/// Waits (up to 5 s) until `server` serves `jwt` for `key`: the change reached it.
async fn await_served(server: &Server, key: &str, jwt: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(server, key).await.1 != jwt {
        assert!(
            Instant::now() < deadline,
            "{key}: the change was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// 20 POSTs of `acc` on each of the two instances at once, the `iat`s interleaved: afterwards
/// both serve the newest. Returns it.
async fn race_posts_on_both(
    op: &Operator,
    acc: &nas_jwt::SigningKey,
    servers: [&Server; 2],
) -> String {
    let key = acc.public_key().as_str().to_owned();
    let base = common::now() + 10;
    let mut tasks = Vec::new();
    for (i, server_url) in servers.iter().map(|s| s.url()).enumerate() {
        let versions: Vec<String> = (0..20)
            .map(|n| reissue(op, acc, "APP-race", base + (n * 2 + i) as i64, |_| {}))
            .collect();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for v in versions {
                let status = client
                    .post(format!("{server_url}/jwt/v1/accounts/{key}"))
                    .body(v)
                    .send()
                    .await
                    .unwrap()
                    .status();
                assert!(status == 200 || status == 409, "{status}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let newest = reissue(op, acc, "APP-race", base + 39, |_| {});
    let newest_iat = nas_store::TokenMeta::read(newest.as_bytes()).unwrap().iat;
    for server in servers {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (_, body) = get(server, &key).await;
            if nas_store::TokenMeta::read(body.as_bytes()).unwrap().iat == newest_iat {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "an instance does not serve the newest iat"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    get(servers[0], &key).await.1
}

#[tokio::test]
async fn two_instances_on_one_redis_stay_coherent_and_survive_an_outage() {
    let mut redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("shared");
    let a = instance(tmp.path(), &op, &redis.url()).await;
    let b = instance(tmp.path(), &op, &redis.url()).await;
    // B caches the account, A changes it, B serves the change (pub/sub, not a TTL).
    let (acc, newer) = cache_then_change(&op, "APP", &a, &b).await;
    let key = acc.public_key().as_str().to_owned();
    await_served(&b, &key, &newer).await;

    // Concurrent POSTs on both instances: the newest iat wins everywhere.
    race_posts_on_both(&op, &acc, [&a, &b]).await;

    // Outage: cached accounts still served, misses and writes 503, healthz says so.
    let (missing, missing_jwt) = op.account("MISSING");
    redis.stop();
    assert_eq!(
        get(&a, &key).await.0,
        200,
        "cached account served during the outage"
    );
    let (status, body) = get(&a, missing.public_key().as_str()).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("unavailable"), "{body}");
    assert_eq!(
        post(&a, missing.public_key().as_str(), &missing_jwt).await,
        503
    );
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
    // Liveness stays up; readiness does not.
    let ready = reqwest::get(format!("{}/readyz", b.url())).await.unwrap();
    assert_eq!(ready.status(), 503);
    // Recovery without a restart of ours (the test Redis comes back empty).
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while post(&a, missing.public_key().as_str(), &missing_jwt).await != 200 {
        assert!(
            Instant::now() < deadline,
            "no recovery after Redis returned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get(&b, missing.public_key().as_str()).await.0, 200);
    // The probe's answer is reused for a second: poll for the first fresh one.
    let deadline = Instant::now() + Duration::from_secs(5);
    while reqwest::get(format!("{}/readyz", b.url()))
        .await
        .unwrap()
        .status()
        != 200
    {
        assert!(Instant::now() < deadline, "/readyz did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = a.metrics.render();
    assert!(
        metrics.contains("nas_store_errors_total{backend=\"redis\""),
        "outage counted in metrics"
    );
}

/// Two instances on a real 3-master Redis Cluster: every write through one is served by the
/// other (sharded pub/sub invalidation, accounts in many key groups), concurrent POSTs through
/// both end with the newest iat, and the PACK hash every instance reads is the XOR of what they
/// serve.
#[tokio::test]
async fn two_instances_on_a_redis_cluster_stay_coherent() {
    let cluster = RedisCluster::start(3);
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("cluster");
    let a = instance_on(tmp.path(), &op, RedisStore::cluster(cluster.urls())).await;
    let b = instance_on(tmp.path(), &op, RedisStore::cluster(cluster.urls())).await;
    let mut served = Vec::new();
    for i in 0..8 {
        let (writer, reader) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        // The reader caches the account, the writer changes it, the reader serves the change.
        let (acc, newer) = cache_then_change(&op, &format!("APP{i}"), writer, reader).await;
        let key = acc.public_key().as_str().to_owned();
        await_served(reader, &key, &newer).await;
        served.push((key, newer));
    }
    let (acc, _) = op.account("RACE");
    let newest = race_posts_on_both(&op, &acc, [&a, &b]).await;
    served.push((acc.public_key().as_str().to_owned(), newest));

    // The hash lives in the cluster: a store opened on it reads the one every instance reads.
    let backend = nas_store::redis::RedisBackend::open(nas_store::redis::RedisOptions {
        url: cluster.urls().join(","),
        cluster: true,
        prefix: "shared:".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    // What it must be: the hash a store holding exactly the served JWTs computes itself.
    let reference = nas_store::Store::new(std::sync::Arc::new(
        nas_store::memory::MemoryBackend::new_read_only(
            served
                .iter()
                .map(|(key, jwt)| (key.clone(), bytes::Bytes::from(jwt.clone()))),
        ),
    ));
    let store = nas_store::Store::new(std::sync::Arc::new(backend));
    assert_eq!(
        store.pack_hash().await.unwrap(),
        reference.pack_hash().await.unwrap()
    );
}

async fn s3_instance(dir: &std::path::Path, op: &Operator, endpoint: &str) -> Server {
    std::fs::write(dir.join("operator.jwt"), &op.jwt).unwrap();
    let mut config = Config::default();
    config.http.host = "127.0.0.1".into();
    config.http.port = 0;
    config.store = StoreConfig::S3(S3Store {
        prefix: "nas/".into(),
        endpoint: Some(endpoint.to_owned()),
        region: Some(nas_testkit::S3_REGION.into()),
        access_key_id: Some(nas_testkit::S3_ACCESS_KEY_ID.into()),
        secret_access_key: Some(nas_testkit::S3_SECRET_ACCESS_KEY.into()),
        path_style: true,
        allow_http: true,
        ..S3Store::new("nas-shared")
    });
    // No change channel on S3 alone: the cache TTL is the staleness bound.
    config.cache.ttl = Some(Duration::from_secs(1));
    config.operator_jwt_path = Some(dir.join("operator.jwt"));
    Server::start(&config).await.unwrap()
}

#[tokio::test]
async fn two_instances_on_one_bucket_converge_within_the_cache_ttl() {
    let mut s3 = nas_testkit::S3Server::start();
    s3.create_bucket("nas-shared");
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("s3-shared");
    let a = s3_instance(tmp.path(), &op, &s3.endpoint()).await;
    let b = s3_instance(tmp.path(), &op, &s3.endpoint()).await;
    let (acc, newer) = cache_then_change(&op, "APP", &a, &b).await;
    let key = acc.public_key().as_str().to_owned();
    // An older JWT posted to B loses against the newer one A wrote (conditional writes).
    let older = reissue(&op, &acc, "APP-old", common::now() - 100, |_| {});
    assert_eq!(post(&b, &key, &older).await, 409);
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(&b, &key).await.1 != newer {
        assert!(
            Instant::now() < deadline,
            "B never served A's change within the TTL"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Outage: accounts already verified keep being served after their TTL (stale-if-error);
    // misses are 503, not 404.
    let (missing, missing_jwt) = op.account("MISSING");
    s3.stop();
    tokio::time::sleep(Duration::from_millis(1200)).await; // past the 1 s cache TTL
    assert_eq!(
        get(&b, &key).await,
        (200, newer.clone()),
        "known account served during the outage"
    );
    let (status, _) = get(&a, missing.public_key().as_str()).await;
    assert_eq!(status, 503);
    assert_eq!(
        post(&a, missing.public_key().as_str(), &missing_jwt).await,
        503
    );
    s3.restart();
    s3.create_bucket("nas-shared");
    assert_eq!(
        post(&a, missing.public_key().as_str(), &missing_jwt).await,
        200
    );
    assert_eq!(get(&b, missing.public_key().as_str()).await.0, 200);
}

/// A CA and a server certificate for 127.0.0.1 signed by it, as PEM files in `dir`.
fn test_ca(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("redis.pem"),
        dir.join("redis.key"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

/// `rediss://` against a real redis-server speaking TLS with a certificate of a CA made here:
/// with `store { tls { ca } }` the store works (the write lands in that Redis); without it the
/// certificate is refused and nothing is served.
#[tokio::test]
async fn rediss_works_with_the_configured_ca_and_refuses_an_unknown_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_ca(tmp.path());
    let (redis, tls_port) = RedisServer::start_tls(&cert, &key, &ca);
    let op = Operator::new("rediss");
    std::fs::write(tmp.path().join("operator.jwt"), &op.jwt).unwrap();
    let mut config = Config::default();
    config.http.host = "127.0.0.1".into();
    config.http.port = 0;
    let rediss = RedisStore {
        prefix: "tls:".into(),
        ..RedisStore::new(format!("rediss://127.0.0.1:{tls_port}/"))
    };
    config.store = StoreConfig::Redis(rediss.clone());
    config.operator_jwt_path = Some(tmp.path().join("operator.jwt"));

    // No CA configured: the system's roots, which do not know the test CA.
    let untrusting = config.clone();
    match Server::start(&untrusting).await {
        Err(e) => assert!(e.to_string().to_lowercase().contains("certificate"), "{e}"),
        Ok(server) => {
            let (acc, jwt) = op.account("X");
            assert_eq!(post(&server, acc.public_key().as_str(), &jwt).await, 503);
            server.stop().await;
        }
    }

    let mut trusting = rediss;
    trusting.tls.ca = Some(ca);
    config.store = StoreConfig::Redis(trusting);
    let server = Server::start(&config).await.unwrap();
    let (acc, jwt) = op.account("A");
    let key = acc.public_key().as_str().to_owned();
    assert_eq!(post(&server, &key, &jwt).await, 200);
    assert_eq!(get(&server, &key).await, (200, jwt.clone()));
    // The write is in that Redis: read it over its plain port.
    let plain = redis::Client::open(redis.url()).unwrap();
    let mut conn = plain.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.iter().any(|k| k.contains(&key)), "{keys:?}");
    server.stop().await;
}
