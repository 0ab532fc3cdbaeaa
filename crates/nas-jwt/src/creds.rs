//! Decorated JWTs and creds files, in the exact marker format nsc and the Go library write, and
//! the lenient reader nats-server and nsc use.

use crate::nkey::{seed_role, KeyRole};

/// `-----BEGIN NATS <KIND> JWT-----\n<jwt>\n------END NATS <KIND> JWT------\n\n`.
pub fn decorate_jwt(jwt: &str, kind: &str) -> String {
    let kind = kind.to_ascii_uppercase();
    format!("-----BEGIN NATS {kind} JWT-----\n{jwt}\n------END NATS {kind} JWT------\n\n")
}

/// A creds file: the decorated user JWT, the warning banner and the decorated seed.
pub fn format_creds(user_jwt: &str, seed: &str) -> String {
    let kind = match seed_role(seed) {
        Ok(KeyRole::Account) => "ACCOUNT",
        Ok(KeyRole::Operator) => "OPERATOR",
        _ => "USER",
    };
    format!(
        "{}************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN {kind} NKEY SEED-----\n{seed}\n------END {kind} NKEY SEED------\n\n\
         *************************************************************\n",
        decorate_jwt(user_jwt, "user")
    )
}

fn is_marker(line: &str) -> bool {
    let line = line.trim_end_matches('\r');
    line.len() >= 6 && line.starts_with("---") && line.ends_with("---")
}

fn is_content(line: &str) -> bool {
    let line = line.trim_end_matches('\r');
    !line.is_empty()
        && line
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'='))
}

/// Every `marker / content / marker` block, in order.
fn blocks(text: &str) -> Vec<&str> {
    let lines: Vec<&str> = text.split('\n').map(|l| l.trim_start()).collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i + 2 < lines.len() + 1 && i + 2 <= lines.len().saturating_sub(1) {
        if is_marker(lines[i]) && is_content(lines[i + 1]) && is_marker(lines[i + 2]) {
            found.push(lines[i + 1].trim_end_matches('\r'));
            i += 3;
        } else {
            i += 1;
        }
    }
    found
}

/// The JWT in a decorated file, or the whole trimmed text when it has no markers.
pub fn extract_jwt(text: &str) -> String {
    match blocks(text).first() {
        Some(jwt) => (*jwt).to_owned(),
        None => text.trim().to_owned(),
    }
}

/// The seed in a creds file (second block), or the first line starting with `SO`, `SA` or `SU`.
pub fn extract_seed(text: &str) -> Option<String> {
    if let Some(seed) = blocks(text).get(1) {
        return Some((*seed).to_owned());
    }
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with("SO") || l.starts_with("SA") || l.starts_with("SU"))
        .map(str::to_owned)
}
