//! Store get/put per backend. Run: `cargo bench -p nas-store --bench store`.

use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use nas_jwt::{encode, AccountClaims, KeyRole, SigningKey};
use nas_store::dir::{DirBackend, DirOptions};
use nas_store::memory::MemoryBackend;
use nas_store::{Backend, Store, TokenMeta};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let signer = SigningKey::generate(KeyRole::Operator);
    let account = SigningKey::generate(KeyRole::Account);
    let key = account.public_key().as_str().to_owned();
    let tmp = tempfile::tempdir().expect("tempdir");
    let backends: Vec<(&str, Arc<dyn Backend>)> = vec![
        ("memory", Arc::new(MemoryBackend::new())),
        (
            "dir",
            Arc::new(DirBackend::open(tmp.path(), DirOptions::default()).expect("dir")),
        ),
    ];
    let mut group = c.benchmark_group("store");
    for (name, backend) in backends {
        let store = rt.block_on(async { Store::new(backend) });
        let mut iat = 1_000_000;
        let mut next = || {
            iat += 1;
            let mut claims = AccountClaims::new_account(&key, "bench");
            let token = Bytes::from(encode(&mut claims, &signer, iat).expect("encode"));
            let meta = TokenMeta::read(&token).expect("meta");
            (token, meta)
        };
        let (token, meta) = next();
        rt.block_on(store.put_account_if_newer(&key, token, &meta))
            .expect("put");
        group.bench_function(format!("get/{name}"), |b| {
            b.iter(|| {
                rt.block_on(store.get_account(&key))
                    .expect("get")
                    .expect("present")
            })
        });
        group.bench_function(format!("put_if_newer/{name}"), |b| {
            b.iter_batched(
                &mut next,
                |(token, meta)| {
                    rt.block_on(store.put_account_if_newer(&key, token, &meta))
                        .expect("put")
                },
                criterion::BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
