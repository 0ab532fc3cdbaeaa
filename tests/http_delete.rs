//! `DELETE /jwt/v1/accounts/<key>` against an in-process server on a directory store: the body
//! is the operator-signed delete claim `nsc push --prune` sends over NATS, checked by the same
//! rule as the NATS DELETE. Every refusal has its status and message and leaves the store as it
//! was; an accepted delete leaves a tombstone that an older JWT cannot get past.

mod common;

use nas_jwt::{KeyRole, SigningKey};
use nas_server::config::{Config, DirStore, StoreConfig};
use nas_server::server::Server;

use common::{delete_request, now, reissue, Operator};

async fn start(dir: &std::path::Path, op: &Operator, allow_delete: bool) -> Server {
    std::fs::write(dir.join("operator.jwt"), &op.jwt).unwrap();
    std::fs::write(dir.join("SYS.jwt"), &op.system_jwt).unwrap();
    let mut config = Config::default();
    config.http.host = "127.0.0.1".into();
    config.http.port = 0;
    config.store = StoreConfig::Dir(DirStore::new(dir.join("jwt")));
    config.operator_jwt_path = Some(dir.join("operator.jwt"));
    config.system_account_jwt_path = Some(dir.join("SYS.jwt"));
    config.nats.allow_delete = allow_delete;
    Server::start(&config).await.unwrap()
}

fn url(server: &Server, key: &str) -> String {
    format!("http://{}/jwt/v1/accounts/{key}", server.http_addr)
}

async fn delete(server: &Server, key: &str, body: Vec<u8>) -> (u16, String) {
    let response = reqwest::Client::new()
        .delete(url(server, key))
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn get(server: &Server, key: &str) -> (u16, String) {
    let response = reqwest::get(url(server, key)).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn post(server: &Server, key: &str, jwt: &str) -> u16 {
    let response = reqwest::Client::new()
        .post(url(server, key))
        .body(jwt.to_owned())
        .send()
        .await
        .unwrap();
    response.status().as_u16()
}

/// The files of the store directory, sorted (what "the store is untouched" compares).
fn store_files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.join("jwt")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path.strip_prefix(dir).unwrap().display().to_string();
                files.push((name, std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

#[tokio::test]
async fn without_allowdelete_a_valid_request_is_refused_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("no-delete");
    let server = start(tmp.path(), &op, false).await;
    let (app, jwt) = op.account("APP");
    let key = app.public_key().as_str().to_owned();
    assert_eq!(post(&server, &key, &jwt).await, 200);
    let before = store_files(tmp.path());

    let request = delete_request(vec![key.clone()], &op.signing_key, now(), 0);
    let (status, body) = delete(&server, &key, request).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("delete must be enabled in server config"),
        "{body}"
    );
    assert_eq!(get(&server, &key).await, (200, jwt));
    assert_eq!(store_files(tmp.path()), before);
    server.stop().await;
}

#[tokio::test]
async fn each_bad_request_gets_its_status_and_message_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("refusals");
    let server = start(tmp.path(), &op, true).await;
    let (app, jwt) = op.account("APP");
    let key = app.public_key().as_str().to_owned();
    let (other, other_jwt) = op.account("OTHER");
    let other_key = other.public_key().as_str().to_owned();
    assert_eq!(post(&server, &key, &jwt).await, 200);
    assert_eq!(post(&server, &other_key, &other_jwt).await, 200);
    let before = store_files(tmp.path());

    let stranger = SigningKey::generate(KeyRole::Operator);
    let system = op.system.public_key().as_str().to_owned();
    let signer = &op.signing_key;
    let not_listed = format!("the delete request does not list {key}");
    let cases: Vec<(&str, Vec<u8>, &str, u16, &str)> = vec![
        ("not a JWT", b"not a jwt".to_vec(), &key, 400, "failed - "),
        (
            "signed by another operator",
            delete_request(vec![key.clone()], &stranger, now(), 0),
            &key,
            403,
            "not trusted",
        ),
        (
            "expired",
            delete_request(vec![key.clone()], signer, now() - 20, now() - 10),
            &key,
            400,
            "request expired",
        ),
        (
            "lists other accounts only",
            delete_request(vec![other_key.clone()], signer, now(), 0),
            &key,
            400,
            &not_listed,
        ),
        (
            "names a malformed key",
            delete_request(vec![key.clone(), "ABC".into()], signer, now(), 0),
            &key,
            400,
            "malformed request",
        ),
        (
            "names the system account",
            delete_request(vec![system.clone()], signer, now(), 0),
            &system,
            403,
            "not allowed to delete system account",
        ),
    ];
    for (what, body, target, want_status, want_message) in cases {
        let (status, message) = delete(&server, target, body).await;
        assert_eq!(status, want_status, "{what}: {message}");
        assert!(message.contains(want_message), "{what}: {message}");
    }
    assert_eq!(get(&server, &key).await, (200, jwt));
    assert_eq!(store_files(tmp.path()), before, "a refused delete wrote");
    server.stop().await;
}

#[tokio::test]
async fn an_accepted_delete_sticks_and_only_a_later_jwt_recreates_the_account() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("deletes");
    let server = start(tmp.path(), &op, true).await;
    let (app, jwt) = op.account("APP");
    let key = app.public_key().as_str().to_owned();
    let (other, other_jwt) = op.account("OTHER");
    let other_key = other.public_key().as_str().to_owned();
    assert_eq!(post(&server, &key, &jwt).await, 200);
    assert_eq!(post(&server, &other_key, &other_jwt).await, 200);

    // A request older than the stored JWT cannot delete it.
    let old = delete_request(vec![key.clone()], &op.signing_key, now() - 60, 0);
    let (status, body) = delete(&server, &key, old).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("is newer than the delete request"), "{body}");
    assert_eq!(get(&server, &key).await.0, 200);

    // The request lists both accounts; the URL names one, and only that one goes.
    let deleted_at = now() + 1;
    let both = vec![key.clone(), other_key.clone()];
    let request = delete_request(both, &op.signing_key, deleted_at, 0);
    assert_eq!(
        delete(&server, &key, request.clone()).await,
        (200, String::new())
    );
    assert_eq!(get(&server, &key).await.0, 404);
    assert_eq!(get(&server, &other_key).await, (200, other_jwt));
    let tombstone = tmp.path().join("jwt/tombstones").join(format!("{key}.jwt"));
    assert_eq!(std::fs::read(&tombstone).unwrap(), request);

    // Replaying the request is harmless; the deleted JWT and one issued with the delete stay out.
    assert_eq!(delete(&server, &key, request).await.0, 200);
    assert_eq!(post(&server, &key, &jwt).await, 409);
    let same_second = reissue(&op, &app, "APP", deleted_at, |_| {});
    assert_eq!(post(&server, &key, &same_second).await, 409);
    assert_eq!(get(&server, &key).await.0, 404);
    let later = reissue(&op, &app, "APP", deleted_at + 1, |_| {});
    assert_eq!(post(&server, &key, &later).await, 200);
    assert_eq!(get(&server, &key).await, (200, later));
    server.stop().await;
}
