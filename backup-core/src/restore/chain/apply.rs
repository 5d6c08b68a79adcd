//! One archive of one backup of a chain, applied to the restored directory as it streams.
//!
//! Backups are applied oldest first, so every file is complete once the last backup has been
//! applied; nothing is written twice except changed blocks, and no intermediate full copy of
//! anything exists:
//! - a whole file is written only from the backup holding its newest whole version (the plan);
//!   files the last backup does not have are never written at all;
//! - an `INCREMENTAL.<name>` of a later backup writes its blocks into `<name>` at their offsets.
//!   The last backup's truncation length is applied before its blocks: the file is cut to it
//!   and extended with zeros to its block length. Earlier backups' truncation lengths are not
//!   applied, because pg_combinebackup's result does not depend on them: a block below the
//!   last backup's truncation length and in no incremental version comes from the newest whole
//!   version whenever that has it, whatever the backups in between said;
//! - directories, tablespace links and `backup_label` come from the last backup only (the
//!   label without its `INCREMENTAL FROM` lines).
//!
//! Each file's CRC-32C is kept up to date as it is written, for the manifest written at the
//! end: a replaced block changes it by the shifted difference of the old and new blocks'
//! CRCs (crc/shift.rs), so only the old version of each changed block is read back. A file cut
//! short is read back whole once at the end instead.
//!
//! As in extract.rs, nothing is written outside the roots, no path goes through a link, and
//! every file and directory is fsynced before [`Applier::finish`] returns.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::output::{strip_label, IncrementalFrom};
use super::ChainRestoreError;
use crate::crc::shift::CrcShift;
use crate::crc::Crc32c;
use crate::restore::extract::syncer::Syncer;
use crate::restore::incremental_file::{
    reconstructed_path, BlockGeometry, IncrementalHeader, INCREMENTAL_PREFIX,
};

/// Bytes copied per read/write of a whole file.
const COPY_BUFFER: usize = 256 * 1024;
/// backup_label is a few hundred bytes; pg_combinebackup refuses more than 10000 + MAXPGPATH.
const MAX_LABEL: u64 = 64 * 1024;

/// A file written so far.
#[derive(Debug, Clone, Copy)]
pub(super) struct FileState {
    pub len: u64,
    /// `None`: to be computed from the file at the end (it was cut short).
    pub crc: Option<u32>,
}

/// One archive of one backup.
#[derive(Debug, Clone)]
pub(super) struct Pass {
    /// The backup's index in the chain (0: the full backup).
    pub index: usize,
    pub backup: String,
    /// The archive's name, for errors.
    pub archive: String,
    /// Where its members go: the data directory or the tablespace's location.
    pub root: PathBuf,
    /// What the manifest puts before its members' names (`pg_tblspc/<oid>/`, or nothing).
    pub prefix: String,
    /// What the backup's label must say it is incremental from (`None`: a full backup).
    pub expect_from: Option<IncrementalFrom>,
}

/// The state of a chain restore between archives.
pub(super) struct Applier {
    /// Manifest path → the chain index of the backup holding its newest whole version.
    base: HashMap<Vec<u8>, usize>,
    geometry: BlockGeometry,
    last: usize,
    /// The data directory.
    target: PathBuf,
    /// Tablespace OID → where it is restored.
    tablespaces: BTreeMap<u32, PathBuf>,
    files: HashMap<Vec<u8>, FileState>,
    created_dirs: BTreeSet<PathBuf>,
    syncer: Syncer,
    shift: CrcShift,
    zero_block_crc: u32,
    buf: Vec<u8>,
    old: Vec<u8>,
}

impl Applier {
    pub fn new(
        base: HashMap<Vec<u8>, usize>,
        geometry: BlockGeometry,
        last: usize,
        target: PathBuf,
        tablespaces: BTreeMap<u32, PathBuf>,
    ) -> Applier {
        let shift = CrcShift::new();
        let block = u64::from(geometry.block_size);
        let roots = std::iter::once(target.clone()).chain(tablespaces.values().cloned());
        Applier {
            zero_block_crc: shift.zeros(block),
            created_dirs: roots.collect(),
            base,
            geometry,
            last,
            target,
            tablespaces,
            files: HashMap::new(),
            syncer: Syncer::default(),
            shift,
            buf: Vec::new(),
            old: Vec::new(),
        }
    }

    /// Applies every member of the tar stream `input`.
    pub fn apply(&mut self, pass: &Pass, input: impl Read) -> Result<(), ChainRestoreError> {
        let read_err = |source| ChainRestoreError::Read {
            archive: pass.archive.clone(),
            source,
        };
        let mut archive = tar::Archive::new(input);
        for entry in archive.entries().map_err(read_err)? {
            let mut entry = entry.map_err(read_err)?;
            let raw = entry.path().map_err(read_err)?.into_owned();
            let member = raw.to_string_lossy().into_owned();
            let rel = checked_relative(&raw).map_err(|reason| refused(pass, &member, reason))?;
            let mut key = pass.prefix.as_bytes().to_vec();
            key.extend_from_slice(rel.as_os_str().as_bytes());
            let kind = entry.header().entry_type();
            let is_last = pass.index == self.last;
            if kind.is_dir() {
                if is_last {
                    self.make_dirs(&pass.root, &rel)?;
                }
            } else if kind.is_symlink() {
                if is_last {
                    let target = entry
                        .link_name()
                        .map_err(read_err)?
                        .ok_or_else(|| refused(pass, &member, "symbolic link without a target"))?
                        .into_owned();
                    self.tablespace_link(pass, &rel, &member, target)?;
                }
            } else if kind.is_file() {
                self.file(pass, &mut entry, rel, key, &member)?;
            } else if !matches!(
                kind,
                tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
            ) {
                return Err(refused(
                    pass,
                    &member,
                    "not a regular file, directory or tablespace link",
                ));
            }
        }
        Ok(())
    }

    fn file(
        &mut self,
        pass: &Pass,
        entry: &mut tar::Entry<impl Read>,
        rel: PathBuf,
        key: Vec<u8>,
        member: &str,
    ) -> Result<(), ChainRestoreError> {
        let mode = entry.header().mode().unwrap_or(0o600);
        if key == b"backup_label" {
            return self.label(pass, entry, &rel, mode);
        }
        if let Some(whole) = std::str::from_utf8(&key).ok().and_then(reconstructed_path) {
            return match self.base.get(whole.as_bytes()).copied() {
                // Superseded by a later whole version, or not in the restored directory.
                Some(base) if base > pass.index => Ok(()),
                None if pass.index < self.last => Ok(()),
                Some(base) if base < pass.index => {
                    let name = rel
                        .file_name()
                        .and_then(|n| n.to_str())
                        .and_then(|n| n.strip_prefix(INCREMENTAL_PREFIX))
                        .map(|bare| rel.with_file_name(bare))
                        .ok_or_else(|| refused(pass, member, "not an incremental file name"))?;
                    self.patch(pass, entry, &name, whole.into_bytes(), member)
                }
                _ => Err(ChainRestoreError::Broken {
                    backup: pass.backup.clone(),
                    file: whole,
                    why: "its archive holds an incremental version where its manifest or the \
                          chain's plan needs a whole one"
                        .into(),
                }),
            };
        }
        let wanted = match self.base.get(&key) {
            Some(&base) => base == pass.index,
            // Not in the last manifest: written only if the last backup has it anyway.
            None => pass.index == self.last,
        };
        if !wanted {
            return Ok(());
        }
        self.write_whole(&pass.root, &rel, entry, mode, key)
    }

    /// A backup's label: checked against the chain; the last one's written without its
    /// incremental lines.
    fn label(
        &mut self,
        pass: &Pass,
        entry: &mut impl Read,
        rel: &Path,
        mode: u32,
    ) -> Result<(), ChainRestoreError> {
        let bad = |why: String| ChainRestoreError::Label {
            backup: pass.backup.clone(),
            why,
        };
        let mut label = Vec::new();
        entry
            .take(MAX_LABEL + 1)
            .read_to_end(&mut label)
            .map_err(|source| ChainRestoreError::Read {
                archive: pass.archive.clone(),
                source,
            })?;
        if label.len() as u64 > MAX_LABEL {
            return Err(bad("backup_label is larger than 64 kB".into()));
        }
        let (kept, from) = strip_label(&label).map_err(bad)?;
        if from != pass.expect_from {
            let show = |f: Option<IncrementalFrom>| match f {
                Some(f) => format!("incremental from {} on timeline {}", f.lsn, f.timeline),
                None => "a full backup".into(),
            };
            return Err(bad(format!(
                "its backup_label says {}, the chain needs {}",
                show(from),
                show(pass.expect_from)
            )));
        }
        if pass.index == self.last {
            self.write_whole(
                &pass.root,
                rel,
                &mut kept.as_slice(),
                mode,
                b"backup_label".to_vec(),
            )?;
        }
        Ok(())
    }

    fn write_whole(
        &mut self,
        root: &Path,
        rel: &Path,
        content: &mut impl Read,
        mode: u32,
        key: Vec<u8>,
    ) -> Result<(), ChainRestoreError> {
        if let Some(parent) = rel.parent() {
            self.make_dirs(root, parent)?;
        }
        let path = root.join(rel);
        let write_err = |source| ChainRestoreError::Write {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(write_err)?;
        if self.buf.len() < COPY_BUFFER {
            self.buf = vec![0u8; COPY_BUFFER];
        }
        let mut crc = Crc32c::new();
        let mut len = 0u64;
        loop {
            let n = match content.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(ChainRestoreError::Read {
                        archive: path.display().to_string(),
                        source,
                    })
                }
            };
            file.write_all(&self.buf[..n]).map_err(write_err)?;
            crc.update(&self.buf[..n]);
            len += n as u64;
        }
        file.set_permissions(fs::Permissions::from_mode((mode & 0o700).max(0o600)))
            .map_err(write_err)?;
        self.syncer
            .file(file, path.clone())
            .map_err(ChainRestoreError::from)?;
        self.files.insert(
            key,
            FileState {
                len,
                crc: Some(crc.value()),
            },
        );
        Ok(())
    }

    /// Writes the blocks of an incremental file into the file it stands for.
    fn patch(
        &mut self,
        pass: &Pass,
        entry: &mut tar::Entry<impl Read>,
        rel: &Path,
        key: Vec<u8>,
        member: &str,
    ) -> Result<(), ChainRestoreError> {
        let geometry = self.geometry;
        let header = IncrementalHeader::read(entry, entry.size(), geometry).map_err(|source| {
            ChainRestoreError::Incremental {
                archive: pass.archive.clone(),
                member: member.to_string(),
                source,
            }
        })?;
        let Some(&state) = self.files.get(&key) else {
            return Err(ChainRestoreError::Broken {
                backup: pass.backup.clone(),
                file: String::from_utf8_lossy(&key).into_owned(),
                why: "no earlier backup of the chain supplied the file its incremental version \
                      applies to"
                    .into(),
            });
        };
        let last = pass.index == self.last;
        if header.blocks.is_empty()
            && (!last
                || state.len
                    == u64::from(header.truncation_blocks) * u64::from(geometry.block_size))
        {
            return Ok(()); // nothing changed
        }
        if let Some(parent) = rel.parent() {
            self.make_dirs(&pass.root, parent)?;
        }
        let path = pass.root.join(rel);
        let write_err = |source| ChainRestoreError::Write {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(write_err)?;
        let block = u64::from(geometry.block_size);
        let (mut len, mut crc) = (state.len, state.crc);
        // Content at and past this offset is known to be zeros (a hole we just made).
        let mut zero_from = len;
        if last {
            let truncation = u64::from(header.truncation_blocks) * block;
            if len > truncation {
                file.set_len(truncation).map_err(write_err)?;
                len = truncation;
                crc = None;
            }
            let length = u64::from(header.block_length()) * block;
            if length > len {
                file.set_len(length).map_err(write_err)?;
                crc = crc.map(|c| {
                    self.shift
                        .combine(c, self.shift.zeros(length - len), length - len)
                });
                zero_from = len;
                len = length;
            }
        }
        self.buf.resize(block as usize, 0);
        self.old.resize(block as usize, 0);
        for &b in &header.blocks {
            entry
                .read_exact(&mut self.buf)
                .map_err(|source| ChainRestoreError::Read {
                    archive: pass.archive.clone(),
                    source,
                })?;
            let offset = u64::from(b) * block;
            let new = crc32(&self.buf);
            crc = match crc {
                None => None,
                Some(c) if offset >= len => {
                    let gap = offset - len;
                    let c = self.shift.combine(c, self.shift.zeros(gap), gap);
                    Some(self.shift.combine(c, new, block))
                }
                Some(c) if offset + block <= len => {
                    let old = if offset >= zero_from {
                        self.zero_block_crc
                    } else {
                        file.read_exact_at(&mut self.old, offset)
                            .map_err(write_err)?;
                        crc32(&self.old)
                    };
                    Some(c ^ self.shift.shift(old ^ new, len - offset - block))
                }
                Some(_) => None,
            };
            file.write_all_at(&self.buf, offset).map_err(write_err)?;
            len = len.max(offset + block);
        }
        self.syncer
            .file(file, path.clone())
            .map_err(ChainRestoreError::from)?;
        self.files.insert(key, FileState { len, crc });
        Ok(())
    }

    /// Creates `rel` and its parents below `root`, never passing through anything that is not
    /// a real directory (as extract.rs does).
    fn make_dirs(&mut self, root: &Path, rel: &Path) -> Result<(), ChainRestoreError> {
        let mut path = root.to_path_buf();
        for part in rel.components() {
            path.push(part);
            if self.created_dirs.contains(&path) {
                continue;
            }
            match fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_dir() => {}
                Ok(_) => {
                    return Err(ChainRestoreError::Write {
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
                        .map_err(|source| ChainRestoreError::Write {
                            path: path.clone(),
                            source,
                        })?;
                }
                Err(source) => return Err(ChainRestoreError::Write { path, source }),
            }
            self.created_dirs.insert(path.clone());
        }
        Ok(())
    }

    /// `pg_tblspc/<oid>` of the last backup's main archive, pointing where that tablespace is
    /// restored.
    fn tablespace_link(
        &mut self,
        pass: &Pass,
        rel: &Path,
        member: &str,
        original: PathBuf,
    ) -> Result<(), ChainRestoreError> {
        let mut parts = rel.components();
        let oid = match (
            pass.prefix.is_empty(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (true, Some(Component::Normal(dir)), Some(Component::Normal(oid)), None)
                if dir == "pg_tblspc" =>
            {
                oid.to_str().and_then(|s| s.parse::<u32>().ok())
            }
            _ => None,
        }
        .ok_or_else(|| {
            refused(
                pass,
                member,
                "symbolic link outside pg_tblspc/<oid> (only tablespace links are restored)",
            )
        })?;
        let target = self.tablespaces.get(&oid).cloned().unwrap_or(original);
        self.make_dirs(&pass.root, Path::new("pg_tblspc"))?;
        let path = pass.root.join(rel);
        std::os::unix::fs::symlink(&target, &path)
            .map_err(|source| ChainRestoreError::Write { path, source })
    }

    /// Where the file with manifest path `key` is.
    fn disk_path(&self, key: &[u8]) -> PathBuf {
        let path = Path::new(std::ffi::OsStr::from_bytes(key));
        let mut parts = path.components();
        if let (Some(Component::Normal(dir)), Some(Component::Normal(oid))) =
            (parts.next(), parts.next())
        {
            if let Some(root) = (dir == "pg_tblspc")
                .then(|| oid.to_str().and_then(|o| o.parse::<u32>().ok()))
                .flatten()
                .and_then(|oid| self.tablespaces.get(&oid))
            {
                return root.join(parts.as_path());
            }
        }
        self.target.join(path)
    }

    /// Waits until everything is durable, computes the CRCs still unknown, and returns every
    /// file written, by manifest path.
    pub fn finish(mut self) -> Result<HashMap<Vec<u8>, FileState>, ChainRestoreError> {
        for dir in std::mem::take(&mut self.created_dirs) {
            self.syncer.dir(dir)?;
        }
        std::mem::take(&mut self.syncer).finish()?;
        let unknown: Vec<Vec<u8>> = self
            .files
            .iter()
            .filter(|(_, s)| s.crc.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        for key in unknown {
            let path = self.disk_path(&key);
            let crc = read_back(&path, &mut self.buf)?;
            if let Some(state) = self.files.get_mut(&key) {
                state.crc = Some(crc);
            }
        }
        Ok(self.files)
    }
}

/// The CRC-32C of a file, read whole.
fn read_back(path: &Path, buf: &mut Vec<u8>) -> Result<u32, ChainRestoreError> {
    let read_err = |source| ChainRestoreError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    buf.resize(COPY_BUFFER, 0);
    let mut crc = Crc32c::new();
    loop {
        match file.read(buf) {
            Ok(0) => return Ok(crc.value()),
            Ok(n) => crc.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_err(e)),
        }
    }
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = Crc32c::new();
    c.update(data);
    c.value()
}

fn refused(pass: &Pass, member: &str, reason: &'static str) -> ChainRestoreError {
    ChainRestoreError::Refused {
        archive: pass.archive.clone(),
        member: member.to_string(),
        reason,
    }
}

/// The member's path as plain components below its root.
fn checked_relative(path: &Path) -> Result<PathBuf, &'static str> {
    let mut rel = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => rel.push(part),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err("absolute path"),
            Component::ParentDir => return Err("path contains '..'"),
        }
    }
    if rel.as_os_str().is_empty() {
        return Err("empty path");
    }
    Ok(rel)
}
