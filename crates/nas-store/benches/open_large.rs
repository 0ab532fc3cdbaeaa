//! Time to first answer of a directory store holding 100,000 JWTs, in each way it can be
//! opened, and how long the background PACK-hash scan and a full pack take.
//! Run: `cargo bench -p nas-store --bench open_large` (prints figures; about a minute).
//! The files are generated once into a temp dir (the sharded copy is hard links) and removed
//! at the end.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nas_jwt::{encode, AccountClaims, KeyRole, SigningKey};
use nas_store::dir::{account_path, DirBackend, DirOptions};
use nas_store::Store;

const COUNT: usize = 100_000;

fn measure(rt: &tokio::runtime::Runtime, label: &str, root: &Path, options: DirOptions, key: &str) {
    rt.block_on(async {
        let t0 = Instant::now();
        let backend = DirBackend::open(root, options).expect("open");
        let opened = t0.elapsed();
        let store = Store::new(Arc::new(backend));
        let got = store.get_account(key).await.expect("get");
        let first_answer = t0.elapsed();
        assert!(got.is_some());
        let hash = store.pack_hash().await.expect("hash");
        let scanned = t0.elapsed();
        let t1 = Instant::now();
        let pack = store.pack(None).await.expect("pack");
        let packed = t1.elapsed();
        assert_eq!(pack.len(), COUNT);
        println!(
            "{label:<28} open {:>9} | open + first get {:>9} | hash scan done {:>9} | full pack {:>9} (hash {:02x}{:02x}…)",
            fmt(opened), fmt(first_answer), fmt(scanned), fmt(packed), hash[0], hash[1]
        );
    });
}

fn fmt(d: Duration) -> String {
    format!("{d:.2?}")
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` probes bench binaries with --list.
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let (flat, sharded) = (tmp.path().join("flat"), tmp.path().join("sharded"));
    std::fs::create_dir_all(&flat).expect("mkdir");
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
        let path = account_path(&flat, &key, false);
        std::fs::write(&path, token).expect("write");
        let shard = account_path(&sharded, &key, true);
        std::fs::create_dir_all(shard.parent().expect("parent")).expect("mkdir");
        std::fs::hard_link(&path, &shard).expect("link");
        last = key;
    }
    println!(
        "generated {COUNT} JWT files (+ sharded hard links) in {:.1?}",
        started.elapsed()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    measure(&rt, "flat, writable", &flat, DirOptions::default(), &last);
    measure(
        &rt,
        "sharded, writable",
        &sharded,
        DirOptions {
            sharded: true,
            ..DirOptions::default()
        },
        &last,
    );
    measure(
        &rt,
        "flat, read-only + watch",
        &flat,
        DirOptions {
            read_only: true,
            watch: true,
            ..DirOptions::default()
        },
        &last,
    );
    measure(
        &rt,
        "sharded, read-only + watch",
        &sharded,
        DirOptions {
            sharded: true,
            read_only: true,
            watch: true,
        },
        &last,
    );
}
