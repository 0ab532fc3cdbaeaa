//! The NATS bridge against real nats-servers (2.9.10 and 2.15.1): notifications applied by a URL
//! resolver, our LOOKUP responder feeding a `cache` resolver, PACK sync with a `full` resolver in
//! both directions, `nsc push`-style updates over NATS, prune via LIST + DELETE, refusals, and a
//! NATS outage that loses no notification and fails no HTTP request.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use nas_jwt::{encode, GenericClaims, KeyRole, SigningKey};
use nas_server::config::{Config, DirStore, StoreConfig};
use nas_server::server::Server;
use nas_testkit::{free_port, require_nats_servers, NatsBinary, NatsServer};
use serde_json::Value;

mod common;
use common::{
    cache_or_full_config, delete_request, now, reissue, system_user_creds, user_creds, Operator,
};

async fn start_ours(
    dir: &Path,
    operator: &Operator,
    nats_port: u16,
    tweak: impl FnOnce(&mut Config),
) -> Server {
    std::fs::write(dir.join("operator.jwt"), &operator.jwt).unwrap();
    std::fs::write(dir.join("sys.creds"), system_user_creds(operator)).unwrap();
    let mut config = Config::default();
    config.http.host = "127.0.0.1".into();
    config.http.port = 0;
    config.store = StoreConfig::Dir(DirStore::new(dir.join("jwt")));
    config.operator_jwt_path = Some(dir.join("operator.jwt"));
    config.nats.servers = vec![format!("nats://127.0.0.1:{nats_port}")];
    config.nats.user_credentials = Some(dir.join("sys.creds"));
    config.nats.reconnect_wait = Duration::from_millis(300);
    config.nats.pack_interval = None;
    tweak(&mut config);
    Server::start(&config).await.unwrap()
}

async fn post(server: &Server, key: &str, jwt: &str) -> reqwest::StatusCode {
    reqwest::Client::new()
        .post(format!("{}/jwt/v1/accounts/{key}", server.url()))
        .header("Content-Type", "application/jwt")
        .body(jwt.to_owned())
        .send()
        .await
        .unwrap()
        .status()
}

async fn get_status(server: &Server, key: &str) -> reqwest::StatusCode {
    reqwest::get(format!("{}/jwt/v1/accounts/{key}", server.url()))
        .await
        .unwrap()
        .status()
}

/// Polls `check` until it holds or the deadline passes (an effect, not a timing assertion).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never happened: {what}");
}

async fn connect(
    nats: &NatsServer,
    creds: &Path,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    async_nats::ConnectOptions::with_credentials_file(creds)
        .await
        .unwrap()
        .connection_timeout(Duration::from_secs(3))
        .connect(nats.url())
        .await
}

/// Sends a request and collects every reply for `window` (how `nsc` talks to servers).
async fn collect(
    client: &async_nats::Client,
    subject: &str,
    payload: Vec<u8>,
    window: Duration,
) -> Vec<Value> {
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await.unwrap();
    client
        .publish_with_reply(subject.to_owned(), inbox, payload.into())
        .await
        .unwrap();
    let mut replies = Vec::new();
    let deadline = Instant::now() + window;
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline.into(), sub.next()).await {
        if let Ok(v) = serde_json::from_slice::<Value>(&msg.payload) {
            replies.push(v);
        }
    }
    replies
}

fn ours(replies: &[Value]) -> Value {
    replies
        .iter()
        .find(|r| r["server"]["name"] == "nats-account-server")
        .cloned()
        .unwrap_or_else(|| panic!("no reply from the account server among {replies:?}"))
}

/// What nsc checks in every reply (§3.6 of the protocol spec).
fn assert_nsc_parses(reply: &Value) {
    let server = &reply["server"];
    assert!(
        server["name"].as_str().is_some_and(|n| !n.is_empty()),
        "{reply}"
    );
    assert!(server["seq"].as_u64().is_some(), "{reply}");
    assert!(server["jetstream"].is_boolean(), "{reply}");
    assert!(
        server["time"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.contains('T')),
        "{reply}"
    );
    assert!(
        reply.get("data").is_some() || reply["error"]["code"].as_i64().is_some(),
        "{reply}"
    );
}

/// A nats-server in operator mode whose URL resolver is `server`, on `port`.
fn url_resolver(bin: &NatsBinary, port: u16, op: &Operator, server: &Server) -> NatsServer {
    NatsServer::builder(bin)
        .port(port)
        .config(format!(
            "operator: {}\nsystem_account: {}\nresolver: URL({}/jwt/v1/accounts/)\n",
            op.jwt,
            op.system.public_key(),
            server.url()
        ))
        .start()
}

async fn wait_connected(server: &Server) {
    eventually("account server connected to NATS", || async {
        server.metrics.nats_connected.get() == 1
    })
    .await;
}

#[tokio::test]
async fn url_resolver_applies_our_notifications_and_outages_lose_nothing() {
    for bin in require_nats_servers() {
        let v = bin.reported_version.clone();
        let tmp = tempfile::tempdir().unwrap();
        let op = Operator::new("notify");
        let (app, app_jwt) = op.account("APP");
        let alice = SigningKey::generate(KeyRole::User);
        let alice_creds = {
            let mut claims = nas_jwt::UserClaims::new_user(alice.public_key().as_str(), "alice");
            let jwt = encode(&mut claims, &app, now() - 10).unwrap();
            nas_jwt::creds::format_creds(&jwt, alice.seed())
        };
        std::fs::write(tmp.path().join("alice.creds"), alice_creds).unwrap();
        let nats_port = free_port();
        // A long reconnect wait gives the watcher below time to subscribe on the restarted
        // server before we reconnect and publish what was queued during the outage.
        let server = start_ours(tmp.path(), &op, nats_port, |c| {
            c.nats.reconnect_wait = Duration::from_secs(3)
        })
        .await;
        assert_eq!(
            post(&server, op.system.public_key().as_str(), &op.system_jwt).await,
            200
        );
        assert_eq!(
            post(&server, app.public_key().as_str(), &app_jwt).await,
            200
        );
        let mut nats = url_resolver(&bin, nats_port, &op, &server);
        wait_connected(&server).await;
        let nc = connect(&nats, &tmp.path().join("alice.creds"))
            .await
            .unwrap_or_else(|e| panic!("{v}: {e}"));
        nc.flush().await.unwrap();

        // Revoke alice through our HTTP API: the running nats-server applies the notification
        // (a URL resolver never refetches a loaded account by itself).
        let revoked = reissue(&op, &app, "APP", now() + 1, |c| {
            c.nats
                .revocations
                .insert(alice.public_key().as_str().to_owned(), now() + 1);
        });
        assert_eq!(
            post(&server, app.public_key().as_str(), &revoked).await,
            200
        );
        eventually(&format!("{v}: revoked user refused"), || async {
            matches!(connect(&nats, &tmp.path().join("alice.creds")).await, Err(e) if e.kind() == async_nats::ConnectErrorKind::AuthorizationViolation)
        })
        .await;

        // Outage: nats-server down, HTTP keeps answering and accepting; the change made during
        // the outage is published after the reconnect.
        nats.stop();
        eventually("disconnect noticed", || async {
            server.metrics.nats_connected.get() == 0
        })
        .await;
        let (bob_acc, bob_jwt) = op.account("BOB");
        assert_eq!(
            post(&server, bob_acc.public_key().as_str(), &bob_jwt).await,
            200,
            "{v}: HTTP must not depend on NATS"
        );
        assert_eq!(get_status(&server, app.public_key().as_str()).await, 200);
        let during = reissue(&op, &bob_acc, "BOB-2", now() + 2, |_| {});
        assert_eq!(
            post(&server, bob_acc.public_key().as_str(), &during).await,
            200
        );
        std::fs::write(tmp.path().join("watch.creds"), system_user_creds(&op)).unwrap();
        // Hold our reconnect back until a watcher listens on the restarted server.
        nats.restart();
        let watcher = connect(&nats, &tmp.path().join("watch.creds"))
            .await
            .unwrap();
        let mut updates = watcher
            .subscribe(format!(
                "$SYS.ACCOUNT.{}.CLAIMS.UPDATE",
                bob_acc.public_key()
            ))
            .await
            .unwrap();
        watcher.flush().await.unwrap();
        let msg = tokio::time::timeout(Duration::from_secs(15), updates.next())
            .await
            .unwrap_or_else(|_| {
                panic!("{v}: the change made during the outage was never published")
            })
            .unwrap();
        assert_eq!(
            msg.payload,
            during.as_bytes(),
            "{v}: the latest JWT is published"
        );
        assert_eq!(server.metrics.nats_connected.get(), 1);
        server.stop().await;
    }
}

fn is_2_9(bin: &NatsBinary) -> bool {
    bin.reported_version.contains("2.9.")
}

#[tokio::test]
async fn cache_resolver_gets_accounts_from_our_lookup_responder() {
    for bin in require_nats_servers() {
        let v = bin.reported_version.clone();
        let tmp = tempfile::tempdir().unwrap();
        let op = Operator::new("lookup");
        let (app, app_jwt) = op.account("APP");
        let (unknown, _) = op.account("UNKNOWN");
        let nats_port = free_port();
        // 2.9.10 stores an empty LOOKUP reply as a 0-byte JWT: stay silent on misses there.
        let silent = is_2_9(&bin);
        let server = start_ours(tmp.path(), &op, nats_port, |c| {
            c.nats.lookup_miss_reply = !silent
        })
        .await;
        assert_eq!(
            post(&server, app.public_key().as_str(), &app_jwt).await,
            200
        );
        let nats = NatsServer::builder(&bin)
            .port(nats_port)
            .file("app.creds", user_creds(&app, "alice"))
            .file("unknown.creds", user_creds(&unknown, "bob"))
            .config(cache_or_full_config(&op, "cache", ""))
            .start();
        wait_connected(&server).await;
        connect(&nats, &nats.dir().join("app.creds"))
            .await
            .unwrap_or_else(|e| panic!("{v}: {e}\n{}", nats.log()));
        let err = connect(&nats, &nats.dir().join("unknown.creds"))
            .await
            .expect_err("unknown account refused");
        assert_eq!(
            err.kind(),
            async_nats::ConnectErrorKind::AuthorizationViolation,
            "{v}"
        );
        let metrics = server.metrics.render();
        assert!(
            metrics.contains("nas_resolver_requests_total{kind=\"lookup\",result=\"found\"}"),
            "{metrics}"
        );
        assert!(
            metrics.contains("nas_resolver_requests_total{kind=\"lookup\",result=\"missing\"}"),
            "{metrics}"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn updates_over_nats_list_and_delete_like_nsc() {
    let bin = require_nats_servers().pop().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("nsc-over-nats");
    let foreign = Operator::new("foreign");
    let (app, app_jwt) = op.account("APP");
    let nats_port = free_port();
    let server = start_ours(tmp.path(), &op, nats_port, |c| c.nats.allow_delete = true).await;
    let nats = NatsServer::builder(&bin)
        .port(nats_port)
        .config(cache_or_full_config(&op, "cache", ""))
        .start();
    wait_connected(&server).await;
    std::fs::write(tmp.path().join("nsc.creds"), system_user_creds(&op)).unwrap();
    let nsc = connect(&nats, &tmp.path().join("nsc.creds")).await.unwrap();

    // nsc push -u nats://…: a request on $SYS.REQ.CLAIMS.UPDATE, replies collected for a second.
    let replies = collect(
        &nsc,
        "$SYS.REQ.CLAIMS.UPDATE",
        app_jwt.clone().into_bytes(),
        Duration::from_secs(1),
    )
    .await;
    let reply = ours(&replies);
    assert_nsc_parses(&reply);
    assert_eq!(reply["data"]["message"], "jwt updated", "{reply}");
    assert_eq!(reply["data"]["account"], app.public_key().as_str());
    assert_eq!(get_status(&server, app.public_key().as_str()).await, 200);

    // Untrusted, older and malformed JWTs are refused over NATS and change nothing.
    let (intruder, intruder_jwt) = foreign.account("INTRUDER");
    let reply = ours(
        &collect(
            &nsc,
            "$SYS.REQ.CLAIMS.UPDATE",
            intruder_jwt.into_bytes(),
            Duration::from_secs(1),
        )
        .await,
    );
    assert_nsc_parses(&reply);
    assert!(
        reply["error"]["description"]
            .as_str()
            .unwrap()
            .contains("untrusted issuer"),
        "{reply}"
    );
    assert_eq!(
        get_status(&server, intruder.public_key().as_str()).await,
        404
    );
    let older = reissue(&op, &app, "APP-old", now() - 3600, |_| {});
    let subject = format!("$SYS.REQ.ACCOUNT.{}.CLAIMS.UPDATE", app.public_key());
    let reply = ours(&collect(&nsc, &subject, older.into_bytes(), Duration::from_secs(1)).await);
    assert!(
        reply["error"]["description"]
            .as_str()
            .unwrap()
            .contains("older than the stored one"),
        "{reply}"
    );
    let stored = reqwest::get(format!(
        "{}/jwt/v1/accounts/{}",
        server.url(),
        app.public_key()
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert_eq!(stored, app_jwt);
    let (other, other_jwt) = op.account("OTHER");
    let reply = ours(
        &collect(
            &nsc,
            &subject,
            other_jwt.into_bytes(),
            Duration::from_secs(1),
        )
        .await,
    );
    assert_eq!(
        reply["error"]["description"],
        "jwt update resulted in error - subject does not match jwt content"
    );
    assert_eq!(get_status(&server, other.public_key().as_str()).await, 404);
    let reply = ours(
        &collect(
            &nsc,
            "$SYS.REQ.CLAIMS.UPDATE",
            Vec::new(),
            Duration::from_secs(1),
        )
        .await,
    );
    assert_eq!(
        reply["error"]["description"],
        "jwt update error - request body is empty"
    );

    // nsc push --prune: LIST, then DELETE signed by an operator key.
    let reply = ours(
        &collect(
            &nsc,
            "$SYS.REQ.CLAIMS.LIST",
            Vec::new(),
            Duration::from_secs(1),
        )
        .await,
    );
    assert_nsc_parses(&reply);
    let listed: Vec<&str> = reply["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![app.public_key().as_str()]);
    let delete = |accounts: Vec<String>, signer: &SigningKey| {
        let mut claims = GenericClaims::new(signer.public_key().as_str(), "");
        claims.nats.insert("accounts".into(), accounts.into());
        encode(&mut claims, signer, now()).unwrap().into_bytes()
    };
    let reply = ours(
        &collect(
            &nsc,
            "$SYS.REQ.CLAIMS.DELETE",
            delete(
                vec![op.system.public_key().as_str().into()],
                &op.signing_key,
            ),
            Duration::from_secs(1),
        )
        .await,
    );
    assert!(
        reply["error"]["description"]
            .as_str()
            .unwrap()
            .ends_with("not allowed to delete system account"),
        "{reply}"
    );
    let reply = ours(
        &collect(
            &nsc,
            "$SYS.REQ.CLAIMS.DELETE",
            delete(vec![app.public_key().as_str().into()], &foreign.signing_key),
            Duration::from_secs(1),
        )
        .await,
    );
    assert!(
        reply["error"]["description"]
            .as_str()
            .unwrap()
            .ends_with("not trusted"),
        "{reply}"
    );
    assert_eq!(get_status(&server, app.public_key().as_str()).await, 200);
    let reply = ours(
        &collect(
            &nsc,
            "$SYS.REQ.CLAIMS.DELETE",
            delete(vec![app.public_key().as_str().into()], &op.signing_key),
            Duration::from_secs(1),
        )
        .await,
    );
    assert_nsc_parses(&reply);
    assert_eq!(reply["data"]["message"], "deleted 1 accounts", "{reply}");
    assert_eq!(get_status(&server, app.public_key().as_str()).await, 404);
    server.stop().await;
}

#[tokio::test]
async fn full_resolver_and_our_store_converge_through_pack() {
    for bin in require_nats_servers() {
        let v = bin.reported_version.clone();
        let tmp = tempfile::tempdir().unwrap();
        let op = Operator::new("pack");
        let (ours_acc, ours_jwt) = op.account("OURS");
        let (theirs_acc, theirs_jwt) = op.account("THEIRS");
        let nats_port = free_port();
        let server = start_ours(tmp.path(), &op, nats_port, |c| {
            c.nats.pack_interval = Some(Duration::from_millis(700))
        })
        .await;
        assert_eq!(
            post(&server, ours_acc.public_key().as_str(), &ours_jwt).await,
            200
        );
        // The full resolver already holds THEIRS on disk.
        let nats = NatsServer::builder(&bin)
            .port(nats_port)
            .file(format!("jwt/{}.jwt", theirs_acc.public_key()), &theirs_jwt)
            .config(cache_or_full_config(&op, "full", ", interval: \"1s\""))
            .start();
        wait_connected(&server).await;
        let their_file = nats
            .dir()
            .join(format!("jwt/{}.jwt", ours_acc.public_key()));
        eventually(
            &format!("{v}: full resolver stored our account from our PACK reply"),
            || {
                let (f, want) = (their_file.clone(), ours_jwt.clone());
                async move { std::fs::read(&f).is_ok_and(|b| b == want.as_bytes()) }
            },
        )
        .await;
        // Read the store, not GET: a GET miss would fetch it with a LOOKUP instead.
        eventually(
            &format!("{v}: we merged the full resolver's account"),
            || async {
                server
                    .store
                    .get_account(theirs_acc.public_key().as_str())
                    .await
                    .is_ok_and(|jwt| jwt.is_some_and(|b| b == theirs_jwt.as_bytes()))
            },
        )
        .await;
        server.stop().await;
    }
}

#[tokio::test]
async fn read_only_store_announces_jwts_written_by_other_programs() {
    let bin = require_nats_servers().pop().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("read-only");
    std::fs::create_dir_all(tmp.path().join("jwt")).unwrap();
    let nats_port = free_port();
    let server = start_ours(tmp.path(), &op, nats_port, |c| {
        c.store = StoreConfig::Dir(DirStore {
            read_only: true,
            ..DirStore::new(tmp.path().join("jwt"))
        })
    })
    .await;
    let nats = NatsServer::builder(&bin)
        .port(nats_port)
        .config(cache_or_full_config(&op, "cache", ""))
        .start();
    wait_connected(&server).await;
    std::fs::write(tmp.path().join("watch.creds"), system_user_creds(&op)).unwrap();
    let watcher = connect(&nats, &tmp.path().join("watch.creds"))
        .await
        .unwrap();
    let mut updates = watcher
        .subscribe("$SYS.ACCOUNT.*.CLAIMS.UPDATE")
        .await
        .unwrap();
    watcher.flush().await.unwrap();
    // Another program (a deploy job, a full resolver) writes a JWT into the directory.
    let (app, app_jwt) = op.account("APP");
    std::fs::write(
        tmp.path()
            .join("jwt")
            .join(format!("{}.jwt", app.public_key())),
        &app_jwt,
    )
    .unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(15), updates.next())
        .await
        .expect("the new file was announced")
        .unwrap();
    assert_eq!(
        msg.subject.as_str(),
        format!("$SYS.ACCOUNT.{}.CLAIMS.UPDATE", app.public_key())
    );
    assert_eq!(msg.payload, app_jwt.as_bytes());
    assert_eq!(get_status(&server, app.public_key().as_str()).await, 200);
    // And POSTs are refused with a message saying where to write.
    let (other, other_jwt) = op.account("OTHER");
    assert_eq!(
        post(&server, other.public_key().as_str(), &other_jwt).await,
        405
    );
    server.stop().await;
}

#[tokio::test]
async fn one_notification_per_change_and_none_for_updates_received_over_nats() {
    let bin = require_nats_servers().pop().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("once");
    let (a, a_jwt) = op.account("A");
    let (b, b_jwt) = op.account("B");
    let nats_port = free_port();
    let server = start_ours(tmp.path(), &op, nats_port, |_| {}).await;
    let nats = NatsServer::builder(&bin)
        .port(nats_port)
        .config(cache_or_full_config(&op, "cache", ""))
        .start();
    wait_connected(&server).await;
    std::fs::write(tmp.path().join("watch.creds"), system_user_creds(&op)).unwrap();
    let watcher = connect(&nats, &tmp.path().join("watch.creds"))
        .await
        .unwrap();
    let mut updates = watcher
        .subscribe("$SYS.ACCOUNT.*.CLAIMS.UPDATE")
        .await
        .unwrap();
    watcher.flush().await.unwrap();

    // A change, then the same JWT again (unchanged: nothing to announce).
    assert_eq!(post(&server, a.public_key().as_str(), &a_jwt).await, 200);
    assert_eq!(post(&server, a.public_key().as_str(), &a_jwt).await, 200);
    // A newer JWT arriving over NATS is applied, but every nats-server got that message too:
    // it is not re-published (the Go server re-broadcast it, D4).
    let a2 = reissue(&op, &a, "A-2", now() + 1, |_| {});
    let reply = ours(
        &collect(
            &watcher,
            "$SYS.REQ.CLAIMS.UPDATE",
            a2.clone().into_bytes(),
            Duration::from_secs(1),
        )
        .await,
    );
    assert_eq!(reply["data"]["message"], "jwt updated", "{reply}");
    let stored = server
        .store
        .get_account(a.public_key().as_str())
        .await
        .unwrap();
    assert_eq!(stored.as_deref(), Some(a2.as_bytes()));
    // A sentinel change: notifications go out in order, so anything extra about A arrives first.
    assert_eq!(post(&server, b.public_key().as_str(), &b_jwt).await, 200);
    let mut seen = Vec::new();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(15), updates.next())
            .await
            .expect("the sentinel notification arrives")
            .unwrap();
        let done = msg.subject.as_str().contains(b.public_key().as_str());
        seen.push((msg.subject.to_string(), msg.payload.clone()));
        if done {
            break;
        }
    }
    assert_eq!(
        seen,
        vec![
            (
                format!("$SYS.ACCOUNT.{}.CLAIMS.UPDATE", a.public_key()),
                bytes::Bytes::from(a_jwt.clone())
            ),
            (
                format!("$SYS.ACCOUNT.{}.CLAIMS.UPDATE", b.public_key()),
                bytes::Bytes::from(b_jwt.clone())
            ),
        ],
        "exactly one notification per accepted change, raw JWT payload"
    );
    server.stop().await;
}

#[tokio::test]
async fn http_get_miss_is_answered_from_full_resolvers_over_nats() {
    for bin in require_nats_servers() {
        let v = bin.reported_version.clone();
        let tmp = tempfile::tempdir().unwrap();
        let op = Operator::new("get-fallback");
        let foreign = Operator::new("foreign");
        let (theirs, theirs_jwt) = op.account("THEIRS");
        let (planted, planted_jwt) = foreign.account("PLANTED");
        let (unknown, _) = op.account("UNKNOWN");
        let nats_port = free_port();
        let server = start_ours(tmp.path(), &op, nats_port, |_| {}).await;
        // The full resolver holds THEIRS and a JWT of another operator planted in its directory.
        let _nats = NatsServer::builder(&bin)
            .port(nats_port)
            .file(format!("jwt/{}.jwt", theirs.public_key()), &theirs_jwt)
            .file(format!("jwt/{}.jwt", planted.public_key()), &planted_jwt)
            .config(cache_or_full_config(&op, "full", ""))
            .start();
        wait_connected(&server).await;

        let res = reqwest::get(format!(
            "{}/jwt/v1/accounts/{}",
            server.url(),
            theirs.public_key()
        ))
        .await
        .unwrap();
        assert_eq!(res.status(), 200, "{v}");
        assert_eq!(res.text().await.unwrap(), theirs_jwt, "{v}");
        let stored = server
            .store
            .get_account(theirs.public_key().as_str())
            .await
            .unwrap();
        assert_eq!(
            stored.as_deref(),
            Some(theirs_jwt.as_bytes()),
            "{v}: verified and kept"
        );

        // Validated before it is served or stored (the Go server served LOOKUP replies as is, D9).
        assert_eq!(
            get_status(&server, planted.public_key().as_str()).await,
            404,
            "{v}"
        );
        assert!(server
            .store
            .get_account(planted.public_key().as_str())
            .await
            .unwrap()
            .is_none());
        // Nobody has it: 404 (an empty reply from 2.9.17+, silence until the timeout from 2.9.10).
        assert_eq!(
            get_status(&server, unknown.public_key().as_str()).await,
            404,
            "{v}"
        );
        let metrics = server.metrics.render();
        assert!(
            metrics
                .contains("nas_resolver_requests_total{kind=\"lookup_sent\",result=\"found\"} 1"),
            "{metrics}"
        );
        assert!(
            metrics
                .contains("nas_resolver_requests_total{kind=\"lookup_sent\",result=\"refused\"} 1"),
            "{metrics}"
        );
        // Every LOOKUP we sent has its round trip measured.
        assert!(
            metrics
                .contains("nas_nats_request_duration_seconds_count{kind=\"lookup\",result=\"ok\"}"),
            "{metrics}"
        );
        assert!(
            metrics.contains("nas_notification_queue_depth 0"),
            "{metrics}"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn replica_follows_primary_notifications_and_is_no_nats_write_target() {
    let bin = require_nats_servers().pop().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("replica-nats");
    let (a, a_jwt) = op.account("A");
    let (b, b_jwt) = op.account("B");
    let nats_port = free_port();
    for d in ["primary", "replica"] {
        std::fs::create_dir_all(tmp.path().join(d)).unwrap();
    }
    let primary = start_ours(&tmp.path().join("primary"), &op, nats_port, |c| {
        c.nats.name = "primary".into()
    })
    .await;
    let primary_url = primary.url();
    let replica = start_ours(&tmp.path().join("replica"), &op, nats_port, |c| {
        c.nats.name = "replica".into();
        c.primary = Some(primary_url);
        // Long enough that only a notification can bring a change within the test.
        c.replica_validity = Duration::from_secs(3600);
    })
    .await;
    let nats = NatsServer::builder(&bin)
        .port(nats_port)
        .config(cache_or_full_config(&op, "cache", ""))
        .start();
    wait_connected(&primary).await;
    wait_connected(&replica).await;

    assert_eq!(post(&primary, a.public_key().as_str(), &a_jwt).await, 200);
    let get = |url: String| async move { reqwest::get(url).await.unwrap().text().await.unwrap() };
    let replica_a = format!("{}/jwt/v1/accounts/{}", replica.url(), a.public_key());
    assert_eq!(
        get(replica_a.clone()).await,
        a_jwt,
        "fetched from the primary"
    );
    let newer = reissue(&op, &a, "A-2", now() + 1, |_| {});
    assert_eq!(post(&primary, a.public_key().as_str(), &newer).await, 200);
    eventually("the replica applied the primary's notification", || {
        let (url, want) = (replica_a.clone(), newer.clone());
        async move { get(url).await == want }
    })
    .await;

    // nsc push over NATS: the primary answers; the replica is no write target and stays quiet
    // (an error reply would stop nsc from counting the other servers).
    std::fs::write(tmp.path().join("nsc.creds"), system_user_creds(&op)).unwrap();
    let nsc = connect(&nats, &tmp.path().join("nsc.creds")).await.unwrap();
    let replies = collect(
        &nsc,
        "$SYS.REQ.CLAIMS.UPDATE",
        b_jwt.clone().into_bytes(),
        Duration::from_secs(1),
    )
    .await;
    let names: Vec<&str> = replies
        .iter()
        .filter_map(|r| r["server"]["name"].as_str())
        .collect();
    assert!(names.contains(&"primary"), "{replies:?}");
    assert!(!names.contains(&"replica"), "{replies:?}");
    assert_eq!(get_status(&primary, b.public_key().as_str()).await, 200);
    // The replica heard the same update and applied it quietly.
    eventually("B reached the replica", || async {
        replica
            .store
            .get_account(b.public_key().as_str())
            .await
            .is_ok_and(|j| j.is_some())
    })
    .await;
    assert_eq!(post(&replica, b.public_key().as_str(), &b_jwt).await, 405);
    replica.stop().await;
    primary.stop().await;
}

#[tokio::test]
async fn deletes_stick_and_captured_or_expired_requests_are_refused() {
    let bin = require_nats_servers().pop().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("tomb");
    let (app, app_jwt) = op.account("APP");
    let key = app.public_key().as_str().to_owned();
    let nats_port = free_port();
    let server = start_ours(tmp.path(), &op, nats_port, |c| c.nats.allow_delete = true).await;
    let nats = NatsServer::builder(&bin)
        .port(nats_port)
        .config(cache_or_full_config(&op, "cache", ""))
        .start();
    wait_connected(&server).await;
    std::fs::write(tmp.path().join("nsc.creds"), system_user_creds(&op)).unwrap();
    let nsc = connect(&nats, &tmp.path().join("nsc.creds")).await.unwrap();
    assert_eq!(post(&server, &key, &app_jwt).await, 200);
    let ask = |subject: &'static str, payload: Vec<u8>| {
        let nsc = nsc.clone();
        async move { ours(&collect(&nsc, subject, payload, Duration::from_secs(1)).await) }
    };

    // An expired request and one not valid yet are refused; the account stays.
    let expired = delete_request(vec![key.clone()], &op.signing_key, now() - 20, now() - 10);
    let reply = ask("$SYS.REQ.CLAIMS.DELETE", expired).await;
    assert!(
        reply["error"]["description"]
            .as_str()
            .unwrap()
            .ends_with("request expired"),
        "{reply}"
    );
    let mut early = GenericClaims::new(op.signing_key.public_key().as_str(), "");
    early
        .nats
        .insert("accounts".into(), vec![key.clone()].into());
    early.nbf = now() + 3600;
    let early = encode(&mut early, &op.signing_key, now())
        .unwrap()
        .into_bytes();
    let reply = ask("$SYS.REQ.CLAIMS.DELETE", early).await;
    assert!(
        reply["error"]["description"]
            .as_str()
            .unwrap()
            .ends_with("request not yet valid"),
        "{reply}"
    );
    assert_eq!(get_status(&server, &key).await, 200);

    // The delete: the file is renamed as nats-server's full resolver does, a tombstone stays.
    let deleted_at = now() + 1;
    let request = delete_request(vec![key.clone()], &op.signing_key, deleted_at, 0);
    let reply = ask("$SYS.REQ.CLAIMS.DELETE", request.clone()).await;
    assert_eq!(reply["data"]["message"], "deleted 1 accounts", "{reply}");
    assert_eq!(get_status(&server, &key).await, 404);
    let store_dir = tmp.path().join("jwt");
    assert!(store_dir.join(format!("{key}.jwt.deleted")).is_file());
    assert!(store_dir
        .join("tombstones")
        .join(format!("{key}.jwt"))
        .is_file());

    // The old JWT cannot come back: not by POST, not by an UPDATE, not by a PACK line.
    let http = reqwest::Client::new()
        .post(format!("{}/jwt/v1/accounts/{key}", server.url()))
        .body(app_jwt.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(http.status(), 409);
    assert!(http.text().await.unwrap().contains("deleted"));
    let reply = ask("$SYS.REQ.CLAIMS.UPDATE", app_jwt.clone().into_bytes()).await;
    assert!(
        reply["error"]["description"]
            .as_str()
            .unwrap()
            .contains("deleted"),
        "{reply}"
    );
    assert_eq!(get_status(&server, &key).await, 404);

    // A JWT issued after the delete re-creates it; replaying the captured request then fails.
    let again = reissue(&op, &app, "APP-2", deleted_at + 1, |_| {});
    assert_eq!(post(&server, &key, &again).await, 200);
    let reply = ask("$SYS.REQ.CLAIMS.DELETE", request).await;
    assert!(
        reply["error"]["description"]
            .as_str()
            .unwrap()
            .contains("newer than the delete request"),
        "{reply}"
    );
    assert_eq!(get_status(&server, &key).await, 200);
    server.stop().await;
}

#[tokio::test]
async fn racing_posts_are_announced_in_store_order_and_end_with_the_newest() {
    let bin = require_nats_servers().pop().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("order");
    let (a, _) = op.account("A");
    let (b, b_jwt) = op.account("B");
    let nats_port = free_port();
    let server = start_ours(tmp.path(), &op, nats_port, |_| {}).await;
    let nats = NatsServer::builder(&bin)
        .port(nats_port)
        .config(cache_or_full_config(&op, "cache", ""))
        .start();
    wait_connected(&server).await;
    std::fs::write(tmp.path().join("watch.creds"), system_user_creds(&op)).unwrap();
    let watcher = connect(&nats, &tmp.path().join("watch.creds"))
        .await
        .unwrap();
    let mut updates = watcher
        .subscribe("$SYS.ACCOUNT.*.CLAIMS.UPDATE")
        .await
        .unwrap();
    watcher.flush().await.unwrap();
    let base = now() + 10;
    let versions: Vec<String> = (0..40)
        .map(|i| reissue(&op, &a, "A", base + i, |_| {}))
        .collect();
    let mut tasks = Vec::new();
    for v in versions.iter().rev().cloned() {
        let (url, key) = (server.url(), a.public_key().as_str().to_owned());
        tasks.push(tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{url}/jwt/v1/accounts/{key}"))
                .body(v)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        let status = t.await.unwrap();
        assert!(status == 200 || status == 409, "{status}");
    }
    assert_eq!(post(&server, b.public_key().as_str(), &b_jwt).await, 200);
    let mut iats = Vec::new();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(15), updates.next())
            .await
            .expect("the sentinel notification arrives")
            .unwrap();
        if msg.subject.as_str().contains(b.public_key().as_str()) {
            break;
        }
        iats.push(nas_store::TokenMeta::read(&msg.payload).unwrap().iat);
    }
    assert!(
        iats.windows(2).all(|w| w[0] < w[1]),
        "older after newer: {iats:?}"
    );
    assert_eq!(
        iats.last(),
        Some(&(base + 39)),
        "the last notification is the newest"
    );
    server.stop().await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn instances_sharing_redis_announce_each_change_once() {
    let bin = require_nats_servers().pop().unwrap();
    let redis = nas_testkit::RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("fanout");
    let (a, a_jwt) = op.account("A");
    let (b, b_jwt) = op.account("B");
    let nats_port = free_port();
    let on_redis = |c: &mut Config| {
        c.store = StoreConfig::Redis(nas_server::config::RedisStore {
            prefix: "fanout:".into(),
            ..nas_server::config::RedisStore::new(redis.url())
        });
    };
    let one = start_ours(tmp.path(), &op, nats_port, on_redis).await;
    let two = start_ours(tmp.path(), &op, nats_port, on_redis).await;
    let nats = NatsServer::builder(&bin)
        .port(nats_port)
        .config(cache_or_full_config(&op, "cache", ""))
        .start();
    wait_connected(&one).await;
    wait_connected(&two).await;
    std::fs::write(tmp.path().join("watch.creds"), system_user_creds(&op)).unwrap();
    let watcher = connect(&nats, &tmp.path().join("watch.creds"))
        .await
        .unwrap();
    let mut updates = watcher
        .subscribe("$SYS.ACCOUNT.*.CLAIMS.UPDATE")
        .await
        .unwrap();
    watcher.flush().await.unwrap();
    let before = two.store.generation(a.public_key().as_str());
    assert_eq!(post(&one, a.public_key().as_str(), &a_jwt).await, 200);
    eventually("instance two hears of the write", || async {
        two.store.generation(a.public_key().as_str()) > before
    })
    .await;
    // Two's notifications are ordered: a re-announcement of A would arrive before its B.
    assert_eq!(post(&two, b.public_key().as_str(), &b_jwt).await, 200);
    let mut seen = Vec::new();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(15), updates.next())
            .await
            .expect("the sentinel notification arrives")
            .unwrap();
        let done = msg.subject.as_str().contains(b.public_key().as_str());
        seen.push(msg.subject.to_string());
        if done {
            break;
        }
    }
    assert_eq!(
        seen,
        vec![
            format!("$SYS.ACCOUNT.{}.CLAIMS.UPDATE", a.public_key()),
            format!("$SYS.ACCOUNT.{}.CLAIMS.UPDATE", b.public_key()),
        ],
        "one notification per change per deployment"
    );
    one.stop().await;
    two.stop().await;
}

#[tokio::test]
async fn a_same_second_reissue_over_nats_follows_the_tie_break_both_ways() {
    let bin = require_nats_servers().pop().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("same-second-nats");
    let (acc, _) = op.account("A");
    let key = acc.public_key().as_str().to_owned();
    let nats_port = free_port();
    let server = start_ours(tmp.path(), &op, nats_port, |_| {}).await;
    let nats = NatsServer::builder(&bin)
        .port(nats_port)
        .config(cache_or_full_config(&op, "cache", ""))
        .start();
    wait_connected(&server).await;
    std::fs::write(tmp.path().join("nsc.creds"), system_user_creds(&op)).unwrap();
    let nsc = connect(&nats, &tmp.path().join("nsc.creds")).await.unwrap();
    let iat = now();
    let x = reissue(&op, &acc, "A", iat, |c| c.nats.limits.conn = 1);
    let y = reissue(&op, &acc, "A", iat, |c| c.nats.limits.conn = 2);
    let rank = |t: &str| nas_store::Rank::of(iat, t.as_bytes());
    let (lo, hi) = if rank(&x) < rank(&y) { (x, y) } else { (y, x) };
    let update = |jwt: String| {
        let nsc = nsc.clone();
        async move {
            ours(
                &collect(
                    &nsc,
                    "$SYS.REQ.CLAIMS.UPDATE",
                    jwt.into_bytes(),
                    Duration::from_secs(1),
                )
                .await,
            )
        }
    };
    // The tie-break winner replaces the loser over NATS: success means it is served.
    assert_eq!(post(&server, &key, &lo).await, 200);
    let reply = update(hi.clone()).await;
    assert_eq!(reply["data"]["message"], "jwt updated", "{reply}");
    assert_eq!(
        server.store.get_account(&key).await.unwrap().unwrap(),
        hi.as_bytes()
    );
    // The loser is refused with nats-server's error shape, telling the user to re-issue.
    let reply = update(lo).await;
    let description = reply["error"]["description"].as_str().unwrap_or_default();
    assert!(description.contains("re-issue"), "{reply}");
    assert_eq!(
        server.store.get_account(&key).await.unwrap().unwrap(),
        hi.as_bytes()
    );
    server.stop().await;
}

/// `?notify=true` is open to anyone who can GET: a burst of them for one account is one
/// message to the nats-servers, not one per request. A later change of another account is the
/// sentinel: everything published before it has arrived when it does.
#[tokio::test]
async fn notify_on_demand_is_one_message_per_account_per_second() {
    let bin = require_nats_servers().remove(0);
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("burst");
    let (a, a_jwt) = op.account("A");
    let (b, b_jwt) = op.account("B");
    let nats_port = free_port();
    let server = start_ours(tmp.path(), &op, nats_port, |_| {}).await;
    for (key, jwt) in [(&op.system, &op.system_jwt), (&a, &a_jwt), (&b, &b_jwt)] {
        assert_eq!(post(&server, key.public_key().as_str(), jwt).await, 200);
    }
    let nats = url_resolver(&bin, nats_port, &op, &server);
    wait_connected(&server).await;
    let watcher = connect(&nats, &tmp.path().join("sys.creds")).await.unwrap();
    let mut updates = watcher
        .subscribe("$SYS.ACCOUNT.*.CLAIMS.UPDATE")
        .await
        .unwrap();
    watcher.flush().await.unwrap();

    let client = reqwest::Client::new();
    let url = format!(
        "{}/jwt/v1/accounts/{}?notify=true",
        server.url(),
        a.public_key()
    );
    for _ in 0..50 {
        assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
    }
    let b_newer = reissue(&op, &b, "B", now() + 1, |_| {});
    assert_eq!(post(&server, b.public_key().as_str(), &b_newer).await, 200);

    let a_subject = format!("$SYS.ACCOUNT.{}.CLAIMS.UPDATE", a.public_key());
    let b_subject = format!("$SYS.ACCOUNT.{}.CLAIMS.UPDATE", b.public_key());
    let mut for_a = 0;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(15), updates.next())
            .await
            .expect("the sentinel update arrives")
            .unwrap();
        if msg.subject.as_str() == b_subject {
            assert_eq!(msg.payload, b_newer.as_bytes());
            break;
        }
        if msg.subject.as_str() == a_subject {
            assert_eq!(msg.payload, a_jwt.as_bytes());
            for_a += 1;
        }
    }
    assert_eq!(for_a, 1, "50 on-demand notifies of one account");
    server.stop().await;
}

#[tokio::test]
async fn audit_lines_are_published_on_the_configured_subject() {
    let bin = require_nats_servers().pop().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("audit-subject");
    let nats_port = free_port();
    let server = start_ours(tmp.path(), &op, nats_port, |c| {
        c.audit.subject = Some("nas.audit".into());
    })
    .await;
    let nats = NatsServer::builder(&bin)
        .port(nats_port)
        .config(cache_or_full_config(&op, "cache", ""))
        .start();
    wait_connected(&server).await;
    std::fs::write(tmp.path().join("watch.creds"), system_user_creds(&op)).unwrap();
    let watcher = connect(&nats, &tmp.path().join("watch.creds"))
        .await
        .unwrap();
    let mut lines = watcher.subscribe("nas.audit").await.unwrap();
    watcher.flush().await.unwrap();

    let (app, app_jwt) = op.account("APP");
    assert_eq!(
        post(&server, app.public_key().as_str(), &app_jwt).await,
        200
    );
    let (other, other_jwt) = op.account("OTHER");
    watcher
        .publish(
            format!("$SYS.REQ.ACCOUNT.{}.CLAIMS.UPDATE", other.public_key()),
            other_jwt.into(),
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let msg = tokio::time::timeout(Duration::from_secs(5), lines.next())
            .await
            .expect("an audit line")
            .unwrap();
        seen.push(serde_json::from_slice::<Value>(&msg.payload).unwrap());
    }
    assert_eq!(seen[0]["path"], "http");
    assert_eq!(seen[0]["account"], app.public_key().as_str());
    assert_eq!(seen[0]["outcome"], "created");
    assert_eq!(seen[1]["path"], "nats_update");
    assert_eq!(
        seen[1]["origin"],
        format!("$SYS.REQ.ACCOUNT.{}.CLAIMS.UPDATE", other.public_key())
    );
    assert_eq!(seen[1]["outcome"], "created");
    server.stop().await;
}

/// A self-signed account JWT (what a user without the operator's keys can make).
fn self_signed(account: &SigningKey, name: &str) -> String {
    let mut claims = nas_jwt::AccountClaims::new_account(account.public_key().as_str(), name);
    encode(&mut claims, account, now()).unwrap()
}

#[tokio::test]
async fn self_signed_uploads_go_to_the_signing_service_and_its_answer_through_the_accept_rule() {
    let bin = require_nats_servers().pop().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("signing");
    let nats_port = free_port();
    let server = start_ours(tmp.path(), &op, nats_port, |c| {
        c.sign_request_subject = Some("nas.sign".into());
        c.sign_request_timeout = Duration::from_millis(500);
    })
    .await;
    let nats = NatsServer::builder(&bin)
        .port(nats_port)
        .config(cache_or_full_config(&op, "cache", ""))
        .start();
    wait_connected(&server).await;
    std::fs::write(tmp.path().join("svc.creds"), system_user_creds(&op)).unwrap();
    let service = connect(&nats, &tmp.path().join("svc.creds")).await.unwrap();
    let upload = |key: String, jwt: String| {
        let url = format!("{}/jwt/v1/accounts/{key}", server.url());
        async move {
            let response = reqwest::Client::new()
                .post(url)
                .body(jwt)
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };

    // No signing service listening.
    let a = SigningKey::generate(KeyRole::Account);
    let a_key = a.public_key().as_str().to_owned();
    let (status, body) = upload(a_key.clone(), self_signed(&a, "A")).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body.starts_with("Failure during signature request. Try again at a later time. Error:"),
        "{body}"
    );

    // One that never answers.
    let silent = service.subscribe("nas.sign").await.unwrap();
    service.flush().await.unwrap();
    let (status, body) = upload(a_key.clone(), self_signed(&a, "A")).await;
    assert_eq!(
        (status, body.as_str()),
        (
            500,
            "Failure during signature request. signing service unavailable.\n"
        )
    );
    drop(silent);

    // One that signs with the operator's signing key: the answer is stored like any upload.
    let mut requests = service.subscribe("nas.sign").await.unwrap();
    service.flush().await.unwrap();
    let signer = {
        let (service, signing_key) = (service.clone(), op.signing_key.seed().to_owned());
        tokio::spawn(async move {
            let signing_key = SigningKey::from_seed(&signing_key, KeyRole::Operator).unwrap();
            while let Some(msg) = requests.next().await {
                let (_, mut claims) = nas_jwt::decode(&msg.payload)
                    .unwrap()
                    .into_account()
                    .unwrap();
                let reply = if claims.name == "REFUSE" {
                    "Your request will be audited".to_owned()
                } else {
                    encode(&mut claims, &signing_key, now()).unwrap()
                };
                service
                    .publish(msg.reply.unwrap(), reply.into())
                    .await
                    .unwrap();
            }
        })
    };
    assert_eq!(
        upload(a_key.clone(), self_signed(&a, "A")).await,
        (200, String::new())
    );
    let stored = reqwest::get(format!("{}/jwt/v1/accounts/{a_key}", server.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (_, claims) = nas_jwt::decode(stored.as_bytes())
        .unwrap()
        .into_account()
        .unwrap();
    assert_eq!(claims.iss, op.signing_key.public_key().as_str());

    // An answer that is not a JWT is passed back with 202; nothing is stored.
    let r = SigningKey::generate(KeyRole::Account);
    let r_key = r.public_key().as_str().to_owned();
    let (status, body) = upload(r_key.clone(), self_signed(&r, "REFUSE")).await;
    assert_eq!(
        (status, body.as_str()),
        (202, "Your request will be audited")
    );
    assert_eq!(get_status(&server, &r_key).await, 404);

    // The Go server's checks before asking: a stored operator-signed account cannot be
    // replaced by a self-signed one, and nobody else may self-sign for an absent account.
    let (status, body) = upload(a_key.clone(), self_signed(&a, "A")).await;
    assert_eq!(
        (status, body.as_str()),
        (400, "bad JWT issuer is not trusted\n")
    );
    let other = SigningKey::generate(KeyRole::Account);
    let b = SigningKey::generate(KeyRole::Account);
    let mut claims = nas_jwt::AccountClaims::new_account(b.public_key().as_str(), "B");
    let by_other = encode(&mut claims, &other, now()).unwrap();
    let (status, body) = upload(b.public_key().as_str().to_owned(), by_other).await;
    assert_eq!(
        (status, body.as_str()),
        (400, "bad JWT Issuer/Subject pair in request\n")
    );
    signer.abort();
    server.stop().await;
}

#[tokio::test]
async fn a_self_signed_upload_without_a_nats_connection_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("signing-offline");
    // Nothing listens on this port: NATS stays disconnected.
    let server = start_ours(tmp.path(), &op, free_port(), |c| {
        c.sign_request_subject = Some("nas.sign".into());
    })
    .await;
    let a = SigningKey::generate(KeyRole::Account);
    let url = format!("{}/jwt/v1/accounts/{}", server.url(), a.public_key());
    let response = reqwest::Client::new()
        .post(url)
        .body(self_signed(&a, "A"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(
        response.text().await.unwrap(),
        "Failure during signature request. nats-server unavailable.\n"
    );
    server.stop().await;
}
