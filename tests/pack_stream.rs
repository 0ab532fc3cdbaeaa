//! The streamed PACK: `GET /jwt/v1/pack` and `$SYS.REQ.CLAIMS.PACK` hand out every stored
//! entry that verifies, once, and leave out the ones that do not; the HTTP body is pulled by the
//! client, so a client that reads slowly holds the store reads instead of making the server read
//! (and buffer) the whole store; a store that fails mid-pack cuts the body short.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use nas_jwt::{KeyRole, SigningKey};
use nas_server::cache::PACK_ENTRIES_IN_FLIGHT;
use nas_server::config::{Config, DirStore, StoreConfig};
use nas_server::pack::BODY_CHUNK_ENTRIES;
use nas_server::server::Server;
use nas_store::fault::{FaultBackend, Op, Point};
use nas_store::{Backend, Cause, StoreError, READ_CONCURRENCY};
use nas_testkit::{free_port, require_nats_servers, NatsServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::{cache_or_full_config, now, reissue, system_user_creds, Operator};

/// `count` accounts signed by the operator, each JWT padded to about `pad` bytes more, written
/// as files of a directory store at `dir`; returns key → JWT.
fn write_accounts(dir: &Path, op: &Operator, count: usize, pad: usize) -> HashMap<String, String> {
    std::fs::create_dir_all(dir).unwrap();
    let description = "p".repeat(pad);
    (0..count)
        .map(|i| {
            let key = SigningKey::generate(KeyRole::Account);
            let jwt = reissue(op, &key, &format!("acc{i}"), now(), |c| {
                c.nats.description = description.clone();
            });
            let public = key.public_key().as_str().to_owned();
            std::fs::write(dir.join(format!("{public}.jwt")), &jwt).unwrap();
            (public, jwt)
        })
        .collect()
}

/// Our server on the directory store `<dir>/jwt` behind the fault decorator, with an unbounded
/// pack (`maxreplicationpack: -1`), optionally connected to NATS as the system user.
async fn start(dir: &Path, op: &Operator, nats_port: Option<u16>) -> (Server, Arc<FaultBackend>) {
    std::fs::write(dir.join("operator.jwt"), &op.jwt).unwrap();
    let mut config = Config::default();
    config.http.host = "127.0.0.1".into();
    config.http.port = 0;
    config.store = StoreConfig::Dir(DirStore::new(dir.join("jwt")));
    config.operator_jwt_path = Some(dir.join("operator.jwt"));
    config.max_replication_pack = -1;
    if let Some(port) = nats_port {
        std::fs::write(dir.join("sys.creds"), system_user_creds(op)).unwrap();
        config.nats.servers = vec![format!("nats://127.0.0.1:{port}")];
        config.nats.user_credentials = Some(dir.join("sys.creds"));
        config.nats.pack_interval = None;
    }
    let mut faults = None;
    let server = Server::start_with(&config, |inner| {
        let f = FaultBackend::new(inner);
        faults = Some(f.clone());
        f as Arc<dyn Backend>
    })
    .await
    .unwrap();
    (server, faults.unwrap())
}

/// The keys of a pack body, each as often as it appears, after checking every line's JWT is the
/// one stored under its key.
fn keys_of(body: &[u8], stored: &HashMap<String, String>) -> Vec<String> {
    let text = std::str::from_utf8(body).unwrap();
    assert!(!text.ends_with('\n'), "no trailing newline");
    text.split('\n')
        .filter(|l| !l.is_empty())
        .map(|line| {
            let (key, jwt) = line.split_once('|').unwrap();
            assert_eq!(
                stored.get(key).map(String::as_str),
                Some(jwt),
                "line of {key}"
            );
            key.to_owned()
        })
        .collect()
}

/// Stores tampered entries beside `good`: a foreign operator's account and a good account's JWT
/// filed under another key. Returns the keys that must stay out of every pack.
fn tamper(store: &Path, good: &HashMap<String, String>) -> Vec<String> {
    let foreign = Operator::new("foreign");
    let (foreign_key, foreign_jwt) = foreign.account("INTRUDER");
    let foreign_key = foreign_key.public_key().as_str().to_owned();
    std::fs::write(store.join(format!("{foreign_key}.jwt")), foreign_jwt).unwrap();
    let misfiled = SigningKey::generate(KeyRole::Account)
        .public_key()
        .as_str()
        .to_owned();
    let some_jwt = good.values().next().unwrap();
    std::fs::write(store.join(format!("{misfiled}.jwt")), some_jwt).unwrap();
    vec![foreign_key, misfiled]
}

/// Every verifying entry once, the refused ones absent: over HTTP (`max=-1` and a `max` below the
/// store size) and over NATS (one message per line, then the empty end marker).
#[tokio::test]
async fn the_pack_over_http_and_nats_is_every_verifying_entry_once() {
    let bin = require_nats_servers().into_iter().last().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("pack");
    let stored = write_accounts(&tmp.path().join("jwt"), &op, 700, 0);
    let refused = tamper(&tmp.path().join("jwt"), &stored);
    let nats_port = free_port();
    let nats = NatsServer::builder(&bin)
        .port(nats_port)
        .config(cache_or_full_config(&op, "cache", ""))
        .start();
    let (server, _) = start(tmp.path(), &op, Some(nats_port)).await;
    let want: BTreeSet<String> = stored.keys().cloned().collect();

    let body = reqwest::get(format!("{}/jwt/v1/pack?max=-1", server.url()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let keys = keys_of(&body, &stored);
    assert_eq!(keys.len(), want.len(), "each entry once");
    assert_eq!(keys.iter().cloned().collect::<BTreeSet<_>>(), want);
    assert!(
        refused.iter().all(|k| !keys.contains(k)),
        "refused entries left out"
    );
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "in key order");

    // `max` counts entries that verify: the first 100 of them.
    let body = reqwest::get(format!("{}/jwt/v1/pack?max=100", server.url()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(keys_of(&body, &stored), keys[..100].to_vec());

    // NATS: a PACK request with a hash that differs from ours.
    eventually_connected(&server).await;
    std::fs::write(tmp.path().join("client.creds"), system_user_creds(&op)).unwrap();
    let client = async_nats::ConnectOptions::with_credentials_file(tmp.path().join("client.creds"))
        .await
        .unwrap()
        .connect(nats.url())
        .await
        .unwrap();
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.unwrap();
    client
        .publish_with_reply("$SYS.REQ.CLAIMS.PACK", inbox, vec![0u8; 32].into())
        .await
        .unwrap();
    let mut lines = Vec::new();
    loop {
        let reply = tokio::time::timeout(Duration::from_secs(20), replies.next())
            .await
            .expect("the pack ends with an empty message")
            .unwrap();
        if reply.payload.is_empty() {
            break;
        }
        lines.push(reply.payload.to_vec());
    }
    let keys: Vec<String> = lines.iter().flat_map(|l| keys_of(l, &stored)).collect();
    assert_eq!(lines.len(), want.len(), "one message per entry, each once");
    assert_eq!(keys.iter().cloned().collect::<BTreeSet<_>>(), want);
    assert!(
        refused.iter().all(|k| !keys.contains(k)),
        "refused entries left out"
    );
}

async fn eventually_connected(server: &Server) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while server.metrics.nats_connected.get() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "account server connected to NATS"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client that reads a large pack slowly: at every step, the store reads the server has
/// started exceed what the client has received only by what fits in the socket buffers and the
/// documented in-flight bound — never the whole store. Holds at any instant, whatever the
/// scheduling, so no timing is involved. The whole pack then arrives, every entry once.
#[tokio::test]
async fn a_slow_reader_holds_the_store_reads_not_a_buffer_of_the_store() {
    const ACCOUNTS: usize = 5_000;
    const PAD: usize = 3_000;
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("slow");
    let stored = write_accounts(&tmp.path().join("jwt"), &op, ACCOUNTS, PAD);
    let (server, faults) = start(tmp.path(), &op, None).await;
    let line = stored
        .iter()
        .map(|(k, j)| k.len() + j.len() + 1)
        .min()
        .unwrap();

    const RECEIVE_BUFFER: u32 = 16 * 1024;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(RECEIVE_BUFFER).unwrap();
    let address = server.url().trim_start_matches("http://").to_owned();
    let mut conn = socket.connect(address.parse().unwrap()).await.unwrap();
    conn.write_all(b"GET /jwt/v1/pack?max=-1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();

    // What may sit between the store and the client: the server's socket send buffer (at most
    // tcp_wmem's maximum), our receive buffer (the kernel doubles the value asked for), the
    // HTTP writer's buffer and one body chunk, plus the entries in flight by design.
    let send_buffer: usize = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .unwrap()
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    let buffered_bytes = send_buffer + 2 * RECEIVE_BUFFER as usize + 64 * 1024;
    let in_flight = READ_CONCURRENCY + PACK_ENTRIES_IN_FLIGHT;
    let slack = buffered_bytes / line + BODY_CHUNK_ENTRIES + in_flight;
    assert!(
        slack * 2 < ACCOUNTS,
        "the store ({ACCOUNTS}) must dwarf what may be buffered ({slack}) for this test to mean anything"
    );

    // Reads of 4 KiB with a small receive buffer; not slower than that, or the server's
    // `writetimeout` (5 s without progress) rightly ends the connection.
    let mut received = Vec::new();
    let mut step = [0u8; 4096];
    let (mut worst, mut lines) = (0usize, 0usize);
    loop {
        let n = conn.read(&mut step).await.unwrap();
        if n == 0 {
            break;
        }
        received.extend_from_slice(&step[..n]);
        // Lines received so far: each holds exactly one `|` (none in JWTs or chunk framing).
        lines += step[..n].iter().filter(|b| **b == b'|').count();
        let started = faults.gets_started();
        worst = worst.max(started.saturating_sub(lines));
        assert!(
            started <= lines + slack,
            "{started} store reads started with only {lines} lines received (allowed: {slack} ahead)"
        );
        // A slow reader: yield so the server runs ahead as far as it can between our reads.
        tokio::task::yield_now().await;
    }
    println!("reads ran at most {worst} entries ahead of the client (bound {slack})");
    let text = std::str::from_utf8(&received).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    let body = dechunk(body.as_bytes());
    let keys = keys_of(&body, &stored);
    assert_eq!(keys.len(), ACCOUNTS);
    assert_eq!(keys.into_iter().collect::<BTreeSet<_>>().len(), ACCOUNTS);
}

/// The body of a chunked HTTP/1.1 response; panics unless it ends with the last (empty) chunk.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..eol]).unwrap().trim(), 16)
            .expect("chunk size");
        raw = &raw[eol + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// A read that fails after the headers are sent (the store became unreachable mid-pack): the
/// body is cut short — the client gets an error, never a short pack that looks complete. A
/// store that fails before the first entry still answers 503.
#[tokio::test]
async fn a_store_failing_mid_pack_cuts_the_body_short() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("cut");
    let stored = write_accounts(&tmp.path().join("jwt"), &op, 600, 0);
    let (server, faults) = start(tmp.path(), &op, None).await;
    let mut keys: Vec<&String> = stored.keys().collect();
    keys.sort();
    let outage = || StoreError::Unavailable(Cause::new("staged outage"));
    faults.fail(Op::Get, Point::Before, Some(keys[400]), outage(), 1);

    let response = reqwest::get(format!("{}/jwt/v1/pack?max=-1", server.url()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.bytes().await.is_err(),
        "a pack cut by a store error must not end like a complete body"
    );

    faults.fail(Op::List, Point::Before, None, outage(), 1);
    let response = reqwest::get(format!("{}/jwt/v1/pack?max=-1", server.url()))
        .await
        .unwrap();
    assert_eq!(response.status(), 503);

    // Once the store is back the pack is whole again.
    let body = reqwest::get(format!("{}/jwt/v1/pack?max=-1", server.url()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(keys_of(&body, &stored).len(), stored.len());
}
