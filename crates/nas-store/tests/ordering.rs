//! The store's side of "newest wins", staged step by step with the fault-injecting decorator:
//! unknown-outcome writes, same-second re-issues, tombstones, generations and observers.

mod conformance;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use conformance::{meta, mint, new_account_key};
use nas_jwt::{KeyRole, SigningKey};
use nas_store::fault::{FaultBackend, Op, Point};
use nas_store::memory::MemoryBackend;
use nas_store::{ChangeEvent, DeleteOutcome, PutOutcome, Store, StoreError};

fn unavailable() -> StoreError {
    StoreError::Unavailable("injected timeout".into())
}

fn faulty_store() -> (Arc<FaultBackend>, Store) {
    let faults = FaultBackend::new(Arc::new(MemoryBackend::new()));
    let store = Store::new(faults.clone());
    (faults, store)
}

/// Records every change the store's observer sees.
fn record(store: &Store) -> Arc<Mutex<Vec<ChangeEvent>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    store.observe(Arc::new(move |e: &ChangeEvent| {
        sink.lock().unwrap().push(e.clone())
    }));
    seen
}

#[tokio::test]
async fn a_write_that_times_out_but_landed_completes_its_side_effects() {
    let (faults, store) = faulty_store();
    let seen = record(&store);
    let signer = SigningKey::generate(KeyRole::Operator);
    let key = new_account_key();
    let v1 = mint(&signer, &key, 1_000, 0);
    // The write lands, then the backend reports a timeout; the read-back finds it.
    faults.fail(Op::Put, Point::After, Some(&key), unavailable(), 1);
    let written = store.put_account(&key, v1.clone(), &meta(&v1), true).await;
    assert_eq!(written.map(|w| w.outcome), Ok(PutOutcome::Created));
    let events = seen.lock().unwrap().clone();
    assert_eq!(events.len(), 1, "one change event for the landed write");
    assert!(events[0].announce);
    assert_eq!(events[0].new.as_ref(), Some(&v1));
}

#[tokio::test]
async fn a_retry_of_a_landed_but_unannounced_write_announces_it() {
    let (faults, store) = faulty_store();
    let seen = record(&store);
    let signer = SigningKey::generate(KeyRole::Operator);
    let key = new_account_key();
    let v1 = mint(&signer, &key, 1_000, 0);
    // Hold the write before it reaches the backend, then arm: it lands but reports a timeout,
    // and the read-back fails too, so the outcome stays unknown to the client.
    let held = faults.pause(Op::Put, Point::Before, Some(&key));
    let write = {
        let (store, key, v1) = (store.clone(), key.clone(), v1.clone());
        tokio::spawn(async move { store.put_account(&key, v1.clone(), &meta(&v1), true).await })
    };
    held.reached().await;
    faults.fail(Op::Put, Point::After, Some(&key), unavailable(), 1);
    faults.fail(Op::Get, Point::Before, Some(&key), unavailable(), 1);
    held.release();
    assert!(matches!(
        write.await.unwrap(),
        Err(StoreError::Unavailable(_))
    ));
    assert!(seen.lock().unwrap().is_empty(), "nothing announced yet");
    assert_eq!(store.get_account(&key).await.unwrap(), Some(v1.clone()));
    // The client retries: the JWT is stored already, and now it is announced, once.
    let retry = store.put_account(&key, v1.clone(), &meta(&v1), true).await;
    assert_eq!(retry.map(|w| w.outcome), Ok(PutOutcome::Unchanged));
    let events = seen.lock().unwrap().clone();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].new.as_ref(), Some(&v1));
    assert!(events[0].announce);
    let again = store.put_account(&key, v1.clone(), &meta(&v1), true).await;
    assert_eq!(again.map(|w| w.outcome), Ok(PutOutcome::Unchanged));
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "a second retry announces nothing"
    );
}

#[tokio::test]
async fn observers_see_one_keys_changes_in_store_order_under_concurrency() {
    let (_faults, store) = faulty_store();
    let seen = record(&store);
    let signer = SigningKey::generate(KeyRole::Operator);
    let key = new_account_key();
    let versions: Vec<Bytes> = (0..40).map(|i| mint(&signer, &key, 1_000 + i, 0)).collect();
    let mut tasks = Vec::new();
    for v in versions.into_iter().rev() {
        let (store, key) = (store.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            store.put_account(&key, v.clone(), &meta(&v), true).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let events = seen.lock().unwrap().clone();
    let iats: Vec<i64> = events
        .iter()
        .map(|e| meta(e.new.as_ref().unwrap()).iat)
        .collect();
    let mut sorted = iats.clone();
    sorted.sort();
    assert_eq!(
        iats, sorted,
        "observer order is store order: iats only grow"
    );
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(iats.last(), Some(&1_039));
    assert!(store.generation(&key) >= *seqs.last().unwrap());
}

#[tokio::test]
async fn a_delete_leaves_a_tombstone_that_only_a_later_jwt_passes() {
    let (_faults, store) = faulty_store();
    let signer = SigningKey::generate(KeyRole::Operator);
    let key = new_account_key();
    let v1 = mint(&signer, &key, 1_000, 0);
    store
        .put_account_if_newer(&key, v1.clone(), &meta(&v1))
        .await
        .unwrap();
    // A request older than the stored account (a replay after a re-create) changes nothing.
    let old_request = Bytes::from_static(b"request issued at 999");
    assert_eq!(
        store.delete_account_by(&key, old_request, 999).await,
        Ok(DeleteOutcome::Stale { stored_iat: 1_000 })
    );
    assert_eq!(store.get_account(&key).await.unwrap(), Some(v1.clone()));
    let request = mint(&signer, &key, 2_000, 0);
    assert_eq!(
        store.delete_account_by(&key, request.clone(), 2_000).await,
        Ok(DeleteOutcome::Deleted)
    );
    assert_eq!(store.get_account(&key).await.unwrap(), None);
    assert_eq!(store.get_tombstone(&key).await.unwrap(), Some(request));
    // What a PACK merge, a LOOKUP answer or a replica would bring back is refused.
    for iat in [1_000, 1_500, 2_000] {
        let old = mint(&signer, &key, iat, 0);
        assert_eq!(
            store
                .put_account_if_newer(&key, old.clone(), &meta(&old))
                .await,
            Ok(PutOutcome::Deleted { deleted_at: 2_000 }),
            "iat {iat}"
        );
    }
    assert_eq!(store.get_account(&key).await.unwrap(), None);
    let newer = mint(&signer, &key, 2_001, 0);
    assert_eq!(
        store
            .put_account_if_newer(&key, newer.clone(), &meta(&newer))
            .await,
        Ok(PutOutcome::Created)
    );
}

#[tokio::test]
async fn a_delete_of_an_absent_account_still_sticks() {
    let (_faults, store) = faulty_store();
    let signer = SigningKey::generate(KeyRole::Operator);
    let key = new_account_key();
    let request = mint(&signer, &key, 2_000, 0);
    assert_eq!(
        store.delete_account_by(&key, request, 2_000).await,
        Ok(DeleteOutcome::Absent)
    );
    let old = mint(&signer, &key, 1_000, 0);
    assert!(matches!(
        store
            .put_account_if_newer(&key, old.clone(), &meta(&old))
            .await,
        Ok(PutOutcome::Deleted { .. })
    ));
}

#[tokio::test]
async fn marking_everything_stale_raises_every_generation() {
    let (_faults, store) = faulty_store();
    let key = new_account_key();
    let before = store.generation(&key);
    let floor = store.mark_all_stale();
    assert!(floor > before);
    assert!(store.generation(&key) >= floor);
    assert_eq!(store.floor(), floor);
}

/// Two instances on one shared backend: A's view goes through the fault decorator, B writes
/// directly. Returns (faults, A, B).
fn two_instances() -> (Arc<FaultBackend>, Store, Store) {
    let shared = Arc::new(MemoryBackend::new());
    let faults = FaultBackend::new(shared.clone());
    (faults.clone(), Store::new(faults), Store::new(shared))
}

#[tokio::test]
async fn a_delete_request_never_removes_a_newer_jwt_written_by_another_instance_meanwhile() {
    let (faults, a, b) = two_instances();
    let signer = SigningKey::generate(KeyRole::Operator);
    let key = new_account_key();
    let old = mint(&signer, &key, 1_000, 0);
    a.put_account_if_newer(&key, old.clone(), &meta(&old))
        .await
        .unwrap();
    // A has read the old JWT and decided to delete it; hold it just before the delete.
    let held = faults.pause(Op::Delete, Point::Before, Some(&key));
    let delete = {
        let (a, key) = (a.clone(), key.clone());
        tokio::spawn(async move {
            a.delete_account_by(&key, Bytes::from_static(b"request"), 1_500)
                .await
        })
    };
    held.reached().await;
    let newer = mint(&signer, &key, 2_000, 0);
    b.put_account_if_newer(&key, newer.clone(), &meta(&newer))
        .await
        .unwrap();
    faults.clear();
    held.release();
    assert_eq!(
        delete.await.unwrap().unwrap(),
        DeleteOutcome::Stale { stored_iat: 2_000 }
    );
    assert_eq!(b.get_account(&key).await.unwrap(), Some(newer.clone()));
    assert_eq!(a.get_account(&key).await.unwrap(), Some(newer));
}

#[tokio::test]
async fn the_expiry_purge_never_removes_a_newer_jwt_written_by_another_instance_meanwhile() {
    let (faults, a, b) = two_instances();
    let signer = SigningKey::generate(KeyRole::Operator);
    let key = new_account_key();
    let now = nas_jwt::unix_now();
    let expired = mint(&signer, &key, now - 20, now - 10);
    a.put_account_if_newer(&key, expired.clone(), &meta(&expired))
        .await
        .unwrap();
    let held = faults.pause(Op::Delete, Point::Before, Some(&key));
    let purge = {
        let a = a.clone();
        tokio::spawn(async move { a.purge_expired().await })
    };
    held.reached().await;
    let renewed = mint(&signer, &key, now - 5, now + 3600);
    b.put_account_if_newer(&key, renewed.clone(), &meta(&renewed))
        .await
        .unwrap();
    faults.clear();
    held.release();
    assert_eq!(purge.await.unwrap().unwrap(), Vec::<String>::new());
    assert_eq!(b.get_account(&key).await.unwrap(), Some(renewed));
}

#[tokio::test(flavor = "current_thread")]
async fn nothing_proportional_to_the_store_runs_until_the_pack_hash_is_wanted() {
    let (faults, store) = faulty_store();
    let signer = SigningKey::generate(KeyRole::Operator);
    let key = new_account_key();
    let jwt = mint(&signer, &key, 1_000, 0);
    let listing = faults.pause(Op::List, Point::Before, None);
    store
        .put_account_if_newer(&key, jwt.clone(), &meta(&jwt))
        .await
        .unwrap();
    assert_eq!(store.get_account(&key).await.unwrap(), Some(jwt.clone()));
    // On this single-threaded runtime every spawned task that is ready runs at a yield: an
    // eager scan would be parked at the listing by now.
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
    assert!(!listing.was_reached(), "the store was walked at start");
    let hash = {
        let store = store.clone();
        tokio::spawn(async move { store.pack_hash().await })
    };
    listing.reached().await;
    listing.release();
    use sha2::Digest;
    let expected: [u8; 32] = sha2::Sha256::digest(&jwt).into();
    assert_eq!(hash.await.unwrap().unwrap(), expected);
}
