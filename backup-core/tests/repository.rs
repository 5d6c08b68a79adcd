//! Repository lifecycle: init, open, wrong passphrase, rekey, cluster binding, file names.

use backup_core::repo::config::CONFIG_FILE;
use backup_core::{
    Aead, BindOutcome, ClusterIdentity, Compression, Encryption, InitOptions, KdfCost, RepoError,
    Repository, Secret,
};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn loc(p: &std::path::Path) -> backup_core::store::RepoLocation {
    backup_core::store::RepoLocation::local(p)
}

/// Cheap scrypt so the tests stay fast; the default cost is exercised once below.
fn fast(encryption: Encryption, compression: Compression) -> InitOptions {
    InitOptions {
        compression,
        encryption,
        kdf_cost: KdfCost {
            log2_n: 10,
            r: 8,
            p: 1,
        },
        ..InitOptions::default()
    }
}

fn write_file(repo: &Repository, name: &str, data: &[u8]) {
    let mut s = repo.create_file(name).unwrap();
    s.write_all(data).unwrap();
    s.finish().unwrap();
}

fn read_file(repo: &Repository, name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    repo.open_file(name).unwrap().read_to_end(&mut out).unwrap();
    out
}

fn cluster(sysid: u64) -> ClusterIdentity {
    ClusterIdentity {
        system_identifier: sysid,
        major: 16,
        wal_segment_size: 16 << 20,
    }
}

#[test]
fn defaults_are_lz4_and_aes_256_gcm_with_a_bounded_kdf() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("repo");
    let pw = Secret::from("correct horse");
    let repo = Repository::init(&loc(&dir), InitOptions::default(), Some(&pw)).unwrap();
    assert_eq!(repo.config().compression, Compression::Lz4);
    assert_eq!(repo.aead(), Some(Aead::Aes256Gcm));
    let kdf = &repo.config().encryption.as_ref().unwrap().kdf;
    assert_eq!((kdf.n, kdf.r, kdf.p), (1 << 15, 8, 1));
    // Private: the directory and the config.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(CONFIG_FILE)), 0o600);
    // The config holds no key or passphrase in the clear.
    let raw = std::fs::read(dir.join(CONFIG_FILE)).unwrap();
    assert!(!String::from_utf8_lossy(&raw).contains("correct horse"));
    assert!(raw.starts_with(b"PGSTREAM"));
    let again = Repository::open(&loc(&dir), Some(&pw)).unwrap();
    assert_eq!(again.id(), repo.id());
}

#[test]
fn files_round_trip_through_the_repository() {
    for enc in [
        Encryption::None,
        Encryption::Aead(Aead::Aes256Gcm),
        Encryption::Aead(Aead::ChaCha20Poly1305),
    ] {
        let d = tempfile::tempdir().unwrap();
        // An unencrypted repository takes no passphrase (and refuses one at open).
        let pw = Secret::from("pw");
        let pw = (enc != Encryption::None).then_some(&pw);
        let repo = Repository::init(&loc(d.path()), fast(enc, Compression::Zstd(3)), pw).unwrap();
        backup_core::fsutil::create_dir_all_durably(&d.path().join("backups/b1")).unwrap();
        let data: Vec<u8> = (0..500_000u32).map(|i| (i % 97) as u8).collect();
        write_file(&repo, "backups/b1/base.tar.zst", &data);
        let reopened = Repository::open(&loc(d.path()), pw).unwrap();
        assert!(
            read_file(&reopened, "backups/b1/base.tar.zst") == data,
            "{enc}"
        );
        if enc != Encryption::None {
            // Renaming a file inside the repository is detected by its identity.
            std::fs::rename(
                d.path().join("backups/b1/base.tar.zst"),
                d.path().join("backups/b1/other.tar.zst"),
            )
            .unwrap();
            let e = reopened.open_file("backups/b1/other.tar.zst").unwrap_err();
            assert!(e.to_string().contains("swapped or renamed"), "{e}");
        }
        for bad in [
            "../x",
            "/etc/passwd",
            "a//b",
            "./a",
            "",
            CONFIG_FILE,
            "a/../b",
        ] {
            let e = repo.create_file(bad).err().unwrap();
            assert!(matches!(e, RepoError::Invalid(_)), "{bad}: {e}");
        }
    }
}

#[test]
fn wrong_or_missing_passphrase_is_refused_clearly() {
    let d = tempfile::tempdir().unwrap();
    let opts = fast(Encryption::Aead(Aead::ChaCha20Poly1305), Compression::Lz4);
    let e = Repository::init(&loc(d.path()), opts.clone(), None).unwrap_err();
    assert!(e.to_string().contains("PGSTREAM_PASSPHRASE"), "{e}");
    assert_eq!(
        std::fs::read_dir(d.path()).unwrap().count(),
        0,
        "nothing written"
    );
    Repository::init(&loc(d.path()), opts, Some(&Secret::from("right"))).unwrap();
    let e = Repository::open(&loc(d.path()), Some(&Secret::from("wrong"))).unwrap_err();
    assert!(e.is_wrong_passphrase(), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("wrong passphrase") && msg.contains(&*d.path().to_string_lossy()),
        "{msg}"
    );
    let e = Repository::open(&loc(d.path()), None).unwrap_err();
    assert!(e.to_string().contains("--passphrase-file"), "{e}");
    let e = Repository::open(&loc(d.path()), Some(&Secret::from(""))).unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
}

#[test]
fn rekey_keeps_files_readable_and_retires_the_old_passphrase() {
    let d = tempfile::tempdir().unwrap();
    let old = Secret::from("old passphrase");
    let new = Secret::from("new passphrase");
    let repo = Repository::init(
        &loc(d.path()),
        fast(Encryption::Aead(Aead::Aes256Gcm), Compression::Lz4),
        Some(&old),
    )
    .unwrap();
    write_file(&repo, "f1", b"written before the rekey");
    let before_file = std::fs::read(d.path().join("f1")).unwrap();
    let before_cfg = repo.config().clone();

    let e = Repository::rekey(&loc(d.path()), &Secret::from("guess"), &new).unwrap_err();
    assert!(e.is_wrong_passphrase(), "{e}");
    Repository::rekey(&loc(d.path()), &old, &new).unwrap();

    let e = Repository::open(&loc(d.path()), Some(&old)).unwrap_err();
    assert!(e.is_wrong_passphrase(), "{e}");
    let repo = Repository::open(&loc(d.path()), Some(&new)).unwrap();
    assert_eq!(read_file(&repo, "f1"), b"written before the rekey");
    assert_eq!(
        std::fs::read(d.path().join("f1")).unwrap(),
        before_file,
        "data untouched"
    );
    let after = repo.config();
    let (b, a) = (
        before_cfg.encryption.as_ref().unwrap(),
        after.encryption.as_ref().unwrap(),
    );
    assert_ne!(b.kdf.salt, a.kdf.salt, "fresh salt");
    assert_ne!(b.keys[0].wrap, a.keys[0].wrap);
    assert_eq!((b.kdf.n, b.kdf.r, b.kdf.p), (a.kdf.n, a.kdf.r, a.kdf.p));
    assert_eq!(after.repository_id, before_cfg.repository_id);
    // Only the config and the data file exist: no temporaries left by the rewrite, and the
    // configuration lease it held is released (its directory stays, empty).
    let mut names: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec!["f1", "locks", CONFIG_FILE]);
    assert_eq!(
        std::fs::read_dir(d.path().join("locks")).unwrap().count(),
        0
    );

    Repository::rekey_with_cost(
        &loc(d.path()),
        &new,
        &old,
        Some(KdfCost {
            log2_n: 11,
            r: 8,
            p: 2,
        }),
    )
    .unwrap();
    let repo = Repository::open(&loc(d.path()), Some(&old)).unwrap();
    assert_eq!(repo.config().encryption.as_ref().unwrap().kdf.n, 1 << 11);
    assert_eq!(read_file(&repo, "f1"), b"written before the rekey");
}

#[test]
fn rekey_of_an_unencrypted_repository_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let repo = Repository::init(
        &loc(d.path()),
        fast(Encryption::None, Compression::Lz4),
        None,
    )
    .unwrap();
    assert!(repo.aead().is_none());
    let e = Repository::rekey(&loc(d.path()), &Secret::from("a"), &Secret::from("b")).unwrap_err();
    assert!(matches!(e, RepoError::NotEncrypted { .. }), "{e}");
    // An unencrypted repository opens without a passphrase, and refuses one: given one, the
    // caller believes it encrypted (its configuration may have been altered).
    Repository::open(&loc(d.path()), None).unwrap();
    let e = Repository::open(&loc(d.path()), Some(&Secret::from("given"))).unwrap_err();
    assert!(matches!(e, RepoError::ClaimsUnencrypted { .. }), "{e}");
}

#[test]
fn init_refuses_non_empty_directories_and_existing_repositories() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("postgresql.conf"), b"keep me").unwrap();
    let e = Repository::init(
        &loc(d.path()),
        fast(Encryption::None, Compression::Lz4),
        None,
    )
    .unwrap_err();
    assert!(matches!(e, RepoError::NotEmpty { .. }), "{e}");
    assert!(e.to_string().contains("postgresql.conf"), "{e}");
    assert_eq!(
        std::fs::read(d.path().join("postgresql.conf")).unwrap(),
        b"keep me"
    );

    let r = tempfile::tempdir().unwrap();
    let pw = Secret::from("pw");
    let repo = Repository::init(
        &loc(r.path()),
        fast(Encryption::Aead(Aead::Aes256Gcm), Compression::Lz4),
        Some(&pw),
    )
    .unwrap();
    let cfg = std::fs::read(r.path().join(CONFIG_FILE)).unwrap();
    let e = Repository::init(
        &loc(r.path()),
        fast(Encryption::None, Compression::Lz4),
        None,
    )
    .unwrap_err();
    assert!(matches!(e, RepoError::AlreadyRepository { .. }), "{e}");
    assert!(e.to_string().contains(repo.id()), "{e}");
    assert_eq!(
        std::fs::read(r.path().join(CONFIG_FILE)).unwrap(),
        cfg,
        "unchanged"
    );

    let e = Repository::open(&loc(d.path()), None).unwrap_err();
    assert!(e.to_string().contains("pgstream init --repo"), "{e}");
}

#[test]
fn cluster_binding_is_recorded_once_and_enforced() {
    let d = tempfile::tempdir().unwrap();
    let pw = Secret::from("pw");
    let mut repo = Repository::init(
        &loc(d.path()),
        fast(Encryption::Aead(Aead::Aes256Gcm), Compression::Lz4),
        Some(&pw),
    )
    .unwrap();
    assert_eq!(repo.cluster(), None);
    let a = cluster(7_300_000_000_000_000_001);
    assert_eq!(repo.bind_cluster(a).unwrap(), BindOutcome::Bound);
    assert_eq!(repo.bind_cluster(a).unwrap(), BindOutcome::AlreadyBound);

    let mut reopened = Repository::open(&loc(d.path()), Some(&pw)).unwrap();
    assert_eq!(reopened.cluster(), Some(a));
    let b = cluster(7_300_000_000_000_000_002);
    let e = reopened.bind_cluster(b).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, RepoError::ClusterMismatch { .. }));
    assert!(
        msg.contains("7300000000000000001") && msg.contains("7300000000000000002"),
        "{msg}"
    );
    let newer = ClusterIdentity { major: 17, ..a };
    let e = reopened.bind_cluster(newer).unwrap_err();
    assert!(e.to_string().contains("PostgreSQL 17"), "{e}");
    assert_eq!(
        Repository::open(&loc(d.path()), Some(&pw))
            .unwrap()
            .cluster(),
        Some(a)
    );

    // A rekey after binding keeps the binding, and a bind after a rekey keeps the new key.
    let pw2 = Secret::from("pw2");
    let d2 = tempfile::tempdir().unwrap();
    let mut r2 = Repository::init(
        &loc(d2.path()),
        fast(Encryption::Aead(Aead::Aes256Gcm), Compression::Lz4),
        Some(&pw),
    )
    .unwrap();
    Repository::rekey(&loc(d2.path()), &pw, &pw2).unwrap();
    r2.bind_cluster(a).unwrap();
    let r2 = Repository::open(&loc(d2.path()), Some(&pw2)).unwrap();
    assert_eq!(r2.cluster(), Some(a));
}

#[test]
fn damaged_config_is_reported_not_misread() {
    let d = tempfile::tempdir().unwrap();
    let pw = Secret::from("pw");
    Repository::init(
        &loc(d.path()),
        fast(Encryption::Aead(Aead::Aes256Gcm), Compression::Lz4),
        Some(&pw),
    )
    .unwrap();
    let path = d.path().join(CONFIG_FILE);
    let good = std::fs::read(&path).unwrap();
    let mut bad = good.clone();
    bad[40] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    let e = Repository::open(&loc(d.path()), Some(&pw)).unwrap_err();
    assert!(e.to_string().contains("CRC-32C"), "{e}");
    let mut newer = good.clone();
    newer[11] = 3;
    std::fs::write(&path, &newer).unwrap();
    let e = Repository::open(&loc(d.path()), Some(&pw)).unwrap_err();
    assert!(e.to_string().contains("upgrade pgstream"), "{e}");
}
