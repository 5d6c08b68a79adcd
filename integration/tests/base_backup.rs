//! BASE_BACKUP through pgwire-repl against real servers: the tar members must equal the
//! server's files, and agree with the server's own backup manifest.

mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use integration::{cluster, test_majors, Cluster};
use pgwire_repl::basebackup::options::Checkpoint;
use pgwire_repl::basebackup::{BaseBackupEvent, BaseBackupOptions};
use pgwire_repl::Lsn;

struct Archive {
    name: String,
    location: Option<String>,
    bytes: Vec<u8>,
}

struct Backup {
    events: Vec<&'static str>,
    start: Lsn,
    end: Lsn,
    archives: Vec<Archive>,
    manifest: Vec<u8>,
    progress: Vec<u64>,
}

async fn take_backup(pg: &Cluster, options: &BaseBackupOptions) -> Backup {
    let mut conn = support::replication(pg).await;
    let mut stream = conn.base_backup(options).await.expect("BASE_BACKUP");
    let mut b = Backup {
        events: Vec::new(),
        start: Lsn::INVALID,
        end: Lsn::INVALID,
        archives: Vec::new(),
        manifest: Vec::new(),
        progress: Vec::new(),
    };
    let mut in_archive = false;
    while let Some(ev) = stream.next().await.expect("BASE_BACKUP stream") {
        match ev {
            BaseBackupEvent::Started { start_lsn, .. } => {
                b.events.push("started");
                b.start = start_lsn;
            }
            BaseBackupEvent::Tablespaces(_) => b.events.push("tablespaces"),
            BaseBackupEvent::ArchiveStart {
                name,
                tablespace_location,
            } => {
                assert!(!in_archive, "archive started inside another");
                in_archive = true;
                b.events.push("archive");
                b.archives.push(Archive {
                    name,
                    location: tablespace_location,
                    bytes: Vec::new(),
                });
            }
            BaseBackupEvent::ArchiveData(d) => {
                assert!(in_archive, "data outside an archive");
                b.archives.last_mut().unwrap().bytes.extend_from_slice(&d);
            }
            BaseBackupEvent::ArchiveEnd => {
                assert!(in_archive);
                in_archive = false;
            }
            BaseBackupEvent::Progress(p) => b.progress.push(p),
            BaseBackupEvent::ManifestStart => b.events.push("manifest"),
            BaseBackupEvent::ManifestData(d) => b.manifest.extend_from_slice(&d),
            BaseBackupEvent::Finished { end_lsn, .. } => {
                b.events.push("finished");
                b.end = end_lsn;
            }
        }
    }
    drop(stream);
    // The connection is usable again after the stream.
    conn.identify_system()
        .await
        .expect("IDENTIFY_SYSTEM after BASE_BACKUP");
    b
}

/// Regular-file members of a tar archive, by path.
fn tar_files(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut archive = tar::Archive::new(bytes);
    for entry in archive.entries().expect("tar entries") {
        let mut entry = entry.expect("tar entry");
        if entry.header().entry_type().is_file() {
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            files.insert(path, data);
        }
    }
    files
}

/// Files the server writes for the backup itself, or that change after it.
fn not_on_disk_unchanged(path: &str) -> bool {
    matches!(
        path,
        "backup_label" | "tablespace_map" | "global/pg_control" | "backup_manifest"
    ) || path.starts_with("pg_wal/")
}

fn manifest_files(manifest: &[u8]) -> BTreeMap<String, (u64, String)> {
    let v: serde_json::Value = serde_json::from_slice(manifest).expect("manifest is JSON");
    v["Files"]
        .as_array()
        .expect("Files")
        .iter()
        .map(|f| {
            (
                f["Path"].as_str().expect("Path").to_string(),
                (
                    f["Size"].as_u64().expect("Size"),
                    f["Checksum"].as_str().unwrap_or_default().to_string(),
                ),
            )
        })
        .collect()
}

#[tokio::test]
async fn base_backup_tar_members_equal_server_files_and_manifest() {
    for major in test_majors() {
        // Autovacuum off: nothing may rewrite data files between the backup and the comparison.
        let pg = cluster(major)
            .setting("autovacuum", "off")
            .tablespace("ts1")
            .start();
        pg.psql(
            "CREATE TABLE big (id int, s text) TABLESPACE ts1;
             INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 20000) g;
             CREATE TABLE small AS SELECT g FROM generate_series(1, 1000) g;
             CHECKPOINT;",
        );
        let ts_oid: u32 = pg
            .psql("SELECT oid FROM pg_tablespace WHERE spcname = 'ts1'")
            .parse()
            .unwrap();
        let options = BaseBackupOptions {
            checkpoint: Checkpoint::Fast,
            progress: true,
            ..BaseBackupOptions::default()
        };
        let b = take_backup(&pg, &options).await;
        let ctx = format!("PostgreSQL {major}");

        assert_eq!(b.events.first(), Some(&"started"), "{ctx}: {:?}", b.events);
        assert_eq!(b.events.get(1), Some(&"tablespaces"), "{ctx}");
        assert_eq!(b.events.last(), Some(&"finished"), "{ctx}");
        assert!(b.end > b.start, "{ctx}: end {} <= start {}", b.end, b.start);
        if major >= 15 {
            assert!(!b.progress.is_empty(), "{ctx}: no progress messages");
        }
        assert!(b.progress.windows(2).all(|w| w[0] <= w[1]), "{ctx}");

        // One archive per tablespace, main directory last.
        let names: Vec<_> = b.archives.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            vec![format!("{ts_oid}.tar"), "base.tar".to_string()],
            "{ctx}"
        );
        let ts_dir = pg.tablespace_dir("ts1");
        let location = b.archives[0].location.clone().expect("tablespace location");
        assert_eq!(
            Path::new(&location).canonicalize().unwrap(),
            ts_dir.canonicalize().unwrap(),
            "{ctx}"
        );
        assert_eq!(b.archives[1].location, None, "{ctx}");

        let manifest = manifest_files(&b.manifest);
        let mut compared = 0;
        let mut listed = 0;
        for archive in &b.archives {
            // Every archive is a complete tar, terminator included (added by the client
            // for 13-14, where servers leave it out).
            assert!(
                archive.bytes.len() >= 1024 && archive.bytes.ends_with(&[0u8; 1024]),
                "{ctx}: {} lacks the tar terminator",
                archive.name
            );
            let (root, manifest_prefix): (PathBuf, String) = match &archive.location {
                Some(loc) => (PathBuf::from(loc), format!("pg_tblspc/{ts_oid}/")),
                None => (pg.data_dir().to_path_buf(), String::new()),
            };
            for (path, data) in tar_files(&archive.bytes) {
                let in_manifest = format!("{manifest_prefix}{path}");
                if !path.starts_with("pg_wal/") {
                    let (size, crc) = manifest
                        .get(&in_manifest)
                        .unwrap_or_else(|| panic!("{ctx}: {in_manifest} not in the manifest"));
                    assert_eq!(*size, data.len() as u64, "{ctx}: size of {in_manifest}");
                    assert_eq!(
                        crc,
                        &hex_le(crc32c::crc32c(&data)),
                        "{ctx}: CRC32C of {in_manifest}"
                    );
                    listed += 1;
                }
                if archive.location.is_none() && not_on_disk_unchanged(&path) {
                    continue;
                }
                let on_disk = std::fs::read(root.join(&path))
                    .unwrap_or_else(|e| panic!("{ctx}: reading server file {path}: {e}"));
                assert!(
                    on_disk == data,
                    "{ctx}: {path} differs from the server's file"
                );
                compared += 1;
            }
        }
        assert_eq!(
            listed,
            manifest.len(),
            "{ctx}: manifest lists files not in the tars"
        );
        assert!(compared > 500, "{ctx}: only {compared} files compared");
    }
}

/// The manifest's CRC32C is the u32 in server (little-endian) byte order, as hex.
fn hex_le(crc: u32) -> String {
    crc.to_le_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn base_backup_with_wal_includes_segments_and_reports_bad_options() {
    for major in test_majors() {
        let pg = cluster(major).start();
        let options = BaseBackupOptions {
            checkpoint: Checkpoint::Fast,
            wal: true,
            ..BaseBackupOptions::default()
        };
        let b = take_backup(&pg, &options).await;
        let base = tar_files(&b.archives.last().unwrap().bytes);
        let wal: Vec<_> = base.keys().filter(|p| p.starts_with("pg_wal/0")).collect();
        assert!(!wal.is_empty(), "PostgreSQL {major}: no WAL in base.tar");
        for p in wal {
            assert_eq!(
                base[p].len(),
                16 << 20,
                "PostgreSQL {major}: {p} is not a full segment"
            );
        }

        // A file the server cannot read fails the backup mid-COPY with a server error that
        // keeps its SQLSTATE, and the connection survives it.
        let unreadable = pg.data_dir().join("unreadable_by_server");
        std::fs::write(&unreadable, b"secret").unwrap();
        std::fs::set_permissions(
            &unreadable,
            std::os::unix::fs::PermissionsExt::from_mode(0o000),
        )
        .unwrap();
        let mut conn = support::replication(&pg).await;
        let mut stream = conn
            .base_backup(&BaseBackupOptions::default())
            .await
            .unwrap();
        let err = loop {
            match stream.next().await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    panic!("PostgreSQL {major}: an unreadable file did not fail the backup")
                }
                Err(e) => break e,
            }
        };
        assert_eq!(err.code(), Some("42501"), "PostgreSQL {major}: {err}");
        drop(stream);
        assert!(err.as_db_error().is_some(), "PostgreSQL {major}: {err}");
        conn.identify_system()
            .await
            .expect("usable after the error");
    }
}
