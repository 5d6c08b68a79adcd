//! Where `receive-wal` starts: from the archive (the newest partial segment, or the segment after
//! the newest complete one), else the slot's restart_lsn, else the server's current position,
//! as pg_receivewal decides (docs/protocol.md §5), but over the repository's `wal/`.

use pgwire_repl::{Lsn, TimelineId};

use crate::index::{self, WalFileKind};
use crate::repo::config::RepoConfig;
use crate::store::{Store, StoreError};
use crate::wal::{SegmentName, WalSegmentSize};

/// What the archive holds, as far as the start position is concerned.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ArchiveState {
    /// Complete segments.
    pub complete: Vec<SegmentName>,
    /// receive-wal partial segments, with their stored names.
    pub partials: Vec<(SegmentName, String)>,
}

/// The newest thing in the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Newest {
    /// Start at the next segment.
    Complete(SegmentName),
    /// Resume this partial.
    Partial(SegmentName, String),
}

impl ArchiveState {
    /// Lists `wal/` (through the repository index): complete segments and our partials. Other
    /// files (pushed `.partial` files, history files, other codecs) are not listed.
    pub fn scan(store: &dyn Store, config: &RepoConfig) -> Result<ArchiveState, StoreError> {
        let listing = index::scan_wal(store, config)?;
        let mut state = ArchiveState::default();
        for o in &listing.files {
            match o.file.kind {
                WalFileKind::Segment => state.complete.push(o.file.segment),
                WalFileKind::Receiving => {
                    state.partials.push((o.file.segment, o.file.stored.clone()))
                }
                _ => {}
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
    pub fn stale_partials(&self) -> Vec<String> {
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
        use crate::store::mem::MemStore;
        use crate::store::PutMode;
        let store = MemStore::default();
        let config = crate::test_support::bound_config();
        let shard = "wal/0000000100000000";
        for f in [
            "000000010000000000000003.lz4",
            "000000010000000000000004.lz4",
            "000000010000000000000005.partial.recv",
            "000000010000000000000006.partial.lz4",
            "000000010000000000000007.zst",
        ] {
            store
                .put(&format!("{shard}/{f}"), b"x", PutMode::Create)
                .unwrap();
        }
        store
            .put("wal/00000002.history.lz4", b"x", PutMode::Create)
            .unwrap();
        let state = ArchiveState::scan(&store, &config).unwrap();
        assert_eq!(state.complete.len(), 2);
        let p5 = format!("{shard}/000000010000000000000005.partial.recv");
        assert_eq!(state.newest(), Some(Newest::Partial(seg(1, 5), p5.clone())));
        // Complete wins a tie; a higher timeline wins over a lower one.
        store
            .put(
                &format!("{shard}/000000010000000000000005.lz4"),
                b"x",
                PutMode::Create,
            )
            .unwrap();
        let state = ArchiveState::scan(&store, &config).unwrap();
        assert_eq!(state.newest(), Some(Newest::Complete(seg(1, 5))));
        assert_eq!(state.stale_partials(), vec![p5]);
        store
            .put(
                "wal/0000000200000000/000000020000000000000005.partial.recv",
                b"x",
                PutMode::Create,
            )
            .unwrap();
        let state = ArchiveState::scan(&store, &config).unwrap();
        assert!(matches!(state.newest(), Some(Newest::Partial(s, _)) if s == seg(2, 5)));
        assert_eq!(state.max_timeline(), Some(TimelineId(2)));
        assert_eq!(
            ArchiveState::scan(&MemStore::default(), &config).unwrap(),
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
