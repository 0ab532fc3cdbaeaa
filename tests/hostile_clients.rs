//! Hostile HTTP clients against an in-process server on 127.0.0.1: connections that trickle a
//! body are cut at `http { readtimeout }` while GETs keep answering.

use std::time::Duration;

use nas_server::config::{Config, DirStore, StoreConfig};
use nas_server::server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;
use common::Operator;

const SLOW_CLIENTS: usize = 40;

async fn start(dir: &std::path::Path, op: &Operator, read_timeout: Duration) -> Server {
    start_with(dir, op, |c| c.http.read_timeout = read_timeout).await
}

async fn start_with(
    dir: &std::path::Path,
    op: &Operator,
    tweak: impl FnOnce(&mut Config),
) -> Server {
    std::fs::write(dir.join("operator.jwt"), &op.jwt).unwrap();
    let mut config = Config::default();
    config.http.host = "127.0.0.1".into();
    config.http.port = 0;
    config.store = StoreConfig::Dir(DirStore::new(dir.join("jwt")));
    config.operator_jwt_path = Some(dir.join("operator.jwt"));
    tweak(&mut config);
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

/// Reads one counter or gauge from the server's `/metrics`.
async fn metric(server: &Server, name: &str) -> i64 {
    let base = match server.metrics_addr {
        Some(addr) => format!("http://{addr}"),
        None => server.url(),
    };
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

/// Polls a metric until `done` holds (bounded: 20 s), returning its last value.
async fn await_metric(server: &Server, name: &str, done: impl Fn(i64) -> bool) -> i64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let value = metric(server, name).await;
        if done(value) || tokio::time::Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A raw GET on a connection whose receive buffer is tiny, so the server's writes stall as soon
/// as the kernel's buffers are full.
async fn stalled_get(port: u16, path: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut conn = socket
        .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    conn.write_all(head.as_bytes()).await.unwrap();
    conn
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_at_the_write_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("stall");
    let server = start_with(tmp.path(), &op, |c| {
        c.http.write_timeout = Duration::from_millis(500)
    })
    .await;
    // Ten account JWTs of ~800 KB: a PACK of 8 MB is more than loopback's buffers (4 MiB at
    // most for the sender) hold for a receiver with a 4 KiB window.
    let client = reqwest::Client::new();
    let mut total = 0;
    for i in 0..10 {
        let key = nas_jwt::nkey::SigningKey::generate(nas_jwt::nkey::KeyRole::Account);
        let mut claims =
            nas_jwt::AccountClaims::new_account(key.public_key().as_str(), &format!("big{i}"));
        claims.nats.common.tags = vec!["t".repeat(600_000)];
        let jwt = nas_jwt::encode(&mut claims, &op.signing_key, common::now()).unwrap();
        total += jwt.len();
        let url = format!(
            "{}/jwt/v1/accounts/{}",
            server.url(),
            key.public_key().as_str()
        );
        let res = client.post(&url).body(jwt).send().await.unwrap();
        assert_eq!(res.status(), 200);
    }

    let mut stalled = stalled_get(server.http_addr.port(), "/jwt/v1/pack").await;
    let cut = await_metric(&server, "nas_http_write_timeouts_total", |n| n >= 1).await;
    assert_eq!(cut, 1, "the stalled connection was not cut");
    // Reading now drains what the kernel held, then the connection ends short of the body.
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stalled.read_to_end(&mut got))
        .await
        .expect("the server closed the connection");
    assert!(got.len() < total, "{} of {total} bytes arrived", got.len());
    // A reader that reads gets all of it.
    let pack = client
        .get(format!("{}/jwt/v1/pack", server.url()))
        .send()
        .await
        .unwrap();
    assert!(pack.bytes().await.unwrap().len() > total);
    server.stop().await;
}

#[tokio::test]
async fn connections_over_maxconnections_wait_for_a_free_slot() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("conns");
    let server = start_with(tmp.path(), &op, |c| {
        c.http.workers = 1;
        c.http.max_connections = 4;
        c.http.read_timeout = Duration::from_secs(60);
        // Metrics on their own listener, so reading them takes no API slot.
        c.metrics.listen = Some("127.0.0.1:0".into());
    })
    .await;
    let port = server.http_addr.port();
    let mut holders = Vec::new();
    for _ in 0..4 {
        holders.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    let open = await_metric(
        &server,
        "nas_http_open_connections{listener=\"api\"}",
        |n| n == 4,
    )
    .await;
    assert_eq!(open, 4, "all four holders were accepted");
    let freed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let waiting = {
        let freed = freed.clone();
        tokio::spawn(async move {
            let res = tokio::task::spawn_blocking(move || {
                nas_testkit::http_request(port, "GET", "/jwt/v1/accounts/", &[], b"")
            })
            .await
            .unwrap();
            (
                res.map(|r| r.status),
                freed.load(std::sync::atomic::Ordering::SeqCst),
            )
        })
    };
    // Time for an unbounded server to answer (which fails the test below); a bounded one
    // cannot answer until a slot frees.
    tokio::time::sleep(Duration::from_millis(300)).await;
    freed.store(true, std::sync::atomic::Ordering::SeqCst);
    holders.clear();
    let (status, after_free) = waiting.await.unwrap();
    assert_eq!(status.unwrap(), 200);
    assert!(
        after_free,
        "a connection over the limit was served while all slots were held"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_keepalive_connection_closes_after_maxkeepaliverequests() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("ka");
    let server = start_with(tmp.path(), &op, |c| c.http.max_keepalive_requests = 3).await;
    let mut conn = TcpStream::connect(("127.0.0.1", server.http_addr.port()))
        .await
        .unwrap();
    let request = b"GET /jwt/v1/accounts/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    for _ in 0..3 {
        conn.write_all(request).await.unwrap();
    }
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut all))
        .await
        .expect("the server closes after the third response")
        .unwrap();
    let text = String::from_utf8_lossy(&all).to_lowercase();
    assert_eq!(text.matches("http/1.1 200").count(), 3, "{text}");
    assert_eq!(text.matches("connection: close").count(), 1, "{text}");
    server.stop().await;
}

#[tokio::test]
async fn stop_waits_for_a_stuck_request_no_longer_than_the_shutdown_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("drain");
    let server = start_with(tmp.path(), &op, |c| {
        c.http.read_timeout = Duration::from_secs(60);
        c.http.shutdown_timeout = Duration::from_secs(1);
    })
    .await;
    let (acc, _) = op.account("A");
    let port = server.http_addr.port();
    let stuck = tokio::spawn(trickle(port, acc.public_key().as_str().to_owned()));
    // The metrics request counts itself: 2 means the stuck POST is in its handler.
    let in_flight = await_metric(&server, "nas_http_requests_in_flight", |n| n >= 2).await;
    assert_eq!(in_flight, 2);
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(15), server.stop())
        .await
        .expect("stop is bounded");
    let (closed, _) = stuck.await.unwrap();
    assert!(
        closed,
        "the stuck request's connection was closed by the stop"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
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

/// One account's keys cannot fill the store: past `maxactivationsperaccount` distinct
/// activations a new one is refused (403, nothing stored) while re-issuing a held one still
/// works; and a token planted in the store by hand that no held account issued is never served.
#[tokio::test]
async fn activations_are_bounded_per_account_and_served_only_when_they_verify() {
    use nas_jwt::{encode, ActivationClaims, KeyRole, SigningKey};
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("bounded");
    let server = start_with(tmp.path(), &op, |c| c.max_activations_per_account = 2).await;
    let client = reqwest::Client::new();
    let (exporter, exporter_jwt) = op.account("EXPORTER");
    let url = format!("{}/jwt/v1/accounts/{}", server.url(), exporter.public_key());
    assert_eq!(
        client
            .post(&url)
            .body(exporter_jwt)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let grant = |signer: &SigningKey, importer: &str, iat: i64| {
        let mut claims = ActivationClaims::new(importer, "grant");
        claims.nats.subject = "svc.orders".into();
        claims.nats.kind = "service".into();
        let token = encode(&mut claims, signer, iat).unwrap();
        let hash = nas_jwt::activation_hash_id(&claims).unwrap();
        (token, hash)
    };
    let post = |token: String| {
        let client = client.clone();
        let url = format!("{}/jwt/v1/activations", server.url());
        async move {
            let res = client.post(url).body(token).send().await.unwrap();
            (res.status().as_u16(), res.text().await.unwrap())
        }
    };
    let importers: Vec<String> = (0..3)
        .map(|_| {
            SigningKey::generate(KeyRole::Account)
                .public_key()
                .as_str()
                .to_owned()
        })
        .collect();
    let now = common::now();
    let (first, first_hash) = grant(&exporter, &importers[0], now);
    assert_eq!(post(first).await.0, 200);
    assert_eq!(post(grant(&exporter, &importers[1], now).0).await.0, 200);
    let (third, third_hash) = grant(&exporter, &importers[2], now);
    let (status, body) = post(third).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("already holds 2 activations"), "{body}");
    assert!(server
        .store
        .get_activation(&third_hash)
        .await
        .unwrap()
        .is_none());
    // A held one may still be replaced by a newer one.
    let (newer, newer_hash) = grant(&exporter, &importers[0], now + 5);
    assert_eq!(newer_hash, first_hash);
    assert_eq!(post(newer.clone()).await.0, 200);
    let got = client
        .get(format!("{}/jwt/v1/activations/{first_hash}", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(got.text().await.unwrap(), newer);

    // Planted by hand: correctly self-signed by an account this server does not hold.
    let stranger = SigningKey::generate(KeyRole::Account);
    let (planted, planted_hash) = grant(&stranger, &importers[2], now);
    let dir = tmp.path().join("jwt").join("activations");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{planted_hash}.jwt")), &planted).unwrap();
    assert!(server
        .store
        .get_activation(&planted_hash)
        .await
        .unwrap()
        .is_some());
    let res = client
        .get(format!(
            "{}/jwt/v1/activations/{planted_hash}",
            server.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    server.stop().await;
}
