//! The conformance suite against every local backend: memory, directory (flat and sharded),
//! read-only directory, nsc folder; plus the Go store layout and reopening.

mod conformance;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use conformance::{fixture, sub_of};
use nas_store::dir::{account_path, DirBackend, DirOptions};
use nas_store::memory::MemoryBackend;
use nas_store::nsc::NscBackend;
use nas_store::{Backend, Store, TokenMeta};

fn dir_backend(root: &Path, sharded: bool) -> Arc<dyn Backend> {
    Arc::new(
        DirBackend::open(
            root,
            DirOptions {
                sharded,
                read_only: false,
                watch: false,
            },
        )
        .unwrap(),
    )
}

#[tokio::test]
async fn memory_backend_conforms() {
    conformance::run_writable(|| Arc::new(MemoryBackend::new())).await;
}

/// A fresh directory store per call, each in its own subdirectory of `root`.
fn dir_factory(root: &Path, sharded: bool) -> impl Fn() -> Arc<dyn Backend> + '_ {
    let n = std::sync::atomic::AtomicUsize::new(0);
    move || {
        dir_backend(
            &root.join(
                n.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                    .to_string(),
            ),
            sharded,
        )
    }
}

#[tokio::test]
async fn dir_backend_flat_conforms() {
    let tmp = tempfile::tempdir().unwrap();
    conformance::run_writable(dir_factory(tmp.path(), false)).await;
}

#[tokio::test]
async fn dir_backend_sharded_conforms() {
    let tmp = tempfile::tempdir().unwrap();
    conformance::run_writable(dir_factory(tmp.path(), true)).await;
}

fn go_made_tokens() -> Vec<Bytes> {
    [
        "account_a.jwt",
        "account_b.jwt",
        "account_c_new.jwt",
        "account_sys.jwt",
        "v1_account.jwt",
    ]
    .iter()
    .map(|n| fixture(n))
    .collect()
}

/// Writes tokens as the Go server does: `<dir>/<sub>.jwt` or `<dir>/<last 2>/<sub>.jwt`.
fn write_go_store(root: &Path, tokens: &[Bytes], sharded: bool) {
    for t in tokens {
        let path = account_path(root, &sub_of(t), sharded);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, t).unwrap();
    }
}

#[tokio::test]
async fn go_made_store_directories_open_in_both_layouts() {
    let tokens = go_made_tokens();
    for go_sharded in [false, true] {
        for we_shard in [false, true] {
            let tmp = tempfile::tempdir().unwrap();
            write_go_store(tmp.path(), &tokens, go_sharded);
            let store = Store::new(dir_backend(tmp.path(), we_shard));
            for t in &tokens {
                assert_eq!(
                    store.get_account(&sub_of(t)).await.unwrap().as_ref(),
                    Some(t),
                    "go sharded {go_sharded}, ours {we_shard}"
                );
            }
            assert_eq!(store.list_accounts().await.unwrap().len(), tokens.len());
            // A write moves the key to our layout and leaves one copy.
            let new = fixture("account_c_new.jwt");
            let key = sub_of(&new);
            let newer = {
                let signer = nas_jwt::SigningKey::generate(nas_jwt::KeyRole::Operator);
                conformance::mint(&signer, &key, TokenMeta::read(&new).unwrap().iat + 1, 0)
            };
            store
                .put_account_if_newer(&key, newer.clone(), &TokenMeta::read(&newer).unwrap())
                .await
                .unwrap();
            assert!(account_path(tmp.path(), &key, we_shard).exists());
            assert!(!account_path(tmp.path(), &key, !we_shard).exists());
            assert_eq!(store.get_account(&key).await.unwrap(), Some(newer));
        }
    }
}

#[tokio::test]
async fn read_only_dir_serves_refuses_writes_and_sees_outside_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let tokens = go_made_tokens();
    write_go_store(tmp.path(), &tokens, false);
    let backend = Arc::new(
        DirBackend::open(
            tmp.path(),
            DirOptions {
                sharded: false,
                read_only: true,
                watch: true,
            },
        )
        .unwrap(),
    );
    conformance::run_read_only(backend.clone(), &tokens).await;
    assert!(DirBackend::open(
        &tmp.path().join("missing"),
        DirOptions {
            read_only: true,
            ..Default::default()
        }
    )
    .is_err());
    // Another tool writes a file: a change event arrives.
    let store = Store::new(backend);
    let mut events = store.subscribe();
    let e = fixture("account_e_expired.jwt");
    std::fs::write(tmp.path().join(format!("{}.jwt", sub_of(&e))), &e).unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let ev = events.recv().await.unwrap();
            if ev.key == sub_of(&e) && ev.new.is_some() {
                return ev;
            }
        }
    })
    .await
    .expect("a change event for the file written by another program");
    assert_eq!(event.new, Some(e));
}

#[tokio::test]
async fn nsc_folder_is_served_read_only() {
    let tmp = tempfile::tempdir().unwrap();
    let op = tmp.path().join("TestOperator");
    std::fs::create_dir_all(op.join("accounts")).unwrap();
    std::fs::write(
        op.join("TestOperator.jwt"),
        fixture("operator_signing_keys.jwt"),
    )
    .unwrap();
    let tokens = go_made_tokens();
    for (i, t) in tokens.iter().enumerate() {
        let name = format!("acc{i}");
        std::fs::create_dir_all(op.join("accounts").join(&name)).unwrap();
        std::fs::write(
            op.join("accounts").join(&name).join(format!("{name}.jwt")),
            t,
        )
        .unwrap();
    }
    let backend = Arc::new(NscBackend::open(&op).unwrap());
    assert_eq!(
        backend.operator_jwt(),
        Some(fixture("operator_signing_keys.jwt"))
    );
    conformance::run_read_only(backend, &tokens).await;
    assert!(
        NscBackend::open(tmp.path()).is_err(),
        "a folder without accounts/ is refused"
    );
}

#[tokio::test]
async fn reopened_dir_store_has_the_same_hash_and_no_temp_files_served() {
    let tmp = tempfile::tempdir().unwrap();
    let tokens = go_made_tokens();
    let store = Store::new(dir_backend(tmp.path(), false));
    for t in &tokens {
        store
            .put_account_if_newer(&sub_of(t), t.clone(), &TokenMeta::read(t).unwrap())
            .await
            .unwrap();
    }
    let hash = store.pack_hash().await.unwrap();
    // A leftover temp file from a crash is never listed or served.
    std::fs::write(
        tmp.path()
            .join(format!(".{}.jwt.1.2.tmp", sub_of(&tokens[0]))),
        b"partial",
    )
    .unwrap();
    let reopened = Store::new(dir_backend(tmp.path(), false));
    assert_eq!(reopened.pack_hash().await.unwrap(), hash);
    assert_eq!(reopened.list_accounts().await.unwrap().len(), tokens.len());
    // Files are private.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(account_path(tmp.path(), &sub_of(&tokens[0]), false))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}
