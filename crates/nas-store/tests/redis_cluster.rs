//! The conformance suite against a real 3-master Redis Cluster, plus what a cluster adds: the
//! accounts spread over every master while each write script stays in one slot, two instances
//! share changes (sharded pub/sub) and agree on the PACK hash, a lost subscription or a
//! restarted master or a slot moved to another master is followed by a resync, and the group
//! count cannot change under a store.

mod conformance;
mod redis_admin;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use conformance::{expect_event, fixture, meta, mint, new_account_key, sub_of, xor_of};
use nas_jwt::{KeyRole, SigningKey};
use nas_store::redis::{RedisBackend, RedisOptions};
use nas_store::{Backend, Store, StoreError};
use nas_testkit::RedisCluster;
use redis_admin::admin;

fn options(cluster: &RedisCluster, prefix: &str) -> RedisOptions {
    RedisOptions {
        url: cluster.urls().join(","),
        prefix: prefix.to_owned(),
        cluster: true,
        ..RedisOptions::default()
    }
}

async fn open(cluster: &RedisCluster, prefix: &str) -> Arc<dyn Backend> {
    Arc::new(RedisBackend::open(options(cluster, prefix)).await.unwrap())
}

/// Keys on one node matching `pattern`.
async fn keys_on(url: &str, pattern: &str) -> Vec<String> {
    redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut admin(url).await)
        .await
        .unwrap()
}

/// Waits until `store`'s floor rises above `floor`: it resynced.
async fn expect_resync(store: &Store, floor: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while store.floor() <= floor {
        assert!(std::time::Instant::now() < deadline, "no resync");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `n` accounts, each with one JWT.
fn accounts(n: usize) -> Vec<(String, Bytes)> {
    let signer = SigningKey::generate(KeyRole::Operator);
    (0..n)
        .map(|i| {
            let key = new_account_key();
            let token = mint(&signer, &key, 1_000 + i as i64, 0);
            (key, token)
        })
        .collect()
}

#[tokio::test]
async fn cluster_store_conforms_and_spreads_over_every_master() {
    let cluster = RedisCluster::start(3);
    let n = AtomicUsize::new(0);
    // Each check gets its own key prefix: a fresh, empty store in the same cluster. Redis
    // refuses a script whose keys are in different slots, so every write passing proves the
    // hash tags keep each script's keys together.
    conformance::run_all(|| {
        let options = options(&cluster, &format!("c{}:", n.fetch_add(1, Ordering::SeqCst)));
        async move { Arc::new(RedisBackend::open(options).await.unwrap()) as Arc<dyn Backend> }
    })
    .await;

    let store = Store::new(open(&cluster, "spread:").await);
    let written = accounts(48);
    for (key, token) in &written {
        store
            .put_account_if_newer(key, token.clone(), &meta(token))
            .await
            .unwrap();
    }
    // Every master holds some of the accounts…
    for url in cluster.urls() {
        let held = keys_on(&url, "{spread:g*}a:*").await;
        assert!(!held.is_empty(), "{url} holds no account");
    }
    // …and every one is listed, served and in the hash.
    let mut listed = store.list_accounts().await.unwrap();
    let mut want: Vec<String> = written.iter().map(|(k, _)| k.clone()).collect();
    listed.sort();
    want.sort();
    assert_eq!(listed, want);
    for (key, token) in &written {
        assert_eq!(store.get_account(key).await.unwrap().as_ref(), Some(token));
    }
    assert_eq!(
        store.pack_hash().await.unwrap(),
        xor_of(written.iter().map(|(_, t)| t))
    );
}

#[tokio::test]
async fn two_instances_share_changes_and_the_pack_hash() {
    let cluster = RedisCluster::start(3);
    let a = Store::new(open(&cluster, "shared:").await);
    let b = Store::new(open(&cluster, "shared:").await);
    let mut b_events = b.subscribe();
    // Accounts in many groups, so announcements come from every master.
    let written = accounts(24);
    for (key, token) in &written {
        a.put_account_if_newer(key, token.clone(), &meta(token))
            .await
            .unwrap();
        expect_event(&mut b_events, key, token).await;
        assert_eq!(b.get_account(key).await.unwrap().as_ref(), Some(token));
    }
    let t = fixture("account_a.jwt");
    b.put_account_if_newer(&sub_of(&t), t.clone(), &meta(&t))
        .await
        .unwrap();
    assert_eq!(a.get_account(&sub_of(&t)).await.unwrap(), Some(t.clone()));
    let all: Vec<&Bytes> = written.iter().map(|(_, t)| t).chain([&t]).collect();
    assert_eq!(a.pack_hash().await.unwrap(), xor_of(all.iter().copied()));
    assert_eq!(a.pack_hash().await.unwrap(), b.pack_hash().await.unwrap());

    // Concurrent writers on both instances end with the newest iat.
    let signer = SigningKey::generate(KeyRole::Operator);
    let key = new_account_key();
    let mut tasks = Vec::new();
    for (i, store) in [a.clone(), b.clone()].into_iter().enumerate() {
        let (seed, key) = (signer.seed().to_owned(), key.clone());
        tasks.push(tokio::spawn(async move {
            let signer = SigningKey::from_seed(&seed, KeyRole::Operator).unwrap();
            for n in 0..100 {
                let token = mint(&signer, &key, 5_000 + (n * 2 + i) as i64, 0);
                store
                    .put_account_if_newer(&key, token.clone(), &meta(&token))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stored = a.get_account(&key).await.unwrap().unwrap();
    assert_eq!(meta(&stored).iat, 5_199);
    assert_eq!(b.get_account(&key).await.unwrap(), Some(stored.clone()));
    let all: Vec<&Bytes> = all.into_iter().chain([&stored]).collect();
    assert_eq!(b.pack_hash().await.unwrap(), xor_of(all.iter().copied()));
    assert_eq!(a.pack_hash().await.unwrap(), b.pack_hash().await.unwrap());
}

/// Subscribers of every group's channel, summed over the nodes.
async fn shard_subscribers(cluster: &RedisCluster, prefix: &str) -> i64 {
    let mut total = 0;
    for url in cluster.urls() {
        let mut cmd = redis::cmd("PUBSUB");
        cmd.arg("SHARDNUMSUB");
        for g in 0..nas_store::REDIS_CLUSTER_GROUPS {
            cmd.arg(format!("{{{prefix}g{g}}}changes"));
        }
        let counts: Vec<(String, i64)> = cmd.query_async(&mut admin(&url).await).await.unwrap();
        total += counts.iter().map(|(_, n)| n).sum::<i64>();
    }
    total
}

#[tokio::test]
async fn lost_subscriptions_are_followed_by_a_resync() {
    let cluster = RedisCluster::start(3);
    let a = Store::new(open(&cluster, "resync:").await);
    let b = Store::new(open(&cluster, "resync:").await);
    assert!(shard_subscribers(&cluster, "resync:").await >= 2 * 16);
    let floor = b.floor();
    // Cut every subscription on every node; the listeners notice at once and wait a moment
    // before subscribing again, so the write below is announced to nobody.
    for url in cluster.urls() {
        let _: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut admin(&url).await)
            .await
            .unwrap();
    }
    let t = fixture("account_b.jwt");
    a.put_account_if_newer(&sub_of(&t), t.clone(), &meta(&t))
        .await
        .unwrap();
    assert_eq!(
        shard_subscribers(&cluster, "resync:").await,
        0,
        "the announcement was heard: this test proves nothing"
    );
    // B subscribes again and resyncs: everything it cached must be read again.
    expect_resync(&b, floor).await;
    assert_eq!(b.get_account(&sub_of(&t)).await.unwrap(), Some(t.clone()));
    assert_eq!(a.pack_hash().await.unwrap(), b.pack_hash().await.unwrap());
}

#[tokio::test]
async fn a_restarted_master_is_subscribed_again_and_resynced() {
    let mut cluster = RedisCluster::start(3);
    let backend = open(&cluster, "restart:").await;
    let store = Store::new(backend.clone());
    let floor = store.floor();
    cluster.restart_node(1);
    // While the node was away its groups' announcements could not reach us: resync.
    expect_resync(&store, floor).await;
    backend.health().await.unwrap();
    // Writes of every group work again, through the slot routing.
    for (key, token) in accounts(16) {
        store
            .put_account_if_newer(&key, token.clone(), &meta(&token))
            .await
            .unwrap();
        assert_eq!(store.get_account(&key).await.unwrap(), Some(token));
    }
}

#[tokio::test]
async fn a_master_down_makes_the_store_unavailable_not_empty() {
    let mut cluster = RedisCluster::start(3);
    let backend = open(&cluster, "down:").await;
    let store = Store::new(backend.clone());
    let written = accounts(16);
    for (key, token) in &written {
        store
            .put_account_if_newer(key, token.clone(), &meta(token))
            .await
            .unwrap();
    }
    // Stop one master (its slots have no replica): the store is not healthy, and neither a
    // listing nor the PACK hash pretends the missing part is empty.
    cluster.stop_node(2);
    assert!(matches!(
        backend.health().await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.list_accounts().await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.pack_hash().await,
        Err(StoreError::Unavailable(_))
    ));
}

#[tokio::test]
async fn the_group_count_cannot_change_under_a_store() {
    let cluster = RedisCluster::start(3);
    let store = Store::new(open(&cluster, "fixed:").await);
    let t = fixture("account_a.jwt");
    store
        .put_account_if_newer(&sub_of(&t), t.clone(), &meta(&t))
        .await
        .unwrap();
    let other = RedisBackend::open(RedisOptions {
        groups: 8,
        ..options(&cluster, "fixed:")
    })
    .await;
    match other {
        Err(StoreError::Config(cause)) => {
            assert!(
                cause.to_string().contains("created with 16 groups"),
                "{cause}"
            )
        }
        other => panic!("{other:?}"),
    }
    for bad in [0, nas_store::REDIS_CLUSTER_MAX_GROUPS + 1] {
        let refused = RedisBackend::open(RedisOptions {
            groups: bad,
            ..options(&cluster, "other:")
        })
        .await;
        assert!(matches!(refused, Err(StoreError::Config(_))), "{bad}");
    }
    // Nothing was changed by the refused opens.
    assert_eq!(
        store.get_account(&sub_of(&t)).await.unwrap(),
        Some(t.clone())
    );
    assert_eq!(store.pack_hash().await.unwrap(), xor_of([&t]));
    let reopened = Store::new(open(&cluster, "fixed:").await);
    assert_eq!(reopened.get_account(&sub_of(&t)).await.unwrap(), Some(t));
}

/// Runs `CLUSTER <args…>` on the node at `url`.
async fn cluster_cmd<T: redis::FromRedisValue>(url: &str, args: &[&str]) -> T {
    let mut cmd = redis::cmd("CLUSTER");
    for a in args {
        cmd.arg(*a);
    }
    cmd.query_async(&mut admin(url).await).await.unwrap()
}

/// Moves hash slot `slot` with its keys from node `from` to node `to` (the steps of a
/// resharding: IMPORTING / MIGRATING, MIGRATE every key, then the new owner on every node).
async fn move_slot(cluster: &RedisCluster, slot: i64, from: usize, to: usize) {
    let nodes = cluster.nodes();
    let (source, target) = (nodes[from].url(), nodes[to].url());
    let source_id: String = cluster_cmd(&source, &["MYID"]).await;
    let target_id: String = cluster_cmd(&target, &["MYID"]).await;
    let slot_arg = slot.to_string();
    let _: () = cluster_cmd(&target, &["SETSLOT", &slot_arg, "IMPORTING", &source_id]).await;
    let _: () = cluster_cmd(&source, &["SETSLOT", &slot_arg, "MIGRATING", &target_id]).await;
    let keys: Vec<String> = cluster_cmd(&source, &["GETKEYSINSLOT", &slot_arg, "1000"]).await;
    let mut migrate = redis::cmd("MIGRATE");
    migrate
        .arg("127.0.0.1")
        .arg(nodes[to].port())
        .arg("")
        .arg(0)
        .arg(5000)
        .arg("KEYS")
        .arg(&keys);
    let _: () = migrate
        .query_async(&mut admin(&source).await)
        .await
        .unwrap();
    for node in nodes {
        let _: () = cluster_cmd(&node.url(), &["SETSLOT", &slot_arg, "NODE", &target_id]).await;
    }
}

#[tokio::test]
async fn a_slot_moved_to_another_master_is_followed_there_with_a_resync() {
    let cluster = RedisCluster::start(3);
    let a = Store::new(open(&cluster, "move:").await);
    let b = Store::new(open(&cluster, "move:").await);
    let mut b_events = b.subscribe();
    let signer = SigningKey::generate(KeyRole::Operator);
    let key = new_account_key();
    let first = mint(&signer, &key, 1_000, 0);
    a.put_account_if_newer(&key, first.clone(), &meta(&first))
        .await
        .unwrap();
    expect_event(&mut b_events, &key, &first).await;
    // Where the account's group lives now.
    let mut owner = None;
    for (i, url) in cluster.urls().iter().enumerate() {
        if let Some(entry) = keys_on(url, &format!("{{move:g*}}a:{key}")).await.pop() {
            owner = Some((i, entry));
        }
    }
    let (from, entry) = owner.expect("the account is stored on some master");
    let slot: i64 = cluster_cmd(&cluster.urls()[from], &["KEYSLOT", &entry]).await;
    let floor = b.floor();
    move_slot(&cluster, slot, from, (from + 1) % 3).await;
    // The old owner unsubscribed the group's channel: B subscribes at the new one and resyncs.
    expect_resync(&b, floor).await;
    assert_eq!(
        keys_on(&cluster.urls()[(from + 1) % 3], &entry).await,
        vec![entry.clone()]
    );
    // Writes of that group go to the new owner, and B hears them there.
    let second = mint(&signer, &key, 2_000, 0);
    a.put_account_if_newer(&key, second.clone(), &meta(&second))
        .await
        .unwrap();
    expect_event(&mut b_events, &key, &second).await;
    assert_eq!(b.get_account(&key).await.unwrap(), Some(second.clone()));
    assert_eq!(b.pack_hash().await.unwrap(), xor_of([&second]));
    assert_eq!(a.pack_hash().await.unwrap(), b.pack_hash().await.unwrap());
}
