//! The PACK line codec and the merge of received lines through the accept rule.
//!
//! A pack is one line per account, `<account key>|<jwt>`. Over HTTP (`/jwt/v1/pack`) lines are
//! joined with `\n`; over NATS (`$SYS.REQ.CLAIMS.PACK`) each line is one message and an empty
//! message ends the stream. Every producer and consumer goes through this module.

use crate::accept::{Accepted, Accepter, WritePath};

/// One line: `key|jwt`.
pub fn encode_line(key: &str, jwt: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(key.len() + 1 + jwt.len());
    line.extend_from_slice(key.as_bytes());
    line.push(b'|');
    line.extend_from_slice(jwt);
    line
}

/// Lines joined with `\n` (no trailing newline), as `/jwt/v1/pack` answers.
pub fn encode_lines<K: AsRef<str>, J: AsRef<[u8]>>(entries: &[(K, J)]) -> Vec<u8> {
    let size: usize = entries
        .iter()
        .map(|(k, j)| k.as_ref().len() + j.as_ref().len() + 2)
        .sum();
    let mut body = Vec::with_capacity(size);
    for (i, (key, jwt)) in entries.iter().enumerate() {
        if i > 0 {
            body.push(b'\n');
        }
        body.extend_from_slice(&encode_line(key.as_ref(), jwt.as_ref()));
    }
    body
}

/// Splits one line into key and JWT; `None` when there is no `|` or the key is not UTF-8
/// (the accept rule decides everything else).
pub fn decode_line(line: &[u8]) -> Option<(&str, &[u8])> {
    let bar = line.iter().position(|b| *b == b'|')?;
    let key = std::str::from_utf8(&line[..bar]).ok()?;
    Some((key, &line[bar + 1..]))
}

/// What a merge did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Merged {
    /// Lines whose JWT was stored (new or newer).
    pub changed: usize,
    /// Lines whose JWT was already stored, or older than what is stored.
    pub kept: usize,
    /// Lines that did not parse or were refused by the accept rule.
    pub refused: usize,
}

impl Merged {
    /// Adds another merge's counts.
    pub fn add(&mut self, other: Merged) {
        self.changed += other.changed;
        self.kept += other.kept;
        self.refused += other.refused;
    }
}

/// Merges every non-empty `\n`-separated line of `body` through the accept rule on `path`.
/// `origin` names the sender in the audit log.
pub async fn merge(accepter: &Accepter, path: WritePath, origin: &str, body: &[u8]) -> Merged {
    let mut merged = Merged::default();
    for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let Some((key, jwt)) = decode_line(line) else {
            merged.refused += 1;
            continue;
        };
        match accepter
            .accept(path, origin, Some(key), jwt, nas_jwt::unix_now())
            .await
        {
            Ok((Accepted::Unchanged, _)) => merged.kept += 1,
            Ok(_) => merged.changed += 1,
            Err(e) if e.is_superseded() => merged.kept += 1,
            Err(e) => {
                merged.refused += 1;
                tracing::debug!("pack line for {key} refused ({}): {e}", path.label());
            }
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let body = encode_lines(&[("AK1", b"a.b.c".as_slice()), ("AK2", b"d.e.f")]);
        assert_eq!(body, b"AK1|a.b.c\nAK2|d.e.f");
        let lines: Vec<_> = body.split(|b| *b == b'\n').map(decode_line).collect();
        assert_eq!(
            lines,
            vec![
                Some(("AK1", b"a.b.c".as_slice())),
                Some(("AK2", b"d.e.f".as_slice()))
            ]
        );
        assert_eq!(decode_line(b"no bar"), None);
        assert_eq!(decode_line(b"\xff|x"), None);
        assert_eq!(decode_line(b"K|a|b"), Some(("K", b"a|b".as_slice())));
    }
}
