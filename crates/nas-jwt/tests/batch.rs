//! Batch verification (`OperatorTrust::verify_accounts_untimed`, `decode_accounts_for`): every
//! result is exactly what verifying that token alone gives, whether the batch holds only good
//! signatures (one batch check) or some bad ones (each checked on its own to find them).

use nas_jwt::{
    decode_account_for, decode_accounts_for, encode, AccountClaims, KeyRole, OperatorClaims,
    OperatorTrust, SigningKey,
};

const IAT: i64 = 1_767_225_600;

struct Fixture {
    trust: OperatorTrust,
    signing_key: SigningKey,
}

fn fixture() -> Fixture {
    let identity = SigningKey::generate(KeyRole::Operator);
    let signing_key = SigningKey::generate(KeyRole::Operator);
    let mut operator = OperatorClaims::new(identity.public_key().as_str(), "batch");
    operator.nats.signing_keys = vec![signing_key.public_key().as_str().to_owned()];
    let jwt = encode(&mut operator, &identity, IAT).unwrap();
    Fixture {
        trust: OperatorTrust::from_operator_jwt(jwt.as_bytes()).unwrap(),
        signing_key,
    }
}

/// `(account key, JWT)` signed by `signer`.
fn account(signer: &SigningKey, name: &str) -> (String, String) {
    let key = SigningKey::generate(KeyRole::Account);
    let key = key.public_key().as_str().to_owned();
    let jwt = encode(&mut AccountClaims::new_account(&key, name), signer, IAT).unwrap();
    (key, jwt)
}

/// The same token with one byte of its signature changed (still valid base64url).
fn bad_signature(jwt: &str) -> String {
    let mut bytes = jwt.as_bytes().to_vec();
    let at = bytes.len() - 10;
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

/// Batch results against one-by-one results, pair for pair.
fn assert_same_as_single(f: &Fixture, items: &[(String, String)]) -> Vec<bool> {
    let pairs: Vec<(&[u8], &str)> = items
        .iter()
        .map(|(key, jwt)| (jwt.as_bytes(), key.as_str()))
        .collect();
    let batch = f.trust.verify_accounts_untimed(&pairs);
    let untrusted = decode_accounts_for(&pairs);
    assert_eq!(batch.len(), items.len());
    for (i, (key, jwt)) in items.iter().enumerate() {
        let single = f.trust.verify_account_untimed(jwt.as_bytes(), Some(key));
        assert_eq!(batch[i], single, "entry {i} with trust");
        assert_eq!(
            untrusted[i],
            decode_account_for(jwt.as_bytes(), Some(key)),
            "entry {i} without trust"
        );
    }
    batch.iter().map(Result::is_ok).collect()
}

#[test]
fn a_batch_of_good_signatures_verifies_each() {
    let f = fixture();
    let items: Vec<_> = (0..40)
        .map(|i| account(&f.signing_key, &format!("a{i}")))
        .collect();
    assert!(assert_same_as_single(&f, &items).iter().all(|ok| *ok));
}

#[test]
fn bad_entries_in_a_batch_are_refused_and_the_rest_verify() {
    let f = fixture();
    let stranger = SigningKey::generate(KeyRole::Operator);
    let mut items: Vec<_> = (0..20)
        .map(|i| account(&f.signing_key, &format!("a{i}")))
        .collect();
    items[3].1 = bad_signature(&items[3].1);
    items[7] = account(&stranger, "untrusted"); // verifies, but is not trusted
    items[11].1 = "not.a.jwt".to_owned();
    let misfiled = items[12].1.clone();
    items[13].1 = misfiled; // stored under another account's key
    items[17].1 = bad_signature(&items[17].1);
    let oks = assert_same_as_single(&f, &items);
    let refused: Vec<usize> = (0..oks.len()).filter(|i| !oks[*i]).collect();
    assert_eq!(refused, [3, 7, 11, 13, 17]);
}

#[test]
fn a_batch_of_one_or_none_is_checked_alone() {
    let f = fixture();
    assert!(f.trust.verify_accounts_untimed(&[]).is_empty());
    let good = account(&f.signing_key, "one");
    assert_eq!(
        assert_same_as_single(&f, std::slice::from_ref(&good)),
        [true]
    );
    let bad = (good.0, bad_signature(&good.1));
    assert_eq!(assert_same_as_single(&f, &[bad]), [false]);
}
