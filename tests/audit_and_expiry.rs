//! The audit log and the expiry purge against an in-process server on a directory store:
//! every write decision over HTTP is one JSON line in `audit { file }` (who, what, outcome,
//! why); with `store { deleteexpired: true }` expired JWTs are deleted every
//! `cleanupinterval`, audited, counted, and `nas_accounts_stored` tells the truth.

mod common;

use std::path::Path;
use std::time::Duration;

use nas_jwt::AccountClaims;
use nas_server::config::{Config, DirStore, StoreConfig};
use nas_server::server::Server;
use serde_json::Value;

use common::{delete_request, now, reissue, Operator};

async fn start(dir: &Path, op: &Operator, tweak: impl FnOnce(&mut Config)) -> Server {
    std::fs::write(dir.join("operator.jwt"), &op.jwt).unwrap();
    let mut config = Config::default();
    config.http.host = "127.0.0.1".into();
    config.http.port = 0;
    config.store = StoreConfig::Dir(DirStore::new(dir.join("jwt")));
    config.operator_jwt_path = Some(dir.join("operator.jwt"));
    config.audit.file = Some(dir.join("audit.log"));
    tweak(&mut config);
    Server::start(&config).await.unwrap()
}

async fn post(server: &Server, key: &str, jwt: &str) -> u16 {
    let url = format!("{}/jwt/v1/accounts/{key}", server.url());
    let response = reqwest::Client::new().post(url).body(jwt.to_owned());
    response.send().await.unwrap().status().as_u16()
}

/// The audit file's lines, once it has at least `n` (the writer is asynchronous; bounded).
async fn audit_lines(dir: &Path, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(dir.join("audit.log")).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= n || std::time::Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn every_http_write_decision_is_one_audit_line_saying_who_what_and_why() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("audited");
    let server = start(tmp.path(), &op, |c| c.nats.allow_delete = true).await;
    let (app, jwt) = op.account("APP");
    let key = app.public_key().as_str().to_owned();
    let stranger = Operator::new("stranger");
    let (_, foreign) = stranger.account("X");
    let older = reissue(&op, &app, "APP", now() - 3600, |_| {});

    assert_eq!(post(&server, &key, &jwt).await, 200);
    assert_eq!(post(&server, &key, &jwt).await, 200);
    assert_eq!(post(&server, &key, &older).await, 409);
    assert_eq!(post(&server, &key, &foreign).await, 400);
    let request = delete_request(vec![key.clone()], &op.signing_key, now() + 1, 0);
    let url = format!("{}/jwt/v1/accounts/{key}", server.url());
    let deleted = reqwest::Client::new().delete(url).body(request);
    assert_eq!(deleted.send().await.unwrap().status(), 200);

    let lines = audit_lines(tmp.path(), 5).await;
    let outcomes: Vec<&str> = lines
        .iter()
        .map(|l| l["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["created", "unchanged", "stale", "refused", "deleted"],
        "{lines:#?}"
    );
    let first = &lines[0];
    assert_eq!(first["path"], "http");
    assert_eq!(first["account"], key.as_str());
    assert_eq!(first["issuer"], op.signing_key.public_key().as_str());
    assert!(first["origin"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(first["jti"].as_str().is_some_and(|j| !j.is_empty()));
    assert!(first["iat"].as_i64().unwrap() > 0);
    assert!(
        lines[2]["reason"]
            .as_str()
            .unwrap()
            .contains("older than the stored one"),
        "{lines:#?}"
    );
    assert!(
        lines[3]["reason"]
            .as_str()
            .unwrap()
            .contains("untrusted issuer"),
        "{lines:#?}"
    );
    assert_eq!(lines[4]["path"], "http_delete");
    assert_eq!(lines[4]["account"], key.as_str());
    server.stop().await;
}

#[tokio::test]
async fn expired_jwts_are_purged_only_when_configured_audited_and_counted() {
    for delete_expired in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let op = Operator::new("expiry");
        let (live, live_jwt) = op.account("LIVE");
        let (gone, _) = op.account("GONE");
        let gone_jwt = {
            let mut claims = AccountClaims::new_account(gone.public_key().as_str(), "GONE");
            claims.exp = now() - 60;
            nas_jwt::encode(&mut claims, &op.signing_key, now() - 120).unwrap()
        };
        // An expired JWT cannot be POSTed: it was stored before it expired.
        let store = tmp.path().join("jwt");
        std::fs::create_dir_all(&store).unwrap();
        std::fs::write(store.join(format!("{}.jwt", gone.public_key())), &gone_jwt).unwrap();
        let server = start(tmp.path(), &op, |c| {
            c.expiry.delete_expired = delete_expired;
            c.expiry.cleanup_interval = Duration::from_millis(200);
        })
        .await;
        assert_eq!(
            post(&server, live.public_key().as_str(), &live_jwt).await,
            200
        );

        // The count is kept only once someone reads the metrics.
        assert_eq!(
            server.metrics.accounts_stored.get(),
            -1,
            "not counted unread"
        );
        server.metrics.render();
        // Event-driven: the round that counts two accounts (or one, after the purge).
        let want = if delete_expired { 1 } else { 2 };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while server.metrics.accounts_stored.get() != want {
            assert!(std::time::Instant::now() < deadline, "no upkeep round");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let file = store.join(format!("{}.jwt", gone.public_key()));
        assert_eq!(file.exists(), !delete_expired);
        assert_eq!(
            server.metrics.expired_purged.get(),
            u64::from(delete_expired)
        );
        let lines = audit_lines(tmp.path(), if delete_expired { 2 } else { 1 }).await;
        let purged: Vec<&Value> = lines
            .iter()
            .filter(|l| l["path"] == "expiry_purge")
            .collect();
        if delete_expired {
            assert_eq!(purged.len(), 1, "{lines:#?}");
            assert_eq!(purged[0]["account"], gone.public_key().as_str());
            assert_eq!(purged[0]["outcome"], "purged");
        } else {
            assert!(purged.is_empty(), "{lines:#?}");
        }
        let url = format!("{}/jwt/v1/accounts/{}", server.url(), live.public_key());
        assert_eq!(reqwest::get(url).await.unwrap().status(), 200);
        server.stop().await;
    }
}
