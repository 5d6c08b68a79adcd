//! The last commit (or abort) archived in a recoverable window, after the backup's end: the
//! latest point a time target can stop at, since recovery stops only at a commit or abort.
//! Segments are read the way wal-fetch serves them, newest first, and the scan stops at the
//! first segment holding one, so usually only the window's last segment is read.

use std::collections::HashMap;
use std::io::Read;

use pgwire_repl::Lsn;

use super::pitr::PitrError;
use super::window::Window;
use crate::repo::Repository;
use crate::wal::archive::{longest_backup_partial, ArchiveFileName, WalArchive};
use crate::wal::commits::{CommitScanner, XactRecord};
use crate::wal::{SegmentName, WalFileName};

const CHUNK: usize = 64 * 1024;

/// A served segment's content, and the repository name it is read from.
type Served = (String, Box<dyn Read>);

/// The last commit or abort record in `[window.start, window.end)`, if the archive holds one.
pub fn last_commit(repo: &Repository, window: &Window) -> Result<Option<XactRecord>, PitrError> {
    if !window.reaches_backup_end() || window.end <= window.start {
        return Ok(None);
    }
    let seg_size = window.missing.seg_size;
    let first = seg_size.segno_of(window.start);
    let last = seg_size.segno_of(Lsn(window.end.0 - 1));
    for segno in (first..=last).rev() {
        let timeline = window.history.timeline_for_segment(segno, seg_size);
        let segment = SegmentName::new(timeline, segno, seg_size);
        let Some(served_now) = served(repo, &segment)? else {
            continue;
        };
        let mut scanner = CommitScanner::new(segment.start_lsn());
        feed(&mut scanner, served_now, |_| true)?;
        if scanner.ends_inside_xact() && segno < last {
            // A commit cut by the segment's end: the next segment's scan skipped it as a
            // continuation, so read on into that segment until it is complete.
            let timeline = window.history.timeline_for_segment(segno + 1, seg_size);
            if let Some(next) = served(repo, &SegmentName::new(timeline, segno + 1, seg_size))? {
                feed(&mut scanner, next, CommitScanner::ends_inside_xact)?;
            }
        }
        let found = scanner
            .finish()
            .into_iter()
            .rfind(|x| x.lsn >= window.start && x.lsn < window.end);
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

/// [`last_commit`] over many windows without reading the same WAL again: windows of different
/// backups on one timeline path usually end at the same place (the end of the archive), and the
/// last commit of the window with the earliest start answers for every later start too.
#[derive(Default)]
pub struct LastCommits {
    /// (target timeline, window end) -> (the start scanned from, the last commit after it).
    scanned: HashMap<(u32, Lsn), (Lsn, Option<XactRecord>)>,
}

impl LastCommits {
    /// The same answer as [`last_commit`]`(repo, window)`.
    pub fn get(
        &mut self,
        repo: &Repository,
        window: &Window,
    ) -> Result<Option<XactRecord>, PitrError> {
        let key = (window.history.timeline().0, window.end);
        if let Some(&(from, found)) = self.scanned.get(&key) {
            if let Some(answer) = reuse(from, found, window.start) {
                return Ok(answer);
            }
        }
        let found = last_commit(repo, window)?;
        self.scanned.insert(key, (window.start, found));
        Ok(found)
    }
}

/// The last commit in `[start, end)` from the last one in `[from, end)`, when `from <= start`:
/// that one if it lies at or after `start`, otherwise none (the range holds no later one).
fn reuse(from: Lsn, found: Option<XactRecord>, start: Lsn) -> Option<Option<XactRecord>> {
    (from <= start).then(|| found.filter(|x| x.lsn >= start))
}

/// Pushes `served` into `scanner` a chunk at a time while `more` says so, to its end at most.
fn feed(
    scanner: &mut CommitScanner,
    (stored, mut reader): Served,
    more: impl Fn(&CommitScanner) -> bool,
) -> Result<(), PitrError> {
    let mut buf = vec![0u8; CHUNK];
    while more(scanner) {
        let n = reader.read(&mut buf).map_err(|source| PitrError::Read {
            file: stored.clone(),
            source,
        })?;
        if n == 0 {
            break;
        }
        scanner.push(&buf[..n]);
    }
    Ok(())
}

/// The content wal-fetch would serve for `segment`, in its order: the complete segment, an
/// archived `.partial`, the segment receive-wal is writing, the longest backup partial.
fn served(repo: &Repository, segment: &SegmentName) -> Result<Option<Served>, PitrError> {
    let archive = WalArchive::new(repo);
    for file in [
        WalFileName::Segment(*segment),
        WalFileName::Partial(*segment),
    ] {
        let stored = archive.stored_name(&ArchiveFileName::Wal(file));
        if repo.has_file(&stored)? {
            return Ok(Some((stored.clone(), Box::new(repo.open_file(&stored)?))));
        }
    }
    let receiving = crate::wal::partial::open_receiving(repo, segment)
        .map_err(|e| PitrError::Internal(format!("reading the segment being received: {e}")))?;
    // wal-fetch passes over an empty one for a backup's partial; reading it finds no commit,
    // and the scan goes on with the segment before, which at worst states an earlier commit.
    if let Some(reader) = receiving {
        let stored =
            crate::wal::partial::receiving_name(segment, repo.codec().encryption.is_some());
        return Ok(Some((stored, Box::new(reader))));
    }
    match longest_backup_partial(repo, segment)? {
        Some((valid, stored)) => {
            let reader = repo.open_file(&stored)?.take(valid);
            Ok(Some((stored, Box::new(reader))))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::commits::XactEnd;

    fn commit_at(lsn: u64) -> XactRecord {
        XactRecord {
            lsn: Lsn(lsn),
            kind: XactEnd::Commit,
            time: 1,
        }
    }

    #[test]
    fn a_window_starting_later_reuses_the_scan_of_one_starting_earlier() {
        let c = Some(commit_at(0x500));
        // Later start, commit after it: the same commit.
        assert_eq!(reuse(Lsn(0x100), c, Lsn(0x300)), Some(c));
        assert_eq!(reuse(Lsn(0x100), c, Lsn(0x500)), Some(c));
        // Later start, commit before it: that range holds none.
        assert_eq!(reuse(Lsn(0x100), c, Lsn(0x600)), Some(None));
        assert_eq!(reuse(Lsn(0x100), None, Lsn(0x600)), Some(None));
        // An earlier start than the scan's: scan again.
        assert_eq!(reuse(Lsn(0x300), c, Lsn(0x100)), None);
    }
}
