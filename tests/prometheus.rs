//! The operations artifacts in `deploy/` against a real Prometheus (Debian package `prometheus`):
//! `promtool` accepts the alert rules and the example config, and a Prometheus scraping an
//! in-process account server (directory store) under a small load parses and evaluates every
//! PromQL expression of the Grafana dashboard and of the alert rules. Every dashboard expression
//! returns at least one series: expressions that only have data in a failure or with NATS
//! (store errors, 5xx, notifications, resolver requests, shed messages) end in `or vector(0)`
//! in the dashboard itself, so their panels show 0 rather than "no data". The server is connected
//! to a real nats-server (a `cache` resolver) and runs the periodic drift check
//! (`sync { interval }`), so the NATS and drift series exist; a cache resolver lacking the
//! store's accounts is not drift, so the drift alert must stay silent.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nas_server::config::{Config, DirStore, StoreConfig};
use nas_server::server::Server;
use nas_testkit::{promtool, PrometheusServer};
use serde_json::Value;

use common::{cache_or_full_config, system_user_creds, Operator};

/// The scrape job name the alert rules select.
const JOB: &str = "nats-account-server";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn alerts_file() -> PathBuf {
    repo().join("deploy/prometheus/alerts.yml")
}

/// Every `targets[].expr` of the dashboard (rows' nested panels included), with the template
/// variables replaced as Grafana would for job `JOB` and all instances: `(panel, expr)`.
fn dashboard_exprs() -> Vec<(String, String)> {
    let path = repo().join("deploy/grafana/nats-account-server.json");
    let dashboard: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?").to_owned();
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().unwrap_or_else(|| {
                    panic!("panel {title:?}: a target without a PromQL expr: {target}")
                });
                out.push((title.clone(), expr.to_owned()));
            }
            walk(&panel["panels"], out);
        }
    }
    let mut exprs = Vec::new();
    walk(&dashboard["panels"], &mut exprs);
    for (_, expr) in &mut exprs {
        *expr = expr
            .replace("${job}", JOB)
            .replace("$job", JOB)
            .replace("${instance}", ".*")
            .replace("$instance", ".*");
        assert!(!expr.contains('$'), "unsubstituted variable in {expr}");
    }
    exprs
}

#[test]
fn promtool_accepts_the_alert_rules_and_the_example_config() {
    let rules = alerts_file().display().to_string();
    let config = repo().join("deploy/prometheus/prometheus.yml");
    let config = config.display().to_string();
    for args in [
        ["check", "rules", rules.as_str()],
        ["check", "config", config.as_str()],
    ] {
        let out = promtool(&args);
        assert!(
            out.status.success(),
            "promtool {}: {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The response of an instant query, parsed; panics on a transport error or a non-JSON answer.
fn query(prom: &PrometheusServer, promql: &str) -> Value {
    let res = prom
        .query(promql)
        .unwrap_or_else(|e| panic!("query {promql}: {e}"));
    serde_json::from_slice(&res.body)
        .unwrap_or_else(|e| panic!("query {promql}: {e}: {}", res.text()))
}

/// The result vector of a successful instant query.
fn series(prom: &PrometheusServer, promql: &str) -> Vec<Value> {
    let v = query(prom, promql);
    assert_eq!(v["status"], "success", "{promql}: {v}");
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// The value of a single-series query, if it has one.
fn scalar(prom: &PrometheusServer, promql: &str) -> Option<f64> {
    series(prom, promql)
        .first()
        .and_then(|s| s["value"][1].as_str()?.parse().ok())
}

/// Polls (every 100 ms, for at most 20 s) until `done` holds; panics naming `what` otherwise.
async fn wait_until(prom: &PrometheusServer, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; Prometheus log:\n{}",
            prom.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Scrapes of the account server so far.
fn scrapes(prom: &PrometheusServer) -> f64 {
    scalar(prom, &format!("count_over_time(up{{job=\"{JOB}\"}}[10m])")).unwrap_or(0.0)
}

async fn start_server(dir: &Path, op: &Operator, nats: &nas_testkit::NatsServer) -> Server {
    std::fs::write(dir.join("operator.jwt"), &op.jwt).unwrap();
    std::fs::write(dir.join("sys.creds"), system_user_creds(op)).unwrap();
    let mut config = Config::default();
    config.http.host = "127.0.0.1".into();
    config.http.port = 0;
    config.store = StoreConfig::Dir(DirStore::new(dir.join("jwt")));
    config.operator_jwt_path = Some(dir.join("operator.jwt"));
    config.audit.file = Some(dir.join("audit.log"));
    // A cache smaller than the accounts of the load: GETs that miss it load and verify from the
    // store (nas_jwt_verifications_total), and entries are evicted.
    config.cache.max_entries = 8;
    // nas_accounts_stored is counted every cleanupinterval.
    config.expiry.cleanup_interval = Duration::from_millis(500);
    config.nats.servers = vec![nats.url()];
    config.nats.user_credentials = Some(dir.join("sys.creds"));
    config.nats.pack_interval = None;
    // nas_drift_accounts is set every sync.interval.
    config.sync.interval = Some(Duration::from_millis(500));
    Server::start(&config).await.unwrap()
}

/// The load: GETs that hit and miss, POSTs accepted and refused, the probes and the help page.
/// Returns how many requests were sent.
async fn load(server: &Server, op: &Operator, rounds: usize) -> usize {
    let client = reqwest::Client::new();
    let base = server.url();
    let stranger = Operator::new("stranger");
    let mut sent = 0;
    let mut accounts = Vec::new();
    for i in 0..rounds {
        let (key, jwt) = op.account(&format!("A{i}"));
        let key = key.public_key().as_str().to_owned();
        let (_, foreign) = stranger.account(&format!("X{i}"));
        let posts = [(&key, jwt.clone(), true), (&key, foreign, false)];
        for (key, body, accepted) in posts {
            let res = client
                .post(format!("{base}/jwt/v1/accounts/{key}"))
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status().is_success(), accepted, "POST {key}");
            sent += 1;
        }
        // The same JWT again: accepted, unchanged.
        let res = client
            .post(format!("{base}/jwt/v1/accounts/{key}"))
            .body(jwt)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success());
        sent += 1;
        accounts.push(key);
    }
    for round in 0..rounds * 10 {
        // One hot account (cache hits) and all of them in turn (misses once the cache is full).
        for key in [&accounts[0], &accounts[round % accounts.len()]] {
            let found = client
                .get(format!("{base}/jwt/v1/accounts/{key}"))
                .send()
                .await
                .unwrap();
            assert_eq!(found.status(), 200);
            sent += 1;
        }
        let unknown = nas_jwt::SigningKey::generate(nas_jwt::KeyRole::Account);
        let miss = client
            .get(format!("{base}/jwt/v1/accounts/{}", unknown.public_key()))
            .send()
            .await
            .unwrap();
        assert_eq!(miss.status(), 404);
        sent += 1;
    }
    for path in [
        "/healthz",
        "/readyz",
        "/jwt/v1/help",
        "/jwt/v1/operator",
        "/nope",
    ] {
        client.get(format!("{base}{path}")).send().await.unwrap();
        sent += 1;
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_and_alert_expression_evaluates_against_a_real_prometheus() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new("observed");
    let nats_bin = nas_testkit::require_nats(nas_testkit::NatsVersion::V2_15);
    let nats = nas_testkit::NatsServer::start(
        &nats_bin,
        &format!(
            "server_name: observed\n{}",
            cache_or_full_config(&op, "cache", "")
        ),
    );
    let server = start_server(tmp.path(), &op, &nats).await;
    // Warm-up: every kind of request once, so each series exists from the first scrape on and
    // the rates below have two samples.
    let mut sent = load(&server, &op, 1).await;

    let config = format!(
        r#"
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - "{alerts}"
scrape_configs:
  - job_name: "{JOB}"
    static_configs:
      - targets: ["{target}"]
"#,
        alerts = alerts_file().display(),
        target = server.http_addr,
    );
    let prom = tokio::task::spawn_blocking(move || PrometheusServer::start(&config))
        .await
        .unwrap();
    wait_until(&prom, "the first scrape (up == 1)", || {
        scalar(&prom, &format!("up{{job=\"{JOB}\"}}")) == Some(1.0)
            && !series(&prom, "nas_http_requests_total").is_empty()
    })
    .await;

    sent += load(&server, &op, 20).await;
    let after_load = scrapes(&prom);
    wait_until(&prom, "two scrapes after the load", || {
        scrapes(&prom) >= after_load + 2.0
            && scalar(
                &prom,
                &format!("sum(nas_http_requests_total{{job=\"{JOB}\"}})"),
            )
            .is_some_and(|n| n >= sent as f64)
            && scalar(&prom, "max(nas_accounts_stored)").is_some_and(|n| n >= 21.0)
            && !series(&prom, "nas_drift_accounts{server=\"observed\"}").is_empty()
    })
    .await;

    // Every dashboard expression parses, evaluates and returns at least one series.
    let exprs = dashboard_exprs();
    assert!(
        exprs.len() >= 15,
        "only {} dashboard expressions",
        exprs.len()
    );
    let mut failures = Vec::new();
    for (panel, expr) in &exprs {
        let v = query(&prom, expr);
        if v["status"] != "success" {
            failures.push(format!("{panel}: {expr}: {}", v["error"]));
        } else if v["data"]["result"].as_array().is_none_or(|r| r.is_empty()) {
            failures.push(format!("{panel}: {expr}: no series"));
        }
    }
    assert!(
        failures.is_empty(),
        "dashboard expressions:\n{}",
        failures.join("\n")
    );
    // The load is visible: the request rate and the hit ratio are real numbers.
    let rate = scalar(&prom, "sum(rate(nas_http_requests_total[5m]))").unwrap();
    assert!(rate > 0.0, "request rate {rate}");
    let ratio = scalar(
        &prom,
        "sum(rate(nas_cache_hits_total[5m])) / (sum(rate(nas_cache_hits_total[5m])) + sum(rate(nas_cache_misses_total[5m])))",
    )
    .unwrap();
    assert!(ratio > 0.0 && ratio <= 1.0, "hit ratio {ratio}");
    // The drift check ran against the nats-server and found it in sync (a cache resolver is not
    // expected to hold the store's accounts).
    assert_eq!(series(&prom, "nas_drift_accounts").len(), 4);
    assert_eq!(scalar(&prom, "sum(nas_drift_accounts)"), Some(0.0));
    assert_eq!(scalar(&prom, "max(nas_nats_connected)"), Some(1.0));

    // Every alert rule Prometheus loaded from alerts.yml evaluates without error, both as
    // Prometheus runs it (health) and as an instant query.
    let rules = |prom: &PrometheusServer| -> Vec<Value> {
        let res = prom.get("/api/v1/rules").unwrap();
        let v: Value = serde_json::from_slice(&res.body).unwrap();
        v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect()
    };
    wait_until(&prom, "every rule evaluated", || {
        let r = rules(&prom);
        !r.is_empty() && r.iter().all(|r| r["health"] != "unknown")
    })
    .await;
    let loaded = rules(&prom);
    assert_eq!(loaded.len(), 9, "rules loaded: {loaded:?}");
    for rule in &loaded {
        let name = rule["name"].as_str().unwrap();
        assert_eq!(rule["health"], "ok", "{name}: {}", rule["lastError"]);
        let expr = rule["query"].as_str().unwrap();
        let v = query(&prom, expr);
        assert_eq!(v["status"], "success", "{name}: {expr}: {v}");
    }
    // A healthy server under ordinary load sets off no alert.
    let res = prom.get("/api/v1/alerts").unwrap();
    let v: Value = serde_json::from_slice(&res.body).unwrap();
    assert_eq!(
        v["data"]["alerts"].as_array().map(Vec::len),
        Some(0),
        "alerts: {v}"
    );

    server.stop().await;
    eprintln!(
        "{} dashboard and {} alert expressions checked against prometheus {} in {:.1} s",
        exprs.len(),
        loaded.len(),
        prom.binaries().version,
        started.elapsed().as_secs_f64()
    );
}
