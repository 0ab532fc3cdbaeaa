//! Store URLs: a one-line name for any backend, for `migrate --from/--to`.
//!
//! ```text
//! dir:<path>[?shard=true]                       a directory (the Go server's layout), sharded or not
//! nsc:<path>                                    an nsc operator folder (read-only: source only)
//! redis://[user:pass@]host:port[/db][?prefix=nas:&timeout=<ms>]      (rediss:// for TLS)
//! redis+cluster://[user:pass@]host:port,host:port…[?prefix=nas:&groups=16&timeout=<ms>]
//!                                               a Redis Cluster (rediss+cluster:// for TLS)
//! s3://<bucket>[/<prefix>][?endpoint=<url>&region=<r>&pathstyle=true&allowhttp=true&timeout=<ms>]
//! postgres://user[:pass]@host:port/db[?table=nas&pool=8&timeout=<ms>&<libpq parameters>]
//! config:<file>                                 the `store { … }` block of that config file
//! ```
//!
//! `timeout` is in milliseconds, the bound of each call to a shared backend; it defaults to
//! [`TIMEOUT`] (a batch tool has no nats-server waiting, unlike the server, whose default is
//! 800 ms); a `config:` store keeps its config's. S3 credentials come from `AWS_ACCESS_KEY_ID` and
//! `AWS_SECRET_ACCESS_KEY` (never from the URL). Without a `/<prefix>` an S3 store uses the
//! server's default prefix `nas:`; `s3://bucket/` means no prefix. Query parameters that are not
//! ours stay in Redis and PostgreSQL URLs (for their clients); unknown ones elsewhere are
//! refused. Values may be percent-encoded.

use std::path::PathBuf;
use std::time::Duration;

use nas_server::config::{
    Config, DirStore, NscStore, PostgresStore, RedisStore, RedisTarget, S3Store, StoreConfig,
    MAX_REDIS_CLUSTER_GROUPS,
};

/// The default bound of each call to a Redis, S3 or PostgreSQL store named by a URL.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Why a store URL could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreUrlError {
    /// The text does not follow the grammar.
    #[error("store {url:?}: {reason}")]
    Syntax {
        /// The URL as given (passwords redacted).
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A `config:` file could not be read.
    #[error("store config:{path}: {reason}")]
    Config {
        /// The config file.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// A parsed store URL: the backend, and for `config:` the config's operator JWT path.
#[derive(Debug, Clone)]
pub struct StoreSpec {
    /// The backend.
    pub store: StoreConfig,
    /// `operatorjwtpath` of a `config:` file (or the operator of its nsc store).
    pub operator: Option<PathBuf>,
}

/// One `key=value` of a query string, percent-decoded.
type Param = (String, String);

/// Parses a store URL of the grammar in the module documentation.
pub fn parse(url: &str) -> Result<StoreSpec, StoreUrlError> {
    let bad = |reason: String| StoreUrlError::Syntax {
        url: nas_store::redact_url(url),
        reason,
    };
    let (scheme, rest) = url.split_once(':').ok_or_else(|| {
        bad(
            "no scheme (dir:, nsc:, redis://, redis+cluster://, s3://, postgres://, config:)"
                .into(),
        )
    })?;
    let store = match scheme {
        "config" => return from_config(rest),
        "dir" => parse_dir(rest).map_err(bad)?,
        "nsc" => StoreConfig::Nsc(NscStore {
            folder: non_empty_path(rest).map_err(bad)?,
        }),
        "redis" | "rediss" => parse_redis(url).map_err(bad)?,
        "redis+cluster" | "rediss+cluster" => parse_redis_cluster(scheme, rest).map_err(bad)?,
        "s3" => parse_s3(rest).map_err(bad)?,
        "postgres" | "postgresql" => parse_postgres(url).map_err(bad)?,
        other => return Err(bad(format!("unknown store scheme {other:?}"))),
    };
    let operator = nas_server::backend::nsc_operator_jwt(&store);
    Ok(StoreSpec { store, operator })
}

fn from_config(path: &str) -> Result<StoreSpec, StoreUrlError> {
    let fail = |reason: String| StoreUrlError::Config {
        path: path.to_owned(),
        reason,
    };
    let (config, _warnings) =
        Config::from_file(std::path::Path::new(path)).map_err(|e| fail(e.to_string()))?;
    let operator = config
        .operator_jwt_path
        .clone()
        .or_else(|| nas_server::backend::nsc_operator_jwt(&config.store));
    if matches!(config.store, StoreConfig::Memory) {
        return Err(fail("a memory store holds nothing to migrate".into()));
    }
    Ok(StoreSpec {
        store: config.store,
        operator,
    })
}

fn non_empty_path(path: &str) -> Result<PathBuf, String> {
    if path.is_empty() {
        return Err("the path is empty".into());
    }
    Ok(PathBuf::from(path))
}

/// Splits `text` at `?` into the part before and its decoded parameters.
fn split_query(text: &str) -> Result<(&str, Vec<Param>), String> {
    let Some((head, query)) = text.split_once('?') else {
        return Ok((text, Vec::new()));
    };
    let mut params = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        params.push((percent_decode(k)?, percent_decode(v)?));
    }
    Ok((head, params))
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent-encoding in {text:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} is not UTF-8 once decoded"))
}

fn boolean(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" | "1" | "yes" | "" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(format!("{key}={value:?} is not true or false")),
    }
}

fn millis(key: &str, value: &str) -> Result<Duration, String> {
    value
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| format!("{key}={value:?} is not a number of milliseconds"))
}

fn parse_dir(rest: &str) -> Result<StoreConfig, String> {
    let (path, params) = split_query(rest)?;
    let mut dir = DirStore::new(non_empty_path(path)?);
    for (k, v) in params {
        match k.as_str() {
            "shard" => dir.shard = boolean(&k, &v)?,
            _ => return Err(format!("unknown dir parameter {k:?} (expected shard)")),
        }
    }
    Ok(StoreConfig::Dir(dir))
}

/// Takes our parameters out of a client URL, keeping the others (and the rest) as they were.
fn take_params<'a>(url: &'a str, ours: &[&str]) -> Result<(String, Vec<Param>), String> {
    let (head, params) = split_query(url)?;
    let (mine, theirs): (Vec<Param>, Vec<Param>) = params
        .into_iter()
        .partition(|(k, _)| ours.contains(&k.as_str()));
    if theirs.is_empty() {
        return Ok((head.to_owned(), mine));
    }
    // Theirs are kept as written in the original text, not re-encoded.
    let query: Vec<&'a str> = url
        .split_once('?')
        .map(|(_, q)| q.split('&'))
        .into_iter()
        .flatten()
        .filter(|p| !ours.contains(&p.split('=').next().unwrap_or_default()))
        .collect();
    Ok((format!("{head}?{}", query.join("&")), mine))
}

fn parse_redis(url: &str) -> Result<StoreConfig, String> {
    let (client_url, params) = take_params(url, &["prefix", "timeout"])?;
    let mut redis = RedisStore::new(client_url);
    redis.timeout = TIMEOUT;
    for (k, v) in params {
        match k.as_str() {
            "prefix" => redis.prefix = v,
            _ => redis.timeout = millis(&k, &v)?,
        }
    }
    Ok(StoreConfig::Redis(redis))
}

/// `redis+cluster://[user:pass@]h1:p1,h2:p2[?…]`: one seed URL per node, each with the
/// credentials and the client's own query parameters.
fn parse_redis_cluster(scheme: &str, rest: &str) -> Result<StoreConfig, String> {
    let nodes_and_query = rest
        .strip_prefix("//")
        .ok_or("expected redis+cluster://host:port,host:port")?;
    let (client, params) = take_params(nodes_and_query, &["prefix", "timeout", "groups"])?;
    let (nodes, client_query) = match client.split_once('?') {
        Some((nodes, query)) => (nodes.to_owned(), format!("/?{query}")),
        None => (client, String::new()),
    };
    let nodes = nodes.trim_end_matches('/');
    let (credentials, hosts) = match nodes.rsplit_once('@') {
        Some((credentials, hosts)) => (format!("{credentials}@"), hosts),
        None => (String::new(), nodes),
    };
    let client_scheme = scheme.trim_end_matches("+cluster");
    let seeds: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|host| format!("{client_scheme}://{credentials}{host}{client_query}"))
        .collect();
    if seeds.is_empty() {
        return Err("no cluster node (expected redis+cluster://host:port,host:port)".into());
    }
    let mut redis = RedisStore::cluster(seeds);
    redis.timeout = TIMEOUT;
    for (k, v) in params {
        match k.as_str() {
            "prefix" => redis.prefix = v,
            "groups" => {
                let n = v
                    .parse::<u16>()
                    .ok()
                    .filter(|n| (1..=MAX_REDIS_CLUSTER_GROUPS).contains(n))
                    .ok_or_else(|| {
                        format!("groups={v:?} is not a number from 1 to {MAX_REDIS_CLUSTER_GROUPS}")
                    })?;
                if let RedisTarget::Cluster { groups, .. } = &mut redis.target {
                    *groups = n;
                }
            }
            _ => redis.timeout = millis(&k, &v)?,
        }
    }
    Ok(StoreConfig::Redis(redis))
}

fn parse_postgres(url: &str) -> Result<StoreConfig, String> {
    let (client_url, params) = take_params(url, &["table", "pool", "timeout"])?;
    let mut pg = PostgresStore::new(client_url);
    pg.timeout = TIMEOUT;
    for (k, v) in params {
        match k.as_str() {
            "table" => pg.table = v,
            "pool" => {
                pg.pool = v
                    .parse::<usize>()
                    .map_err(|_| format!("pool={v:?} is not a number"))?
                    .max(1)
            }
            _ => pg.timeout = millis(&k, &v)?,
        }
    }
    Ok(StoreConfig::Postgres(pg))
}

fn parse_s3(rest: &str) -> Result<StoreConfig, String> {
    let location = rest
        .strip_prefix("//")
        .ok_or("expected s3://<bucket>[/<prefix>]")?;
    let (location, params) = split_query(location)?;
    let (bucket, prefix) = match location.split_once('/') {
        Some((bucket, prefix)) => (bucket, Some(prefix)),
        None => (location, None),
    };
    if bucket.is_empty() {
        return Err("the bucket is empty".into());
    }
    let mut s3 = S3Store::new(bucket);
    s3.timeout = TIMEOUT;
    if let Some(prefix) = prefix {
        s3.prefix = percent_decode(prefix)?;
    }
    for (k, v) in params {
        match k.as_str() {
            "endpoint" => s3.endpoint = Some(v),
            "region" => s3.region = Some(v),
            "pathstyle" => s3.path_style = boolean(&k, &v)?,
            "allowhttp" => s3.allow_http = boolean(&k, &v)?,
            "timeout" => s3.timeout = millis(&k, &v)?,
            _ => {
                return Err(format!(
                "unknown s3 parameter {k:?} (expected endpoint, region, pathstyle, allowhttp, timeout)"
            ))
            }
        }
    }
    Ok(StoreConfig::S3(s3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(url: &str) -> StoreConfig {
        parse(url).unwrap_or_else(|e| panic!("{e}")).store
    }

    #[test]
    fn every_backend_parses() {
        assert_eq!(store("dir:/a/b"), StoreConfig::Dir(DirStore::new("/a/b")));
        let StoreConfig::Dir(d) = store("dir:/a?shard=true") else {
            panic!("not dir")
        };
        assert!(d.shard);
        let StoreConfig::Redis(r) = store("redis://h:1/2?prefix=x:&timeout=5&protocol=resp3")
        else {
            panic!("not redis")
        };
        assert_eq!(
            (&r.target, r.prefix.as_str()),
            (
                &RedisTarget::Server("redis://h:1/2?protocol=resp3".into()),
                "x:"
            )
        );
        assert_eq!(r.timeout, Duration::from_millis(5));
        let StoreConfig::Redis(c) =
            store("redis+cluster://u:pw@h1:7000,h2:7001?prefix=c:&groups=8&protocol=resp3")
        else {
            panic!("not redis")
        };
        assert_eq!(
            (&c.target, c.prefix.as_str(), c.timeout),
            (
                &RedisTarget::Cluster {
                    seeds: vec![
                        "redis://u:pw@h1:7000/?protocol=resp3".into(),
                        "redis://u:pw@h2:7001/?protocol=resp3".into()
                    ],
                    groups: 8
                },
                "c:",
                TIMEOUT
            )
        );
        let StoreConfig::Redis(c) = store("rediss+cluster://h1:7000/") else {
            panic!("not redis")
        };
        assert_eq!(
            c.target,
            RedisTarget::Cluster {
                seeds: vec!["rediss://h1:7000".into()],
                groups: nas_server::config::DEFAULT_REDIS_CLUSTER_GROUPS
            }
        );
        let StoreConfig::S3(s) =
            store("s3://b/p/?endpoint=http%3A//h:9&region=r&pathstyle=true&allowhttp=true")
        else {
            panic!("not s3")
        };
        assert_eq!((s.bucket.as_str(), s.prefix.as_str()), ("b", "p/"));
        assert_eq!(s.endpoint.as_deref(), Some("http://h:9"));
        assert!(s.path_style && s.allow_http);
        let StoreConfig::S3(s) = store("s3://b") else {
            panic!("not s3")
        };
        assert_eq!(s.prefix, "nas:");
        let StoreConfig::Postgres(p) = store("postgres://u@h:5/db?table=t&sslmode=disable") else {
            panic!("not postgres")
        };
        assert_eq!(
            (p.url.as_str(), p.table.as_str()),
            ("postgres://u@h:5/db?sslmode=disable", "t")
        );
    }

    #[test]
    fn mistakes_are_refused() {
        for bad in [
            "",
            "/a/b",
            "dir:",
            "dir:/a?shrd=1",
            "s3:b",
            "s3:///p",
            "ftp://x",
            "s3://b?x=1",
            "redis+cluster:h:1",
            "redis+cluster://",
            "redis+cluster://h:1?groups=0",
            "redis+cluster://h:1?groups=2000",
        ] {
            assert!(parse(bad).is_err(), "{bad} parsed");
        }
    }
}
