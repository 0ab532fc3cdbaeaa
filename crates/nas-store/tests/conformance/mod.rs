//! The conformance suite: one set of checks every backend must pass.
//!
//! * Writable backends: [`run_all`] with a factory that makes a fresh, empty backend each call.
//! * Read-only backends (read-only dir, nsc, frozen memory): [`run_read_only`] with a backend
//!   that already holds the given tokens.
//!
//! Another test file of this crate (S3, Redis) uses it with `mod conformance;`; a test file
//! elsewhere with `#[path = "<this file>"] mod conformance;`. Every check builds its own
//! [`Store`] over what the factory returns, so a check never depends on another's leftovers.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use nas_jwt::{encode, AccountClaims, KeyRole, SigningKey};
use nas_store::{Backend, Namespace, Precondition, PutOutcome, Rank, Store, StoreError, TokenMeta};
use sha2::{Digest, Sha256};

/// A Go-made fixture from `tests/fixtures/jwt`.
pub fn fixture(name: &str) -> Bytes {
    let path = format!(
        "{}/../../tests/fixtures/jwt/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

/// `sub` of a token.
pub fn sub_of(token: &[u8]) -> String {
    nas_jwt::jwt::peek_payload(token).unwrap()["sub"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The newer-wins view of a token.
pub fn meta(token: &[u8]) -> TokenMeta {
    TokenMeta::read(token).unwrap()
}

/// An account JWT for `account` issued at `iat` (distinct `iat` → distinct `jti`).
pub fn mint(signer: &SigningKey, account: &str, iat: i64, exp: i64) -> Bytes {
    let mut claims = AccountClaims::new_account(account, "conformance");
    claims.exp = exp;
    Bytes::from(encode(&mut claims, signer, iat).unwrap())
}

/// A fresh account public key.
pub fn new_account_key() -> String {
    SigningKey::generate(KeyRole::Account)
        .public_key()
        .as_str()
        .to_owned()
}

/// XOR of SHA-256 of each token: what the PACK hash must be.
pub fn xor_of<'a>(tokens: impl IntoIterator<Item = &'a Bytes>) -> [u8; 32] {
    let mut out = [0u8; 32];
    for t in tokens {
        let d = Sha256::digest(t);
        for (o, b) in out.iter_mut().zip(d.iter()) {
            *o ^= b;
        }
    }
    out
}

/// Waits (up to 5 s) until a store reports a change of `key` to `expected` made by another
/// instance sharing its backend.
pub async fn expect_event(
    events: &mut tokio::sync::broadcast::Receiver<nas_store::ChangeEvent>,
    key: &str,
    expected: &Bytes,
) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("the change reached the other instance")
            .unwrap();
        if event.key == key && event.new.as_ref() == Some(expected) {
            assert!(event.external);
            return;
        }
    }
}

/// Every event received so far.
fn drain(
    events: &mut tokio::sync::broadcast::Receiver<nas_store::ChangeEvent>,
) -> Vec<nas_store::ChangeEvent> {
    let mut out = Vec::new();
    while let Ok(e) = events.try_recv() {
        out.push(e);
    }
    out
}

/// Newer wins by `iat` (Go fixtures account_c_old/new/new_same_jti), identical bytes are
/// no-ops, older is refused, equal `iat` is decided by the tie-break of [`nas_store::Rank`]
/// (the same-`jti` fixture included: same `jti`, other content); exactly one event per
/// effective change and none otherwise.
pub async fn newer_wins_and_events(backend: Arc<dyn Backend>) {
    let store = Store::new(backend);
    let mut events = store.subscribe();
    let (old, new, same) = (
        fixture("account_c_old.jwt"),
        fixture("account_c_new.jwt"),
        fixture("account_c_new_same_jti.jwt"),
    );
    assert_ne!(new, same, "the same-jti fixture has other bytes");
    let key = sub_of(&old);
    assert_eq!(
        store
            .put_account_if_newer(&key, old.clone(), &meta(&old))
            .await,
        Ok(PutOutcome::Created)
    );
    let e = drain(&mut events);
    assert_eq!(e.len(), 1);
    assert_eq!(
        (
            e[0].key.as_str(),
            e[0].old.as_ref(),
            e[0].new.as_ref(),
            e[0].external
        ),
        (key.as_str(), None, Some(&old), false)
    );
    assert_eq!(
        store
            .put_account_if_newer(&key, new.clone(), &meta(&new))
            .await,
        Ok(PutOutcome::Replaced {
            previous: old.clone()
        })
    );
    let e = drain(&mut events);
    assert_eq!(e.len(), 1);
    assert_eq!(
        (e[0].old.as_ref(), e[0].new.as_ref()),
        (Some(&old), Some(&new))
    );
    assert_eq!(
        store
            .put_account_if_newer(&key, old.clone(), &meta(&old))
            .await,
        Ok(PutOutcome::Stale {
            stored_iat: meta(&new).iat
        })
    );
    // Same jti and iat, other content: the tie-break decides; never a silent 'unchanged'.
    let same_wins = Rank::of(meta(&same).iat, &same) > Rank::of(meta(&new).iat, &new);
    assert_eq!(meta(&same).iat, meta(&new).iat);
    let tie = store
        .put_account_if_newer(&key, same.clone(), &meta(&same))
        .await;
    if same_wins {
        assert_eq!(
            tie,
            Ok(PutOutcome::Replaced {
                previous: new.clone()
            })
        );
        assert_eq!(drain(&mut events).len(), 1);
        // Put `new` back the only way the rule allows: it loses now.
        assert_eq!(
            store
                .put_account_if_newer(&key, new.clone(), &meta(&new))
                .await,
            Ok(PutOutcome::TieLost {
                iat: meta(&new).iat
            })
        );
        assert_eq!(store.delete_account(&key).await, Ok(true));
        assert_eq!(drain(&mut events).len(), 1);
        store
            .put_account_if_newer(&key, new.clone(), &meta(&new))
            .await
            .unwrap();
        drain(&mut events);
    } else {
        assert_eq!(
            tie,
            Ok(PutOutcome::TieLost {
                iat: meta(&same).iat
            })
        );
    }
    assert_eq!(
        store
            .put_account_if_newer(&key, new.clone(), &meta(&new))
            .await,
        Ok(PutOutcome::Unchanged)
    );
    assert!(
        drain(&mut events).is_empty(),
        "no event for stale or unchanged writes"
    );
    assert_eq!(store.get_account(&key).await.unwrap(), Some(new.clone()));
    assert_eq!(store.pack_hash().await.unwrap(), xor_of([&new]));

    assert_eq!(store.delete_account(&key).await, Ok(true));
    let e = drain(&mut events);
    assert_eq!(e.len(), 1);
    assert_eq!((e[0].old.as_ref(), e[0].new.as_ref()), (Some(&new), None));
    assert_eq!(store.delete_account(&key).await, Ok(false));
    assert!(
        drain(&mut events).is_empty(),
        "no event for deleting nothing"
    );
    assert_eq!(store.get_account(&key).await.unwrap(), None);
    assert_eq!(store.pack_hash().await.unwrap(), [0u8; 32]);

    // Equal iat with another jti (nsc can issue two edits within one second): the higher rank
    // replaces, the lower is refused with TieLost, in either order.
    let signer = SigningKey::generate(KeyRole::Operator);
    let key = new_account_key();
    let x = mint(&signer, &key, 1_000, 0);
    let mut claims = AccountClaims::new_account(&key, "renamed");
    let y = Bytes::from(encode(&mut claims, &signer, 1_000).unwrap());
    let (a, b) = if Rank::of(1_000, &x) < Rank::of(1_000, &y) {
        (x, y)
    } else {
        (y, x)
    };
    assert_eq!(
        store.put_account_if_newer(&key, a.clone(), &meta(&a)).await,
        Ok(PutOutcome::Created)
    );
    assert_eq!(
        store.put_account_if_newer(&key, b.clone(), &meta(&b)).await,
        Ok(PutOutcome::Replaced {
            previous: a.clone()
        })
    );
    assert_eq!(
        store.put_account_if_newer(&key, a.clone(), &meta(&a)).await,
        Ok(PutOutcome::TieLost { iat: 1_000 })
    );
    assert_eq!(drain(&mut events).len(), 2);
    // An empty token is never stored.
    assert!(matches!(
        store
            .put_account_if_newer(&key, Bytes::new(), &meta(&b))
            .await,
        Err(StoreError::Corrupt { .. })
    ));
    assert_eq!(store.get_account(&key).await.unwrap(), Some(b));
    assert!(drain(&mut events).is_empty());
}

/// 16 concurrent writers × 64 writes of different versions of one key through one store, with
/// readers running throughout: the highest `iat` wins, every read is exactly one of the written
/// tokens (no torn value), and the events form one chain (each `old` is the previous `new`),
/// one per `Created`/`Replaced`.
pub async fn concurrent_writers_newest_wins(backend: Arc<dyn Backend>) {
    const WRITERS: usize = 16;
    const PER_WRITER: usize = 64;
    let store = Store::new(backend);
    let mut events = store.subscribe();
    let signer = SigningKey::generate(KeyRole::Operator);
    let key = new_account_key();
    let n = WRITERS * PER_WRITER;
    // Distinct iats spread over the writers so every writer both wins and loses races.
    let tokens: Vec<Bytes> = (0..n)
        .map(|i| mint(&signer, &key, 1_000_000 + ((i * 7919) % n) as i64, 0))
        .collect();
    let max_iat = 1_000_000 + (n - 1) as i64;
    let written: Arc<HashSet<Bytes>> = Arc::new(tokens.iter().cloned().collect());
    let tokens = Arc::new(tokens);
    let done = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..2 {
        let (store, key, written, done) =
            (store.clone(), key.clone(), written.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            let mut reads = 0usize;
            while !done.load(Ordering::SeqCst) {
                if let Some(seen) = store.get_account(&key).await.unwrap() {
                    assert!(written.contains(&seen), "torn or foreign read");
                }
                reads += 1;
                tokio::task::yield_now().await;
            }
            reads
        }));
    }
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (store, tokens, key) = (store.clone(), tokens.clone(), key.clone());
        writers.push(tokio::spawn(async move {
            let mut changes = 0usize;
            for i in 0..PER_WRITER {
                let t = &tokens[w * PER_WRITER + i];
                match store
                    .put_account_if_newer(&key, t.clone(), &meta(t))
                    .await
                    .unwrap()
                {
                    PutOutcome::Created | PutOutcome::Replaced { .. } => changes += 1,
                    PutOutcome::Stale { stored_iat } => assert!(stored_iat > meta(t).iat),
                    PutOutcome::Unchanged => panic!("every token is distinct"),
                    other => panic!("distinct iats, no deletes: {other:?}"),
                }
            }
            changes
        }));
    }
    let mut changes = 0;
    for t in writers {
        changes += t.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    for r in readers {
        assert!(r.await.unwrap() > 0);
    }
    let stored = store.get_account(&key).await.unwrap().unwrap();
    assert_eq!(meta(&stored).iat, max_iat, "the newest iat must win");
    assert!(nas_jwt::decode(&stored).is_ok());
    assert_eq!(store.pack_hash().await.unwrap(), xor_of([&stored]));

    let events = drain(&mut events);
    assert_eq!(events.len(), changes, "one event per effective change");
    let mut previous: Option<Bytes> = None;
    for e in &events {
        assert_eq!(e.old, previous, "events follow the order of the writes");
        assert!(meta(e.new.as_ref().unwrap()).iat >= previous.as_ref().map_or(0, |p| meta(p).iat));
        previous = e.new.clone();
    }
    assert_eq!(previous, Some(stored));
}

/// Two stores (as two server instances would) over one backend race 16 writers of one key:
/// the backend's compare-and-swap alone must keep the highest `iat`, and a third store opened
/// afterwards computes the right hash.
pub async fn two_instances_race(backend: Arc<dyn Backend>) {
    const WRITERS: usize = 16;
    const PER_WRITER: usize = 64;
    let stores = [Store::new(backend.clone()), Store::new(backend.clone())];
    let signer = SigningKey::generate(KeyRole::Operator);
    let key = new_account_key();
    let n = WRITERS * PER_WRITER;
    let tokens: Arc<Vec<Bytes>> = Arc::new(
        (0..n)
            .map(|i| mint(&signer, &key, 2_000_000 + ((i * 104_729) % n) as i64, 0))
            .collect(),
    );
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (store, tokens, key) = (stores[w % 2].clone(), tokens.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..PER_WRITER {
                let t = &tokens[w * PER_WRITER + i];
                store
                    .put_account_if_newer(&key, t.clone(), &meta(t))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stored = stores[0].get_account(&key).await.unwrap().unwrap();
    assert_eq!(meta(&stored).iat, 2_000_000 + (n - 1) as i64);
    assert_eq!(
        stores[1].get_account(&key).await.unwrap(),
        Some(stored.clone())
    );
    let third = Store::new(backend);
    assert_eq!(third.pack_hash().await.unwrap(), xor_of([&stored]));
}

/// The backend primitive itself: `Absent` lets exactly one of 16 racing creators win;
/// `Matches` read-modify-write loops lose no update; a failed precondition writes nothing.
pub async fn backend_compare_and_swap(backend: Arc<dyn Backend>) {
    const TASKS: usize = 16;
    const INCREMENTS: usize = 16;
    let key = new_account_key();
    let ns = Namespace::Accounts;
    let mut creators = Vec::new();
    for i in 0..TASKS {
        let (backend, key) = (backend.clone(), key.clone());
        creators.push(tokio::spawn(async move {
            backend
                .put(
                    ns,
                    &key,
                    Bytes::from(format!("creator {i}")),
                    Precondition::Absent,
                )
                .await
        }));
    }
    let mut won = 0;
    for c in creators {
        match c.await.unwrap() {
            Ok(_) => won += 1,
            Err(StoreError::Conflict) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(won, 1, "exactly one creator wins");

    let (first, v1) = backend.get(ns, &key).await.unwrap().unwrap();
    let v2 = backend
        .put(
            ns,
            &key,
            Bytes::from_static(b"0"),
            Precondition::Matches(v1.clone()),
        )
        .await
        .unwrap();
    assert_ne!(v1, v2, "new content, new version");
    assert_eq!(
        backend
            .put(ns, &key, first.clone(), Precondition::Matches(v1))
            .await,
        Err(StoreError::Conflict)
    );
    assert_eq!(
        backend.put(ns, &key, first, Precondition::Absent).await,
        Err(StoreError::Conflict)
    );
    assert_eq!(
        backend.get(ns, &key).await.unwrap().unwrap(),
        (Bytes::from_static(b"0"), v2)
    );
    // The version-less read gives the same bytes, in every namespace, and `None` when absent.
    assert_eq!(
        backend.get_value(ns, &key).await.unwrap(),
        Some(Bytes::from_static(b"0"))
    );
    let absent = new_account_key();
    for other in [Namespace::Accounts, Namespace::Tombstones] {
        assert_eq!(backend.get_value(other, &absent).await.unwrap(), None);
    }

    let mut incrementers = Vec::new();
    for _ in 0..TASKS {
        let (backend, key) = (backend.clone(), key.clone());
        incrementers.push(tokio::spawn(async move {
            let mut done = 0;
            while done < INCREMENTS {
                let (bytes, version) = backend.get(ns, &key).await.unwrap().unwrap();
                let n: usize = std::str::from_utf8(&bytes).unwrap().parse().unwrap();
                let next = Bytes::from((n + 1).to_string());
                match backend
                    .put(ns, &key, next, Precondition::Matches(version))
                    .await
                {
                    Ok(_) => done += 1,
                    Err(StoreError::Conflict) => tokio::task::yield_now().await,
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    for t in incrementers {
        t.await.unwrap();
    }
    let (bytes, _) = backend.get(ns, &key).await.unwrap().unwrap();
    assert_eq!(
        bytes,
        Bytes::from((TASKS * INCREMENTS).to_string()),
        "no lost update"
    );
    assert!(backend.delete(ns, &key, None).await.unwrap());
    assert_eq!(backend.get(ns, &key).await.unwrap(), None);
    assert_eq!(backend.get_value(ns, &key).await.unwrap(), None);
}

/// `delete` with an expected version removes only that version: a stale version is a
/// `Conflict` that removes nothing, in every namespace; an absent key is `false`.
pub async fn conditional_delete(backend: Arc<dyn Backend>) {
    let key = new_account_key();
    for ns in [
        Namespace::Accounts,
        Namespace::Activations,
        Namespace::Tombstones,
    ] {
        let key = match ns {
            Namespace::Activations => "A".repeat(52) + "====",
            _ => key.clone(),
        };
        let old = backend
            .put(ns, &key, Bytes::from_static(b"v1"), Precondition::Any)
            .await
            .unwrap();
        let new = backend
            .put(ns, &key, Bytes::from_static(b"v2"), Precondition::Any)
            .await
            .unwrap();
        assert_eq!(
            backend.delete(ns, &key, Some(&old)).await,
            Err(StoreError::Conflict),
            "{ns:?}: a stale version must not delete"
        );
        let (bytes, _) = backend.get(ns, &key).await.unwrap().unwrap();
        assert_eq!(bytes, Bytes::from_static(b"v2"), "{ns:?}");
        assert!(
            backend.delete(ns, &key, Some(&new)).await.unwrap(),
            "{ns:?}"
        );
        assert_eq!(backend.get(ns, &key).await.unwrap(), None, "{ns:?}");
        assert!(
            !backend.delete(ns, &key, Some(&new)).await.unwrap(),
            "{ns:?}"
        );
        assert!(!backend.delete(ns, &key, None).await.unwrap(), "{ns:?}");
    }
}

/// list, pack and hash agree; expired JWTs are packed out but hashed in and never deleted;
/// `max` bounds pack.
pub async fn list_pack_hash(backend: Arc<dyn Backend>) {
    let store = Store::new(backend);
    assert_eq!(store.pack_hash().await.unwrap(), [0u8; 32]);
    assert!(store.pack(None).await.unwrap().is_empty());
    let names = [
        "account_a.jwt",
        // account_b plus a trailing newline: stored, packed and hashed verbatim.
        "edge_trailing_newline.jwt",
        "account_c_new.jwt",
        "account_sys.jwt",
        "account_e_expired.jwt",
    ];
    let mut all = Vec::new();
    for name in names {
        let t = fixture(name);
        store
            .put_account_if_newer(&sub_of(&t), t.clone(), &meta(&t))
            .await
            .unwrap();
        all.push(t);
    }
    let now = nas_jwt::unix_now();
    let pack = store.pack(None).await.unwrap();
    let mut expected: Vec<(String, Bytes)> = all
        .iter()
        .filter(|t| !meta(t).expired(now))
        .map(|t| (sub_of(t), t.clone()))
        .collect();
    expected.sort();
    assert_eq!(
        pack, expected,
        "pack = every unexpired account, exact bytes, sorted"
    );
    assert_eq!(pack.len(), all.len() - 1);
    assert_eq!(
        store.list_accounts().await.unwrap(),
        expected.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>()
    );
    assert_eq!(store.pack(Some(2)).await.unwrap(), expected[..2].to_vec());
    assert_eq!(store.pack(Some(0)).await.unwrap(), vec![]);
    let hash = store.pack_hash().await.unwrap();
    assert_eq!(
        hash,
        xor_of(&all),
        "hash covers every stored JWT, expired ones too"
    );
    let expired = all.iter().find(|t| meta(t).expired(now)).unwrap();
    assert_eq!(
        store.get_account(&sub_of(expired)).await.unwrap().as_ref(),
        Some(expired),
        "expired JWTs are kept"
    );
    // A second store over the same backend computes the same hash by scanning.
    assert_eq!(
        Store::new(store.backend().clone())
            .pack_hash()
            .await
            .unwrap(),
        hash
    );
    store.delete_account(&sub_of(&all[0])).await.unwrap();
    assert_eq!(store.pack_hash().await.unwrap(), xor_of(&all[1..]));
}

/// Token 10.2 of nats-jwt.md (system account, 680 bytes).
pub const SPEC_TOKEN_SYS: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJqdGkiOiIyQ1dSRk80MlZVMk1TVlI0QkhIUFBEVjdJNERaTFZHWURZUlNXQ0pIVUM0Q1dRVkhXWjNBIiwiaWF0IjoxNjE2MTg2MzYxLCJpc3MiOiJPRDRNNklBQUtRU000RFFTTFdaSVZCQUNZVFlTMlM2WFFTN1U2N1hYWVhKNDRJTE5FMzVZUEdKSyIsIm5hbWUiOiJzeXMiLCJzdWIiOiJBRDRNMzRPUFJVUFdEWVRJUUxXS01FWlpNNU1LN1BRUURTS05FTENaRFJaWkVWRldPV1BMRlRVRSIsIm5hdHMiOnsibGltaXRzIjp7InN1YnMiOi0xLCJkYXRhIjotMSwicGF5bG9hZCI6LTEsImltcG9ydHMiOi0xLCJleHBvcnRzIjotMSwid2lsZGNhcmRzIjp0cnVlLCJjb25uIjotMSwibGVhZiI6LTF9LCJkZWZhdWx0X3Blcm1pc3Npb25zIjp7InB1YiI6e30sInN1YiI6e319LCJ0eXBlIjoiYWNjb3VudCIsInZlcnNpb24iOjJ9fQ.gExWTSaWWSYh9N_KsrOGPAJk0KJUn1VjVo00yfE6NoMXrmjkATDMoDLpKC19mrBNaMa6RZjhXyTdzJulxzxGBw";
/// Token 10.3 of nats-jwt.md (account with JetStream limits, 768 bytes).
pub const SPEC_TOKEN_ONE: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJqdGkiOiJRSVFDRFpRRkRIUU9WQlc3Q0tDNFQzVzJJV0dZV1ZISjZTVTRSTlYzUFo3NUhTUFVQS1ZBIiwiaWF0IjoxNjE2MTg3MjUwLCJpc3MiOiJPRDRNNklBQUtRU000RFFTTFdaSVZCQUNZVFlTMlM2WFFTN1U2N1hYWVhKNDRJTE5FMzVZUEdKSyIsIm5hbWUiOiJvbmUiLCJzdWIiOiJBQlZSWktKNlo3TklNUElZSlJDSEVZRlJVTzdFTk42TldPS1FERkxGREZWUFNNMzZVUFgyVUNQUCIsIm5hdHMiOnsibGltaXRzIjp7InN1YnMiOi0xLCJkYXRhIjotMSwicGF5bG9hZCI6LTEsImltcG9ydHMiOi0xLCJleHBvcnRzIjotMSwid2lsZGNhcmRzIjp0cnVlLCJjb25uIjotMSwibGVhZiI6LTEsIm1lbV9zdG9yYWdlIjoxMDczNzQxODI0LCJkaXNrX3N0b3JhZ2UiOjEwNzM3NDE4MjQwLCJzdHJlYW1zIjoxMDB9LCJkZWZhdWx0X3Blcm1pc3Npb25zIjp7InB1YiI6e30sInN1YiI6e319LCJ0eXBlIjoiYWNjb3VudCIsInZlcnNpb24iOjJ9fQ.yYdE3AjpWMBt_rZVLSNmuxR28FP5-6fO_x6FMQl7xe7hmeEc--bbCBcw4ujEjtVkE62I21asKtu06vmW1fEsAg";

fn hex(text: &str) -> [u8; 32] {
    data_encoding::HEXLOWER
        .decode(text.as_bytes())
        .unwrap()
        .try_into()
        .unwrap()
}

/// The store-hash vector of nats-jwt.md §10.6: a store holding exactly tokens 10.2 and 10.3.
pub async fn spec_hash_vector(backend: Arc<dyn Backend>) {
    let store = Store::new(backend);
    let (sys, one) = (
        Bytes::from_static(SPEC_TOKEN_SYS.as_bytes()),
        Bytes::from_static(SPEC_TOKEN_ONE.as_bytes()),
    );
    assert_eq!((sys.len(), one.len()), (680, 768));
    store
        .put_account_if_newer(&sub_of(&sys), sys.clone(), &meta(&sys))
        .await
        .unwrap();
    assert_eq!(
        store.pack_hash().await.unwrap(),
        hex("5045ef14a3eb10b8f88abcb28a8d5f1aa9a08c55d4b32ad2ea8910e63eabadc7")
    );
    store
        .put_account_if_newer(&sub_of(&one), one.clone(), &meta(&one))
        .await
        .unwrap();
    assert_eq!(
        store.pack_hash().await.unwrap(),
        hex("53bec7d52ad9f0c444adf8f6cd90768c29358e99899875e1249114a6a01d59c1")
    );
    store.delete_account(&sub_of(&sys)).await.unwrap();
    assert_eq!(
        store.pack_hash().await.unwrap(),
        hex("03fb28c18932e07cbc274444471d2996809502cc5d2b5f33ce1804409eb6f406")
    );
}

/// A valid activation hash id that no test stores.
pub const UNUSED_HASH_ID: &str = "GDSU3HNZKL7I5NBIY7OOCYKE2HSB3SSYRV7UNGZ5GF6NM5Z7TKUA====";

/// Keys that are not account keys, including every path trick.
pub fn bad_account_keys() -> Vec<String> {
    let good = sub_of(&fixture("account_b.jwt"));
    vec![
        String::new(),
        "foo".into(),
        "../etc/passwd".into(),
        "A/../../x".into(),
        "AAAA\0".into(),
        format!("{good}\0"),
        format!("../{good}"),
        format!("{good}.jwt"),
        format!("{}/{}", &good[..28], &good[29..]),
        good.to_lowercase(),
        good[..55].to_owned(),
        format!("{good}A"),
        // A user key and an operator key: nkeys, but not accounts.
        "UDCIBGGGHCJBQPOO4SCJJBHZDR37NQGGCIWMNG2DDAKJ6WMKBMAKXIMO".into(),
        "OD4M6IAAKQSM4DQSLWZIVBACYTYS2S6XQS7U67XXYXJ44ILNE35YPGJK".into(),
        UNUSED_HASH_ID.into(),
    ]
}

/// Keys that are not activation hash ids, including every path trick.
pub fn bad_hash_ids() -> Vec<String> {
    let good = UNUSED_HASH_ID;
    vec![
        String::new(),
        "../x".into(),
        format!("../{}", &good[3..]),
        format!("{}/{}", &good[..20], &good[21..]),
        format!("{}\0{}", &good[..20], &good[21..]),
        good.to_lowercase(),
        good[..55].to_owned(),
        format!("{good}="),
        sub_of(&fixture("account_b.jwt")),
    ]
}

/// Invalid keys are refused in both namespaces before anything is touched; activations are a
/// namespace of their own (not listed, hashed or evented as accounts).
pub async fn keys_and_namespaces(backend: Arc<dyn Backend>) {
    let store = Store::new(backend.clone());
    let mut events = store.subscribe();
    let b = fixture("account_b.jwt");
    for bad in bad_account_keys() {
        let refused = |r: Result<_, StoreError>| {
            matches!(
                r,
                Err(StoreError::InvalidKey {
                    ns: Namespace::Accounts,
                    ..
                })
            )
        };
        assert!(
            refused(
                store
                    .put_account_if_newer(&bad, b.clone(), &meta(&b))
                    .await
                    .map(|_| ())
            ),
            "{bad:?}"
        );
        assert!(
            refused(store.get_account(&bad).await.map(|_| ())),
            "{bad:?}"
        );
        assert!(
            refused(store.delete_account(&bad).await.map(|_| ())),
            "{bad:?}"
        );
    }
    for bad in bad_hash_ids() {
        let refused = |r: Result<_, StoreError>| {
            matches!(
                r,
                Err(StoreError::InvalidKey {
                    ns: Namespace::Activations,
                    ..
                })
            )
        };
        assert!(
            refused(store.put_activation(&bad, b.clone()).await),
            "{bad:?}"
        );
        assert!(
            refused(store.get_activation(&bad).await.map(|_| ())),
            "{bad:?}"
        );
    }
    // Nothing addressed through a path trick exists, whatever the backend does with the key.
    for (ns, bad) in [
        (Namespace::Accounts, "../../../../etc/passwd"),
        (Namespace::Activations, "../../../../etc/passwd"),
    ] {
        assert!(!matches!(backend.get(ns, bad).await, Ok(Some(_))), "{bad}");
    }
    assert!(store.pack(None).await.unwrap().is_empty());
    assert_eq!(store.pack_hash().await.unwrap(), [0u8; 32]);

    let act = fixture("activation_foo_bar.jwt");
    let hash =
        nas_jwt::activation_hash_id(&nas_jwt::decode(&act).unwrap().into_activation().unwrap().1)
            .unwrap();
    assert_eq!(store.get_activation(&hash).await.unwrap(), None);
    store.put_activation(&hash, act.clone()).await.unwrap();
    assert_eq!(
        store.get_activation(&hash).await.unwrap(),
        Some(act.clone())
    );
    // The same hash id overwrites.
    let other = fixture("activation_foo_star.jwt");
    store.put_activation(&hash, other.clone()).await.unwrap();
    assert_eq!(store.get_activation(&hash).await.unwrap(), Some(other));
    assert!(
        store.list_accounts().await.unwrap().is_empty(),
        "activations are not accounts"
    );
    assert_eq!(store.pack_hash().await.unwrap(), [0u8; 32]);
    assert_eq!(store.get_activation(UNUSED_HASH_ID).await.unwrap(), None);
    // An account and an activation never share a slot (a backend may also refuse the key).
    store
        .put_account_if_newer(&sub_of(&b), b.clone(), &meta(&b))
        .await
        .unwrap();
    for (ns, key) in [
        (Namespace::Activations, sub_of(&b)),
        (Namespace::Accounts, hash.clone()),
    ] {
        assert!(
            matches!(
                backend.get(ns, &key).await,
                Ok(None) | Err(StoreError::InvalidKey { .. })
            ),
            "{ns:?} {key}"
        );
    }
    let mut listed = Vec::new();
    let mut stream = backend.list(Namespace::Activations).await.unwrap();
    while let Some(k) = futures::StreamExt::next(&mut stream).await {
        listed.push(k.unwrap());
    }
    assert_eq!(listed, vec![hash]);
    let e = drain(&mut events);
    assert_eq!(e.len(), 1, "only the account write is an event");
    assert_eq!(e[0].key, sub_of(&b));
}

/// Expired JWTs stay until clean-up is asked for; then exactly the expired ones go, with events.
pub async fn purge_expired_on_request(backend: Arc<dyn Backend>) {
    let store = Store::new(backend);
    let signer = SigningKey::generate(KeyRole::Operator);
    let now = nas_jwt::unix_now();
    let (live_key, gone_key) = (new_account_key(), new_account_key());
    let live = mint(&signer, &live_key, now - 10, now + 3600);
    let gone = mint(&signer, &gone_key, now - 10, now - 5);
    for (k, t) in [(&live_key, &live), (&gone_key, &gone)] {
        store
            .put_account_if_newer(k, t.clone(), &meta(t))
            .await
            .unwrap();
    }
    assert_eq!(store.list_accounts().await.unwrap(), vec![live_key.clone()]);
    assert_eq!(
        store.get_account(&gone_key).await.unwrap(),
        Some(gone.clone())
    );
    let mut events = store.subscribe();
    assert_eq!(store.purge_expired().await.unwrap(), vec![gone_key.clone()]);
    let e = drain(&mut events);
    assert_eq!(e.len(), 1);
    assert_eq!(
        (e[0].key.as_str(), e[0].old.as_ref(), e[0].new.as_ref()),
        (gone_key.as_str(), Some(&gone), None)
    );
    assert_eq!(store.get_account(&gone_key).await.unwrap(), None);
    assert_eq!(
        store.get_account(&live_key).await.unwrap(),
        Some(live.clone())
    );
    assert_eq!(store.pack_hash().await.unwrap(), xor_of([&live]));
    assert!(store.purge_expired().await.unwrap().is_empty());
}

/// Every check of a writable backend. `make` opens a fresh, empty backend on each call (a new
/// directory, key prefix or bucket prefix), so every check starts clean whatever the others
/// left behind; it is called once per check, as many times as there are checks.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn Backend>>,
{
    newer_wins_and_events(make().await).await;
    concurrent_writers_newest_wins(make().await).await;
    two_instances_race(make().await).await;
    backend_compare_and_swap(make().await).await;
    conditional_delete(make().await).await;
    list_pack_hash(make().await).await;
    spec_hash_vector(make().await).await;
    keys_and_namespaces(make().await).await;
    purge_expired_on_request(make().await).await;
    let backend = make().await;
    assert!(!backend.read_only());
    backend.health().await.unwrap();
    assert!(!Store::new(backend).read_only());
}

/// [`run_all`] for a backend that opens synchronously.
pub async fn run_all_sync(make: impl Fn() -> Arc<dyn Backend>) {
    run_all(|| std::future::ready(make())).await
}

/// A read-only backend that already holds `tokens` (account JWTs): serves them, lists and
/// hashes them, refuses every write at the store and at the backend, changes nothing and
/// emits nothing when refusing.
pub async fn run_read_only(backend: Arc<dyn Backend>, tokens: &[Bytes]) {
    let store = Store::new(backend.clone());
    let mut events = store.subscribe();
    assert!(store.read_only());
    backend.health().await.unwrap();
    let by_key: HashMap<String, Bytes> = tokens.iter().map(|t| (sub_of(t), t.clone())).collect();
    for (key, token) in &by_key {
        assert_eq!(
            store.get_account(key).await.unwrap().as_ref(),
            Some(token),
            "{key}"
        );
    }
    let now = nas_jwt::unix_now();
    let mut keys: Vec<String> = by_key
        .iter()
        .filter(|(_, t)| !meta(t).expired(now))
        .map(|(k, _)| k.clone())
        .collect();
    keys.sort();
    assert_eq!(store.list_accounts().await.unwrap(), keys);
    assert_eq!(store.pack_hash().await.unwrap(), xor_of(by_key.values()));
    for bad in bad_account_keys() {
        assert!(
            matches!(
                store.get_account(&bad).await,
                Err(StoreError::InvalidKey { .. })
            ),
            "{bad:?}"
        );
    }

    let t = &tokens[0];
    let key = sub_of(t);
    let newer = mint(
        &SigningKey::generate(KeyRole::Operator),
        &key,
        meta(t).iat + 1,
        0,
    );
    assert_eq!(
        store
            .put_account_if_newer(&key, newer.clone(), &meta(&newer))
            .await,
        Err(StoreError::ReadOnly)
    );
    assert_eq!(store.delete_account(&key).await, Err(StoreError::ReadOnly));
    assert_eq!(store.purge_expired().await, Err(StoreError::ReadOnly));
    assert_eq!(
        store.put_activation(UNUSED_HASH_ID, t.clone()).await,
        Err(StoreError::ReadOnly)
    );
    for ns in [Namespace::Accounts, Namespace::Activations] {
        let k = if ns == Namespace::Accounts {
            key.as_str()
        } else {
            UNUSED_HASH_ID
        };
        assert_eq!(
            backend.put(ns, k, newer.clone(), Precondition::Any).await,
            Err(StoreError::ReadOnly)
        );
        assert_eq!(backend.delete(ns, k, None).await, Err(StoreError::ReadOnly));
    }
    assert_eq!(
        store.get_account(&key).await.unwrap().as_ref(),
        Some(t),
        "refused writes change nothing"
    );
    assert_eq!(store.get_activation(UNUSED_HASH_ID).await.unwrap(), None);
    assert_eq!(store.pack_hash().await.unwrap(), xor_of(by_key.values()));
    assert!(drain(&mut events).is_empty(), "refused writes emit nothing");
}
