//! Generates N operator-signed account JWTs for the scale benchmarks (`benches/scale.sh`):
//! fast (one thread per core), and seeded (the same seed gives the same keys and the same
//! bytes, whatever the thread count).
//!
//! ```sh
//! cargo run --release --example gen_accounts -- --count 1000000 --seed 1 --out /tmp/scale
//! ```
//!
//! writes under `--out`:
//!
//! * `operator.jwt` — the operator (with one signing key) that signed every account;
//! * `store/<key>.jwt` — a directory store in the Go layout, unsharded;
//! * `www/jwt/v1/accounts/<key>` — the same files as hard links, so nginx serves them at the
//!   server's URL path from the same inodes (the same page cache, no extra disk);
//! * `keys.txt` — the account keys, one per line, in generation order.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use nas_jwt::{encode, AccountClaims, KeyRole, OperatorClaims, SigningKey};
use rand::{RngCore, SeedableRng};

/// The `iat` of every generated JWT (fixed, so a seed always yields the same bytes).
const ISSUED_AT: i64 = 1_780_000_000;

#[derive(Parser)]
#[command(about = "Writes N operator-signed account JWTs as a dir store and as nginx files")]
struct Args {
    /// How many accounts.
    #[arg(long)]
    count: usize,
    /// Seed of every key.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output directory (created; must not hold a store already).
    #[arg(long)]
    out: PathBuf,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

/// The raw 32 seed bytes of key number `index` of a run with `seed` (index `u64::MAX` is the
/// operator's identity, `u64::MAX - 1` its signing key).
fn raw_seed(seed: u64, index: u64) -> [u8; 32] {
    let mut rng =
        rand::rngs::StdRng::seed_from_u64(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut raw = [0u8; 32];
    rng.fill_bytes(&mut raw);
    raw
}

fn signing_key(seed: u64, index: u64, role: KeyRole) -> Result<SigningKey, String> {
    let kind = match role {
        KeyRole::Operator => nkeys::KeyPairType::Operator,
        _ => nkeys::KeyPairType::Account,
    };
    let pair =
        nkeys::KeyPair::new_from_raw(kind, raw_seed(seed, index)).map_err(|e| e.to_string())?;
    let text = pair.seed().map_err(|e| e.to_string())?;
    SigningKey::from_seed(&text, role).map_err(|e| e.to_string())
}

/// The account public key of number `index` (only the public half is needed: the operator signs).
fn account_key(seed: u64, index: u64) -> Result<String, String> {
    let pair = nkeys::KeyPair::new_from_raw(nkeys::KeyPairType::Account, raw_seed(seed, index))
        .map_err(|e| e.to_string())?;
    Ok(pair.public_key())
}

/// Writes the operator JWT and returns its signing key.
fn write_operator(args: &Args) -> Result<SigningKey, String> {
    let identity = signing_key(args.seed, u64::MAX, KeyRole::Operator)?;
    let signer = signing_key(args.seed, u64::MAX - 1, KeyRole::Operator)?;
    let mut claims = OperatorClaims::new(identity.public_key().as_str(), "ScaleOperator");
    claims.nats.signing_keys = vec![signer.public_key().as_str().to_owned()];
    let jwt = encode(&mut claims, &identity, ISSUED_AT).map_err(|e| e.to_string())?;
    fs::write(args.out.join("operator.jwt"), jwt).map_err(|e| e.to_string())?;
    Ok(signer)
}

/// Signs and writes accounts `range` (store file + nginx hard link); returns their keys.
fn write_range(
    args: &Args,
    signer: &SigningKey,
    range: std::ops::Range<usize>,
) -> Result<Vec<String>, String> {
    let (store, www) = (args.out.join("store"), args.out.join("www/jwt/v1/accounts"));
    let mut keys = Vec::with_capacity(range.len());
    for index in range {
        let key = account_key(args.seed, index as u64)?;
        let mut claims = AccountClaims::new_account(&key, &format!("account-{index}"));
        let jwt = encode(&mut claims, signer, ISSUED_AT).map_err(|e| e.to_string())?;
        let file = store.join(format!("{key}.jwt"));
        fs::write(&file, jwt).map_err(|e| format!("{}: {e}", file.display()))?;
        fs::hard_link(&file, www.join(&key)).map_err(|e| format!("{}: {e}", file.display()))?;
        keys.push(key);
    }
    Ok(keys)
}

fn run(args: &Args) -> Result<(), String> {
    for dir in [args.out.join("store"), args.out.join("www/jwt/v1/accounts")] {
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let signer = write_operator(args)?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let chunk = args.count.div_ceil(threads).max(1);
    let started = Instant::now();
    let parts: Vec<Result<Vec<String>, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..args.count)
            .step_by(chunk)
            .map(|start| {
                let range = start..(start + chunk).min(args.count);
                let signer = &signer;
                scope.spawn(move || write_range(args, signer, range))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a worker panicked".into())))
            .collect()
    });
    write_keys(&args.out.join("keys.txt"), parts)?;
    eprintln!(
        "{} accounts in {:.1} s ({threads} threads) under {}",
        args.count,
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}

fn write_keys(path: &Path, parts: Vec<Result<Vec<String>, String>>) -> Result<(), String> {
    let mut out = std::io::BufWriter::new(fs::File::create(path).map_err(|e| e.to_string())?);
    for part in parts {
        for key in part? {
            writeln!(out, "{key}").map_err(|e| e.to_string())?;
        }
    }
    out.flush().map_err(|e| e.to_string())
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("gen_accounts: {e}");
        std::process::exit(1);
    }
}
