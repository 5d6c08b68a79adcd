//! The prefetch spool of `wal-fetch` (restore_command), after pgBackRest's asynchronous
//! archive-get: opening the repository derives its key with scrypt (~0.07 s), too much to pay
//! once per 16 MB segment during recovery. So when `wal-fetch` serves a complete segment from the
//! repository, it also writes the next segments of the same timeline into the spool directory
//! (one key derivation for several segments), and the next calls serve them by a rename, without
//! opening the repository.
//!
//! Only complete segments are spooled, read exactly as [`WalArchive::fetch`] serves them
//! (authenticated, length-checked): never a partial copy, which can still grow. A segment missing
//! from the repository ends prefetching, and a damaged one is passed over, so the server's own
//! request for it reaches the repository and fails there as it would without a spool.
//!
//! Entries are `<segment>.prefetched`, written through [`DurableFile`] (a temporary name, then
//! rename); the spool only ever removes names of that form (and their temporaries), so a spool
//! directory given by mistake loses nothing else.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{ArchiveFileName, WalArchive};
use crate::fsutil::{self, DurableFile, FsError, Replace};
use crate::wal::{SegmentName, WalFileName};

/// Suffix of a spooled segment.
const SUFFIX: &str = ".prefetched";
/// Length of a WAL segment file name.
const SEGMENT_NAME_LEN: usize = 24;

/// What [`Spool::prefetch`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Prefetched {
    /// Segments written into the spool by this call.
    pub written: usize,
    /// Segments already spooled by an earlier call.
    pub already: usize,
    /// A segment that could not be read (it is left to the server's own request, which fails
    /// as it would without a spool).
    pub failed: Option<(String, String)>,
}

/// A spool directory holding at most `depth` prefetched segments.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
    depth: u32,
}

impl Spool {
    /// `depth` 0 disables the spool: nothing is served from it or written to it.
    pub fn new(dir: impl Into<PathBuf>, depth: u32) -> Spool {
        Spool {
            dir: dir.into(),
            depth,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry(&self, segment: &str) -> PathBuf {
        self.dir.join(format!("{segment}{SUFFIX}"))
    }

    /// Serves segment `name` (restore_command's `%f`) from the spool into `dest`, if it is
    /// spooled, and removes the spooled segments that come before it. `Ok(false)`: not spooled
    /// (history files and `.partial` names never are); the repository must serve it.
    pub fn take(&self, name: &str, dest: &Path) -> Result<bool, FsError> {
        if self.depth == 0 || !is_segment_name(name) {
            return Ok(false);
        }
        let from = self.entry(name);
        let served = match fs::rename(&from, dest) {
            Ok(()) => {
                fsutil::fsync_dir(parent_of(dest))?;
                true
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            // The spool on another file system than pg_wal/: a durable copy instead.
            Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
                copy_durably(&from, dest)?;
                fsutil::remove_durably(&from)?;
                true
            }
            Err(e) => return Err(FsError::new("renaming", &from, e)),
        };
        if served {
            // Recovery moves forward: what sorts before the requested segment is not asked again.
            self.remove_entries(|seg| position(seg) <= position(name))?;
        }
        Ok(served)
    }

    /// After `served` was fetched from the repository: spools the next `depth` complete segments
    /// of its timeline that the archive holds, stopping at the first one it does not hold, and
    /// removes every other spooled segment (the spool never holds more than `depth`).
    pub fn prefetch(
        &self,
        archive: &WalArchive<'_>,
        served: &SegmentName,
    ) -> Result<Prefetched, FsError> {
        let mut out = Prefetched::default();
        if self.depth == 0 {
            return Ok(out);
        }
        let window: Vec<SegmentName> = (1..=u64::from(self.depth))
            .map(|i| SegmentName::new(served.timeline, served.segno + i, served.seg_size))
            .collect();
        let names: Vec<String> = window.iter().map(|s| s.to_string()).collect();
        self.remove_entries(|seg| !names.iter().any(|n| n == seg))?;
        fsutil::create_dir_all_durably(&self.dir)?;
        for (segment, name) in window.iter().zip(&names) {
            let dest = self.entry(name);
            if dest.exists() {
                out.already += 1;
                continue;
            }
            let stored = archive.stored_name(&ArchiveFileName::Wal(WalFileName::Segment(*segment)));
            match archive.repo.store().head(&stored) {
                Ok(Some(_)) => {}
                // Not archived (yet): the server's request will find out, as without a spool.
                _ => break,
            }
            match archive.copy_out(&stored, &dest, Some(segment.seg_size.bytes()), None) {
                Ok(_) => out.written += 1,
                Err(e) => {
                    // copy_out commits only a complete, checked file; its temporary is gone.
                    out.failed = Some((name.clone(), e.to_string()));
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Removes the spooled segments (and leftover temporaries) whose segment name `doomed`
    /// picks. A missing spool directory holds nothing.
    fn remove_entries(&self, doomed: impl Fn(&str) -> bool) -> Result<(), FsError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(FsError::new("listing", &self.dir, e)),
        };
        let mut removed = false;
        for entry in entries {
            let entry = entry.map_err(|e| FsError::new("listing", &self.dir, e))?;
            let file_name = entry.file_name();
            let Some((seg, temporary)) = file_name.to_str().and_then(spooled_segment) else {
                continue;
            };
            // A temporary is a killed wal-fetch's: the server runs one restore_command at a time.
            if temporary || doomed(seg) {
                match fs::remove_file(entry.path()) {
                    Ok(()) => removed = true,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(FsError::new("removing", &entry.path(), e)),
                }
            }
        }
        if removed {
            fsutil::fsync_dir(&self.dir)?;
        }
        Ok(())
    }
}

/// The segment a spool entry (`<segment>.prefetched`, or its `.tmp.*` temporary: `true`) holds.
fn spooled_segment(file_name: &str) -> Option<(&str, bool)> {
    let seg = file_name.get(..SEGMENT_NAME_LEN)?;
    let rest = file_name[SEGMENT_NAME_LEN..].strip_prefix(SUFFIX)?;
    let temporary = rest.starts_with(".tmp.");
    ((rest.is_empty() || temporary) && is_segment_name(seg)).then_some((seg, temporary))
}

/// A plain segment name: 24 upper-case hex digits.
fn is_segment_name(name: &str) -> bool {
    name.len() == SEGMENT_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

/// Where a segment lies in the WAL, whatever its timeline: with one segment size, the log and
/// segment digits sort in WAL order.
fn position(segment: &str) -> &str {
    &segment[8..]
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn copy_durably(from: &Path, dest: &Path) -> Result<(), FsError> {
    let mut src = fs::File::open(from).map_err(|e| FsError::new("opening", from, e))?;
    let mut out = DurableFile::create(dest)?;
    io::copy(&mut src, &mut out).map_err(|e| FsError::new("copying into", dest, e))?;
    out.flush().map_err(|e| FsError::new("writing", dest, e))?;
    out.commit(Replace::Allow)
}
