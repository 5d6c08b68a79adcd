//! The repository's WAL archive (`wal/`, docs/format.md section 8): complete segments,
//! `.partial` segments, timeline history files and backup history files, each stored once.
//!
//! Storing is idempotent, as archive_command must be: a name that is already stored succeeds
//! again when the content is the same and is a [`WalArchiveError::Conflict`] otherwise; nothing
//! is ever overwritten (a concurrent writer loses at [`FileSink::finish`], which refuses to
//! replace, and then compares). Fetching is what restore_command needs: the decrypted,
//! decompressed file, written durably; a segment that only exists as the newest `.partial` of its
//! timeline (in `wal/` or kept with a base backup) is served under its plain name, padded with
//! zeros, so recovery reaches the last byte received.
//!
//! Everything streams through fixed buffers: a segment is never held in memory.

mod check;
mod error;
mod fetch;
mod list;
mod name;
mod spool;
#[cfg(test)]
mod spool_tests;
mod store;
#[cfg(test)]
mod tests;

use std::io::{self, Read};

use crate::layout;
use crate::repo::Repository;
use crate::wal::{SegmentName, WalFileName, WalSegmentSize};
pub use check::segment_cluster;
pub use error::WalArchiveError;
pub(crate) use fetch::longest_backup_partial;
pub use name::ArchiveFileName;
pub use spool::{Prefetched, Spool};

const BUFFER: usize = 64 * 1024;
/// History and backup history files are a few lines; anything this large is not one.
const MAX_TEXT_FILE: u64 = 1024 * 1024;

/// What [`WalArchive::store`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    /// The file is now in the archive.
    Stored,
    /// The archive already held the same content under that name.
    AlreadyPresent,
}

/// What [`WalArchive::fetch`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// The archived file, as stored (`stored` is its repository name).
    Archived { stored: String },
    /// A segment served from a partial copy (`stored`), holding `bytes` bytes of WAL and padded
    /// with zeros to the segment size.
    FromPartial { stored: String, bytes: u64 },
}

/// One segment in the archive, as listed by [`WalArchive::list_segments`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedSegment {
    pub name: SegmentName,
    /// A `.partial` segment (incomplete) rather than a complete one.
    pub partial: bool,
    /// Its repository name.
    pub stored: String,
}

/// The WAL archive of one repository.
#[derive(Debug)]
pub struct WalArchive<'a> {
    repo: &'a Repository,
}

impl<'a> WalArchive<'a> {
    pub fn new(repo: &'a Repository) -> WalArchive<'a> {
        WalArchive { repo }
    }

    /// The segment size of the cluster the repository is bound to (`None` while unbound: then
    /// the archive holds no segments).
    pub fn segment_size(&self) -> Option<WalSegmentSize> {
        self.repo
            .cluster()
            .and_then(|c| WalSegmentSize::new(u64::from(c.wal_segment_size)).ok())
    }

    /// The repository name `file` is stored under.
    pub fn stored_name(&self, file: &ArchiveFileName) -> String {
        let codec = self.repo.codec();
        match file {
            ArchiveFileName::Wal(WalFileName::Segment(s)) => layout::wal_segment_file(s, codec),
            ArchiveFileName::Wal(WalFileName::Partial(s)) => format!(
                "{}/{}{}",
                layout::wal_segment_dir(s),
                s.partial_name(),
                layout::suffix(codec)
            ),
            ArchiveFileName::Wal(WalFileName::History(t)) => layout::history_file(t.0, codec),
            ArchiveFileName::BackupHistory { segment, name } => format!(
                "{}/{name}{}",
                layout::wal_segment_dir(segment),
                layout::suffix(codec)
            ),
        }
    }
}

/// One `read`, retried on EINTR.
fn read_some(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Reads until `buf` is full or the stream ends.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match read_some(r, &mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
