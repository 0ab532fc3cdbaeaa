//! Replica mode: an instance with `primary` imports the primary's pack at startup, fetches
//! accounts it does not hold from the primary (storing them through the accept rule), refuses
//! POSTs with a message naming the primary, and answers 404 when the primary has nothing.

use std::path::Path;

use nas_server::config::{Config, DirStore, StoreConfig};
use nas_server::server::Server;

mod common;
use common::Operator;

async fn start(dir: &Path, operator: &Operator, primary: Option<String>) -> Server {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("operator.jwt"), &operator.jwt).unwrap();
    let mut config = Config::default();
    config.http.host = "127.0.0.1".into();
    config.http.port = 0;
    config.store = StoreConfig::Dir(DirStore::new(dir.join("jwt")));
    config.operator_jwt_path = Some(dir.join("operator.jwt"));
    config.primary = primary;
    // Re-ask the primary on every request after the first, so the test sees updates at once.
    config.replica_validity = std::time::Duration::from_millis(1);
    Server::start(&config).await.unwrap()
}

async fn post(base: &str, key: &str, jwt: &str) -> (u16, String) {
    let res = reqwest::Client::new()
        .post(format!("{base}/jwt/v1/accounts/{key}"))
        .body(jwt.to_owned())
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

#[tokio::test]
async fn replica_imports_fetches_and_refuses_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("replicated");
    let primary = start(&tmp.path().join("primary"), &op, None).await;
    let (a, a_jwt) = op.account("A");
    let (b, b_jwt) = op.account("B");
    assert_eq!(
        post(&primary.url(), a.public_key().as_str(), &a_jwt)
            .await
            .0,
        200
    );

    let replica = start(
        &tmp.path().join("replica"),
        &op,
        Some(format!("{}/", primary.url())),
    )
    .await;
    // Imported at startup, before any GET.
    let imported = tmp
        .path()
        .join("replica/jwt")
        .join(format!("{}.jwt", a.public_key()));
    assert_eq!(std::fs::read_to_string(&imported).unwrap(), a_jwt);

    // Added to the primary later: fetched on the replica's first miss, then stored locally.
    assert_eq!(
        post(&primary.url(), b.public_key().as_str(), &b_jwt)
            .await
            .0,
        200
    );
    let res = reqwest::get(format!(
        "{}/jwt/v1/accounts/{}",
        replica.url(),
        b.public_key()
    ))
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), b_jwt);
    assert!(tmp
        .path()
        .join("replica/jwt")
        .join(format!("{}.jwt", b.public_key()))
        .exists());

    // A newer JWT on the primary reaches the replica once its entry's validity has passed.
    let newer = common::reissue(&op, &a, "A-renamed", common::now() + 5, |_| {});
    assert_eq!(
        post(&primary.url(), a.public_key().as_str(), &newer)
            .await
            .0,
        200
    );
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let res = reqwest::get(format!(
        "{}/jwt/v1/accounts/{}",
        replica.url(),
        a.public_key()
    ))
    .await
    .unwrap();
    assert_eq!(res.text().await.unwrap(), newer);

    // Unknown to the primary: 404 (not 500 as the Go v0.8 replica answered).
    let (c, c_jwt) = op.account("C");
    let res = reqwest::get(format!(
        "{}/jwt/v1/accounts/{}",
        replica.url(),
        c.public_key()
    ))
    .await
    .unwrap();
    assert_eq!(res.status(), 404);

    // Writes go to the primary.
    let (status, body) = post(&replica.url(), c.public_key().as_str(), &c_jwt).await;
    assert_eq!(status, 405);
    assert!(
        body.contains(&format!("replica of {}", primary.url())),
        "{body}"
    );
    assert!(!tmp
        .path()
        .join("replica/jwt")
        .join(format!("{}.jwt", c.public_key()))
        .exists());

    // The primary going away: a miss is 503 (a nats-server must not conclude "no such account"),
    // what the replica holds is still served. (A key asked just before is remembered as missing
    // for a second, so this asks for one never asked.)
    primary.stop().await;
    let (d, _) = op.account("D");
    let res = reqwest::get(format!(
        "{}/jwt/v1/accounts/{}",
        replica.url(),
        d.public_key()
    ))
    .await
    .unwrap();
    assert_eq!(res.status(), 503);
    let res = reqwest::get(format!(
        "{}/jwt/v1/accounts/{}",
        replica.url(),
        a.public_key()
    ))
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    replica.stop().await;
}

/// Requests the primary's metrics count for the account route.
async fn primary_account_requests(primary: &Server) -> u64 {
    primary
        .metrics
        .http_requests
        .with_label_values(&["/jwt/v1/accounts/{key}", "GET", "404"])
        .get()
}

#[tokio::test]
async fn a_thousand_concurrent_misses_of_one_key_ask_the_primary_once() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("amplify");
    let primary = start(&tmp.path().join("primary"), &op, None).await;
    let replica = start(&tmp.path().join("replica"), &op, Some(primary.url())).await;
    let (unknown, _) = op.account("NOBODY");
    let url = format!("{}/jwt/v1/accounts/{}", replica.url(), unknown.public_key());
    let before = primary_account_requests(&primary).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let gates = std::sync::Arc::new(tokio::sync::Semaphore::new(200));
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (client, url, gates) = (client.clone(), url.clone(), gates.clone());
            tokio::spawn(async move {
                let _permit = gates.acquire().await.unwrap();
                client.get(url).send().await.unwrap().status().as_u16()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 404);
    }
    let asked = primary_account_requests(&primary).await - before;
    assert!(
        asked >= 1,
        "the primary was never asked: the test proves nothing"
    );
    // One request; a second only if the run outlasted the one-second "not found" memory.
    assert!(
        asked <= 2,
        "{asked} requests reached the primary for one missing key"
    );
}
