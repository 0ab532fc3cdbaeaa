//! S3-compatible object storage backend (AWS S3, MinIO, R2, moto …) through `object_store`, for
//! several account-server instances sharing one bucket.
//!
//! Objects: `<prefix>accounts/<key>.jwt` and `<prefix>activations/<hash id>.jwt`. Compare-and-swap
//! uses S3 conditional writes: create with `If-None-Match: *`, replace with `If-Match: <etag>`;
//! the ETag is the version. There is no change channel: other instances see a change when their
//! cache entry's TTL ends, or at once when NATS notifications are configured. Every request is
//! bounded (default 1 s, one retry) to stay under nats-server's 1.9 s fetch timeout.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientOptions, ObjectStore, PutMode, PutOptions, PutPayload, RetryConfig, UpdateVersion,
};

use crate::{Backend, Namespace, Precondition, StoreError, Version};

/// Where the bucket is and how to reach it. Credentials left empty come from the standard
/// `AWS_*` environment variables.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// Bucket name (must exist: it is never created).
    pub bucket: String,
    /// Key prefix inside the bucket (for example `nas/`).
    pub prefix: String,
    /// Region.
    pub region: Option<String>,
    /// Endpoint of an S3-compatible server (`http://127.0.0.1:9000`).
    pub endpoint: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`), which most S3-compatible servers need.
    pub path_style: bool,
    /// Allow plain HTTP endpoints.
    pub allow_http: bool,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Bound of every request.
    pub timeout: Duration,
}

/// The S3 backend.
pub struct S3Backend {
    store: Arc<dyn ObjectStore>,
    options: S3Options,
}

impl std::fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Backend")
            .field("bucket", &self.options.bucket)
            .field("prefix", &self.options.prefix)
            .finish()
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("s3: {e}"))
}

impl S3Backend {
    /// Builds the client and checks the bucket exists (a missing bucket is an error naming it).
    pub async fn open(options: S3Options) -> Result<S3Backend, StoreError> {
        let timeout = if options.timeout.is_zero() {
            Duration::from_secs(1)
        } else {
            options.timeout
        };
        // Credentials given in the config win; otherwise the standard AWS_* variables apply.
        let base = if options.access_key_id.is_some() {
            AmazonS3Builder::new()
        } else {
            AmazonS3Builder::from_env()
        };
        let mut builder = base
            .with_bucket_name(&options.bucket)
            .with_virtual_hosted_style_request(!options.path_style)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            // allow_http lives in the client options, which this call replaces as a whole.
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(options.allow_http)
                    .with_timeout(timeout)
                    .with_connect_timeout(timeout),
            )
            .with_retry(RetryConfig {
                max_retries: 1,
                retry_timeout: timeout * 2,
                ..RetryConfig::default()
            });
        if let Some(region) = &options.region {
            builder = builder.with_region(region);
        }
        if let Some(endpoint) = &options.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(id) = &options.access_key_id {
            builder = builder.with_access_key_id(id);
        }
        if let Some(secret) = &options.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        let store: Arc<dyn ObjectStore> = Arc::new(
            builder
                .build()
                .map_err(|e| StoreError::Io(format!("s3 configuration: {e}")))?,
        );
        let backend = S3Backend { store, options };
        backend.check_bucket().await?;
        Ok(backend)
    }

    async fn check_bucket(&self) -> Result<(), StoreError> {
        let prefix = ObjectPath::from(self.options.prefix.trim_end_matches('/'));
        match self.store.list_with_delimiter(Some(&prefix)).await {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("NoSuchBucket") => Err(StoreError::Io(format!(
                "bucket {:?} does not exist (it is never created automatically)",
                self.options.bucket
            ))),
            Err(e) => Err(unavailable(e)),
        }
    }

    fn dir(&self, ns: Namespace) -> String {
        format!("{}{}", self.options.prefix, ns.name())
    }

    fn path(&self, ns: Namespace, key: &str) -> ObjectPath {
        ObjectPath::from(format!("{}/{key}.jwt", self.dir(ns)))
    }

    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let limit = self.options.timeout.max(Duration::from_millis(100)) * 3;
        tokio::time::timeout(limit, fut)
            .await
            .map_err(|_| unavailable(format!("no answer within {limit:?}")))?
    }
}

fn etag_version(e_tag: Option<String>) -> Version {
    Version(e_tag.unwrap_or_default())
}

#[async_trait::async_trait]
impl Backend for S3Backend {
    fn kind(&self) -> &'static str {
        "s3"
    }

    async fn get(&self, ns: Namespace, key: &str) -> Result<Option<(Bytes, Version)>, StoreError> {
        let path = self.path(ns, key);
        self.bounded(async {
            match self.store.get(&path).await {
                Ok(result) => {
                    let version = etag_version(result.meta.e_tag.clone());
                    let bytes = result.bytes().await.map_err(unavailable)?;
                    Ok(Some((bytes, version)))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(unavailable(e)),
            }
        })
        .await
    }

    async fn put(
        &self,
        ns: Namespace,
        key: &str,
        value: Bytes,
        pre: Precondition,
    ) -> Result<Version, StoreError> {
        let mode = match pre {
            Precondition::Any => PutMode::Overwrite,
            Precondition::Absent => PutMode::Create,
            Precondition::Matches(v) => PutMode::Update(UpdateVersion {
                e_tag: Some(v.0),
                version: None,
            }),
        };
        let path = self.path(ns, key);
        self.bounded(async {
            match self
                .store
                .put_opts(
                    &path,
                    PutPayload::from(value),
                    PutOptions {
                        mode,
                        ..PutOptions::default()
                    },
                )
                .await
            {
                Ok(result) => Ok(etag_version(result.e_tag)),
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => Err(StoreError::Conflict),
                // A replace of an object that vanished meanwhile is a lost race too.
                Err(object_store::Error::NotFound { .. }) => Err(StoreError::Conflict),
                Err(e) => Err(unavailable(e)),
            }
        })
        .await
    }

    async fn delete(&self, ns: Namespace, key: &str) -> Result<bool, StoreError> {
        let path = self.path(ns, key);
        self.bounded(async {
            // S3 deletes of a missing object succeed silently: ask first to report absence.
            match self.store.head(&path).await {
                Err(object_store::Error::NotFound { .. }) => return Ok(false),
                Err(e) => return Err(unavailable(e)),
                Ok(_) => {}
            }
            self.store.delete(&path).await.map_err(unavailable)?;
            Ok(true)
        })
        .await
    }

    async fn list(
        &self,
        ns: Namespace,
    ) -> Result<BoxStream<'static, Result<String, StoreError>>, StoreError> {
        let prefix = ObjectPath::from(self.dir(ns));
        let store = self.store.clone();
        let keys = self
            .bounded(async move {
                let mut stream = store.list(Some(&prefix));
                let mut keys = Vec::new();
                while let Some(meta) = stream.next().await {
                    let meta = meta.map_err(unavailable)?;
                    if let Some(key) = meta
                        .location
                        .filename()
                        .and_then(|f| f.strip_suffix(".jwt"))
                    {
                        keys.push(Ok(key.to_owned()));
                    }
                }
                Ok(keys)
            })
            .await?;
        Ok(Box::pin(futures::stream::iter(keys)))
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.bounded(self.check_bucket()).await
    }
}
