//! Repository format 2 against someone who can write to the repository but has no passphrase,
//! data-key rotation and retirement, and the upgrade from format 1 (on the in-memory backend).

use std::io::{Read, Write};
use std::sync::Arc;

use super::config::{self, RepoConfig, CONFIG_FILE, FORMAT_V1, FORMAT_VERSION};
use super::retire::{retire_key, RetireError};
use super::*;
use crate::catalog::Catalog;
use crate::crypto::{Aead, Encryption};
use crate::store::mem::MemStore;
use crate::store::{PutMode, Store};
use crate::test_support::{backup_record, fast_init_options, PASSPHRASE};

fn pass() -> Secret {
    Secret::from(PASSPHRASE)
}

fn encrypted() -> (MemStore, Repository) {
    let store = MemStore::default();
    let repo = Repository::init_in(
        Arc::new(store.clone()),
        fast_init_options(Encryption::Aead(Aead::Aes256Gcm)),
        Some(&pass()),
    )
    .unwrap();
    (store, repo)
}

fn open(store: &MemStore, p: &Secret) -> Result<Repository, RepoError> {
    Repository::open_in(Arc::new(store.clone()), Some(p))
}

fn config_of(store: &MemStore) -> RepoConfig {
    config::decode(&store.bytes(CONFIG_FILE).unwrap()).unwrap()
}

/// What an attacker without the passphrase can do to the config: edit it and fix the CRC.
fn tamper(store: &MemStore, edit: impl FnOnce(&mut RepoConfig)) {
    let mut c = config_of(store);
    edit(&mut c);
    store.overwrite(CONFIG_FILE, config::encode(&c));
}

fn write(repo: &Repository, name: &str, data: &[u8]) {
    let mut s = repo.create_file(name).unwrap();
    s.write_all(data).unwrap();
    s.finish().unwrap();
}

fn read(repo: &Repository, name: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    repo.open_file(name)
        .map_err(|e| e.to_string())?
        .read_to_end(&mut out)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

#[test]
fn a_new_repository_has_format_2_and_an_authenticated_config() {
    let (store, _repo) = encrypted();
    let c = config_of(&store);
    assert_eq!(c.format_version, FORMAT_VERSION);
    assert!(c.mac.is_some());
    open(&store, &pass()).unwrap();
}

/// Regression (issue 11): setting "encryption": null made the next base write plaintext while
/// the passphrase was given and silently ignored.
#[test]
fn a_config_altered_to_say_unencrypted_is_refused_when_a_passphrase_is_given() {
    let (store, _repo) = encrypted();
    tamper(&store, |c| {
        c.encryption = None;
        c.mac = None;
    });
    let err = open(&store, &pass()).unwrap_err();
    assert!(matches!(err, RepoError::ClaimsUnencrypted { .. }), "{err}");
    assert!(err.to_string().contains("altered"), "{err}");
}

type Edit = Box<dyn Fn(&mut RepoConfig)>;

#[test]
fn any_other_alteration_of_the_config_fails_its_mac() {
    let (store, _repo) = encrypted();
    let edits: Vec<Edit> = vec![
        Box::new(|c| c.compression = crate::compress::Compression::None),
        Box::new(|c| c.cluster = Some(crate::test_support::cluster(16 << 20))),
        Box::new(|c| c.encryption.as_mut().unwrap().chunk_size = 4096),
        Box::new(|c| c.mac = None),
    ];
    let original = store.bytes(CONFIG_FILE).unwrap();
    for edit in edits {
        store.overwrite(CONFIG_FILE, original.clone());
        tamper(&store, |c| edit(c));
        let err = open(&store, &pass()).unwrap_err();
        assert!(
            err.to_string().contains("altered") || err.to_string().contains("MAC"),
            "{err}"
        );
    }
    store.overwrite(CONFIG_FILE, original);
    open(&store, &pass()).unwrap();
}

/// Regression (issue 11): a planted "newer" backup was what `restore latest` picked.
#[test]
fn a_planted_record_is_refused_by_the_authenticated_catalog() {
    let (store, repo) = encrypted();
    let mut real = backup_record("20261101T000000Z", 2);
    real.seal(repo.sealing_key()).unwrap();
    repo.catalog().write(&real).unwrap();
    // Planted without the key: a valid checksum, no MAC.
    let mut planted = backup_record("20261201T000000Z", 9);
    planted.seal(None).unwrap();
    Catalog::new(&store).write(&planted).unwrap();
    let err = repo.catalog().resolve("latest").unwrap_err();
    assert!(
        err.to_string().contains("20261201T000000Z") && err.to_string().contains("MAC"),
        "{err}"
    );
    // Without the keys only checksums are checked (list without a passphrase says so).
    assert_eq!(Catalog::new(&store).list().unwrap().len(), 2);
}

#[test]
fn rotation_gives_new_files_a_key_the_old_passphrase_and_config_cannot_open() {
    let (store, repo) = encrypted();
    write(&repo, "backups/a/old.tar", b"before the rotation");
    let old_config = store.bytes(CONFIG_FILE).unwrap();
    let new_pass = Secret::from("a brand new passphrase");
    let active = Repository::rekey_in(
        &store,
        &pass(),
        &new_pass,
        RekeyOptions {
            rotate: true,
            ..RekeyOptions::default()
        },
    )
    .unwrap();
    assert_eq!(active, 1);
    let repo = open(&store, &new_pass).unwrap();
    assert_eq!(
        repo.keyring().unwrap().ids().collect::<Vec<_>>(),
        vec![0, 1]
    );
    write(&repo, "backups/a/new.tar", b"after the rotation");
    assert_eq!(
        read(&repo, "backups/a/old.tar").unwrap(),
        b"before the rotation"
    );
    assert_eq!(
        read(&repo, "backups/a/new.tar").unwrap(),
        b"after the rotation"
    );
    // Someone with the old passphrase and a copy of the old config: old files only.
    let thief = MemStore::default();
    thief.overwrite(CONFIG_FILE, old_config);
    for name in ["backups/a/old.tar", "backups/a/new.tar"] {
        thief.overwrite(name, store.bytes(name).unwrap());
    }
    let stolen = open(&thief, &pass()).unwrap();
    assert_eq!(
        read(&stolen, "backups/a/old.tar").unwrap(),
        b"before the rotation"
    );
    let err = read(&stolen, "backups/a/new.tar").unwrap_err();
    assert!(err.contains("data key 1"), "{err}");
}

#[test]
fn a_key_is_retired_only_once_nothing_needs_it() {
    let (store, repo) = encrypted();
    write(&repo, "backups/20261101T000000Z/base.tar", b"old");
    let mut r = backup_record("20261101T000000Z", 2);
    r.seal(repo.sealing_key()).unwrap();
    repo.catalog().write(&r).unwrap();
    let opts = RekeyOptions {
        rotate: true,
        ..RekeyOptions::default()
    };
    Repository::rekey_in(&store, &pass(), &pass(), opts).unwrap();
    let err = retire_key(&store, &pass(), 1).unwrap_err();
    assert!(matches!(err, RetireError::Active { .. }), "{err}");
    let err = retire_key(&store, &pass(), 0).unwrap_err();
    assert!(
        matches!(err, RetireError::StillUsed { count: 1, .. }),
        "{err}"
    );
    // A receive-wal running: refused whatever is stored.
    {
        let _rw = store
            .acquire_lease(
                "receive-wal",
                &crate::store::lease::LeaseHolder::this_process("rw"),
            )
            .unwrap();
        let err = retire_key(&store, &pass(), 0).unwrap_err();
        assert!(matches!(err, RetireError::WriterRunning { .. }), "{err}");
    }
    // The data file goes (expired): the record is sealed again, and the key leaves.
    store
        .delete(&["backups/20261101T000000Z/base.tar".to_string()])
        .unwrap();
    let done = retire_key(&store, &pass(), 0).unwrap();
    assert_eq!(
        done.resealed,
        vec![Catalog::record_name("20261101T000000Z")]
    );
    let repo = open(&store, &pass()).unwrap();
    assert_eq!(repo.keyring().unwrap().ids().collect::<Vec<_>>(), vec![1]);
    let record = repo.catalog().read("20261101T000000Z").unwrap();
    assert_eq!(record.key_id, Some(1));
}

/// A format 1 repository (as earlier versions made it) stays readable and upgrades in one
/// atomic rewrite; its files, records and pins keep working (key 0).
#[test]
fn a_format_1_repository_is_read_and_upgraded() {
    let (store, repo) = encrypted();
    // Make it format 1: key 0 rewrapped without its id, no MAC.
    let keyring = repo.keyring().unwrap().clone();
    let mut c = config_of(&store);
    c.format_version = FORMAT_V1;
    c.mac = None;
    keys::rewrap(&store, &mut c, keyring, &pass(), None, None).unwrap();
    store.overwrite(CONFIG_FILE, config::encode(&c));
    let v1 = open(&store, &pass()).unwrap();
    write(&v1, "backups/x/f", b"format 1 file");
    assert_eq!(&store.bytes("backups/x/f").unwrap()[8..10], &[0, 1]);
    let mut r = backup_record("20261101T000000Z", 2);
    r.seal(v1.sealing_key()).unwrap();
    assert_eq!(r.key_id, None);
    v1.catalog().write(&r).unwrap();
    let err = Repository::rekey_in(
        &store,
        &pass(),
        &pass(),
        RekeyOptions {
            rotate: true,
            ..RekeyOptions::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, RepoError::NeedsUpgrade { .. }), "{err}");

    assert!(Repository::upgrade_in(&store, Some(&pass())).unwrap());
    assert!(!Repository::upgrade_in(&store, Some(&pass())).unwrap());
    let c = config_of(&store);
    assert_eq!(c.format_version, FORMAT_VERSION);
    assert!(c.mac.is_some());
    let v2 = open(&store, &pass()).unwrap();
    assert_eq!(read(&v2, "backups/x/f").unwrap(), b"format 1 file");
    v2.catalog().read("20261101T000000Z").unwrap();
    write(&v2, "backups/x/g", b"format 2 file");
    assert_eq!(&store.bytes("backups/x/g").unwrap()[8..10], &[0, 2]);
    // A wrong passphrase upgrades nothing.
    store.overwrite(
        CONFIG_FILE,
        config::encode(&{
            let mut c = config_of(&store);
            c.format_version = FORMAT_V1;
            c
        }),
    );
    let before = store.bytes(CONFIG_FILE).unwrap();
    assert!(Repository::upgrade_in(&store, Some(&Secret::from("wrong"))).is_err());
    assert_eq!(store.bytes(CONFIG_FILE).unwrap(), before);
}

#[test]
fn an_unencrypted_repository_needs_no_passphrase_and_refuses_one() {
    let store = MemStore::default();
    Repository::init_in(
        Arc::new(store.clone()),
        fast_init_options(Encryption::None),
        None,
    )
    .unwrap();
    Repository::open_in(Arc::new(store.clone()), None).unwrap();
    let err = open(&store, &pass()).unwrap_err();
    assert!(matches!(err, RepoError::ClaimsUnencrypted { .. }), "{err}");
    store.put("x", b"1", PutMode::Create).unwrap();
}
