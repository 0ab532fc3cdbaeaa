//! Opens the backend a [`StoreConfig`] names. The shared backends are cargo features (all on by
//! default); a binary built without one refuses its store type at start with the feature's name.

use std::sync::Arc;

use nas_store::Backend;

use crate::config::{DirStore, StoreConfig};
/// Why a backend could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The backend refused or could not be reached.
    #[error("store: {0}")]
    Store(#[from] nas_store::StoreError),
    /// Its TLS files are unusable.
    #[error("TLS is not configured: {0}")]
    Tls(String),
    /// The configured store type was left out of this binary.
    #[error("this binary was built without the {store} store (cargo feature `{feature}`)")]
    NotBuilt {
        /// The store type.
        store: &'static str,
        /// The cargo feature that adds it.
        feature: &'static str,
    },
}

/// Opens the configured backend (not yet wrapped in the store policy).
pub async fn open_backend(store: &StoreConfig) -> Result<Arc<dyn Backend>, OpenError> {
    Ok(match store {
        StoreConfig::Memory => Arc::new(nas_store::memory::MemoryBackend::new()),
        StoreConfig::Dir(d) => open_dir(d)?,
        StoreConfig::Nsc(n) => Arc::new(nas_store::nsc::NscBackend::open(&n.folder)?),
        StoreConfig::Redis(r) => open_redis(r).await?,
        StoreConfig::S3(s) => open_s3(s).await?,
        StoreConfig::Postgres(p) => open_postgres(p).await?,
    })
}

fn open_dir(d: &DirStore) -> Result<Arc<dyn Backend>, OpenError> {
    let options = nas_store::dir::DirOptions {
        sharded: d.shard,
        read_only: d.read_only,
        // A read-only directory is written by someone else: follow their changes.
        watch: d.read_only,
    };
    Ok(Arc::new(nas_store::dir::DirBackend::open(&d.dir, options)?))
}

/// What a read-only store tells a client that tried to write.
pub fn read_only_hint(store: &StoreConfig) -> String {
    match store {
        StoreConfig::Nsc(n) => format!(
            "it serves the nsc folder {} read-only: change accounts with nsc",
            n.folder.display()
        ),
        StoreConfig::Dir(d) => format!(
            "it serves {} read-only: write the JWT into that directory, or push to a writable account server",
            d.dir.display()
        ),
        _ => "the store is read-only".to_owned(),
    }
}

/// The operator JWT inside the nsc folder an nsc store serves.
pub fn nsc_operator_jwt(store: &StoreConfig) -> Option<std::path::PathBuf> {
    match store {
        StoreConfig::Nsc(n) => nas_store::nsc::operator_jwt_path(&n.folder).ok(),
        _ => None,
    }
}

#[cfg(feature = "redis")]
async fn open_redis(r: &crate::config::RedisStore) -> Result<Arc<dyn Backend>, OpenError> {
    use crate::config::RedisTarget;
    let (url, cluster, groups) = match &r.target {
        RedisTarget::Server(url) => (url.clone(), false, 1),
        RedisTarget::Cluster { seeds, groups } => (seeds.join(","), true, *groups),
    };
    let options = nas_store::redis::RedisOptions {
        url,
        cluster,
        groups,
        prefix: r.prefix.clone(),
        timeout: r.timeout,
        tls: redis_tls(&r.tls)?,
    };
    Ok(Arc::new(
        nas_store::redis::RedisBackend::open(options).await?,
    ))
}

#[cfg(not(feature = "redis"))]
async fn open_redis(_: &crate::config::RedisStore) -> Result<Arc<dyn Backend>, OpenError> {
    Err(OpenError::NotBuilt {
        store: "redis",
        feature: "redis",
    })
}

#[cfg(feature = "redis")]
fn redis_tls(tls: &crate::config::StoreTls) -> Result<nas_store::redis::RedisTls, OpenError> {
    let client_cert_key = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => Some((read_pem("certificate", cert)?, read_pem("key", key)?)),
        // The config reader refuses a certificate without its key and the other way round.
        _ => None,
    };
    Ok(nas_store::redis::RedisTls {
        root_cert: tls.ca.as_deref().map(|p| read_pem("CA", p)).transpose()?,
        client_cert_key,
    })
}

#[cfg(feature = "redis")]
fn read_pem(what: &str, path: &std::path::Path) -> Result<Vec<u8>, OpenError> {
    std::fs::read(path).map_err(|e| OpenError::Tls(format!("store {what} {}: {e}", path.display())))
}

#[cfg(feature = "s3")]
async fn open_s3(s: &crate::config::S3Store) -> Result<Arc<dyn Backend>, OpenError> {
    let options = nas_store::s3::S3Options {
        bucket: s.bucket.clone(),
        prefix: s.prefix.clone(),
        region: s.region.clone(),
        endpoint: s.endpoint.clone(),
        path_style: s.path_style,
        allow_http: s.allow_http,
        access_key_id: s.access_key_id.clone(),
        secret_access_key: s.secret_access_key.clone(),
        timeout: s.timeout,
    };
    Ok(Arc::new(nas_store::s3::S3Backend::open(options).await?))
}

#[cfg(not(feature = "s3"))]
async fn open_s3(_: &crate::config::S3Store) -> Result<Arc<dyn Backend>, OpenError> {
    Err(OpenError::NotBuilt {
        store: "s3",
        feature: "s3",
    })
}

#[cfg(feature = "postgres")]
async fn open_postgres(p: &crate::config::PostgresStore) -> Result<Arc<dyn Backend>, OpenError> {
    let tls = p.tls.ca.clone().map(|ca| nas_store::postgres::TlsFiles {
        ca,
        cert: p.tls.cert.clone(),
        key: p.tls.key.clone(),
    });
    let options = nas_store::postgres::PostgresOptions {
        url: p.url.clone(),
        table: p.table.clone(),
        pool: p.pool,
        timeout: p.timeout,
        tls,
    };
    Ok(Arc::new(
        nas_store::postgres::PostgresBackend::open(options).await?,
    ))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(_: &crate::config::PostgresStore) -> Result<Arc<dyn Backend>, OpenError> {
    Err(OpenError::NotBuilt {
        store: "postgres",
        feature: "postgres",
    })
}
