//! The conformance suite against every local backend (memory, frozen memory, directory flat and
//! sharded, read-only watched directory, nsc folder), plus what only some backends have: the Go
//! store layouts, watching, crash leftovers, nsc folder resolution, scan retry and resync.

mod conformance;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use conformance::{fixture, meta, mint, sub_of, xor_of};
use futures::stream::BoxStream;
use nas_jwt::{KeyRole, SigningKey};
use nas_store::dir::{account_path, DirBackend, DirOptions};
use nas_store::memory::MemoryBackend;
use nas_store::nsc::NscBackend;
use nas_store::{
    Backend, ChangeEvent, Namespace, Precondition, Store, StoreError, Version, EXTERNAL_RESYNC,
};
use tokio::sync::broadcast;

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

fn read_only_watched(root: &Path, sharded: bool) -> Arc<DirBackend> {
    Arc::new(
        DirBackend::open(
            root,
            DirOptions {
                sharded,
                read_only: true,
                watch: true,
            },
        )
        .unwrap(),
    )
}

/// A factory of fresh directory stores under one temp dir.
fn fresh_dirs(tmp: &Path, sharded: bool) -> impl Fn() -> Arc<dyn Backend> + '_ {
    let n = AtomicUsize::new(0);
    move || {
        let i = n.fetch_add(1, Ordering::SeqCst);
        dir_backend(&tmp.join(i.to_string()), sharded)
    }
}

fn go_made_tokens() -> Vec<Bytes> {
    [
        "account_a.jwt",
        "account_b.jwt",
        "account_c_new.jwt",
        "account_sys.jwt",
        "account_e_expired.jwt",
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

/// Every file and directory under `root`, relative.
fn tree(root: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            out.push(e.path().strip_prefix(root).unwrap().to_owned());
            if e.file_type().unwrap().is_dir() {
                walk(root, &e.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// The next event for `key`, waiting up to 10 s.
async fn next_event_for(events: &mut broadcast::Receiver<ChangeEvent>, key: &str) -> ChangeEvent {
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

/// A fresh account JWT to write as a sentinel change.
fn sentinel_token() -> Bytes {
    let key = conformance::new_account_key();
    mint(&SigningKey::generate(KeyRole::Operator), &key, 1_000, 0)
}

/// Nothing else happened (watchers can report one write several times): writes a sentinel
/// change with `write` and waits for its event; any event before it, except those for earlier
/// sentinels (whose duplicates may trail), fails the test. No sleeping: the sentinel's event
/// proves the watcher has seen everything written before it.
async fn assert_quiet<Fut: std::future::Future<Output = ()>>(
    events: &mut broadcast::Receiver<ChangeEvent>,
    sentinels: &mut Vec<Bytes>,
    write: impl FnOnce(Bytes) -> Fut,
) {
    let token = sentinel_token();
    let key = sub_of(&token);
    write(token.clone()).await;
    let mut extra = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let e = events.recv().await.unwrap();
            if e.key == key {
                return;
            }
            if !sentinels.iter().any(|t| sub_of(t) == e.key) {
                extra.push(e);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the sentinel write was never reported"));
    sentinels.push(token);
    assert!(extra.is_empty(), "unexpected events: {extra:?}");
}

// ---- the conformance suite, once per backend ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_backend_conforms() {
    conformance::run_all_sync(|| Arc::new(MemoryBackend::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dir_backend_flat_conforms() {
    let tmp = tempfile::tempdir().unwrap();
    conformance::run_all_sync(fresh_dirs(tmp.path(), false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dir_backend_sharded_conforms() {
    let tmp = tempfile::tempdir().unwrap();
    conformance::run_all_sync(fresh_dirs(tmp.path(), true)).await;
}

#[tokio::test]
async fn frozen_memory_backend_conforms_read_only() {
    let tokens = go_made_tokens();
    let backend = MemoryBackend::new_read_only(tokens.iter().map(|t| (sub_of(t), t.clone())));
    conformance::run_read_only(Arc::new(backend), &tokens).await;
}

#[tokio::test]
async fn read_only_dir_conforms_and_creates_nothing() {
    for sharded in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let tokens = go_made_tokens();
        write_go_store(tmp.path(), &tokens, sharded);
        let before = tree(tmp.path());
        conformance::run_read_only(read_only_watched(tmp.path(), sharded), &tokens).await;
        assert_eq!(tree(tmp.path()), before, "a read-only store writes nothing");
    }
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    let err = DirBackend::open(
        &missing,
        DirOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(!missing.exists(), "read-only never creates the directory");
}

/// An nsc operator folder as nsc lays it out.
fn nsc_folder(parent: &Path, operator: &str, tokens: &[Bytes]) -> PathBuf {
    let op = parent.join(operator);
    std::fs::create_dir_all(op.join("accounts")).unwrap();
    std::fs::write(op.join(".nsc"), b"{}").unwrap();
    std::fs::write(
        op.join(format!("{operator}.jwt")),
        fixture("operator_signing_keys.jwt"),
    )
    .unwrap();
    for (i, t) in tokens.iter().enumerate() {
        write_nsc_account(&op, &format!("acc{i}"), t);
    }
    op
}

fn write_nsc_account(op: &Path, name: &str, token: &[u8]) {
    let dir = op.join("accounts").join(name);
    std::fs::create_dir_all(dir.join("users")).unwrap();
    std::fs::write(dir.join(format!("{name}.jwt")), token).unwrap();
}

#[tokio::test]
async fn nsc_folder_conforms_read_only() {
    let tmp = tempfile::tempdir().unwrap();
    let tokens = go_made_tokens();
    let op = nsc_folder(tmp.path(), "TestOperator", &tokens);
    let backend = Arc::new(NscBackend::open(&op).unwrap());
    let operator = std::fs::read(nas_store::nsc::operator_jwt_path(&op).unwrap()).unwrap();
    assert_eq!(
        nas_jwt::creds::extract_jwt(&String::from_utf8_lossy(&operator)).as_bytes(),
        fixture("operator_signing_keys.jwt")
    );
    conformance::run_read_only(backend, &tokens).await;

    // The nsc store directory (`<home>/stores` or the directory holding it) works when it holds
    // one operator; with two it must be named.
    let home = tempfile::tempdir().unwrap();
    let stores = home.path().join("stores");
    nsc_folder(&stores, "Only", &tokens[..1]);
    for path in [home.path(), stores.as_path()] {
        let backend = NscBackend::open(path).unwrap();
        assert_eq!(backend.folder(), stores.join("Only"));
        let store = Store::new(Arc::new(backend));
        assert_eq!(
            store.list_accounts().await.unwrap(),
            vec![sub_of(&tokens[0])]
        );
    }
    nsc_folder(&stores, "Second", &tokens[1..2]);
    let err = NscBackend::open(home.path()).unwrap_err().to_string();
    assert!(err.contains("Only") && err.contains("Second"), "{err}");
    let empty = tempfile::tempdir().unwrap();
    assert!(NscBackend::open(empty.path()).is_err());
    assert!(NscBackend::open(&empty.path().join("missing")).is_err());
}

// ---- the Go store directory ----

#[tokio::test]
async fn go_made_store_directories_open_in_both_layouts() {
    let tokens = go_made_tokens();
    for go_sharded in [false, true] {
        for we_shard in [false, true] {
            let tmp = tempfile::tempdir().unwrap();
            write_go_store(tmp.path(), &tokens, go_sharded);
            // What nats-server's full resolver and a crash can leave next to the JWTs.
            let deleted = fixture("account_f_not_yet_valid.jwt");
            std::fs::write(
                tmp.path().join(format!("{}.jwt.deleted", sub_of(&deleted))),
                &deleted,
            )
            .unwrap();
            std::fs::write(tmp.path().join("README.txt"), b"not a jwt").unwrap();
            let store = Store::new(dir_backend(tmp.path(), we_shard));
            for t in &tokens {
                assert_eq!(
                    store.get_account(&sub_of(t)).await.unwrap().as_ref(),
                    Some(t),
                    "go sharded {go_sharded}, ours {we_shard}"
                );
            }
            assert_eq!(store.get_account(&sub_of(&deleted)).await.unwrap(), None);
            assert_eq!(store.pack_hash().await.unwrap(), xor_of(&tokens));
            let mut keys: Vec<String> = tokens
                .iter()
                .filter(|t| !meta(t).expired(nas_jwt::unix_now()))
                .map(|t| sub_of(t))
                .collect();
            keys.sort();
            assert_eq!(store.list_accounts().await.unwrap(), keys);
            // A write moves the key to our layout and leaves one copy.
            let key = sub_of(&tokens[2]);
            let signer = SigningKey::generate(KeyRole::Operator);
            let newer = mint(&signer, &key, meta(&tokens[2]).iat + 1, 0);
            store
                .put_account_if_newer(&key, newer.clone(), &meta(&newer))
                .await
                .unwrap();
            assert!(account_path(tmp.path(), &key, we_shard).exists());
            assert!(!account_path(tmp.path(), &key, !we_shard).exists());
            assert_eq!(store.get_account(&key).await.unwrap(), Some(newer));
            // A delete removes the key from both layouts.
            let other = sub_of(&tokens[0]);
            std::fs::copy(account_path(tmp.path(), &other, go_sharded), {
                let p = account_path(tmp.path(), &other, !go_sharded);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                p
            })
            .unwrap();
            assert!(store.delete_account(&other).await.unwrap());
            assert_eq!(store.get_account(&other).await.unwrap(), None);
        }
    }
}

#[tokio::test]
async fn go_v08_activation_files_are_found_and_moved() {
    let act = fixture("activation_foo_bar.jwt");
    let hash =
        nas_jwt::activation_hash_id(&nas_jwt::decode(&act).unwrap().into_activation().unwrap().1)
            .unwrap();
    for legacy in [
        PathBuf::from(format!("{hash}.jwt")),
        PathBuf::from(format!("==/{hash}.jwt")),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(&legacy);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &act).unwrap();
        let store = Store::new(dir_backend(tmp.path(), true));
        assert_eq!(
            store.get_activation(&hash).await.unwrap(),
            Some(act.clone())
        );
        assert!(store.list_accounts().await.unwrap().is_empty());
        assert_eq!(store.pack_hash().await.unwrap(), [0u8; 32]);
        let newer = fixture("activation_foo_star.jwt");
        store.put_activation(&hash, newer.clone()).await.unwrap();
        assert!(!path.exists(), "the legacy copy is gone after a rewrite");
        assert!(tmp
            .path()
            .join("activations")
            .join(format!("{hash}.jwt"))
            .exists());
        assert_eq!(store.get_activation(&hash).await.unwrap(), Some(newer));
    }
}

#[tokio::test]
async fn dir_files_are_private_and_crash_leftovers_are_never_served() {
    for sharded in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("store");
        let tokens = go_made_tokens();
        let store = Store::new(dir_backend(&root, sharded));
        for t in &tokens {
            store
                .put_account_if_newer(&sub_of(t), t.clone(), &meta(t))
                .await
                .unwrap();
        }
        let hash = store.pack_hash().await.unwrap();
        let mode = |p: &Path| {
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
                & 0o777
        };
        let file = account_path(&root, &sub_of(&tokens[0]), sharded);
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(file.parent().unwrap()), 0o700);
        // Temp files left by a crash: an old one and one a live writer could still own.
        let dir = root.join(nas_store::dir::TEMP_DIR);
        assert!(
            dir.is_dir(),
            "writes stage their temp files in {}",
            dir.display()
        );
        let old_temp = dir.join(format!(".{}.jwt.1.2.tmp", sub_of(&tokens[0])));
        let new_temp = dir.join(format!(".{}.jwt.1.3.tmp", sub_of(&tokens[1])));
        for p in [&old_temp, &new_temp] {
            std::fs::write(p, b"partial").unwrap();
        }
        std::fs::File::options()
            .write(true)
            .open(&old_temp)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
        let reopened = Store::new(dir_backend(&root, sharded));
        assert_eq!(reopened.pack_hash().await.unwrap(), hash);
        assert_eq!(
            reopened.list_accounts().await.unwrap().len(),
            tokens.len() - 1
        );
        for t in &tokens {
            assert_eq!(
                reopened.get_account(&sub_of(t)).await.unwrap().as_ref(),
                Some(t)
            );
        }
        assert!(
            !old_temp.exists(),
            "an old temp file is swept when the store is opened"
        );
        assert!(new_temp.exists(), "a fresh temp file is left alone");
    }
}

// ---- watching ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_dir_reports_each_outside_change_once() {
    for sharded in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let tokens = go_made_tokens();
        write_go_store(tmp.path(), &tokens[..2], sharded);
        let store = Store::new(read_only_watched(tmp.path(), sharded));
        let mut events = store.subscribe();
        store.pack_hash().await.unwrap();

        // Another tool creates a file (in a shard directory that does not exist yet).
        let created = &tokens[3];
        let key = sub_of(created);
        write_go_store(tmp.path(), std::slice::from_ref(created), sharded);
        let e = next_event_for(&mut events, &key).await;
        assert_eq!((e.new.as_ref(), e.external), (Some(created), true));
        let mut sentinels = Vec::new();
        let dir = tmp.path().to_owned();
        let sentinel = |t: Bytes| {
            write_go_store(&dir, std::slice::from_ref(&t), sharded);
            std::future::ready(())
        };
        assert_quiet(&mut events, &mut sentinels, sentinel).await;

        // ... rewrites it in place (non-atomically, like the Go server) ...
        let newer = mint(
            &SigningKey::generate(KeyRole::Operator),
            &key,
            meta(created).iat + 1,
            0,
        );
        std::fs::write(account_path(tmp.path(), &key, sharded), &newer).unwrap();
        let e = next_event_for(&mut events, &key).await;
        assert_eq!(e.new.as_ref(), Some(&newer));
        assert_quiet(&mut events, &mut sentinels, sentinel).await;
        assert_eq!(store.get_account(&key).await.unwrap(), Some(newer.clone()));

        // ... and deletes one.
        let gone = sub_of(&tokens[0]);
        std::fs::remove_file(account_path(tmp.path(), &gone, sharded)).unwrap();
        let e = next_event_for(&mut events, &gone).await;
        assert_eq!(e.new, None);
        assert_quiet(&mut events, &mut sentinels, sentinel).await;
        assert_eq!(
            store.pack_hash().await.unwrap(),
            xor_of([&tokens[1], &newer].into_iter().chain(&sentinels))
        );

        // A whole shard directory moved in is picked up too (its files were never reported).
        if sharded {
            let staging = tmp
                .path()
                .join("..")
                .join(format!("staging-{}", std::process::id()));
            let moved = &tokens[4];
            write_go_store(&staging, std::slice::from_ref(moved), true);
            let shard = account_path(Path::new(""), &sub_of(moved), true)
                .parent()
                .unwrap()
                .to_owned();
            std::fs::rename(staging.join(&shard), tmp.path().join(&shard)).unwrap();
            let _ = std::fs::remove_dir_all(&staging);
            let e = next_event_for(&mut events, &sub_of(moved)).await;
            assert_eq!(e.new.as_ref(), Some(moved));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nsc_rewrites_and_new_accounts_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let tokens = go_made_tokens();
    let op = nsc_folder(tmp.path(), "Op", &tokens[..2]);
    let store = Store::new(Arc::new(NscBackend::open(&op).unwrap()));
    let mut events = store.subscribe();
    store.pack_hash().await.unwrap();

    // nsc edits account 0: same file, newer JWT.
    let key = sub_of(&tokens[0]);
    let newer = mint(
        &SigningKey::generate(KeyRole::Operator),
        &key,
        meta(&tokens[0]).iat + 1,
        0,
    );
    write_nsc_account(&op, "acc0", &newer);
    let e = next_event_for(&mut events, &key).await;
    assert_eq!((e.new.as_ref(), e.external), (Some(&newer), true));
    let mut sentinels = Vec::new();
    let mut n = 0;
    let mut sentinel = |t: Bytes| {
        n += 1;
        write_nsc_account(&op, &format!("sentinel{n}"), &t);
        std::future::ready(())
    };
    assert_quiet(&mut events, &mut sentinels, &mut sentinel).await;
    assert_eq!(store.get_account(&key).await.unwrap(), Some(newer.clone()));

    // nsc adds an account (new directory, then the JWT in it).
    let added = &tokens[3];
    write_nsc_account(&op, "added", added);
    let e = next_event_for(&mut events, &sub_of(added)).await;
    assert_eq!(e.new.as_ref(), Some(added));
    assert_eq!(
        store.get_account(&sub_of(added)).await.unwrap().as_ref(),
        Some(added)
    );

    // A user JWT changing is not an account change.
    std::fs::write(op.join("accounts/acc1/users/u.jwt"), fixture("user_a.jwt")).unwrap();
    assert_quiet(&mut events, &mut sentinels, &mut sentinel).await;

    // nsc deletes an account.
    std::fs::remove_dir_all(op.join("accounts").join("acc1")).unwrap();
    let e = next_event_for(&mut events, &sub_of(&tokens[1])).await;
    assert_eq!(e.new, None);
    assert_eq!(store.get_account(&sub_of(&tokens[1])).await.unwrap(), None);
    assert_eq!(
        store.pack_hash().await.unwrap(),
        xor_of([&newer, added].into_iter().chain(&sentinels))
    );
}

// ---- the policy layer's background work, against a scripted backend ----

/// Memory underneath; `list` fails while `failing_lists` > 0; external changes are sent by hand
/// through a tiny channel (so a receiver lags easily).
#[derive(Debug)]
struct Scripted {
    inner: MemoryBackend,
    failing_lists: AtomicUsize,
    changes: broadcast::Sender<String>,
}

impl Scripted {
    fn new(failing_lists: usize) -> Arc<Scripted> {
        Arc::new(Scripted {
            inner: MemoryBackend::new(),
            failing_lists: AtomicUsize::new(failing_lists),
            changes: broadcast::channel(1).0,
        })
    }
}

#[async_trait::async_trait]
impl Backend for Scripted {
    fn kind(&self) -> &'static str {
        "scripted"
    }
    async fn get(&self, ns: Namespace, key: &str) -> Result<Option<(Bytes, Version)>, StoreError> {
        self.inner.get(ns, key).await
    }
    async fn put(
        &self,
        ns: Namespace,
        key: &str,
        value: Bytes,
        pre: Precondition,
    ) -> Result<Version, StoreError> {
        self.inner.put(ns, key, value, pre).await
    }
    async fn delete(
        &self,
        ns: Namespace,
        key: &str,
        expected: Option<&Version>,
    ) -> Result<bool, StoreError> {
        self.inner.delete(ns, key, expected).await
    }
    async fn list(
        &self,
        ns: Namespace,
    ) -> Result<BoxStream<'static, Result<String, StoreError>>, StoreError> {
        if self
            .failing_lists
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::Unavailable("scripted outage".into()));
        }
        self.inner.list(ns).await
    }
    async fn health(&self) -> Result<(), StoreError> {
        Ok(())
    }
    fn external_changes(&self) -> Option<broadcast::Receiver<String>> {
        Some(self.changes.subscribe())
    }
}

#[tokio::test]
async fn hash_scan_failure_is_unavailable_then_retried() {
    let backend = Scripted::new(1);
    let t = fixture("account_a.jwt");
    backend
        .inner
        .put(
            Namespace::Accounts,
            &sub_of(&t),
            t.clone(),
            Precondition::Any,
        )
        .await
        .unwrap();
    let store = Store::new(backend);
    assert!(matches!(
        store.pack_hash().await,
        Err(StoreError::Unavailable(_))
    ));
    let hash = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(h) = store.pack_hash().await {
                return h;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the scan is retried");
    assert_eq!(hash, xor_of([&t]));
}

#[tokio::test]
async fn missed_external_changes_are_found_by_a_resync() {
    let backend = Scripted::new(0);
    let (a, b, c) = (
        fixture("account_a.jwt"),
        fixture("account_b.jwt"),
        fixture("account_sys.jwt"),
    );
    let put = |t: &Bytes| {
        let (backend, t) = (backend.clone(), t.clone());
        async move {
            backend
                .inner
                .put(Namespace::Accounts, &sub_of(&t), t, Precondition::Any)
                .await
                .unwrap()
        }
    };
    put(&a).await;
    let store = Store::new(backend.clone());
    let mut events = store.subscribe();
    assert_eq!(store.pack_hash().await.unwrap(), xor_of([&a]));

    // Behind the store's back: b appears, a goes; then an explicit "you missed things".
    put(&b).await;
    backend
        .inner
        .delete(Namespace::Accounts, &sub_of(&a), None)
        .await
        .unwrap();
    backend.changes.send(EXTERNAL_RESYNC.to_owned()).unwrap();
    let mut seen = std::collections::HashMap::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while seen.len() < 2 {
            let e = events.recv().await.unwrap();
            assert!(
                seen.insert(e.key.clone(), e).is_none(),
                "one event per change"
            );
        }
    })
    .await
    .expect("events for both differences");
    let (eb, ea) = (&seen[&sub_of(&b)], &seen[&sub_of(&a)]);
    assert_eq!((eb.new.as_ref(), eb.external), (Some(&b), true));
    assert_eq!((ea.new.as_ref(), ea.external), (None, true));
    assert_eq!(store.pack_hash().await.unwrap(), xor_of([&b]));

    // The change channel overflows before the store reads it: the lag triggers a resync.
    put(&c).await;
    for key in ["x", "y", "z"] {
        backend.changes.send(key.to_owned()).unwrap();
    }
    let e = next_event_for(&mut events, &sub_of(&c)).await;
    assert_eq!(e.new.as_ref(), Some(&c));
    assert_eq!(store.pack_hash().await.unwrap(), xor_of([&b, &c]));
    // A repeated report of an unchanged key is dropped.
    backend.changes.send(sub_of(&c)).unwrap();
    let changes = backend.changes.clone();
    let announce = |t: Bytes| {
        let written = put(&t);
        async move {
            written.await;
            changes.send(sub_of(&t)).unwrap();
        }
    };
    assert_quiet(&mut events, &mut Vec::new(), announce).await;
}
