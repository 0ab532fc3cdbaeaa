//! The conformance suite against a real redis-server (a cluster: `redis_cluster.rs`), plus
//! what only a shared store needs: another instance sees changes over pub/sub (and catches up
//! after its subscription was lost), both agree on the PACK hash, every call is bounded, and
//! the `unix://` and `rediss://` (mutual TLS) transports work.

mod conformance;
mod redis_admin;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use conformance::{expect_event, fixture, sub_of};
use nas_store::redis::{RedisBackend, RedisOptions, RedisTls};
use nas_store::{Backend, Store, StoreError, TokenMeta};
use nas_testkit::RedisServer;
use redis_admin::admin;

async fn open(url: &str, prefix: &str) -> Arc<dyn Backend> {
    open_with(RedisOptions {
        url: url.to_owned(),
        prefix: prefix.to_owned(),
        ..RedisOptions::default()
    })
    .await
}

async fn open_with(options: RedisOptions) -> Arc<dyn Backend> {
    Arc::new(RedisBackend::open(options).await.unwrap())
}

#[tokio::test]
async fn redis_backend_conforms() {
    let redis = RedisServer::start();
    let url = redis.url();
    let n = AtomicUsize::new(0);
    // Each check gets its own key prefix: a fresh, empty store in the same server.
    conformance::run_all(|| {
        let prefix = format!("t{}:", n.fetch_add(1, Ordering::SeqCst));
        let url = url.clone();
        async move { open(&url, &prefix).await }
    })
    .await;
}

#[tokio::test]
async fn two_instances_share_changes_and_the_pack_hash() {
    let redis = RedisServer::start();
    let a = Store::new(open(&redis.url(), "shared:").await);
    let b = Store::new(open(&redis.url(), "shared:").await);
    let mut b_events = b.subscribe();
    let t = fixture("account_a.jwt");
    a.put_account_if_newer(&sub_of(&t), t.clone(), &TokenMeta::read(&t).unwrap())
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), b_events.recv())
        .await
        .expect("B heard about A's write")
        .unwrap();
    assert_eq!(event.key, sub_of(&t));
    assert!(event.external);
    assert_eq!(event.new, Some(t.clone()));
    assert_eq!(b.get_account(&sub_of(&t)).await.unwrap(), Some(t.clone()));
    assert_eq!(a.pack_hash().await.unwrap(), b.pack_hash().await.unwrap());
    // Concurrent writers on both instances end with the newest iat.
    let signer = nas_jwt::SigningKey::generate(nas_jwt::KeyRole::Operator);
    let key = nas_jwt::SigningKey::generate(nas_jwt::KeyRole::Account)
        .public_key()
        .as_str()
        .to_owned();
    let mut tasks = Vec::new();
    for (i, store) in [a.clone(), b.clone()].into_iter().enumerate() {
        let (signer_seed, key) = (signer.seed().to_owned(), key.clone());
        tasks.push(tokio::spawn(async move {
            let signer =
                nas_jwt::SigningKey::from_seed(&signer_seed, nas_jwt::KeyRole::Operator).unwrap();
            for n in 0..100 {
                let token = conformance::mint(&signer, &key, 5_000 + (n * 2 + i) as i64, 0);
                store
                    .put_account_if_newer(&key, token.clone(), &TokenMeta::read(&token).unwrap())
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stored = a.get_account(&key).await.unwrap().unwrap();
    assert_eq!(TokenMeta::read(&stored).unwrap().iat, 5_199);
    assert_eq!(a.pack_hash().await.unwrap(), b.pack_hash().await.unwrap());
}

#[tokio::test]
async fn outage_gives_unavailable_and_recovers() {
    let mut redis = RedisServer::start();
    let store = Store::new(open(&redis.url(), "outage:").await);
    let t = fixture("account_b.jwt");
    store
        .put_account_if_newer(&sub_of(&t), t.clone(), &TokenMeta::read(&t).unwrap())
        .await
        .unwrap();
    redis.stop();
    match store.get_account(&sub_of(&t)).await {
        // The Redis error is kept as the source (for logs and decisions by kind).
        Err(StoreError::Unavailable(cause)) => {
            let inner = cause.inner().expect("the redis error is kept");
            assert!(
                inner.downcast_ref::<redis::RedisError>().is_some(),
                "{cause:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store.backend().health().await,
        Err(StoreError::Unavailable(_))
    ));
    redis.restart();
    // The database is empty after a restart of this test server; the backend reconnects by itself.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match store.backend().health().await {
            Ok(()) => break,
            Err(e) if std::time::Instant::now() > deadline => panic!("no recovery: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    store
        .put_account_if_newer(&sub_of(&t), t.clone(), &TokenMeta::read(&t).unwrap())
        .await
        .unwrap();
    assert_eq!(store.get_account(&sub_of(&t)).await.unwrap(), Some(t));
}

#[tokio::test]
async fn a_lost_subscription_is_followed_by_a_resync() {
    let redis = RedisServer::start();
    let a = Store::new(open(&redis.url(), "resync:").await);
    let b = Store::new(open(&redis.url(), "resync:").await);
    // The PACK hash lives in Redis, so B keeps no per-key digests to compare after a resync:
    // it marks everything it cached as stale instead (its floor rises).
    let floor = b.floor();
    let mut admin = admin(&redis.url()).await;
    // Cut every subscription; the listeners notice at once and wait a moment before
    // re-subscribing, so the write below is announced to nobody.
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut admin)
        .await
        .unwrap();
    let t = fixture("account_b.jwt");
    a.put_account_if_newer(&sub_of(&t), t.clone(), &TokenMeta::read(&t).unwrap())
        .await
        .unwrap();
    let (_, listeners): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg("{resync:}changes")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(
        listeners, 0,
        "the announcement was heard: this test proves nothing"
    );
    // B re-subscribes and resyncs: everything it cached must be read again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while b.floor() <= floor {
        assert!(std::time::Instant::now() < deadline, "B did not resync");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(b.get_account(&sub_of(&t)).await.unwrap(), Some(t.clone()));
    assert_eq!(a.pack_hash().await.unwrap(), b.pack_hash().await.unwrap());
}

#[tokio::test]
async fn every_call_is_bounded_when_redis_hangs() {
    let redis = RedisServer::start();
    let timeout = Duration::from_millis(300);
    let backend = open_with(RedisOptions {
        url: redis.url(),
        prefix: "hang:".into(),
        timeout,
        ..RedisOptions::default()
    })
    .await;
    let store = Store::new(backend.clone());
    let t = fixture("account_a.jwt");
    store
        .put_account_if_newer(&sub_of(&t), t.clone(), &TokenMeta::read(&t).unwrap())
        .await
        .unwrap();
    // Redis stays connected but answers nothing for 2 s.
    let mut admin = admin(&redis.url()).await;
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(2000)
        .arg("ALL")
        .query_async(&mut admin)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let got = store.get_account(&sub_of(&t)).await;
    let took = started.elapsed();
    assert!(matches!(got, Err(StoreError::Unavailable(_))), "{got:?}");
    assert!(
        took >= timeout && took < timeout + Duration::from_millis(400),
        "{took:?}"
    );
    let started = std::time::Instant::now();
    assert!(matches!(
        backend.health().await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(started.elapsed() < timeout + Duration::from_millis(400));
    // When Redis answers again, so does the backend.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(store.get_account(&sub_of(&t)).await.unwrap(), Some(t));
}

#[tokio::test]
async fn unix_socket_url() {
    let sockets = tempfile::tempdir().unwrap();
    let socket = sockets.path().join("redis.sock");
    let socket_arg = socket.to_str().unwrap();
    let _redis =
        RedisServer::start_with_args(&["--unixsocket", socket_arg, "--unixsocketperm", "700"]);
    let store = Store::new(open(&format!("unix://{socket_arg}"), "unix:").await);
    let t = fixture("account_a.jwt");
    store
        .put_account_if_newer(&sub_of(&t), t.clone(), &TokenMeta::read(&t).unwrap())
        .await
        .unwrap();
    assert_eq!(store.get_account(&sub_of(&t)).await.unwrap(), Some(t));
    store.backend().health().await.unwrap();
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM.
struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    // Distinct subject names: OpenSSL takes a leaf whose subject equals its issuer for a
    // self-signed certificate.
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "nas test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let leaf = |names: Vec<String>| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(names.clone()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0].as_str());
        let cert = params.signed_by(&key, &ca).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        ca: ca.pem(),
        server: leaf(vec!["127.0.0.1".into(), "localhost".into()]),
        client: leaf(vec!["nas-client".into()]),
    }
}

#[tokio::test]
async fn rediss_url_with_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let file = |name: &str, pem: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let (ca, cert, key) = (
        file("ca.pem", &pki.ca),
        file("server.pem", &pki.server.0),
        file("server.key", &pki.server.1),
    );
    let tls_port = nas_testkit::free_port();
    // The plain port stays open for the harness's readiness check; we use the TLS one, which
    // (Redis's default) demands a client certificate.
    let _redis = RedisServer::start_with_args(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca,
    ]);
    let url = format!("rediss://127.0.0.1:{tls_port}/");
    let tls = RedisTls {
        root_cert: Some(pki.ca.clone().into_bytes()),
        client_cert_key: Some((
            pki.client.0.clone().into_bytes(),
            pki.client.1.clone().into_bytes(),
        )),
    };
    let options = |prefix: &str, tls: RedisTls| RedisOptions {
        url: url.clone(),
        prefix: prefix.to_owned(),
        tls,
        ..RedisOptions::default()
    };
    let a = Store::new(open_with(options("tls:", tls.clone())).await);
    let b = Store::new(open_with(options("tls:", tls.clone())).await);
    let mut b_events = b.subscribe();
    let t = fixture("account_a.jwt");
    a.put_account_if_newer(&sub_of(&t), t.clone(), &TokenMeta::read(&t).unwrap())
        .await
        .unwrap();
    assert_eq!(b.get_account(&sub_of(&t)).await.unwrap(), Some(t.clone()));
    expect_event(&mut b_events, &sub_of(&t), &t).await;
    // Without the client certificate, or without trusting the CA, nothing connects.
    let no_client_cert = RedisTls {
        client_cert_key: None,
        ..tls.clone()
    };
    assert!(RedisBackend::open(options("tls:", no_client_cert))
        .await
        .is_err());
    let no_root = RedisTls {
        root_cert: None,
        ..tls
    };
    assert!(RedisBackend::open(options("tls:", no_root)).await.is_err());
}
