//! Drift: whether each nats-server holds what the store holds. One comparison rule
//! ([`compare`]) serves `nats-account-server sync-status` and the periodic task of
//! `sync { interval }` ([`DriftWatch`]); what the servers hold is read over NATS by
//! [`crate::nats::survey`].
//!
//! What can be known about a nats-server, and therefore how it is compared (facts:
//! `docs/spec/nats-resolver-protocol.md` §16):
//!
//! * **Accounts it has loaded** (`$SYS.REQ.SERVER.<id>.ACCOUNTZ`, every resolver type), each
//!   with the JWT it uses (the account detail's `jwt`): compared by version with the ordering
//!   rule — `older` when the store's JWT is newer, `newer` when the server's is (the store is
//!   behind), in sync when the bytes are equal.
//! * **Accounts it stores** (`$SYS.REQ.CLAIMS.LIST`, answered by `full` and `cache` resolvers,
//!   each reply naming its server): compared by presence — `extra` for keys the store does not
//!   serve; `missing` for store keys it lacks, **for full resolvers only**. A `cache` resolver
//!   holds the accounts it was asked for and a URL/memory resolver the ones in use, so an
//!   account they lack is not drift; only their loaded accounts and extras count.
//!
//! A JWT a full resolver stores but has not loaded cannot be read per server (LOOKUP and PACK
//! answers do not say which server sent them), so its version is not compared: it is compared
//! from the moment a client of the account connects, and the full resolvers' PACK exchange with
//! this server (save-if-newer) replaces an older stored copy meanwhile.
//!
//! The system account is never `missing` or `extra` (servers preload it; the store need not
//! hold it); its version is compared when the store holds it.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nas_store::order::{compare as order, Rank, Verdict};
use nas_store::TokenMeta;

use crate::cache::VerifiedCache;
use crate::metrics::Metrics;

/// A nats-server's resolver type, as far as the system account's subscriptions tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ResolverKind {
    /// `resolver { type: full }`: stores every account (answers LIST and, in queue group
    /// `responder`, PACK).
    Full,
    /// `resolver { type: cache }`: stores the accounts it was asked for (answers LIST, not PACK).
    Cache,
    /// `URL(…)` or `MEMORY`: holds only what it has loaded (answers neither).
    Other,
}

impl ResolverKind {
    /// `full`, `cache` or `url/memory`.
    pub fn name(self) -> &'static str {
        match self {
            ResolverKind::Full => "full",
            ResolverKind::Cache => "cache",
            ResolverKind::Other => "url/memory",
        }
    }
}

/// Who a nats-server is (from its `$SYS.REQ.SERVER.PING` answer).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerId {
    /// `server.name` (nats-server's `server_name`, its id when unset).
    pub name: String,
    /// `server.id`, the server's nkey.
    pub id: String,
    /// `server.ver`.
    pub version: String,
}

/// What one nats-server holds.
#[derive(Debug, Clone)]
pub struct Holdings {
    /// The server.
    pub server: ServerId,
    /// Its resolver type.
    pub kind: ResolverKind,
    /// Its system account.
    pub system_account: Option<String>,
    /// The keys it stores (its LIST answer), for full and cache resolvers.
    pub stored: Option<BTreeSet<String>>,
    /// The accounts it has loaded and the JWT each uses.
    pub loaded: BTreeMap<String, Bytes>,
}

/// How one nats-server differs from the store. Key lists are sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerDrift {
    /// The server.
    pub server: ServerId,
    /// Its resolver type.
    pub kind: ResolverKind,
    /// Accounts it holds that equal the store's (by bytes where it has them loaded, by
    /// presence where it only stores them).
    pub in_sync: usize,
    /// Store accounts a full resolver does not store.
    pub missing: Vec<String>,
    /// Accounts it uses in a version older than the store's.
    pub older: Vec<String>,
    /// Accounts it uses in a version newer than the store's (the store is behind).
    pub newer: Vec<String>,
    /// Accounts it holds that the store does not serve.
    pub extra: Vec<String>,
}

/// The kinds of drift, as `nas_drift_accounts{kind}` names them.
pub const KINDS: [&str; 4] = ["missing", "older", "newer", "extra"];

impl ServerDrift {
    /// Whether anything differs.
    pub fn drifted(&self) -> bool {
        self.counts().iter().any(|n| *n > 0)
    }

    /// Counts in the order of [`KINDS`].
    pub fn counts(&self) -> [usize; 4] {
        [
            self.missing.len(),
            self.older.len(),
            self.newer.len(),
            self.extra.len(),
        ]
    }

    /// Accounts to push to this server to repair it: missing and older ones.
    pub fn to_push(&self) -> impl Iterator<Item = &String> {
        self.missing.iter().chain(self.older.iter())
    }
}

/// The rank of a JWT (its `iat`; 0 when unreadable, so anything readable is newer).
fn rank(bytes: &[u8]) -> Rank {
    let bytes = bytes.trim_ascii();
    Rank::of(TokenMeta::read(bytes).map_or(0, |m| m.iat), bytes)
}

/// Compares what `server` holds with `store` (key → the JWT the store serves): the one rule
/// of drift (see the module docs).
pub fn compare(store: &BTreeMap<String, Bytes>, server: &Holdings) -> ServerDrift {
    let system = server.system_account.as_deref();
    let mut drift = ServerDrift {
        server: server.server.clone(),
        kind: server.kind,
        in_sync: 0,
        missing: Vec::new(),
        older: Vec::new(),
        newer: Vec::new(),
        extra: Vec::new(),
    };
    let stored = server.stored.iter().flatten();
    let held: BTreeSet<&String> = stored.chain(server.loaded.keys()).collect();
    for key in held {
        let Some(ours) = store.get(key) else {
            if Some(key.as_str()) != system {
                drift.extra.push(key.clone());
            }
            continue;
        };
        let verdict = server
            .loaded
            .get(key)
            .map(|theirs| order(&rank(theirs), &rank(ours)));
        match verdict {
            Some(Verdict::Older | Verdict::TieLost) => drift.older.push(key.clone()),
            Some(Verdict::Newer) => drift.newer.push(key.clone()),
            Some(Verdict::Same) | None => drift.in_sync += 1,
        }
    }
    if let (ResolverKind::Full, Some(stored)) = (server.kind, &server.stored) {
        drift.missing = store
            .keys()
            .filter(|k| !stored.contains(*k) && Some(k.as_str()) != system)
            .cloned()
            .collect();
    }
    drift
}

/// Servers with their own `nas_drift_accounts` series at most; the others are summed into
/// `server="_other"`, so a large fleet cannot create unbounded series.
pub const MAX_SERVER_LABELS: usize = 64;
/// The label of servers beyond [`MAX_SERVER_LABELS`].
pub const OTHER_SERVERS: &str = "_other";

/// Sets `nas_drift_accounts{server,kind}` from one round's drifts and removes the series of
/// servers no longer seen. `previous` holds the labels set by the last round.
pub fn record(metrics: &Metrics, drifts: &[ServerDrift], previous: &mut HashSet<String>) {
    let mut by_label: BTreeMap<String, [usize; 4]> = BTreeMap::new();
    let mut names: Vec<&ServerDrift> = drifts.iter().collect();
    names.sort_by(|a, b| a.server.cmp(&b.server));
    for (i, d) in names.into_iter().enumerate() {
        let label = if i < MAX_SERVER_LABELS {
            d.server.name.clone()
        } else {
            OTHER_SERVERS.to_owned()
        };
        let sum = by_label.entry(label).or_default();
        for (total, n) in sum.iter_mut().zip(d.counts()) {
            *total += n;
        }
    }
    for gone in previous.iter().filter(|l| !by_label.contains_key(*l)) {
        for kind in KINDS {
            let _ = metrics
                .drift_accounts
                .remove_label_values(&[gone.as_str(), kind]);
        }
    }
    for (label, counts) in &by_label {
        for (kind, n) in KINDS.iter().zip(counts) {
            metrics
                .drift_accounts
                .with_label_values(&[label.as_str(), kind])
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
    }
    *previous = by_label.into_keys().collect();
}

/// The accounts the store serves, as every serving path hands them out (stored, unexpired,
/// verifying): what the servers are compared with.
pub async fn served_accounts(
    cache: &VerifiedCache,
) -> Result<BTreeMap<String, Bytes>, nas_store::StoreError> {
    Ok(cache.verified_pack(None).await?.into_iter().collect())
}

/// The periodic drift check of `sync { interval }`: compares, sets `nas_drift_accounts`, logs
/// drift. It never repairs (see README "Watching drift"). Stops when dropped.
pub struct DriftWatch(tokio::task::JoinHandle<()>);

impl Drop for DriftWatch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl DriftWatch {
    /// Starts a check every `interval` (the first one after one interval) over `client`'s
    /// servers; `timeout` bounds each request and the collection of fanned-out answers.
    pub fn start(
        client: async_nats::Client,
        cache: VerifiedCache,
        metrics: Arc<Metrics>,
        interval: Duration,
        timeout: Duration,
    ) -> DriftWatch {
        let interval = interval.max(Duration::from_millis(100));
        DriftWatch(tokio::spawn(async move {
            let mut labels = HashSet::new();
            let mut ticks =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if !crate::nats::is_connected(&client) {
                    continue;
                }
                let clients = [client.clone()];
                match check(&clients, &cache, timeout, &crate::nats::NoProgress).await {
                    Ok(report) => {
                        log_round(&report);
                        record(&metrics, &report.drifts, &mut labels);
                    }
                    Err(e) => tracing::warn!("drift check: {e}"),
                }
            }
        }))
    }
}

fn log_round(report: &Report) {
    for d in &report.drifts {
        if d.drifted() {
            tracing::warn!(
                server = d.server.name,
                missing = d.missing.len(),
                older = d.older.len(),
                newer = d.newer.len(),
                extra = d.extra.len(),
                "nats-server {} differs from the store (run `nats-account-server sync-status` for the accounts)",
                d.server.name
            );
        }
    }
    for (server, why) in &report.unanswered {
        tracing::warn!("drift check: nats-server {server} did not answer: {why}");
    }
}

/// Why a check could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The store could not be read.
    #[error("reading the store: {0}")]
    Store(#[from] nas_store::StoreError),
    /// No nats-server answered the discovery ping.
    #[error(transparent)]
    Survey(#[from] crate::nats::SurveyError),
}

/// One comparison of every reachable nats-server with the store.
#[derive(Debug, Clone)]
pub struct Report {
    /// Per server, sorted by name.
    pub drifts: Vec<ServerDrift>,
    /// Servers found but not fully read (name, reason): neither in sync nor drifted.
    pub unanswered: Vec<(String, String)>,
    /// The store's accounts at the time of the check.
    pub store: BTreeMap<String, Bytes>,
    /// Server id → index of the client that reaches it.
    pub routes: std::collections::HashMap<String, usize>,
}

impl Report {
    /// Whether any server differs.
    pub fn drifted(&self) -> bool {
        self.drifts.iter().any(ServerDrift::drifted)
    }
}

/// Reads the store, surveys the servers `clients` reach, and compares each.
pub async fn check(
    clients: &[async_nats::Client],
    cache: &VerifiedCache,
    timeout: Duration,
    progress: &dyn crate::nats::Progress,
) -> Result<Report, CheckError> {
    let store = served_accounts(cache).await?;
    let survey = crate::nats::survey(clients, timeout, progress).await?;
    let mut drifts: Vec<ServerDrift> = survey.holdings.iter().map(|h| compare(&store, h)).collect();
    drifts.sort_by(|a, b| a.server.cmp(&b.server));
    Ok(Report {
        drifts,
        unanswered: survey.unanswered,
        store,
        routes: survey.routes,
    })
}

/// (client index, account) → the servers it is pushed to (id → name): one push per cluster
/// and account.
type Plan<'a> = BTreeMap<(usize, &'a String), BTreeMap<String, String>>;

/// What [`repair`] pushes where, and the accounts it leaves alone because some server holds
/// them newer than the store.
fn repair_plan(report: &Report) -> (Plan<'_>, Vec<Pushed>) {
    let ahead: BTreeSet<&String> = report.drifts.iter().flat_map(|d| &d.newer).collect();
    let mut skipped = Vec::new();
    let mut plan = Plan::new();
    for d in &report.drifts {
        let Some(&client) = report.routes.get(&d.server.id) else {
            continue;
        };
        for key in d.to_push() {
            if ahead.contains(key) {
                skipped.push(Pushed {
                    server: d.server.name.clone(),
                    account: key.clone(),
                    result: Err("not pushed: a nats-server holds a newer JWT than the store".into()),
                });
                continue;
            }
            let targets = plan.entry((client, key)).or_default();
            targets.insert(d.server.id.clone(), d.server.name.clone());
        }
    }
    (plan, skipped)
}

/// The JWT the store serves for `key` now, or why there is none to push.
async fn current_jwt(cache: &VerifiedCache, key: &str) -> Result<Bytes, String> {
    cache.forget_below(key, u64::MAX).await;
    match cache.get(key).await {
        Ok(crate::cache::Lookup::Found(served)) => Ok(served.token.clone()),
        Ok(crate::cache::Lookup::Missing) => Err("not pushed: no longer in the store".into()),
        Err(e) => Err(format!("not pushed: reading the store: {e}")),
    }
}

/// What `--repair` did with one account on one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// The server's name.
    pub server: String,
    /// The account.
    pub account: String,
    /// The server's answer (`jwt updated`), or why it was not pushed or failed.
    pub result: Result<String, String>,
}

/// Pushes the store's JWT of every missing and older account to the servers lacking it. An
/// account some server holds in a newer version is not pushed: the store is behind, and
/// full resolvers store an update unconditionally, so the push could replace the newer JWT
/// on servers this check cannot read. Each push is heard by every server of the connection's
/// cluster (`$SYS.REQ.ACCOUNT.<key>.CLAIMS.UPDATE`); servers holding that version already
/// change nothing. Each JWT is read from the store again right before it is pushed, so a
/// version stored since the check is the one pushed (a full resolver would take an older one).
pub async fn repair(
    clients: &[async_nats::Client],
    cache: &VerifiedCache,
    report: &Report,
    timeout: Duration,
    progress: &dyn crate::nats::Progress,
) -> Vec<Pushed> {
    let (plan, mut out) = repair_plan(report);
    progress.planned(plan.len() as u64);
    for ((client, key), targets) in plan {
        let ids = targets.keys().cloned().collect();
        let answers = match current_jwt(cache, key).await {
            Ok(jwt) => crate::nats::push(&clients[client], key, jwt, &ids, timeout).await,
            Err(why) => ids.into_iter().map(|id| (id, Err(why.clone()))).collect(),
        };
        progress.done(1);
        for (id, name) in targets {
            let result = answers
                .get(&id)
                .cloned()
                .unwrap_or_else(|| Err("no answer".into()));
            out.push(Pushed {
                server: name,
                account: key.clone(),
                result,
            });
        }
    }
    out.sort_by(|a, b| (&a.server, &a.account).cmp(&(&b.server, &b.account)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(iat: i64, tag: &str) -> Bytes {
        // Only the payload's iat matters to the rule; signatures are not checked here.
        let payload = data_encoding::BASE64URL_NOPAD
            .encode(format!(r#"{{"iat":{iat},"jti":"{tag}","sub":"x"}}"#).as_bytes());
        Bytes::from(format!("eyJhbGciOiJlZDI1NTE5LW5rZXkifQ.{payload}.sig"))
    }

    fn server(kind: ResolverKind, stored: Option<&[&str]>, loaded: &[(&str, Bytes)]) -> Holdings {
        Holdings {
            server: ServerId {
                name: "n1".into(),
                id: "NID".into(),
                version: "2.15.1".into(),
            },
            kind,
            system_account: Some("SYS".into()),
            stored: stored.map(|s| s.iter().map(|k| k.to_string()).collect()),
            loaded: loaded
                .iter()
                .map(|(k, j)| (k.to_string(), j.clone()))
                .collect(),
        }
    }

    fn store() -> BTreeMap<String, Bytes> {
        [
            ("A", jwt(10, "a")),
            ("B", jwt(10, "b")),
            ("C", jwt(10, "c")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    #[test]
    fn a_full_resolver_is_compared_for_presence_and_loaded_versions() {
        let h = server(
            ResolverKind::Full,
            Some(&["A", "B", "X", "SYS"]),
            &[("A", jwt(9, "old")), ("SYS", jwt(1, "s"))],
        );
        let d = compare(&store(), &h);
        assert_eq!(d.missing, ["C"]);
        assert_eq!(d.older, ["A"]);
        assert_eq!(d.extra, ["X"]);
        assert!(d.newer.is_empty());
        assert_eq!(d.in_sync, 1);
        assert_eq!(d.to_push().collect::<Vec<_>>(), ["C", "A"]);
    }

    #[test]
    fn a_cache_or_url_resolver_lacking_accounts_is_not_drift() {
        for kind in [ResolverKind::Cache, ResolverKind::Other] {
            let stored = (kind == ResolverKind::Cache).then_some(&["B"][..]);
            let h = server(kind, stored, &[("B", jwt(10, "b"))]);
            let d = compare(&store(), &h);
            assert!(!d.drifted(), "{kind:?}: {d:?}");
            assert_eq!(d.in_sync, 1);
        }
    }

    #[test]
    fn a_newer_server_version_means_the_store_is_behind() {
        let h = server(
            ResolverKind::Other,
            None,
            &[("A", jwt(11, "n")), ("B", jwt(9, "o"))],
        );
        let d = compare(&store(), &h);
        assert_eq!(d.newer, ["A"]);
        assert_eq!(d.older, ["B"]);
        assert_eq!(d.to_push().collect::<Vec<_>>(), ["B"]);
    }

    #[test]
    fn repair_never_pushes_an_account_some_server_holds_newer() {
        let mut lagging = server(ResolverKind::Full, Some(&["A", "B"]), &[("A", jwt(9, "o"))]);
        lagging.server.id = "N1".into();
        let mut ahead = server(ResolverKind::Other, None, &[("A", jwt(11, "n"))]);
        ahead.server.id = "N2".into();
        let drifts = vec![compare(&store(), &lagging), compare(&store(), &ahead)];
        let report = Report {
            drifts,
            unanswered: Vec::new(),
            store: store(),
            routes: [("N1".to_owned(), 0), ("N2".to_owned(), 0)].into(),
        };
        let (plan, skipped) = repair_plan(&report);
        // C is missing on the full resolver and pushed; A is older there but newer elsewhere.
        let planned: Vec<&str> = plan.keys().map(|(_, k)| k.as_str()).collect();
        assert_eq!(planned, ["C"]);
        assert_eq!(plan[&(0, &"C".to_owned())].len(), 1);
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].account, "A");
        assert!(skipped[0].result.is_err());
    }

    #[test]
    fn series_are_capped_and_dropped_when_servers_go() {
        let metrics = Metrics::new();
        let mut labels = HashSet::new();
        let drifts: Vec<ServerDrift> = (0..MAX_SERVER_LABELS + 3)
            .map(|i| {
                let mut h = server(ResolverKind::Full, Some(&["A", "B"]), &[]);
                h.server.name = format!("s{i:03}");
                compare(&store(), &h)
            })
            .collect();
        record(&metrics, &drifts, &mut labels);
        assert_eq!(labels.len(), MAX_SERVER_LABELS + 1);
        let text = metrics.render();
        assert!(text.contains(r#"nas_drift_accounts{kind="missing",server="_other"} 3"#));
        assert!(text.contains(r#"nas_drift_accounts{kind="missing",server="s000"} 1"#));
        record(&metrics, &drifts[..1], &mut labels);
        let text = metrics.render();
        assert!(!text.contains("s001"), "{text}");
        assert!(!text.contains("_other"), "{text}");
        assert!(text.contains(r#"nas_drift_accounts{kind="missing",server="s000"} 1"#));
    }
}
