//! The stored-account count (`Store::count_accounts`, behind `nas_accounts_stored`): seeded by
//! one listing, then kept from writes — true across creates, replaces, deletes, the expiry purge,
//! writes racing the listing and changes made by someone else — without listing the store again.

mod conformance;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use conformance::{meta, mint, new_account_key, sub_of};
use futures::stream::BoxStream;
use nas_jwt::{KeyRole, SigningKey};
use nas_store::dir::{account_path, DirBackend, DirOptions};
use nas_store::fault::{FaultBackend, Op, Point};
use nas_store::memory::MemoryBackend;
use nas_store::{Backend, ChangeEvent, Namespace, Precondition, Store, StoreError, Version};
use tokio::sync::broadcast;

fn unavailable() -> StoreError {
    StoreError::Unavailable("injected: no listing allowed".into())
}

/// What a fresh store over `backend` counts by listing it.
async fn listed(backend: Arc<dyn Backend>) -> usize {
    Store::new(backend).count_accounts().await.unwrap()
}

async fn put(store: &Store, token: &Bytes) {
    store
        .put_account_if_newer(&sub_of(token), token.clone(), &meta(token))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_count_follows_creates_replaces_deletes_and_the_purge_without_listing_again() {
    let memory = Arc::new(MemoryBackend::new());
    let faults = FaultBackend::new(memory.clone());
    let store = Store::new(faults.clone());
    let signer = SigningKey::generate(KeyRole::Operator);
    let now = nas_jwt::unix_now();
    let (a, b, c, e) = (
        new_account_key(),
        new_account_key(),
        new_account_key(),
        new_account_key(),
    );
    put(&store, &mint(&signer, &a, now - 100, 0)).await;
    put(&store, &mint(&signer, &b, now - 100, 0)).await;
    assert_eq!(
        store.count_accounts().await.unwrap(),
        2,
        "seeded by listing"
    );

    put(&store, &mint(&signer, &c, now - 100, 0)).await; // created
    put(&store, &mint(&signer, &a, now - 50, 0)).await; // replaced
    put(&store, &mint(&signer, &a, now - 50, 0)).await; // unchanged
    store
        .delete_account_by(&b, Bytes::from_static(b"request"), now)
        .await
        .unwrap();
    put(&store, &mint(&signer, &e, now - 20, now - 10)).await; // created, expired
    assert_eq!(store.purge_expired().await.unwrap(), vec![e.clone()]);
    assert!(!store.delete_account(&b).await.unwrap(), "already gone");

    // Every listing fails from here: the count comes from the writes alone.
    faults.fail(Op::List, Point::Before, None, unavailable(), usize::MAX);
    assert_eq!(store.count_accounts().await.unwrap(), 2); // a and c
    faults.clear();
    assert_eq!(listed(memory).await, 2, "what the store really holds");
}

#[tokio::test]
async fn writes_racing_the_seeding_listing_are_counted_once() {
    let memory = Arc::new(MemoryBackend::new());
    let faults = FaultBackend::new(memory.clone());
    let store = Store::new(faults.clone());
    let signer = SigningKey::generate(KeyRole::Operator);
    let listed_then_deleted = mint(&signer, &new_account_key(), 1_000, 0);
    put(&store, &listed_then_deleted).await;
    // The listing has taken its reading and is held before returning it.
    let held = faults.pause(Op::List, Point::After, None);
    let counting = {
        let store = store.clone();
        tokio::spawn(async move { store.count_accounts().await })
    };
    held.reached().await;
    for _ in 0..2 {
        put(&store, &mint(&signer, &new_account_key(), 1_000, 0)).await;
    }
    assert!(store
        .delete_account(&sub_of(&listed_then_deleted))
        .await
        .unwrap());
    held.release();
    // Not the listing's 1: the two created after it, without the one deleted after it.
    assert_eq!(counting.await.unwrap().unwrap(), 2);
    faults.fail(Op::List, Point::Before, None, unavailable(), usize::MAX);
    assert_eq!(store.count_accounts().await.unwrap(), 2, "kept, not listed");
    faults.clear();
    assert_eq!(listed(memory).await, 2);
}

fn read_only_watched(root: &std::path::Path) -> Arc<dyn Backend> {
    let options = DirOptions {
        sharded: false,
        read_only: true,
        watch: true,
    };
    Arc::new(DirBackend::open(root, options).unwrap())
}

/// The next change event for `key` (waiting at most 10 s for the watcher).
async fn event_for(events: &mut broadcast::Receiver<ChangeEvent>, key: &str) -> ChangeEvent {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let e = events.recv().await.unwrap();
            if e.key == key {
                return e;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no change event for {key}"))
}

#[tokio::test]
async fn changes_made_by_someone_else_are_counted_by_listing_again() {
    let tmp = tempfile::tempdir().unwrap();
    let signer = SigningKey::generate(KeyRole::Operator);
    let first = mint(&signer, &new_account_key(), 1_000, 0);
    std::fs::write(account_path(tmp.path(), &sub_of(&first), false), &first).unwrap();
    let store = Store::new(read_only_watched(tmp.path()));
    let mut events = store.subscribe();
    assert_eq!(store.count_accounts().await.unwrap(), 1);

    let second = mint(&signer, &new_account_key(), 1_000, 0);
    let path = account_path(tmp.path(), &sub_of(&second), false);
    std::fs::write(&path, &second).unwrap();
    event_for(&mut events, &sub_of(&second)).await;
    assert_eq!(store.count_accounts().await.unwrap(), 2);

    std::fs::remove_file(&path).unwrap();
    assert_eq!(event_for(&mut events, &sub_of(&second)).await.new, None);
    assert_eq!(store.count_accounts().await.unwrap(), 1);
}

/// A backend other instances share without telling this one (as S3 is).
#[derive(Debug)]
struct SharedSilently(Arc<MemoryBackend>);

#[async_trait::async_trait]
impl Backend for SharedSilently {
    fn kind(&self) -> &'static str {
        "shared-silently"
    }
    async fn get(&self, ns: Namespace, key: &str) -> Result<Option<(Bytes, Version)>, StoreError> {
        self.0.get(ns, key).await
    }
    async fn put(
        &self,
        ns: Namespace,
        key: &str,
        value: Bytes,
        pre: Precondition,
    ) -> Result<Version, StoreError> {
        self.0.put(ns, key, value, pre).await
    }
    async fn delete(
        &self,
        ns: Namespace,
        key: &str,
        expected: Option<&Version>,
    ) -> Result<bool, StoreError> {
        self.0.delete(ns, key, expected).await
    }
    async fn list(
        &self,
        ns: Namespace,
    ) -> Result<BoxStream<'static, Result<String, StoreError>>, StoreError> {
        self.0.list(ns).await
    }
    async fn health(&self) -> Result<(), StoreError> {
        self.0.health().await
    }
    fn sees_every_change(&self) -> bool {
        false
    }
}

#[tokio::test]
async fn a_store_shared_without_change_events_is_listed_every_time() {
    let memory = Arc::new(MemoryBackend::new());
    let ours = Store::new(Arc::new(SharedSilently(memory.clone())));
    let theirs = Store::new(memory.clone());
    let signer = SigningKey::generate(KeyRole::Operator);
    put(&ours, &mint(&signer, &new_account_key(), 1_000, 0)).await;
    assert_eq!(ours.count_accounts().await.unwrap(), 1);
    // Another instance's write, which this one never hears of.
    put(&theirs, &mint(&signer, &new_account_key(), 1_000, 0)).await;
    assert_eq!(ours.count_accounts().await.unwrap(), 2);
}
