//! A real nats-server (2.9.10 and 2.15.1) resolves accounts from our server over HTTP:
//! `resolver: URL(...)` passes the startup probe and fetches the system account; a user whose
//! account was pushed the way `nsc push` does connects and exchanges a message; users of missing
//! or untrusted accounts are refused.

use std::time::Duration;

use futures::StreamExt;
use nas_server::config::{Config, DirStore, StoreConfig};
use nas_server::server::Server;
use nas_testkit::{require_nats_servers, NatsServer};

mod common;
use common::{user_creds, Operator};

async fn push(client: &reqwest::Client, base: &str, key: &str, jwt: &str) {
    // What `nsc push` sends: POST <asu>/accounts/<key>, Content-Type application/jwt, raw JWT.
    let res = client
        .post(format!("{base}/jwt/v1/accounts/{key}"))
        .header("Content-Type", "application/jwt")
        .body(jwt.to_owned())
        .send()
        .await
        .unwrap();
    let status = res.status();
    assert_eq!(
        status,
        200,
        "push of {key} failed: {}",
        res.text().await.unwrap()
    );
}

#[tokio::test]
async fn nats_server_resolves_accounts_from_our_http_api() {
    let operator = Operator::new("url-resolver-test");
    let (app, app_jwt) = operator.account("APP");
    let (unpushed, _) = operator.account("NEVER-PUSHED");
    let foreign = Operator::new("foreign");
    let (intruder, _) = foreign.account("INTRUDER");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("operator.jwt"), &operator.jwt).unwrap();
    let mut config = Config::default();
    config.http.host = "127.0.0.1".into();
    config.http.port = 0;
    config.store = StoreConfig::Dir(DirStore::new(dir.path().join("jwt")));
    config.operator_jwt_path = Some(dir.path().join("operator.jwt"));
    let server = Server::start(&config).await.unwrap();
    let base = server.url();
    let client = reqwest::Client::new();
    push(
        &client,
        &base,
        operator.system.public_key().as_str(),
        &operator.system_jwt,
    )
    .await;
    push(&client, &base, app.public_key().as_str(), &app_jwt).await;

    for bin in require_nats_servers() {
        let version = bin.reported_version.clone();
        let nats = NatsServer::builder(&bin)
            .file("app.creds", user_creds(&app, "alice"))
            .file("unpushed.creds", user_creds(&unpushed, "bob"))
            .file("intruder.creds", user_creds(&intruder, "mallory"))
            .config(format!(
                "operator: {}\nsystem_account: {}\nresolver: URL({base}/jwt/v1/accounts/)\n",
                operator.jwt,
                operator.system.public_key()
            ))
            .start();

        let nc = async_nats::ConnectOptions::with_credentials_file(nats.dir().join("app.creds"))
            .await
            .unwrap()
            .connect(nats.url())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{version}: user of a pushed account refused: {e}\n{}",
                    nats.log()
                )
            });
        let mut sub = nc.subscribe("orders").await.unwrap();
        nc.flush().await.unwrap();
        nc.publish("orders", "42".into()).await.unwrap();
        let msg = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&msg.payload[..], b"42", "{version}");

        for creds in ["unpushed.creds", "intruder.creds"] {
            let refused = async_nats::ConnectOptions::with_credentials_file(nats.dir().join(creds))
                .await
                .unwrap()
                .connection_timeout(Duration::from_secs(3))
                .connect(nats.url())
                .await;
            let err = refused
                .err()
                .unwrap_or_else(|| panic!("{version}: {creds} was accepted"));
            assert_eq!(
                err.kind(),
                async_nats::ConnectErrorKind::AuthorizationViolation,
                "{version} {creds}: {err}"
            );
        }
        let app_fetch_failed = format!(
            "could not fetch <\"{base}/jwt/v1/accounts/{}\">",
            app.public_key()
        );
        assert!(
            !nats.log().contains(&app_fetch_failed),
            "{version}: {}",
            nats.log()
        );
        let probe_failed = format!("could not fetch <\"{base}/jwt/v1/accounts/\">");
        assert!(
            !nats.log().contains(&probe_failed),
            "{version}: probe failed"
        );
    }
    // nats-server fetched the system account and the app account over HTTP.
    let metrics = server.metrics.render();
    assert!(metrics.contains("nas_http_requests_total{method=\"GET\",route=\"/jwt/v1/accounts/{key}\",status=\"200\"}"), "{metrics}");
    assert!(
        metrics.contains("route=\"/jwt/v1/accounts/\""),
        "startup probe seen: {metrics}"
    );
    server.stop().await;
}
