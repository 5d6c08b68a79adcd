//! The storage port: every byte that goes into or out of a repository passes through a
//! [`Store`] (docs/format.md, "Storage contract"). Backends: [`local::LocalStore`] (a directory:
//! temporary name, fsync, rename or link, fsync of the directory; O_DIRECT streams) and
//! [`mem::MemStore`] (unit tests). Everything above this module names stored objects by their
//! repository-relative names (`backups/<id>/backup.json`, `wal/<shard>/<segment>.lz4.enc`);
//! nothing above it sees a path.
//!
//! The contract, which every backend meets (and `contract` tests):
//! - names are relative, `/`-separated, of plain components;
//! - a committed object is durable and whole; an uncommitted one is invisible, and dropping its
//!   writer leaves nothing;
//! - [`PutMode::Create`] never replaces an object (a concurrent second writer gets
//!   [`StoreError::AlreadyExists`]); [`PutMode::Replace`] replaces atomically;
//! - listing returns committed objects only, sorted by name;
//! - a lease is held by one holder at a time, and a holder that died loses it (see [`lease`]).

pub mod lease;
pub mod local;
pub mod location;
pub mod mem;
pub mod s3;

#[doc(hidden)]
pub mod contract;

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::SystemTime;

pub use lease::{LeaseGuard, LeaseHolder, LeaseInfo};
pub use location::{LocationError, RepoLocation};

/// One stored object, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Its repository-relative name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written, where the backend knows.
    pub modified: Option<SystemTime>,
}

/// What committing an object does when the name is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Fail with [`StoreError::AlreadyExists`], leaving the existing object untouched.
    Create,
    /// Replace the existing object atomically (readers see the old or the new one whole).
    Replace,
}

/// A failure of the storage port. Each names the stored object (as [`Store::describe`]
/// shows it) and what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist.
    #[error("{location} does not exist")]
    NotFound {
        /// Where.
        location: String,
    },
    /// Create-only write of a name that is taken.
    #[error("refusing to overwrite {location}: it already exists")]
    AlreadyExists {
        /// Where.
        location: String,
    },
    /// The backend's I/O failed.
    #[error("{op} {location}: {source}")]
    Io {
        /// What was being done ("writing", "listing", ...).
        op: &'static str,
        /// Where.
        location: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A name that cannot be stored.
    #[error("invalid repository object name {name:?}: {reason}")]
    BadName {
        /// The name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A small object (config, record, pin) larger than any such object can be.
    #[error("{location} is {size} bytes, more than the {limit} a file of its kind can hold")]
    TooLarge {
        /// Where.
        location: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Another process holds the lease.
    #[error("{what} is in use by {holder}")]
    LeaseHeld {
        /// What the lease guards, in words ("the repository's WAL receiver lease").
        what: String,
        /// Who holds it.
        holder: Box<LeaseInfo>,
    },
    /// The object store refused a request or could not be reached, after its retries.
    #[error("{op} {location}: {detail}")]
    Remote {
        /// What was being done.
        op: &'static str,
        /// Where.
        location: String,
        /// What the store (or the network) said, and what to check.
        detail: String,
    },
    /// No backend serves this location in this build.
    #[error("{location}: {reason}")]
    Unavailable {
        /// The location.
        location: String,
        /// Why, and what to do.
        reason: &'static str,
    },
    /// The backend cannot do this.
    #[error("{backend} repositories do not support {what}")]
    Unsupported {
        /// The kind of store.
        backend: &'static str,
        /// What was asked.
        what: &'static str,
    },
}

impl StoreError {
    /// Whether the object was missing.
    pub fn is_not_found(&self) -> bool {
        match self {
            StoreError::NotFound { .. } => true,
            StoreError::Io { source, .. } => source.kind() == io::ErrorKind::NotFound,
            _ => false,
        }
    }

    /// Whether a create-only write found the name taken.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, StoreError::AlreadyExists { .. })
    }

    /// The `io::ErrorKind` closest to this error (for `Read`/`Write` adapters).
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            StoreError::NotFound { .. } => io::ErrorKind::NotFound,
            StoreError::AlreadyExists { .. } => io::ErrorKind::AlreadyExists,
            StoreError::Io { source, .. } => source.kind(),
            StoreError::BadName { .. } | StoreError::TooLarge { .. } => io::ErrorKind::InvalidInput,
            StoreError::LeaseHeld { .. } => io::ErrorKind::WouldBlock,
            StoreError::Remote { .. } => io::ErrorKind::Other,
            StoreError::Unsupported { .. } | StoreError::Unavailable { .. } => {
                io::ErrorKind::Unsupported
            }
        }
    }

    /// Wraps into an `io::Error` that keeps this error (retrievable with [`StoreError::from_io`]).
    pub fn into_io(self) -> io::Error {
        io::Error::new(self.kind(), self)
    }

    /// The `StoreError` inside an `io::Error` made by [`StoreError::into_io`].
    pub fn from_io(e: &io::Error) -> Option<&StoreError> {
        e.get_ref().and_then(|i| i.downcast_ref::<StoreError>())
    }
}

/// An object being written. Nothing is visible until [`ObjectWriter::commit`] returns;
/// dropping the writer uncommitted discards what was written.
pub trait ObjectWriter: Write + Send {
    /// Makes the object durable and visible under its name.
    fn commit(self: Box<Self>, mode: PutMode) -> Result<(), StoreError>;
}

/// A file written in place at offsets and made durable piece by piece: the segment
/// `receive-wal` is receiving. Only backends with real files offer it ([`Store::create_appendable`]).
pub trait AppendFile: Send + fmt::Debug {
    /// Writes `buf` at `offset` (durable after a sync).
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), StoreError>;
    /// Grows or shrinks the file (durable after [`AppendFile::sync_all`]).
    fn set_len(&self, len: u64) -> Result<(), StoreError>;
    /// fdatasync.
    fn sync_data(&self) -> Result<(), StoreError>;
    /// fsync.
    fn sync_all(&self) -> Result<(), StoreError>;
    /// Makes the file visible under its name, replacing what was there (durably); it stays
    /// open for more writes.
    fn publish(&mut self) -> Result<(), StoreError>;
    /// How the file is named in messages.
    fn describe(&self) -> String;
}

/// The storage port of one repository.
pub trait Store: Send + Sync + fmt::Debug {
    /// Where the repository is.
    fn location(&self) -> &RepoLocation;

    /// How a stored name is shown in messages: a path for local repositories, a URL otherwise.
    fn describe(&self, name: &str) -> String;

    /// Writes a small object whole.
    fn put(&self, name: &str, bytes: &[u8], mode: PutMode) -> Result<(), StoreError>;

    /// Starts writing an object as a stream.
    fn create(&self, name: &str) -> Result<Box<dyn ObjectWriter>, StoreError>;

    /// Reads an object as a stream ([`StoreError::NotFound`] when missing).
    fn open(&self, name: &str) -> Result<Box<dyn Read + Send>, StoreError>;

    /// Reads up to `len` bytes at `offset` (fewer at the end of the object).
    fn read_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, StoreError>;

    /// The object's size and time, or `None` when it does not exist.
    fn head(&self, name: &str) -> Result<Option<ObjectMeta>, StoreError>;

    /// Every committed object whose name starts with `prefix`, sorted by name.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError>;

    /// Deletes objects durably; names that do not exist are not an error.
    fn delete(&self, names: &[String]) -> Result<(), StoreError>;

    /// Deletes every object under `prefix` (a `/`-terminated prefix), and whatever the backend
    /// keeps for it: a local directory, and the temporary files of writes that will never be
    /// committed (the caller owns the prefix, under its lease, so any write in progress there
    /// is a dead writer's). Returns how many committed objects there were.
    fn delete_prefix(&self, prefix: &str) -> Result<usize, StoreError> {
        let names: Vec<String> = self.list(prefix)?.into_iter().map(|o| o.name).collect();
        self.delete(&names)?;
        Ok(names.len())
    }

    /// Some entry of the repository's root, if it has any (for `init`, which wants an empty
    /// place); creates the root where that is a thing (a local directory).
    fn prepare_root(&self) -> Result<Option<String>, StoreError>;

    /// Creates a file for in-place writes of `len` bytes (zeros), under a temporary name until
    /// published.
    fn create_appendable(&self, _name: &str, _len: u64) -> Result<Box<dyn AppendFile>, StoreError> {
        Err(StoreError::Unsupported {
            backend: self.location().kind(),
            what: "files written in place",
        })
    }

    /// Takes lease `name` (see [`lease`]) for `holder`, or fails with
    /// [`StoreError::LeaseHeld`] naming the live holder. Released when the guard is dropped.
    fn acquire_lease(
        &self,
        name: &str,
        holder: &LeaseHolder,
    ) -> Result<Box<dyn LeaseGuard>, StoreError>;

    /// Who holds lease `name`, and whether that holder is alive; `None` when nobody does.
    fn read_lease(&self, name: &str) -> Result<Option<LeaseInfo>, StoreError>;
}

/// A shared store.
pub type SharedStore = Arc<dyn Store>;

/// Reads a small object whole, refusing one larger than `limit` bytes.
pub fn get(store: &dyn Store, name: &str, limit: u64) -> Result<Vec<u8>, StoreError> {
    let mut r = store.open(name)?;
    let mut out = Vec::new();
    (&mut r)
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| io_to_store(e, "reading", || store.describe(name)))?;
    if out.len() as u64 > limit {
        return Err(StoreError::TooLarge {
            location: store.describe(name),
            size: out.len() as u64,
            limit,
        });
    }
    Ok(out)
}

/// The [`StoreError`] an `io::Error` carries (see [`StoreError::into_io`]), or a new one.
pub fn io_to_store(
    e: io::Error,
    op: &'static str,
    location: impl FnOnce() -> String,
) -> StoreError {
    if e.get_ref().is_some_and(|i| i.is::<StoreError>()) {
        let inner = e.into_inner().expect("checked above");
        return *inner.downcast::<StoreError>().expect("checked above");
    }
    StoreError::Io {
        op,
        location: location(),
        source: e,
    }
}

/// Reads a small object whole, or `None` when it does not exist.
pub fn get_if_exists(
    store: &dyn Store,
    name: &str,
    limit: u64,
) -> Result<Option<Vec<u8>>, StoreError> {
    match get(store, name, limit) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Opens the store at `location`.
pub fn open(location: &RepoLocation) -> Result<SharedStore, StoreError> {
    match location {
        RepoLocation::Local(path) => Ok(Arc::new(local::LocalStore::new(path))),
        RepoLocation::S3 { .. } => Ok(Arc::new(s3::S3Store::from_env(location)?)),
        RepoLocation::Memory(_) => Err(StoreError::Unavailable {
            location: location.to_string(),
            reason: "in-memory repositories exist only inside tests",
        }),
    }
}

/// Checks a repository-relative name: non-empty plain components separated by `/`, and no
/// component the local backend reserves for its temporary files.
pub fn check_name(name: &str) -> Result<(), StoreError> {
    let bad = |reason| StoreError::BadName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.len() > 1024 {
        return Err(bad("it is longer than 1024 bytes"));
    }
    if name.contains('\\') || name.contains('\0') || name.contains('\n') {
        return Err(bad("it contains a backslash, NUL or newline"));
    }
    for c in name.split('/') {
        if c.is_empty() || c == "." || c == ".." {
            return Err(bad("it has an empty, `.` or `..` component"));
        }
        if c.contains(".tmp.") {
            return Err(bad("`.tmp.` marks temporary files"));
        }
    }
    Ok(())
}

/// Deletes every object under `prefix` (which should end in `/`). Returns how many there were.
pub fn delete_prefix(store: &dyn Store, prefix: &str) -> Result<usize, StoreError> {
    store.delete_prefix(prefix)
}
