//! Miss-path latency per backend: what a GET costs when the verified cache does not hold the
//! account (one store read of a 1 KB account JWT), as p50/p99 over 5,000 reads (1,000 for S3).
//! Run: `cargo bench -p nas-store --bench miss_latency` (starts a real redis-server, a real
//! 3-master Redis Cluster, a moto S3 server and, with the `postgres` feature (default), a real PostgreSQL on 127.0.0.1).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nas_store::dir::{DirBackend, DirOptions};
use nas_store::memory::MemoryBackend;
use nas_store::redis::{RedisBackend, RedisOptions};
use nas_store::s3::{S3Backend, S3Options};
use nas_store::{Backend, Store, TokenMeta};

const READS: usize = 5_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn measure(name: &str, backend: Arc<dyn Backend>, token: &Bytes, key: &str) {
    let store = Store::new(backend);
    store
        .put_account_if_newer(key, token.clone(), &TokenMeta::read(token).expect("meta"))
        .await
        .expect("put");
    let mut samples = Vec::with_capacity(READS);
    for _ in 0..READS {
        let t = Instant::now();
        let got = store.get_account(key).await.expect("get");
        samples.push(t.elapsed());
        assert!(got.is_some());
    }
    samples.sort();
    println!(
        "| {name} | {:.1?} | {:.1?} | {:.1?} |",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples[samples.len() - 1]
    );
}

/// The shared PACK hash read (one `GET` on one server, one per key group on a cluster), p50/p99
/// over 1,000 reads: what a PACK request costs before any line is sent.
async fn measure_hash(name: &str, backend: Arc<dyn Backend>) {
    let store = Store::new(backend);
    let mut samples = Vec::with_capacity(1_000);
    for _ in 0..1_000 {
        let t = Instant::now();
        store.pack_hash().await.expect("pack hash");
        samples.push(t.elapsed());
    }
    samples.sort();
    println!(
        "| {name} PACK hash read | {:.1?} | {:.1?} | {:.1?} |",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples[samples.len() - 1]
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let token = Bytes::from(
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/jwt/account_b.jwt"
        ))
        .expect("fixture"),
    );
    let key = nas_jwt::jwt::peek_payload(&token).expect("payload")["sub"]
        .as_str()
        .expect("sub")
        .to_owned();
    let redis = nas_testkit::RedisServer::start();
    let cluster = nas_testkit::RedisCluster::start(3);
    let s3 = nas_testkit::S3Server::start();
    s3.create_bucket("nas-bench");
    #[cfg(feature = "postgres")]
    let pg = nas_testkit::PostgresServer::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        println!("| backend | p50 | p99 | max |\n|---|---|---|---|");
        measure("memory", Arc::new(MemoryBackend::new()), &token, &key).await;
        measure(
            "dir",
            Arc::new(DirBackend::open(tmp.path(), DirOptions::default()).expect("dir")),
            &token,
            &key,
        )
        .await;
        let redis_backend = RedisBackend::open(RedisOptions {
            url: redis.url(),
            ..RedisOptions::default()
        })
        .await
        .expect("redis");
        let redis_backend: Arc<dyn Backend> = Arc::new(redis_backend);
        measure(
            "redis (local redis-server)",
            redis_backend.clone(),
            &token,
            &key,
        )
        .await;
        let cluster_backend = RedisBackend::open(RedisOptions {
            url: cluster.urls().join(","),
            cluster: true,
            ..RedisOptions::default()
        })
        .await
        .expect("redis cluster");
        let cluster_backend: Arc<dyn Backend> = Arc::new(cluster_backend);
        measure(
            "redis cluster (3 local masters, 16 key groups)",
            cluster_backend.clone(),
            &token,
            &key,
        )
        .await;
        measure_hash("redis", redis_backend).await;
        measure_hash("redis cluster", cluster_backend).await;
        let s3_backend = S3Backend::open(S3Options {
            bucket: "nas-bench".into(),
            prefix: "bench/".into(),
            region: Some(nas_testkit::S3_REGION.into()),
            endpoint: Some(s3.endpoint()),
            path_style: true,
            allow_http: true,
            access_key_id: Some(nas_testkit::S3_ACCESS_KEY_ID.into()),
            secret_access_key: Some(nas_testkit::S3_SECRET_ACCESS_KEY.into()),
            timeout: Duration::from_secs(1),
        })
        .await
        .expect("s3");
        measure("s3 (local moto server)", Arc::new(s3_backend), &token, &key).await;
        #[cfg(feature = "postgres")]
        {
            let pg_backend =
                nas_store::postgres::PostgresBackend::open(nas_store::postgres::PostgresOptions {
                    url: pg.url(),
                    ..Default::default()
                })
                .await
                .expect("postgres");
            let name = format!("postgres (local PostgreSQL {})", pg.binaries().version);
            measure(&name, Arc::new(pg_backend), &token, &key).await;
        }
    });
}
