//! Listing the segments the archive holds.

use pgwire_repl::TimelineId;

use super::{ArchivedSegment, WalArchive, WalArchiveError};
use crate::fsutil::stored_names;
use crate::layout::{self, WAL_DIR};
use crate::wal::{is_wal_file_name, SegmentName};

impl WalArchive<'_> {
    /// Segments of `timeline` in `wal/`, complete and partial, by segment number (a complete
    /// segment before a partial copy of the same one). Empty while the repository is unbound.
    pub fn list_segments(
        &self,
        timeline: TimelineId,
    ) -> Result<Vec<ArchivedSegment>, WalArchiveError> {
        let Some(seg_size) = self.segment_size() else {
            return Ok(Vec::new());
        };
        let suffix = layout::suffix(self.repo.codec());
        let wal = self.repo.resolve(WAL_DIR)?;
        let prefix = format!("{:08X}", timeline.0);
        let mut out = Vec::new();
        for dir in stored_names(&wal)? {
            if dir.len() != 16 || !dir.starts_with(&prefix) {
                continue;
            }
            for file in stored_names(&wal.join(&dir))? {
                let Some(base) = file.strip_suffix(suffix.as_str()) else {
                    continue;
                };
                let (seg, partial) = match base.strip_suffix(".partial") {
                    Some(s) => (s, true),
                    None => (base, false),
                };
                if !is_wal_file_name(seg) || !seg.starts_with(&dir) {
                    continue;
                }
                let Ok(name) = SegmentName::parse(seg, seg_size) else {
                    continue;
                };
                out.push(ArchivedSegment {
                    name,
                    partial,
                    stored: format!("{WAL_DIR}/{dir}/{file}"),
                });
            }
        }
        out.sort_by_key(|s| (s.name.segno, s.partial));
        Ok(out)
    }

    /// The newest complete segment of `timeline` in the archive.
    pub fn newest_segment(
        &self,
        timeline: TimelineId,
    ) -> Result<Option<SegmentName>, WalArchiveError> {
        Ok(self
            .list_segments(timeline)?
            .into_iter()
            .filter(|s| !s.partial)
            .map(|s| s.name)
            .next_back())
    }
}
