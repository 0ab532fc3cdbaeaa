//! Time to first answer of a directory store holding 100,000 JWTs (and how long the background
//! PACK-hash scan takes). Run: `cargo bench -p nas-store --bench open_large`.
//! Bounded: generates the files once into a temp dir (removed at the end).

use std::sync::Arc;
use std::time::Instant;

use nas_jwt::{encode, AccountClaims, KeyRole, SigningKey};
use nas_store::dir::{account_path, DirBackend, DirOptions};
use nas_store::Store;

const COUNT: usize = 100_000;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` probes bench binaries with --list.
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let signer = SigningKey::generate(KeyRole::Operator);
    let started = Instant::now();
    let mut last = String::new();
    for i in 0..COUNT {
        let key = SigningKey::generate(KeyRole::Account)
            .public_key()
            .as_str()
            .to_owned();
        let mut claims = AccountClaims::new_account(&key, &format!("acc{i}"));
        let token = encode(&mut claims, &signer, 1_767_225_600).expect("encode");
        std::fs::write(account_path(tmp.path(), &key, false), token).expect("write");
        last = key;
    }
    println!("generated {COUNT} JWT files in {:.1?}", started.elapsed());
    // Drop the page cache effect as far as we can without root tricks: measure both cold-ish
    // (first open after writing) and the scan.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let t0 = Instant::now();
        let store = Store::new(Arc::new(DirBackend::open(tmp.path(), DirOptions::default()).expect("open")));
        let got = store.get_account(&last).await.expect("get");
        let first_answer = t0.elapsed();
        assert!(got.is_some());
        let hash = store.pack_hash().await.expect("hash");
        let scanned = t0.elapsed();
        println!("open + first get with {COUNT} JWTs on disk: {first_answer:.2?}");
        println!("background PACK-hash scan of {COUNT} JWTs finished after: {scanned:.2?} (hash {:02x}{:02x}…)", hash[0], hash[1]);
    });
}
