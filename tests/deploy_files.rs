//! The files in `deploy/` and the `Dockerfile` are well formed and agree with each other and with
//! the server: every Kubernetes manifest parses, its Deployment probes `/readyz` and `/healthz`,
//! runs as non-root with resources, and the `nas.conf` of its ConfigMap parses without warnings
//! once the pod's volumes (ConfigMap and Secret files) and environment (`$VAR` from the Secret)
//! are laid out as the kubelet would; the alert rules and the dashboard have what operators need.
//! Every manifest also passes the Kubernetes API schemas (`kubernetes-validate --strict`, which
//! rejects unknown fields) of the oldest and newest Kubernetes versions we document.
//! (`tests/prometheus.rs` evaluates the PromQL itself against a real Prometheus.)

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use nas_server::config::{Config, StoreConfig};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every document of a YAML file, as JSON values.
fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| {
            let v: serde_yaml_ng::Value = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            serde_json::to_value(v).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str, file: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "{file}: one {kind}");
    found[0]
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: not a string: {v}"))
}

/// The Dockerfile's `ENTRYPOINT` config path and `EXPOSE`d port.
fn dockerfile() -> (String, String) {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let entry = text
        .lines()
        .find_map(|l| l.strip_prefix("ENTRYPOINT "))
        .expect("Dockerfile has an ENTRYPOINT");
    let entry: Vec<String> = serde_json::from_str(entry).expect("ENTRYPOINT in exec form");
    let config = entry
        .iter()
        .position(|a| a == "-c")
        .map(|i| entry[i + 1].clone())
        .expect("ENTRYPOINT passes -c");
    let expose = text
        .lines()
        .find_map(|l| l.strip_prefix("EXPOSE "))
        .expect("Dockerfile EXPOSEs a port")
        .trim()
        .to_owned();
    (config, expose)
}

#[test]
fn the_dockerfile_builds_locked_and_runs_as_non_root() {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    assert!(text.contains("FROM rust:1-bookworm AS builder"));
    assert!(text.contains("cargo build --release --locked"));
    assert!(text.contains("distroless/cc-debian12:nonroot"));
    assert!(text.lines().any(|l| l.starts_with("USER 65532")));
    assert_eq!(dockerfile(), ("/etc/nas/nas.conf".into(), "9090".into()));
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    for needed in [
        "src",
        "crates",
        "Cargo.toml",
        "Cargo.lock",
        "tests",
        "benches",
    ] {
        assert!(
            !ignore.lines().any(|l| l.trim() == needed),
            ".dockerignore drops {needed}, which the build needs"
        );
    }
    assert!(ignore.lines().any(|l| l.trim() == "**/target"));
}

/// What one Kubernetes example must hold; checks it and returns the parsed config.
fn check_manifest(file: &str) -> Config {
    let path = repo().join("deploy/kubernetes").join(file);
    let docs = yaml_docs(&path);
    let config_map = of_kind(&docs, "ConfigMap", file);
    let secret = of_kind(&docs, "Secret", file);
    let deployment = of_kind(&docs, "Deployment", file);
    let service = of_kind(&docs, "Service", file);
    for d in &docs {
        assert!(d["apiVersion"].is_string(), "{file}: apiVersion of {d}");
        assert!(d["metadata"]["name"].is_string(), "{file}: name of {d}");
    }

    let pod = &deployment["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    assert_eq!(&deployment["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(
        &service["spec"]["selector"], labels,
        "{file}: Service selects the pods"
    );
    let spec = &pod["spec"];
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{file}");
    assert!(spec["securityContext"]["runAsUser"].as_u64().unwrap_or(0) > 0);
    let containers = spec["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1, "{file}");
    let c = &containers[0];
    let (conf_path, exposed) = dockerfile();
    let http = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "http")
        .unwrap_or_else(|| panic!("{file}: a container port named http"));
    assert_eq!(http["containerPort"].to_string(), exposed, "{file}: EXPOSE");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http", "{file}");
    for (probe, route) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(c[probe]["httpGet"]["path"], route, "{file}: {probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "http", "{file}: {probe}");
    }
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{file}");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{file}");
    assert_eq!(
        sc["capabilities"]["drop"],
        serde_json::json!(["ALL"]),
        "{file}"
    );
    assert!(c["resources"]["requests"]["cpu"].is_string(), "{file}");
    assert!(c["resources"]["requests"]["memory"].is_string(), "{file}");
    assert!(c["resources"]["limits"]["memory"].is_string(), "{file}");

    // Lay the pod's volumes out under a temporary root as the kubelet would.
    let root = tempfile::tempdir().unwrap();
    let secret_data = &secret["stringData"];
    let volumes = spec["volumes"].as_array().unwrap();
    let mut mounts = Vec::new();
    for m in c["volumeMounts"].as_array().unwrap() {
        let mount_path = str_of(&m["mountPath"], "mountPath");
        assert!(
            m.get("subPath").is_none_or(Value::is_null),
            "{file}: subPath mounts are not updated"
        );
        let volume = volumes
            .iter()
            .find(|v| v["name"] == m["name"])
            .unwrap_or_else(|| panic!("{file}: volume {}", m["name"]));
        let (data, name) = if volume["configMap"].is_object() {
            (&config_map["data"], &volume["configMap"]["name"])
        } else if volume["secret"].is_object() {
            (secret_data, &volume["secret"]["secretName"])
        } else {
            panic!("{file}: unexpected volume {volume}");
        };
        let source = if volume["configMap"].is_object() {
            config_map
        } else {
            secret
        };
        assert_eq!(&source["metadata"]["name"], name, "{file}: volume source");
        let items = volume["configMap"]["items"]
            .as_array()
            .or(volume["secret"]["items"].as_array())
            .unwrap_or_else(|| panic!("{file}: volume {} lists its items", m["name"]));
        let dir = root.path().join(mount_path.trim_start_matches('/'));
        for item in items {
            let key = str_of(&item["key"], "key");
            let text = str_of(&data[key], key);
            let target = dir.join(str_of(&item["path"], "path"));
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::write(&target, text).unwrap();
        }
        mounts.push((mount_path.to_owned(), dir));
    }
    // The image's config file is in a mounted volume.
    let (conf_dir, _) = mounts
        .iter()
        .find(|(p, _)| conf_path.starts_with(&format!("{p}/")))
        .unwrap_or_else(|| panic!("{file}: no volume holds {conf_path}"));
    assert_eq!(format!("{conf_dir}/nas.conf"), conf_path, "{file}");

    // The container's environment, Secret references resolved.
    let mut env = HashMap::new();
    for e in c["env"].as_array().into_iter().flatten() {
        let name = str_of(&e["name"], "env name").to_owned();
        let value = if let Some(v) = e["value"].as_str() {
            v.to_owned()
        } else {
            let r = &e["valueFrom"]["secretKeyRef"];
            assert_eq!(r["name"], secret["metadata"]["name"], "{file}: env {name}");
            str_of(&secret_data[str_of(&r["key"], "key")], &name).to_owned()
        };
        env.insert(name, value);
    }

    // nas.conf with the mount paths pointing into the temporary root; `$VAR` only from the
    // container's environment (a reference to anything else fails the parse).
    let mut text = str_of(&config_map["data"]["nas.conf"], "nas.conf").to_owned();
    for (mount_path, dir) in &mounts {
        text = text.replace(
            &format!("\"{mount_path}/"),
            &format!("\"{}/", dir.display()),
        );
    }
    let doc = nas_conf::Parser::new()
        .env(move |name| env.get(name).cloned())
        .parse_str(&text)
        .unwrap_or_else(|e| panic!("{file}: nas.conf: {e}\n{text}"));
    let (config, warnings) =
        Config::from_map(doc.root()).unwrap_or_else(|e| panic!("{file}: nas.conf: {e}"));
    assert!(warnings.is_empty(), "{file}: nas.conf: {warnings:?}");
    let operator = config
        .operator_jwt_path
        .clone()
        .expect("operator from a file");
    assert!(
        operator.starts_with(root.path()),
        "{file}: operator {operator:?} in a volume"
    );
    assert!(operator.is_file(), "{file}: {operator:?} is mounted");
    assert_eq!(operator.file_name().unwrap(), "operator.jwt");
    assert_eq!(config.http.port, 9090, "{file}");
    assert_eq!(
        config.http.host, "0.0.0.0",
        "{file}: reachable by the kubelet's probes"
    );
    config
}

fn secret_value(file: &str, key: &str) -> String {
    let docs = yaml_docs(&repo().join("deploy/kubernetes").join(file));
    str_of(&of_kind(&docs, "Secret", file)["stringData"][key], key).to_owned()
}

#[test]
fn the_redis_example_reads_its_url_from_the_mounted_secret() {
    let config = check_manifest("redis.yaml");
    let StoreConfig::Redis(redis) = &config.store else {
        panic!("redis.yaml: {:?}", config.store);
    };
    assert_eq!(
        redis.target,
        nas_server::config::RedisTarget::Server(secret_value("redis.yaml", "redis-url"))
    );
}

#[test]
fn the_s3_example_reads_its_keys_from_the_environment_and_a_secret_file() {
    let config = check_manifest("s3.yaml");
    let StoreConfig::S3(s3) = &config.store else {
        panic!("s3.yaml: {:?}", config.store);
    };
    let id = secret_value("s3.yaml", "s3-access-key-id");
    assert_eq!(s3.access_key_id.as_deref(), Some(id.as_str()));
    let key = secret_value("s3.yaml", "s3-secret-access-key");
    assert_eq!(s3.secret_access_key.as_deref(), Some(key.as_str()));
}

#[test]
fn the_postgres_example_reads_its_url_from_the_environment() {
    let config = check_manifest("postgres.yaml");
    let StoreConfig::Postgres(pg) = &config.store else {
        panic!("postgres.yaml: {:?}", config.store);
    };
    assert_eq!(pg.url, secret_value("postgres.yaml", "pg-url"));
}

#[test]
fn every_kubernetes_example_is_checked() {
    let mut files: Vec<String> = std::fs::read_dir(repo().join("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .collect();
    files.sort();
    assert_eq!(files, ["postgres.yaml", "redis.yaml", "s3.yaml"]);
}

/// Runs `kubernetes-validate --strict` for Kubernetes `version` on `files`: (success, output).
fn kubernetes_validate(version: &str, files: &[PathBuf]) -> (bool, String) {
    let out = std::process::Command::new(nas_testkit::require_kubernetes_validate())
        .args(["--strict", "--no-warn", "-k", version])
        .args(files)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn every_kubernetes_manifest_passes_the_api_schemas_strictly() {
    let files: Vec<PathBuf> = ["postgres.yaml", "redis.yaml", "s3.yaml"]
        .iter()
        .map(|f| repo().join("deploy/kubernetes").join(f))
        .collect();
    for version in ["1.29.0", "1.37.0"] {
        let (ok, text) = kubernetes_validate(version, &files);
        assert!(
            ok,
            "manifests fail the Kubernetes {version} schemas:\n{text}"
        );
        // Four resources per file (ConfigMap, Secret, Deployment, Service), each checked.
        assert_eq!(text.matches(" passed for resource ").count(), 12, "{text}");
    }
    // The checker is strict: a misspelt field of one Deployment is caught.
    let tmp = tempfile::tempdir().unwrap();
    let typo = tmp.path().join("typo.yaml");
    let manifest = std::fs::read_to_string(&files[1]).unwrap();
    std::fs::write(
        &typo,
        manifest.replacen("containerPort:", "containerPortt:", 1),
    )
    .unwrap();
    let (ok, text) = kubernetes_validate("1.37.0", &[typo]);
    assert!(!ok, "a misspelt field passed:\n{text}");
    assert!(text.contains("deployment/nats-account-server"), "{text}");
}

#[test]
fn every_alert_rule_has_for_severity_summary_and_description() {
    let docs = yaml_docs(&repo().join("deploy/prometheus/alerts.yml"));
    assert_eq!(docs.len(), 1);
    let rules: Vec<&Value> = docs[0]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    let names: Vec<&str> = rules.iter().map(|r| str_of(&r["alert"], "alert")).collect();
    for wanted in [
        "NatsAccountServerDown",
        "NatsAccountServerStoreDown",
        "NatsAccountServerStoreErrors",
        "NatsAccountServerServingStale",
        "NatsAccountServerHighErrorRate",
        "NatsAccountServerNatsDisconnected",
        "NatsAccountServerAuditDropped",
        "NatsAccountServerNoAccounts",
        "NatsAccountServerDrift",
    ] {
        assert!(names.contains(&wanted), "no alert {wanted}: {names:?}");
    }
    for r in rules {
        let name = str_of(&r["alert"], "alert");
        assert!(r["expr"].is_string(), "{name}: expr");
        assert!(r["for"].is_string(), "{name}: for");
        let severity = str_of(&r["labels"]["severity"], name);
        assert!(
            ["critical", "warning"].contains(&severity),
            "{name}: {severity}"
        );
        for a in ["summary", "description"] {
            assert!(!str_of(&r["annotations"][a], a).is_empty(), "{name}: {a}");
        }
    }
    // The example scrape config loads these rules under the job name they select.
    let prom = yaml_docs(&repo().join("deploy/prometheus/prometheus.yml"));
    assert_eq!(prom[0]["rule_files"], serde_json::json!(["alerts.yml"]));
    assert_eq!(
        prom[0]["scrape_configs"][0]["job_name"],
        "nats-account-server"
    );
}

#[test]
fn the_dashboard_has_its_variables_and_one_datasource() {
    let path = repo().join("deploy/grafana/nats-account-server.json");
    let d: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36);
    let vars = d["templating"]["list"].as_array().unwrap();
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no variable {name}"))
    };
    assert_eq!(var("DS_PROMETHEUS")["type"], "datasource");
    assert_eq!(var("DS_PROMETHEUS")["query"], "prometheus");
    assert_eq!(var("job")["type"], "query");
    assert_eq!(var("instance")["type"], "query");
    let mut ids = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        ids.push(p["id"].as_u64().unwrap());
        if p["type"] == "row" {
            continue;
        }
        let title = str_of(&p["title"], "title");
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no targets");
        for t in targets {
            let expr = str_of(&t["expr"], title);
            assert!(
                expr.contains("job=~\"$job\""),
                "{title}: {expr} ignores $job"
            );
            assert!(expr.contains("instance=~\"$instance\""), "{title}: {expr}");
        }
    }
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count, "panel ids are unique");
}
