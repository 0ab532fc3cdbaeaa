//! Hostile HTTP clients against an in-process server on 127.0.0.1: connections that trickle a
//! body are cut at `http { readtimeout }` while GETs keep answering.

use std::time::Duration;

use nas_server::config::{Config, StoreKind};
use nas_server::server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;
use common::Operator;

const SLOW_CLIENTS: usize = 40;

async fn start(dir: &std::path::Path, op: &Operator, read_timeout: Duration) -> Server {
    std::fs::write(dir.join("operator.jwt"), &op.jwt).unwrap();
    let mut config = Config::default();
    config.http.host = "127.0.0.1".into();
    config.http.port = 0;
    config.http.read_timeout = read_timeout;
    config.store.kind = StoreKind::Dir;
    config.store.dir = dir.join("jwt");
    config.operator_jwt_path = Some(dir.join("operator.jwt"));
    Server::start(&config).await.unwrap()
}

/// Sends a POST head announcing 1 MiB, then one byte every 100 ms until the server hangs up;
/// returns what the server answered. Bounded: gives up after 15 s.
async fn trickle(port: u16, key: String) -> (bool, String) {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = format!(
        "POST /jwt/v1/accounts/{key} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1048576\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let (mut read, mut write) = conn.into_split();
    let writer = tokio::spawn(async move {
        for _ in 0..150 {
            if write.write_all(b"e").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(15), read.read_to_end(&mut answer))
        .await
        .is_ok();
    writer.abort();
    (closed, String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test]
async fn slow_bodies_are_cut_at_the_read_timeout_while_gets_keep_answering() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("slow");
    let server = start(tmp.path(), &op, Duration::from_millis(1000)).await;
    let (acc, jwt) = op.account("A");
    let key = acc.public_key().as_str().to_owned();
    let client = reqwest::Client::new();
    let posted = client
        .post(format!("{}/jwt/v1/accounts/{key}", server.url()))
        .body(jwt.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    let port = server.http_addr.port();
    let slow: Vec<_> = (0..SLOW_CLIENTS)
        .map(|_| tokio::spawn(trickle(port, key.clone())))
        .collect();
    // While they trickle, GETs are answered.
    for _ in 0..20 {
        let res = client
            .get(format!("{}/jwt/v1/accounts/{key}", server.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.text().await.unwrap(), jwt);
    }
    for s in slow {
        let (closed, answer) = s.await.unwrap();
        assert!(closed, "a slow-body connection stayed open");
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );
    }
    assert_eq!(
        server.store.get_account(&key).await.unwrap().as_deref(),
        Some(jwt.as_bytes()),
        "nothing stored from the cut requests"
    );
    server.stop().await;
}

/// Activations are an authenticated write now: only accounts this server holds (or their
/// signing keys) may issue them, only valid ones are kept, and newer wins per hash id.
#[tokio::test]
async fn activations_need_a_served_issuer_validity_and_a_newer_iat() {
    use nas_jwt::{encode, ActivationClaims, KeyRole, SigningKey};
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("activations");
    let server = start(tmp.path(), &op, Duration::from_secs(5)).await;
    let client = reqwest::Client::new();
    let post = |body: String| {
        let (client, url) = (
            client.clone(),
            format!("{}/jwt/v1/activations", server.url()),
        );
        async move {
            let res = client.post(url).body(body).send().await.unwrap();
            (res.status().as_u16(), res.text().await.unwrap())
        }
    };
    let (exporter, exporter_jwt) = op.account("EXPORTER");
    let importer = SigningKey::generate(KeyRole::Account);
    let activation = |signer: &SigningKey, iat: i64, exp: i64| {
        let mut claims = ActivationClaims::new(importer.public_key().as_str(), "grant");
        claims.nats.subject = "svc.orders".into();
        claims.nats.kind = "service".into();
        claims.exp = exp;
        encode(&mut claims, signer, iat).unwrap()
    };
    let now = common::now();
    let first = activation(&exporter, now, 0);
    // The exporter is not held yet: refused, nothing stored.
    let (status, body) = post(first.clone()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("untrusted activation issuer"), "{body}");
    let posted = client
        .post(format!(
            "{}/jwt/v1/accounts/{}",
            server.url(),
            exporter.public_key()
        ))
        .body(exporter_jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    // Any other key pair still gets nowhere.
    let stranger = SigningKey::generate(KeyRole::Account);
    assert_eq!(post(activation(&stranger, now, 0)).await.0, 400);
    // Expired: refused.
    let (status, body) = post(activation(&exporter, now - 20, now - 10)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("expired"), "{body}");
    // Valid: stored and served byte for byte.
    assert_eq!(post(first.clone()).await.0, 200);
    let claims = nas_jwt::decode(first.as_bytes())
        .unwrap()
        .into_activation()
        .unwrap()
        .1;
    let hash = nas_jwt::activation_hash_id(&claims).unwrap();
    let got = client
        .get(format!("{}/jwt/v1/activations/{hash}", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.text().await.unwrap(), first);
    // Newer replaces; older is refused and leaves the newer in place.
    let newer = activation(&exporter, now + 5, 0);
    assert_eq!(post(newer.clone()).await.0, 200);
    let (status, body) = post(first).await;
    assert_eq!(status, 409, "{body}");
    let stored = server.store.get_activation(&hash).await.unwrap().unwrap();
    assert_eq!(stored, newer.as_bytes());
    server.stop().await;
}
