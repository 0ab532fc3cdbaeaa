//! The `jti` as the Go library computes it: SHA-512/256 over the compact JSON of the standard
//! claims, base32 without padding.
//!
//! The JSON must match Go's `encoding/json` byte for byte, including its HTML-safe escaping of
//! `<`, `>` and `&`, which serde_json does not do; that writer is why this module is hand-written.

use data_encoding::BASE32_NOPAD;
use sha2::{Digest, Sha512_256};

use crate::claims::Claims;

/// Appends `value` as a JSON string literal escaped exactly as Go's `encoding/json` does.
fn push_go_string(out: &mut String, value: &str) {
    out.push('"');
    for ch in value.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", ch as u32));
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Builds `{"k":v,...}` from fields in order, skipping empty strings and zero numbers.
struct GoObject {
    json: String,
}

impl GoObject {
    fn new() -> GoObject {
        GoObject {
            json: String::from("{"),
        }
    }

    fn key(&mut self, key: &str) {
        if self.json.len() > 1 {
            self.json.push(',');
        }
        push_go_string(&mut self.json, key);
        self.json.push(':');
    }

    fn string(&mut self, key: &str, value: &str) {
        if !value.is_empty() {
            self.key(key);
            push_go_string(&mut self.json, value);
        }
    }

    fn int(&mut self, key: &str, value: i64) {
        if value != 0 {
            self.key(key);
            self.json.push_str(&value.to_string());
        }
    }

    fn strings(&mut self, key: &str, values: &[String]) {
        if !values.is_empty() {
            self.key(key);
            self.json.push('[');
            for (i, v) in values.iter().enumerate() {
                if i > 0 {
                    self.json.push(',');
                }
                push_go_string(&mut self.json, v);
            }
            self.json.push(']');
        }
    }

    fn finish(mut self) -> String {
        self.json.push('}');
        self.json
    }
}

fn hash(json: &str) -> String {
    BASE32_NOPAD.encode(&Sha512_256::digest(json.as_bytes()))
}

fn standard_claims<N>(claims: &Claims<N>, include_jti: bool) -> GoObject {
    let mut obj = GoObject::new();
    obj.string("aud", &claims.aud);
    obj.int("exp", claims.exp);
    if include_jti {
        obj.string("jti", &claims.jti);
    }
    obj.int("iat", claims.iat);
    obj.string("iss", &claims.iss);
    obj.string("name", &claims.name);
    obj.int("nbf", claims.nbf);
    obj
}

/// The JSON that jwt v2 hashes for the `jti` (exposed so tests can compare it with the spec).
pub fn v2_hash_input<N>(claims: &Claims<N>) -> String {
    let mut obj = standard_claims(claims, false);
    obj.string("sub", &claims.sub);
    obj.finish()
}

/// The `jti` jwt v2 assigns to `claims` (the current `jti` value is ignored, as Go clears it).
pub fn compute_v2<N>(claims: &Claims<N>) -> String {
    hash(&v2_hash_input(claims))
}

/// The `jti` the v1 library assigned: the v1 standard claims also held `tags`, `type` and
/// `issuer_account` at the top level. `jti` is hashed as it stands (the v1 encoder did not clear it;
/// it was empty when the token was made, so pass `""` to reproduce a token's id).
pub fn compute_v1<N>(
    claims: &Claims<N>,
    jti: &str,
    tags: &[String],
    kind: &str,
    issuer_account: &str,
) -> String {
    let mut obj = GoObject::new();
    obj.string("aud", &claims.aud);
    obj.int("exp", claims.exp);
    obj.string("jti", jti);
    obj.int("iat", claims.iat);
    obj.string("iss", &claims.iss);
    obj.string("name", &claims.name);
    obj.int("nbf", claims.nbf);
    obj.string("sub", &claims.sub);
    obj.strings("tags", tags);
    obj.string("type", kind);
    obj.string("issuer_account", issuer_account);
    hash(&obj.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_escaping() {
        let mut out = String::new();
        push_go_string(&mut out, "a<b>&\"\\\n\u{1}\u{2028}é");
        assert_eq!(out, "\"a\\u003cb\\u003e\\u0026\\\"\\\\\\n\\u0001\\u2028é\"");
    }

    #[test]
    fn spec_example_v2() {
        let claims: Claims<()> = Claims {
            iat: 1616187250,
            iss: "OD4M6IAAKQSM4DQSLWZIVBACYTYS2S6XQS7U67XXYXJ44ILNE35YPGJK".into(),
            name: "one".into(),
            sub: "ABVRZKJ6Z7NIMPIYJRCHEYFRUO7ENN6NWOKQDFLFDFVPSM36UPX2UCPP".into(),
            jti: "ignored".into(),
            ..Default::default()
        };
        assert_eq!(
            v2_hash_input(&claims),
            r#"{"iat":1616187250,"iss":"OD4M6IAAKQSM4DQSLWZIVBACYTYS2S6XQS7U67XXYXJ44ILNE35YPGJK","name":"one","sub":"ABVRZKJ6Z7NIMPIYJRCHEYFRUO7ENN6NWOKQDFLFDFVPSM36UPX2UCPP"}"#
        );
        assert_eq!(
            compute_v2(&claims),
            "QIQCDZQFDHQOVBW7CKC4T3W2IWGYWVHJ6SU4RNV3PZ75HSPUPKVA"
        );
    }

    #[test]
    fn spec_example_v1() {
        let claims: Claims<()> = Claims {
            aud: "TESTS".into(),
            exp: 1859121275,
            iat: 1543761275,
            iss: "OCAT33MTVU2VUOIMGNGUNXJ66AH2RLSDAF3MUBCYAY5QMIL65NQM6XQG".into(),
            name: "Synadia Communications Inc.".into(),
            nbf: 1543761275,
            sub: "OCAT33MTVU2VUOIMGNGUNXJ66AH2RLSDAF3MUBCYAY5QMIL65NQM6XQG".into(),
            ..Default::default()
        };
        assert_eq!(
            compute_v1(&claims, "", &[], "operator", ""),
            "XNLZ6XYPHTMDJQRNQOHUOJQGWCU7MI5W5JXCZNXBYUKEQW67I25Q"
        );
    }
}
