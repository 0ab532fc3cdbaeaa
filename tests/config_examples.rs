//! Config files: every example in `config/` parses without warnings, and the Go server's example
//! config from the spec starts our server unchanged (same keys, mixed case).

use std::path::Path;

use nas_server::config::Config;
use nas_server::server::Server;

#[test]
fn every_example_config_parses_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("conf") {
            continue;
        }
        let (_, warnings) =
            Config::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(warnings.is_empty(), "{}: {warnings:?}", path.display());
        seen += 1;
    }
    assert!(seen >= 4, "only {seen} example configs");
}

#[tokio::test]
async fn the_go_servers_example_config_starts_our_server() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt");
    let tmp = tempfile::tempdir().unwrap();
    // The spec's §5 example, with its paths pointed at real files and its listener at an
    // ephemeral local port; every key and its spelling are the Go server's.
    let text = format!(
        r#"
# nats-account-server
OperatorJWTPath: "{op}"
systemaccountjwtpath: "{sys}"
http: {{ host: "127.0.0.1", port: 0, readtimeout: 5000, writetimeout: 5000 }}
store: {{ dir: "{store}", shard: false, cleanupinterval: 60000 }}
logging: {{ debug: false, trace: false, time: true, colors: false, pid: true }}
nats: {{
  servers: ["nats://127.0.0.1:1"]
  usercredentials: "{creds}"
  ConnectTimeout: 5000
  ReconnectWait: 10000
}}
"#,
        op = fixtures.join("operator_signing_keys.jwt").display(),
        sys = fixtures.join("account_sys.jwt").display(),
        store = tmp.path().join("jwt").display(),
        creds = fixtures.join("user_sys.creds").display(),
    );
    let path = tmp.path().join("nas.conf");
    std::fs::write(&path, text).unwrap();
    let (config, warnings) = Config::from_file(&path).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let server = Server::start(&config).await.unwrap();
    let res = reqwest::get(format!("{}/jwt/v1/accounts/", server.url()))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let sys: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures.join("manifest.json")).unwrap()).unwrap();
    let sys_key = sys["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == "account_sys")
        .unwrap()["sub"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = reqwest::get(format!("{}/jwt/v1/accounts/{sys_key}", server.url()))
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the configured system account is served");
    server.stop().await;
}
