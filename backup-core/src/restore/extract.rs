//! Unpacking a base-backup tar archive into a directory, safely.
//!
//! The archives come from our own repository and are authenticated before they reach here, but
//! the extractor still refuses anything a PostgreSQL base backup never contains, so a damaged or
//! crafted archive cannot write outside the target: absolute paths, `..` components, hard
//! links, device files, and symbolic links other than the tablespace links in `pg_tblspc/`.
//! Paths are never followed through symbolic links the archive created (tablespace links are
//! resolved by the caller, which extracts each tablespace archive into its own location).
//!
//! Every file and directory is fsynced before [`Extractor::finish`] returns, so a restore that
//! reports success survives a crash; the fsyncs run on helper threads meanwhile (syncer.rs).

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

pub(crate) mod syncer;
use syncer::Syncer;

/// Bytes copied per read/write of a member's content (std's `io::copy` moves 8 KiB at a time).
const COPY_BUFFER: usize = 256 * 1024;

/// Why an archive could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("reading archive {archive}: {source}")]
    Read {
        archive: String,
        #[source]
        source: io::Error,
    },
    #[error("archive {archive}: refusing member {member:?}: {reason}")]
    Refused {
        archive: String,
        member: String,
        reason: &'static str,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("archive {archive}: refusing tablespace link {member:?}: {source}")]
    UnsafeLink {
        archive: String,
        member: String,
        #[source]
        source: crate::tablespace::UnsafeLocation,
    },
}

/// A tablespace link found in the main archive (`pg_tblspc/<oid>` → location).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablespaceLink {
    pub oid: u32,
    /// Where the link pointed on the source server.
    pub original_target: PathBuf,
}

/// What one archive held.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExtractSummary {
    pub files: u64,
    pub bytes: u64,
    pub directories: u64,
    pub tablespace_links: Vec<TablespaceLink>,
}

/// Unpacks archives into one root directory, tracking what it created so it can fsync it all.
pub struct Extractor {
    root: PathBuf,
    archive: String,
    /// Decides where a tablespace link points in the restored cluster.
    map_tablespace: Box<dyn Fn(&TablespaceLink) -> PathBuf + Send>,
    created_dirs: BTreeSet<PathBuf>,
    summary: ExtractSummary,
    fsync: bool,
    syncer: Syncer,
    buf: Vec<u8>,
}

impl Extractor {
    /// An extractor writing under `root`, which must exist and be empty (checked by the
    /// caller). `archive` names the archive in errors.
    pub fn new(
        root: impl Into<PathBuf>,
        archive: impl Into<String>,
        map_tablespace: Box<dyn Fn(&TablespaceLink) -> PathBuf + Send>,
    ) -> Self {
        let root = root.into();
        let mut created_dirs = BTreeSet::new();
        created_dirs.insert(root.clone());
        Extractor {
            root,
            archive: archive.into(),
            map_tablespace,
            created_dirs,
            summary: ExtractSummary::default(),
            fsync: true,
            syncer: Syncer::default(),
            buf: Vec::new(),
        }
    }

    /// Skips fsync (tests only: durability is the default).
    pub fn without_fsync(mut self) -> Self {
        self.fsync = false;
        self
    }

    /// Unpacks every member of the tar stream `input`.
    pub fn unpack(&mut self, input: impl Read) -> Result<(), ExtractError> {
        let read_err = |archive: &str, source| ExtractError::Read {
            archive: archive.to_string(),
            source,
        };
        let mut archive = tar::Archive::new(input);
        let entries = archive.entries().map_err(|e| read_err(&self.archive, e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| read_err(&self.archive, e))?;
            let raw_path = entry
                .path()
                .map_err(|e| read_err(&self.archive, e))?
                .into_owned();
            let member = raw_path.to_string_lossy().into_owned();
            let rel = self.checked_relative(&raw_path, &member)?;
            let kind = entry.header().entry_type();
            let mode = entry.header().mode().unwrap_or(0o600) & 0o777;
            if kind.is_dir() {
                self.make_dirs(&rel)?;
            } else if kind.is_file() {
                if let Some(parent) = rel.parent() {
                    self.make_dirs(parent)?;
                }
                let written = self.write_file(&rel, &mut entry, mode)?;
                self.summary.files += 1;
                self.summary.bytes += written;
            } else if kind.is_symlink() {
                let target = entry
                    .link_name()
                    .map_err(|e| read_err(&self.archive, e))?
                    .ok_or_else(|| self.refused(&member, "symbolic link without a target"))?
                    .into_owned();
                self.tablespace_link(&rel, &member, target)?;
            } else if matches!(
                kind,
                tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
            ) {
                // pax headers are applied by the tar reader itself.
            } else {
                return Err(
                    self.refused(&member, "not a regular file, directory or tablespace link")
                );
            }
        }
        Ok(())
    }

    /// Fsyncs every directory created, waits until every file is durable too, and returns
    /// what was unpacked.
    pub fn finish(mut self) -> Result<ExtractSummary, ExtractError> {
        if self.fsync {
            for dir in std::mem::take(&mut self.created_dirs) {
                self.syncer.dir(dir)?;
            }
        }
        self.syncer.finish()?;
        Ok(self.summary)
    }

    fn refused(&self, member: &str, reason: &'static str) -> ExtractError {
        ExtractError::Refused {
            archive: self.archive.clone(),
            member: member.to_string(),
            reason,
        }
    }

    /// The member's path as plain components below the root.
    fn checked_relative(&self, path: &Path, member: &str) -> Result<PathBuf, ExtractError> {
        let mut rel = PathBuf::new();
        for c in path.components() {
            match c {
                Component::Normal(part) => rel.push(part),
                Component::CurDir => {}
                Component::RootDir | Component::Prefix(_) => {
                    return Err(self.refused(member, "absolute path"))
                }
                Component::ParentDir => return Err(self.refused(member, "path contains '..'")),
            }
        }
        if rel.as_os_str().is_empty() {
            return Err(self.refused(member, "empty path"));
        }
        Ok(rel)
    }

    /// Creates `rel` and its parents below the root, refusing to pass through anything that is
    /// not a directory we created or found as a real directory (never a symbolic link).
    fn make_dirs(&mut self, rel: &Path) -> Result<(), ExtractError> {
        let mut path = self.root.clone();
        for part in rel.components() {
            path.push(part);
            if self.created_dirs.contains(&path) {
                continue;
            }
            match fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_dir() => {}
                Ok(_) => {
                    return Err(ExtractError::Write {
                        path: path.clone(),
                        source: io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            "exists and is not a directory",
                        ),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::DirBuilder::new()
                        .mode(0o700)
                        .create(&path)
                        .map_err(|source| ExtractError::Write {
                            path: path.clone(),
                            source,
                        })?;
                    self.summary.directories += 1;
                }
                Err(source) => return Err(ExtractError::Write { path, source }),
            }
            self.created_dirs.insert(path.clone());
        }
        Ok(())
    }

    fn write_file(
        &mut self,
        rel: &Path,
        content: &mut impl Read,
        mode: u32,
    ) -> Result<u64, ExtractError> {
        let path = self.root.join(rel);
        let write_err = |source| ExtractError::Write {
            path: path.clone(),
            source,
        };
        // create_new + O_NOFOLLOW: never overwrite, never write through a link.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(write_err)?;
        if self.buf.is_empty() {
            self.buf = vec![0u8; COPY_BUFFER];
        }
        let mut written = 0u64;
        loop {
            let n = match content.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The archive's read errors name the archive, not the file being written.
                Err(source) => {
                    return Err(ExtractError::Read {
                        archive: self.archive.clone(),
                        source,
                    })
                }
            };
            file.write_all(&self.buf[..n]).map_err(write_err)?;
            written += n as u64;
        }
        // PostgreSQL wants its files private; keep the owner bits the server had.
        let mode = (mode & 0o700).max(0o600);
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(write_err)?;
        if self.fsync {
            self.syncer.file(file, path)?;
        }
        Ok(written)
    }

    fn tablespace_link(
        &mut self,
        rel: &Path,
        member: &str,
        original_target: PathBuf,
    ) -> Result<(), ExtractError> {
        let mut parts = rel.components();
        let oid = match (parts.next(), parts.next(), parts.next()) {
            (Some(Component::Normal(dir)), Some(Component::Normal(oid)), None)
                if dir == "pg_tblspc" =>
            {
                oid.to_str().and_then(|s| s.parse::<u32>().ok())
            }
            _ => None,
        }
        .ok_or_else(|| {
            self.refused(
                member,
                "symbolic link outside pg_tblspc/<oid> (only tablespace links are restored)",
            )
        })?;
        let link = TablespaceLink {
            oid,
            original_target,
        };
        let target = (self.map_tablespace)(&link);
        // The archive's own target stands when the record does not know the oid.
        crate::tablespace::check(&target).map_err(|source| ExtractError::UnsafeLink {
            archive: self.archive.clone(),
            member: member.to_string(),
            source,
        })?;
        self.make_dirs(Path::new("pg_tblspc"))?;
        let path = self.root.join(rel);
        std::os::unix::fs::symlink(&target, &path).map_err(|source| ExtractError::Write {
            path: path.clone(),
            source,
        })?;
        self.summary.tablespace_links.push(link);
        Ok(())
    }
}

/// Fsyncs a directory so the entries created in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), ExtractError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| ExtractError::Write {
            path: dir.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests;
