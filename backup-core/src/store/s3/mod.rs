//! The S3-compatible object-store backend (`--repo s3://bucket/prefix`), over the `object_store`
//! crate (SigV4, retries with backoff, multipart uploads, conditional writes).
//!
//! - Object `name` is key `prefix/name`.
//! - Create-only puts send `If-None-Match: *`; a taken name is [`StoreError::AlreadyExists`].
//! - A streamed object up to [`SINGLE_PUT_MAX`] bytes (a whole WAL segment) is one
//!   conditional PUT; a larger one is a multipart upload of [`PART_SIZE`] parts, at most
//!   [`PARTS_IN_FLIGHT`] at once, completed only on commit (aborted otherwise, so nothing half
//!   written is ever visible). Multipart completion cannot be made conditional through the
//!   client, so a create-only multipart object checks the name just before completing; only
//!   objects written under a lease (a backup's files) or whose content is fixed by their name
//!   (WAL) are that large, so a racing writer would write the same bytes (docs/format.md §9).
//! - Reads stream, in ranged requests of 16 MiB (`io::READ_WINDOW`), all of the version
//!   (ETag) the first saw: each request finishes within the client's timeout, which covers a
//!   whole response body, however large the object.
//! - Leases are objects with an expiry, renewed in the background (see [`lease`]).
//!
//! The backend runs its own small async runtime; every operation is handed to it and waited
//! for, so the synchronous callers of the storage port may run anywhere.

mod io;
mod lease;
pub mod settings;

use std::future::Future;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, S3ConditionalPut};
use object_store::path::Path as ObjPath;
use object_store::{ClientOptions, ObjectStore, PutMode as ObjPutMode, PutOptions, RetryConfig};

use super::lease::{check_lease_name, lease_object, LeaseGuard, LeaseHolder, LeaseInfo};
use super::{check_name, ObjectMeta, ObjectWriter, PutMode, RepoLocation, Store, StoreError};
pub use settings::S3Settings;

/// Largest object written in one PUT (a 16 MiB WAL segment, compressed or not, with the
/// encryption overhead, fits).
pub const SINGLE_PUT_MAX: usize = 17 << 20;
/// Multipart part size.
pub const PART_SIZE: usize = 8 << 20;
/// Parts being uploaded at once by one writer (bounds its memory to about three parts).
pub const PARTS_IN_FLIGHT: usize = 2;

/// What the backend shares with its writers, readers and leases.
pub(crate) struct Inner {
    pub(crate) client: Arc<AmazonS3>,
    /// Always `Some` until dropped (taken out to shut it down without blocking).
    runtime: Option<tokio::runtime::Runtime>,
    location: RepoLocation,
    prefix: String,
    /// Whether the bucket is known to exist (checked once, at the first missing object).
    bucket_seen: std::sync::atomic::AtomicBool,
}

impl Inner {
    /// Runs `fut` on the backend's runtime and waits for it (from any thread).
    pub(crate) fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> T {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt().spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .expect("the S3 runtime ended a request without an answer")
    }

    /// Starts `fut` on the backend's runtime without waiting.
    pub(crate) fn spawn<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> tokio::task::JoinHandle<T> {
        self.rt().spawn(fut)
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.runtime
            .as_ref()
            .expect("the S3 runtime lives as long as the store")
    }

    pub(crate) fn key(&self, name: &str) -> ObjPath {
        if self.prefix.is_empty() {
            ObjPath::from(name)
        } else {
            ObjPath::from(format!("{}/{name}", self.prefix))
        }
    }

    /// One PUT of a whole object. A create-only PUT refused because the name is taken (412)
    /// succeeded when the object holds exactly these bytes: the client retries a request whose
    /// answer was lost, and the retry then finds the object the first attempt wrote.
    pub(crate) fn put_whole(
        &self,
        name: &str,
        payload: bytes::Bytes,
        mode: PutMode,
    ) -> Result<(), StoreError> {
        let client = Arc::clone(&self.client);
        let key = self.key(name);
        let sent = payload.clone();
        let obj_mode = match mode {
            PutMode::Create => ObjPutMode::Create,
            PutMode::Replace => ObjPutMode::Overwrite,
        };
        let put = self.run(async move {
            let opts = PutOptions {
                mode: obj_mode,
                ..PutOptions::default()
            };
            client.put_opts(&key, payload.into(), opts).await
        });
        match put {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) if self.holds(name, &sent)? => {
                tracing::debug!(object = name, "a retried create found its own object");
                Ok(())
            }
            Err(e) => Err(self.error("writing", name, e)),
        }
    }

    /// Whether object `name` holds exactly `bytes`.
    fn holds(&self, name: &str, bytes: &bytes::Bytes) -> Result<bool, StoreError> {
        let client = Arc::clone(&self.client);
        let key = self.key(name);
        let len = bytes.len() as u64;
        let got = self.run(async move {
            let meta = client.head(&key).await?;
            if meta.size != len {
                return Ok(None);
            }
            client.get(&key).await?.bytes().await.map(Some)
        });
        match got {
            Ok(stored) => Ok(stored.as_ref() == Some(bytes)),
            Err(e) if is_missing_object(&e) => Ok(false),
            Err(e) => Err(self.error("reading", name, e)),
        }
    }

    /// A HEAD answers 404 without a body, for a missing object and a missing bucket alike: at
    /// the first missing object, ask for the bucket (one listing request) so that a missing
    /// bucket is reported as such rather than as an empty repository.
    pub(crate) fn check_bucket(&self, name: &str) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        if self.bucket_seen.load(Ordering::Relaxed) {
            return Ok(());
        }
        let client = Arc::clone(&self.client);
        let prefix = (!self.prefix.is_empty()).then(|| ObjPath::from(self.prefix.as_str()));
        // Not through `error`, which calls this for a missing object.
        self.run(async move { client.list_with_delimiter(prefix.as_ref()).await })
            .map_err(|e| StoreError::Remote {
                op: "looking up",
                location: self.describe(name),
                detail: explain(&e),
            })?;
        self.bucket_seen.store(true, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn describe(&self, name: &str) -> String {
        format!("{}/{name}", self.location)
    }

    /// The store's view of a client error.
    pub(crate) fn error(&self, op: &'static str, name: &str, e: object_store::Error) -> StoreError {
        let location = self.describe(name);
        match e {
            ref e if is_missing_object(e) => match self.check_bucket(name) {
                Ok(()) => StoreError::NotFound { location },
                Err(bucket) => bucket,
            },
            object_store::Error::AlreadyExists { .. } => StoreError::AlreadyExists { location },
            other => StoreError::Remote {
                op,
                location,
                detail: explain(&other),
            },
        }
    }
}

impl Drop for Inner {
    /// The store may be dropped on a thread of the caller's own runtime, where dropping a
    /// runtime (which waits for its threads) panics: shut it down without waiting. Nothing is
    /// left running that matters: every request was waited for, and writers and leases hold
    /// the `Inner` until they have finished (aborted an upload, released a lease).
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Whether the object is missing, and not the whole bucket (a 404 whose body says
/// `NoSuchBucket` is a misconfiguration to report, not an absent object).
pub(crate) fn is_missing_object(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. }) && !e.to_string().contains("NoSuchBucket")
}

/// A client error in words an operator can act on.
fn explain(e: &object_store::Error) -> String {
    let text = e.to_string();
    let hint = if text.contains("NoSuchBucket") {
        "; the bucket does not exist (create it, or check the bucket name and the endpoint)"
    } else if text.contains("AuthorizationHeaderMalformed")
        || text.contains("PermanentRedirect")
        || text.contains("IncorrectEndpoint")
    {
        "; the region is wrong (set AWS_REGION to the bucket's region)"
    } else if text.contains("InvalidAccessKeyId")
        || text.contains("SignatureDoesNotMatch")
        || text.contains("AccessDenied")
        || text.contains("403 Forbidden")
        || text.contains("ExpiredToken")
    {
        "; the credentials were refused (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the \
         profile, and that they may use this bucket)"
    } else if text.contains("error sending request") || text.contains("timed out") {
        "; the endpoint could not be reached (check AWS_ENDPOINT_URL and the network)"
    } else if text.contains("status code: 5") || text.contains("SlowDown") {
        "; the store kept failing after every retry (check its health, then run the command again)"
    } else {
        ""
    };
    format!("{text}{hint}")
}

/// An S3 repository.
#[derive(Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
    credentials_from: String,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("location", &self.inner.location)
            .field("credentials_from", &self.credentials_from)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// The store at `s3://bucket/prefix`, configured from the environment (settings.rs).
    pub fn from_env(location: &RepoLocation) -> Result<S3Store, StoreError> {
        let RepoLocation::S3 { bucket, prefix } = location else {
            return Err(StoreError::Unavailable {
                location: location.to_string(),
                reason: "not an s3:// location",
            });
        };
        let settings = settings::resolve(bucket, &|k| std::env::var(k).ok()).map_err(|detail| {
            StoreError::Remote {
                op: "configuring access to",
                location: location.to_string(),
                detail,
            }
        })?;
        Self::new(location.clone(), prefix.clone(), settings)
    }

    /// The store with explicit settings.
    pub fn new(
        location: RepoLocation,
        prefix: String,
        s: S3Settings,
    ) -> Result<S3Store, StoreError> {
        let remote = |detail: String| StoreError::Remote {
            op: "configuring access to",
            location: location.to_string(),
            detail,
        };
        let options = ClientOptions::new()
            .with_allow_http(s.allow_http)
            .with_connect_timeout(Duration::from_secs(10))
            // A request that stalls this long is retried (or fails): never a hang.
            .with_timeout(Duration::from_secs(120));
        let retry = RetryConfig {
            max_retries: 8,
            retry_timeout: Duration::from_secs(180),
            ..RetryConfig::default()
        };
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&s.bucket)
            .with_region(&s.region)
            .with_access_key_id(&s.access_key_id)
            .with_secret_access_key(&s.secret_access_key)
            .with_client_options(options)
            .with_retry(retry)
            .with_conditional_put(S3ConditionalPut::ETagMatch);
        if let Some(token) = &s.session_token {
            builder = builder.with_token(token);
        }
        match &s.endpoint {
            // S3-compatible stores: path-style addressing.
            Some(e) => {
                builder = builder
                    .with_endpoint(e)
                    .with_virtual_hosted_style_request(false)
            }
            None => builder = builder.with_virtual_hosted_style_request(true),
        }
        let client = builder.build().map_err(|e| remote(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pgstream-s3")
            .enable_all()
            .build()
            .map_err(|e| remote(format!("starting its I/O threads: {e}")))?;
        Ok(S3Store {
            inner: Arc::new(Inner {
                client: Arc::new(client),
                runtime: Some(runtime),
                location,
                prefix,
                bucket_seen: std::sync::atomic::AtomicBool::new(false),
            }),
            credentials_from: s.credentials_from,
        })
    }

    fn meta(&self, name: String, m: &object_store::ObjectMeta) -> ObjectMeta {
        ObjectMeta {
            name,
            size: m.size,
            modified: Some(SystemTime::from(m.last_modified)),
        }
    }

    /// The repository-relative name of a key under the prefix.
    fn name_of(&self, key: &ObjPath) -> Option<String> {
        let key = key.as_ref();
        if self.inner.prefix.is_empty() {
            Some(key.to_string())
        } else {
            key.strip_prefix(&self.inner.prefix)
                .and_then(|r| r.strip_prefix('/'))
                .map(str::to_string)
        }
    }
}

impl Store for S3Store {
    fn location(&self) -> &RepoLocation {
        &self.inner.location
    }

    fn describe(&self, name: &str) -> String {
        self.inner.describe(name)
    }

    fn put(&self, name: &str, bytes: &[u8], mode: PutMode) -> Result<(), StoreError> {
        check_name(name)?;
        let payload = bytes::Bytes::copy_from_slice(bytes);
        self.inner.put_whole(name, payload, mode)
    }

    fn create(&self, name: &str) -> Result<Box<dyn ObjectWriter>, StoreError> {
        check_name(name)?;
        Ok(Box::new(io::S3Writer::new(Arc::clone(&self.inner), name)))
    }

    fn open(&self, name: &str) -> Result<Box<dyn Read + Send>, StoreError> {
        check_name(name)?;
        Ok(Box::new(io::S3Reader::open(Arc::clone(&self.inner), name)?))
    }

    fn read_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        check_name(name)?;
        let size = match self.head(name)? {
            Some(m) => m.size,
            None => {
                return Err(StoreError::NotFound {
                    location: self.describe(name),
                })
            }
        };
        let end = offset.saturating_add(len).min(size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let client = Arc::clone(&self.inner.client);
        let key = self.inner.key(name);
        self.inner
            .run(async move { client.get_range(&key, offset..end).await })
            .map(|b| b.to_vec())
            .map_err(|e| self.inner.error("reading", name, e))
    }

    fn head(&self, name: &str) -> Result<Option<ObjectMeta>, StoreError> {
        check_name(name)?;
        let client = Arc::clone(&self.inner.client);
        let key = self.inner.key(name);
        match self.inner.run(async move { client.head(&key).await }) {
            Ok(m) => Ok(Some(self.meta(name.to_string(), &m))),
            Err(e) if is_missing_object(&e) => {
                self.inner.check_bucket(name)?;
                Ok(None)
            }
            Err(e) => Err(self.inner.error("looking up", name, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        // List the deepest "directory" of the prefix, keep the names that start with it.
        let dir = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let list_key = if dir.is_empty() {
            (!self.inner.prefix.is_empty()).then(|| ObjPath::from(self.inner.prefix.as_str()))
        } else {
            Some(self.inner.key(dir))
        };
        let client = Arc::clone(&self.inner.client);
        let metas: Vec<object_store::ObjectMeta> = self
            .inner
            .run(async move { client.list(list_key.as_ref()).try_collect().await })
            .map_err(|e| self.inner.error("listing", prefix, e))?;
        let mut out: Vec<ObjectMeta> = metas
            .iter()
            .filter_map(|m| {
                let name = self.name_of(&m.location)?;
                name.starts_with(prefix).then(|| self.meta(name, m))
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn delete(&self, names: &[String]) -> Result<(), StoreError> {
        for name in names {
            check_name(name)?;
            let client = Arc::clone(&self.inner.client);
            let key = self.inner.key(name);
            match self.inner.run(async move { client.delete(&key).await }) {
                Ok(()) => {}
                Err(e) if is_missing_object(&e) => {}
                Err(e) => return Err(self.inner.error("deleting", name, e)),
            }
        }
        Ok(())
    }

    fn prepare_root(&self) -> Result<Option<String>, StoreError> {
        // The bucket must exist (pgstream does not create buckets); the prefix must be empty.
        Ok(self.list("")?.into_iter().next().map(|o| o.name))
    }

    fn acquire_lease(
        &self,
        name: &str,
        holder: &LeaseHolder,
    ) -> Result<Box<dyn LeaseGuard>, StoreError> {
        check_lease_name(name)?;
        lease::acquire(Arc::clone(&self.inner), name, &lease_object(name), holder)
    }

    fn read_lease(&self, name: &str) -> Result<Option<LeaseInfo>, StoreError> {
        check_lease_name(name)?;
        lease::read(&self.inner, name, &lease_object(name))
    }
}

#[cfg(test)]
mod tests {
    use super::explain;

    fn said(body: &str) -> String {
        explain(&object_store::Error::Generic {
            store: "S3",
            source: body.to_string().into(),
        })
    }

    #[test]
    fn client_errors_say_what_to_check() {
        let region = said(
            "Error performing GET https://s3.amazonaws.com/b/k in 20ms - Server returned \
             non-2xx status code: 400 Bad Request: <Error><Code>AuthorizationHeaderMalformed</Code>\
             <Message>the region 'us-east-1' is wrong; expecting 'eu-west-3'</Message></Error>",
        );
        assert!(region.contains("set AWS_REGION"), "{region}");
        let creds = said("403 Forbidden: <Error><Code>InvalidAccessKeyId</Code></Error>");
        assert!(creds.contains("credentials were refused"), "{creds}");
        // A port number with 403 in it is not a refusal.
        let down = said(
            "Error performing GET http://127.0.0.1:40339/b/k after 8 retries - HTTP error: \
             error sending request",
        );
        assert!(down.contains("could not be reached"), "{down}");
        assert!(!down.contains("credentials"), "{down}");
        let down = said("Server returned non-2xx status code: 503 Service Unavailable: ");
        assert!(down.contains("kept failing"), "{down}");
        let bucket = said("404 Not Found: <Error><Code>NoSuchBucket</Code></Error>");
        assert!(bucket.contains("bucket does not exist"), "{bucket}");
    }
}
