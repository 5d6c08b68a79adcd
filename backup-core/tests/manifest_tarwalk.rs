//! The tar walker on archives made by the `tar` crate, and with the manifest verifier.

use backup_core::manifest::{
    BackupPath, ChecksumAlgorithm, FileChecksum, FileChecksummer, Manifest, Mismatch,
};
use backup_core::tarwalk::{EntryKind, SeenFile, TarError, TarWalker, MAX_EXTENDED_HEADER};
use tar::{EntryType, Header};

fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn crc(data: &[u8]) -> Option<FileChecksum> {
    Some(FileChecksum::crc32c(crc32c::crc32c(data)))
}

const LONG_DIR: &str = "base/16384/a_directory_name_that_is_quite_long_indeed_0123456789abcdef";

fn long_name() -> String {
    format!(
        "{LONG_DIR}/and_a_file_name_that_pushes_it_past_one_hundred_bytes_{}",
        "x".repeat(40)
    )
}

/// Files as (path, content), a directory, a symlink; GNU or POSIX ustar headers.
fn sample_archive(gnu: bool) -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    let files = vec![
        ("backup_label".to_string(), content(227, 1)),
        ("base/1/1259".to_string(), content(1317, 2)),
        ("base/1/empty".to_string(), Vec::new()),
        (long_name(), content(1000, 3)),
        ("global/pg_control".to_string(), content(512, 4)),
    ];
    let mut b = tar::Builder::new(Vec::new());
    let mut dir = if gnu {
        Header::new_gnu()
    } else {
        Header::new_ustar()
    };
    dir.set_entry_type(EntryType::Directory);
    dir.set_mode(0o700);
    dir.set_size(0);
    b.append_data(&mut dir, "base/", &[][..]).unwrap();
    let mut link = if gnu {
        Header::new_gnu()
    } else {
        Header::new_ustar()
    };
    link.set_entry_type(EntryType::Symlink);
    link.set_size(0);
    b.append_link(&mut link, "pg_tblspc/16385", "/srv/tablespaces/ts1")
        .unwrap();
    for (path, data) in &files {
        let mut h = if gnu {
            Header::new_gnu()
        } else {
            Header::new_ustar()
        };
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(EntryType::Regular);
        b.append_data(&mut h, path, &data[..]).unwrap();
    }
    (b.into_inner().unwrap(), files)
}

fn walk_in_chunks(
    archive: &[u8],
    sizes: &mut dyn FnMut() -> usize,
) -> Result<Vec<SeenFile>, TarError> {
    let mut w = TarWalker::new();
    let mut rest = archive;
    while !rest.is_empty() {
        let n = sizes().clamp(1, rest.len());
        w.push(&rest[..n])?;
        rest = &rest[n..];
    }
    w.finish()
}

fn walk(archive: &[u8]) -> Result<Vec<SeenFile>, TarError> {
    let mut w = TarWalker::new();
    w.push(archive)?;
    w.finish()
}

fn check_sample(seen: &[SeenFile], files: &[(String, Vec<u8>)]) {
    assert_eq!(seen.len(), 2 + files.len(), "{seen:#?}");
    assert_eq!(seen[0].path, BackupPath::from("base"));
    assert_eq!(seen[0].kind, EntryKind::Directory);
    assert_eq!(seen[0].mode, 0o700);
    assert_eq!(seen[1].path, BackupPath::from("pg_tblspc/16385"));
    assert_eq!(
        seen[1].kind,
        EntryKind::Symlink {
            target: "/srv/tablespaces/ts1".into()
        }
    );
    for ((path, data), s) in files.iter().zip(&seen[2..]) {
        assert_eq!(s.path, BackupPath::from(path.as_str()));
        assert_eq!(s.kind, EntryKind::File);
        assert_eq!(s.size, data.len() as u64);
        assert_eq!(s.checksum, crc(data), "{path}");
        assert_eq!(s.mtime, 1_700_000_000);
    }
}

#[test]
fn gnu_and_ustar_archives_report_every_member() {
    for gnu in [true, false] {
        let (archive, files) = sample_archive(gnu);
        check_sample(&walk(&archive).unwrap(), &files);
    }
}

#[test]
fn any_chunk_boundary_gives_the_same_result() {
    let (archive, files) = sample_archive(true);
    let expected = walk(&archive).unwrap();
    check_sample(&expected, &files);
    for split in 0..=archive.len() {
        let mut w = TarWalker::new();
        w.push(&archive[..split]).unwrap();
        w.push(&archive[split..]).unwrap();
        assert_eq!(w.finish().unwrap(), expected, "split at {split}");
    }
    assert_eq!(walk_in_chunks(&archive, &mut || 1).unwrap(), expected);
    let mut s = 0x1234_5678_9ABC_DEF1u64;
    for _ in 0..50 {
        let got = walk_in_chunks(&archive, &mut || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 1500) as usize
        });
        assert_eq!(got.unwrap(), expected);
    }
}

#[test]
fn truncated_archives_are_errors_at_every_cut() {
    let (archive, _) = sample_archive(false);
    for cut in 0..archive.len() {
        let mut w = TarWalker::new();
        w.push(&archive[..cut]).unwrap();
        let e = w.finish().unwrap_err();
        assert!(matches!(e, TarError::Truncated { .. }), "cut {cut}: {e}");
    }
    // Record padding after the end blocks is fine, anything else is not.
    let mut padded = archive.clone();
    padded.extend_from_slice(&[0; 9216]);
    assert!(walk(&padded).is_ok());
    padded.push(7);
    assert!(matches!(walk(&padded), Err(TarError::DataAfterEnd { .. })));
}

#[test]
fn corrupt_headers_are_detected() {
    let (archive, files) = sample_archive(false);
    let mut bad = archive.clone();
    bad[3] ^= 0x20; // first header's name
    assert!(matches!(
        walk(&bad),
        Err(TarError::HeaderChecksum { offset: 0, .. })
    ));
    let mut bad = archive.clone();
    bad[257] = b'X'; // magic (checksum fixed up below)
    let sum: u32 = bad[..512]
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    bad[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let e = walk(&bad).unwrap_err();
    assert!(e.to_string().contains("not a ustar header"), "{e}");
    // A content byte changes the checksum, not the structure.
    let seen = walk(&archive).unwrap();
    let label_offset = 3 * 512; // dir header, link header, label header
    let mut flipped = archive.clone();
    flipped[label_offset + 10] ^= 1;
    let seen2 = walk(&flipped).unwrap();
    assert_eq!(seen2[2].size, seen[2].size);
    assert_ne!(seen2[2].checksum, crc(&files[0].1));
}

fn pax_data(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let body = k.len() + v.len() + 3; // ' ', '=', '\n'
        let mut len = body + 1;
        while len != body + len.to_string().len() {
            len = body + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {k}=").as_bytes());
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

fn append_pax(b: &mut tar::Builder<Vec<u8>>, kind: EntryType, records: &[(&str, &[u8])]) {
    let data = pax_data(records);
    let mut h = Header::new_ustar();
    h.set_path("PaxHeaders/x").unwrap();
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append(&h, &data[..]).unwrap();
}

fn ustar(path: &str, kind: EntryType, size: u64) -> Header {
    let mut h = Header::new_ustar();
    h.set_path(path).unwrap();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mtime(5);
    h.set_cksum();
    h
}

#[test]
fn pax_headers_override_path_size_linkpath_and_globals_apply() {
    let long = format!("pg_tblspc/16385/{}/5/16386", "PG_15_202209061".repeat(15));
    let data = content(5000, 9);
    let mut b = tar::Builder::new(Vec::new());
    append_pax(&mut b, EntryType::XGlobalHeader, &[("mtime", b"777.25")]);
    append_pax(
        &mut b,
        EntryType::XHeader,
        &[("path", long.as_bytes()), ("size", b"5000")],
    );
    // The ustar size field says 0: pax wins.
    b.append(&ustar("short", EntryType::Regular, 0), &data[..])
        .unwrap();
    append_pax(
        &mut b,
        EntryType::XHeader,
        &[("linkpath", b"/a/very/long/target")],
    );
    b.append(&ustar("link", EntryType::Symlink, 0), &[][..])
        .unwrap();
    append_pax(
        &mut b,
        EntryType::XHeader,
        &[("path", b""), ("mtime", b"9")],
    );
    b.append(&ustar("plain", EntryType::Regular, 3), &b"abc"[..])
        .unwrap();
    append_pax(&mut b, EntryType::XGlobalHeader, &[("mtime", b"")]);
    b.append(&ustar("./dir/", EntryType::Directory, 0), &[][..])
        .unwrap();
    let archive = b.into_inner().unwrap();

    let seen = walk(&archive).unwrap();
    assert_eq!(seen.len(), 4, "{seen:#?}");
    assert_eq!(seen[0].path, BackupPath::from(long.as_str()));
    assert_eq!((seen[0].size, seen[0].mtime), (5000, 777));
    assert_eq!(seen[0].checksum, crc(&data));
    assert_eq!(
        seen[1].kind,
        EntryKind::Symlink {
            target: "/a/very/long/target".into()
        }
    );
    assert_eq!(seen[2].path, BackupPath::from("plain"));
    assert_eq!((seen[2].mtime, seen[2].checksum.clone()), (9, crc(b"abc")));
    assert_eq!((seen[3].path.to_str(), seen[3].mtime), (Some("dir"), 5));
    for split in 0..archive.len() {
        let mut w = TarWalker::new();
        w.push(&archive[..split]).unwrap();
        w.push(&archive[split..]).unwrap();
        assert_eq!(w.finish().unwrap(), seen);
    }
}

#[test]
fn extended_headers_are_bounded_and_must_precede_a_member() {
    let mut h = Header::new_ustar();
    h.set_path("PaxHeaders/x").unwrap();
    h.set_entry_type(EntryType::XHeader);
    h.set_size(MAX_EXTENDED_HEADER + 1);
    h.set_cksum();
    let mut w = TarWalker::new();
    let e = w.push(h.as_bytes()).unwrap_err();
    assert!(matches!(e, TarError::ExtendedHeaderTooLarge { .. }), "{e}");

    let mut b = tar::Builder::new(Vec::new());
    append_pax(&mut b, EntryType::XHeader, &[("path", b"x")]);
    let archive = b.into_inner().unwrap();
    let e = walk(&archive).unwrap_err();
    assert!(e.to_string().contains("not followed by a member"), "{e}");
}

#[test]
fn unsafe_paths_are_refused() {
    for name in [&b"../etc/passwd"[..], b"/etc/passwd", b"base/../../x"] {
        let mut h = Header::new_ustar();
        h.set_entry_type(EntryType::Regular);
        h.set_size(0);
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        let mut archive = h.as_bytes().to_vec();
        archive.extend_from_slice(&[0; 1024]);
        let e = walk(&archive).unwrap_err();
        assert!(matches!(e, TarError::UnsafePath { .. }), "{e}");
    }
}

#[test]
fn base256_sizes_and_files_over_8_gib() {
    // A small file whose size is written in GNU base-256.
    let data = content(1000, 5);
    let mut h = Header::new_gnu();
    h.set_path("base/1/big").unwrap();
    h.set_entry_type(EntryType::Regular);
    let size_field = &mut h.as_gnu_mut().unwrap().size;
    *size_field = [0; 12];
    size_field[0] = 0x80;
    size_field[10..].copy_from_slice(&1000u16.to_be_bytes());
    h.set_cksum();
    let mut archive = h.as_bytes().to_vec();
    archive.extend_from_slice(&data);
    archive.resize(512 + 1024 + 1024, 0);
    let seen = walk(&archive).unwrap();
    assert_eq!((seen[0].size, seen[0].checksum.clone()), (1000, crc(&data)));

    // 8 GiB + 1 streamed (without hashing, to keep the test quick).
    let size = 8u64 << 30 | 1;
    let mut h = Header::new_gnu();
    h.set_path("base/1/huge").unwrap();
    h.set_entry_type(EntryType::Regular);
    h.set_size(size);
    h.set_cksum();
    assert_eq!(h.as_bytes()[124] & 0x80, 0x80, "tar crate used base-256");
    let mut w = TarWalker::new().checksum(None);
    w.push(h.as_bytes()).unwrap();
    let zeros = vec![0u8; 4 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        w.push(&zeros[..n]).unwrap();
        left -= n as u64;
    }
    w.push(&zeros[..511 + 1024]).unwrap();
    let seen = w.finish().unwrap();
    assert_eq!((seen[0].size, seen[0].checksum.clone()), (size, None));
}

#[test]
fn tablespace_prefix_and_other_algorithms() {
    let mut b = tar::Builder::new(Vec::new());
    b.append(
        &ustar("PG_15_202209061/5/16386", EntryType::Regular, 3),
        &b"xyz"[..],
    )
    .unwrap();
    let archive = b.into_inner().unwrap();
    let mut w = TarWalker::new()
        .path_prefix("pg_tblspc/16385/")
        .checksum(Some(ChecksumAlgorithm::Sha256));
    w.push(&archive).unwrap();
    let seen = w.finish().unwrap();
    assert_eq!(
        seen[0].path,
        BackupPath::from("pg_tblspc/16385/PG_15_202209061/5/16386")
    );
    assert_eq!(
        seen[0].checksum,
        Some(FileChecksummer::digest(ChecksumAlgorithm::Sha256, b"xyz"))
    );
}

/// A manifest as the server writes it, for `files`.
fn manifest_for(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut body = String::from(
        "{ \"PostgreSQL-Backup-Manifest-Version\": 2,\n\"System-Identifier\": 42,\n\"Files\": [\n",
    );
    for (i, (path, data)) in files.iter().enumerate() {
        let sep = if i + 1 == files.len() { "" } else { "," };
        body.push_str(&format!(
            "{{ \"Path\": \"{path}\", \"Size\": {}, \"Last-Modified\": \"2024-05-01 10:00:00 GMT\", \
             \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"{}\" }}{sep}\n",
            data.len(),
            hex::encode(crc32c::crc32c(data).to_le_bytes())
        ));
    }
    body.push_str(
        "],\n\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/2000100\" }\n],\n",
    );
    let sum = openssl::sha::sha256(body.as_bytes());
    format!("{body}\"Manifest-Checksum\": \"{}\"}}\n", hex::encode(sum)).into_bytes()
}

#[test]
fn walker_and_manifest_agree_and_catch_a_flipped_byte() {
    let (archive, files) = sample_archive(true);
    let manifest = Manifest::parse(&manifest_for(&files)).unwrap();
    manifest
        .require_checksum_algorithm(Some(ChecksumAlgorithm::Crc32c))
        .unwrap();
    assert_eq!(manifest.verify_files(&walk(&archive).unwrap()), vec![]);

    let mut flipped = archive.clone();
    let at = 512 * 5 + 100; // inside base/1/1259's content (after dir, link, label + data, header)
    flipped[at] ^= 0x40;
    let got = manifest.verify_files(&walk(&flipped).unwrap());
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        matches!(&got[0], Mismatch::ChecksumMismatch { path, .. } if path.to_str() == Some("base/1/1259")),
        "{got:?}"
    );
}

#[test]
fn walker_never_panics_on_random_or_mutated_input() {
    let mut s = 0xA5A5_1234_DEAD_BEEFu64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let (good, _) = sample_archive(true);
    for round in 0..600 {
        let mut input = if round % 3 < 1 {
            (0..(next() % 4096)).map(|_| next() as u8).collect()
        } else {
            good.clone()
        };
        for _ in 0..(next() % 6) {
            if input.is_empty() {
                break;
            }
            // Mostly hit header bytes, where the parsing is.
            let i = if next() % 2 < 1 {
                (next() as usize % (input.len() / 512 + 1)) * 512 + (next() as usize % 512)
            } else {
                next() as usize
            } % input.len();
            input[i] = next() as u8;
        }
        let mut w = TarWalker::new();
        for chunk in input.chunks((next() % 700 + 1) as usize) {
            if w.push(chunk).is_err() {
                break;
            }
        }
        let _ = w.finish();
    }
}
