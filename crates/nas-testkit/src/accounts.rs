//! Many operator-signed account JWTs, fast: for benches and scale tests that need a large store.

use std::path::Path;

use nas_jwt::{encode, AccountClaims, KeyRole, OperatorClaims, SigningKey};

/// Issue time of every generated JWT (2026-01-01), so runs differ only in keys.
const IAT: i64 = 1_767_225_600;

/// An operator and accounts it signed.
pub struct SignedAccounts {
    /// The operator JWT that makes the accounts trusted (they are signed by its signing key).
    pub operator_jwt: String,
    /// `(account key, account JWT)`, in no particular order.
    pub accounts: Vec<(String, String)>,
}

/// `count` account JWTs signed by a new operator's signing key, generated on every core at
/// once. Keys are random (nothing depends on their values); each JWT is about 600 bytes.
pub fn signed_accounts(count: usize) -> SignedAccounts {
    let identity = SigningKey::generate(KeyRole::Operator);
    let signing_key = SigningKey::generate(KeyRole::Operator);
    let mut operator = OperatorClaims::new(identity.public_key().as_str(), "bench");
    operator.nats.signing_keys = vec![signing_key.public_key().as_str().to_owned()];
    let operator_jwt = encode(&mut operator, &identity, IAT).expect("operator JWT");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let accounts = std::thread::scope(|scope| {
        let parts: Vec<_> = (0..threads)
            .map(|part| {
                let share = count / threads + usize::from(part < count % threads);
                let signing_key = &signing_key;
                scope.spawn(move || {
                    (0..share)
                        .map(|i| {
                            let key = SigningKey::generate(KeyRole::Account);
                            let key = key.public_key().as_str().to_owned();
                            let name = format!("acc{part}-{i}");
                            let mut claims = AccountClaims::new_account(&key, &name);
                            let jwt = encode(&mut claims, signing_key, IAT).expect("account JWT");
                            (key, jwt)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().expect("generator thread"))
            .collect()
    });
    SignedAccounts {
        operator_jwt,
        accounts,
    }
}

/// [`signed_accounts`] written into the directory store at `dir` (flat layout,
/// `<dir>/<account key>.jwt`); returns the operator JWT. Panics on I/O errors.
pub fn write_dir_store(dir: &Path, count: usize) -> String {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let signed = signed_accounts(count);
    for (key, jwt) in &signed.accounts {
        let path = dir.join(format!("{key}.jwt"));
        std::fs::write(&path, jwt).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    signed.operator_jwt
}
