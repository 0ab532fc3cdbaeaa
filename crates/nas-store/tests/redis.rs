//! The conformance suite against a real redis-server, plus what only a shared store needs:
//! another instance sees changes over pub/sub and both agree on the PACK hash.

mod conformance;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use conformance::{fixture, sub_of};
use nas_store::redis::{RedisBackend, RedisOptions};
use nas_store::{Backend, Store, StoreError, TokenMeta};
use nas_testkit::RedisServer;

async fn open(url: &str, prefix: &str) -> Arc<dyn Backend> {
    Arc::new(
        RedisBackend::open(RedisOptions {
            url: url.to_owned(),
            prefix: prefix.to_owned(),
            ..RedisOptions::default()
        })
        .await
        .unwrap(),
    )
}

#[tokio::test]
async fn redis_backend_conforms() {
    let redis = RedisServer::start();
    let url = redis.url();
    let n = AtomicUsize::new(0);
    // Each check gets its own key prefix: a fresh, empty store in the same server.
    let mut backends = Vec::new();
    for _ in 0..conformance::RUN_ALL_BACKENDS {
        backends.push(open(&url, &format!("t{}:", n.fetch_add(1, Ordering::SeqCst))).await);
    }
    let backends = std::sync::Mutex::new(backends);
    conformance::run_writable(|| backends.lock().unwrap().pop().expect("enough backends")).await;
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
    assert!(matches!(
        store.get_account(&sub_of(&t)).await,
        Err(StoreError::Unavailable(_))
    ));
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
