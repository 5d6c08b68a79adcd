//! Exact BASE_BACKUP text for every supported major and every option, and each refusal.

use super::*;

fn all_on() -> BaseBackupOptions {
    BaseBackupOptions {
        label: "nightly".into(),
        progress: true,
        checkpoint: Checkpoint::Fast,
        wal: true,
        wait_for_wal_archive: false,
        max_rate_kb: Some(1024),
        tablespace_map: true,
        verify_checksums: false,
        manifest: Manifest::Yes,
        manifest_checksums: ManifestChecksums::Crc32c,
        server_compression: None,
        incremental: false,
    }
}

fn all_off() -> BaseBackupOptions {
    BaseBackupOptions {
        label: "l".into(),
        progress: false,
        checkpoint: Checkpoint::Spread,
        wal: false,
        wait_for_wal_archive: true,
        max_rate_kb: None,
        tablespace_map: false,
        verify_checksums: true,
        manifest: Manifest::No,
        manifest_checksums: ManifestChecksums::Crc32c,
        server_compression: None,
        incremental: false,
    }
}

#[test]
fn defaults_are_pg_basebackup_tar_defaults() {
    let o = BaseBackupOptions::default();
    assert_eq!(o.label, DEFAULT_LABEL);
    assert!(o.progress && o.wait_for_wal_archive && o.verify_checksums && o.tablespace_map);
    assert!(!o.wal);
    assert_eq!(o.checkpoint, Checkpoint::Spread);
    assert_eq!(o.manifest, Manifest::Yes);
    assert_eq!(o.manifest_checksums, ManifestChecksums::Crc32c);
    assert_eq!((o.max_rate_kb, o.server_compression), (None, None));
}

#[test]
fn default_command_for_every_major() {
    let o = BaseBackupOptions::default();
    assert_eq!(
        o.command(12).unwrap(),
        "BASE_BACKUP LABEL 'pgstream base backup' PROGRESS TABLESPACE_MAP"
    );
    for v in [13, 14] {
        assert_eq!(
            o.command(v).unwrap(),
            "BASE_BACKUP LABEL 'pgstream base backup' PROGRESS TABLESPACE_MAP \
             MANIFEST 'yes' MANIFEST_CHECKSUMS 'CRC32C'",
            "v{v}"
        );
    }
    for v in [15, 16, 17, 18, 19] {
        assert_eq!(
            o.command(v).unwrap(),
            "BASE_BACKUP (LABEL 'pgstream base backup', PROGRESS, TABLESPACE_MAP, \
             MANIFEST 'yes', MANIFEST_CHECKSUMS 'CRC32C', TARGET 'client')",
            "v{v}"
        );
    }
}

#[test]
fn every_option_on_old_syntax() {
    let o = all_on();
    assert_eq!(
        o.command(12).unwrap(),
        "BASE_BACKUP LABEL 'nightly' PROGRESS FAST WAL NOWAIT MAX_RATE 1024 TABLESPACE_MAP \
         NOVERIFY_CHECKSUMS"
    );
    for v in [13, 14] {
        assert_eq!(
            o.command(v).unwrap(),
            "BASE_BACKUP LABEL 'nightly' PROGRESS FAST WAL NOWAIT MAX_RATE 1024 TABLESPACE_MAP \
             NOVERIFY_CHECKSUMS MANIFEST 'yes' MANIFEST_CHECKSUMS 'CRC32C'"
        );
    }
}

#[test]
fn every_option_on_new_syntax() {
    let mut o = all_on();
    o.server_compression = Some(ServerCompression {
        method: CompressionMethod::Lz4,
        detail: Some("level=3".into()),
    });
    for v in [15, 16, 17, 18] {
        assert_eq!(
            o.command(v).unwrap(),
            "BASE_BACKUP (LABEL 'nightly', PROGRESS, CHECKPOINT 'fast', WAL, WAIT 0, \
             MAX_RATE 1024, TABLESPACE_MAP, VERIFY_CHECKSUMS 0, MANIFEST 'yes', \
             MANIFEST_CHECKSUMS 'CRC32C', TARGET 'client', COMPRESSION 'lz4', \
             COMPRESSION_DETAIL 'level=3')",
            "v{v}"
        );
    }
}

#[test]
fn every_option_off() {
    let o = all_off();
    for v in [12, 13, 14] {
        assert_eq!(o.command(v).unwrap(), "BASE_BACKUP LABEL 'l'", "v{v}");
        assert!(!o.expects_manifest(v));
    }
    for v in [15, 16, 17, 18] {
        assert_eq!(
            o.command(v).unwrap(),
            "BASE_BACKUP (LABEL 'l', TARGET 'client')"
        );
        assert!(!o.expects_manifest(v));
    }
}

#[test]
fn manifest_variants_and_checksums() {
    let mut o = all_off();
    o.manifest = Manifest::ForceEncode;
    o.manifest_checksums = ManifestChecksums::Sha512;
    assert_eq!(
        o.command(14).unwrap(),
        "BASE_BACKUP LABEL 'l' MANIFEST 'force-encode' MANIFEST_CHECKSUMS 'SHA512'"
    );
    assert_eq!(
        o.command(16).unwrap(),
        "BASE_BACKUP (LABEL 'l', MANIFEST 'force-encode', MANIFEST_CHECKSUMS 'SHA512', \
         TARGET 'client')"
    );
    // v12 cannot make a manifest, so the options are left out, as pg_basebackup does.
    assert_eq!(o.command(12).unwrap(), "BASE_BACKUP LABEL 'l'");
    assert!(!o.expects_manifest(12) && o.expects_manifest(13) && o.expects_manifest(18));
    o.manifest = Manifest::Yes;
    for (c, s) in [
        (ManifestChecksums::None, "NONE"),
        (ManifestChecksums::Crc32c, "CRC32C"),
        (ManifestChecksums::Sha224, "SHA224"),
        (ManifestChecksums::Sha256, "SHA256"),
        (ManifestChecksums::Sha384, "SHA384"),
        (ManifestChecksums::Sha512, "SHA512"),
    ] {
        o.manifest_checksums = c;
        assert_eq!(
            o.command(13).unwrap(),
            format!("BASE_BACKUP LABEL 'l' MANIFEST 'yes' MANIFEST_CHECKSUMS '{s}'")
        );
    }
}

#[test]
fn compression_methods() {
    let mut o = all_off();
    for (m, s, suffix) in [
        (CompressionMethod::Gzip, "gzip", ".gz"),
        (CompressionMethod::Lz4, "lz4", ".lz4"),
        (CompressionMethod::Zstd, "zstd", ".zst"),
    ] {
        o.server_compression = Some(ServerCompression {
            method: m,
            detail: None,
        });
        assert_eq!(
            o.command(15).unwrap(),
            format!("BASE_BACKUP (LABEL 'l', TARGET 'client', COMPRESSION '{s}')")
        );
        assert_eq!(m.archive_suffix(), suffix);
    }
    o.server_compression = Some(ServerCompression {
        method: CompressionMethod::Zstd,
        detail: Some("level=9,workers=4,long".into()),
    });
    assert_eq!(
        o.command(17).unwrap(),
        "BASE_BACKUP (LABEL 'l', TARGET 'client', COMPRESSION 'zstd', \
         COMPRESSION_DETAIL 'level=9,workers=4,long')"
    );
}

#[test]
fn labels_are_quoted_for_the_replication_scanner() {
    let mut o = all_off();
    o.label = "it's".into();
    assert_eq!(o.command(14).unwrap(), "BASE_BACKUP LABEL 'it''s'");
    assert_eq!(
        o.command(15).unwrap(),
        "BASE_BACKUP (LABEL 'it''s', TARGET 'client')"
    );
    o.label = r"C:\backups\x".into();
    assert_eq!(o.command(13).unwrap(), r"BASE_BACKUP LABEL 'C:\backups\x'");
    o.label = "x".repeat(MAX_LABEL_BYTES);
    assert!(o.command(16).is_ok());
}

#[test]
fn uses_new_protocol_from_15() {
    assert!(!uses_new_protocol(12) && !uses_new_protocol(13) && !uses_new_protocol(14));
    assert!(uses_new_protocol(15) && uses_new_protocol(16) && uses_new_protocol(18));
}

#[test]
fn refusals() {
    use BaseBackupOptionsError as E;
    let d = BaseBackupOptions::default();
    assert_eq!(
        d.command(11).unwrap_err(),
        E::UnsupportedServer { server_major: 11 }
    );
    assert_eq!(
        d.command(0).unwrap_err(),
        E::UnsupportedServer { server_major: 0 }
    );

    let mut o = all_off();
    o.server_compression = Some(ServerCompression {
        method: CompressionMethod::Gzip,
        detail: None,
    });
    for v in [12, 13, 14] {
        let e = o.command(v).unwrap_err();
        assert_eq!(e, E::ServerCompressionUnsupported { server_major: v });
        assert!(e.to_string().contains("PostgreSQL 15"), "{e}");
    }
    o.server_compression = Some(ServerCompression {
        method: CompressionMethod::Gzip,
        detail: Some(String::new()),
    });
    assert_eq!(o.command(15).unwrap_err(), E::EmptyCompressionDetail);
    o.server_compression = Some(ServerCompression {
        method: CompressionMethod::Gzip,
        detail: Some("1\0".into()),
    });
    assert!(matches!(
        o.command(15).unwrap_err(),
        E::CompressionDetail(_)
    ));

    let mut o = all_off();
    for kb in [0, 31, 1_048_577, u32::MAX] {
        o.max_rate_kb = Some(kb);
        let e = o.command(16).unwrap_err();
        assert_eq!(e, E::MaxRateOutOfRange { kb });
        assert!(e.to_string().contains("32 to 1048576"), "{e}");
    }
    for kb in [32, 1_048_576] {
        o.max_rate_kb = Some(kb);
        assert_eq!(
            o.command(14).unwrap(),
            format!("BASE_BACKUP LABEL 'l' MAX_RATE {kb}")
        );
    }

    let mut o = all_off();
    o.manifest_checksums = ManifestChecksums::Sha256;
    let e = o.command(16).unwrap_err();
    assert_eq!(
        e,
        E::ManifestChecksumsWithoutManifest {
            checksums: ManifestChecksums::Sha256
        }
    );
    assert!(e.to_string().contains("SHA256"), "{e}");

    let mut o = all_off();
    o.label = "a\0b".into();
    assert!(matches!(
        o.command(15).unwrap_err(),
        E::Label(QuoteError::LiteralContainsNul(_))
    ));
    o.label = "a\nSTART TIMELINE: 9".into();
    assert!(matches!(o.command(15).unwrap_err(), E::LabelLineBreak(_)));
    o.label = "a\rb".into();
    assert!(matches!(o.command(13).unwrap_err(), E::LabelLineBreak(_)));
    o.label = "x".repeat(MAX_LABEL_BYTES + 1);
    assert_eq!(o.command(15).unwrap_err(), E::LabelTooLong { len: 1025 });
}

#[test]
fn incremental_is_sent_on_17_and_later_and_refused_before() {
    let o = BaseBackupOptions {
        incremental: true,
        ..BaseBackupOptions::default()
    };
    for v in [17, 18] {
        assert_eq!(
            o.command(v).unwrap(),
            "BASE_BACKUP (LABEL 'pgstream base backup', PROGRESS, TABLESPACE_MAP, \
             MANIFEST 'yes', MANIFEST_CHECKSUMS 'CRC32C', TARGET 'client', INCREMENTAL)"
        );
    }
    for v in [13, 14, 15, 16] {
        let e = o.command(v).unwrap_err();
        assert_eq!(
            e,
            BaseBackupOptionsError::IncrementalUnsupported { server_major: v }
        );
        assert!(e.to_string().contains("PostgreSQL 17"), "{e}");
    }
}
