//! `GET /jwt/v1/pack?max=-1` of an S3 bucket (moto) of N accounts against the floor: the time
//! the S3 server itself needs to list the bucket and serve every object, measured in the same
//! run with the bare backend (a page-by-page listing with the reads overlapping it,
//! `S3_READ_CONCURRENCY` GETs in flight, nothing verified). Also times the PACK-hash scan.
//!
//!   cargo bench --bench s3_pack -- [N]        # N = 20,000 by default; ROUNDS = 2
//!
//! The bucket is filled once with 32 parallel PUTs. Each round measures the floor, then a
//! fresh in-process server's pack (nothing cached: every entry listed, read and verified).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use nas_server::config::{Config, S3Store, StoreConfig};
use nas_server::server::Server;
use nas_store::s3::{S3Backend, S3Options, S3_READ_CONCURRENCY};
use nas_store::{Backend, Namespace, Precondition, Store};
use nas_testkit::{S3Server, S3_ACCESS_KEY_ID, S3_REGION, S3_SECRET_ACCESS_KEY};

const BUCKET: &str = "nas-bench";
const PREFIX: &str = "bench/";
/// Room for a GET queued behind a list page on moto, which serves one request at a time.
const TIMEOUT: Duration = Duration::from_secs(3);

fn options(endpoint: &str, timeout: Duration) -> S3Options {
    S3Options {
        bucket: BUCKET.to_owned(),
        prefix: PREFIX.to_owned(),
        region: Some(S3_REGION.to_owned()),
        endpoint: Some(endpoint.to_owned()),
        path_style: true,
        allow_http: true,
        access_key_id: Some(S3_ACCESS_KEY_ID.to_owned()),
        secret_access_key: Some(S3_SECRET_ACCESS_KEY.to_owned()),
        timeout,
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` probes bench binaries with --list.
    }
    let count: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20_000);
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(count, rounds));
}

async fn run(count: usize, rounds: usize) {
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let endpoint = s3.endpoint();
    let started = Instant::now();
    let signed = nas_testkit::accounts::signed_accounts(count);
    let filler = S3Backend::open(options(&endpoint, Duration::from_secs(60)))
        .await
        .expect("open");
    futures::stream::iter(&signed.accounts)
        .map(|(key, jwt)| {
            let jwt = bytes::Bytes::from(jwt.clone());
            filler.put(Namespace::Accounts, key, jwt, Precondition::Any)
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .expect("fill");
    println!(
        "{count} objects put in {:.1?} (moto {}; {})",
        started.elapsed(),
        s3.binary().version,
        machine()
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(tmp.path().join("operator.jwt"), &signed.operator_jwt).expect("operator");

    println!("| round | floor: list + GET all | pack over HTTP | ratio | hash scan |");
    println!("|---|---|---|---|---|");
    for round in 1..=rounds {
        let floor = list_and_get_all(&endpoint, count).await;
        let pack = pack_over_http(&endpoint, tmp.path(), count).await;
        let hash = hash_scan(&endpoint).await;
        println!(
            "| {round} | {floor:.2?} | {pack:.2?} | {:.2} | {hash:.2?} |",
            pack.as_secs_f64() / floor.as_secs_f64()
        );
    }
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!("{cpus} CPUs, load average {}", load.join(" "))
}

/// The floor: the bare backend lists the bucket page by page and GETs every object as keys
/// arrive, with the pack's read concurrency.
async fn list_and_get_all(endpoint: &str, count: usize) -> Duration {
    let backend = Arc::new(
        S3Backend::open(options(endpoint, TIMEOUT))
            .await
            .expect("open"),
    );
    let started = Instant::now();
    let keys = backend.list(Namespace::Accounts).await.expect("list");
    let read = keys
        .map(|key| {
            let backend = backend.clone();
            async move {
                let key = key.expect("list page");
                let got = backend.get(Namespace::Accounts, &key).await.expect("get");
                got.map_or(0, |(bytes, _)| bytes.len())
            }
        })
        .buffer_unordered(S3_READ_CONCURRENCY)
        .count()
        .await;
    assert_eq!(read, count);
    started.elapsed()
}

/// A fresh server on the bucket answers `GET /jwt/v1/pack?max=-1`; the body is read as it comes.
async fn pack_over_http(endpoint: &str, dir: &std::path::Path, count: usize) -> Duration {
    let mut config = Config::default();
    config.http.host = "127.0.0.1".into();
    config.http.port = 0;
    config.max_replication_pack = -1;
    config.operator_jwt_path = Some(dir.join("operator.jwt"));
    config.store = StoreConfig::S3(S3Store {
        prefix: PREFIX.to_owned(),
        region: Some(S3_REGION.to_owned()),
        endpoint: Some(endpoint.to_owned()),
        path_style: true,
        allow_http: true,
        access_key_id: Some(S3_ACCESS_KEY_ID.to_owned()),
        secret_access_key: Some(S3_SECRET_ACCESS_KEY.to_owned()),
        timeout: TIMEOUT,
        ..S3Store::new(BUCKET)
    });
    let server = Server::start(&config).await.expect("server");
    let started = Instant::now();
    let response = reqwest::get(format!("{}/jwt/v1/pack?max=-1", server.url()))
        .await
        .expect("pack");
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut lines = 0;
    let mut any = false;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("a whole body");
        lines += chunk.iter().filter(|b| **b == b'\n').count();
        any |= !chunk.is_empty();
    }
    let took = started.elapsed();
    assert_eq!(lines + usize::from(any), count, "every account in the pack");
    took
}

/// The PACK-hash scan of a fresh store on the bucket.
async fn hash_scan(endpoint: &str) -> Duration {
    let backend = S3Backend::open(options(endpoint, TIMEOUT))
        .await
        .expect("open");
    let store = Store::new(Arc::new(backend));
    let started = Instant::now();
    store.pack_hash().await.expect("hash");
    started.elapsed()
}
