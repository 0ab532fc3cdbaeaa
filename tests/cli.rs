//! The binary: Go-compatible flags, exit codes, and the `init` quick start followed step by step
//! with a real nats-server (the README's quick start, as a test).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use nas_testkit::{free_port, require_nats_servers, NatsServer};

const BIN: &str = env!("CARGO_BIN_EXE_nats-account-server");

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn flags_and_exit_codes() {
    let (code, text) = run(&["--help"]);
    assert_eq!(code, 0, "{text}");
    for flag in [
        "--dir",
        "--operator",
        "--nats",
        "--creds",
        "--primary",
        "--hp",
        "--nsc",
        "--ro",
        "--dump",
        "-D",
        "-V",
        "--DV",
        "--config",
    ] {
        assert!(
            text.contains(flag),
            "--help does not mention {flag}:\n{text}"
        );
    }
    assert_eq!(run(&["-h"]).0, 0);
    let (code, text) = run(&["--version"]);
    assert_eq!(code, 0);
    assert!(text.contains(env!("CARGO_PKG_VERSION")), "{text}");
    let (code, text) = run(&["-hp", "127.0.0.1"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("error parsing hostport"), "{text}");
    let (code, text) = run(&["-hp=127.0.0.1:blam"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("error parsing hostport"), "{text}");
    let (code, text) = run(&["-c", "/nonexistent/nas.conf"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("/nonexistent/nas.conf"), "{text}");
    assert_eq!(run(&["--no-such-flag"]).0, 2);
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("bad.conf");
    std::fs::write(&conf, "http {\n  port: \"abc\"\n}\n").unwrap();
    let (code, text) = run(&["-c", conf.to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("port") && text.contains(":2:"),
        "config errors name key and position: {text}"
    );
}

/// Waits for the server's resolver line and returns the base URL it prints.
fn wait_for_resolver_line(child: &mut Child) -> String {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("resolver: URL(").nth(1) {
                let _ = tx.send(rest.trim_end_matches(')').to_owned());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("server printed its resolver line")
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn quick_start_init_then_a_real_nats_server_uses_it() {
    let tmp = tempfile::tempdir().unwrap();
    let qs = tmp.path().join("qs");
    let port = free_port();
    let nats_port = free_port();
    let (code, text) = run(&[
        "init",
        "--dir",
        qs.to_str().unwrap(),
        "--port",
        &port.to_string(),
        "--nats-port",
        &nats_port.to_string(),
    ]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("nas.conf") && text.contains("nats-server.conf"),
        "prints the next commands: {text}"
    );
    assert!(
        text.contains("testing"),
        "says the keys are for testing: {text}"
    );
    for secret in ["app.creds", "sys.creds", "keys/operator.nk", "keys/APP.nk"] {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(qs.join(secret)).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{secret}");
    }
    assert_eq!(
        run(&["init", "--dir", qs.to_str().unwrap()]).0,
        1,
        "init refuses to overwrite"
    );

    let mut server = Command::new(BIN)
        .args(["-c", qs.join("nas.conf").to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let url = wait_for_resolver_line(&mut server);
    let server = Killed(server);
    assert_eq!(url, format!("http://localhost:{port}/jwt/v1/accounts/"));

    for bin in require_nats_servers() {
        // The generated nats-server config, used as written (the test kit only adds its own port).
        let config = std::fs::read_to_string(qs.join("nats-server.conf")).unwrap();
        let config = config.replace(&format!("listen: 127.0.0.1:{nats_port}\n"), "");
        let nats = NatsServer::builder(&bin).config(config).start();
        let nc = async_nats::ConnectOptions::with_credentials_file(qs.join("app.creds"))
            .await
            .unwrap()
            .connect(nats.url())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", bin.reported_version, nats.log()));
        let mut sub = nc.subscribe("hello").await.unwrap();
        nc.flush().await.unwrap();
        nc.publish("hello", "world".into()).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let msg = tokio::time::timeout_at(deadline.into(), sub.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&msg.payload[..], b"world");
    }
    drop(server);
}

/// Starts the binary with `-DV --dump` on `conf`, collects every line it logs until it prints
/// its resolver line (or exits), and returns them.
fn dump_lines(conf: &std::path::Path) -> String {
    let mut child = Command::new(BIN)
        .args(["-DV", "--dump", "-c", conf.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let child = Killed(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut all = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                let done = line.contains("resolver: URL(");
                all.push_str(&line);
                all.push('\n');
                if done {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    drop(child);
    all
}

/// No secret reaches a log line, `-dump` included: a Redis password, a NATS password and an S3
/// secret key, each in a config the server starts with (or fails to start with, loudly).
#[cfg(all(feature = "redis", feature = "s3"))]
#[test]
fn no_secret_in_any_log_line_with_dump() {
    let redis = nas_testkit::RedisServer::start_with_args(&["--requirepass", "redis-s3cret-pw"]);
    let tmp = tempfile::tempdir().unwrap();
    let closed = free_port();
    let redis_conf = tmp.path().join("redis.conf");
    std::fs::write(
        &redis_conf,
        format!(
            "http {{ host: \"127.0.0.1\", port: {} }}\nstore {{ type: redis, url: \"redis://:redis-s3cret-pw@127.0.0.1:{}/\" }}\nnats {{ servers: [\"nats://bob:nats-s3cret-pw@127.0.0.1:{closed}\"] }}\n",
            free_port(),
            redis.port()
        ),
    )
    .unwrap();
    let s3_conf = tmp.path().join("s3.conf");
    std::fs::write(
        &s3_conf,
        format!(
            "http {{ host: \"127.0.0.1\", port: {} }}\nstore {{ type: s3, bucket: \"b\", endpoint: \"http://127.0.0.1:{closed}\", allowhttp: true, accesskeyid: \"AKIDEXAMPLE\", secretaccesskey: \"aws-s3cret-key\" }}\n",
            free_port()
        ),
    )
    .unwrap();
    for (conf, secrets) in [
        (&redis_conf, &["redis-s3cret-pw", "nats-s3cret-pw"][..]),
        (&s3_conf, &["aws-s3cret-key"][..]),
    ] {
        let lines = dump_lines(conf);
        assert!(
            lines.contains("effective configuration"),
            "-dump printed the configuration: {lines}"
        );
        for secret in secrets {
            assert!(!lines.contains(secret), "{secret} logged:\n{lines}");
        }
    }
}
