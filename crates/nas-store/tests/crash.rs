//! Crash safety of the directory store: a writer process is killed with SIGKILL in the middle of
//! a write storm; every write it acknowledged is on disk afterwards, no file is torn, and no temp
//! file is served. Run for both layouts.
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
use sha2::{Digest, Sha256};

const WRITER_DIR: &str = "NAS_STORE_CRASH_WRITER_DIR";
const WRITER_SHARDED: &str = "NAS_STORE_CRASH_WRITER_SHARDED";
const KEYS: usize = 8;
const WRITERS: usize = 4;
/// Acknowledged writes seen before the kill.
const KILL_AFTER: usize = 400;

fn options(sharded: bool) -> DirOptions {
    DirOptions {
        sharded,
        ..DirOptions::default()
    }
}

/// The writer: 4 concurrent tasks writing ever newer versions of 8 accounts, one
/// `ACK <key> <iat>` line per write that returned successfully.
async fn write_storm(dir: &Path, sharded: bool) {
    let store = Store::new(Arc::new(DirBackend::open(dir, options(sharded)).unwrap()));
    let signer = Arc::new(SigningKey::generate(KeyRole::Operator));
    let accounts: Arc<Vec<String>> = Arc::new(
        (0..KEYS)
            .map(|_| {
                SigningKey::generate(KeyRole::Account)
                    .public_key()
                    .as_str()
                    .to_owned()
            })
            .collect(),
    );
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (store, signer, accounts) = (store.clone(), signer.clone(), accounts.clone());
        tasks.push(tokio::spawn(async move {
            for i in (w..).step_by(WRITERS) {
                let key = &accounts[i % KEYS];
                let iat = 1_000_000 + i as i64;
                let mut claims = AccountClaims::new_account(key, "storm");
                // Vary the size so a torn write would show as a truncated token.
                claims.nats.description = "x".repeat(i % 2000);
                let token = Bytes::from(encode(&mut claims, &signer, iat).unwrap());
                let meta = TokenMeta::read(&token).unwrap();
                store.put_account_if_newer(key, token, &meta).await.unwrap();
                // One write(2) per line, so lines never interleave.
                use std::io::Write;
                let line = format!("ACK {key} {iat}\n");
                std::io::stdout().lock().write_all(line.as_bytes()).unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn parse_ack(line: &str) -> Option<(String, i64)> {
    let rest = line.strip_prefix("ACK ")?;
    let (key, iat) = rest.split_once(' ')?;
    Some((key.to_owned(), iat.parse().ok()?))
}

/// Every `.jwt` file under `dir`, recursively, and every temp file.
fn files(dir: &Path, jwts: &mut Vec<std::path::PathBuf>, temps: &mut usize) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().unwrap().is_dir() {
            files(&entry.path(), jwts, temps);
        } else if name.ends_with(".jwt") {
            jwts.push(entry.path());
        } else if name.ends_with(".tmp") {
            *temps += 1;
        }
    }
}

async fn storm_and_kill(test_name: &str, sharded: bool) {
    if let Ok(dir) = std::env::var(WRITER_DIR) {
        write_storm(Path::new(&dir), std::env::var(WRITER_SHARDED).is_ok()).await;
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut writer = Command::new(std::env::current_exe().unwrap());
    writer
        .args(["--exact", test_name, "--nocapture", "--test-threads", "1"])
        .env(WRITER_DIR, tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if sharded {
        writer.env(WRITER_SHARDED, "1");
    }
    let mut child = writer.spawn().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    // Highest acknowledged iat per key.
    let mut acked: HashMap<String, i64> = HashMap::new();
    let mut count = 0;
    let mut lines = stdout.lines();
    for line in lines.by_ref().map_while(Result::ok) {
        if let Some((key, iat)) = parse_ack(&line) {
            let best = acked.entry(key).or_insert(iat);
            *best = (*best).max(iat);
            count += 1;
            if count == KILL_AFTER {
                child.kill().unwrap(); // SIGKILL, mid-storm
                break;
            }
        }
    }
    // Lines written before the kill are still in the pipe: they were acknowledged too.
    for line in lines.map_while(Result::ok) {
        if let Some((key, iat)) = parse_ack(&line) {
            let best = acked.entry(key).or_insert(iat);
            *best = (*best).max(iat);
        }
    }
    let status = child.wait().unwrap();
    assert!(!status.success(), "the writer was killed, not finished");
    assert_eq!(acked.len(), KEYS);

    let store = Store::new(Arc::new(
        DirBackend::open(tmp.path(), options(sharded)).unwrap(),
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
    let (mut jwts, mut temps) = (Vec::new(), 0);
    files(tmp.path(), &mut jwts, &mut temps);
    for path in &jwts {
        let bytes = std::fs::read(path).unwrap();
        assert!(
            nas_jwt::decode(&bytes).is_ok(),
            "{} is torn",
            path.display()
        );
    }
    assert_eq!(jwts.len(), KEYS, "one file per key");
    // Temp files a killed writer may leave behind are neither listed nor hashed.
    let keys = store.list_accounts().await.unwrap();
    assert_eq!(
        keys.len(),
        KEYS,
        "{temps} leftover temp file(s) must not be listed"
    );
    let mut expected = [0u8; 32];
    for key in &keys {
        let bytes = store.get_account(key).await.unwrap().unwrap();
        for (e, d) in expected.iter_mut().zip(Sha256::digest(&bytes)) {
            *e ^= d;
        }
    }
    assert_eq!(store.pack_hash().await.unwrap(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_write_storm_loses_no_acknowledged_write_flat() {
    storm_and_kill(
        "sigkill_mid_write_storm_loses_no_acknowledged_write_flat",
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_write_storm_loses_no_acknowledged_write_sharded() {
    storm_and_kill(
        "sigkill_mid_write_storm_loses_no_acknowledged_write_sharded",
        true,
    )
    .await;
}
