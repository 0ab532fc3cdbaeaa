//! Store get/put per backend, through the policy layer (`Store`) and at the raw `Backend`.
//! Run: `cargo bench -p nas-store --bench store` (about a minute on 2 cores).
//!
//! Each measurement loops inside one task on the runtime's workers, as a server handler calls
//! the store (a `block_on` per call would mostly measure waking threads).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use nas_jwt::{encode, AccountClaims, KeyRole, SigningKey};
use nas_store::dir::{DirBackend, DirOptions};
use nas_store::memory::MemoryBackend;
use nas_store::{Backend, Namespace, PutOutcome, Store, TokenMeta};
use tokio::runtime::Runtime;

/// Runs `op` `iters` times in a task on a worker and returns the time taken.
fn timed<F, Fut>(rt: &Runtime, iters: u64, op: F) -> Duration
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    rt.block_on(rt.spawn(async move {
        let t = Instant::now();
        for _ in 0..iters {
            op().await;
        }
        t.elapsed()
    }))
    .expect("bench task")
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let signer = SigningKey::generate(KeyRole::Operator);
    let new_key = || -> Arc<str> {
        SigningKey::generate(KeyRole::Account)
            .public_key()
            .as_str()
            .into()
    };
    let (key, missing) = (new_key(), new_key());
    // Equal iat, different jti: each replaces the other, so alternating them makes every put a
    // real write (newer-wins accepts an equal iat).
    let pair: Arc<Vec<(Bytes, TokenMeta)>> = Arc::new(
        ["a", "b"]
            .iter()
            .map(|name| {
                let mut claims = AccountClaims::new_account(&key, name);
                let token =
                    Bytes::from(encode(&mut claims, &signer, 1_767_225_600).expect("encode"));
                let meta = TokenMeta::read(&token).expect("meta");
                (token, meta)
            })
            .collect(),
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = |name: &str, sharded: bool| -> Arc<dyn Backend> {
        Arc::new(
            DirBackend::open(
                &tmp.path().join(name),
                DirOptions {
                    sharded,
                    ..DirOptions::default()
                },
            )
            .expect("dir"),
        )
    };
    let backends: Vec<(&str, Arc<dyn Backend>)> = vec![
        ("memory", Arc::new(MemoryBackend::new())),
        ("dir", dir("flat", false)),
        ("dir_sharded", dir("sharded", true)),
    ];
    let mut group = c.benchmark_group("store");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    for (name, backend) in backends {
        let store = rt.block_on(async { Store::new(backend.clone()) });
        let (token, meta) = &pair[0];
        rt.block_on(store.put_account_if_newer(&key, token.clone(), meta))
            .expect("put");
        group.bench_function(format!("get/{name}"), |b| {
            b.iter_custom(|iters| {
                let (store, key) = (store.clone(), key.clone());
                timed(&rt, iters, move || {
                    let (store, key) = (store.clone(), key.clone());
                    async move {
                        assert!(store.get_account(&key).await.expect("get").is_some());
                    }
                })
            })
        });
        group.bench_function(format!("get_missing/{name}"), |b| {
            b.iter_custom(|iters| {
                let (store, key) = (store.clone(), missing.clone());
                timed(&rt, iters, move || {
                    let (store, key) = (store.clone(), key.clone());
                    async move {
                        assert!(store.get_account(&key).await.expect("get").is_none());
                    }
                })
            })
        });
        group.bench_function(format!("backend_get/{name}"), |b| {
            b.iter_custom(|iters| {
                let (backend, key) = (backend.clone(), key.clone());
                timed(&rt, iters, move || {
                    let (backend, key) = (backend.clone(), key.clone());
                    async move {
                        let got = backend.get(Namespace::Accounts, &key).await.expect("get");
                        assert!(got.is_some());
                    }
                })
            })
        });
        // Read, compare, CAS write, hash, event. pair[0] is stored: start with pair[1] and
        // keep alternating across calls.
        let next = Arc::new(AtomicUsize::new(1));
        group.bench_function(format!("put_if_newer/{name}"), |b| {
            b.iter_custom(|iters| {
                let (store, key, pair, next) =
                    (store.clone(), key.clone(), pair.clone(), next.clone());
                timed(&rt, iters, move || {
                    let (store, key, pair) = (store.clone(), key.clone(), pair.clone());
                    let i = next.fetch_add(1, Ordering::Relaxed) % 2;
                    async move {
                        let (token, meta) = &pair[i];
                        let outcome = store
                            .put_account_if_newer(&key, token.clone(), meta)
                            .await
                            .expect("put");
                        assert!(matches!(outcome, PutOutcome::Replaced { .. }));
                    }
                })
            })
        });
        // The refusal path (same jti): one read, no write.
        let stored = rt
            .block_on(store.get_account(&key))
            .expect("get")
            .expect("present");
        let same = Arc::new(
            pair.iter()
                .find(|(t, _)| *t == stored)
                .expect("one of the pair")
                .clone(),
        );
        group.bench_function(format!("put_unchanged/{name}"), |b| {
            b.iter_custom(|iters| {
                let (store, key, same) = (store.clone(), key.clone(), same.clone());
                timed(&rt, iters, move || {
                    let (store, key, same) = (store.clone(), key.clone(), same.clone());
                    async move {
                        let outcome = store
                            .put_account_if_newer(&key, same.0.clone(), &same.1)
                            .await
                            .expect("put");
                        assert_eq!(outcome, PutOutcome::Unchanged);
                    }
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
