use super::header::number;
use super::pax::{merge_global, parse_records, PaxOverrides};
use super::*;

#[test]
fn octal_and_base256_numbers() {
    assert_eq!(number(b"00000001750\0", "size", 0), Ok(1000));
    assert_eq!(number(b"  1750 \0\0\0\0\0", "size", 0), Ok(1000));
    assert_eq!(number(b"\0\0\0\0\0\0\0\0\0\0\0\0", "size", 0), Ok(0));
    assert!(number(b"0000000179\0\0", "size", 0).is_err());
    assert!(number(b"17 50\0\0\0\0\0\0\0", "size", 0).is_err());
    // GNU base-256: 8 GiB + 1 does not fit 11 octal digits.
    let mut f = [0u8; 12];
    f[0] = 0x80;
    f[4..].copy_from_slice(&(8u64 * 1024 * 1024 * 1024 + 1).to_be_bytes());
    assert_eq!(number(&f, "size", 0), Ok(8 * 1024 * 1024 * 1024 + 1));
    f[0] = 0xFF;
    assert!(number(&f, "size", 0).is_err(), "negative");
    let mut big = [0xFFu8; 12];
    big[0] = 0x80;
    assert!(number(&big, "size", 0).is_err(), "overflow");
}

#[test]
fn pax_records() {
    let mut o = PaxOverrides::default();
    let data = b"29 path=a/very/long/name/xyz\n11 size=42\n19 mtime=1700000.5\n";
    parse_records(data, &mut o, 0).unwrap();
    assert_eq!(o.path.as_deref(), Some(&b"a/very/long/name/xyz"[..]));
    assert_eq!(o.size, Some(Some(42)));
    assert_eq!(o.mtime, Some(Some(1_700_000)));
    for bad in [
        &b"8 path=a\n"[..], // length too small for the record
        b"99 path=a\n",     // longer than the data
        b"x path=a\n",      // not a number
        b"8 patha\n",       // no '='
        b"12 size=abc\n",   // not a number
        b"nospace",
    ] {
        assert!(
            parse_records(bad, &mut PaxOverrides::default(), 0).is_err(),
            "{bad:?}"
        );
    }
    // Empty global value deletes.
    let mut g = PaxOverrides {
        path: Some(b"x".to_vec()),
        ..Default::default()
    };
    let mut d = PaxOverrides::default();
    parse_records(b"8 path=\n", &mut d, 0).unwrap();
    merge_global(&mut g, d);
    assert_eq!(g.path, None);
}

#[test]
fn finish_names_where_the_archive_stopped() {
    let w = TarWalker::new();
    assert!(matches!(
        w.finish(),
        Err(TarError::Truncated {
            what: "no end-of-archive zero blocks",
            ..
        })
    ));
    let mut w = TarWalker::new();
    w.push(&[0; 512]).unwrap();
    assert!(matches!(
        w.finish(),
        Err(TarError::Truncated {
            what: "only one of the two end-of-archive zero blocks",
            ..
        })
    ));
    let mut w = TarWalker::new();
    w.push(&[0; 1024]).unwrap();
    assert!(w.is_ended());
    assert_eq!(w.finish(), Ok(vec![]));
}

#[test]
fn poisoned_after_an_error() {
    let mut w = TarWalker::new();
    assert!(w.push(&[1; 512]).is_err());
    assert_eq!(w.push(&[0; 1024]), Err(TarError::Poisoned));
    assert_eq!(w.finish(), Err(TarError::Poisoned));
}

/// One header block whose size field is `size` (12 bytes, octal or base-256), then `pax`
/// size override if any, and the end-of-archive blocks.
fn archive_with_size_field(kind: tar::EntryType, size: [u8; 12], pax: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(pax_size) = pax {
        let body = format!("size={pax_size}\n");
        let record = format!("{} {body}", body.len() + 3);
        assert_eq!(record.len(), body.len() + 3, "record length has two digits");
        let mut h = tar::Header::new_ustar();
        h.set_path("PaxHeaders/x").unwrap();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(record.len() as u64);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        let mut data = record.into_bytes();
        data.resize(512, 0);
        out.extend_from_slice(&data);
    }
    let mut h = tar::Header::new_gnu();
    h.set_path("base/1/member").unwrap();
    h.set_entry_type(kind);
    h.as_gnu_mut().unwrap().size = size;
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(&[0; 1024]);
    out
}

/// Regression: a member size near 2^64 overflowed `size + pad` (a panic with overflow checks,
/// a wrong skip without): the walker refuses it with a clear error instead.
#[test]
fn tar_member_size_overflow_is_refused() {
    let mut max256 = [0xFFu8; 12];
    max256[..4].copy_from_slice(&[0x80, 0, 0, 0]);
    assert_eq!(number(&max256, "size", 0), Ok(u64::MAX));
    let mut near256 = max256;
    near256[11] = 0xF0; // 2^64 - 16: still overflows once padded
    let cases = [
        (tar::EntryType::Regular, max256, None),
        (tar::EntryType::Directory, max256, None),
        (tar::EntryType::Symlink, near256, None),
        (
            tar::EntryType::Regular,
            *b"00000000000\0",
            Some("18446744073709551615"),
        ),
        (
            tar::EntryType::Directory,
            *b"00000000000\0",
            Some("18446744073709551601"),
        ),
    ];
    for (kind, field, pax) in cases {
        let archive = archive_with_size_field(kind, field, pax);
        let mut w = TarWalker::new();
        let e = w.push(&archive).unwrap_err();
        assert!(
            matches!(e, TarError::SizeOverflow { .. }),
            "{kind:?} {pax:?}: {e}"
        );
        assert!(e.to_string().contains("overflows"), "{e}");
    }
    // The largest octal size (12 digits, 64 GiB - 1) is fine: padded without overflow, and the
    // archive is then simply truncated.
    let archive = archive_with_size_field(tar::EntryType::Directory, *b"777777777777", None);
    let mut w = TarWalker::new();
    w.push(&archive).unwrap();
    assert!(matches!(w.finish(), Err(TarError::Truncated { .. })));
}

/// The fuzz target's seeds for the size overflow (backup-core/fuzz/corpus/tar_walk), walked as
/// the target walks them: refused, no panic.
#[test]
fn tar_member_size_overflow_fuzz_seeds_are_refused() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/tar_walk");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("size-overflow") {
            continue;
        }
        let data = std::fs::read(&path).unwrap();
        let (&chunk, rest) = data.split_first().unwrap();
        let mut w = TarWalker::new();
        let e = rest
            .chunks(usize::from(chunk).max(1))
            .find_map(|piece| w.push(piece).err());
        assert!(
            matches!(e, Some(TarError::SizeOverflow { .. })),
            "{name}: {e:?}"
        );
        n += 1;
    }
    assert_eq!(n, 2, "seeds in {}", dir.display());
}
