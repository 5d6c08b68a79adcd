//! Synthetic WAL segments follow the page-header rules of protocol.md §6.

use testdata::sample_wal::{self, WalSegmentSpec};

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes(b[at..at + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().unwrap())
}

#[test]
fn names_and_magics() {
    assert_eq!(
        sample_wal::segment_name(1, 3, 16 << 20),
        "000000010000000000000003"
    );
    // 16 MiB segments: 256 per "xlogid".
    assert_eq!(
        sample_wal::segment_name(2, 0x1_05, 16 << 20),
        "000000020000000100000005"
    );
    assert_eq!(
        sample_wal::segment_name(0xA, 5, 1 << 30),
        "0000000A0000000100000001"
    );
    assert_eq!(sample_wal::page_magic(12), Some(0xD101));
    assert_eq!(sample_wal::page_magic(17), Some(0xD116));
    assert_eq!(sample_wal::page_magic(18), Some(0xD118));
    assert_eq!(sample_wal::page_magic(11), None);
}

#[test]
fn segment_page_headers() {
    let sysid = 7_300_000_000_000_000_001;
    let seg = sample_wal::wal_segment(16, sysid, 2, 3);
    assert_eq!(seg.len(), 16 << 20);
    // Long header on page 0.
    assert_eq!(u16_at(&seg, 0), 0xD113);
    assert_eq!(u16_at(&seg, 2), sample_wal::XLP_LONG_HEADER);
    assert_eq!(u32_at(&seg, 4), 2);
    assert_eq!(u64_at(&seg, 8), 3 * (16 << 20));
    assert_eq!(u32_at(&seg, 16), 0);
    assert_eq!(u64_at(&seg, 24), sysid);
    assert_eq!(u32_at(&seg, 32), 16 << 20);
    assert_eq!(u32_at(&seg, 36), 8192);
    // xl_tot_len 0 right after the header: end of WAL.
    assert_eq!(u32_at(&seg, 40), 0);
    // Short headers on every other page with consecutive addresses.
    for k in [1usize, 2, 2047] {
        let p = k * 8192;
        assert_eq!(u16_at(&seg, p), 0xD113);
        assert_eq!(u16_at(&seg, p + 2), 0);
        assert_eq!(u32_at(&seg, p + 4), 2);
        assert_eq!(u64_at(&seg, p + 8), 3 * (16 << 20) + p as u64);
        assert!(seg[p + 16..p + 8192].iter().all(|&b| b == 0));
    }
}

#[test]
fn partial_segment_and_other_sizes() {
    let mut spec = WalSegmentSpec::new(13, 1, 1, 1);
    spec.seg_size = 1 << 20;
    spec.valid_pages = Some(2);
    assert_eq!(spec.file_name(), "000000010000000000000001");
    assert_eq!(spec.start_lsn(), 1 << 20);
    let seg = spec.build();
    assert_eq!(seg.len(), 1 << 20);
    assert_eq!(u16_at(&seg, 8192), 0xD106);
    // Page 2 onward: magic 0 marks the end of valid data.
    assert!(seg[2 * 8192..].iter().all(|&b| b == 0));
}
