//! The conformance suite: one set of checks every backend must pass, called with a factory that
//! makes a fresh, empty backend. S3 and Redis backends run the same functions.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use nas_jwt::{encode, AccountClaims, KeyRole, SigningKey};
use nas_store::{Backend, PutOutcome, Store, StoreError, TokenMeta};
use sha2::{Digest, Sha256};

/// The Go-made fixtures.
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

fn meta(token: &[u8]) -> TokenMeta {
    TokenMeta::read(token).unwrap()
}

/// An account JWT for `account` issued at `iat` (distinct `iat` → distinct `jti`).
pub fn mint(signer: &SigningKey, account: &str, iat: i64, exp: i64) -> Bytes {
    let mut claims = AccountClaims::new_account(account, "conformance");
    claims.exp = exp;
    Bytes::from(encode(&mut claims, signer, iat).unwrap())
}

fn xor_of<'a>(tokens: impl IntoIterator<Item = &'a Bytes>) -> [u8; 32] {
    let mut out = [0u8; 32];
    for t in tokens {
        let d = Sha256::digest(t);
        for (o, b) in out.iter_mut().zip(d.iter()) {
            *o ^= b;
        }
    }
    out
}

/// Newer wins by `iat`, same `jti` is a no-op, older is refused; events only for real changes.
pub async fn newer_wins_and_events(backend: Arc<dyn Backend>) {
    let store = Store::new(backend);
    let mut events = store.subscribe();
    let (old, new, same) = (
        fixture("account_c_old.jwt"),
        fixture("account_c_new.jwt"),
        fixture("account_c_new_same_jti.jwt"),
    );
    let key = sub_of(&old);
    assert_eq!(
        store
            .put_account_if_newer(&key, old.clone(), &meta(&old))
            .await
            .unwrap(),
        PutOutcome::Created
    );
    let e = events.try_recv().unwrap();
    assert_eq!(
        (e.key.as_str(), e.old.as_ref(), e.new.as_ref()),
        (key.as_str(), None, Some(&old))
    );
    assert_eq!(
        store
            .put_account_if_newer(&key, new.clone(), &meta(&new))
            .await
            .unwrap(),
        PutOutcome::Replaced {
            previous: old.clone()
        }
    );
    let e = events.try_recv().unwrap();
    assert_eq!((e.old.as_ref(), e.new.as_ref()), (Some(&old), Some(&new)));
    assert_eq!(
        store
            .put_account_if_newer(&key, old.clone(), &meta(&old))
            .await
            .unwrap(),
        PutOutcome::Stale {
            stored_iat: meta(&new).iat
        }
    );
    assert_eq!(
        store
            .put_account_if_newer(&key, same.clone(), &meta(&same))
            .await
            .unwrap(),
        PutOutcome::Unchanged
    );
    assert!(
        events.try_recv().is_err(),
        "no event for stale or unchanged writes"
    );
    assert_eq!(store.get_account(&key).await.unwrap(), Some(new.clone()));
    assert!(store.delete_account(&key).await.unwrap());
    let e = events.try_recv().unwrap();
    assert_eq!((e.old.as_ref(), e.new), (Some(&new), None));
    assert!(!store.delete_account(&key).await.unwrap());
    assert!(events.try_recv().is_err());
    assert_eq!(store.get_account(&key).await.unwrap(), None);
    // Equal iat with another jti replaces (nsc can issue two edits within one second).
    let signer = SigningKey::generate(KeyRole::Operator);
    let account = SigningKey::generate(KeyRole::Account);
    let key = account.public_key().as_str().to_owned();
    let a = mint(&signer, &key, 1_000, 0);
    let mut claims = AccountClaims::new_account(&key, "renamed");
    let b = Bytes::from(encode(&mut claims, &signer, 1_000).unwrap());
    assert_eq!(
        store
            .put_account_if_newer(&key, a.clone(), &meta(&a))
            .await
            .unwrap(),
        PutOutcome::Created
    );
    assert!(matches!(
        store
            .put_account_if_newer(&key, b.clone(), &meta(&b))
            .await
            .unwrap(),
        PutOutcome::Replaced { .. }
    ));
}

/// Many concurrent writers of different versions of one key: the highest `iat` wins and no
/// reader ever sees a torn value.
pub async fn concurrent_writers_newest_wins(backend: Arc<dyn Backend>) {
    const WRITERS: usize = 16;
    const PER_WRITER: usize = 64;
    let store = Store::new(backend);
    let signer = SigningKey::generate(KeyRole::Operator);
    let account = SigningKey::generate(KeyRole::Account);
    let key = account.public_key().as_str().to_owned();
    // Distinct iats spread over the writers so every writer both wins and loses races.
    let tokens: Vec<Bytes> = (0..WRITERS * PER_WRITER)
        .map(|i| {
            mint(
                &signer,
                &key,
                1_000_000 + ((i * 7919) % (WRITERS * PER_WRITER)) as i64,
                0,
            )
        })
        .collect();
    let max_iat = 1_000_000 + (WRITERS * PER_WRITER - 1) as i64;
    let tokens = Arc::new(tokens);
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (store, tokens, key) = (store.clone(), tokens.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let mut writes = 0;
            for i in 0..PER_WRITER {
                let t = &tokens[w * PER_WRITER + i];
                store
                    .put_account_if_newer(&key, t.clone(), &meta(t))
                    .await
                    .unwrap();
                writes += 1;
                if let Some(seen) = store.get_account(&key).await.unwrap() {
                    assert!(nas_jwt::decode(&seen).is_ok(), "torn read");
                }
            }
            writes
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert!(total >= 1000);
    let stored = store.get_account(&key).await.unwrap().unwrap();
    assert_eq!(meta(&stored).iat, max_iat, "the newest iat must win");
    assert!(nas_jwt::decode(&stored).is_ok());
    assert_eq!(store.pack_hash().await.unwrap(), xor_of([&stored]));
}

/// list, pack and hash agree; expired JWTs are packed out but hashed in; `max` bounds pack.
pub async fn list_pack_hash(backend: Arc<dyn Backend>) {
    let store = Store::new(backend);
    assert_eq!(store.pack_hash().await.unwrap(), [0u8; 32]);
    let names = [
        "account_a.jwt",
        "account_b.jwt",
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
    let pack = store.pack(None).await.unwrap();
    let mut expected: Vec<(String, Bytes)> = all
        .iter()
        .filter(|t| !meta(t).expired(nas_jwt::unix_now()))
        .map(|t| (sub_of(t), t.clone()))
        .collect();
    expected.sort();
    assert_eq!(pack, expected, "pack = every unexpired account, sorted");
    assert_eq!(pack.len(), 4);
    assert_eq!(
        store.list_accounts().await.unwrap(),
        expected.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>()
    );
    assert_eq!(store.pack(Some(2)).await.unwrap(), expected[..2].to_vec());
    assert_eq!(
        store.pack_hash().await.unwrap(),
        xor_of(&all),
        "hash covers every stored JWT"
    );
    store.delete_account(&sub_of(&all[0])).await.unwrap();
    assert_eq!(store.pack_hash().await.unwrap(), xor_of(&all[1..]));
}

/// Invalid keys are refused before anything is touched; activations are a namespace of their own.
pub async fn keys_and_namespaces(backend: Arc<dyn Backend>) {
    let store = Store::new(backend);
    let b = fixture("account_b.jwt");
    let user = "UDCIBGGGHCJBQPOO4SCJJBHZDR37NQGGCIWMNG2DDAKJ6WMKBMAKXIMO";
    for bad in [
        "foo",
        "../etc/passwd",
        "",
        user,
        &sub_of(&b).to_lowercase(),
        "A/../../x",
        "AAAA\0",
    ] {
        assert!(
            matches!(
                store.put_account_if_newer(bad, b.clone(), &meta(&b)).await,
                Err(StoreError::InvalidKey { .. })
            ),
            "{bad:?}"
        );
        assert!(
            matches!(
                store.get_account(bad).await,
                Err(StoreError::InvalidKey { .. })
            ),
            "{bad:?}"
        );
    }
    assert!(store.pack(None).await.unwrap().is_empty());
    let act = fixture("activation_foo_bar.jwt");
    let hash =
        nas_jwt::activation_hash_id(&nas_jwt::decode(&act).unwrap().into_activation().unwrap().1)
            .unwrap();
    store.put_activation(&hash, act.clone()).await.unwrap();
    assert_eq!(store.get_activation(&hash).await.unwrap(), Some(act));
    assert!(
        store.list_accounts().await.unwrap().is_empty(),
        "activations are not accounts"
    );
    assert!(matches!(
        store.get_activation(&sub_of(&b)).await,
        Err(StoreError::InvalidKey { .. })
    ));
    assert!(matches!(
        store.put_activation("../x", b.clone()).await,
        Err(StoreError::InvalidKey { .. })
    ));
    assert_eq!(
        store
            .get_activation("GDSU3HNZKL7I5NBIY7OOCYKE2HSB3SSYRV7UNGZ5GF6NM5Z7TKUA====")
            .await
            .unwrap(),
        None
    );
}

/// Every check of a writable backend.
pub async fn run_writable(make: impl Fn() -> Arc<dyn Backend>) {
    newer_wins_and_events(make()).await;
    concurrent_writers_newest_wins(make()).await;
    list_pack_hash(make()).await;
    keys_and_namespaces(make()).await;
    let store = Store::new(make());
    assert!(!store.read_only());
    store.backend().health().await.unwrap();
}

/// A read-only backend that already holds `tokens`: serves them, refuses every write.
pub async fn run_read_only(backend: Arc<dyn Backend>, tokens: &[Bytes]) {
    let store = Store::new(backend);
    assert!(store.read_only());
    let by_key: HashMap<String, Bytes> = tokens.iter().map(|t| (sub_of(t), t.clone())).collect();
    for (key, token) in &by_key {
        assert_eq!(
            store.get_account(key).await.unwrap().as_ref(),
            Some(token),
            "{key}"
        );
    }
    let mut keys: Vec<String> = by_key.keys().cloned().collect();
    keys.sort();
    assert_eq!(store.list_accounts().await.unwrap(), keys);
    let t = &tokens[0];
    assert_eq!(
        store
            .put_account_if_newer(&sub_of(t), t.clone(), &meta(t))
            .await,
        Err(StoreError::ReadOnly)
    );
    assert_eq!(
        store.delete_account(&sub_of(t)).await,
        Err(StoreError::ReadOnly)
    );
    assert_eq!(
        store.get_account(&sub_of(t)).await.unwrap().as_ref(),
        Some(t),
        "refused writes change nothing"
    );
    assert_eq!(store.pack_hash().await.unwrap(), xor_of(by_key.values()));
}
