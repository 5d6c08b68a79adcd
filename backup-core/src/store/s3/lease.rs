//! Leases on an object store (docs/format.md §9.2): the object `locks/<name>` holds its holder
//! and an expiry. Taking it is a create-only PUT (`If-None-Match: *`); an expired one is taken
//! over with a PUT conditional on the ETag that was read (`If-Match`), so of two takers only
//! one wins. The holder renews it every third of its lifetime, conditionally on its own ETag;
//! a failed renewal means the lease is lost, and [`LeaseGuard::check`] says so before the
//! holder's next irreversible step. Releasing deletes it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::{ObjectStore, PutMode as ObjPutMode, PutOptions, UpdateVersion};

use super::Inner;
use crate::store::lease::{
    describe_lease, unix_now, LeaseGuard, LeaseHolder, LeaseInfo, MAX_LEASE_BYTES,
};
use crate::store::StoreError;

/// How long a lease lasts without renewal. A holder that dies blocks a new one this long.
pub const LEASE_TTL: Duration = Duration::from_secs(30);

fn holder_bytes(holder: &LeaseHolder) -> bytes::Bytes {
    let mut h = holder.clone();
    h.expires_unix = Some(unix_now() + LEASE_TTL.as_secs());
    bytes::Bytes::from(h.encode())
}

fn put(
    inner: &Inner,
    object: &str,
    body: bytes::Bytes,
    mode: ObjPutMode,
) -> Result<UpdateVersion, object_store::Error> {
    let client = Arc::clone(&inner.client);
    let key = inner.key(object);
    inner.run(async move {
        let opts = PutOptions {
            mode,
            ..PutOptions::default()
        };
        let r = client.put_opts(&key, body.into(), opts).await?;
        Ok(UpdateVersion {
            e_tag: r.e_tag,
            version: r.version,
        })
    })
}

/// The lease object's holder and its version, if it exists.
fn get(
    inner: &Inner,
    object: &str,
) -> Result<Option<(Option<LeaseHolder>, UpdateVersion)>, StoreError> {
    let client = Arc::clone(&inner.client);
    let key = inner.key(object);
    let got = inner.run(async move {
        let r = client.get(&key).await?;
        let meta = r.meta.clone();
        let bytes = r.bytes().await?;
        Ok::<_, object_store::Error>((bytes, meta))
    });
    match got {
        Ok((bytes, meta)) => {
            let holder = (bytes.len() as u64 <= MAX_LEASE_BYTES)
                .then(|| LeaseHolder::decode(&bytes))
                .flatten();
            Ok(Some((
                holder,
                UpdateVersion {
                    e_tag: meta.e_tag,
                    version: meta.version,
                },
            )))
        }
        Err(e) if super::is_missing_object(&e) => Ok(None),
        Err(e) => Err(inner.error("reading", object, e)),
    }
}

fn live(holder: &Option<LeaseHolder>) -> bool {
    holder
        .as_ref()
        .and_then(|h| h.expires_unix)
        .is_some_and(|e| e > unix_now())
}

pub(super) fn acquire(
    inner: Arc<Inner>,
    name: &str,
    object: &str,
    holder: &LeaseHolder,
) -> Result<Box<dyn LeaseGuard>, StoreError> {
    let held = |h: Option<LeaseHolder>| StoreError::LeaseHeld {
        what: describe_lease(name),
        holder: Box::new(LeaseInfo {
            name: name.to_string(),
            holder: h,
            live: true,
        }),
    };
    let body = holder_bytes(holder);
    let ours = LeaseHolder::decode(&body);
    let version = match put(&inner, object, body, ObjPutMode::Create) {
        Ok(v) => v,
        Err(object_store::Error::AlreadyExists { .. }) => match get(&inner, object)? {
            // Our own create, retried by the client after its answer was lost.
            Some((Some(current), version)) if Some(&current) == ours.as_ref() => version,
            // Released between the two requests: try once more.
            None => {
                put(&inner, object, holder_bytes(holder), ObjPutMode::Create).map_err(
                    |e| match e {
                        object_store::Error::AlreadyExists { .. } => held(None),
                        e => inner.error("taking the lease", object, e),
                    },
                )?
            }
            Some((current, _)) if live(&current) => return Err(held(current)),
            Some((current, version)) => {
                match put(
                    &inner,
                    object,
                    holder_bytes(holder),
                    ObjPutMode::Update(version),
                ) {
                    Ok(v) => {
                        if let Some(dead) = current {
                            tracing::info!(lease = name, "took over a lease that expired: {dead}");
                        }
                        v
                    }
                    Err(object_store::Error::Precondition { .. }) => return Err(held(None)),
                    Err(e) => return Err(inner.error("taking over the lease", object, e)),
                }
            }
        },
        Err(e) => return Err(inner.error("taking the lease", object, e)),
    };
    Ok(Box::new(S3Lease::start(
        inner, name, object, holder, version,
    )))
}

pub(super) fn read(
    inner: &Inner,
    name: &str,
    object: &str,
) -> Result<Option<LeaseInfo>, StoreError> {
    Ok(get(inner, object)?.map(|(holder, _)| LeaseInfo {
        name: name.to_string(),
        live: live(&holder),
        holder,
    }))
}

/// A held lease, renewed by a background thread until dropped.
struct S3Lease {
    name: String,
    lost: Arc<AtomicBool>,
    stop: Arc<(Mutex<bool>, std::sync::Condvar)>,
    renewer: Option<std::thread::JoinHandle<()>>,
    inner: Arc<Inner>,
    object: String,
    version: Arc<Mutex<UpdateVersion>>,
}

impl std::fmt::Debug for S3Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Lease")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl S3Lease {
    fn start(
        inner: Arc<Inner>,
        name: &str,
        object: &str,
        holder: &LeaseHolder,
        version: UpdateVersion,
    ) -> S3Lease {
        let lost = Arc::new(AtomicBool::new(false));
        let stop = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let version = Arc::new(Mutex::new(version));
        let renewer = {
            let (inner, lost, stop, version) = (
                Arc::clone(&inner),
                Arc::clone(&lost),
                Arc::clone(&stop),
                Arc::clone(&version),
            );
            let (object, holder, name) = (object.to_string(), holder.clone(), name.to_string());
            std::thread::Builder::new()
                .name("pgstream-lease".into())
                .spawn(move || loop {
                    let (lock, cv) = &*stop;
                    let guard = lock.lock().unwrap_or_else(|p| p.into_inner());
                    let (guard, _) = cv
                        .wait_timeout_while(guard, LEASE_TTL / 3, |stopped| !*stopped)
                        .unwrap_or_else(|p| p.into_inner());
                    if *guard {
                        return;
                    }
                    drop(guard);
                    let current = version.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    let body = holder_bytes(&holder);
                    let ours = LeaseHolder::decode(&body);
                    let renewed = match put(&inner, &object, body, ObjPutMode::Update(current)) {
                        // A renewal retried after its answer was lost fails its If-Match
                        // against the object it wrote itself: still ours.
                        Err(object_store::Error::Precondition { .. }) => {
                            match get(&inner, &object) {
                                Ok(Some((Some(h), v))) if Some(&h) == ours.as_ref() => Ok(v),
                                _ => Err("the lease object was replaced by another".to_string()),
                            }
                        }
                        other => other.map_err(|e| e.to_string()),
                    };
                    match renewed {
                        Ok(v) => *version.lock().unwrap_or_else(|p| p.into_inner()) = v,
                        Err(e) => {
                            tracing::error!(lease = %name, "lost the lease: its renewal failed: {e}");
                            lost.store(true, Ordering::SeqCst);
                            return;
                        }
                    }
                })
                .ok()
        };
        S3Lease {
            name: name.to_string(),
            lost,
            stop,
            renewer,
            inner,
            object: object.to_string(),
            version,
        }
    }
}

impl LeaseGuard for S3Lease {
    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(StoreError::Remote {
                op: "holding the lease",
                location: self.inner.describe(&self.object),
                detail: format!(
                    "{} was lost (its renewal failed, or it expired and was taken over); \
                     stopping before anything is committed",
                    describe_lease(&self.name)
                ),
            });
        }
        Ok(())
    }
}

impl Drop for S3Lease {
    fn drop(&mut self) {
        {
            let (lock, cv) = &*self.stop;
            *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
            cv.notify_all();
        }
        if let Some(r) = self.renewer.take() {
            let _ = r.join();
        }
        if self.lost.load(Ordering::SeqCst) {
            return; // someone else's now
        }
        // Release: only if the object is still the one this holder wrote.
        let ours = self
            .version
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .e_tag
            .clone();
        if let Ok(Some((_, current))) = get(&self.inner, &self.object) {
            if current.e_tag == ours {
                let client = Arc::clone(&self.inner.client);
                let key = self.inner.key(&self.object);
                let _ = self.inner.run(async move { client.delete(&key).await });
            }
        }
    }
}
