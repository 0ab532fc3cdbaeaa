//! Fuzz harnesses: each function takes arbitrary bytes and runs one parser of untrusted input
//! the way the server does, asserting the invariants that must hold whatever the input. The
//! cargo-fuzz targets in `fuzz/` call these; `tests/corpus.rs` replays the committed corpus
//! through them on stable, so every crash found becomes a regression test.

#![forbid(unsafe_code)]

use nas_jwt::{is_valid_public_key, KeyRole, PublicKey};

/// A harness: runs one parser over arbitrary bytes, panicking on a broken invariant.
pub type Harness = fn(&[u8]);

/// Every harness, by the name of its corpus folder under `fuzz/corpus/`.
pub const TARGETS: &[(&str, Harness)] = &[
    ("jwt", jwt),
    ("nkey", nkey),
    ("conf", conf),
    ("http_request", http_request),
    ("nats_payload", nats_payload),
];

/// JWT decoding as every write path and the cache do it: never a panic; whatever decodes
/// re-encodes to the same token, and the cheap claim reader agrees on `iat`.
pub fn jwt(data: &[u8]) {
    let decoded = nas_jwt::decode(data);
    let _ = nas_jwt::decode_generic(data);
    let peeked = nas_jwt::jwt::peek_payload(data);
    let meta = nas_store::TokenMeta::read(data);
    if let Ok(jwt) = decoded {
        assert!(peeked.is_ok(), "decoded but the payload cannot be read");
        let iat = jwt.claims().iat();
        assert_eq!(meta.map(|m| m.iat).ok(), Some(iat), "iat readers disagree");
        let _ = jwt.into_account();
    }
}

/// nkey parsing: a key that parses has the role its prefix says, and prints back unchanged.
pub fn nkey(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(key) = PublicKey::parse(text) {
        assert_eq!(key.as_str(), text);
        assert!(is_valid_public_key(text, key.role()));
    }
    for role in [KeyRole::Operator, KeyRole::Account, KeyRole::User] {
        let _ = PublicKey::parse_role(text, role);
        let _ = nas_jwt::SigningKey::from_seed(text, role);
    }
    let _ = nas_jwt::creds::extract_jwt(text);
}

/// The config reader over the conf parser: never a panic, errors carry a message.
pub fn conf(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = nas_server::config::Config::from_text(text) {
        assert!(!e.to_string().is_empty());
    }
}

/// What the HTTP layer does with a path segment and a query string before touching the store:
/// key and hash-id validation, query parsing, URL redaction. A valid key never contains a path
/// separator or dot.
pub fn http_request(data: &[u8]) {
    let (path, query) = match data.iter().position(|b| *b == b'?') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let path = String::from_utf8_lossy(path);
    if is_valid_public_key(&path, KeyRole::Account) || nas_store::is_valid_hash_id(&path) {
        assert!(!path.contains(['/', '.', '\0', '\\']), "{path:?}");
    }
    for (k, v) in form_urlencoded::parse(query) {
        let _ = (k.eq_ignore_ascii_case("max"), v.parse::<i64>());
    }
    let redacted = nas_store::redact_url(&path);
    assert!(redacted.len() <= path.len() + 8 * (path.matches(',').count() + 1));
}

/// NATS request payloads: an UPDATE body (an account JWT) and a DELETE body (a generic JWT
/// with an `accounts` array) are decoded without panics.
pub fn nats_payload(data: &[u8]) {
    if let Ok(jwt) = nas_jwt::decode(data) {
        let _ = jwt.into_account();
    }
    if let Ok(jwt) = nas_jwt::decode_generic(data) {
        if let nas_jwt::AnyClaims::Generic(g) = jwt.claims() {
            if let Some(accounts) = g.nats.get("accounts").and_then(|v| v.as_array()) {
                for a in accounts {
                    let _ = a.as_str().map(|k| is_valid_public_key(k, KeyRole::Account));
                }
            }
        }
    }
}
