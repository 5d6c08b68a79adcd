//! Names of everything stored in a repository, in one place (docs/format.md, "Layout").
//!
//! ```text
//! REPO/pgstream.repo                               configuration, key material
//! REPO/backups/<id>/backup.json                    catalog record (written last)
//! REPO/backups/<id>/base.tar.lz4.enc               main data directory archive
//! REPO/backups/<id>/<oid>.tar.lz4.enc              one per tablespace
//! REPO/backups/<id>/backup_manifest.lz4.enc        the server's manifest
//! REPO/backups/<id>/<segment>.partial.lz4.enc      the unfinished last WAL segment, if any
//! REPO/backups/.<id>.inprogress/                   a backup being written
//! REPO/wal/<timeline+log id>/<segment>.lz4.enc     complete WAL segments
//! REPO/wal/<timeline>.history.lz4.enc              timeline history files
//! ```
//!
//! Every stored name is the file's authenticated identity: a file moved to another name no
//! longer opens. The compression suffix follows the repository's compression; `.enc` marks an
//! encrypted file (its format is pgstream's, so `lz4 -d` alone cannot read it).

use crate::catalog::BACKUPS_DIR;
use crate::compress::Compression;
use crate::sink::FileCodec;
use crate::wal::SegmentName;

/// The WAL archive directory.
pub const WAL_DIR: &str = "wal";

/// The suffix for files written with `codec`: compression extension, then `.enc` if encrypted.
pub fn suffix(codec: &FileCodec) -> String {
    suffix_for(codec.compression, codec.encryption.is_some())
}

/// The suffix for a given compression and encryption.
pub fn suffix_for(compression: Compression, encrypted: bool) -> String {
    let mut s = compression.extension().to_string();
    if encrypted {
        s.push_str(".enc");
    }
    s
}

/// `backups/<id>/<file>`: the identity of a file of a complete backup.
pub fn backup_file(id: &str, file: &str) -> String {
    format!("{BACKUPS_DIR}/{id}/{file}")
}

/// `backups/.<id>.inprogress/<file>`: where that file is written before the backup completes.
pub fn in_progress_file(id: &str, file: &str) -> String {
    format!("{BACKUPS_DIR}/.{id}.inprogress/{file}")
}

/// The directory holding a segment in the WAL archive: its first 16 hex digits (timeline and
/// log id), so no directory grows past 256 segments of 16 MiB.
pub fn wal_segment_dir(segment: &SegmentName) -> String {
    let name = segment.to_string();
    format!("{WAL_DIR}/{}", &name[..16])
}

/// The stored name of a complete WAL segment.
pub fn wal_segment_file(segment: &SegmentName, codec: &FileCodec) -> String {
    format!("{}/{segment}{}", wal_segment_dir(segment), suffix(codec))
}

/// The stored name of a timeline history file.
pub fn history_file(timeline: u32, codec: &FileCodec) -> String {
    format!("{WAL_DIR}/{timeline:08X}.history{}", suffix(codec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::WalSegmentSize;
    use pgwire_repl::{Lsn, TimelineId};

    #[test]
    fn names() {
        let plain = FileCodec::plain(Compression::Lz4);
        let seg = SegmentName::from_lsn(TimelineId(1), Lsn(0x1_0300_0028), WalSegmentSize::DEFAULT);
        assert_eq!(
            wal_segment_file(&seg, &plain),
            "wal/0000000100000001/000000010000000100000003.lz4"
        );
        assert_eq!(history_file(2, &plain), "wal/00000002.history.lz4");
        assert_eq!(suffix_for(Compression::None, true), ".enc");
        assert_eq!(suffix_for(Compression::Zstd(3), true), ".zst.enc");
        assert_eq!(backup_file("X", "base.tar.lz4"), "backups/X/base.tar.lz4");
        assert_eq!(in_progress_file("X", "a"), "backups/.X.inprogress/a");
    }
}
