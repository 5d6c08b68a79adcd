//! What a restored chain says about itself: its `backup_label` without the incremental lines,
//! and a `backup_manifest` that lists the rebuilt files (so `pg_verifybackup` checks the
//! result), written as pg_combinebackup writes one.

use std::io::Write;
use std::path::Path;

use pgwire_repl::{Lsn, TimelineId};

use super::ChainRestoreError;
use crate::fsutil::{self, FsError};
use crate::manifest::{Manifest, WalRange};

const FROM_LSN: &str = "INCREMENTAL FROM LSN: ";
const FROM_TLI: &str = "INCREMENTAL FROM TLI: ";

/// A backup_label's `INCREMENTAL FROM` lines, if it has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct IncrementalFrom {
    pub lsn: Lsn,
    pub timeline: TimelineId,
}

/// The label without its `INCREMENTAL FROM` lines (which make PostgreSQL refuse to start:
/// "this is an incremental backup, not a data directory"), and what they said.
pub(super) fn strip_label(label: &[u8]) -> Result<(Vec<u8>, Option<IncrementalFrom>), String> {
    let mut kept = Vec::with_capacity(label.len());
    let (mut lsn, mut tli) = (None, None);
    for line in label.split_inclusive(|&b| b == b'\n') {
        let text = std::str::from_utf8(line).unwrap_or("");
        if let Some(v) = text.strip_prefix(FROM_LSN) {
            lsn = Some(
                v.trim_end()
                    .parse::<Lsn>()
                    .map_err(|e| format!("INCREMENTAL FROM LSN: {e}"))?,
            );
        } else if let Some(v) = text.strip_prefix(FROM_TLI) {
            tli = Some(TimelineId(
                v.trim_end()
                    .parse::<u32>()
                    .map_err(|e| format!("INCREMENTAL FROM TLI: {e}"))?,
            ));
        } else {
            kept.extend_from_slice(line);
        }
    }
    match (lsn, tli) {
        (None, None) => Ok((kept, None)),
        (Some(lsn), Some(timeline)) => Ok((kept, Some(IncrementalFrom { lsn, timeline }))),
        _ => Err("it has only one of INCREMENTAL FROM LSN and INCREMENTAL FROM TLI".into()),
    }
}

/// One file of the restored directory, as the manifest lists it.
pub(super) struct OutputFile<'a> {
    pub path: &'a [u8],
    pub size: u64,
    pub crc32c: u32,
    pub last_modified: Option<&'a str>,
}

/// Writes `dir/backup_manifest` (version 2, CRC-32C checksums) listing `files`, with the
/// system identifier and WAL ranges of `last`, durably.
pub(super) fn write_manifest<'a>(
    dir: &Path,
    last: &Manifest,
    files: impl Iterator<Item = OutputFile<'a>>,
) -> Result<(), ChainRestoreError> {
    let path = dir.join("backup_manifest");
    let mut out = fsutil::DurableFile::create(&path)?;
    let mut body = ManifestBody::new(last.system_identifier());
    for f in files {
        body.file(&f);
        if body.text.len() > 1 << 20 {
            body.flush(&mut out, &path)?;
        }
    }
    body.finish(last.wal_ranges());
    body.flush(&mut out, &path)?;
    out.commit(fsutil::Replace::Refuse)?;
    Ok(())
}

/// The manifest's text, hashed as it is written (the checksum covers everything before the
/// `Manifest-Checksum` line).
struct ManifestBody {
    text: Vec<u8>,
    first: bool,
    hash: openssl::sha::Sha256,
    hashing: bool,
}

impl ManifestBody {
    fn new(system_identifier: Option<u64>) -> Self {
        let mut text = b"{ \"PostgreSQL-Backup-Manifest-Version\": 2,\n".to_vec();
        if let Some(id) = system_identifier {
            text.extend(format!("\"System-Identifier\": {id},\n").as_bytes());
        }
        text.extend(b"\"Files\": [");
        ManifestBody {
            text,
            first: true,
            hash: openssl::sha::Sha256::new(),
            hashing: true,
        }
    }

    fn file(&mut self, f: &OutputFile) {
        self.text
            .extend_from_slice(if self.first { b"\n" } else { b",\n" });
        self.first = false;
        match std::str::from_utf8(f.path) {
            Ok(p) => {
                let quoted = serde_json::to_string(p).expect("a string serializes");
                self.text
                    .extend(format!("{{ \"Path\": {quoted}, ").as_bytes());
            }
            Err(_) => self
                .text
                .extend(format!("{{ \"Encoded-Path\": \"{}\", ", hex::encode(f.path)).as_bytes()),
        }
        self.text
            .extend(format!("\"Size\": {}, ", f.size).as_bytes());
        let modified = f.last_modified.unwrap_or("1970-01-01 00:00:00 GMT");
        let modified = serde_json::to_string(modified).expect("a string serializes");
        self.text
            .extend(format!("\"Last-Modified\": {modified}, ").as_bytes());
        self.text.extend(
            format!(
                "\"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"{}\" }}",
                hex::encode(f.crc32c.to_le_bytes())
            )
            .as_bytes(),
        );
    }

    fn finish(&mut self, ranges: &[WalRange]) {
        self.text.extend(b"\n],\n\"WAL-Ranges\": [\n");
        for (i, r) in ranges.iter().enumerate() {
            if i > 0 {
                self.text.extend(b",\n");
            }
            self.text.extend(
                format!(
                    "{{ \"Timeline\": {}, \"Start-LSN\": \"{}\", \"End-LSN\": \"{}\" }}",
                    r.timeline.0, r.start, r.end
                )
                .as_bytes(),
            );
        }
        self.text.extend(b"\n],\n");
        self.hash.update(&self.text);
        self.hashing = false;
        let digest = std::mem::replace(&mut self.hash, openssl::sha::Sha256::new()).finish();
        self.text
            .extend(format!("\"Manifest-Checksum\": \"{}\"}}\n", hex::encode(digest)).as_bytes());
    }

    fn flush(&mut self, out: &mut fsutil::DurableFile, path: &Path) -> Result<(), FsError> {
        if self.hashing {
            self.hash.update(&self.text);
        }
        out.write_all(&self.text)
            .map_err(|e| FsError::new("writing", path, e))?;
        self.text.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_lose_their_incremental_lines_and_keep_everything_else() {
        let label = b"START WAL LOCATION: 0/5000028 (file 000000010000000000000005)\n\
CHECKPOINT LOCATION: 0/5000080\n\
BACKUP METHOD: streamed\n\
BACKUP FROM: primary\n\
START TIME: 2026-12-04 16:06:25 UTC\n\
LABEL: pgstream\n\
START TIMELINE: 1\n\
INCREMENTAL FROM LSN: 0/3000028\n\
INCREMENTAL FROM TLI: 1\n";
        let (kept, from) = strip_label(label).unwrap();
        let text = String::from_utf8(kept).unwrap();
        assert!(
            text.ends_with("START TIMELINE: 1\n") && !text.contains("INCREMENTAL"),
            "{text}"
        );
        assert_eq!(
            from,
            Some(IncrementalFrom {
                lsn: Lsn(0x300_0028),
                timeline: TimelineId(1)
            })
        );
        let (kept, from) = strip_label(b"START TIMELINE: 1\n").unwrap();
        assert_eq!((kept.as_slice(), from), (&b"START TIMELINE: 1\n"[..], None));
        assert!(strip_label(b"INCREMENTAL FROM LSN: 0/1\n").is_err());
    }

    #[test]
    fn the_written_manifest_parses_and_its_checksum_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let template = {
            let mut body = ManifestBody::new(Some(7));
            body.finish(&[WalRange {
                timeline: TimelineId(1),
                start: Lsn(0x500_0028),
                end: Lsn(0x500_0120),
            }]);
            Manifest::parse(&body.text).unwrap()
        };
        let files = [
            OutputFile {
                path: b"base/5/16384",
                size: 16384,
                crc32c: 0x1234_5678,
                last_modified: Some("2026-12-04 16:06:25 GMT"),
            },
            OutputFile {
                path: b"odd \"name\"\n",
                size: 1,
                crc32c: 1,
                last_modified: None,
            },
            OutputFile {
                path: b"bad\xff",
                size: 0,
                crc32c: 0,
                last_modified: None,
            },
        ];
        write_manifest(dir.path(), &template, files.into_iter()).unwrap();
        let bytes = std::fs::read(dir.path().join("backup_manifest")).unwrap();
        let m = Manifest::parse(&bytes).unwrap();
        assert_eq!(m.system_identifier(), Some(7));
        assert_eq!(m.files().len(), 3);
        assert_eq!(m.file(b"base/5/16384").unwrap().size, 16384);
        assert_eq!(
            m.file(b"base/5/16384")
                .unwrap()
                .checksum
                .as_ref()
                .unwrap()
                .to_hex(),
            "78563412"
        );
        assert!(m.file(b"bad\xff").is_some());
        assert_eq!(m.end_lsn(), Some(Lsn(0x500_0120)));
    }
}
