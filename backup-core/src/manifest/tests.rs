use super::*;
use crate::tarwalk::{EntryKind, SeenFile};

/// Completes a manifest whose body ends with the line before Manifest-Checksum.
fn seal(body: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(body.as_bytes());
    format!(
        "{body}\"Manifest-Checksum\": \"{}\"}}\n",
        hex::encode(h.finish())
    )
    .into_bytes()
}

fn crc_hex(data: &[u8]) -> String {
    hex::encode(crc32c::crc32c(data).to_le_bytes())
}

fn v1_body() -> String {
    format!(
        "{{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\
         \"Files\": [\n\
         {{ \"Path\": \"backup_label\", \"Size\": 5, \"Last-Modified\": \"2024-05-01 10:00:00 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"{}\" }},\n\
         {{ \"Path\": \"base/1/1259\", \"Size\": 3, \"Last-Modified\": \"2024-05-01 10:00:00 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"{}\" }},\n\
         {{ \"Encoded-Path\": \"626173652f31ff\", \"Size\": 0, \"Last-Modified\": \"2024-05-01 10:00:00 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"00000000\" }},\n\
         {{ \"Path\": \"pg_tblspc/16385/PG_15_202209061/5/16386\", \"Size\": 0, \"Last-Modified\": \"2024-05-01 10:00:00 GMT\", \"Checksum-Algorithm\": \"crc32c\", \"Checksum\": \"00000000\" }},\n\
         {{ \"Path\": \"pg_wal/archive_status/000000010000000000000002.done\", \"Size\": 0, \"Last-Modified\": \"2024-05-01 10:00:00 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"00000000\" }}\n\
         ],\n\
         \"WAL-Ranges\": [\n\
         {{ \"Timeline\": 2, \"Start-LSN\": \"0/5000000\", \"End-LSN\": \"0/5000100\" }},\n\
         {{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/5000000\" }}\n\
         ],\n",
        crc_hex(b"hello"),
        crc_hex(b"abc"),
    )
}

fn seen_file(path: &str, data: &[u8]) -> SeenFile {
    SeenFile {
        path: path.into(),
        kind: EntryKind::File,
        size: data.len() as u64,
        checksum: Some(FileChecksummer::digest(ChecksumAlgorithm::Crc32c, data)),
        mode: 0o600,
        mtime: 0,
    }
}

fn matching_seen() -> Vec<SeenFile> {
    vec![
        seen_file("backup_label", b"hello"),
        seen_file("base/1/1259", b"abc"),
        SeenFile {
            path: BackupPath::new(b"base/1\xff".to_vec()),
            ..seen_file("x", b"")
        },
        seen_file("pg_tblspc/16385/PG_15_202209061/5/16386", b""),
        seen_file("pg_wal/archive_status/000000010000000000000002.done", b""),
    ]
}

fn invalid(bytes: &[u8]) -> (usize, String) {
    match Manifest::parse(bytes) {
        Err(ManifestError::Invalid { line, message, .. }) => (line, message),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

/// Replaces `from` with `to` in the v1 body and reseals.
fn edited(from: &str, to: &str) -> Vec<u8> {
    let body = v1_body();
    assert!(body.contains(from), "{from:?} not in body");
    seal(&body.replacen(from, to, 1))
}

#[test]
fn parses_a_version_1_manifest() {
    let m = Manifest::parse(&seal(&v1_body())).unwrap();
    assert_eq!(m.version(), 1);
    assert_eq!(m.system_identifier(), None);
    assert_eq!(m.files().len(), 5);
    let label = m.file(b"backup_label").unwrap();
    assert_eq!(label.size, 5);
    assert_eq!(
        label.checksum,
        Some(FileChecksum::crc32c(crc32c::crc32c(b"hello")))
    );
    assert_eq!(
        label.last_modified.as_deref(),
        Some("2024-05-01 10:00:00 GMT")
    );
    assert!(
        m.file(b"base/1\xff").is_some(),
        "Encoded-Path decodes to raw bytes"
    );
    assert_eq!(m.wal_ranges().len(), 2);
    assert_eq!(m.wal_ranges()[0].timeline, TimelineId(2));
    assert_eq!(m.start_lsn(), Some(Lsn(0x200_0028)));
    assert_eq!(m.end_lsn(), Some(Lsn(0x500_0100)));
    assert_eq!(m.checksum_algorithm(), Some(ChecksumAlgorithm::Crc32c));
    assert!(m
        .require_checksum_algorithm(Some(ChecksumAlgorithm::Crc32c))
        .is_ok());
    let err = m
        .require_checksum_algorithm(Some(ChecksumAlgorithm::Sha256))
        .unwrap_err();
    assert!(err.to_string().contains("CRC32C"), "{err}");
}

#[test]
fn parses_a_version_2_manifest_with_system_identifier_and_sha() {
    let data = b"0123456789";
    let sha = FileChecksummer::digest(ChecksumAlgorithm::Sha512, data);
    let body = format!(
        "{{ \"PostgreSQL-Backup-Manifest-Version\": 2,\n\
         \"System-Identifier\": 7300000000000000001,\n\
         \"Files\": [\n\
         {{ \"Path\": \"global/pg_control\", \"Size\": 10, \"Last-Modified\": \"x\", \"Checksum-Algorithm\": \"SHA512\", \"Checksum\": \"{}\" }},\n\
         {{ \"Path\": \"PG_VERSION\", \"Size\": 3 }}\n\
         ],\n\
         \"WAL-Ranges\": [\n\
         {{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/2000100\" }}\n\
         ],\n",
        sha.to_hex().to_uppercase()
    );
    let m = Manifest::parse(&seal(&body)).unwrap();
    assert_eq!(m.version(), 2);
    assert_eq!(m.system_identifier(), Some(7_300_000_000_000_000_001));
    assert_eq!(m.file(b"global/pg_control").unwrap().checksum, Some(sha));
    assert_eq!(m.file(b"PG_VERSION").unwrap().checksum, None);
    let mut pg_control = seen_file("global/pg_control", data);
    pg_control.checksum = Some(FileChecksummer::digest(ChecksumAlgorithm::Sha512, data));
    let mismatches = m.verify_files(&[pg_control, seen_file("PG_VERSION", b"15\n")]);
    assert_eq!(mismatches, vec![]);
}

#[test]
fn manifest_checksum_rules() {
    let good = seal(&v1_body());
    let mut flipped = good.clone();
    let at = flipped.iter().position(|&b| b == b'5').unwrap();
    flipped[at] = b'6';
    assert!(matches!(
        Manifest::parse(&flipped),
        Err(ManifestError::ChecksumMismatch { .. })
    ));
    // Without the final newline.
    assert_eq!(
        Manifest::parse(&good[..good.len() - 1]).unwrap_err(),
        ManifestError::Layout("last line not newline-terminated")
    );
    // One line only (valid JSON otherwise).
    let one = b"{\"PostgreSQL-Backup-Manifest-Version\": 1, \"Manifest-Checksum\": \"00\"}\n";
    assert_eq!(
        Manifest::parse(one).unwrap_err(),
        ManifestError::Layout("expected at least 2 lines")
    );
    let body = v1_body();
    let short = format!("{body}\"Manifest-Checksum\": \"abcd\"}}\n");
    assert!(matches!(
        Manifest::parse(short.as_bytes()),
        Err(ManifestError::BadManifestChecksum(_))
    ));
    let wrong = format!("{body}\"Manifest-Checksum\": \"{}\"}}\n", "0".repeat(64));
    let err = Manifest::parse(wrong.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
    // The checksum covers up to the second-to-last newline only: the last line may vary.
    let mut h = Sha256::new();
    h.update(body.as_bytes());
    let upper = format!(
        "{body}\"Manifest-Checksum\": \"{}\" }}\n",
        hex::encode_upper(h.finish())
    );
    Manifest::parse(upper.as_bytes()).unwrap();
}

#[test]
fn top_level_rules() {
    let (line, msg) = invalid(&seal(
        "{ \"Files\": [],\n\"PostgreSQL-Backup-Manifest-Version\": 1,\n",
    ));
    assert_eq!(line, 1);
    assert!(msg.contains("first key"), "{msg}");
    for v in ["3", "0", "\"x\"", "-1", "1.5"] {
        let (_, msg) = invalid(&edited(
            "\"PostgreSQL-Backup-Manifest-Version\": 1",
            &format!("\"PostgreSQL-Backup-Manifest-Version\": {v}"),
        ));
        assert!(
            msg.contains("version") || msg.contains("Version"),
            "{v}: {msg}"
        );
    }
    // A version given as a string of digits is accepted, as PostgreSQL reads tokens.
    Manifest::parse(&edited(
        "\"PostgreSQL-Backup-Manifest-Version\": 1",
        "\"PostgreSQL-Backup-Manifest-Version\": \"1\"",
    ))
    .unwrap();
    let (line, msg) = invalid(&edited("\"WAL-Ranges\"", "\"Frobs\": 1,\n\"WAL-Ranges\""));
    assert!(msg.contains("unknown top-level key \"Frobs\""), "{msg}");
    assert_eq!(line, 9);
    let (_, msg) = invalid(&edited("\"WAL-Ranges\"", "\"Files\": [],\n\"WAL-Ranges\""));
    assert!(msg.contains("duplicate top-level key"), "{msg}");
    let (_, msg) = invalid(&edited("\"Files\"", "\"System-Identifier\": 1,\n\"Files\""));
    assert!(msg.contains("version 1"), "{msg}");
    let (_, msg) = invalid(&seal(
        "{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": []}\n",
    ));
    assert!(msg.contains("missing \"Manifest-Checksum\""), "{msg}");
    let no_checksum = format!("{}\"Files\": []}}\n", v1_body());
    let (_, msg) = invalid(no_checksum.as_bytes());
    assert!(
        msg.contains("duplicate") || msg.contains("Manifest-Checksum"),
        "{msg}"
    );
    let missing = b"{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": []\n}\n";
    let (_, msg) = invalid(missing);
    assert!(msg.contains("missing \"Manifest-Checksum\""), "{msg}");
    let after = format!(
        "{}\"Manifest-Checksum\": \"00\", \"Files\": []}}\n",
        v1_body()
    );
    let (_, msg) = invalid(after.as_bytes());
    assert!(msg.contains("after \"Manifest-Checksum\""), "{msg}");
    let (_, msg) = invalid(b"[1, 2]\n\n");
    assert!(msg.contains("backup manifest"), "{msg}");
    let mut trailing = seal(&v1_body());
    trailing.extend_from_slice(b"x\n");
    invalid(&trailing);
}

#[test]
fn file_entry_rules_name_the_line() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "\"Path\": \"base/1/1259\"",
            "\"Path\": \"base/1/1259\", \"Encoded-Path\": \"61\"",
            "both",
        ),
        ("\"Path\": \"base/1/1259\", ", "", "without \"Path\""),
        ("\"Size\": 3, ", "", "missing \"Size\""),
        ("\"Size\": 3", "\"Size\": -3", "Size"),
        ("\"Size\": 3", "\"Size\": \"3x\"", "not an integer"),
        (
            "\"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"CK",
            "\"Checksum\": \"CK",
            "without \"Checksum-Algorithm\"",
        ),
        (
            "\"CRC32C\", \"Checksum\": \"CK",
            "\"MD5\", \"Checksum\": \"CK",
            "unrecognized checksum algorithm",
        ),
        (
            "\"CRC32C\", \"Checksum\": \"CK",
            "\"NONE\", \"Checksum\": \"CK",
            "NONE",
        ),
        (
            "\"Checksum\": \"CK",
            "\"Checksum\": \"zz",
            "invalid CRC32C checksum",
        ),
        (
            "\"Checksum\": \"CK",
            "\"Checksum\": \"aaba",
            "expected 8 hex digits",
        ),
        (
            "\"Path\": \"base/1/1259\"",
            "\"Path\": \"base/1/1259\", \"Mode\": 1",
            "unexpected file field \"Mode\"",
        ),
        (
            "\"Path\": \"base/1/1259\"",
            "\"Path\": \"base/1/1259\", \"Path\": \"x\"",
            "duplicate file field",
        ),
        ("\"Path\": \"base/1/1259\"", "\"Path\": 12", "invalid type"),
        (
            "\"Path\": \"base/1/1259\"",
            "\"Path\": \"backup_label\"",
            "duplicate path name in backup manifest: backup_label",
        ),
    ];
    let crc = crc_hex(b"abc");
    for (from, to, want) in cases {
        let (from, to) = (from.replace("CK", &crc[..2]), to.replace("CK", &crc[..2]));
        let (line, msg) = invalid(&edited(&from, &to));
        assert!(msg.contains(want), "{to:?}: {msg:?} lacks {want:?}");
        assert_eq!(line, 4, "{to:?}: {msg}");
    }
    for bad in ["\"6g\"", "\"626\"", "\"\""] {
        let (line, msg) = invalid(&edited("\"626173652f31ff\"", bad));
        assert!(msg.contains("could not decode"), "{bad}: {msg}");
        assert_eq!(line, 5);
    }
    // Algorithm without checksum.
    let body = v1_body().replacen(", \"Checksum\": \"00000000\"", "", 1);
    let (line, msg) = invalid(&seal(&body));
    assert!(msg.contains("without \"Checksum\""), "{msg}");
    assert_eq!(line, 5);
    // NONE without a checksum means "no checksum".
    let body = v1_body().replacen(
        "\"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"00000000\"",
        "\"Checksum-Algorithm\": \"none\"",
        1,
    );
    let m = Manifest::parse(&seal(&body)).unwrap();
    assert_eq!(m.file(b"base/1\xff").unwrap().checksum, None);
}

#[test]
fn wal_range_rules() {
    let cases: &[(&str, &str, &str)] = &[
        ("\"Timeline\": 2, ", "", "missing \"Timeline\""),
        ("\"Timeline\": 2", "\"Timeline\": 0", "invalid \"Timeline\""),
        (
            "\"Timeline\": 2",
            "\"Timeline\": 4294967296",
            "invalid \"Timeline\"",
        ),
        (
            ", \"Start-LSN\": \"0/5000000\"",
            "",
            "missing \"Start-LSN\"",
        ),
        (", \"End-LSN\": \"0/5000100\"", "", "missing \"End-LSN\""),
        (
            "\"0/5000100\"",
            "\"5000100\"",
            "could not parse \"End-LSN\"",
        ),
        ("\"0/5000100\"", "\"0/4000000\"", "before Start-LSN"),
        (
            "\"Timeline\": 2",
            "\"Timeline\": 2, \"Foo\": 1",
            "unexpected WAL range field \"Foo\"",
        ),
    ];
    for (from, to, want) in cases {
        let (line, msg) = invalid(&edited(from, to));
        assert!(msg.contains(want), "{to:?}: {msg:?} lacks {want:?}");
        assert_eq!(line, 10, "{to:?}: {msg}");
    }
}

#[test]
fn verification_reports_every_kind_of_mismatch() {
    let m = Manifest::parse(&seal(&v1_body())).unwrap();
    assert_eq!(m.verify_files(&matching_seen()), vec![]);

    let mut seen = matching_seen();
    seen[0] = seen_file("backup_label", b"hellO"); // same size, other content
    seen[1] = seen_file("base/1/1259", b"abcd");
    seen.remove(3); // tablespace file missing
    seen.push(seen_file("base/1/9999", b"new"));
    seen.push(seen_file("backup_label", b"hello"));
    seen.push(SeenFile {
        kind: EntryKind::Other { typeflag: b'3' },
        ..seen_file("base/dev", b"")
    });
    // Ignored like pg_verifybackup: WAL, -R files, the manifest.
    seen.push(seen_file("pg_wal/000000010000000000000002", &[0; 16]));
    seen.push(seen_file("postgresql.auto.conf", b"x"));
    seen.push(seen_file("standby.signal", b""));
    seen.push(seen_file("backup_manifest", b"{}"));
    // Directories and tablespace links are not listed.
    seen.push(SeenFile {
        kind: EntryKind::Directory,
        ..seen_file("base/1", b"")
    });
    seen.push(SeenFile {
        kind: EntryKind::Symlink {
            target: "/srv/ts".into(),
        },
        ..seen_file("pg_tblspc/16385", b"")
    });
    let got = m.verify_files(&seen);
    let crc = |d: &[u8]| FileChecksum::crc32c(crc32c::crc32c(d));
    assert_eq!(
        got,
        vec![
            Mismatch::ChecksumMismatch {
                path: "backup_label".into(),
                manifest: crc(b"hello"),
                archive: crc(b"hellO"),
            },
            Mismatch::SizeMismatch {
                path: "base/1/1259".into(),
                manifest: 3,
                archive: 4,
            },
            Mismatch::NotInManifest {
                path: "base/1/9999".into()
            },
            Mismatch::DuplicateInArchives {
                path: "backup_label".into()
            },
            Mismatch::NotARegularFile {
                path: "base/dev".into(),
                typeflag: b'3'
            },
            Mismatch::MissingFromArchives {
                path: "pg_tblspc/16385/PG_15_202209061/5/16386".into()
            },
        ]
    );
    for g in &got {
        assert!(g.to_string().contains(&g.path().to_string()), "{g}");
    }
}

#[test]
fn listed_ignored_files_are_still_compared_and_extra_ignores_apply() {
    let m = Manifest::parse(&seal(&v1_body())).unwrap();
    let mut seen = matching_seen();
    seen[4] = seen_file("pg_wal/archive_status/000000010000000000000002.done", b"x");
    assert_eq!(
        m.verify_files(&seen),
        vec![Mismatch::SizeMismatch {
            path: "pg_wal/archive_status/000000010000000000000002.done".into(),
            manifest: 0,
            archive: 1
        }]
    );
    // Missing pg_wal entries are not reported (pg_verifybackup ignores pg_wal).
    seen.remove(4);
    assert_eq!(m.verify_files(&seen), vec![]);
    // -i pg_tblspc
    seen.remove(3);
    seen.push(seen_file("pg_tblspc/1/extra", b""));
    let mut v = ManifestVerifier::new(&m).ignore("pg_tblspc");
    for s in &seen {
        v.observe(s);
    }
    assert_eq!(v.finish(), vec![]);
}

#[test]
fn checksums_the_walker_did_not_compute_are_reported() {
    let m = Manifest::parse(&seal(&v1_body())).unwrap();
    let mut seen = matching_seen();
    seen[0].checksum = None;
    seen[1].checksum = Some(FileChecksummer::digest(ChecksumAlgorithm::Sha256, b"abc"));
    let got = m.verify_files(&seen);
    assert_eq!(
        got,
        vec![
            Mismatch::ChecksumNotVerifiable {
                path: "backup_label".into(),
                manifest: ChecksumAlgorithm::Crc32c,
                computed: None,
            },
            Mismatch::ChecksumNotVerifiable {
                path: "base/1/1259".into(),
                manifest: ChecksumAlgorithm::Crc32c,
                computed: Some(ChecksumAlgorithm::Sha256),
            },
        ]
    );
}

#[test]
fn checksummers_match_known_values() {
    // CRC-32C check value; the manifest spells the u32 in little-endian byte order.
    let crc = FileChecksummer::digest(ChecksumAlgorithm::Crc32c, b"123456789");
    assert_eq!(crc.to_hex(), "839206e3");
    let sha = FileChecksummer::digest(ChecksumAlgorithm::Sha256, b"abc");
    assert_eq!(
        sha.to_hex(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
    for alg in [
        ChecksumAlgorithm::Crc32c,
        ChecksumAlgorithm::Sha224,
        ChecksumAlgorithm::Sha256,
        ChecksumAlgorithm::Sha384,
        ChecksumAlgorithm::Sha512,
    ] {
        let whole = FileChecksummer::digest(alg, &data);
        assert_eq!(whole.as_bytes().len(), alg.digest_len());
        let mut c = FileChecksummer::new(alg);
        for part in data.chunks(333) {
            c.update(part);
        }
        assert_eq!(c.finish(), whole, "{alg}");
        assert_eq!(
            ChecksumAlgorithm::parse(&alg.name().to_lowercase()),
            Ok(Some(alg))
        );
    }
    assert_eq!(ChecksumAlgorithm::parse("NONE"), Ok(None));
}

#[test]
fn parser_never_panics_on_random_or_mutated_input() {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let good = seal(&v1_body());
    for round in 0..4000 {
        let mut input = if round % 2 < 1 {
            good.clone()
        } else {
            (0..(next() % 300)).map(|_| next() as u8).collect()
        };
        for _ in 0..(next() % 6) {
            if input.is_empty() {
                break;
            }
            let i = (next() as usize) % input.len();
            match next() % 3 {
                0 => input[i] = next() as u8,
                1 => input.truncate(i),
                _ => input.insert(i, b"{}[],:\"\n0"[(next() % 9) as usize]),
            }
        }
        let _ = Manifest::parse(&input);
    }
}
