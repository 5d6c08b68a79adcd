use super::*;
use crate::test_support::backup_record;
use std::time::{Duration, UNIX_EPOCH};

fn record(id: &str) -> BackupRecord {
    BackupRecord {
        label: "nightly".into(),
        // The same times whatever the id.
        start_time: "2026-11-21T06:00:00Z".into(),
        end_time: "2026-11-21T06:00:05Z".into(),
        manifest_file: "backup_manifest".into(),
        ..backup_record(id, 2)
    }
}

fn write_record(cat: &Catalog, r: &BackupRecord) {
    let mut r = r.clone();
    r.seal(None).unwrap();
    let dir = cat.backup_dir(&r.id);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(RECORD_FILE), serde_json::to_vec(&r).unwrap()).unwrap();
}

#[test]
fn ids_are_sortable_timestamps_and_unique() {
    let t = UNIX_EPOCH + Duration::from_secs(1_795_500_000);
    let id = new_backup_id(t, |_| false);
    assert_eq!(id, "20261124T060000Z");
    assert!(is_backup_id(&id));
    let id2 = new_backup_id(t, |s| s == "20261124T060000Z");
    assert_eq!(id2, "20261124T060000Z-2");
    assert!(is_backup_id(&id2));
    for bad in [
        "",
        "latest",
        "../x",
        "20261125T044000",
        "20261125X044000Z",
        "20261124T060000Z-",
        "20261124T060000Z-a",
    ] {
        assert!(!is_backup_id(bad), "{bad:?}");
    }
}

#[test]
fn record_round_trips_with_lsns_as_text() {
    let r = record("20261121T060000Z");
    let json = serde_json::to_string(&r).unwrap();
    assert!(json.contains("\"start_lsn\":\"0/2000028\""), "{json}");
    assert!(
        json.contains("\"system_identifier\":\"7300000000000000001\""),
        "{json}"
    );
    let back: BackupRecord = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
    assert_eq!(back.system_identifier(), Some(7_300_000_000_000_000_001));
}

#[test]
fn list_resolve_and_errors() {
    let repo = tempfile::tempdir().unwrap();
    let cat = Catalog::new(repo.path());
    assert!(cat.list().unwrap().is_empty());
    assert!(matches!(
        cat.resolve("latest"),
        Err(CatalogError::NoBackups)
    ));
    write_record(&cat, &record("20261121T060000Z"));
    write_record(&cat, &record("20261122T060000Z"));
    // In-progress and foreign entries are not backups.
    fs::create_dir_all(cat.in_progress_dir("20261123T060000Z")).unwrap();
    fs::create_dir_all(cat.dir().join("notes")).unwrap();
    let ids: Vec<_> = cat.list().unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(ids, ["20261121T060000Z", "20261122T060000Z"]);
    assert_eq!(cat.resolve("latest").unwrap().id, "20261122T060000Z");
    assert!(matches!(
        cat.resolve("20200101T000000Z"),
        Err(CatalogError::NoSuchBackup { .. })
    ));
    assert!(matches!(
        cat.resolve("../etc"),
        Err(CatalogError::NoSuchBackup { .. })
    ));

    // A damaged record is an error naming the file, not a silently shorter list.
    fs::write(cat.backup_dir("20261122T060000Z").join(RECORD_FILE), b"{").unwrap();
    let err = cat.list().unwrap_err().to_string();
    assert!(
        err.contains("20261122T060000Z") && err.contains(RECORD_FILE),
        "{err}"
    );

    // A record claiming another id, or a newer format, is refused.
    let mut other = record("20261121T060000Z");
    other.id = "20261129T060000Z".into();
    other.seal(None).unwrap();
    fs::write(
        cat.backup_dir("20261121T060000Z").join(RECORD_FILE),
        serde_json::to_vec(&other).unwrap(),
    )
    .unwrap();
    assert!(matches!(
        cat.read("20261121T060000Z"),
        Err(CatalogError::InvalidRecord { .. })
    ));
    let mut newer = record("20261121T060000Z");
    newer.format = 99;
    newer.seal(None).unwrap();
    fs::write(
        cat.backup_dir("20261121T060000Z").join(RECORD_FILE),
        serde_json::to_vec(&newer).unwrap(),
    )
    .unwrap();
    let err = cat.read("20261121T060000Z").unwrap_err().to_string();
    assert!(err.contains("format 99"), "{err}");
}

#[test]
fn stale_in_progress_dirs_are_those_without_a_live_lock() {
    let repo = tempfile::tempdir().unwrap();
    let cat = Catalog::new(repo.path());
    let dead = cat.in_progress_dir("20261121T060000Z");
    let live = cat.in_progress_dir("20261121T070000Z");
    let no_lock = cat.in_progress_dir("20261121T080000Z");
    for d in [&dead, &live, &no_lock] {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(Catalog::lock_path(&dead), b"").unwrap();
    let held = fs::File::create(Catalog::lock_path(&live)).unwrap();
    held.lock().unwrap();
    let mut stale = cat.stale_in_progress().unwrap();
    stale.sort();
    assert_eq!(stale, vec![dead, no_lock]);
    drop(held);
}

#[test]
fn sealed_records_detect_damage_and_alteration() {
    let repo = tempfile::tempdir().unwrap();
    let cat = Catalog::new(repo.path());
    let key = crate::crypto::keywrap::generate_data_key().unwrap();
    let other_key = crate::crypto::keywrap::generate_data_key().unwrap();
    let mut r = record("20261121T060000Z");
    r.seal(Some(&key)).unwrap();
    let dir = cat.backup_dir(&r.id);
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join(RECORD_FILE);
    let bytes = serde_json::to_vec_pretty(&r).unwrap();
    fs::write(&path, &bytes).unwrap();
    let read = cat.read(&r.id).unwrap();
    read.verify_mac(Some(&key), &path).unwrap();
    assert!(matches!(
        read.verify_mac(Some(&other_key), &path),
        Err(CatalogError::Damaged { .. })
    ));

    // One changed digit: the checksum catches it on any read.
    let text = String::from_utf8(bytes.clone())
        .unwrap()
        .replace("\"raw_bytes\": 1000", "\"raw_bytes\": 1001");
    fs::write(&path, &text).unwrap();
    let err = cat.read(&r.id).unwrap_err().to_string();
    assert!(
        err.contains("damaged") && err.contains(RECORD_FILE),
        "{err}"
    );

    // Changed and re-checksummed without the key: the MAC catches it.
    let mut forged = r.clone();
    forged.raw_bytes = 1001;
    forged.seal(None).unwrap();
    forged.mac = r.mac.clone();
    fs::write(&path, serde_json::to_vec(&forged).unwrap()).unwrap();
    let read = cat.read(&r.id).unwrap();
    assert!(matches!(
        read.verify_mac(Some(&key), &path),
        Err(CatalogError::Damaged { .. })
    ));
}

/// Regression: without exact float parsing, a re-read `duration_seconds` could differ in its
/// last bit and a fresh record failed its own checksum.
#[test]
fn sealed_record_with_awkward_float_survives_a_round_trip() {
    for d in [
        0.1 + 0.2,
        1.0 / 3.0,
        123.456_789_012_345_67,
        2.0e-9,
        86_399.999_999_9,
    ] {
        let mut r = record("20261121T060000Z");
        r.duration_seconds = d;
        r.seal(None).unwrap();
        let back: BackupRecord =
            serde_json::from_slice(&serde_json::to_vec_pretty(&r).unwrap()).unwrap();
        back.verify_checksum(Path::new("x")).unwrap();
        assert_eq!(back.duration_seconds.to_bits(), d.to_bits());
    }
}
