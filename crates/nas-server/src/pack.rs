//! The PACK line codec and the merge of received lines through the accept rule.
//!
//! A pack is one line per account, `<account key>|<jwt>`. Over HTTP (`/jwt/v1/pack`) lines are
//! joined with `\n`; over NATS (`$SYS.REQ.CLAIMS.PACK`) each line is one message and an empty
//! message ends the stream. Every producer and consumer goes through this module.

use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::accept::{Accepted, Accepter, WritePath};

/// One line: `key|jwt`.
pub fn encode_line(key: &str, jwt: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(key.len() + 1 + jwt.len());
    push_line(&mut line, key, jwt);
    line
}

/// Appends `key|jwt` to `out`.
fn push_line(out: &mut Vec<u8>, key: &str, jwt: &[u8]) {
    out.extend_from_slice(key.as_bytes());
    out.push(b'|');
    out.extend_from_slice(jwt);
}

/// Lines joined with `\n` (no trailing newline), as `/jwt/v1/pack` answers.
pub fn encode_lines<K: AsRef<str>, J: AsRef<[u8]>>(entries: &[(K, J)]) -> Vec<u8> {
    let mut body = Vec::new();
    push_lines(&mut body, true, entries);
    body
}

/// Appends the lines of `entries` to `body`, each after a `\n` unless it is the first line
/// of the whole body.
fn push_lines<K: AsRef<str>, J: AsRef<[u8]>>(body: &mut Vec<u8>, first: bool, entries: &[(K, J)]) {
    let size: usize = entries
        .iter()
        .map(|(k, j)| k.as_ref().len() + j.as_ref().len() + 2)
        .sum();
    body.reserve(size);
    for (i, (key, jwt)) in entries.iter().enumerate() {
        if i > 0 || !first {
            body.push(b'\n');
        }
        push_line(body, key.as_ref(), jwt.as_ref());
    }
}

/// The `/jwt/v1/pack` body of a stream of entries, as a stream of chunks: the same bytes as
/// [`encode_lines`] of every entry, pulled entry by entry by whoever writes the chunks (one
/// chunk per group of entries ready together, at most [`BODY_CHUNK_ENTRIES`]). An error ends
/// the body after the chunks before it.
pub fn encode_body<E: Send + 'static>(
    entries: impl Stream<Item = Result<(String, Bytes), E>> + Send + 'static,
) -> impl Stream<Item = Result<Bytes, E>> + Send + 'static {
    entries
        .ready_chunks(BODY_CHUNK_ENTRIES)
        .scan(true, |first, group| {
            let mut chunk = Vec::new();
            let mut lines = Vec::with_capacity(group.len());
            let mut failed = None;
            for entry in group {
                match entry {
                    Ok(entry) => lines.push(entry),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            push_lines(&mut chunk, *first, &lines);
            *first &= lines.is_empty();
            let mut out = Vec::with_capacity(2);
            if !chunk.is_empty() {
                out.push(Ok(Bytes::from(chunk)));
            }
            out.extend(failed.map(Err));
            futures::future::ready(Some(futures::stream::iter(out)))
        })
        .flatten()
}

/// Entries written as one chunk of a streamed pack body at most (some 45 KiB of JWTs).
pub const BODY_CHUNK_ENTRIES: usize = 64;

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

    /// The streamed body is byte for byte the joined lines, however the entries are grouped
    /// into chunks, and stops at an error.
    #[tokio::test]
    async fn a_streamed_body_is_the_joined_lines() {
        let entries: Vec<(String, Bytes)> = (0..200)
            .map(|i| (format!("AK{i}"), Bytes::from(format!("jwt{i}"))))
            .collect();
        let items: Vec<Result<_, ()>> = entries.iter().cloned().map(Ok).collect();
        let chunks: Vec<Result<Bytes, ()>> =
            encode_body(futures::stream::iter(items)).collect().await;
        assert!(chunks.len() > 1, "{} chunks", chunks.len());
        let body: Vec<u8> = chunks
            .into_iter()
            .flat_map(|c| c.unwrap().to_vec())
            .collect();
        assert_eq!(body, encode_lines(&entries));

        let failing = futures::stream::iter(vec![
            Ok((String::from("AK1"), Bytes::from_static(b"a"))),
            Err("gone"),
            Ok((String::from("AK2"), Bytes::from_static(b"b"))),
        ]);
        let chunks: Vec<_> = encode_body(nas_store::end_after_error(failing))
            .collect()
            .await;
        assert_eq!(chunks, vec![Ok(Bytes::from_static(b"AK1|a")), Err("gone")]);
    }
}
