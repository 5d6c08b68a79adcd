//! Listing the segments the archive holds (through the repository index).

use pgwire_repl::TimelineId;

use super::{ArchivedSegment, WalArchive, WalArchiveError};
use crate::index::{self, WalFileKind};

impl WalArchive<'_> {
    /// Segments of `timeline` in `wal/`, complete and `.partial`, by segment number (a complete
    /// segment before a partial copy of the same one). Empty while the repository is unbound.
    pub fn list_segments(
        &self,
        timeline: TimelineId,
    ) -> Result<Vec<ArchivedSegment>, WalArchiveError> {
        let listing = index::scan_wal(self.repo.store().as_ref(), self.repo.config())?;
        let mut out: Vec<ArchivedSegment> = listing
            .of_timeline(timeline)
            .filter_map(|o| {
                let partial = match o.file.kind {
                    WalFileKind::Segment => false,
                    WalFileKind::Partial => true,
                    _ => return None,
                };
                Some(ArchivedSegment {
                    name: o.file.segment,
                    partial,
                    stored: o.file.stored.clone(),
                })
            })
            .collect();
        out.sort_by_key(|s| (s.name.segno, s.partial));
        Ok(out)
    }

    /// The newest complete segment of `timeline` in the archive.
    pub fn newest_segment(
        &self,
        timeline: TimelineId,
    ) -> Result<Option<crate::wal::SegmentName>, WalArchiveError> {
        Ok(self
            .list_segments(timeline)?
            .into_iter()
            .filter(|s| !s.partial)
            .map(|s| s.name)
            .next_back())
    }
}
