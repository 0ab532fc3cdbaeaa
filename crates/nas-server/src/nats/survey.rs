//! Reading what each nats-server holds, and pushing JWTs to them, over `$SYS` as a
//! system-account user (facts: `docs/spec/nats-resolver-protocol.md` §16). Used by drift
//! checks ([`crate::drift`]).
//!
//! 1. `$SYS.REQ.SERVER.PING` on each connection: every server of that connection's cluster (and
//!    super-cluster) answers with its id, name and the number of servers it knows, so collecting
//!    stops as soon as all have answered.
//! 2. Per server, direct requests: `$SYS.REQ.SERVER.<id>.ACCOUNTZ` (loaded accounts and the
//!    system account) and `….SUBSZ` of the system account, which tells the resolver type: the
//!    server's own internal client (the one holding `$SYS.REQ.SERVER.<id>.*`) subscribes to
//!    `$SYS.REQ.CLAIMS.PACK` in queue group `responder` only as a full resolver, and to
//!    `$SYS.REQ.CLAIMS.LIST` as a full or cache resolver. Subscriptions of clients (account
//!    servers answer PACK and LIST too) have other connection ids and are ignored.
//! 3. `$SYS.REQ.CLAIMS.LIST` once per connection; each full/cache server answers with its
//!    stored keys under its own `server.id`.
//! 4. Per loaded account, `ACCOUNTZ` with `{"account": key}`: the JWT the server uses.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use async_nats::Client;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::drift::{Holdings, ResolverKind, ServerId};

/// Account detail requests in flight at once, per check.
const DETAIL_CONCURRENCY: usize = 16;

/// Progress of a survey, for a progress bar (the library draws nothing itself).
pub trait Progress: Sync {
    /// `n` more steps are planned.
    fn planned(&self, n: u64);
    /// `n` steps are done.
    fn done(&self, n: u64);
}

/// Reports progress nowhere.
pub struct NoProgress;

impl Progress for NoProgress {
    fn planned(&self, _: u64) {}
    fn done(&self, _: u64) {}
}

/// Why no survey could be made.
#[derive(Debug, thiserror::Error)]
pub enum SurveyError {
    /// No nats-server answered `$SYS.REQ.SERVER.PING` (not a system-account user, or not
    /// connected).
    #[error("no nats-server answered $SYS.REQ.SERVER.PING within {0:?} (is the user a member of the system account?)")]
    NoServers(Duration),
}

/// What the servers hold, and which connection reaches each.
#[derive(Debug, Default)]
pub struct Survey {
    /// Every server that was read completely.
    pub holdings: Vec<Holdings>,
    /// Servers found but not read completely: (name, reason).
    pub unanswered: Vec<(String, String)>,
    /// Server id → index of the client that reaches it.
    pub routes: HashMap<String, usize>,
}

/// Collects the JSON answers to a request many servers answer, until `enough` holds for them or
/// `timeout` has passed.
async fn fan_out(
    client: &Client,
    subject: String,
    payload: Bytes,
    timeout: Duration,
    enough: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let inbox = client.new_inbox();
    let Ok(mut sub) = client.subscribe(inbox.clone()).await else {
        return Vec::new();
    };
    let mut answers = Vec::new();
    if client
        .publish_with_reply(subject, inbox, payload)
        .await
        .is_err()
    {
        return answers;
    }
    let deadline = tokio::time::Instant::now() + timeout;
    while !enough(&answers) {
        match tokio::time::timeout_at(deadline, sub.next()).await {
            Ok(Some(msg)) => {
                if let Ok(v) = serde_json::from_slice::<Value>(&msg.payload) {
                    answers.push(v);
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    answers
}

/// The `data` of one server's answer to a direct request, or why there is none.
async fn direct(
    client: &Client,
    subject: String,
    payload: Value,
    timeout: Duration,
) -> Result<Value, String> {
    let body = Bytes::from(payload.to_string());
    let reply = match tokio::time::timeout(timeout, client.request(subject.clone(), body)).await {
        Err(_) => return Err(format!("no answer to {subject} within {timeout:?}")),
        Ok(Err(e)) => return Err(format!("{subject}: {e}")),
        Ok(Ok(reply)) => reply,
    };
    let mut v: Value =
        serde_json::from_slice(&reply.payload).map_err(|e| format!("{subject}: not JSON: {e}"))?;
    if let Some(error) = v.get("error") {
        return Err(format!("{subject}: {}", error["description"]));
    }
    Ok(v["data"].take())
}

fn server_id(answer: &Value) -> Option<ServerId> {
    let s = &answer["server"];
    Some(ServerId {
        name: s["name"].as_str()?.to_owned(),
        id: s["id"].as_str()?.to_owned(),
        version: s["ver"].as_str().unwrap_or_default().to_owned(),
    })
}

/// The servers `client` reaches.
async fn ping(client: &Client, timeout: Duration) -> Vec<ServerId> {
    let answers = fan_out(
        client,
        "$SYS.REQ.SERVER.PING".into(),
        Bytes::new(),
        timeout,
        |answers| {
            let known = answers
                .iter()
                .filter_map(|a| a["statsz"]["active_servers"].as_u64())
                .max()
                .unwrap_or(u64::MAX);
            !answers.is_empty() && answers.len() as u64 >= known
        },
    )
    .await;
    let mut servers: Vec<ServerId> = answers.iter().filter_map(server_id).collect();
    servers.sort();
    servers.dedup_by(|a, b| a.id == b.id);
    servers
}

/// What ACCOUNTZ and SUBSZ tell about one server: its system account, loaded accounts and
/// resolver type.
struct Basics {
    system_account: Option<String>,
    loaded: Vec<String>,
    kind: ResolverKind,
}

async fn basics(client: &Client, id: &str, timeout: Duration) -> Result<Basics, String> {
    let accountz = direct(
        client,
        format!("$SYS.REQ.SERVER.{id}.ACCOUNTZ"),
        json!({}),
        timeout,
    )
    .await?;
    let system_account = accountz["system_account"].as_str().map(str::to_owned);
    let loaded = accountz["accounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|k| nas_jwt::is_valid_public_key(k, nas_jwt::KeyRole::Account))
        .map(str::to_owned)
        .collect();
    let kind = resolver_kind(client, id, system_account.as_deref(), timeout).await?;
    Ok(Basics {
        system_account,
        loaded,
        kind,
    })
}

/// The resolver type, from the subscriptions of the server's internal client (module docs).
async fn resolver_kind(
    client: &Client,
    id: &str,
    system_account: Option<&str>,
    timeout: Duration,
) -> Result<ResolverKind, String> {
    let subsz = direct(
        client,
        format!("$SYS.REQ.SERVER.{id}.SUBSZ"),
        json!({ "subscriptions": true, "account": system_account.unwrap_or_default(), "limit": 100_000 }),
        timeout,
    )
    .await?;
    let subs = subsz["subscriptions_list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let own_prefix = format!("$SYS.REQ.SERVER.{id}.");
    let internal: BTreeSet<u64> = subs
        .iter()
        .filter(|s| {
            s["subject"]
                .as_str()
                .is_some_and(|s| s.starts_with(&own_prefix))
        })
        .filter_map(|s| s["cid"].as_u64())
        .collect();
    let has = |subject: &str, queue: Option<&str>| {
        subs.iter().any(|s| {
            s["subject"] == subject
                && queue.is_none_or(|q| s["qgroup"] == q)
                && s["cid"].as_u64().is_some_and(|c| internal.contains(&c))
        })
    };
    Ok(if has("$SYS.REQ.CLAIMS.PACK", Some("responder")) {
        ResolverKind::Full
    } else if has("$SYS.REQ.CLAIMS.LIST", None) {
        ResolverKind::Cache
    } else {
        ResolverKind::Other
    })
}

/// The LIST answers of the servers `expected` (ids) names, reached through `client`.
async fn list(
    client: &Client,
    expected: &BTreeSet<String>,
    timeout: Duration,
) -> HashMap<String, BTreeSet<String>> {
    if expected.is_empty() {
        return HashMap::new();
    }
    let answered = |answers: &[Value]| {
        let ids: BTreeSet<&str> = answers
            .iter()
            .filter_map(|a| a["server"]["id"].as_str())
            .collect();
        expected.iter().all(|e| ids.contains(e.as_str()))
    };
    let answers = fan_out(
        client,
        "$SYS.REQ.CLAIMS.LIST".into(),
        Bytes::new(),
        timeout,
        answered,
    )
    .await;
    answers
        .iter()
        .filter_map(|a| {
            let id = a["server"]["id"].as_str()?;
            let keys = a["data"].as_array()?;
            let keys = keys.iter().filter_map(Value::as_str).map(str::to_owned);
            expected
                .contains(id)
                .then(|| (id.to_owned(), keys.collect()))
        })
        .collect()
}

/// The JWT server `id` uses for `key`, if it has it loaded.
async fn loaded_jwt(client: &Client, id: &str, key: &str, timeout: Duration) -> Option<Bytes> {
    let subject = format!("$SYS.REQ.SERVER.{id}.ACCOUNTZ");
    let detail = direct(client, subject, json!({ "account": key }), timeout)
        .await
        .ok()?;
    let jwt = detail["account_detail"]["jwt"].as_str()?;
    Some(Bytes::from(jwt.to_owned()))
}

/// Finds the servers every client reaches (each once, by id) and reads what each holds.
/// `timeout` bounds each request and each collection of fanned-out answers.
pub async fn survey(
    clients: &[Client],
    timeout: Duration,
    progress: &dyn Progress,
) -> Result<Survey, SurveyError> {
    let mut out = Survey::default();
    let mut servers: Vec<(ServerId, usize)> = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        for server in ping(client, timeout).await {
            if !out.routes.contains_key(&server.id) {
                out.routes.insert(server.id.clone(), i);
                servers.push((server, i));
            }
        }
    }
    if servers.is_empty() {
        return Err(SurveyError::NoServers(timeout));
    }
    progress.planned(servers.len() as u64);
    let mut read = Vec::new();
    for (server, i) in servers {
        let got = basics(&clients[i], &server.id, timeout).await;
        progress.done(1);
        match got {
            Ok(b) => read.push((server, i, b)),
            Err(why) => out.unanswered.push((server.name, why)),
        }
    }
    let mut stored = HashMap::new();
    for (i, client) in clients.iter().enumerate() {
        let expected: BTreeSet<String> = read
            .iter()
            .filter(|(_, c, b)| *c == i && b.kind != ResolverKind::Other)
            .map(|(s, _, _)| s.id.clone())
            .collect();
        stored.extend(list(client, &expected, timeout).await);
    }
    for (server, i, basics) in read {
        let stored = stored.remove(&server.id);
        if basics.kind != ResolverKind::Other && stored.is_none() {
            let why = format!("no answer to $SYS.REQ.CLAIMS.LIST within {timeout:?}");
            out.unanswered.push((server.name, why));
            continue;
        }
        let loaded = details(&clients[i], &server.id, &basics.loaded, timeout, progress).await;
        out.holdings.push(Holdings {
            server,
            kind: basics.kind,
            system_account: basics.system_account,
            stored,
            loaded,
        });
    }
    Ok(out)
}

/// The JWTs of server `id`'s loaded accounts (those it unloads meanwhile are left out), at
/// most [`DETAIL_CONCURRENCY`] requests at a time.
async fn details(
    client: &Client,
    id: &str,
    keys: &[String],
    timeout: Duration,
    progress: &dyn Progress,
) -> BTreeMap<String, Bytes> {
    progress.planned(keys.len() as u64);
    let mut out = BTreeMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut pending = keys.iter();
    loop {
        while tasks.len() < DETAIL_CONCURRENCY {
            let Some(key) = pending.next() else { break };
            let (client, id, key) = (client.clone(), id.to_owned(), key.clone());
            tasks.spawn(async move {
                let jwt = loaded_jwt(&client, &id, &key, timeout).await;
                (key, jwt)
            });
        }
        let Some(done) = tasks.join_next().await else {
            break;
        };
        progress.done(1);
        if let Ok((key, Some(jwt))) = done {
            out.insert(key, jwt);
        }
    }
    out
}

/// Each addressed server's answer to one pushed JWT: its `data.message`, or its error.
pub type PushAnswers = HashMap<String, Result<String, String>>;

/// Publishes `jwt` on `$SYS.REQ.ACCOUNT.<key>.CLAIMS.UPDATE` (every server of `client`'s
/// cluster hears it; the one update subject every resolver type applies) and collects the
/// answers of the servers `targets` names (ids).
pub async fn push(
    client: &Client,
    key: &str,
    jwt: Bytes,
    targets: &BTreeSet<String>,
    timeout: Duration,
) -> PushAnswers {
    let answered = |answers: &[Value]| {
        let ids: BTreeSet<&str> = answers
            .iter()
            .filter_map(|a| a["server"]["id"].as_str())
            .collect();
        targets.iter().all(|t| ids.contains(t.as_str()))
    };
    let subject = format!("$SYS.REQ.ACCOUNT.{key}.CLAIMS.UPDATE");
    let answers = fan_out(client, subject, jwt, timeout, answered).await;
    let mut out: PushAnswers = targets
        .iter()
        .map(|t| (t.clone(), Err(format!("no answer within {timeout:?}"))))
        .collect();
    for a in answers {
        let Some(id) = a["server"]["id"].as_str() else {
            continue;
        };
        if let Some(slot) = out.get_mut(id) {
            *slot = match a.get("error") {
                Some(e) => Err(e["description"].as_str().unwrap_or("error").to_owned()),
                None => Ok(a["data"]["message"].as_str().unwrap_or_default().to_owned()),
            };
        }
    }
    out
}
