//! Fetching from the archive for restore_command: decrypted, durably written, and a segment
//! that only exists as a partial copy served padded with zeros.

use std::io::{Read, Write};
use std::path::Path;

use super::{read_some, ArchiveFileName, FetchOutcome, WalArchive, WalArchiveError, BUFFER};
use crate::catalog::CatalogError;
use crate::fsutil::{DurableFile, FsError, Replace};
use crate::layout;
use crate::repo::Repository;
use crate::wal::{SegmentName, WalFileName, WalSegmentSize};

impl WalArchive<'_> {
    /// Writes archived file `name` (as restore_command's `%f` names it) to `dest`, decrypted and
    /// decompressed, durably (temporary name, fsync, rename, fsync of the directory). A segment
    /// that is not archived complete is served from the newest partial copy of it, padded with
    /// zeros, when no later segment of its timeline is archived.
    pub fn fetch(&self, name: &str, dest: &Path) -> Result<FetchOutcome, WalArchiveError> {
        let not_found = || WalArchiveError::NotFound {
            name: name.to_string(),
        };
        let file = match crate::wal::history_file_timeline(name) {
            Some(t) => ArchiveFileName::Wal(WalFileName::History(t)),
            None => {
                // Without a bound cluster there is no segment size, and no segment stored.
                let seg_size = self.segment_size();
                let parsed =
                    ArchiveFileName::parse(name, seg_size.unwrap_or(WalSegmentSize::DEFAULT));
                match (parsed, seg_size) {
                    (Ok(f), Some(_)) => f,
                    (Ok(_), None) => return Err(not_found()),
                    (Err(e), _) => return Err(e),
                }
            }
        };
        let stored = self.stored_name(&file);
        if self.repo.store().head(&stored)?.is_some() {
            let expected = match &file {
                ArchiveFileName::Wal(WalFileName::Segment(s)) => Some(s.seg_size.bytes()),
                _ => None,
            };
            self.copy_out(&stored, dest, expected, None)?;
            return Ok(FetchOutcome::Archived { stored });
        }
        let ArchiveFileName::Wal(WalFileName::Segment(segment)) = file else {
            return Err(not_found());
        };
        let listed = self.list_segments(segment.timeline)?;
        if let Some(newest) = listed.iter().rev().find(|s| s.name.segno > segment.segno) {
            return Err(WalArchiveError::Gap {
                name: name.to_string(),
                newest: newest.name.to_string(),
            });
        }
        let seg_bytes = segment.seg_size.bytes();
        // A partial in wal/ (a promoted server's, or a WAL receiver's) reaches at least as far as
        // any base backup's copy of the same segment.
        if let Some(p) = listed.iter().find(|s| s.partial && s.name == segment) {
            let bytes = self.copy_out(&p.stored, dest, None, Some(seg_bytes))?;
            return Ok(FetchOutcome::FromPartial {
                stored: p.stored.clone(),
                bytes,
            });
        }
        // The segment `receive-wal` is writing: everything it has received (and fsynced).
        if let Some(mut partial) = crate::wal::partial::open_receiving(self.repo, &segment)
            .map_err(|e| WalArchiveError::Source {
                name: name.to_string(),
                source: std::io::Error::other(e.to_string()),
            })?
        {
            let stored = crate::wal::partial::receiving_name(
                &segment,
                self.repo.codec().encryption.is_some(),
            );
            let bytes = copy_reader(&mut partial, &stored, dest, None, Some(seg_bytes))?;
            if bytes > 0 {
                return Ok(FetchOutcome::FromPartial { stored, bytes });
            }
        }
        let Some((valid_bytes, stored)) = longest_backup_partial(self.repo, &segment)? else {
            return Err(not_found());
        };
        let bytes = self.copy_out(&stored, dest, Some(valid_bytes), Some(seg_bytes))?;
        Ok(FetchOutcome::FromPartial { stored, bytes })
    }

    /// Decrypts `stored` into `dest`; checks its length against `expected`, and pads it with
    /// zeros to `pad_to`. Returns the number of bytes the stored file held.
    pub(super) fn copy_out(
        &self,
        stored: &str,
        dest: &Path,
        expected: Option<u64>,
        pad_to: Option<u64>,
    ) -> Result<u64, WalArchiveError> {
        let mut reader = self.repo.open_file(stored)?;
        copy_reader(&mut reader, stored, dest, expected, pad_to)
    }
}

/// The longest copy of `segment` a base backup kept (its unfinished last segment), as
/// `(valid bytes, stored name)`; among equals the newest backup (ids sort in time order).
pub(crate) fn longest_backup_partial(
    repo: &Repository,
    segment: &SegmentName,
) -> Result<Option<(u64, String)>, CatalogError> {
    let name = segment.to_string();
    let seg_bytes = segment.seg_size.bytes();
    Ok(repo
        .catalog()
        .list()?
        .into_iter()
        .filter_map(|r| {
            let p = r.partial_wal_file?;
            (p.segment == name && r.wal_segment_size == seg_bytes)
                .then(|| (p.valid_bytes, layout::backup_file(&r.id, &p.file)))
        })
        .max())
}

/// Copies `reader` (the content of `stored`) into `dest`, checking its length against
/// `expected` and padding it with zeros to `pad_to`. Returns the bytes `reader` held.
fn copy_reader(
    reader: &mut dyn Read,
    stored: &str,
    dest: &Path,
    expected: Option<u64>,
    pad_to: Option<u64>,
) -> Result<u64, WalArchiveError> {
    {
        // restore_command's %p may be an existing file (RECOVERYXLOG): replacing it is intended.
        let mut out = DurableFile::create(dest)?;
        let mut buf = vec![0u8; BUFFER];
        let mut len = 0u64;
        let limit = pad_to.or(expected);
        loop {
            let n = read_some(reader, &mut buf).map_err(|source| WalArchiveError::Stored {
                stored: stored.to_string(),
                source,
            })?;
            if n == 0 {
                break;
            }
            len += n as u64;
            if limit.is_some_and(|l| len > l) {
                return Err(WalArchiveError::StoredSize {
                    stored: stored.to_string(),
                    expected: limit.unwrap_or_default(),
                    actual: len,
                });
            }
            write_dest(&mut out, &buf[..n])?;
        }
        if let Some(e) = expected.filter(|&e| e != len) {
            return Err(WalArchiveError::StoredSize {
                stored: stored.to_string(),
                expected: e,
                actual: len,
            });
        }
        if let Some(total) = pad_to {
            buf.fill(0);
            let mut left = total - len;
            while left > 0 {
                let n = left.min(BUFFER as u64) as usize;
                write_dest(&mut out, &buf[..n])?;
                left -= n as u64;
            }
        }
        out.commit(Replace::Allow)?;
        Ok(len)
    }
}

fn write_dest(out: &mut DurableFile, bytes: &[u8]) -> Result<(), WalArchiveError> {
    out.write_all(bytes).map_err(|e| {
        let kind = e.kind();
        match e.into_inner().map(|inner| inner.downcast::<FsError>()) {
            Some(Ok(fs)) => WalArchiveError::Fs(*fs),
            _ => WalArchiveError::Fs(FsError::new("writing", out.dest_path(), kind.into())),
        }
    })
}
