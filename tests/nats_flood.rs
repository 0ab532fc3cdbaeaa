//! A system user floods the resolver subjects with garbage and with messages as large as
//! nats-server allows; the account server (the real binary, so its memory can be read from
//! `/proc`) keeps its memory bounded and keeps answering LOOKUPs.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nas_testkit::{free_port, require_nats_servers, NatsServer};

mod common;
use common::{system_user_creds, Operator};

const BIN: &str = env!("CARGO_BIN_EXE_nats-account-server");
/// Messages of 900 KB (nats-server's default max_payload is 1 MiB): 900 MB in all.
const LARGE: usize = 1000;
const SMALL: usize = 20_000;
/// Peak RSS allowed: a subscription queues at most 64 messages (~58 MB of these), the process
/// idles at ~35 MB; an unbounded queue could hold the whole 900 MB flood.
const PEAK_RSS_LIMIT_KIB: u64 = 160 * 1024;

/// The server process, killed when the test ends, panics included.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

#[tokio::test]
async fn a_flood_of_large_and_garbage_messages_leaves_memory_bounded_and_lookups_answered() {
    let bin = require_nats_servers().remove(0);
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("flood");
    let (acc, acc_jwt) = op.account("A");
    std::fs::write(tmp.path().join("operator.jwt"), &op.jwt).unwrap();
    std::fs::write(tmp.path().join("sys.creds"), system_user_creds(&op)).unwrap();
    let nats = NatsServer::builder(&bin)
        .config(format!(
            "operator: {}\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{ {}: {} }}\n",
            op.jwt,
            op.system.public_key(),
            op.system.public_key(),
            op.system_jwt
        ))
        .start();
    let port = free_port();
    let conf = tmp.path().join("nas.conf");
    let mut f = std::fs::File::create(&conf).unwrap();
    writeln!(
        f,
        "operatorjwtpath: \"{}\"\nhttp {{ host: \"127.0.0.1\", port: {port} }}\nstore {{ dir: \"{}\" }}\nnats {{ servers: [\"{}\"], usercredentials: \"{}\" }}",
        tmp.path().join("operator.jwt").display(),
        tmp.path().join("jwt").display(),
        nats.url(),
        tmp.path().join("sys.creds").display(),
    )
    .unwrap();
    let child = Command::new(BIN)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(tmp.path().join("nas.log")).unwrap())
        .spawn()
        .unwrap();
    let child = Child(child);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = client.get(format!("{base}/metrics")).send().await;
        if let Ok(res) = metrics {
            if res.text().await.unwrap().contains("nas_nats_connected 1") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "never connected to NATS");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = format!("{base}/jwt/v1/accounts/{}", acc.public_key());
    assert_eq!(
        client
            .post(&url)
            .body(acc_jwt.clone())
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let before = peak_rss_kib(child.0.id());

    let flooder = async_nats::ConnectOptions::with_credentials_file(tmp.path().join("sys.creds"))
        .await
        .unwrap()
        .connect(nats.url())
        .await
        .unwrap();
    let update = format!("$SYS.REQ.ACCOUNT.{}.CLAIMS.UPDATE", acc.public_key());
    let lookup = format!("$SYS.REQ.ACCOUNT.{}.CLAIMS.LOOKUP", acc.public_key());
    // Ready: the responder answers (its subscriptions may trail the connect event).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match flooder.request(lookup.clone(), bytes::Bytes::new()).await {
            Ok(reply) if reply.payload == acc_jwt.as_bytes() => break,
            other => assert!(
                Instant::now() < deadline,
                "responder never answered: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let large = bytes::Bytes::from(vec![b'x'; 900_000]);
    for i in 0..LARGE {
        flooder
            .publish(update.clone(), large.clone())
            .await
            .unwrap();
        if i % 50 == 0 {
            flooder.flush().await.unwrap();
        }
    }
    for i in 0..SMALL {
        let garbage = format!("{i}.not-a-jwt");
        flooder
            .publish_with_reply(update.clone(), "_INBOX.nobody", garbage.clone().into())
            .await
            .unwrap();
        flooder
            .publish_with_reply(lookup.clone(), "_INBOX.nobody", garbage.into())
            .await
            .unwrap();
    }
    flooder.flush().await.unwrap();

    // The responder still answers, with the stored JWT. Requests that meet a full queue are
    // shed (as a nats-server's own LOOKUP would be, and it asks again): ask until answered.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut asked = 0;
    let reply = loop {
        asked += 1;
        let answer = tokio::time::timeout(
            Duration::from_secs(2),
            flooder.request(lookup.clone(), bytes::Bytes::new()),
        )
        .await;
        match answer {
            Ok(Ok(reply)) => break reply,
            other if Instant::now() > deadline => {
                let log = std::fs::read_to_string(tmp.path().join("nas.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                panic!(
                    "no LOOKUP answer after the flood ({other:?}); log, newest first:\n{}",
                    tail.join("\n")
                );
            }
            _ => {}
        }
    };
    eprintln!("LOOKUP answered after the flood at attempt {asked}");
    assert_eq!(reply.payload, acc_jwt.as_bytes());
    let log = std::fs::read_to_string(tmp.path().join("nas.log")).unwrap();
    let refusals = log.matches("refused an update").count();
    assert!(
        refusals < 100,
        "{refusals} refusal lines logged for the flood"
    );
    let peak = peak_rss_kib(child.0.id());
    // The store is untouched by the flood.
    let stored = client.get(&url).send().await.unwrap().text().await.unwrap();
    assert_eq!(stored, acc_jwt);
    drop(child);
    eprintln!("peak RSS before the flood {before} KiB, after {peak} KiB");
    assert!(
        peak < PEAK_RSS_LIMIT_KIB,
        "peak RSS {peak} KiB (before the flood {before} KiB)"
    );
}
