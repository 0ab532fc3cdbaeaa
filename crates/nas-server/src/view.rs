//! The decoded view of a token (`?decode=true`): the Go server's human layout, made robust
//! (never fails on malformed input, defect D10), plus a valid-JSON form.

use serde_json::{json, Map, Value};

/// Sorts object keys at every level (Go's generic map printing order).
fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for k in keys {
                out.insert(k.clone(), sorted(&map[k]));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// Pretty JSON with 4-space indent and a final newline, as Go's `json.MarshalIndent` + `\n`.
fn pretty(value: &Value) -> String {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    // Serializing a Value into a Vec cannot fail.
    let _ = serde::Serialize::serialize(value, &mut ser);
    let mut text = String::from_utf8_lossy(&out).into_owned();
    text.push('\n');
    text
}

/// `YYYY-MM-DD` (UTC) of a Unix time. Hand-written (Howard Hinnant's days-to-civil) to avoid a
/// date crate for one line of output.
pub fn utc_date(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn header_value(token: &[u8]) -> Value {
    match nas_jwt::jwt::peek_header(token) {
        Ok(h) => {
            let get = |k: &str| h.get(k).cloned().unwrap_or(Value::String(String::new()));
            json!({"typ": get("typ"), "alg": get("alg")})
        }
        Err(e) => json!({"error": e.to_string()}),
    }
}

fn claims_value(token: &[u8]) -> Value {
    match nas_jwt::jwt::peek_payload(token) {
        Ok(p) => sorted(&Value::Object(p)),
        Err(e) => json!({"error": e.to_string()}),
    }
}

fn signature_segment(token: &[u8]) -> String {
    let text = String::from_utf8_lossy(token);
    text.trim_end()
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Rewrites `"key": <n>,` into `"key": <n> (<date>),` as the Go view does.
fn annotate_time(line: &str) -> Option<String> {
    for key in ["\"iat\": ", "\"exp\": "] {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix(key) {
            let number = rest.strip_suffix(',')?;
            let n: i64 = number.parse().ok()?;
            let indent = &line[..line.len() - trimmed.len()];
            let date = if n == 0 { String::new() } else { utc_date(n) };
            return Some(format!("{indent}{key}{n} ({date}),"));
        }
    }
    None
}

/// Replaces `"token": "<jwt>",` by the activation's pretty claims, as the Go view does.
fn expand_token(line: &str) -> Option<String> {
    let trimmed = line.trim_start();
    let rest = trimmed.strip_prefix("\"token\": \"")?.strip_suffix("\",")?;
    let indent = &line[..line.len() - trimmed.len()];
    let body = match nas_jwt::jwt::peek_payload(rest.as_bytes()) {
        Ok(claims) => {
            let text = pretty(&sorted(&Value::Object(claims)));
            let prefixed: Vec<String> = text
                .trim_end()
                .lines()
                .map(|l| format!("{}{l}", " ".repeat(16)))
                .collect();
            prefixed.join("\n").trim_start().to_owned()
        }
        Err(e) => format!("<bad token - {e}>"),
    };
    Some(format!("{indent}\"token\": {body},"))
}

/// RFC 3339 UTC with microseconds, as nats-server writes `server.time`.
pub fn rfc3339_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let day = secs.rem_euclid(86_400);
    format!(
        "{}T{:02}:{:02}:{:02}.{:06}Z",
        utc_date(secs),
        day / 3600,
        day % 3600 / 60,
        day % 60,
        now.subsec_micros()
    )
}

/// The Go server's layout: header, `\r\n`, claims (sorted keys, dates annotated, embedded
/// activation tokens expanded), `\r\n`, signature. Readable; not JSON.
pub fn human(token: &[u8]) -> String {
    let header = pretty(&header_value(token));
    let claims = pretty(&claims_value(token));
    let claims: Vec<String> = claims
        .lines()
        .map(|l| {
            expand_token(l)
                .or_else(|| annotate_time(l))
                .unwrap_or_else(|| l.to_owned())
        })
        .collect();
    format!(
        "{header}\r\n{}\n\r\n{}",
        claims.join("\n"),
        signature_segment(token)
    )
}

fn with_decoded_tokens(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if k == "token" {
                    if let Value::String(t) = v {
                        if let Ok(claims) = nas_jwt::jwt::peek_payload(t.as_bytes()) {
                            *v =
                                json!({"jwt": t.clone(), "claims": sorted(&Value::Object(claims))});
                        }
                    }
                } else {
                    with_decoded_tokens(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(with_decoded_tokens),
        _ => {}
    }
}

/// The same information as valid JSON: `{header, claims, signature, dates}` with embedded
/// activation tokens decoded in place.
pub fn json(token: &[u8]) -> String {
    let mut claims = claims_value(token);
    with_decoded_tokens(&mut claims);
    let mut dates = Map::new();
    for key in ["iat", "exp", "nbf"] {
        if let Some(n) = claims.get(key).and_then(Value::as_i64) {
            dates.insert(key.to_owned(), Value::String(utc_date(n)));
        }
    }
    pretty(&json!({
        "header": header_value(token),
        "claims": claims,
        "signature": signature_segment(token),
        "dates": dates,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(1616187250), "2021-03-19");
        assert_eq!(utc_date(4070908800), "2099-01-01");
        assert_eq!(utc_date(1709164800), "2024-02-29");
    }

    #[test]
    fn garbage_does_not_panic() {
        for input in [&b""[..], b"a", b"a.b", b"..", b"a.b.c.d", &[0xff, 0xfe]] {
            let _ = human(input);
            let v: Value = serde_json::from_str(&json(input)).unwrap();
            assert!(v.get("claims").is_some());
        }
    }
}
