//! Crash safety of the directory store: a writer process is killed with SIGKILL in the middle of
//! a write storm; every write it acknowledged is on disk afterwards and no file is torn.
//!
//! The test re-runs its own binary as the writer (selected by an environment variable), so the
//! writer is a real separate process that dies without any cleanup.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use bytes::Bytes;
use nas_jwt::{encode, AccountClaims, KeyRole, SigningKey};
use nas_store::dir::{DirBackend, DirOptions};
use nas_store::{Store, TokenMeta};

const WRITER_ENV: &str = "NAS_STORE_CRASH_WRITER_DIR";
const TEST_NAME: &str = "sigkill_mid_write_storm_loses_no_acknowledged_write";
const KEYS: usize = 8;

/// The writer: endless newer versions of 8 accounts, one `ACK <key> <iat>` line per write that
/// returned successfully.
async fn write_storm(dir: &Path) {
    let store = Store::new(Arc::new(
        DirBackend::open(dir, DirOptions::default()).unwrap(),
    ));
    let signer = SigningKey::generate(KeyRole::Operator);
    let accounts: Vec<String> = (0..KEYS)
        .map(|_| {
            SigningKey::generate(KeyRole::Account)
                .public_key()
                .as_str()
                .to_owned()
        })
        .collect();
    let mut stdout = std::io::stdout();
    for i in 0.. {
        let key = &accounts[i % KEYS];
        let iat = 1_000_000 + i as i64;
        let mut claims = AccountClaims::new_account(key, "storm");
        // Vary the size so a torn write would show as a truncated token.
        claims.nats.description = "x".repeat(i % 2000);
        let token = Bytes::from(encode(&mut claims, &signer, iat).unwrap());
        let meta = TokenMeta::read(&token).unwrap();
        store.put_account_if_newer(key, token, &meta).await.unwrap();
        use std::io::Write;
        writeln!(stdout, "ACK {key} {iat}").unwrap();
        stdout.flush().unwrap();
    }
}

#[tokio::test]
async fn sigkill_mid_write_storm_loses_no_acknowledged_write() {
    if let Ok(dir) = std::env::var(WRITER_ENV) {
        write_storm(Path::new(&dir)).await;
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads", "1"])
        .env(WRITER_ENV, tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut acked: HashMap<String, i64> = HashMap::new();
    let mut lines = stdout.lines();
    let mut count = 0;
    while let Some(Ok(line)) = lines.next() {
        if let Some(rest) = line.strip_prefix("ACK ") {
            let (key, iat) = rest.split_once(' ').unwrap();
            acked.insert(key.to_owned(), iat.parse().unwrap());
            count += 1;
            if count == 400 {
                child.kill().unwrap(); // SIGKILL
                break;
            }
        }
    }
    // Lines written before the kill are still in the pipe.
    for line in lines.map_while(Result::ok) {
        if let Some(rest) = line.strip_prefix("ACK ") {
            let (key, iat) = rest.split_once(' ').unwrap();
            acked.insert(key.to_owned(), iat.parse().unwrap());
        }
    }
    child.wait().unwrap();
    assert_eq!(acked.len(), KEYS);

    let store = Store::new(Arc::new(
        DirBackend::open(tmp.path(), DirOptions::default()).unwrap(),
    ));
    for (key, iat) in &acked {
        let stored = store
            .get_account(key)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged {key} missing"));
        let meta = TokenMeta::read(&stored).unwrap();
        assert!(
            meta.iat >= *iat,
            "{key}: stored iat {} < acknowledged {iat}",
            meta.iat
        );
    }
    // No torn file anywhere: every .jwt file decodes and verifies.
    let mut files = 0;
    for entry in std::fs::read_dir(tmp.path()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".jwt") {
            let bytes = std::fs::read(entry.path()).unwrap();
            assert!(nas_jwt::decode(&bytes).is_ok(), "{name} is torn");
            files += 1;
        }
    }
    assert_eq!(files, KEYS);
    assert_eq!(
        store.list_accounts().await.unwrap().len(),
        KEYS,
        "leftover temp files are not listed"
    );
}
