//! The conformance suite against a real S3-compatible server (moto, which honours conditional
//! writes), plus a missing bucket and an outage.

mod conformance;

use std::sync::Arc;
use std::time::Duration;

use conformance::{fixture, sub_of};
use nas_store::s3::{S3Backend, S3Options};
use nas_store::{Backend, Store, StoreError, TokenMeta};
use nas_testkit::{S3Server, S3_ACCESS_KEY_ID, S3_REGION, S3_SECRET_ACCESS_KEY};

fn options(endpoint: &str, bucket: &str, prefix: &str) -> S3Options {
    S3Options {
        bucket: bucket.to_owned(),
        prefix: prefix.to_owned(),
        region: Some(S3_REGION.to_owned()),
        endpoint: Some(endpoint.to_owned()),
        path_style: true,
        allow_http: true,
        access_key_id: Some(S3_ACCESS_KEY_ID.to_owned()),
        secret_access_key: Some(S3_SECRET_ACCESS_KEY.to_owned()),
        timeout: Duration::from_secs(1),
    }
}

#[tokio::test]
async fn s3_backend_conforms() {
    let s3 = S3Server::start();
    s3.create_bucket("nas-conformance");
    let n = std::sync::atomic::AtomicUsize::new(0);
    let endpoint = s3.endpoint();
    conformance::run_all(|| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let opts = options(&endpoint, "nas-conformance", &format!("t{i}/"));
        async move { Arc::new(S3Backend::open(opts).await.unwrap()) as Arc<dyn Backend> }
    })
    .await;
}

#[tokio::test]
async fn missing_bucket_is_named_and_outages_are_unavailable() {
    let mut s3 = S3Server::start();
    let err = S3Backend::open(options(&s3.endpoint(), "no-such-bucket", ""))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no-such-bucket"), "{err}");
    s3.create_bucket("nas-outage");
    let store = Store::new(Arc::new(
        S3Backend::open(options(&s3.endpoint(), "nas-outage", ""))
            .await
            .unwrap(),
    ));
    let t = fixture("account_b.jwt");
    store
        .put_account_if_newer(&sub_of(&t), t.clone(), &TokenMeta::read(&t).unwrap())
        .await
        .unwrap();
    assert_eq!(
        store.get_account(&sub_of(&t)).await.unwrap(),
        Some(t.clone())
    );
    s3.stop();
    assert!(matches!(
        store.get_account(&sub_of(&t)).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.backend().health().await,
        Err(StoreError::Unavailable(_))
    ));
    // moto comes back empty; once the bucket exists again the same backend works without reopening.
    s3.restart();
    s3.create_bucket("nas-outage");
    store.backend().health().await.unwrap();
    store
        .put_account_if_newer(&sub_of(&t), t.clone(), &TokenMeta::read(&t).unwrap())
        .await
        .unwrap();
    assert_eq!(store.get_account(&sub_of(&t)).await.unwrap(), Some(t));
}

/// A bucket of several list pages (moto answers 1,000 keys a page) lists, hashes and packs, and
/// every page is bounded on its own: a consumer that pauses for twice the timeout after every
/// page makes the listing last longer than any budget for the whole of it (the old bound was
/// 3 × timeout), and the pack still completes, every entry once, in key order. The pause also
/// leaves reads in flight unpolled: they run on their own tasks, so none times out meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_of_several_pages_packs_with_a_bound_per_page_not_per_listing() {
    use futures::{StreamExt, TryStreamExt};
    use nas_jwt::{encode, AccountClaims, KeyRole, SigningKey};
    use nas_store::{Namespace, Precondition};
    use sha2::{Digest, Sha256};

    const COUNT: usize = 2_500;
    // moto serves one request at a time, so a GET may wait behind a list page and 15 other
    // GETs: 3 s leaves room for that on a busy (shared, 2-core) machine.
    let timeout = Duration::from_secs(3);
    let s3 = S3Server::start();
    s3.create_bucket("nas-pages");
    let backend = Arc::new(
        S3Backend::open(S3Options {
            timeout,
            ..options(&s3.endpoint(), "nas-pages", "")
        })
        .await
        .unwrap(),
    );
    let signer = SigningKey::generate(KeyRole::Operator);
    let accounts: std::collections::BTreeMap<String, bytes::Bytes> = (0..COUNT)
        .map(|i| {
            let key = SigningKey::generate(KeyRole::Account)
                .public_key()
                .as_str()
                .to_owned();
            let mut claims = AccountClaims::new_account(&key, &format!("acc{i}"));
            let jwt = encode(&mut claims, &signer, 1_767_225_600).unwrap();
            (key, bytes::Bytes::from(jwt))
        })
        .collect();
    // Filled by 32 parallel puts through a client with room to wait (moto serves one request
    // at a time, so each waits behind the others).
    let filler = S3Backend::open(S3Options {
        timeout: Duration::from_secs(30),
        ..options(&s3.endpoint(), "nas-pages", "")
    })
    .await
    .unwrap();
    futures::stream::iter(&accounts)
        .map(|(key, jwt)| filler.put(Namespace::Accounts, key, jwt.clone(), Precondition::Any))
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();

    let store = Store::new(backend.clone());
    let started = std::time::Instant::now();
    let mut pack = store.pack_stream();
    let mut got = Vec::new();
    while let Some(entry) = pack.next().await {
        got.push(entry.expect("no page or read fails"));
        if got.len() == 1_000 || got.len() == 2_000 {
            tokio::time::sleep(timeout * 2).await;
        }
    }
    assert!(
        started.elapsed() > timeout * 3,
        "the listing outlived a whole-listing budget"
    );
    let want: Vec<(String, bytes::Bytes)> = accounts.clone().into_iter().collect();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "every entry once, in key order");

    let mut hash = [0u8; 32];
    for jwt in accounts.values() {
        let digest: [u8; 32] = Sha256::digest(jwt).into();
        hash.iter_mut().zip(digest).for_each(|(h, d)| *h ^= d);
    }
    assert_eq!(store.pack_hash().await.unwrap(), hash);
}
