use super::*;
use crate::store::mem::MemStore;
use crate::store::PutMode;
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
    cat.write(&r).unwrap();
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
    let store = MemStore::default();
    let cat = Catalog::new(&store);
    assert!(cat.list().unwrap().is_empty());
    assert!(matches!(
        cat.resolve("latest"),
        Err(CatalogError::NoBackups)
    ));
    write_record(&cat, &record("20261121T060000Z"));
    write_record(&cat, &record("20261122T060000Z"));
    // Unfinished backups (no record) and foreign entries are not backups.
    store
        .put(
            "backups/20261123T060000Z/base.tar.lz4",
            b"x",
            PutMode::Create,
        )
        .unwrap();
    store.put("backups/notes/x", b"x", PutMode::Create).unwrap();
    // A record is written once.
    let err = cat.write(&record("20261122T060000Z")).unwrap_err();
    assert!(
        matches!(err, CatalogError::Store(ref e) if e.is_already_exists()),
        "{err}"
    );
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
    store.overwrite(&Catalog::record_name("20261122T060000Z"), b"{".to_vec());
    let err = cat.list().unwrap_err().to_string();
    assert!(
        err.contains("20261122T060000Z") && err.contains(RECORD_FILE),
        "{err}"
    );

    // A record claiming another id, or a newer format, is refused.
    let mut other = record("20261121T060000Z");
    other.id = "20261129T060000Z".into();
    other.seal(None).unwrap();
    store.overwrite(
        &Catalog::record_name("20261121T060000Z"),
        serde_json::to_vec(&other).unwrap(),
    );
    assert!(matches!(
        cat.read("20261121T060000Z"),
        Err(CatalogError::InvalidRecord { .. })
    ));
    let mut newer = record("20261121T060000Z");
    newer.format = 99;
    newer.seal(None).unwrap();
    store.overwrite(
        &Catalog::record_name("20261121T060000Z"),
        serde_json::to_vec(&newer).unwrap(),
    );
    let err = cat.read("20261121T060000Z").unwrap_err().to_string();
    assert!(err.contains("format 99"), "{err}");
}

#[test]
fn sealed_records_detect_damage_and_alteration() {
    let store = MemStore::default();
    let cat = Catalog::new(&store);
    let key = crate::crypto::keyring::Keyring::single(
        crate::crypto::keywrap::generate_data_key().unwrap(),
    );
    let other_key = crate::crypto::keyring::Keyring::single(
        crate::crypto::keywrap::generate_data_key().unwrap(),
    );
    let mut r = record("20261121T060000Z");
    r.seal(Some(crate::repo::SealKey {
        id: None,
        key: key.active().1,
    }))
    .unwrap();
    let name = Catalog::record_name(&r.id);
    let path = cat.record_path(&r.id);
    let bytes = serde_json::to_vec_pretty(&r).unwrap();
    store.put(&name, &bytes, PutMode::Create).unwrap();
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
    store.overwrite(&name, text.into_bytes());
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
    store.overwrite(&name, serde_json::to_vec(&forged).unwrap());
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
        back.verify_checksum("x").unwrap();
        assert_eq!(back.duration_seconds.to_bits(), d.to_bits());
    }
}

mod lifecycle_tests {
    use super::*;
    use crate::catalog::lifecycle::{self, claim_new_id, delete_backup, remove_dead};
    use crate::store::lease::LeaseHolder;
    use crate::store::Store;

    const T: u64 = 1_795_500_000; // 2026-11-24T06:00:00Z

    fn holder() -> LeaseHolder {
        LeaseHolder::this_process("test base")
    }

    /// Two runs started in the same second each own their id.
    #[test]
    fn two_backups_in_the_same_second_get_two_ids() {
        let store = MemStore::default();
        let t = UNIX_EPOCH + Duration::from_secs(T);
        let a = claim_new_id(&store, t, &holder()).unwrap();
        let b = claim_new_id(&store, t, &holder()).unwrap();
        assert_eq!(a.id(), "20261124T060000Z");
        assert_eq!(b.id(), "20261124T060000Z-2");
        // A third after the first committed and released: the id has a record, so it moves on.
        let cat = Catalog::new(&store);
        write_record(&cat, &record(a.id()));
        drop(a);
        let c = claim_new_id(&store, t, &holder()).unwrap();
        assert_eq!(c.id(), "20261124T060000Z-3");
    }

    /// Regression (issue 10): the cleanup took another run's in-progress backup for a dead one
    /// and deleted it; and a crash between record and rename made it delete a complete backup.
    #[test]
    fn cleanup_removes_only_backups_whose_writer_died() {
        let store = MemStore::default();
        let t = UNIX_EPOCH + Duration::from_secs(T);
        let cat = Catalog::new(&store);
        // A complete backup whose writer died after its record (its lease object remains).
        let done = claim_new_id(&store, t, &holder()).unwrap();
        store
            .put(
                &format!("backups/{}/base.tar", done.id()),
                b"data",
                PutMode::Create,
            )
            .unwrap();
        write_record(&cat, &record(done.id()));
        // A backup being written now, by a live run.
        let live = claim_new_id(&store, t + Duration::from_secs(60), &holder()).unwrap();
        store
            .put(
                &format!("backups/{}/base.tar", live.id()),
                b"data",
                PutMode::Create,
            )
            .unwrap();
        let live_id = live.id().to_string();
        std::mem::forget(done);
        // Both holders alive: nothing is dead.
        assert_eq!(
            remove_dead(&store, "test").unwrap().ids,
            Vec::<String>::new()
        );
        // The complete one's writer dies: still never removed (it has a record).
        store.kill_lease_holders();
        let still_live = claim_new_id(&store, t + Duration::from_secs(120), &holder()).unwrap();
        store
            .put(
                &format!("backups/{}/base.tar", still_live.id()),
                b"x",
                PutMode::Create,
            )
            .unwrap();
        let removed = remove_dead(&store, "test").unwrap();
        // `live` lost its holder with kill_lease_holders: it is dead now and goes.
        assert_eq!(removed.ids, vec![live_id]);
        assert!(cat.exists("20261124T060000Z").unwrap());
        assert!(store
            .head("backups/20261124T060000Z/base.tar")
            .unwrap()
            .is_some());
        assert!(store
            .head(&format!("backups/{}/base.tar", still_live.id()))
            .unwrap()
            .is_some());
        drop(live);
    }

    #[test]
    fn a_backup_is_deleted_record_first_and_a_busy_one_is_refused() {
        let store = MemStore::default();
        let cat = Catalog::new(&store);
        let id = "20261124T060000Z";
        store
            .put(&format!("backups/{id}/base.tar"), b"data", PutMode::Create)
            .unwrap();
        write_record(&cat, &record(id));
        let held = store
            .acquire_lease(&lifecycle::lease_name(id), &holder())
            .unwrap();
        let err = delete_backup(&store, id, "test expire").unwrap_err();
        assert!(matches!(err, CatalogError::Busy { .. }), "{err}");
        assert!(cat.exists(id).unwrap());
        drop(held);
        delete_backup(&store, id, "test expire").unwrap();
        assert!(store.list("backups/").unwrap().is_empty());
    }

    #[test]
    fn unfinished_backups_are_found_by_their_files_or_their_lease() {
        let store = MemStore::default();
        let t = UNIX_EPOCH + Duration::from_secs(T);
        let only_lease = claim_new_id(&store, t, &holder()).unwrap();
        store
            .put("backups/20200101T000000Z/base.tar", b"x", PutMode::Create)
            .unwrap();
        let listing = crate::index::scan_backups(&store).unwrap();
        let u = lifecycle::unfinished(&store, &listing).unwrap();
        assert_eq!(u.len(), 2);
        assert_eq!(u[0].id, "20200101T000000Z");
        assert!(u[0].writer.is_none());
        assert_eq!(u[1].id, only_lease.id());
        assert!(u[1].writer.is_some());
        assert_eq!(
            lifecycle::in_progress(&store).unwrap()[0].id,
            only_lease.id()
        );
    }
}
