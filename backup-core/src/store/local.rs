//! The local-directory backend: the repository is a directory tree, each name a file under it.
//! Writes go through [`crate::fsutil`] (temporary name with `O_EXCL`, fsync, rename or
//! link-without-replace, fsync of the directory; streams with O_DIRECT), directories are created
//! 0700 and fsynced into their parents, deletions fsync their directories, and directories left
//! empty by a deletion are removed. Leases are files under `locks/` held with `flock`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::lease::{self, LeaseGuard, LeaseHolder, LeaseInfo};
use super::{
    check_name, AppendFile, ObjectMeta, ObjectWriter, PutMode, RepoLocation, Store, StoreError,
};
use crate::fsutil::{self, FsError, PresizedFile, Replace, StreamFile, PRIVATE_FILE_MODE};

/// A repository in a local directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    location: RepoLocation,
}

impl LocalStore {
    /// The store rooted at `root` (which need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> LocalStore {
        let root = root.into();
        LocalStore {
            location: RepoLocation::Local(root.clone()),
            root,
        }
    }

    /// The directory. Only this backend and tests that damage repositories on purpose use it.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, name: &str) -> Result<PathBuf, StoreError> {
        check_name(name)?;
        Ok(self.root.join(name))
    }

    /// Creates the parent directories of `path` (each fsynced into its parent).
    fn parents(&self, path: &Path) -> Result<(), StoreError> {
        match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => {
                fsutil::create_dir_all_durably(p).map_err(from_fs)
            }
            _ => Ok(()),
        }
    }

    /// Runs `create` (which makes a temporary file beside `path`), creating the directories
    /// first; a directory removed meanwhile by a deletion that emptied it is created again.
    fn with_parents<T>(
        &self,
        path: &Path,
        create: impl Fn() -> Result<T, FsError>,
    ) -> Result<T, StoreError> {
        for attempt in 0.. {
            self.parents(path)?;
            match create() {
                Err(e) if e.source.kind() == io::ErrorKind::NotFound && attempt < 3 => continue,
                other => return other.map_err(from_fs),
            }
        }
        unreachable!("the loop returns")
    }
}

/// The store's view of a filesystem error.
pub(crate) fn from_fs(e: FsError) -> StoreError {
    if e.source.kind() == io::ErrorKind::AlreadyExists && e.op == "refusing to overwrite" {
        return StoreError::AlreadyExists {
            location: e.path.display().to_string(),
        };
    }
    StoreError::Io {
        op: e.op,
        location: e.path.display().to_string(),
        source: e.source,
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| {
        if source.kind() == io::ErrorKind::NotFound && op == "opening" {
            return StoreError::NotFound {
                location: path.display().to_string(),
            };
        }
        StoreError::Io {
            op,
            location: path.display().to_string(),
            source,
        }
    }
}

/// The error a failpoint injects into an operation on `path`.
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
fn injected_io(op: &'static str, path: &Path, source: io::Error) -> StoreError {
    StoreError::Io {
        op,
        location: path.display().to_string(),
        source,
    }
}

struct LocalWriter {
    file: StreamFile,
}

impl Write for LocalWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl ObjectWriter for LocalWriter {
    fn commit(self: Box<Self>, mode: PutMode) -> Result<(), StoreError> {
        crate::failpoint!("store.commit", |e| injected_io(
            "committing",
            self.file.temp_path(),
            e
        ));
        let replace = match mode {
            PutMode::Create => Replace::Refuse,
            PutMode::Replace => Replace::Allow,
        };
        self.file.commit(replace).map_err(from_fs)
    }
}

#[derive(Debug)]
struct LocalAppend {
    file: PresizedFile,
}

impl AppendFile for LocalAppend {
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), StoreError> {
        crate::failpoint!("store.write", |e| injected_io(
            "writing",
            self.file.path(),
            e
        ));
        self.file.write_all_at(buf, offset).map_err(from_fs)
    }
    fn set_len(&self, len: u64) -> Result<(), StoreError> {
        self.file.set_len(len).map_err(from_fs)
    }
    fn sync_data(&self) -> Result<(), StoreError> {
        crate::failpoint!("store.sync", |e| injected_io(
            "fsyncing",
            self.file.path(),
            e
        ));
        self.file.sync_data().map_err(from_fs)
    }
    fn sync_all(&self) -> Result<(), StoreError> {
        crate::failpoint!("store.sync", |e| injected_io(
            "fsyncing",
            self.file.path(),
            e
        ));
        self.file.sync_all().map_err(from_fs)
    }
    fn publish(&mut self) -> Result<(), StoreError> {
        crate::failpoint!("store.publish", |e| injected_io(
            "publishing",
            self.file.path(),
            e
        ));
        self.file.publish().map_err(from_fs)
    }
    fn describe(&self) -> String {
        self.file.path().display().to_string()
    }
}

impl Store for LocalStore {
    fn location(&self) -> &RepoLocation {
        &self.location
    }

    fn describe(&self, name: &str) -> String {
        self.root.join(name).display().to_string()
    }

    fn put(&self, name: &str, bytes: &[u8], mode: PutMode) -> Result<(), StoreError> {
        let path = self.path(name)?;
        crate::failpoint!("store.put", |e| injected_io("writing", &path, e));
        self.with_parents(&path, || match mode {
            PutMode::Create => fsutil::write_new_file_durably(&path, bytes, PRIVATE_FILE_MODE),
            PutMode::Replace => fsutil::write_file_durably(&path, bytes, PRIVATE_FILE_MODE),
        })
    }

    fn create(&self, name: &str) -> Result<Box<dyn ObjectWriter>, StoreError> {
        let path = self.path(name)?;
        let file = self.with_parents(&path, || StreamFile::create(&path))?;
        Ok(Box::new(LocalWriter { file }))
    }

    fn open(&self, name: &str) -> Result<Box<dyn Read + Send>, StoreError> {
        let path = self.path(name)?;
        let file = File::open(&path).map_err(io_err("opening", &path))?;
        Ok(Box::new(file))
    }

    fn read_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        use std::os::unix::fs::FileExt;
        let path = self.path(name)?;
        let file = File::open(&path).map_err(io_err("opening", &path))?;
        let size = file.metadata().map_err(io_err("reading", &path))?.len();
        let n = len.min(size.saturating_sub(offset)) as usize;
        let mut buf = vec![0u8; n];
        file.read_exact_at(&mut buf, offset)
            .map_err(io_err("reading", &path))?;
        Ok(buf)
    }

    fn head(&self, name: &str) -> Result<Option<ObjectMeta>, StoreError> {
        let path = self.path(name)?;
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(ObjectMeta {
                name: name.to_string(),
                size: m.len(),
                modified: m.modified().ok(),
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotADirectory => Ok(None),
            Err(e) => Err(io_err("reading the size of", &path)(e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        // Walk from the deepest directory the prefix names; keep names that start with it.
        let base = match prefix.rfind('/') {
            Some(i) => &prefix[..=i],
            None => "",
        };
        let mut out = Vec::new();
        let mut stack = vec![base.to_string()];
        while let Some(dir_name) = stack.pop() {
            let dir = self.root.join(&dir_name);
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        || e.kind() == io::ErrorKind::NotADirectory =>
                {
                    continue
                }
                Err(e) => return Err(io_err("listing", &dir)(e)),
            };
            for entry in entries {
                let entry = entry.map_err(io_err("listing", &dir))?;
                let Ok(file) = entry.file_name().into_string() else {
                    continue; // never a name the repository writes
                };
                if file.contains(".tmp.") {
                    continue; // a write in progress
                }
                let name = format!("{dir_name}{file}");
                let kind = match entry.file_type() {
                    Ok(k) => k,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err("listing", &dir)(e)),
                };
                if kind.is_dir() {
                    let sub = format!("{name}/");
                    if sub.starts_with(prefix) || prefix.starts_with(&sub) {
                        stack.push(sub);
                    }
                } else if kind.is_file() && name.starts_with(prefix) {
                    let meta = match entry.metadata() {
                        Ok(m) => m,
                        // Deleted while we looked.
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(io_err("listing", &dir)(e)),
                    };
                    out.push(ObjectMeta {
                        name,
                        size: meta.len(),
                        modified: meta.modified().ok(),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn delete(&self, names: &[String]) -> Result<(), StoreError> {
        crate::failpoint!("store.delete", |e| injected_io("removing", &self.root, e));
        let mut dirs = std::collections::BTreeSet::new();
        let mut result = Ok(());
        for name in names {
            let path = self.path(name)?;
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    result = Err(io_err("removing", &path)(e));
                    break;
                }
            }
            if let Some(p) = path.parent() {
                dirs.insert(p.to_path_buf());
            }
        }
        // Even after a failure: what was removed stays removed after a crash.
        for dir in &dirs {
            if dir.exists() {
                fsutil::fsync_dir(dir).map_err(from_fs)?;
            }
        }
        result?;
        // Directories left empty go too (deepest first); one still in use is simply kept.
        let mut emptied = std::collections::BTreeSet::new();
        for dir in dirs.iter().rev() {
            let mut d = dir.clone();
            while d.starts_with(&self.root) && d != self.root {
                if fs::remove_dir(&d).is_err() {
                    break;
                }
                let parent = d.parent().map(Path::to_path_buf).unwrap_or_default();
                emptied.insert(parent.clone());
                d = parent;
            }
        }
        for dir in emptied {
            if dir.exists() {
                fsutil::fsync_dir(&dir).map_err(from_fs)?;
            }
        }
        Ok(())
    }

    fn delete_prefix(&self, prefix: &str) -> Result<usize, StoreError> {
        let names: Vec<String> = self.list(prefix)?.into_iter().map(|o| o.name).collect();
        self.delete(&names)?;
        // Then the directory: temporaries a dead writer left, and directories, deepest first.
        if let Some(dir) = prefix.strip_suffix('/') {
            check_name(dir)?;
            let top = self.root.join(dir);
            if remove_temporaries_and_empty_dirs(&top)? {
                if let Some(parent) = top.parent() {
                    fsutil::fsync_dir(parent).map_err(from_fs)?;
                }
            }
        }
        Ok(names.len())
    }

    fn remove_abandoned_temporaries(&self) -> Result<usize, StoreError> {
        let mut removed = 0;
        let mut dirs = vec![self.root.clone()];
        while let Some(dir) = dirs.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("listing", &dir)(e)),
            };
            let mut here = 0;
            for entry in entries {
                let entry = entry.map_err(io_err("listing", &dir))?;
                let Ok(kind) = entry.file_type() else {
                    continue; // gone meanwhile
                };
                if kind.is_dir() {
                    dirs.push(entry.path());
                } else if kind.is_file()
                    && entry.file_name().to_string_lossy().contains(".tmp.")
                    && remove_if_abandoned(&entry.path())?
                {
                    here += 1;
                }
            }
            if here > 0 {
                fsutil::fsync_dir(&dir).map_err(from_fs)?;
                removed += here;
            }
        }
        Ok(removed)
    }

    fn prepare_root(&self) -> Result<Option<String>, StoreError> {
        match fs::read_dir(&self.root) {
            Ok(mut entries) => match entries.next() {
                None => Ok(None),
                Some(entry) => {
                    let entry = entry.map_err(io_err("listing", &self.root))?;
                    Ok(Some(entry.file_name().to_string_lossy().into_owned()))
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fsutil::create_dir_all_durably(&self.root).map_err(from_fs)?;
                Ok(None)
            }
            Err(e) => Err(io_err("opening directory", &self.root)(e)),
        }
    }

    fn create_appendable(&self, name: &str, len: u64) -> Result<Box<dyn AppendFile>, StoreError> {
        let path = self.path(name)?;
        let file = self.with_parents(&path, || PresizedFile::create(&path, len))?;
        Ok(Box::new(LocalAppend { file }))
    }

    fn acquire_lease(
        &self,
        name: &str,
        holder: &LeaseHolder,
    ) -> Result<Box<dyn LeaseGuard>, StoreError> {
        lease::check_lease_name(name)?;
        let path = self.path(&lease::lease_object(name))?;
        crate::failpoint!("store.lease", |e| injected_io("locking", &path, e));
        self.parents(&path)?;
        // A reader of the lease (read_lease) holds a shared lock for an instant: a few tries
        // tell it from a holder.
        let mut tries = 0;
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(PRIVATE_FILE_MODE)
                .open(&path)
                .map_err(io_err("opening", &path))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(fs::TryLockError::WouldBlock) => {
                    tries += 1;
                    if tries < 5 {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                    return Err(StoreError::LeaseHeld {
                        what: lease::describe_lease(name),
                        holder: Box::new(LeaseInfo {
                            name: name.to_string(),
                            holder: read_holder(&file),
                            live: true,
                        }),
                    });
                }
                Err(fs::TryLockError::Error(e)) => return Err(io_err("locking", &path)(e)),
            }
            // The previous holder may have removed the name between our open and our lock:
            // then we locked a file no one else will ever see. Start again.
            let ours = file.metadata().map_err(io_err("locking", &path))?;
            match fs::metadata(&path) {
                Ok(m) if m.ino() == ours.ino() && m.dev() == ours.dev() => {}
                _ => continue,
            }
            let bytes = holder.encode();
            use std::os::unix::fs::FileExt;
            file.set_len(0).map_err(io_err("writing", &path))?;
            file.write_all_at(&bytes, 0)
                .map_err(io_err("writing", &path))?;
            file.sync_data().map_err(io_err("fsyncing", &path))?;
            return Ok(Box::new(LocalLease {
                file: Some(file),
                path,
                name: name.to_string(),
            }));
        }
    }

    fn read_lease(&self, name: &str) -> Result<Option<LeaseInfo>, StoreError> {
        lease::check_lease_name(name)?;
        let path = self.path(&lease::lease_object(name))?;
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("opening", &path)(e)),
        };
        let live = match file.try_lock_shared() {
            Ok(()) => false,
            Err(fs::TryLockError::WouldBlock) => true,
            Err(fs::TryLockError::Error(e)) => return Err(io_err("locking", &path)(e)),
        };
        Ok(Some(LeaseInfo {
            name: name.to_string(),
            holder: read_holder(&file),
            live,
        }))
    }
}

/// An unlocked temporary file older than this was left by a writer that died. Writers lock
/// theirs from right after creating them until they commit or drop them
/// ([`fsutil::DurableFile`]); the age covers that instant, and writers of older pgstream
/// versions, which did not lock but wrote continuously.
const ABANDONED_AFTER: Duration = Duration::from_secs(3600);

/// Removes the temporary file `path` if no writer holds it (a writer killed -9 lets go of its
/// lock with its descriptor) and it is older than [`ABANDONED_AFTER`]; whether it went.
fn remove_if_abandoned(path: &Path) -> Result<bool, StoreError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err("opening", path)(e)),
    };
    let age = file
        .metadata()
        .ok()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.elapsed().ok());
    if age.is_none_or(|a| a < ABANDONED_AFTER) {
        return Ok(false);
    }
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => return Ok(false), // its writer lives
        Err(fs::TryLockError::Error(e)) => return Err(io_err("locking", path)(e)),
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("removing", path)(e)),
    }
}

/// Removes the temporary files (`.tmp.` names) under `dir`, then `dir` and the directories
/// below it that are left empty; whether `dir` went.
fn remove_temporaries_and_empty_dirs(dir: &Path) -> Result<bool, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err("listing", dir)(e)),
    };
    let mut removed = false;
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_temporaries_and_empty_dirs(&path)?;
        } else if entry.file_name().to_string_lossy().contains(".tmp.") {
            match fs::remove_file(&path) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("removing", &path)(e)),
            }
        }
    }
    if removed {
        fsutil::fsync_dir(dir).map_err(from_fs)?;
    }
    Ok(fs::remove_dir(dir).is_ok())
}

fn read_holder(file: &File) -> Option<LeaseHolder> {
    let mut bytes = Vec::new();
    file.take(lease::MAX_LEASE_BYTES)
        .read_to_end(&mut bytes)
        .ok()?;
    LeaseHolder::decode(&bytes)
}

/// A held local lease: the file is locked until dropped, and removed (still locked) on release.
#[derive(Debug)]
struct LocalLease {
    file: Option<File>,
    path: PathBuf,
    name: String,
}

impl LeaseGuard for LocalLease {
    fn name(&self) -> &str {
        &self.name
    }
    fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

impl Drop for LocalLease {
    fn drop(&mut self) {
        // Removed while locked, so a taker that opened the old file sees the name change.
        let _ = fs::remove_file(&self.path);
        self.file.take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temporary file whose writer died is removed once old; a live writer's never is,
    /// however old, and a recent unlocked one neither.
    #[test]
    fn abandoned_temporaries_go_and_live_writes_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let old = std::time::SystemTime::now() - Duration::from_secs(2 * 3600);
        let mut live = store.create("wal/0000000100000000/live").unwrap();
        live.write_all(b"still being written").unwrap();
        let shard = dir.path().join("wal/0000000100000000");
        let live_temp = std::fs::read_dir(&shard)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        File::options()
            .write(true)
            .open(&live_temp)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let dead = shard.join("dead.lz4.enc.tmp.0123456789abcdef");
        std::fs::write(&dead, b"a killed writer's").unwrap();
        File::options()
            .write(true)
            .open(&dead)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let recent = dir.path().join("pgstream.repo.tmp.0123456789abcdef");
        std::fs::write(&recent, b"just written").unwrap();
        assert_eq!(store.remove_abandoned_temporaries().unwrap(), 1);
        assert!(!dead.exists());
        assert!(live_temp.exists() && recent.exists());
        live.commit(PutMode::Create).unwrap();
        assert_eq!(
            store.list("wal/").unwrap().len(),
            1,
            "the live write committed"
        );
    }

    /// Another process (flock(1)) holds the lease, then dies: the lease is live, then free.
    #[test]
    fn a_lease_held_by_a_process_that_dies_is_free_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let holder = LeaseHolder::this_process("other process");
        store
            .put("locks/rw", &holder.encode(), PutMode::Replace)
            .unwrap();
        let mut child = std::process::Command::new("flock")
            .args(["--exclusive", "--no-fork"])
            .arg(dir.path().join("locks/rw"))
            .args(["sleep", "60"])
            .spawn()
            .expect("flock(1) from util-linux is needed by this test");
        // Wait until the child holds it.
        let mut live = false;
        for _ in 0..200 {
            if store.read_lease("rw").unwrap().unwrap().live {
                live = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(live, "the child never took the lock");
        let err = store
            .acquire_lease("rw", &LeaseHolder::this_process("me"))
            .unwrap_err();
        assert!(err.to_string().contains("other process"), "{err}");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!store.read_lease("rw").unwrap().unwrap().live);
        let _guard = store
            .acquire_lease("rw", &LeaseHolder::this_process("me"))
            .unwrap();
        let info = store.read_lease("rw").unwrap().unwrap();
        assert!(info.live);
        assert_eq!(info.holder.unwrap().purpose, "me");
    }
}
