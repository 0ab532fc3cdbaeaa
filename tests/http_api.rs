//! The HTTP API, table by table: every route, flag and error of `docs/spec/http-api.md`, with
//! the documented fixes, against an in-process server on a directory store. Every refused write
//! is checked to leave the store untouched.

use std::io::Read;
use std::path::{Path, PathBuf};

use nas_server::config::{Config, DirStore, StoreConfig};
use nas_server::server::Server;
use reqwest::{Client, Method, StatusCode};
use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt");

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(FIXTURES).join(name);
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if name.ends_with(".gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .unwrap();
        out
    } else {
        raw
    }
}

fn manifest_entry(id: &str) -> Value {
    let m: Value = serde_json::from_slice(&fixture("manifest.json")).unwrap();
    m["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == id)
        .unwrap()
        .clone()
}

fn sub_of(id: &str) -> String {
    manifest_entry(id)["sub"].as_str().unwrap().to_owned()
}

fn jti_of(id: &str) -> String {
    manifest_entry(id)["jti"].as_str().unwrap().to_owned()
}

struct TestServer {
    server: Server,
    client: Client,
    dir: tempfile::TempDir,
}

impl TestServer {
    async fn start(operator: Option<&str>, tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.http.host = "127.0.0.1".into();
        config.http.port = 0;
        config.http.workers = 1;
        config.store = StoreConfig::Dir(DirStore::new(dir.path().join("jwt")));
        if let Some(op) = operator {
            config.operator_jwt_path = Some(PathBuf::from(FIXTURES).join(op));
        }
        tweak(&mut config);
        let server = Server::start(&config).await.expect("server starts");
        let client = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        TestServer {
            server,
            client,
            dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url())
    }

    fn store_dir(&self) -> PathBuf {
        self.dir.path().join("jwt")
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
        let mut req = self.client.request(method, self.url(path));
        if let Some(body) = body {
            req = req.header("Content-Type", "application/jwt").body(body);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        (status, headers, res.bytes().await.unwrap().to_vec())
    }

    async fn get(&self, path: &str) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
        self.request(Method::GET, path, None).await
    }

    async fn post(&self, key: &str, body: Vec<u8>) -> (StatusCode, String) {
        let (s, _, b) = self
            .request(Method::POST, &format!("/jwt/v1/accounts/{key}"), Some(body))
            .await;
        (s, String::from_utf8_lossy(&b).into_owned())
    }

    /// Every file in the store directory with its content, to prove refusals change nothing.
    fn snapshot(&self) -> Vec<(PathBuf, Vec<u8>)> {
        fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push((p.clone(), std::fs::read(&p).unwrap()));
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.store_dir(), &mut out);
        out.sort();
        out
    }
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn refused_uploads_get_their_own_status_and_message_and_change_nothing() {
    let t = TestServer::start(Some("operator_signing_keys.jwt"), |_| {}).await;
    let a = sub_of("account_a");
    let b = sub_of("account_b");
    // Seed the store so "unchanged" means something.
    assert_eq!(t.post(&a, fixture("account_a.jwt")).await.0, StatusCode::OK);
    let before = t.snapshot();
    assert_eq!(before.len(), 1);

    let stdlib_expired = "The server was unable to update your account JWT. One more more validation issues occurred.\n\t - claim is expired\n\n";
    let stdlib_nbf = "The server was unable to update your account JWT. One more more validation issues occurred.\n\t - claim is not yet valid\n\n";
    let cases: Vec<(&str, String, Vec<u8>, StatusCode, &str)> = vec![
        (
            "bad signature",
            b.clone(),
            fixture("broken_bad_signature.jwt"),
            StatusCode::BAD_REQUEST,
            "bad JWT in request\nclaim failed V2 signature verification\n",
        ),
        (
            "tampered payload",
            b.clone(),
            fixture("broken_tampered_payload.jwt"),
            StatusCode::BAD_REQUEST,
            "bad JWT in request\nclaim failed V2 signature verification\n",
        ),
        (
            "two parts",
            b.clone(),
            fixture("broken_two_parts.jwt"),
            StatusCode::BAD_REQUEST,
            "bad JWT in request\nexpected 3 chunks\n",
        ),
        (
            "garbage",
            b.clone(),
            fixture("broken_garbage.jwt"),
            StatusCode::BAD_REQUEST,
            "bad JWT in request\nexpected 3 chunks\n",
        ),
        (
            "bad base64",
            b.clone(),
            fixture("broken_bad_base64.jwt"),
            StatusCode::BAD_REQUEST,
            "bad JWT in request\nillegal base64 data at input byte 20\n",
        ),
        (
            "wrong alg",
            b.clone(),
            fixture("broken_wrong_alg.jwt"),
            StatusCode::BAD_REQUEST,
            "bad JWT in request\nunexpected \"HS256\" algorithm\n",
        ),
        (
            "newer version",
            b.clone(),
            fixture("broken_newer_version.jwt"),
            StatusCode::BAD_REQUEST,
            "bad JWT in request\nJWT was generated by a newer version \n",
        ),
        (
            "user-signed account",
            b.clone(),
            fixture("broken_wrong_issuer_type.jwt"),
            StatusCode::BAD_REQUEST,
            "bad JWT in request\nunable to validate expected prefixes - [account operator]\n",
        ),
        (
            "user JWT",
            a.clone(),
            fixture("user_a.jwt"),
            StatusCode::BAD_REQUEST,
            "bad JWT in request\nnot account claim\n",
        ),
        (
            "empty body",
            b.clone(),
            Vec::new(),
            StatusCode::BAD_REQUEST,
            "bad JWT in request\nexpected 3 chunks\n",
        ),
        (
            "leading spaces",
            b.clone(),
            [b"  ".to_vec(), fixture("account_b.jwt")].concat(),
            StatusCode::BAD_REQUEST,
            "bad JWT in request\nillegal base64 data at input byte 0\n",
        ),
        (
            "subject mismatch",
            a.clone(),
            fixture("account_m_upload_mismatch.jwt"),
            StatusCode::BAD_REQUEST,
            "pub keys don't match\n",
        ),
        (
            "self-signed",
            sub_of("account_d_self_signed"),
            fixture("account_d_self_signed.jwt"),
            StatusCode::BAD_REQUEST,
            "Signing service not enabled\n",
        ),
        (
            "foreign operator",
            sub_of("account_foreign"),
            fixture("account_foreign.jwt"),
            StatusCode::BAD_REQUEST,
            "untrusted issuer in request\n",
        ),
        (
            "expired",
            sub_of("account_e_expired"),
            fixture("account_e_expired.jwt"),
            StatusCode::BAD_REQUEST,
            stdlib_expired,
        ),
        (
            "not yet valid",
            sub_of("account_f_not_yet_valid"),
            fixture("account_f_not_yet_valid.jwt"),
            StatusCode::BAD_REQUEST,
            stdlib_nbf,
        ),
        (
            "oversized",
            sub_of("account_oversize"),
            fixture("account_oversize.jwt.gz"),
            StatusCode::PAYLOAD_TOO_LARGE,
            "",
        ),
        (
            "invalid key in URL",
            "not-a-key".into(),
            fixture("account_b.jwt"),
            StatusCode::BAD_REQUEST,
            "pub keys don't match\n",
        ),
    ];
    for (name, key, body, status, message) in cases {
        let (got_status, got_body) = t.post(&key, body).await;
        assert_eq!(got_status, status, "{name}: {got_body}");
        assert!(
            got_body.starts_with(message),
            "{name}: body {got_body:?} does not start with {message:?}"
        );
        assert_eq!(t.snapshot(), before, "{name}: the store changed");
    }
    // A Go-style stdlib error carries its content type.
    let (_, headers, _) = t
        .request(
            Method::POST,
            &format!("/jwt/v1/accounts/{}", sub_of("account_e_expired")),
            Some(fixture("account_e_expired.jwt")),
        )
        .await;
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"));
}

#[tokio::test]
async fn newer_wins_on_post() {
    let t = TestServer::start(Some("operator_signing_keys.jwt"), |_| {}).await;
    let c = sub_of("account_c_new");
    assert_eq!(
        t.post(&c, fixture("account_c_new.jwt")).await.0,
        StatusCode::OK
    );
    let stored = t.snapshot();
    let (status, body) = t.post(&c, fixture("account_c_old.jwt")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("older than the stored one"), "{body}");
    assert_eq!(t.snapshot(), stored);
    // Same jti and iat, other content (a same-second re-issue): a 200 always means the pushed
    // bytes are what is served; the loser of the tie-break gets 409 telling to re-issue.
    let same = fixture("account_c_new_same_jti.jwt");
    let new = fixture("account_c_new.jwt");
    let iat = nas_store::TokenMeta::read(&new).unwrap().iat;
    let same_wins = nas_store::Rank::of(iat, &same) > nas_store::Rank::of(iat, &new);
    let (status, body) = t.post(&c, same.clone()).await;
    let (_, _, served) = t.get(&format!("/jwt/v1/accounts/{c}")).await;
    if same_wins {
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(served, same);
    } else {
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert!(body.contains("re-issue"), "{body}");
        assert_eq!(t.snapshot(), stored);
        assert_eq!(served, new);
    }
    // Older first, newer replaces it.
    let t = TestServer::start(Some("operator_signing_keys.jwt"), |_| {}).await;
    assert_eq!(
        t.post(&c, fixture("account_c_old.jwt")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        t.post(&c, fixture("account_c_new.jwt")).await.0,
        StatusCode::OK
    );
    let (_, headers, _) = t.get(&format!("/jwt/v1/accounts/{c}")).await;
    assert_eq!(
        header(&headers, "etag"),
        Some(format!("\"{}\"", jti_of("account_c_new")).as_str())
    );
}

#[tokio::test]
async fn strict_operators_and_missing_operators_refuse_identity_signed_accounts() {
    let strict = TestServer::start(Some("operator_strict.jwt"), |_| {}).await;
    let (status, body) = strict
        .post(&sub_of("account_b"), fixture("account_b.jwt"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        "untrusted issuer in request\noperator requires issuer to be a signing key\n"
    );
    assert_eq!(
        strict
            .post(&sub_of("account_a"), fixture("account_a.jwt"))
            .await
            .0,
        StatusCode::OK
    );

    let none = TestServer::start(None, |_| {}).await;
    let (status, body) = none
        .post(&sub_of("account_a"), fixture("account_a.jwt"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.starts_with("untrusted issuer in request\n"), "{body}");
    assert!(none.snapshot().is_empty());
    // Without an operator there is no /jwt/v1/operator.
    assert_eq!(none.get("/jwt/v1/operator").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn get_account_flags_headers_and_errors() {
    let t = TestServer::start(Some("operator_signing_keys.jwt"), |_| {}).await;
    let a = sub_of("account_a");
    let b = sub_of("account_b");
    let path_a = format!("/jwt/v1/accounts/{a}");
    let path_b = format!("/jwt/v1/accounts/{b}");

    // Probe routes.
    for probe in [
        "/jwt/v1/accounts",
        "/jwt/v1/accounts/",
        "/jwt/v1/accounts/?x=y",
    ] {
        let (s, h, body) = t.get(probe).await;
        assert_eq!(s, StatusCode::OK, "{probe}");
        assert!(body.is_empty());
        assert_eq!(
            header(&h, "cache-control"),
            Some("no-cache, no-store, must-revalidate")
        );
        assert_eq!(header(&h, "pragma"), Some("no-cache"));
        assert_eq!(header(&h, "expires"), Some("0"));
    }
    // Misses.
    let (s, h, body) = t.get(&path_a).await;
    assert_eq!(
        (s, body.as_slice()),
        (StatusCode::NOT_FOUND, &b"no matching account JWT\n"[..])
    );
    assert_eq!(header(&h, "content-type"), Some("text/plain"));
    assert_eq!(t.get("/jwt/v1/accounts/foo").await.0, StatusCode::NOT_FOUND);
    // The largest token the 1 MiB cap allows is accepted (and served back byte for byte).
    let at_limit = sub_of("account_at_limit");
    assert_eq!(
        t.post(&at_limit, fixture("account_at_limit.jwt.gz"))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        t.get(&format!("/jwt/v1/accounts/{at_limit}")).await.2,
        fixture("account_at_limit.jwt.gz")
    );
    let (s, _, body) = t.get(&format!("{path_a}?jti=abc")).await;
    assert_eq!(
        (s, body.as_slice()),
        (
            StatusCode::NOT_IMPLEMENTED,
            &b"lookup by jti is no longer supported\n"[..]
        )
    );

    assert_eq!(t.post(&a, fixture("account_a.jwt")).await.0, StatusCode::OK);
    // nsc push sends a trailing newline sometimes; the canonical token is stored.
    let mut with_newline = fixture("account_b.jwt");
    with_newline.push(b'\n');
    assert_eq!(t.post(&b, with_newline).await.0, StatusCode::OK);

    let (s, h, body) = t.get(&path_a).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body, fixture("account_a.jwt"));
    assert_eq!(header(&h, "content-type"), Some("application/jwt"));
    let etag = format!("\"{}\"", jti_of("account_a"));
    assert_eq!(header(&h, "etag"), Some(etag.as_str()));
    let cc = header(&h, "cache-control").unwrap();
    let max_age: i64 = cc
        .strip_prefix("max-age=")
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(max_age > 0, "{cc}");
    assert!(
        cc.ends_with("stale-while-revalidate=3600, stale-if-error=3600"),
        "{cc}"
    );
    assert_eq!(header(&h, "vary"), Some("Origin"));
    // No exp: never a negative max-age (D5).
    let (_, h, body) = t.get(&path_b).await;
    assert_eq!(body, fixture("account_b.jwt"));
    assert_eq!(header(&h, "cache-control"), Some("no-cache"));

    // If-None-Match: substring match, W/ and lists match, * does not.
    for inm in [etag.clone(), format!("W/{etag}"), format!("\"x\", {etag}")] {
        let res = t
            .client
            .get(t.url(&path_a))
            .header("If-None-Match", inm.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED, "{inm}");
    }
    let res = t
        .client
        .get(t.url(&path_a))
        .header("If-None-Match", "*")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    // text, decode (readable and JSON), check, notify without NATS.
    let (s, h, body) = t.get(&format!("{path_a}?text=TRUE")).await;
    assert_eq!(
        (s, header(&h, "content-type")),
        (StatusCode::OK, Some("text/plain"))
    );
    assert_eq!(body, fixture("account_a.jwt"));
    let (_, h, body) = t.get(&format!("{path_a}?text=1")).await;
    assert_eq!(
        header(&h, "content-type"),
        Some("application/jwt"),
        "only `true` turns a flag on"
    );
    assert_eq!(body, fixture("account_a.jwt"));
    let (s, _, body) = t.get(&format!("{path_a}?decode=true")).await;
    let text = String::from_utf8(body).unwrap();
    assert_eq!(s, StatusCode::OK);
    assert!(text.contains("\"alg\": \"ed25519-nkey\""), "{text}");
    assert!(text.contains("(2099-01-01)"), "{text}");
    assert!(
        text.contains("\"subject\": \"b.private.svc\""),
        "embedded activation decoded: {text}"
    );
    let (_, h, body) = t.get(&format!("{path_a}?decode=true&format=json")).await;
    assert_eq!(header(&h, "content-type"), Some("application/json"));
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["claims"]["sub"], a.as_str());
    assert_eq!(json["dates"]["exp"], "2099-01-01");
    assert_eq!(
        json["claims"]["nats"]["imports"][0]["token"]["claims"]["nats"]["subject"],
        "b.private.svc"
    );
    assert_eq!(
        t.get(&format!("{path_a}?check=true")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        t.get(&format!("{path_a}?notify=true")).await.0,
        StatusCode::OK
    );

    // An expired JWT written into the store by another tool is served, but not with check=true.
    let e = sub_of("account_e_expired");
    std::fs::write(
        t.store_dir().join(format!("{e}.jwt")),
        fixture("account_e_expired.jwt"),
    )
    .unwrap();
    let path_e = format!("/jwt/v1/accounts/{e}");
    let (s, h, _) = t.get(&path_e).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        header(&h, "cache-control"),
        Some("max-age=0, stale-while-revalidate=3600, stale-if-error=3600")
    );
    let (s, h, body) = t.get(&format!("{path_e}?check=true")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(body.is_empty() && header(&h, "content-type").is_none());

    // A tampered file in the store is never served (a tampered store cannot feed nats-servers).
    let f = sub_of("account_f_not_yet_valid");
    let mut tampered = fixture("account_f_not_yet_valid.jwt");
    let dot = tampered.iter().rposition(|c| *c == b'.').unwrap();
    tampered[dot + 5] = if tampered[dot + 5] == b'A' {
        b'B'
    } else {
        b'A'
    };
    std::fs::write(t.store_dir().join(format!("{f}.jwt")), tampered).unwrap();
    assert_eq!(
        t.get(&format!("/jwt/v1/accounts/{f}")).await.0,
        StatusCode::NOT_FOUND
    );
    // So is a JWT stored under another account's key.
    std::fs::write(
        t.store_dir().join(format!("{f}.jwt")),
        fixture("account_c_new.jwt"),
    )
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await; // negative-cache entry ages out
    assert_eq!(
        t.get(&format!("/jwt/v1/accounts/{f}")).await.0,
        StatusCode::NOT_FOUND
    );

    // HEAD is served like GET without a body (D14).
    let (s, h, body) = t.request(Method::HEAD, &path_a, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.is_empty());
    assert_eq!(header(&h, "etag"), Some(etag.as_str()));
}

#[tokio::test]
async fn router_methods_cors_redirects_and_misc_routes() {
    let t = TestServer::start(Some("operator_signing_keys.jwt"), |c| {
        c.max_replication_pack = 5
    })
    .await;
    let a = sub_of("account_a");
    let path_a = format!("/jwt/v1/accounts/{a}");
    // DELETE is ours (tests/http_delete.rs); Go answered it 405 like PUT.
    for method in [Method::PUT, Method::PATCH] {
        let (s, h, body) = t.request(method.clone(), &path_a, None).await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(
            header(&h, "allow"),
            Some("GET, HEAD, OPTIONS, POST, DELETE")
        );
        assert_eq!(body, b"Method Not Allowed\n");
    }
    for path in ["/jwt/v1/accounts", "/jwt/v1/accounts/"] {
        let (s, h, _) = t
            .request(Method::POST, path, Some(fixture("account_a.jwt")))
            .await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(header(&h, "allow"), Some("GET, HEAD, OPTIONS"));
    }
    let (s, h, body) = t.request(Method::OPTIONS, &path_a, None).await;
    assert_eq!(
        (s, header(&h, "allow")),
        (StatusCode::OK, Some("GET, HEAD, OPTIONS, POST, DELETE"))
    );
    assert!(body.is_empty());

    // CORS: origin echoed on GET/POST, preflight answered with 204.
    let res = t
        .client
        .get(t.url("/jwt/v1/help"))
        .header("Origin", "https://ui.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(res.headers(), "access-control-allow-origin"),
        Some("https://ui.example")
    );
    assert_eq!(
        header(res.headers(), "access-control-expose-headers"),
        Some("Authorization")
    );
    assert_eq!(header(res.headers(), "vary"), Some("Origin"));
    let res = t
        .client
        .request(Method::OPTIONS, t.url(&path_a))
        .header("Origin", "https://ui.example")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        header(res.headers(), "access-control-allow-origin"),
        Some("https://ui.example")
    );
    assert_eq!(
        header(res.headers(), "access-control-allow-methods"),
        Some("POST")
    );
    assert_eq!(
        header(res.headers(), "access-control-allow-headers"),
        Some("content-type")
    );
    let res = t
        .client
        .request(Method::OPTIONS, t.url(&path_a))
        .header("Origin", "https://ui.example")
        .header("Access-Control-Request-Method", "DELETE")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(res.headers().get("access-control-allow-origin").is_none());

    // Unknown paths and redirects.
    let (s, h, body) = t.get("/nope").await;
    assert_eq!(
        (s, body.as_slice()),
        (StatusCode::NOT_FOUND, &b"404 page not found\n"[..])
    );
    assert_eq!(
        header(&h, "content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(header(&h, "x-content-type-options"), Some("nosniff"));
    let (s, h, _) = t.get("/JWT/v1/help").await;
    assert_eq!(
        (s, header(&h, "location")),
        (StatusCode::MOVED_PERMANENTLY, Some("/jwt/v1/help"))
    );
    let (s, h, _) = t.get(&format!("{path_a}/")).await;
    assert_eq!(
        (s, header(&h, "location")),
        (StatusCode::MOVED_PERMANENTLY, Some(path_a.as_str()))
    );

    // Help, healthz, operator.
    let (s, h, body) = t.get("/jwt/v1/help").await;
    assert_eq!(
        (s, header(&h, "content-type")),
        (StatusCode::OK, Some("text/plain"))
    );
    assert!(String::from_utf8(body)
        .unwrap()
        .contains("# NATS Account Server JWT API HELP"));
    let (s, _, body) = t.get("/healthz").await;
    assert_eq!(s, StatusCode::OK);
    let health: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(health["store"], "ok");
    let (s, h, body) = t.get("/jwt/v1/operator").await;
    assert_eq!(
        (s, header(&h, "content-type")),
        (StatusCode::OK, Some("application/jwt"))
    );
    assert_eq!(body, fixture("operator_signing_keys.jwt"));
    let (_, h, _) = t.get("/jwt/v1/operator?text=true").await;
    assert_eq!(header(&h, "content-type"), Some("text/plain"));
    let (_, _, body) = t.get("/jwt/v1/operator?decode=true").await;
    let view = String::from_utf8(body).unwrap();
    assert!(
        view.contains("\"signing_keys\"") && view.contains("\"alg\": \"ed25519-nkey\""),
        "{view}"
    );

    // Pack.
    for id in ["account_a", "account_b", "account_c_new", "account_sys"] {
        assert_eq!(
            t.post(&sub_of(id), fixture(&format!("{id}.jwt"))).await.0,
            StatusCode::OK,
            "{id}"
        );
    }
    let (s, h, body) = t.get("/jwt/v1/pack").await;
    assert_eq!(
        (s, header(&h, "content-type")),
        (StatusCode::OK, Some("text/plain"))
    );
    let text = String::from_utf8(body).unwrap();
    let lines: Vec<&str> = text.split('\n').collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(!text.ends_with('\n'));
    for line in &lines {
        let (key, jwt) = line.split_once('|').unwrap();
        assert_eq!(nas_jwt::decode(jwt.as_bytes()).unwrap().claims().sub(), key);
    }
    assert_eq!(
        String::from_utf8(t.get("/jwt/v1/pack?max=2").await.2)
            .unwrap()
            .split('\n')
            .count(),
        2
    );
    assert!(t.get("/jwt/v1/pack?max=0").await.2.is_empty());
    let (s, _, body) = t.get("/jwt/v1/pack?max=Foo").await;
    assert_eq!(
        (s, body.as_slice()),
        (StatusCode::BAD_REQUEST, &b"bad max parameter \"foo\"\n"[..])
    );
    let (s, _, body) = t.get("/jwt/v1/pack?max=6").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        b"bad max parameter \"6\", no more than 5 are allowed\n"
    );
    assert_eq!(
        String::from_utf8(t.get("/jwt/v1/pack?max=-1").await.2)
            .unwrap()
            .split('\n')
            .count(),
        4
    );
}

#[tokio::test]
async fn activations_and_system_account_fallback() {
    let t = TestServer::start(Some("operator_signing_keys.jwt"), |c| {
        c.system_account_jwt_path = Some(PathBuf::from(FIXTURES).join("account_sys.jwt"));
    })
    .await;
    let sys = sub_of("account_sys");
    let (s, _, body) = t.get(&format!("/jwt/v1/accounts/{sys}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body, fixture("account_sys.jwt"));
    assert!(
        t.snapshot().is_empty(),
        "the fallback is not written to the store"
    );

    let hash = manifest_entry("activation_foo_bar")["hash_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The activation's issuer (account B) must be an account this server holds.
    let (s, body) = t.post(&sub_of("account_b"), fixture("account_b.jwt")).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, _, _) = t
        .request(
            Method::POST,
            "/jwt/v1/activations",
            Some(fixture("activation_foo_bar.jwt")),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, h, body) = t.get(&format!("/jwt/v1/activations/{hash}")).await;
    assert_eq!(
        (s, header(&h, "content-type")),
        (StatusCode::OK, Some("application/jwt"))
    );
    assert_eq!(body, fixture("activation_foo_bar.jwt"));
    let etag = format!("\"{}\"", jti_of("activation_foo_bar"));
    assert_eq!(header(&h, "etag"), Some(etag.as_str()));
    let (s, h, body) = t.get("/jwt/v1/activations/AAAA").await;
    assert_eq!(
        (s, body.as_slice()),
        (StatusCode::NOT_FOUND, &b"No Matching JWT\n"[..])
    );
    assert_eq!(
        header(&h, "content-type"),
        Some("text/plain; charset=utf-8")
    );
    let (s, _, body) = t
        .request(
            Method::POST,
            "/jwt/v1/activations",
            Some(fixture("account_a.jwt")),
        )
        .await;
    assert_eq!(
        (s, body.as_slice()),
        (
            StatusCode::BAD_REQUEST,
            &b"bad activation JWT in request\n"[..]
        )
    );
    // Activations live in their own namespace: never served as accounts.
    assert_eq!(
        t.get(&format!("/jwt/v1/accounts/{hash}")).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn metrics_show_cache_hits_and_no_reverification() {
    let t = TestServer::start(Some("operator_signing_keys.jwt"), |_| {}).await;
    let a = sub_of("account_a");
    assert_eq!(t.post(&a, fixture("account_a.jwt")).await.0, StatusCode::OK);
    let metric = |text: &str, name: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let before = String::from_utf8(t.get("/metrics").await.2).unwrap();
    for _ in 0..20 {
        assert_eq!(
            t.get(&format!("/jwt/v1/accounts/{a}")).await.0,
            StatusCode::OK
        );
    }
    let after = String::from_utf8(t.get("/metrics").await.2).unwrap();
    assert_eq!(
        metric(&after, "nas_cache_hits_total") - metric(&before, "nas_cache_hits_total"),
        20.0
    );
    assert_eq!(
        metric(&after, "nas_jwt_verifications_total"),
        metric(&before, "nas_jwt_verifications_total"),
        "a cache hit must not verify again"
    );
    // A miss (a JWT another tool wrote into the directory) is verified, and the check timed.
    let b = sub_of("account_b");
    std::fs::write(
        t.store_dir().join(format!("{b}.jwt")),
        fixture("account_b.jwt"),
    )
    .unwrap();
    assert_eq!(
        t.get(&format!("/jwt/v1/accounts/{b}")).await.0,
        StatusCode::OK
    );
    let missed = String::from_utf8(t.get("/metrics").await.2).unwrap();
    assert_eq!(
        metric(&missed, "nas_jwt_verification_duration_seconds_count"),
        metric(&after, "nas_jwt_verification_duration_seconds_count") + 1.0
    );
    assert_eq!(
        metric(&missed, "nas_jwt_verifications_total"),
        metric(&after, "nas_jwt_verifications_total") + 1.0
    );
    assert!(
        after.contains("route=\"/jwt/v1/accounts/{key}\""),
        "route labels are patterns"
    );
    assert!(!after.contains(&a), "raw keys never appear in labels");
    assert!(after.contains("nas_store_operation_duration_seconds"));
}

/// A tampered store cannot feed nats-servers through the pack: a file signed by a foreign
/// operator and a file holding another account's JWT are left out of every pack, as GET
/// refuses them; `max=-1` is still capped by `maxreplicationpack`.
#[tokio::test]
async fn the_pack_serves_only_what_verifies_and_is_always_bounded() {
    let t = TestServer::start(Some("operator_signing_keys.jwt"), |_| {}).await;
    for id in ["account_a", "account_b", "account_c_new"] {
        let (status, body) = t.post(&sub_of(id), fixture(&format!("{id}.jwt"))).await;
        assert_eq!(status, StatusCode::OK, "{id}: {body}");
    }
    // Tamper: a foreign operator's account, and A's JWT filed under C's key.
    let foreign = sub_of("account_foreign");
    std::fs::write(
        t.store_dir().join(format!("{foreign}.jwt")),
        fixture("account_foreign.jwt"),
    )
    .unwrap();
    let c = sub_of("account_c_new");
    std::fs::write(
        t.store_dir().join(format!("{c}.jwt")),
        fixture("account_a.jwt"),
    )
    .unwrap();
    let (status, _, body) = t.get("/jwt/v1/pack?max=-1").await;
    assert_eq!(status, StatusCode::OK);
    let body = String::from_utf8(body).unwrap();
    let keys: Vec<&str> = body.lines().map(|l| l.split('|').next().unwrap()).collect();
    assert_eq!(
        keys.len(),
        2,
        "max=-1 is capped at maxreplicationpack: {body}"
    );
    assert!(
        !body.contains(&foreign),
        "foreign-signed entry in the pack: {body}"
    );
    assert!(
        !keys.contains(&c.as_str()),
        "misfiled entry in the pack: {body}"
    );
    assert_eq!(
        t.get(&format!("/jwt/v1/accounts/{foreign}")).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn made_up_methods_add_no_metric_series() {
    let t = TestServer::start(Some("operator_signing_keys.jwt"), |_| {}).await;
    let series = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("nas_http_requests_total"))
            .count()
    };
    let (_, _, before) = t.get("/metrics").await;
    for i in 0..200 {
        let method = Method::from_bytes(format!("XM{i:04}").as_bytes()).unwrap();
        let (status, _, _) = t.request(method, "/jwt/v1/accounts", None).await;
        assert!(status.is_client_error(), "{status}");
    }
    let (_, _, after) = t.get("/metrics").await;
    let (before, after) = (
        series(&String::from_utf8_lossy(&before)),
        series(&String::from_utf8_lossy(&after)),
    );
    // The 200 requests share one `other` series (plus the /metrics GET's own).
    assert!(after <= before + 2, "{before} → {after} series");
    assert!(String::from_utf8_lossy(&t.get("/metrics").await.2).contains("method=\"other\""));
}
