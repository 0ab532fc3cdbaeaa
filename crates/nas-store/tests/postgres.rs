//! The conformance suite against a real PostgreSQL, plus what only a shared store needs:
//! another instance sees changes (LISTEN/NOTIFY) and catches up after its listener session was
//! terminated, instances agree on the PACK hash and race safely, an outage gives `Unavailable`
//! and the same backend recovers, every call is bounded, and the schema step names a missing
//! right.

#![cfg(feature = "postgres")]

mod conformance;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use conformance::{fixture, meta, mint, new_account_key, sub_of, xor_of};
use nas_jwt::{KeyRole, SigningKey};
use nas_store::postgres::{PostgresBackend, PostgresOptions, TlsFiles};
use nas_store::{Backend, Namespace, Precondition, Store, StoreError, EXTERNAL_RESYNC};
use nas_testkit::PostgresServer;
use tokio::sync::broadcast;

/// How long an event-driven wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);

fn options(url: &str, table: &str) -> PostgresOptions {
    PostgresOptions {
        url: url.to_owned(),
        table: table.to_owned(),
        ..PostgresOptions::default()
    }
}

async fn open(url: &str, table: &str) -> Arc<PostgresBackend> {
    Arc::new(PostgresBackend::open(options(url, table)).await.unwrap())
}

/// A plain session for what the backend never does (roles, grants, terminating sessions).
async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// Waits (bounded) until `key` arrives on a backend's change channel; returns what came
/// before it.
async fn expect_key(changes: &mut broadcast::Receiver<String>, key: &str) -> Vec<String> {
    let mut before = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = tokio::time::timeout_at(deadline, changes.recv())
            .await
            .unwrap_or_else(|_| panic!("{key:?} was not announced (got {before:?})"))
            .unwrap();
        if got == key {
            return before;
        }
        before.push(got);
    }
}

/// The `Unavailable` cause of a result, failing the test otherwise.
fn unavailable<T: std::fmt::Debug>(result: Result<T, StoreError>) -> nas_store::Cause {
    match result {
        Err(StoreError::Unavailable(cause)) => cause,
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn postgres_backend_conforms() {
    let pg = PostgresServer::start();
    let url = pg.url();
    let n = AtomicUsize::new(0);
    // Each check gets its own table prefix: a fresh, empty store in the same database.
    conformance::run_all(|| {
        let table = format!("t{}", n.fetch_add(1, Ordering::SeqCst));
        let url = url.clone();
        async move { open(&url, &table).await as Arc<dyn Backend> }
    })
    .await;
}

#[tokio::test]
async fn a_write_through_one_backend_is_seen_and_announced_by_another() {
    let pg = PostgresServer::start();
    let a = open(&pg.url(), "shared").await;
    let b = open(&pg.url(), "shared").await;
    let mut b_changes = b.external_changes().unwrap();
    let mut a_changes = a.external_changes().unwrap();
    let t = fixture("account_a.jwt");
    let key = sub_of(&t);
    a.put(Namespace::Accounts, &key, t.clone(), Precondition::Absent)
        .await
        .unwrap();
    let (got, _) = b.get(Namespace::Accounts, &key).await.unwrap().unwrap();
    assert_eq!(got, t);
    assert_eq!(expect_key(&mut b_changes, &key).await, Vec::<String>::new());
    assert_eq!(
        a.shared_pack_hash().await.unwrap(),
        Some(xor_of([&t])),
        "the PACK hash follows the write"
    );
    assert_eq!(
        a.shared_pack_hash().await.unwrap(),
        b.shared_pack_hash().await.unwrap()
    );
    // A delete is announced too; activations are not accounts: not announced.
    let id = conformance::UNUSED_HASH_ID;
    b.put(Namespace::Activations, id, t.clone(), Precondition::Any)
        .await
        .unwrap();
    assert!(b.delete(Namespace::Accounts, &key, None).await.unwrap());
    assert_eq!(expect_key(&mut a_changes, &key).await, Vec::<String>::new());
    assert_eq!(a.shared_pack_hash().await.unwrap(), Some([0u8; 32]));
    // Neither heard its own writes.
    assert!(a_changes.try_recv().is_err());
    assert!(b_changes.try_recv().is_err());
}

#[tokio::test]
async fn two_stores_race_to_the_newest_and_agree_on_the_hash() {
    const WRITES: usize = 40;
    let pg = PostgresServer::start();
    let stores = [
        Store::new(open(&pg.url(), "race").await),
        Store::new(open(&pg.url(), "race").await),
    ];
    let signer = SigningKey::generate(KeyRole::Operator);
    let key = new_account_key();
    // 40 distinct iats, in an order that makes both stores win and lose races.
    let tokens: Vec<_> = (0..WRITES)
        .map(|i| mint(&signer, &key, 7_000 + ((i * 17) % WRITES) as i64, 0))
        .collect();
    let mut tasks = Vec::new();
    for (i, token) in tokens.into_iter().enumerate() {
        let (store, key) = (stores[i % 2].clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            store
                .put_account_if_newer(&key, token.clone(), &meta(&token))
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let newest = 7_000 + WRITES as i64 - 1;
    let stored = stores[0].get_account(&key).await.unwrap().unwrap();
    assert_eq!(meta(&stored).iat, newest);
    assert_eq!(
        stores[1].get_account(&key).await.unwrap(),
        Some(stored.clone())
    );
    for store in &stores {
        assert_eq!(store.pack_hash().await.unwrap(), xor_of([&stored]));
    }
}

#[tokio::test]
async fn outage_gives_unavailable_and_the_same_backend_recovers() {
    let mut pg = PostgresServer::start();
    let backend = open(&pg.url(), "outage").await;
    let store = Store::new(backend.clone());
    let t = fixture("account_b.jwt");
    let key = sub_of(&t);
    store
        .put_account_if_newer(&key, t.clone(), &meta(&t))
        .await
        .unwrap();
    let mut changes = backend.external_changes().unwrap();
    pg.stop();
    let cause = unavailable(store.get_account(&key).await);
    // The driver's error is kept as the source (for logs and decisions by kind).
    let inner = cause.inner().expect("the postgres error is kept");
    assert!(
        inner.downcast_ref::<tokio_postgres::Error>().is_some(),
        "{cause:?}"
    );
    unavailable(backend.health().await);
    unavailable(backend.shared_pack_hash().await);
    let other = fixture("account_a.jwt");
    unavailable(
        store
            .put_account_if_newer(&sub_of(&other), other.clone(), &meta(&other))
            .await,
    );
    pg.start_again();
    // No reopening: the pool replaces its dead sessions by itself.
    backend.health().await.unwrap();
    assert_eq!(store.get_account(&key).await.unwrap(), Some(t.clone()));
    store
        .put_account_if_newer(&sub_of(&other), other.clone(), &meta(&other))
        .await
        .unwrap();
    assert_eq!(store.pack_hash().await.unwrap(), xor_of([&t, &other]));
    // The listener came back too, and asked for a re-read of what it may have missed.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = tokio::time::timeout_at(deadline, changes.recv())
            .await
            .expect("a resync after the restart")
            .unwrap();
        if got == EXTERNAL_RESYNC {
            break;
        }
    }
}

#[tokio::test]
async fn a_terminated_listener_resyncs_and_keeps_announcing() {
    let pg = PostgresServer::start();
    let a = open(&pg.url(), "resync").await;
    let b = open(&pg.url(), "resync").await;
    let mut b_changes = b.external_changes().unwrap();
    let admin = admin(&pg.url()).await;
    let killed = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'nas-store resync listener'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(killed.len(), 2, "both listeners were found and terminated");
    assert!(killed.iter().all(|r| r.get::<_, bool>(0)));
    // B reconnects and says it may have missed changes…
    let deadline = tokio::time::Instant::now() + WAIT;
    let got = tokio::time::timeout_at(deadline, b_changes.recv())
        .await
        .expect("B's listener came back")
        .unwrap();
    assert_eq!(got, EXTERNAL_RESYNC);
    // …and hears later changes again.
    let t = fixture("account_a.jwt");
    a.put(
        Namespace::Accounts,
        &sub_of(&t),
        t.clone(),
        Precondition::Any,
    )
    .await
    .unwrap();
    expect_key(&mut b_changes, &sub_of(&t)).await;
}

#[tokio::test]
async fn a_store_over_a_terminated_listener_resyncs_after_the_missed_change() {
    let pg = PostgresServer::start();
    let a = Store::new(open(&pg.url(), "missed").await);
    let b = Store::new(open(&pg.url(), "missed").await);
    // The shared PACK hash lives in the database, so B keeps no per-key digests to compare
    // after a resync: it marks everything it cached as stale instead (its floor rises), so
    // nothing it serves predates the missed change.
    let floor = b.floor();
    let admin = admin(&pg.url()).await;
    let listeners = "SELECT count(*) FROM pg_stat_activity \
                     WHERE application_name = 'nas-store missed listener'";
    admin
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'nas-store missed listener'",
        )
        .await
        .unwrap();
    // The sessions end within moments; the listeners wait at least 200 ms before they
    // reconnect.
    let deadline = std::time::Instant::now() + WAIT;
    while admin
        .query_one(listeners, &[])
        .await
        .unwrap()
        .get::<_, i64>(0)
        > 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the listeners did not end"
        );
        tokio::task::yield_now().await;
    }
    let t = fixture("account_b.jwt");
    a.put_account_if_newer(&sub_of(&t), t.clone(), &meta(&t))
        .await
        .unwrap();
    let after: i64 = admin.query_one(listeners, &[]).await.unwrap().get(0);
    assert_eq!(
        after, 0,
        "a listener was back in time to hear it: this test proves nothing"
    );
    // B reconnects and resyncs: everything it cached must be read again.
    let deadline = std::time::Instant::now() + WAIT;
    while b.floor() <= floor {
        assert!(
            std::time::Instant::now() < deadline,
            "B did not resync after its listener came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(b.get_account(&sub_of(&t)).await.unwrap(), Some(t.clone()));
    assert_eq!(a.pack_hash().await.unwrap(), b.pack_hash().await.unwrap());
}

#[tokio::test]
async fn every_call_is_bounded_when_the_table_is_locked() {
    let pg = PostgresServer::start();
    let timeout = Duration::from_millis(400);
    let backend = PostgresBackend::open(PostgresOptions {
        timeout,
        ..options(&pg.url(), "hang")
    })
    .await
    .unwrap();
    let t = fixture("account_a.jwt");
    let key = sub_of(&t);
    backend
        .put(Namespace::Accounts, &key, t.clone(), Precondition::Any)
        .await
        .unwrap();
    let mut admin = admin(&pg.url()).await;
    let lock = admin.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE hang_entries, hang_packhash IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    for _ in 0..3 {
        let started = std::time::Instant::now();
        unavailable(backend.get(Namespace::Accounts, &key).await);
        unavailable(
            backend
                .put(Namespace::Accounts, &key, t.clone(), Precondition::Any)
                .await,
        );
        assert!(started.elapsed() < timeout * 4, "{:?}", started.elapsed());
    }
    lock.rollback().await.unwrap();
    // The sessions that timed out were dropped, not pooled again: the next calls work.
    let (got, _) = backend
        .get(Namespace::Accounts, &key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, t);
    backend.health().await.unwrap();
}

#[tokio::test]
async fn schema_rights_are_named_and_not_needed_once_created() {
    let pg = PostgresServer::start();
    let admin = admin(&pg.url()).await;
    admin
        .batch_execute("CREATE ROLE nas_user LOGIN")
        .await
        .unwrap();
    let err = PostgresBackend::open(options(&pg.url_for("nas_user"), "locked"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("\"nas_user\""), "{text}");
    assert!(
        text.contains("lacks the CREATE privilege on schema \"public\""),
        "{text}"
    );
    assert!(
        text.contains("GRANT CREATE ON SCHEMA \"public\" TO \"nas_user\""),
        "{text}"
    );
    let StoreError::Unavailable(cause) = &err else {
        panic!("{err:?}")
    };
    let source = cause
        .inner()
        .and_then(|e| e.downcast_ref::<tokio_postgres::Error>())
        .expect("the database error is kept");
    assert_eq!(
        source.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    );
    // Tables created by a privileged role: plain read/write rights are enough.
    drop(open(&pg.url(), "locked").await);
    admin
        .batch_execute(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON locked_entries, locked_packhash, \
             locked_schema TO nas_user; GRANT USAGE ON SEQUENCE locked_version TO nas_user",
        )
        .await
        .unwrap();
    let store = Store::new(open(&pg.url_for("nas_user"), "locked").await);
    let t = fixture("account_a.jwt");
    store
        .put_account_if_newer(&sub_of(&t), t.clone(), &meta(&t))
        .await
        .unwrap();
    assert_eq!(store.pack_hash().await.unwrap(), xor_of([&t]));
}

#[tokio::test]
async fn instances_starting_together_create_the_schema_once() {
    let pg = PostgresServer::start();
    let opens: Vec<_> = (0..6)
        .map(|_| {
            let url = pg.url();
            tokio::spawn(async move { PostgresBackend::open(options(&url, "together")).await })
        })
        .collect();
    for open in opens {
        open.await.unwrap().unwrap();
    }
    let admin = admin(&pg.url()).await;
    let version: i32 = admin
        .query_one("SELECT version FROM together_schema", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, 1);
}

#[tokio::test]
async fn notifications_carry_the_key_not_the_jwt() {
    let pg = PostgresServer::start();
    let backend = open(&pg.url(), "payload").await;
    let (client, mut connection) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(m)) = futures::StreamExt::next(&mut messages).await {
            if let tokio_postgres::AsyncMessage::Notification(n) = m {
                let _ = tx.send((n.channel().to_owned(), n.payload().to_owned()));
            }
        }
    });
    client
        .batch_execute("LISTEN payload_changes")
        .await
        .unwrap();
    let t = fixture("account_a.jwt");
    backend
        .put(
            Namespace::Accounts,
            &sub_of(&t),
            t.clone(),
            Precondition::Any,
        )
        .await
        .unwrap();
    let (channel, payload) = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a notification")
        .unwrap();
    assert_eq!(channel, "payload_changes");
    let fields: Vec<&str> = payload.split(' ').collect();
    let [instance, key, version] = fields[..] else {
        panic!("{payload}")
    };
    assert_eq!(key, sub_of(&t));
    assert_eq!(instance.len(), 16, "{payload}");
    let (_, stored) = backend
        .get(Namespace::Accounts, key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(version, stored.0, "the stored version: {payload}");
}

/// A CA and a server certificate for 127.0.0.1, as PEM.
fn pki() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "nas test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "127.0.0.1");
    let cert = params.signed_by(&key, &ca).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn tls_with_a_trusted_ca() {
    let (ca, cert, key) = pki();
    let pg = PostgresServer::start_tls(cert.as_bytes(), key.as_bytes());
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca).unwrap();
    let tls_options = |ca: std::path::PathBuf| PostgresOptions {
        tls: Some(TlsFiles {
            ca,
            cert: None,
            key: None,
        }),
        ..options(&format!("{}?sslmode=require", pg.url()), "tls")
    };
    let store = Store::new(Arc::new(
        PostgresBackend::open(tls_options(ca_path)).await.unwrap(),
    ));
    let t = fixture("account_a.jwt");
    store
        .put_account_if_newer(&sub_of(&t), t.clone(), &meta(&t))
        .await
        .unwrap();
    assert_eq!(store.get_account(&sub_of(&t)).await.unwrap(), Some(t));
    // Every session of the backend (pooled and listener) is encrypted.
    let admin = admin(&pg.url()).await;
    let (encrypted, plain): (i64, i64) = {
        let row = admin
            .query_one(
                "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
                 FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
                 WHERE a.application_name LIKE 'nas-store tls%'",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert!(encrypted >= 2, "{encrypted}");
    assert_eq!(plain, 0);
    // A server certificate from another CA is refused.
    let (other_ca, _, _) = pki();
    let other_path = dir.path().join("other.pem");
    std::fs::write(&other_path, other_ca).unwrap();
    let refused = PostgresBackend::open(tls_options(other_path))
        .await
        .unwrap_err();
    assert!(matches!(refused, StoreError::Unavailable(_)), "{refused:?}");
}

#[test]
fn options_hide_the_password_and_bad_prefixes_are_refused() {
    let options = options("postgres://nas:s3cret@db.example:5432/nas", "nas");
    let shown = format!("{options:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(
        shown.contains("postgres://nas:***@db.example:5432/nas"),
        "{shown}"
    );
    for (url, shown) in [
        (
            "postgres://nas:s3cret@db/nas?sslmode=require&password=s3cret",
            "postgres://nas:***@db/nas?sslmode=require&password=***",
        ),
        (
            "host=db user=nas password=s3cret dbname=nas",
            "host=db user=nas password=*** dbname=nas",
        ),
        (
            "host=db password='s3cret with spaces' dbname=nas",
            "host=db password=*** dbname=nas",
        ),
    ] {
        let shown_now = format!(
            "{:?}",
            PostgresOptions {
                url: url.to_owned(),
                ..PostgresOptions::default()
            }
        );
        assert!(shown_now.contains(shown), "{shown_now}");
        assert!(!shown_now.contains("s3cret"), "{shown_now}");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let long = "n".repeat(41);
    for bad in [
        "",
        "Nas",
        "nas-x",
        "1nas",
        "nas\"; DROP TABLE x; --",
        long.as_str(),
    ] {
        let opened = runtime.block_on(PostgresBackend::open(PostgresOptions {
            table: bad.to_owned(),
            ..options.clone()
        }));
        assert!(matches!(opened, Err(StoreError::Config(_))), "{bad:?}");
    }
}
