//! S3-compatible object storage backend (AWS S3, MinIO, R2, moto …) through `object_store`, for
//! several account-server instances sharing one bucket.
//!
//! Objects: `<prefix>accounts/<key>.jwt` and `<prefix>activations/<hash id>.jwt`. Compare-and-swap
//! uses S3 conditional writes: create with `If-None-Match: *`, replace with `If-Match: <etag>`;
//! the ETag is the version. There is no change channel: other instances see a change when their
//! cache entry's TTL ends, or at once when NATS notifications are configured. Every call is
//! bounded as a whole by [`S3Options::timeout`] (retry included; connecting at most 500 ms), so a
//! miss answers within nats-server's 1.9 s fetch timeout even when the server hangs. A listing
//! is not one call: it is fetched a page (1,000 keys) at a time as its consumer pulls, and
//! each page is bounded on its own by [`LIST_PAGE_TIMEOUTS`] × that timeout, so a bucket of any size lists (and packs)
//! without holding every key and without a budget for the whole listing.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, PutMode, PutOptions, PutPayload, RetryConfig,
    UpdateVersion,
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
    /// Bound of every call as a whole, retry included (zero: 1 s). Keep it well under
    /// nats-server's 1.9 s fetch timeout.
    pub timeout: Duration,
}

/// GETs a pack or a hash scan keeps in flight on S3 (each one HTTP request of one object):
/// a round trip to S3 costs milliseconds where a local read costs microseconds, so more reads
/// overlap than the default; each holds one small object and one pooled connection.
pub const S3_READ_CONCURRENCY: usize = 16;

/// Each list page is bounded by this many times [`S3Options::timeout`] (4 s at the default
/// 800 ms), on its own: a listing of any length is never cut for its total time.
pub const LIST_PAGE_TIMEOUTS: u32 = 5;

/// The S3 backend.
pub struct S3Backend {
    store: Arc<dyn ObjectStore>,
    /// The same bucket through a client whose requests may take [`LIST_PAGE_TIMEOUTS`] times
    /// longer: one list page is up to 1,000 keys, which a server takes longer to answer than
    /// one object (moto: 0.2–0.6 s for a page of a 20k-object bucket).
    list_store: Arc<dyn ObjectStore>,
    options: S3Options,
    /// The effective bound of every call.
    timeout: Duration,
    /// The bound of each list page.
    page_timeout: Duration,
}

impl std::fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Backend")
            .field("bucket", &self.options.bucket)
            .field("prefix", &self.options.prefix)
            .finish()
    }
}

/// A failed S3 call, object_store's error kept as the source.
fn unavailable(e: object_store::Error) -> StoreError {
    StoreError::Unavailable(crate::Cause::of("s3", e))
}

/// S3 is not usable for a reason of ours (a timeout, a missing bucket).
fn unusable(what: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(crate::Cause::new(format!("s3: {what}")))
}

impl S3Backend {
    /// Builds the client and checks the bucket exists (a missing bucket is an error naming it).
    pub async fn open(options: S3Options) -> Result<S3Backend, StoreError> {
        let timeout = if options.timeout.is_zero() {
            Duration::from_secs(1)
        } else {
            options.timeout
        };
        let page_timeout = timeout * LIST_PAGE_TIMEOUTS;
        let backend = S3Backend {
            store: client(&options, timeout)?,
            list_store: client(&options, page_timeout)?,
            options,
            timeout,
            page_timeout,
        };
        backend.bounded(backend.check_bucket()).await?;
        Ok(backend)
    }

    /// The error for a bucket that does not exist: permanent at startup, and an outage (never
    /// "no such account") once running, so nats-servers do not conclude accounts are gone.
    fn missing_bucket(&self) -> String {
        format!(
            "bucket {:?} does not exist (it is never created automatically)",
            self.options.bucket
        )
    }

    /// Maps an S3 error of a call that found no object: a missing object is `None`, a missing
    /// bucket is an outage.
    fn unavailable_or_missing_bucket(&self, e: object_store::Error) -> StoreError {
        if is_missing_bucket(&e) {
            unusable(self.missing_bucket())
        } else {
            unavailable(e)
        }
    }

    async fn check_bucket(&self) -> Result<(), StoreError> {
        let prefix = ObjectPath::from(self.options.prefix.trim_end_matches('/'));
        match self.store.list_with_delimiter(Some(&prefix)).await {
            Ok(_) => Ok(()),
            Err(e) if is_missing_bucket(&e) => {
                Err(StoreError::Config(crate::Cause::new(self.missing_bucket())))
            }
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
        bounded(self.timeout, fut).await
    }
}

/// An S3 client whose every call (retry included) is bounded by `timeout`.
fn client(options: &S3Options, timeout: Duration) -> Result<Arc<dyn ObjectStore>, StoreError> {
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
                // An unreachable host must leave time for the retry within the bound.
                .with_connect_timeout(timeout.min(Duration::from_millis(500))),
        )
        // One quick retry (a reset connection, an S3 503 SlowDown) when the bound leaves
        // time for it; `bounded` cuts off whatever is still running at the bound.
        .with_retry(RetryConfig {
            max_retries: 1,
            retry_timeout: timeout,
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(200),
                base: 2.0,
            },
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
    let store = builder
        .build()
        .map_err(|e| StoreError::Config(crate::Cause::of("s3 configuration", e)))?;
    Ok(Arc::new(store))
}

/// Runs `fut` for at most `limit`; a hung server becomes [`StoreError::Unavailable`].
async fn bounded<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| unusable(format!("no answer within {limit:?}")))?
}

/// S3 answers 404 both for a missing object and a missing bucket; only the error code in the
/// body (which object_store keeps in the message) tells them apart.
fn is_missing_bucket(e: &object_store::Error) -> bool {
    e.to_string().contains("NoSuchBucket")
}

fn etag_version(e_tag: Option<String>) -> Version {
    Version(e_tag.unwrap_or_default())
}

#[async_trait::async_trait]
impl Backend for S3Backend {
    fn kind(&self) -> &'static str {
        "s3"
    }

    /// Instances share a bucket without telling each other (no change channel).
    fn sees_every_change(&self) -> bool {
        false
    }

    /// ListObjectsV2 answers in ascending UTF-8 byte order, and every key of a namespace has
    /// the same prefix and suffix, so the listing is in key order.
    fn lists_sorted(&self) -> bool {
        true
    }

    fn read_concurrency(&self) -> usize {
        S3_READ_CONCURRENCY
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
                Err(e @ object_store::Error::NotFound { .. }) if is_missing_bucket(&e) => {
                    Err(self.unavailable_or_missing_bucket(e))
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
                Err(e @ object_store::Error::NotFound { .. }) if is_missing_bucket(&e) => {
                    Err(self.unavailable_or_missing_bucket(e))
                }
                // A replace of an object that vanished meanwhile is a lost race too.
                Err(object_store::Error::NotFound { .. }) => Err(StoreError::Conflict),
                Err(e) => Err(unavailable(e)),
            }
        })
        .await
    }

    /// `expected` is compared with the object's ETag first; object_store has no conditional
    /// delete, so a write landing between that check and the delete can still be removed (the
    /// one backend where this window exists; DESIGN.md says so).
    async fn delete(
        &self,
        ns: Namespace,
        key: &str,
        expected: Option<&Version>,
    ) -> Result<bool, StoreError> {
        let path = self.path(ns, key);
        self.bounded(async {
            // S3 deletes of a missing object succeed silently: ask first to report absence.
            match self.store.head(&path).await {
                Err(e @ object_store::Error::NotFound { .. }) if is_missing_bucket(&e) => {
                    return Err(self.unavailable_or_missing_bucket(e))
                }
                Err(object_store::Error::NotFound { .. }) => return Ok(false),
                Err(e) => return Err(unavailable(e)),
                Ok(meta) => {
                    if expected.is_some_and(|v| *v != etag_version(meta.e_tag)) {
                        return Err(StoreError::Conflict);
                    }
                }
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
        let mut objects = self.list_store.list(Some(&prefix)).peekable();
        // The first page is awaited here so an unreachable server fails the call itself.
        let limit = self.page_timeout;
        bounded(limit, async {
            if let Some(Err(_)) = std::pin::Pin::new(&mut objects).peek().await {
                if let Some(Err(e)) = objects.next().await {
                    return Err(self.unavailable_or_missing_bucket(e));
                }
            }
            Ok(())
        })
        .await?;
        // Pages are fetched as the caller consumes the stream, each page request bounded on its
        // own: a bucket of any size lists without holding every key in memory.
        let keys = futures::stream::unfold(Some(objects), move |state| async move {
            let mut objects = state?;
            loop {
                let next = tokio::time::timeout(limit, objects.next()).await;
                let item = match next {
                    Err(_) => Err(unusable(format!("no list page within {limit:?}"))),
                    Ok(None) => return None,
                    Ok(Some(Err(e))) => Err(unavailable(e)),
                    Ok(Some(Ok(meta))) => match meta
                        .location
                        .filename()
                        .and_then(|f| f.strip_suffix(".jwt"))
                    {
                        Some(key) => Ok(key.to_owned()),
                        None => continue, // not ours (a folder marker, another tool's file)
                    },
                };
                // After an error the stream ends: the caller sees the error once.
                let state = if item.is_ok() { Some(objects) } else { None };
                return Some((item, state));
            }
        });
        Ok(Box::pin(keys))
    }

    async fn health(&self) -> Result<(), StoreError> {
        match self.bounded(self.check_bucket()).await {
            // Once running, a missing bucket is an outage like any other.
            Err(StoreError::Config(e)) => Err(unusable(e)),
            other => other,
        }
    }
}
