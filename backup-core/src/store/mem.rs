//! An in-memory backend for unit tests: the same contract as the others, no disk. A test can
//! also make every lease holder "die" ([`MemStore::kill_lease_holders`]), as a crashed process
//! would, to exercise the takeover paths.

use std::collections::BTreeMap;
use std::io::{self, Cursor, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::lease::{self, LeaseGuard, LeaseHolder, LeaseInfo};
use super::{
    check_name, AppendFile, ObjectMeta, ObjectWriter, PutMode, RepoLocation, Store, StoreError,
};

type Bytes = Arc<Mutex<Vec<u8>>>;

#[derive(Debug, Clone)]
struct Object {
    bytes: Bytes,
    modified: SystemTime,
}

#[derive(Debug)]
struct MemLease {
    holder: LeaseHolder,
    alive: Arc<AtomicBool>,
    token: u64,
}

#[derive(Debug, Default)]
struct Inner {
    objects: BTreeMap<String, Object>,
    leases: BTreeMap<String, MemLease>,
}

/// A repository held in memory.
#[derive(Debug, Clone)]
pub struct MemStore {
    inner: Arc<Mutex<Inner>>,
    location: RepoLocation,
    tokens: Arc<AtomicU64>,
}

impl Default for MemStore {
    fn default() -> Self {
        MemStore::new("test")
    }
}

impl MemStore {
    /// An empty store named `name` (shown as `mem://<name>`).
    pub fn new(name: &str) -> MemStore {
        MemStore {
            inner: Arc::default(),
            location: RepoLocation::Memory(name.to_string()),
            tokens: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every lease holder is now dead (as after a crash), though its lease object remains.
    pub fn kill_lease_holders(&self) {
        for l in self.lock().leases.values() {
            l.alive.store(false, Ordering::SeqCst);
        }
    }

    /// Replaces an object's bytes without any check (tests that damage a repository).
    pub fn overwrite(&self, name: &str, bytes: Vec<u8>) {
        self.lock().objects.insert(
            name.to_string(),
            Object {
                bytes: Arc::new(Mutex::new(bytes)),
                modified: SystemTime::now(),
            },
        );
    }

    /// An object's bytes (tests).
    pub fn bytes(&self, name: &str) -> Option<Vec<u8>> {
        self.lock()
            .objects
            .get(name)
            .map(|o| o.bytes.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    fn insert(&self, name: &str, bytes: Vec<u8>, mode: PutMode) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if mode == PutMode::Create && inner.objects.contains_key(name) {
            return Err(StoreError::AlreadyExists {
                location: self.describe(name),
            });
        }
        inner.objects.insert(
            name.to_string(),
            Object {
                bytes: Arc::new(Mutex::new(bytes)),
                modified: SystemTime::now(),
            },
        );
        Ok(())
    }
}

struct MemWriter {
    store: MemStore,
    name: String,
    buf: Vec<u8>,
}

impl Write for MemWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for MemWriter {
    fn commit(self: Box<Self>, mode: PutMode) -> Result<(), StoreError> {
        self.store.insert(&self.name, self.buf, mode)
    }
}

#[derive(Debug)]
struct MemAppend {
    store: MemStore,
    name: String,
    bytes: Bytes,
    published: bool,
}

impl MemAppend {
    fn data(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.bytes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl AppendFile for MemAppend {
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), StoreError> {
        let mut d = self.data();
        let end = offset as usize + buf.len();
        if d.len() < end {
            d.resize(end, 0);
        }
        d[offset as usize..end].copy_from_slice(buf);
        Ok(())
    }
    fn set_len(&self, len: u64) -> Result<(), StoreError> {
        self.data().resize(len as usize, 0);
        Ok(())
    }
    fn sync_data(&self) -> Result<(), StoreError> {
        Ok(())
    }
    fn sync_all(&self) -> Result<(), StoreError> {
        Ok(())
    }
    fn publish(&mut self) -> Result<(), StoreError> {
        if !self.published {
            self.store.lock().objects.insert(
                self.name.clone(),
                Object {
                    bytes: Arc::clone(&self.bytes),
                    modified: SystemTime::now(),
                },
            );
            self.published = true;
        }
        Ok(())
    }
    fn describe(&self) -> String {
        self.store.describe(&self.name)
    }
}

#[derive(Debug)]
struct MemLeaseGuard {
    store: MemStore,
    name: String,
    token: u64,
}

impl LeaseGuard for MemLeaseGuard {
    fn name(&self) -> &str {
        &self.name
    }
    fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

impl Drop for MemLeaseGuard {
    fn drop(&mut self) {
        let mut inner = self.store.lock();
        if inner.leases.get(&self.name).map(|l| l.token) == Some(self.token) {
            inner.leases.remove(&self.name);
            inner.objects.remove(&lease::lease_object(&self.name));
        }
    }
}

impl Store for MemStore {
    fn location(&self) -> &RepoLocation {
        &self.location
    }

    fn describe(&self, name: &str) -> String {
        format!("{}/{name}", self.location)
    }

    fn put(&self, name: &str, bytes: &[u8], mode: PutMode) -> Result<(), StoreError> {
        check_name(name)?;
        self.insert(name, bytes.to_vec(), mode)
    }

    fn create(&self, name: &str) -> Result<Box<dyn ObjectWriter>, StoreError> {
        check_name(name)?;
        Ok(Box::new(MemWriter {
            store: self.clone(),
            name: name.to_string(),
            buf: Vec::new(),
        }))
    }

    fn open(&self, name: &str) -> Result<Box<dyn Read + Send>, StoreError> {
        check_name(name)?;
        match self.bytes(name) {
            Some(b) => Ok(Box::new(Cursor::new(b))),
            None => Err(StoreError::NotFound {
                location: self.describe(name),
            }),
        }
    }

    fn read_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        check_name(name)?;
        let b = self.bytes(name).ok_or_else(|| StoreError::NotFound {
            location: self.describe(name),
        })?;
        let start = (offset as usize).min(b.len());
        let end = start.saturating_add(len as usize).min(b.len());
        Ok(b[start..end].to_vec())
    }

    fn head(&self, name: &str) -> Result<Option<ObjectMeta>, StoreError> {
        check_name(name)?;
        Ok(self.lock().objects.get(name).map(|o| ObjectMeta {
            name: name.to_string(),
            size: o.bytes.lock().unwrap_or_else(|p| p.into_inner()).len() as u64,
            modified: Some(o.modified),
        }))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        Ok(self
            .lock()
            .objects
            .range(prefix.to_string()..)
            .take_while(|(n, _)| n.starts_with(prefix))
            .map(|(n, o)| ObjectMeta {
                name: n.clone(),
                size: o.bytes.lock().unwrap_or_else(|p| p.into_inner()).len() as u64,
                modified: Some(o.modified),
            })
            .collect())
    }

    fn delete(&self, names: &[String]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for n in names {
            inner.objects.remove(n);
        }
        Ok(())
    }

    fn prepare_root(&self) -> Result<Option<String>, StoreError> {
        Ok(self.lock().objects.keys().next().cloned())
    }

    fn create_appendable(&self, name: &str, len: u64) -> Result<Box<dyn AppendFile>, StoreError> {
        check_name(name)?;
        Ok(Box::new(MemAppend {
            store: self.clone(),
            name: name.to_string(),
            bytes: Arc::new(Mutex::new(vec![0u8; len as usize])),
            published: false,
        }))
    }

    fn acquire_lease(
        &self,
        name: &str,
        holder: &LeaseHolder,
    ) -> Result<Box<dyn LeaseGuard>, StoreError> {
        lease::check_lease_name(name)?;
        let mut inner = self.lock();
        if let Some(l) = inner.leases.get(name) {
            if l.alive.load(Ordering::SeqCst) {
                return Err(StoreError::LeaseHeld {
                    what: lease::describe_lease(name),
                    holder: Box::new(LeaseInfo {
                        name: name.to_string(),
                        holder: Some(l.holder.clone()),
                        live: true,
                    }),
                });
            }
        }
        let token = self.tokens.fetch_add(1, Ordering::SeqCst);
        inner.leases.insert(
            name.to_string(),
            MemLease {
                holder: holder.clone(),
                alive: Arc::new(AtomicBool::new(true)),
                token,
            },
        );
        inner.objects.insert(
            lease::lease_object(name),
            Object {
                bytes: Arc::new(Mutex::new(holder.encode())),
                modified: SystemTime::now(),
            },
        );
        Ok(Box::new(MemLeaseGuard {
            store: self.clone(),
            name: name.to_string(),
            token,
        }))
    }

    fn read_lease(&self, name: &str) -> Result<Option<LeaseInfo>, StoreError> {
        lease::check_lease_name(name)?;
        Ok(self.lock().leases.get(name).map(|l| LeaseInfo {
            name: name.to_string(),
            holder: Some(l.holder.clone()),
            live: l.alive.load(Ordering::SeqCst),
        }))
    }
}
