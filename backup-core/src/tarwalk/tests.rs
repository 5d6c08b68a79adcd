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
