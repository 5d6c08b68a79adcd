//! What `pgstream status` looks at in a repository, read without the passphrase: the newest
//! archived WAL segment and the partial segment `receive-wal` is writing, by file name and
//! modification time (their contents are encrypted; their names and times are not).

use std::fs;
use std::io;
use std::path::Path;
use std::time::SystemTime;

use crate::layout::WAL_DIR;
use crate::receive::start::PARTIAL_SUFFIX;

/// One file of the WAL archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalFile {
    /// The segment's 24-hex-digit name.
    pub segment: String,
    /// The stored file's modification time: when it was archived (or last written, for a
    /// partial segment being received).
    pub modified: SystemTime,
}

/// The newest files of the WAL archive.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalActivity {
    /// The most recently archived complete segment.
    pub newest_segment: Option<WalFile>,
    /// The most recently written `receive-wal` partial segment.
    pub receiving: Option<WalFile>,
    /// How many complete segments the archive holds.
    pub segments: usize,
}

/// Scans `REPO/wal/<shard>/` by name and modification time. Temporary files, archived `.partial`
/// segments and anything not named like WAL are ignored. A missing `wal/` is an empty archive.
pub fn wal_activity(repo: &Path) -> io::Result<WalActivity> {
    let wal = repo.join(WAL_DIR);
    let mut out = WalActivity::default();
    let shards = match fs::read_dir(&wal) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for shard in shards {
        let shard = shard?;
        let shard_name = shard.file_name();
        let Some(shard_name) = shard_name.to_str() else {
            continue;
        };
        if shard_name.len() != 16 || !is_hex(shard_name) || !shard.file_type()?.is_dir() {
            continue;
        }
        for entry in fs::read_dir(shard.path())? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(kind) = classify(name) else { continue };
            let modified = match entry.metadata() {
                Ok(m) => m.modified()?,
                // Renamed or removed while we looked (receive-wal finishing a segment).
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let file = WalFile {
                segment: name[..24].to_string(),
                modified,
            };
            let slot = match kind {
                Kind::Complete => {
                    out.segments += 1;
                    &mut out.newest_segment
                }
                Kind::Receiving => &mut out.receiving,
            };
            let replace = match slot {
                Some(f) => newer(&file, f),
                None => true,
            };
            if replace {
                *slot = Some(file);
            }
        }
    }
    Ok(out)
}

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Complete,
    Receiving,
}

/// What a stored name in a WAL shard is: `<segment><suffix>` (complete),
/// `<segment>.partial.recv[.enc]` (being received), or something to ignore.
fn classify(name: &str) -> Option<Kind> {
    if name.len() < 24 || !name.is_char_boundary(24) || !is_hex(&name[..24]) {
        return None;
    }
    let rest = &name[24..];
    if rest.contains(".tmp.") {
        return None;
    }
    if rest.starts_with(PARTIAL_SUFFIX) {
        return Some(Kind::Receiving);
    }
    if rest.starts_with(".partial") {
        return None;
    }
    if rest.is_empty() || rest.starts_with('.') {
        return Some(Kind::Complete);
    }
    None
}

/// Later modification time wins; the higher segment name breaks a tie.
fn newer(a: &WalFile, b: &WalFile) -> bool {
    (a.modified, &a.segment) > (b.modified, &b.segment)
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_classified() {
        let seg = "000000010000000000000005";
        assert_eq!(classify(&format!("{seg}.lz4.enc")), Some(Kind::Complete));
        assert_eq!(classify(seg), Some(Kind::Complete));
        assert_eq!(
            classify(&format!("{seg}.partial.recv.enc")),
            Some(Kind::Receiving)
        );
        assert_eq!(classify(&format!("{seg}.partial.lz4.enc")), None);
        assert_eq!(classify(&format!("{seg}.lz4.enc.tmp.0a1b")), None);
        assert_eq!(classify("00000002.history.lz4"), None);
        assert_eq!(classify("not-a-wal-file-name-at-all.lz4"), None);
    }

    #[test]
    fn newest_files_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let shard = dir.path().join("wal/0000000100000000");
        fs::create_dir_all(&shard).unwrap();
        assert_eq!(wal_activity(dir.path()).unwrap().newest_segment, None);
        fs::write(shard.join("000000010000000000000003.lz4"), b"x").unwrap();
        fs::write(shard.join("000000010000000000000004.lz4"), b"x").unwrap();
        fs::write(shard.join("000000010000000000000005.partial.recv"), b"x").unwrap();
        fs::write(shard.join("000000010000000000000005.lz4.tmp.ff"), b"x").unwrap();
        let a = wal_activity(dir.path()).unwrap();
        assert_eq!(a.segments, 2);
        assert_eq!(
            a.receiving.unwrap().segment,
            "000000010000000000000005".to_string()
        );
        assert!(a.newest_segment.is_some());
    }

    #[test]
    fn a_repository_without_wal_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(wal_activity(dir.path()).unwrap(), WalActivity::default());
    }
}
