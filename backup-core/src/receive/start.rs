//! Where `receive-wal` starts: from the archive (the newest partial segment, or the segment after
//! the newest complete one), else the slot's restart_lsn, else the server's current position,
//! as pg_receivewal decides (docs/protocol.md §5), but over the repository's `wal/`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use pgwire_repl::{Lsn, TimelineId};

use crate::fsutil::FsError;
use crate::layout::WAL_DIR;
use crate::wal::{is_wal_file_name, SegmentName, WalSegmentSize};

/// The suffix that marks receive-wal's partial segments (before `.enc`).
pub const PARTIAL_SUFFIX: &str = ".partial.recv";

/// What the archive holds, as far as the start position is concerned.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ArchiveState {
    /// Complete segments (any stored encoding).
    pub complete: Vec<SegmentName>,
    /// receive-wal partial segments, with their paths.
    pub partials: Vec<(SegmentName, PathBuf)>,
}

/// The newest thing in the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Newest {
    /// Start at the next segment.
    Complete(SegmentName),
    /// Resume this partial.
    Partial(SegmentName, PathBuf),
}

impl ArchiveState {
    /// Lists `REPO/wal/<16 hex>/`: complete segments and our partials. Other files (temporary
    /// names, pushed `.partial` files, history files) are ignored.
    pub fn scan(repo_dir: &Path, seg_size: WalSegmentSize) -> Result<ArchiveState, FsError> {
        let mut state = ArchiveState::default();
        let wal = repo_dir.join(WAL_DIR);
        let dirs = match fs::read_dir(&wal) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(state),
            Err(e) => return Err(FsError::new("listing", &wal, e)),
        };
        for dir in dirs {
            let dir = dir.map_err(|e| FsError::new("listing", &wal, e))?;
            let name = dir.file_name().to_string_lossy().into_owned();
            if name.len() != 16 || !dir.path().is_dir() {
                continue;
            }
            let path = dir.path();
            for f in fs::read_dir(&path).map_err(|e| FsError::new("listing", &path, e))? {
                let f = f.map_err(|e| FsError::new("listing", &path, e))?;
                let fname = f.file_name().to_string_lossy().into_owned();
                if fname.len() < 24 || !fname.is_char_boundary(24) {
                    continue;
                }
                let (seg, rest) = fname.split_at(24);
                if !is_wal_file_name(seg) || rest.contains(".tmp.") {
                    continue;
                }
                let Ok(segment) = SegmentName::parse(seg, seg_size) else {
                    continue;
                };
                if rest == PARTIAL_SUFFIX || rest == format!("{PARTIAL_SUFFIX}.enc") {
                    state.partials.push((segment, f.path()));
                } else if rest.starts_with(".partial") {
                    continue;
                } else if rest.is_empty() || rest.starts_with('.') {
                    state.complete.push(segment);
                }
            }
        }
        Ok(state)
    }

    /// The newest segment: highest number, then highest timeline, then complete over partial
    /// (pg_receivewal's rule).
    pub fn newest(&self) -> Option<Newest> {
        let key = |s: &SegmentName| (s.segno, s.timeline.0);
        let complete = self.complete.iter().max_by_key(|s| key(s));
        let partial = self.partials.iter().max_by_key(|(s, _)| key(s));
        match (complete, partial) {
            (None, None) => None,
            (Some(c), None) => Some(Newest::Complete(*c)),
            (None, Some((p, path))) => Some(Newest::Partial(*p, path.clone())),
            (Some(c), Some((p, path))) => {
                if key(p) > key(c) {
                    Some(Newest::Partial(*p, path.clone()))
                } else {
                    Some(Newest::Complete(*c))
                }
            }
        }
    }

    /// Partials whose segment is also stored complete: left by a crash between storing the
    /// segment and removing its partial.
    pub fn stale_partials(&self) -> Vec<PathBuf> {
        self.partials
            .iter()
            .filter(|(s, _)| self.complete.contains(s))
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// The highest timeline in the archive.
    pub fn max_timeline(&self) -> Option<TimelineId> {
        self.complete
            .iter()
            .chain(self.partials.iter().map(|(s, _)| s))
            .map(|s| s.timeline)
            .max()
    }
}

/// Where streaming starts when the archive holds nothing: the slot's restart position (15+),
/// else the server's, rounded down to a segment start.
pub fn fresh_start(
    slot: Option<(Lsn, TimelineId)>,
    server: (Lsn, TimelineId),
    seg_size: WalSegmentSize,
) -> (Lsn, TimelineId) {
    let (lsn, tli) = slot.unwrap_or(server);
    (lsn.segment_start(seg_size.bytes()), tli)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(tli: u32, segno: u64) -> SegmentName {
        SegmentName::new(TimelineId(tli), segno, WalSegmentSize::DEFAULT)
    }

    #[test]
    fn scan_and_pick_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let shard = dir.path().join("wal/0000000100000000");
        fs::create_dir_all(&shard).unwrap();
        let shard2 = dir.path().join("wal/0000000200000000");
        fs::create_dir_all(&shard2).unwrap();
        for f in [
            "000000010000000000000003.lz4.enc",
            "000000010000000000000004.lz4.enc",
            "000000010000000000000005.partial.recv.enc",
            "000000010000000000000006.lz4.enc.tmp.0011223344556677",
            "000000010000000000000006.partial",
            "00000002.history.lz4.enc",
        ] {
            fs::write(shard.join(f), b"x").unwrap();
        }
        let size = WalSegmentSize::DEFAULT;
        let state = ArchiveState::scan(dir.path(), size).unwrap();
        assert_eq!(state.complete.len(), 2);
        assert_eq!(
            state.newest(),
            Some(Newest::Partial(
                seg(1, 5),
                shard.join("000000010000000000000005.partial.recv.enc")
            ))
        );
        // Complete wins a tie; a higher timeline wins over a lower one.
        fs::write(shard.join("000000010000000000000005"), b"x").unwrap();
        let state = ArchiveState::scan(dir.path(), size).unwrap();
        assert_eq!(state.newest(), Some(Newest::Complete(seg(1, 5))));
        assert_eq!(state.stale_partials().len(), 1);
        fs::write(shard2.join("000000020000000000000005.partial.recv"), b"x").unwrap();
        let state = ArchiveState::scan(dir.path(), size).unwrap();
        assert!(matches!(state.newest(), Some(Newest::Partial(s, _)) if s == seg(2, 5)));
        assert_eq!(state.max_timeline(), Some(TimelineId(2)));
        assert_eq!(
            ArchiveState::scan(&dir.path().join("none"), size).unwrap(),
            ArchiveState::default()
        );
    }

    #[test]
    fn fresh_start_rounds_down() {
        let size = WalSegmentSize::DEFAULT;
        let server = (Lsn(0x0300_0028), TimelineId(1));
        assert_eq!(
            fresh_start(None, server, size),
            (Lsn(0x300_0000), TimelineId(1))
        );
        let slot = Some((Lsn(0x0212_3456), TimelineId(1)));
        assert_eq!(
            fresh_start(slot, server, size),
            (Lsn(0x200_0000), TimelineId(1))
        );
    }
}
