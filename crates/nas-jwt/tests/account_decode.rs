//! The account decode's direct path (`decode_account_with_keys`) against the general one
//! (`decode_with_keys`): the same result and the same error for tokens built to sit on either
//! side of every condition the direct path checks.

use nas_jwt::jwt::{base64url_encode, decode_account_with_keys, decode_with_keys, V2_HEADER};
use nas_jwt::{KeyRole, SigningKey};

/// A token with `header` and `payload` (both JSON text) signed by `signer` over
/// `header.payload` (the v2 rule).
fn token(signer: &SigningKey, header: &str, payload: &str) -> Vec<u8> {
    let signed = format!(
        "{}.{}",
        base64url_encode(header.as_bytes()),
        base64url_encode(payload.as_bytes())
    );
    let signature = base64url_encode(&signer.sign(signed.as_bytes()));
    format!("{signed}.{signature}").into_bytes()
}

/// An account payload from `operator` for `account` with `nats` members and top-level `extra`
/// members (each a JSON fragment such as `"a":1,`).
fn payload(operator: &SigningKey, account: &SigningKey, nats: &str, extra: &str) -> String {
    format!(
        r#"{{"jti":"J","iat":1700000000,"iss":"{}","name":"A","sub":"{}",{extra}"nats":{{{nats}}}}}"#,
        operator.public_key().as_str(),
        account.public_key().as_str()
    )
}

const V2: &str = r#""type":"account","version":2"#;

fn assert_same(token: &[u8]) {
    let none = |_: &str| None;
    let general = decode_with_keys(token, &none);
    let direct = decode_account_with_keys(token, &none);
    assert_eq!(direct, general, "token {}", String::from_utf8_lossy(token));
}

#[test]
fn the_direct_account_decode_agrees_with_the_general_one() {
    let operator = SigningKey::generate(KeyRole::Operator);
    let account = SigningKey::generate(KeyRole::Account);
    let user = SigningKey::generate(KeyRole::User);
    let other_header = r#"{"alg":"ed25519-nkey","typ":"JWT"}"#;
    let cases: Vec<(String, String)> = vec![
        // The usual v2 account, and with imports, exports, limits, unknown members, escapes.
        (V2_HEADER.into(), payload(&operator, &account, V2, "")),
        (
            V2_HEADER.into(),
            payload(
                &operator,
                &account,
                &format!(
                    r#"{V2},"exports":[{{"subject":"a.\u003e","type":"stream","odd":[1,{{"x":null}}]}}],"limits":{{"conn":-1,"subs":10.5}},"revocations":{{"U1":1,"U1":2}},"future":{{"deep":[[["é"]]]}}"#
                ),
                r#""aud":null,"extra":"\"quoted\" \\ \u00e9","#,
            ),
        ),
        // Differ from the general reading only if the direct path did not fall back.
        (
            V2_HEADER.into(),
            payload(
                &operator,
                &account,
                &format!(r#"{V2},"default_permissions":{{"pub":{{"allow":["a"],"odd":1e400}}}}"#),
                "",
            ),
        ),
        (
            V2_HEADER.into(),
            payload(
                &operator,
                &account,
                &format!(r#"{V2},"default_permissions":{{"pub":{{"odd":"\ud800"}}}}"#),
                "",
            ),
        ),
        (
            V2_HEADER.into(),
            payload(
                &operator,
                &account,
                &format!(
                    r#"{V2},"default_permissions":{{"pub":{{"odd":{}}}}}"#,
                    "9".repeat(400)
                ),
                "",
            ),
        ),
        (
            V2_HEADER.into(),
            payload(
                &operator,
                &account,
                &format!(
                    r#"{V2},"default_permissions":{{"pub":{{"odd":{}1{}}}}}"#,
                    "[".repeat(200),
                    "]".repeat(200)
                ),
                "",
            ),
        ),
        (
            V2_HEADER.into(),
            payload(
                &operator,
                &account,
                &format!("{V2},\"description\":\"tab\there\""),
                "",
            ),
        ),
        (
            V2_HEADER.into(),
            payload(
                &operator,
                &account,
                &format!(r#"{V2},"limits":{{"conn":1e3}}"#),
                "",
            ),
        ),
        // Duplicated members (the general reading takes the last).
        (
            V2_HEADER.into(),
            payload(
                &operator,
                &account,
                &format!(r#"{V2},"description":"a","description":"b""#),
                "",
            ),
        ),
        (
            V2_HEADER.into(),
            payload(&operator, &account, &format!(r#"{V2},"version":2"#), ""),
        ),
        (
            V2_HEADER.into(),
            payload(&operator, &account, V2, r#""name":"B","#),
        ),
        // Not a v2 account: v1, other versions, other types, no or odd nats.
        (
            V2_HEADER.into(),
            payload(&operator, &account, V2, r#""type":"account","#),
        ),
        (
            V2_HEADER.into(),
            payload(&operator, &account, V2, r#""type":"","#),
        ),
        (
            V2_HEADER.into(),
            payload(&operator, &account, V2, r#""type":7,"#),
        ),
        (
            V2_HEADER.into(),
            payload(&operator, &account, r#""type":"account","version":1"#, ""),
        ),
        (
            V2_HEADER.into(),
            payload(&operator, &account, r#""type":"account","version":3"#, ""),
        ),
        (
            V2_HEADER.into(),
            payload(&operator, &account, r#""type":"account","version":2.0"#, ""),
        ),
        (
            V2_HEADER.into(),
            payload(&operator, &account, r#""type":"account""#, ""),
        ),
        (
            V2_HEADER.into(),
            payload(&operator, &account, r#""type":"user","version":2"#, ""),
        ),
        (
            V2_HEADER.into(),
            payload(&operator, &account, r#""type":"cluster","version":2"#, ""),
        ),
        (
            V2_HEADER.into(),
            payload(&operator, &account, &format!(r#"{V2},"limits":"none""#), ""),
        ),
        (V2_HEADER.into(), r#"{"nats":null}"#.into()),
        (V2_HEADER.into(), r#"["nats"]"#.into()),
        (
            V2_HEADER.into(),
            r#"{"nats":{"type":"account","version":2}} x"#.into(),
        ),
        (
            V2_HEADER.into(),
            "{\"sub\":\"\u{7f}\",\"nats\":{".to_owned() + V2 + "}}",
        ),
        // Other headers.
        (other_header.into(), payload(&operator, &account, V2, "")),
        (
            r#"{"typ":"JWT","alg":"HS256"}"#.into(),
            payload(&operator, &account, V2, ""),
        ),
    ];
    for (header, payload) in &cases {
        assert_same(&token(&operator, header, payload));
        // The wrong signer, an issuer that may not sign accounts.
        assert_same(&token(&user, header, payload));
        let mut tampered = token(&operator, header, payload);
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert_same(&tampered);
    }
    // A user signing as issuer: the role check comes after the signature.
    let by_user = payload(&user, &account, V2, "");
    assert_same(&token(&user, V2_HEADER, &by_user));
    // Not a token at all, or a payload that is not base64.
    for junk in [&b"a.b"[..], b"a.b.c.d", b"", b"\xff.x.y"] {
        assert_same(junk);
    }
    let header = base64url_encode(V2_HEADER.as_bytes());
    assert_same(format!("{header}.!!!.AAAA").as_bytes());
    // The direct path really is taken for the usual token (it verifies).
    let usual = token(&operator, V2_HEADER, &payload(&operator, &account, V2, ""));
    assert!(decode_account_with_keys(&usual, &|_: &str| None).is_ok());
}
