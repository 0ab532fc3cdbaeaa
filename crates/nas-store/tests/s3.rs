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
