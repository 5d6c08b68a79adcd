//! backup-core's manifest parser, tar walker and WAL page check on what PostgreSQL's own
//! pg_basebackup writes (`-Ft -X fetch`, with a tablespace), on every test major.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use backup_core::manifest::{ChecksumAlgorithm, Manifest, Mismatch};
use backup_core::tarwalk::{EntryKind, SeenFile, TarWalker};
use backup_core::wal::{validate_segment, SegmentCheck, SegmentName, WalSegmentSize};
use integration::{client_tool, cluster, test_majors, SUPERUSER};

fn walk(archive: &[u8], prefix: Option<&str>) -> Vec<SeenFile> {
    let mut w = TarWalker::new();
    if let Some(p) = prefix {
        w = w.path_prefix(p);
    }
    // Odd chunk sizes, as CopyData boundaries fall anywhere.
    for chunk in archive.chunks(65_521) {
        w.push(chunk).expect("tar walk");
    }
    w.finish().expect("tar end")
}

/// Offset of the content of member `name` in an uncompressed tar.
fn content_offset(archive: &[u8], name: &str) -> usize {
    let mut a = tar::Archive::new(archive);
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        if e.path_bytes().as_ref() == name.as_bytes() {
            return e.raw_file_position() as usize;
        }
    }
    panic!("{name} not in the archive");
}

/// The pg_wal segments in base.tar (with -X fetch), by name.
fn wal_members(archive: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut a = tar::Archive::new(archive);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let path = String::from_utf8(e.path_bytes().to_vec()).unwrap();
        if let Some(name) = path.strip_prefix("pg_wal/") {
            if backup_core::wal::is_wal_file_name(name) {
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                out.insert(name.to_string(), data);
            }
        }
    }
    out
}

#[test]
fn pg_basebackup_output_parses_walks_and_verifies() {
    for major in test_majors() {
        let pg = cluster(major)
            .tablespace("ts1")
            .setting("wal_keep_size", "128MB")
            .start();
        pg.psql(
            "CREATE TABLE t (x int, y text) TABLESPACE ts1; \
             INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 5000) g; \
             CREATE TABLE u AS SELECT g FROM generate_series(1, 1000) g",
        );
        let ts_oid = pg.psql("SELECT oid FROM pg_tablespace WHERE spcname = 'ts1'");
        let sysid: u64 = pg
            .psql("SELECT system_identifier FROM pg_control_system()")
            .parse()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(client_tool(major, "pg_basebackup"))
            .arg("-d")
            .arg(pg.conninfo(SUPERUSER))
            .arg("-D")
            .arg(dir.path())
            .args([
                "-Ft",
                "-X",
                "fetch",
                "--checkpoint=fast",
                "--manifest-checksums=CRC32C",
            ])
            .output()
            .expect("run pg_basebackup");
        assert!(
            out.status.success(),
            "pg_basebackup on {major}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
        let manifest = Manifest::parse(&read("backup_manifest"))
            .unwrap_or_else(|e| panic!("PostgreSQL {major} manifest: {e}"));
        assert_eq!(manifest.version(), if major >= 17 { 2 } else { 1 });
        let expected_sysid = (major >= 17).then_some(sysid);
        assert_eq!(manifest.system_identifier(), expected_sysid);
        assert_eq!(
            manifest.checksum_algorithm(),
            Some(ChecksumAlgorithm::Crc32c)
        );
        manifest
            .require_checksum_algorithm(Some(ChecksumAlgorithm::Crc32c))
            .unwrap();
        assert!(!manifest.wal_ranges().is_empty());
        assert!(manifest.start_lsn() <= manifest.end_lsn());
        assert!(manifest.files().iter().any(|f| f
            .path
            .to_str()
            .is_some_and(|p| p.starts_with(&format!("pg_tblspc/{ts_oid}/")))));
        assert!(manifest.files().iter().any(|f| f
            .path
            .to_str()
            .is_some_and(|p| p.starts_with("pg_wal/archive_status/") && p.ends_with(".done"))));

        let base = read("base.tar");
        let ts_tar = read(&format!("{ts_oid}.tar"));
        let mut seen = walk(&base, None);
        seen.extend(walk(&ts_tar, Some(&format!("pg_tblspc/{ts_oid}"))));
        // -Ft sends TABLESPACE_MAP: a tablespace_map file instead of pg_tblspc symlinks.
        assert!(seen
            .iter()
            .any(|s| s.kind == EntryKind::File && s.path.to_str() == Some("tablespace_map")));
        let mismatches = manifest.verify_files(&seen);
        assert!(mismatches.is_empty(), "PostgreSQL {major}: {mismatches:#?}");
        let files = seen.iter().filter(|s| s.kind == EntryKind::File).count();
        let wal = seen
            .iter()
            .filter(|s| {
                s.path.to_str().is_some_and(|p| {
                    p.strip_prefix("pg_wal/")
                        .is_some_and(backup_core::wal::is_wal_file_name)
                })
            })
            .count();
        assert_eq!(files - wal, manifest.files().len(), "PostgreSQL {major}");

        // One flipped content byte is one checksum mismatch.
        let mut flipped = base.clone();
        flipped[content_offset(&base, "PG_VERSION")] ^= 0x01;
        let mut seen = walk(&flipped, None);
        seen.extend(walk(&ts_tar, Some(&format!("pg_tblspc/{ts_oid}"))));
        let mismatches = manifest.verify_files(&seen);
        assert!(
            matches!(mismatches.as_slice(), [Mismatch::ChecksumMismatch { path, .. }]
                if path.to_str() == Some("PG_VERSION")),
            "PostgreSQL {major}: {mismatches:#?}"
        );

        // The fetched WAL belongs to this cluster, per its page headers.
        let segments = wal_members(&base);
        assert!(
            !segments.is_empty(),
            "PostgreSQL {major}: no WAL in base.tar"
        );
        for (name, data) in segments {
            let name = SegmentName::parse(&name, WalSegmentSize::DEFAULT).unwrap();
            let check = SegmentCheck {
                system_identifier: Some(sysid),
                major: Some(major),
                ..SegmentCheck::new(name)
            };
            let summary = validate_segment(&data, check)
                .unwrap_or_else(|e| panic!("PostgreSQL {major}: {e}"));
            assert_eq!(summary.major, Some(major));
            assert!(
                summary.valid_up_to > 0,
                "PostgreSQL {major}: {name} {summary:?}"
            );
        }
        assert!(Path::new(&dir.path().join("backup_manifest")).exists());
    }
}
