//! Proof that tokens minted by `nas-jwt` work with a real nats-server (operator mode, MEMORY
//! resolver): a trusted user connects and exchanges a message; a user whose account was signed
//! by an unknown operator is refused. Runs against every required nats-server version.

use std::time::Duration;

use futures::StreamExt;
use nas_testkit::{require_nats_servers, NatsServer};

mod common;
use common::{user_creds, Operator};

#[tokio::test]
async fn minted_tokens_work_with_a_real_nats_server() {
    let trusted = Operator::new("trusted");
    let foreign = Operator::new("foreign");
    assert_ne!(trusted.identity.public_key(), foreign.identity.public_key());
    let (app, app_jwt) = trusted.account("APP");
    let (intruder, intruder_jwt) = foreign.account("INTRUDER");

    for bin in require_nats_servers() {
        let config = format!(
            "operator: {op}\nsystem_account: {sys}\nresolver: MEMORY\nresolver_preload: {{\n  {sys}: {sys_jwt}\n  {app}: {app_jwt}\n  {intr}: {intr_jwt}\n}}\n",
            op = trusted.jwt,
            sys = trusted.system.public_key(),
            sys_jwt = trusted.system_jwt,
            app = app.public_key(),
            app_jwt = app_jwt,
            intr = intruder.public_key(),
            intr_jwt = intruder_jwt,
        );
        let server = NatsServer::builder(&bin)
            .file("app.creds", user_creds(&app, "alice"))
            .file("intruder.creds", user_creds(&intruder, "mallory"))
            .config(config)
            .start();
        let version = &bin.reported_version;

        let client =
            async_nats::ConnectOptions::with_credentials_file(server.dir().join("app.creds"))
                .await
                .unwrap()
                .connect(server.url())
                .await
                .unwrap_or_else(|e| {
                    panic!("{version}: trusted user refused: {e}\n{}", server.log())
                });
        let mut sub = client.subscribe("greetings").await.unwrap();
        client.flush().await.unwrap();
        client.publish("greetings", "hello".into()).await.unwrap();
        let msg = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .unwrap_or_else(|_| panic!("{version}: no message received"))
            .unwrap();
        assert_eq!(&msg.payload[..], b"hello", "{version}");

        let refused =
            async_nats::ConnectOptions::with_credentials_file(server.dir().join("intruder.creds"))
                .await
                .unwrap()
                .connection_timeout(Duration::from_secs(2))
                .connect(server.url())
                .await;
        let error = match refused {
            Ok(_) => panic!("{version}: user of an untrusted operator's account was accepted"),
            Err(e) => e,
        };
        assert_eq!(
            error.kind(),
            async_nats::ConnectErrorKind::AuthorizationViolation,
            "{version}: {error}"
        );
        assert!(
            server.wait_for_log("authentication error", Duration::from_secs(5))
                || server.log().contains("Authorization Violation"),
            "{version}: server log does not show the refusal:\n{}",
            server.log()
        );
    }
}
