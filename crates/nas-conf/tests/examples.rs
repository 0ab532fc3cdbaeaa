//! The configuration examples of `docs/spec/config-and-cli.md` (account server §5 and the
//! nats-server snippets of §10), plus the shapes the Go account server's docs and tests use.

use nas_conf::{Document, Parser};

fn parse(src: &str) -> Document {
    Parser::new()
        .env(|_| None)
        .parse_str(src)
        .unwrap_or_else(|e| panic!("parse failed: {e}\n--- input ---\n{src}"))
}

/// config-and-cli.md §5.
const ACCOUNT_SERVER_V1: &str = r#"# nats-account-server
OperatorJWTPath: "/etc/nas/operator.jwt"
systemaccountjwtpath: "/etc/nas/SYS.jwt"
primary: "http://primary.example.com:9090"
http: { host: "0.0.0.0", port: 9090, readtimeout: 5000, writetimeout: 5000 }
store: { dir: "/var/lib/nas/jwt", shard: false, cleanupinterval: 60000 }
logging: { debug: false, trace: false, time: true, colors: false, pid: true }
nats: {
  servers: ["nats://a.example.com:4222", "nats://b.example.com:4222"]
  usercredentials: "/etc/nas/sys-user.creds"
  ConnectTimeout: 5000
  ReconnectWait: 10000
}
"#;

#[test]
fn account_server_v1_example() {
    let d = parse(ACCOUNT_SERVER_V1);
    assert_eq!(
        d.root().to_string(),
        concat!(
            r#"{OperatorJWTPath: "/etc/nas/operator.jwt", systemaccountjwtpath: "/etc/nas/SYS.jwt", "#,
            r#"primary: "http://primary.example.com:9090", "#,
            r#"http: {host: "0.0.0.0", port: 9090, readtimeout: 5000, writetimeout: 5000}, "#,
            r#"store: {dir: "/var/lib/nas/jwt", shard: false, cleanupinterval: 60000}, "#,
            r#"logging: {debug: false, trace: false, time: true, colors: false, pid: true}, "#,
            r#"nats: {servers: ["nats://a.example.com:4222", "nats://b.example.com:4222"], "#,
            r#"usercredentials: "/etc/nas/sys-user.creds", ConnectTimeout: 5000, ReconnectWait: 10000}}"#,
        )
    );
    // Looked up the way the account server does (§2).
    assert_eq!(
        d.get("operatorjwtpath").unwrap().as_str(),
        Some("/etc/nas/operator.jwt")
    );
    assert_eq!(
        d.get("SystemAccountJWTPath").unwrap().as_str(),
        Some("/etc/nas/SYS.jwt")
    );
    let nats = d.get("NATS").unwrap().as_map().unwrap();
    assert_eq!(nats.get("connecttimeout").unwrap().as_i64(), Some(5000));
    assert_eq!(nats.get("reconnectwait").unwrap().as_i64(), Some(10000));
    let servers = nats.get("Servers").unwrap().as_array().unwrap();
    assert_eq!(servers.len(), 2);
    assert_eq!((servers[1].pos.line, servers[1].pos.column), (9, 42));
    let logging = d.get("Logging").unwrap().as_map().unwrap();
    assert_eq!(logging.get("pid").unwrap().as_bool(), Some(true));
    assert_eq!(logging.get("colors").unwrap().as_bool(), Some(false));
    // Key positions, for unknown-key warnings.
    let keys: Vec<String> = d
        .iter()
        .map(|(k, _)| format!("{}@{}:{}", k.value, k.pos.line, k.pos.column))
        .collect();
    assert_eq!(
        keys,
        [
            "OperatorJWTPath@2:1",
            "systemaccountjwtpath@3:1",
            "primary@4:1",
            "http@5:1",
            "store@6:1",
            "logging@7:1",
            "nats@8:1"
        ]
    );
}

/// The layout the Go account server's own tests use (tab indentation, closing brace after the
/// last value, trailing space after `{`), and its docs (commas after blocks).
#[test]
fn account_server_go_test_and_doc_shapes() {
    let src = "\n\tOperatorJWTPath: \"X:/some_path/NATS.jwt\"\n\tprimary: \"http://primary.nats.io:5222\"\n\thttp: {\n\t\thost: \"a.nats.io\",\n\t\tport: 9090,\n\t\treadtimeout: 5000,\n\t\twritetimeout: 5000 }\n\tstore: {\n\t\tdir: \"D:/nats/as_store\",\n\t\treadonly: false,\n\t\tshard: false }\n\tlogging: { \n\t\tdebug: true,\n\t\tcolors: true }\n\tnats: { \n\t\tservers: [\"nats://a.nats.io:4243\",\"nats://b.nats.io:4243\"], \n\t\tReconnectWait: 10000\n\t}\n\t";
    assert_eq!(
        parse(src).root().to_string(),
        concat!(
            r#"{OperatorJWTPath: "X:/some_path/NATS.jwt", primary: "http://primary.nats.io:5222", "#,
            r#"http: {host: "a.nats.io", port: 9090, readtimeout: 5000, writetimeout: 5000}, "#,
            r#"store: {dir: "D:/nats/as_store", readonly: false, shard: false}, "#,
            r#"logging: {debug: true, colors: true}, "#,
            r#"nats: {servers: ["nats://a.nats.io:4243", "nats://b.nats.io:4243"], ReconnectWait: 10000}}"#,
        )
    );
    let doc_style = "OperatorJWTPath: \"/users/x/AAA.jwt\",\nhttp {\n    port: 9090\n},\nstore {\n    dir: \"/tmp/as_store\",\n    readonly: false,\n    shard: true\n}\n";
    assert_eq!(
        parse(doc_style).root().to_string(),
        r#"{OperatorJWTPath: "/users/x/AAA.jwt", http: {port: 9090}, store: {dir: "/tmp/as_store", readonly: false, shard: true}}"#
    );
    // Unquoted paths, as generated configs often have them.
    let generated = "operatorjwtpath: /home/u/op.jwt\nhttp {\n    host: 0.0.0.0\n    port: 9090\n}\nstore {\n    dir: /var/nas,\n    readonly: false,\n    shard: true\n}\nnats: {\n    servers: [\"nats://localhost:4222\"],\n    usercredentials: /home/u/sys.creds\n}\n";
    assert_eq!(
        parse(generated).root().to_string(),
        concat!(
            r#"{operatorjwtpath: "/home/u/op.jwt", http: {host: "0.0.0.0", port: 9090}, "#,
            r#"store: {dir: "/var/nas", readonly: false, shard: true}, "#,
            r#"nats: {servers: ["nats://localhost:4222"], usercredentials: "/home/u/sys.creds"}}"#,
        )
    );
}

/// §10.1.
#[test]
fn nats_server_url_resolver() {
    let src = r#"port: 4222
server_name: n1
operator: "/etc/nats/operator.jwt"          # a file (decorated is fine) or the JWT inline ("eyJ…")
system_account: ADT2...GDQ                  # optional if the operator JWT names it
resolver: URL(http://127.0.0.1:9090/jwt/v1/accounts/)
"#;
    assert_eq!(
        parse(src).root().to_string(),
        concat!(
            r#"{port: 4222, server_name: "n1", operator: "/etc/nats/operator.jwt", "#,
            r#"system_account: "ADT2...GDQ", resolver: "URL(http://127.0.0.1:9090/jwt/v1/accounts/)"}"#,
        )
    );
    // The line the account server prints (§7.2 step 11), and the quoted form.
    let d = parse("  resolver: URL(http://localhost:9090/jwt/v1/accounts/)\n");
    assert_eq!(
        d.get("resolver").unwrap().as_str(),
        Some("URL(http://localhost:9090/jwt/v1/accounts/)")
    );
    for key in ["resolver", "account_resolver", "accounts_resolver"] {
        let d = parse(&format!("{key}: URL(\"http://nas:9090/jwt/v1/accounts\")"));
        assert_eq!(
            d.get(key).unwrap().as_str(),
            Some("URL(\"http://nas:9090/jwt/v1/accounts\")")
        );
    }
}

/// §10.2.
#[test]
fn nats_server_https_resolver_with_tls_block() {
    let src = r#"resolver: URL(https://nas.example.com:9443/jwt/v1/accounts/)
resolver_tls {
  ca_file: "/etc/nats/nas-ca.pem"
  # cert_file / key_file for a client certificate if required
}
"#;
    assert_eq!(
        parse(src).root().to_string(),
        r#"{resolver: "URL(https://nas.example.com:9443/jwt/v1/accounts/)", resolver_tls: {ca_file: "/etc/nats/nas-ca.pem"}}"#
    );
}

/// §10.4.
#[test]
fn nats_server_memory_resolver_with_preload() {
    let src = r#"resolver: MEMORY
resolver_preload: {
  ADT2...GDQ: "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJ…"
  ABVR...UCPP: "eyJ…"
}
"#;
    let d = parse(src);
    assert_eq!(
        d.root().to_string(),
        concat!(
            r#"{resolver: "MEMORY", resolver_preload: {"#,
            r#"ADT2...GDQ: "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJ…", ABVR...UCPP: "eyJ…"}}"#,
        )
    );
    // Bare keys and bare JWT values.
    let d = parse("resolver_preload { ACC: eyJhbGciOiJlZDI1NTE5In0.eyJzdWIiOiJBQ0MifQ.c2ln }");
    let preload = d.get("resolver_preload").unwrap().as_map().unwrap();
    assert_eq!(
        preload.get("ACC").unwrap().as_str(),
        Some("eyJhbGciOiJlZDI1NTE5In0.eyJzdWIiOiJBQ0MifQ.c2ln")
    );
}

/// §10.5.
#[test]
fn nats_server_full_resolver() {
    let src = r#"operator: "/etc/nats/operator.jwt"
system_account: ADT2...GDQ
resolver: {
  type: full
  dir: "/var/lib/nats/jwt"
  allow_delete: true
  interval: "2m"
  timeout: "1.9s"
}
resolver_preload: {
  ADT2...GDQ: "<system account JWT>"
}
"#;
    let d = parse(src);
    assert_eq!(
        d.root().to_string(),
        concat!(
            r#"{operator: "/etc/nats/operator.jwt", system_account: "ADT2...GDQ", resolver: {type: "full", "#,
            r#"dir: "/var/lib/nats/jwt", allow_delete: true, interval: "2m", timeout: "1.9s"}, "#,
            r#"resolver_preload: {ADT2...GDQ: "<system account JWT>"}}"#,
        )
    );
    let resolver = d.get("resolver").unwrap().as_map().unwrap();
    assert_eq!(
        resolver.get("interval").unwrap().as_duration(),
        Some(std::time::Duration::from_secs(120))
    );
    assert_eq!(
        resolver.get("timeout").unwrap().as_duration(),
        Some(std::time::Duration::from_millis(1900))
    );
    // The one-line form from the brief.
    let d = parse("resolver { type: full dir: './jwt' }");
    assert_eq!(
        d.root().to_string(),
        r#"{resolver: {type: "full", dir: "./jwt"}}"#
    );
}

/// §10.6.
#[test]
fn nats_server_cache_resolver() {
    let src = r#"operator: "/etc/nats/operator.jwt"
system_account: ADT2...GDQ
resolver: { type: cache, dir: "/var/lib/nats/jwt-cache", ttl: "1h", limit: 1000, timeout: "1500ms" }
resolver_preload: { ADT2...GDQ: "<system account JWT>" }
"#;
    let d = parse(src);
    assert_eq!(
        d.root().to_string(),
        concat!(
            r#"{operator: "/etc/nats/operator.jwt", system_account: "ADT2...GDQ", resolver: {type: "cache", "#,
            r#"dir: "/var/lib/nats/jwt-cache", ttl: "1h", limit: 1000, timeout: "1500ms"}, "#,
            r#"resolver_preload: {ADT2...GDQ: "<system account JWT>"}}"#,
        )
    );
    let resolver = d.get("resolver").unwrap().as_map().unwrap();
    assert_eq!(
        resolver
            .get("ttl")
            .unwrap()
            .as_duration()
            .unwrap()
            .as_secs(),
        3600
    );
    assert_eq!(
        resolver
            .get("timeout")
            .unwrap()
            .as_duration()
            .unwrap()
            .as_millis(),
        1500
    );
}

/// A larger nats-server config mixing the forms above with JetStream and websocket blocks.
#[test]
fn nats_server_mixed() {
    let src = "jetstream: {max_mem_store: 10Gb, max_file_store: 10Gb, store_dir: /data/js}\nhost: 0.0.0.0\nport: 4222\nresolver: URL(http://localhost:9090/jwt/v1/accounts/)\nwebsocket: {\n\thost: 0.0.0.0\n \tport: 9222\n \tno_tls: true\n}\n";
    let d = parse(src);
    let js = d.get("jetstream").unwrap().as_map().unwrap();
    assert_eq!(js.get("max_mem_store").unwrap().as_i64(), Some(10 << 30));
    assert_eq!(js.get("store_dir").unwrap().as_str(), Some("/data/js"));
    assert_eq!(d.get("host").unwrap().as_str(), Some("0.0.0.0"));
    let ws = d.get("websocket").unwrap().as_map().unwrap();
    assert_eq!(ws.get("no_tls").unwrap().as_bool(), Some(true));
    assert_eq!(ws.get("port").unwrap().as_i64(), Some(9222));
}
