//! HTTPS with a configured certificate, metrics on their own listener, and the process reacting
//! to SIGHUP (config reload) and SIGTERM (graceful stop).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use nas_server::config::{Config, StoreConfig};
use nas_server::server::Server;

fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert_pem = cert.cert.pem();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, &cert_pem).unwrap();
    std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
    (c, k, cert_pem.into_bytes())
}

#[tokio::test]
async fn https_and_a_separate_metrics_listener() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key, pem) = self_signed(tmp.path());
    let mut config = Config::default();
    config.http.host = "127.0.0.1".into();
    config.http.port = 0;
    config.http.tls_cert = Some(cert);
    config.http.tls_key = Some(key);
    config.store = StoreConfig::Memory;
    config.metrics.listen = Some("127.0.0.1:0".into());
    let server = Server::start(&config).await.unwrap();
    assert!(server.url().starts_with("https://"));
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let res = client
        .get(format!(
            "https://localhost:{}/jwt/v1/accounts/",
            server.http_addr.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Plain HTTP on the TLS port does not get an answer.
    assert!(reqwest::get(format!(
        "http://127.0.0.1:{}/jwt/v1/accounts/",
        server.http_addr.port()
    ))
    .await
    .map_or(true, |r| r.status() != 200));
    // Metrics moved to their own listener: 404 on the API port, served on the metrics port.
    let res = client
        .get(format!(
            "https://localhost:{}/metrics",
            server.http_addr.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let metrics_addr = server.metrics_addr.unwrap();
    let text = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("nas_http_requests_total"), "{text}");
    server.stop().await;

    // A key that does not match its certificate is a clear startup error.
    let mut bad = config.clone();
    bad.http.tls_key = Some(tmp.path().join("missing.pem"));
    let err = Server::start(&bad)
        .await
        .err()
        .expect("missing key refused");
    assert!(err.to_string().contains("TLS is not configured"), "{err}");
}

/// The binary started on `conf`, its log lines read as they come; killed if the test fails
/// before it ends it.
struct Logged {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Logged {
    fn start(conf: &std::path::Path) -> Logged {
        let mut child = Command::new(env!("CARGO_BIN_EXE_nats-account-server"))
            .args(["-c", conf.to_str().unwrap()])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Logged { child, lines }
    }

    /// Whether a line containing `needle` arrives within 20 s.
    fn wait_for(&self, needle: &str) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return true,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        false
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sighup_reloads_the_config_and_sigterm_stops_gracefully() {
    let tmp = tempfile::tempdir().unwrap();
    let port = nas_testkit::free_port();
    let conf = tmp.path().join("nas.conf");
    let write_conf = |cache: u32| {
        std::fs::write(
            &conf,
            format!("http {{ host: \"127.0.0.1\", port: {port} }}\nstore {{ dir: \"{}\" }}\ncache {{ maxentries: {cache} }}\n", tmp.path().join("jwt").display()),
        )
        .unwrap()
    };
    write_conf(10);
    let mut server = Logged::start(&conf);
    let wait_for = |needle: &str| server.wait_for(needle);
    assert!(wait_for("resolver: URL("), "server did not start");
    write_conf(20);
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    assert!(wait_for("reloading configuration"), "no reload on SIGHUP");
    assert!(
        wait_for("resolver: URL("),
        "server did not come back after SIGHUP"
    );
    let probe = nas_testkit::http_request(port, "GET", "/jwt/v1/accounts/", &[], b"").unwrap();
    assert_eq!(probe.status, 200);
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = server.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "graceful stop exits 0");
}

#[test]
fn a_new_operator_signing_key_is_trusted_once_the_file_changes_without_a_signal() {
    use nas_jwt::{encode, AccountClaims, KeyRole, OperatorClaims, SigningKey};
    let tmp = tempfile::tempdir().unwrap();
    let port = nas_testkit::free_port();
    let identity = SigningKey::generate(KeyRole::Operator);
    let first = SigningKey::generate(KeyRole::Operator);
    let operator_jwt = |keys: &[&SigningKey]| {
        let mut claims = OperatorClaims::new(identity.public_key().as_str(), "rotating");
        claims.nats.signing_keys = keys
            .iter()
            .map(|k| k.public_key().as_str().to_owned())
            .collect();
        encode(&mut claims, &identity, nas_jwt::unix_now()).unwrap()
    };
    let operator = tmp.path().join("operator.jwt");
    std::fs::write(&operator, operator_jwt(&[&first])).unwrap();
    let conf = tmp.path().join("nas.conf");
    std::fs::write(
        &conf,
        format!(
            "operator: \"{}\"\nhttp {{ host: \"127.0.0.1\", port: {port} }}\nstore {{ dir: \"{}\" }}\n",
            operator.display(),
            tmp.path().join("jwt").display()
        ),
    )
    .unwrap();
    let server = Logged::start(&conf);
    let wait_for = |needle: &str| server.wait_for(needle);
    assert!(wait_for("resolver: URL("), "server did not start");

    let rotated = SigningKey::generate(KeyRole::Operator);
    let account = SigningKey::generate(KeyRole::Account);
    let mut claims = AccountClaims::new_account(account.public_key().as_str(), "NEW");
    let jwt = encode(&mut claims, &rotated, nas_jwt::unix_now()).unwrap();
    let path = format!("/jwt/v1/accounts/{}", account.public_key());
    let post = || nas_testkit::http_request(port, "POST", &path, &[], jwt.as_bytes()).unwrap();
    assert_eq!(post().status, 400, "a key the operator does not list yet");

    // `nsc edit operator --sk generate`, delivered as Kubernetes does: a new file renamed over.
    let staged = tmp.path().join(".operator.jwt.new");
    std::fs::write(&staged, operator_jwt(&[&first, &rotated])).unwrap();
    std::fs::rename(&staged, &operator).unwrap();
    assert!(
        wait_for("the operator JWT changed"),
        "the change was not seen"
    );
    assert!(wait_for("resolver: URL("), "server did not come back");
    assert_eq!(post().status, 200, "the new signing key is trusted");
}
