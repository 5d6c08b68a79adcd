//! The one module that makes writes durable. Everything the repository persists goes through here:
//! a file is written under `<name>.tmp.<random>` (created with `O_EXCL`, mode 0600), fsynced,
//! renamed into place and then its directory is fsynced, so after a crash a name either holds the
//! complete new content or does not exist (or still holds the old content). Directories are created
//! 0700. Every error names the path it concerns.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

mod stream;
pub use stream::StreamFile;

/// Mode of every file the repository writes: secrets and backups are for the owner only.
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// Mode of every directory the repository creates.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// A filesystem operation that failed, with the path it was applied to.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {source}", path.display())]
pub struct FsError {
    /// What was being done ("creating", "fsyncing directory", ...).
    pub op: &'static str,
    /// The path concerned.
    pub path: PathBuf,
    /// The underlying error.
    #[source]
    pub source: io::Error,
}

impl FsError {
    pub(crate) fn new(op: &'static str, path: &Path, source: io::Error) -> Self {
        FsError {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// Converts into an `io::Error` that keeps the kind and carries this error (path included).
    pub fn into_io(self) -> io::Error {
        io::Error::new(self.source.kind(), self)
    }
}

/// What `commit` does when the destination name already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// Atomically replace it (config rewrites).
    Allow,
    /// Fail with `AlreadyExists` and leave it untouched (backup files are never overwritten).
    Refuse,
}

/// The parent directory of `path`, `.` for a bare name.
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// fsyncs a directory so that entries created, renamed or removed in it survive a crash.
pub fn fsync_dir(dir: &Path) -> Result<(), FsError> {
    let d = File::open(dir).map_err(|e| FsError::new("opening directory", dir, e))?;
    d.sync_all()
        .map_err(|e| FsError::new("fsyncing directory", dir, e))
}

/// Creates one directory (mode 0700) and fsyncs its parent. Fails if it already exists.
pub fn create_dir_durably(path: &Path) -> Result<(), FsError> {
    fs::DirBuilder::new()
        .mode(PRIVATE_DIR_MODE)
        .create(path)
        .map_err(|e| FsError::new("creating directory", path, e))?;
    fsync_dir(parent_of(path))
}

/// Creates `path` and any missing parents (each 0700, each parent fsynced). Existing directories
/// are left as they are.
pub fn create_dir_all_durably(path: &Path) -> Result<(), FsError> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            create_dir_all_durably(parent)?;
        }
    }
    match create_dir_durably(path) {
        Err(e) if e.source.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        other => other,
    }
}

/// Removes a file and fsyncs its directory so the removal survives a crash.
pub fn remove_durably(path: &Path) -> Result<(), FsError> {
    fs::remove_file(path).map_err(|e| FsError::new("removing", path, e))?;
    fsync_dir(parent_of(path))
}

/// Writes `bytes` to `path` durably with the given mode, replacing any existing file atomically.
pub fn write_file_durably(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FsError> {
    crate::failpoint!("fsutil.write-file", |e| FsError::new("writing", path, e));
    let mut f = DurableFile::create_with_mode(path, mode)?;
    f.write_all(bytes)
        .map_err(|e| FsError::new("writing", f.temp_path(), e))?;
    f.commit(Replace::Allow)
}

/// Like [`write_file_durably`], but fails with `AlreadyExists` if `path` exists.
pub fn write_new_file_durably(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FsError> {
    crate::failpoint!("fsutil.write-file", |e| FsError::new("writing", path, e));
    let mut f = DurableFile::create_with_mode(path, mode)?;
    f.write_all(bytes)
        .map_err(|e| FsError::new("writing", f.temp_path(), e))?;
    f.commit(Replace::Refuse)
}

/// A file being written under a temporary name. `commit` makes it durable and visible under its
/// final name; dropping it uncommitted removes the temporary file. The writer holds a shared
/// `flock` on it until then, so a temporary file nobody holds was left by a writer that died
/// (see `store::local`, which removes those).
#[derive(Debug)]
pub struct DurableFile {
    file: Option<File>,
    temp: PathBuf,
    dest: PathBuf,
}

impl DurableFile {
    /// Starts writing `dest` (mode 0600).
    pub fn create(dest: &Path) -> Result<Self, FsError> {
        Self::create_with_mode(dest, PRIVATE_FILE_MODE)
    }

    /// Starts writing `dest` with an explicit mode (applied exactly, regardless of umask).
    pub fn create_with_mode(dest: &Path, mode: u32) -> Result<Self, FsError> {
        let name = dest.file_name().ok_or_else(|| {
            FsError::new(
                "creating",
                dest,
                io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"),
            )
        })?;
        let mut rnd = [0u8; 8];
        openssl::rand::rand_bytes(&mut rnd)
            .map_err(|e| FsError::new("creating", dest, e.into()))?;
        let mut temp_name = name.to_os_string();
        temp_name.push(format!(".tmp.{}", hex::encode(rnd)));
        let temp = parent_of(dest).join(temp_name);
        // O_EXCL: never write through a name someone else created (symlink or a concurrent writer).
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(PRIVATE_FILE_MODE)
            .open(&temp)
            .map_err(|e| FsError::new("creating", &temp, e))?;
        // Dropped with the descriptor, so a killed writer's file is free.
        file.lock_shared()
            .map_err(|e| FsError::new("locking", &temp, e))?;
        let mut df = DurableFile {
            file: Some(file),
            temp,
            dest: dest.to_path_buf(),
        };
        if mode != PRIVATE_FILE_MODE {
            df.file_mut()
                .set_permissions(fs::Permissions::from_mode(mode))
                .map_err(|e| FsError::new("setting permissions on", &df.temp, e))?;
        }
        Ok(df)
    }

    /// The temporary name being written.
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// The final name.
    pub fn dest_path(&self) -> &Path {
        &self.dest
    }

    pub(crate) fn file_ref(&self) -> &File {
        self.file
            .as_ref()
            .expect("file present until commit or drop")
    }

    fn file_mut(&mut self) -> &mut File {
        self.file
            .as_mut()
            .expect("file present until commit or drop")
    }

    /// fsyncs the data, moves it to its final name and fsyncs the directory.
    pub fn commit(mut self, replace: Replace) -> Result<(), FsError> {
        crate::failpoint!("fsutil.commit", |e| FsError::new("fsyncing", &self.temp, e));
        let file = self.file.take().expect("file present until commit or drop");
        file.sync_all()
            .map_err(|e| FsError::new("fsyncing", &self.temp, e))?;
        // Still open (and locked) while renamed: the temporary name is never free for a
        // cleaner to take while this writer lives.
        let result = match replace {
            Replace::Allow => fs::rename(&self.temp, &self.dest)
                .map_err(|e| FsError::new("renaming into place", &self.dest, e)),
            Replace::Refuse => self.link_no_clobber(),
        };
        drop(file);
        if result.is_err() {
            // Leave nothing behind; the caller sees the error for the destination.
            let _ = fs::remove_file(&self.temp);
        }
        // Either way the temp name is gone now (renamed or removed), so Drop has nothing to do.
        self.temp = PathBuf::new();
        result?;
        fsync_dir(parent_of(&self.dest))
    }

    /// link(2) fails atomically with EEXIST where rename(2) would silently replace.
    fn link_no_clobber(&self) -> Result<(), FsError> {
        match fs::hard_link(&self.temp, &self.dest) {
            Ok(()) => fs::remove_file(&self.temp)
                .map_err(|e| FsError::new("removing temporary", &self.temp, e)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Err(FsError::new("refusing to overwrite", &self.dest, e))
            }
            // Filesystems without hard links: check, then rename (not atomic against a racer).
            Err(_) => {
                if self.dest.symlink_metadata().is_ok() {
                    return Err(FsError::new(
                        "refusing to overwrite",
                        &self.dest,
                        io::ErrorKind::AlreadyExists.into(),
                    ));
                }
                fs::rename(&self.temp, &self.dest)
                    .map_err(|e| FsError::new("renaming into place", &self.dest, e))
            }
        }
    }
}

impl Write for DurableFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let temp = &self.temp;
        self.file
            .as_mut()
            .expect("file present until commit or drop")
            .write(buf)
            .map_err(|e| FsError::new("writing", temp, e).into_io())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for DurableFile {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            self.file.take();
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Renames `from` to `to` (files or directories) and fsyncs both parent directories, so the
/// new name survives a crash. Refuses to replace an existing `to`.
pub fn rename_durably(from: &Path, to: &Path) -> Result<(), FsError> {
    if fs::symlink_metadata(to).is_ok() {
        return Err(FsError::new(
            "renaming onto",
            to,
            io::Error::new(io::ErrorKind::AlreadyExists, "already exists"),
        ));
    }
    fs::rename(from, to).map_err(|e| FsError::new("renaming", from, e))?;
    fsync_dir(parent_of(to))?;
    if parent_of(from) != parent_of(to) {
        fsync_dir(parent_of(from))?;
    }
    Ok(())
}

/// Removes a directory tree and fsyncs its parent. A missing directory is not an error.
pub fn remove_dir_all_durably(path: &Path) -> Result<(), FsError> {
    match fs::remove_dir_all(path) {
        Ok(()) => fsync_dir(parent_of(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FsError::new("removing", path, e)),
    }
}

/// A private file (mode 0600) that is created under a temporary name, pre-sized, written in
/// place, and then *published* under its final name (replacing what was there, durably); it stays
/// open afterwards for more in-place writes, each made durable with [`PresizedFile::sync_data`].
/// `receive-wal` keeps the segment it is receiving in one. Dropped unpublished, the temporary
/// file is removed.
#[derive(Debug)]
pub struct PresizedFile {
    file: File,
    temp: PathBuf,
    dest: PathBuf,
    published: bool,
}

impl PresizedFile {
    /// Creates `<dest>.tmp.<random>` with `O_EXCL`, mode 0600, `len` bytes long (reading as zeros).
    pub fn create(dest: &Path, len: u64) -> Result<Self, FsError> {
        let df = DurableFile::create(dest)?;
        let temp = df.temp.clone();
        let mut df = df;
        let file = df.file.take().expect("file present until commit or drop");
        // The DurableFile no longer owns anything: make its Drop a no-op.
        df.temp = PathBuf::new();
        let f = PresizedFile {
            file,
            temp,
            dest: dest.to_path_buf(),
            published: false,
        };
        f.file
            .set_len(len)
            .map_err(|e| FsError::new("pre-sizing", &f.temp, e))?;
        Ok(f)
    }

    /// The name the file has now: the temporary one until published.
    pub fn path(&self) -> &Path {
        if self.published {
            &self.dest
        } else {
            &self.temp
        }
    }

    /// The current length of the file.
    pub fn len(&self) -> Result<u64, FsError> {
        self.file
            .metadata()
            .map(|m| m.len())
            .map_err(|e| FsError::new("reading the size of", self.path(), e))
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> Result<bool, FsError> {
        self.len().map(|n| n == 0)
    }

    /// Grows (or shrinks) the file. The new size is durable only after [`Self::sync_all`].
    pub fn set_len(&self, len: u64) -> Result<(), FsError> {
        self.file
            .set_len(len)
            .map_err(|e| FsError::new("resizing", self.path(), e))
    }

    /// Writes `buf` at `offset` (not durable until synced).
    pub fn write_all_at(&self, buf: &[u8], offset: u64) -> Result<(), FsError> {
        use std::os::unix::fs::FileExt;
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| FsError::new("writing", self.path(), e))
    }

    /// fdatasync: the data written so far survives a crash (the size did not change since the
    /// last [`Self::sync_all`], so no other metadata is needed).
    pub fn sync_data(&self) -> Result<(), FsError> {
        self.file
            .sync_data()
            .map_err(|e| FsError::new("fsyncing", self.path(), e))
    }

    /// fsync: data and metadata (use after [`Self::set_len`]).
    pub fn sync_all(&self) -> Result<(), FsError> {
        self.file
            .sync_all()
            .map_err(|e| FsError::new("fsyncing", self.path(), e))
    }

    /// fsyncs the file, renames it to its final name (replacing any file there) and fsyncs the
    /// directory: after a crash the final name holds either the old file or all of this one.
    pub fn publish(&mut self) -> Result<(), FsError> {
        if self.published {
            return Ok(());
        }
        self.sync_all()?;
        fs::rename(&self.temp, &self.dest)
            .map_err(|e| FsError::new("renaming into place", &self.dest, e))?;
        self.published = true;
        fsync_dir(parent_of(&self.dest))
    }
}

impl Drop for PresizedFile {
    fn drop(&mut self) {
        if !self.published {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn drop_without_commit_removes_temp() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a");
        {
            let mut f = DurableFile::create(&dest).unwrap();
            f.write_all(b"partial").unwrap();
            assert!(f.temp_path().exists());
            assert!(f
                .temp_path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("a.tmp."));
        }
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn commit_makes_private_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a");
        let mut f = DurableFile::create(&dest).unwrap();
        f.write_all(b"hello").unwrap();
        f.commit(Replace::Refuse).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"hello");
        assert_eq!(names(dir.path()), vec!["a"]);
        let mode = fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn refuse_keeps_existing_file_and_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a");
        write_file_durably(&dest, b"old", PRIVATE_FILE_MODE).unwrap();
        let err = write_new_file_durably(&dest, b"new", PRIVATE_FILE_MODE).unwrap_err();
        assert_eq!(err.source.kind(), io::ErrorKind::AlreadyExists);
        assert!(err.to_string().contains(&*dest.to_string_lossy()), "{err}");
        assert_eq!(fs::read(&dest).unwrap(), b"old");
        assert_eq!(names(dir.path()), vec!["a"]);
        write_file_durably(&dest, b"new", 0o640).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"new");
        let mode = fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
    }

    #[test]
    fn presized_file_publishes_over_the_old_one_and_keeps_writing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("p");
        write_file_durably(&dest, b"old", PRIVATE_FILE_MODE).unwrap();
        {
            let f = PresizedFile::create(&dest, 100).unwrap();
            f.write_all_at(b"abc", 0).unwrap();
            assert_eq!(fs::read(&dest).unwrap(), b"old");
        }
        assert_eq!(
            names(dir.path()),
            vec!["p"],
            "an unpublished file leaves nothing"
        );
        let mut f = PresizedFile::create(&dest, 100).unwrap();
        f.write_all_at(b"abc", 0).unwrap();
        f.publish().unwrap();
        f.write_all_at(b"de", 3).unwrap();
        f.sync_data().unwrap();
        let bytes = fs::read(&dest).unwrap();
        assert_eq!(bytes.len(), 100);
        assert_eq!(&bytes[..6], b"abcde\0");
        assert_eq!(names(dir.path()), vec!["p"]);
        let mode = fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        f.set_len(200).unwrap();
        f.sync_all().unwrap();
        assert_eq!(f.len().unwrap(), 200);
    }

    #[test]
    fn dirs_are_private_and_remove_works() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("x/y/z");
        create_dir_all_durably(&deep).unwrap();
        create_dir_all_durably(&deep).unwrap();
        let mode = fs::metadata(dir.path().join("x/y"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700);
        assert!(create_dir_durably(&deep).is_err());
        let f = deep.join("f");
        write_file_durably(&f, b"1", PRIVATE_FILE_MODE).unwrap();
        remove_durably(&f).unwrap();
        assert!(!f.exists());
        let err = remove_durably(&f).unwrap_err();
        assert!(err.to_string().contains("removing"), "{err}");
    }
}
