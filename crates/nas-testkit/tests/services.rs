//! Starts every real service once and checks that it answers. These tests
//! fail (with the install hint) when a service is not installed.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use nas_testkit::{
    find_moto_server, http_request, require_nats, require_nats_servers, require_redis_server,
    NatsServer, NatsVersion, RedisCluster, RedisServer, S3Server,
};

/// Connects to a NATS server, returns its INFO line after a CONNECT/PING/PONG
/// round trip.
fn nats_handshake(port: u16) -> std::io::Result<String> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut info = String::new();
    reader.read_line(&mut info)?;
    assert!(info.starts_with("INFO "), "unexpected greeting {info:?}");
    (&stream).write_all(b"CONNECT {\"verbose\":false}\r\nPING\r\n")?;
    let mut pong = String::new();
    reader.read_line(&mut pong)?;
    assert_eq!(pong, "PONG\r\n");
    Ok(info)
}

/// Sends one RESP command and reads one reply line.
fn redis_cmd(port: u16, parts: &[&str]) -> String {
    let mut cmd = format!("*{}\r\n", parts.len());
    for p in parts {
        cmd.push_str(&format!("${}\r\n{p}\r\n", p.len()));
    }
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect redis");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    (&stream).write_all(cmd.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    if line.starts_with('$') && line.trim() != "$-1" {
        let mut value = String::new();
        reader.read_line(&mut value).unwrap();
        return value.trim_end().to_string();
    }
    line.trim_end().to_string()
}

#[test]
fn both_pinned_nats_versions_are_installed() {
    let bins = require_nats_servers();
    let versions: Vec<_> = bins.iter().map(|b| b.version).collect();
    assert_eq!(versions, NatsVersion::ALL);
    for b in &bins {
        if std::env::var_os(b.version.env_var()).is_none() {
            assert_eq!(
                b.reported_version,
                b.version.pinned(),
                "{}",
                b.path.display()
            );
        }
    }
}

#[test]
fn nats_servers_start_answer_stop_and_restart() {
    for bin in require_nats_servers() {
        // `listen` in the config must be overridden by the kit's own port.
        let mut server = NatsServer::start(&bin, "listen: 0.0.0.0:4222\nmax_payload: 65536\n");
        let port = server.port();
        assert_ne!(port, 4222);
        assert_eq!(server.url(), format!("nats://127.0.0.1:{port}"));
        let info = nats_handshake(port).expect("handshake");
        let want = format!("\"version\":\"{}\"", bin.reported_version);
        assert!(info.contains(&want), "{info}");
        assert!(info.contains("\"max_payload\":65536"), "{info}");
        assert!(server.log().contains("Server is ready"));

        server.stop();
        assert!(!server.is_running());
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());

        server.restart();
        assert!(server.is_running());
        assert_eq!(server.port(), port);
        nats_handshake(port).expect("handshake after restart");
        assert_eq!(server.log().matches("Server is ready").count(), 2);
    }
}

#[test]
fn nats_builder_files_dir_placeholder_jetstream_monitoring_and_reload() {
    let bin = require_nats(NatsVersion::V2_15);
    let builder = NatsServer::builder(&bin).file("conf/extra.conf", "max_connections: 100\n");
    let extra = builder.dir().join("conf/extra.conf");
    assert!(extra.is_file());
    let server = builder
        // nats-server resolves `include` relative to the config file (in dir()).
        .config("include \"conf/extra.conf\"\npid_file: \"{{dir}}/nats.pid\"\njetstream {}\n")
        .monitoring()
        .start();
    assert!(server.dir().join("jetstream").is_dir(), "{}", server.log());
    let pid = std::fs::read_to_string(server.dir().join("nats.pid")).expect("pid file");
    assert_eq!(pid.trim(), server.pid().unwrap().to_string());
    let mport: u16 = server
        .monitoring_url()
        .expect("monitoring enabled")
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let varz = http_request(mport, "GET", "/varz", &[], b"").expect("GET /varz");
    assert_eq!(varz.status, 200);
    let varz = varz.text();
    assert!(varz.contains("\"max_connections\": 100"), "{varz}");
    assert!(
        varz.contains(&format!("\"port\": {}", server.port())),
        "{varz}"
    );

    std::fs::write(server.config_path(), "max_payload: 4096\n").unwrap();
    server.reload().expect("reload");
    let info = nats_handshake(server.port()).unwrap();
    assert!(info.contains("\"max_payload\":4096"), "{info}");
}

#[test]
#[should_panic(expected = "exited during startup")]
fn nats_bad_config_panics_with_log() {
    let bin = require_nats(NatsVersion::V2_9);
    let _ = NatsServer::start(&bin, "this is { not valid");
}

#[tokio::test]
async fn usable_from_tokio_tests() {
    use tokio::io::AsyncBufReadExt;
    let bin = require_nats(NatsVersion::V2_15);
    let server = NatsServer::start(&bin, "");
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port()))
        .await
        .unwrap();
    let mut lines = tokio::io::BufReader::new(stream).lines();
    let info = lines.next_line().await.unwrap().unwrap();
    assert!(info.starts_with("INFO "), "{info}");
}

#[test]
fn redis_server_answers_and_restarts_empty() {
    let bin = require_redis_server();
    let mut redis = RedisServer::start();
    let port = redis.port();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}/"));
    assert_eq!(redis.binary().path, bin.path);
    assert_eq!(redis_cmd(port, &["PING"]), "+PONG");
    assert_eq!(redis_cmd(port, &["SET", "k", "v"]), "+OK");
    assert_eq!(redis_cmd(port, &["GET", "k"]), "v");

    redis.stop();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    redis.restart();
    assert_eq!(redis.port(), port);
    assert_eq!(redis_cmd(port, &["GET", "k"]), "$-1");
}

#[test]
fn redis_cluster_serves_every_slot_and_stops_on_drop() {
    let cluster = RedisCluster::start(3);
    let ports: Vec<u16> = cluster.nodes().iter().map(|n| n.port()).collect();
    assert_eq!(cluster.urls().len(), 3);
    // Every node sees the same 3-master cluster serving all slots; a key of another node's slot
    // is redirected, not stored.
    for port in &ports {
        assert_eq!(redis_cmd(*port, &["CLUSTER", "COUNTKEYSINSLOT", "0"]), ":0");
        assert!(redis_cmd(*port, &["CLUSTER", "MYID"]).len() >= 40);
    }
    let replies: Vec<String> = ports
        .iter()
        .map(|p| redis_cmd(*p, &["SET", "k", "v"]))
        .collect();
    assert_eq!(
        replies.iter().filter(|r| *r == "+OK").count(),
        1,
        "{replies:?}"
    );
    assert_eq!(
        replies.iter().filter(|r| r.starts_with("-MOVED")).count(),
        2,
        "{replies:?}"
    );
    drop(cluster);
    for port in ports {
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "{port}");
    }
}

#[test]
fn redis_extra_args_apply() {
    let redis = RedisServer::start_with_args(&["--requirepass", "sekret"]);
    assert!(redis_cmd(redis.port(), &["GET", "k"]).starts_with("-NOAUTH"));
}

#[test]
fn s3_server_honours_conditional_writes_and_restart_loses_data() {
    let moto = find_moto_server().unwrap_or_else(|e| panic!("{e}"));
    let mut s3 = S3Server::start();
    assert_eq!(s3.endpoint(), format!("http://127.0.0.1:{}", s3.port()));
    assert_eq!(s3.binary().version, moto.version);
    s3.create_bucket("bucket-1");

    let inm = [("If-None-Match", "*")];
    let first = s3.request("PUT", "/bucket-1/key", &inm, b"v1");
    assert_eq!(first.status, 200, "{}", first.text());
    let etag1 = first.header("etag").expect("etag").to_string();
    let second = s3.request("PUT", "/bucket-1/key", &inm, b"v2");
    assert_eq!(second.status, 412, "{}", second.text());
    assert!(second.text().contains("PreconditionFailed"));

    let third = s3.request("PUT", "/bucket-1/key", &[("If-Match", &etag1)], b"v3");
    assert_eq!(third.status, 200, "{}", third.text());
    let stale = s3.request("PUT", "/bucket-1/key", &[("If-Match", &etag1)], b"v4");
    assert_eq!(stale.status, 412, "{}", stale.text());
    let got = s3.request("GET", "/bucket-1/key", &[], b"");
    assert_eq!((got.status, got.text().as_str()), (200, "v3"));

    s3.restart();
    let gone = s3.request("GET", "/bucket-1/key", &[], b"");
    assert_eq!(gone.status, 404, "{}", gone.text());
    s3.create_bucket("bucket-1");
    s3.reset();
    let gone = s3.request("PUT", "/bucket-1/key", &[], b"x");
    assert_eq!(gone.status, 404, "{}", gone.text());
}
