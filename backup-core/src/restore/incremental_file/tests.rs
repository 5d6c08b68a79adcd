use super::*;

const BLCKSZ: usize = 8192;

/// An incremental file as the server writes it, in byte order `le`.
fn file(truncation: u32, blocks: &[u32], le: bool) -> Vec<u8> {
    let w = |v: u32| if le { v.to_le_bytes() } else { v.to_be_bytes() };
    let mut f = Vec::new();
    f.extend(w(INCREMENTAL_MAGIC));
    f.extend(w(blocks.len() as u32));
    f.extend(w(truncation));
    for &b in blocks {
        f.extend(w(b));
    }
    if !blocks.is_empty() {
        f.resize(f.len().div_ceil(BLCKSZ) * BLCKSZ, 0);
    }
    for &b in blocks {
        f.extend(std::iter::repeat_n(b as u8, BLCKSZ));
    }
    f
}

fn read(bytes: &[u8]) -> Result<(IncrementalHeader, Vec<u8>), IncrementalError> {
    let mut input = bytes;
    let h = IncrementalHeader::read(&mut input, bytes.len() as u64, BlockGeometry::default())?;
    Ok((h, input.to_vec()))
}

#[test]
fn reads_the_header_in_either_byte_order_and_stops_at_the_first_block() {
    for le in [true, false] {
        let (h, rest) = read(&file(10, &[2, 7, 12], le)).unwrap();
        assert_eq!(h.truncation_blocks, 10);
        assert_eq!(h.blocks, [2, 7, 12]);
        assert_eq!(h.header_bytes, BLCKSZ as u64);
        assert_eq!(
            h.block_length(),
            13,
            "a block past the truncation length extends it"
        );
        assert_eq!(rest.len(), 3 * BLCKSZ);
        assert!(rest[..BLCKSZ].iter().all(|&b| b == 2));
    }
}

#[test]
fn a_file_without_blocks_is_twelve_bytes_with_no_padding() {
    let bytes = file(5, &[], true);
    assert_eq!(bytes.len(), 12);
    let (h, rest) = read(&bytes).unwrap();
    assert_eq!(
        (h.truncation_blocks, h.header_bytes, h.block_length()),
        (5, 12, 5)
    );
    assert!(rest.is_empty());
}

#[test]
fn a_header_longer_than_one_block_is_padded_to_the_next_block() {
    // 12 + 4 * 2100 bytes of header: two blocks.
    let blocks: Vec<u32> = (0..2100).collect();
    let (h, _) = read(&file(2100, &blocks, true)).unwrap();
    assert_eq!(h.header_bytes, 2 * BLCKSZ as u64);
}

#[test]
fn refuses_what_cannot_be_an_incremental_file() {
    let mut bad = file(1, &[0], true);
    bad[0] ^= 1;
    assert!(matches!(read(&bad), Err(IncrementalError::BadMagic(_))));

    let too_long = file(131_073, &[], true);
    assert!(matches!(
        read(&too_long),
        Err(IncrementalError::OutOfRange {
            what: "truncation block length",
            ..
        })
    ));
    let past_segment = file(1, &[131_072], true);
    assert!(matches!(
        read(&past_segment),
        Err(IncrementalError::OutOfRange {
            what: "block number",
            ..
        })
    ));
    // One block short, one byte long: the size must match the header exactly.
    let mut short = file(4, &[1, 2], true);
    short.truncate(short.len() - BLCKSZ);
    assert!(matches!(
        read(&short),
        Err(IncrementalError::SizeMismatch { blocks: 2, .. })
    ));
    let mut long = file(4, &[1], true);
    long.push(0);
    assert!(matches!(
        read(&long),
        Err(IncrementalError::SizeMismatch { .. })
    ));
    // A count so large the header alone is past the member's end.
    let mut huge = Vec::new();
    huge.extend(INCREMENTAL_MAGIC.to_le_bytes());
    huge.extend(131_072u32.to_le_bytes());
    huge.extend(0u32.to_le_bytes());
    assert!(matches!(
        read(&huge),
        Err(IncrementalError::SizeMismatch { .. })
    ));
    assert!(matches!(
        read(&huge[..7]),
        Err(IncrementalError::Truncated(_))
    ));
}

#[test]
fn a_stream_that_ends_inside_the_header_is_truncated_not_a_panic() {
    let bytes = file(3, &[1, 2], true);
    let mut input = &bytes[..20];
    let r = IncrementalHeader::read(&mut input, bytes.len() as u64, BlockGeometry::default());
    assert!(matches!(r, Err(IncrementalError::Truncated(_))), "{r:?}");
}

#[test]
fn reconstructed_paths_follow_pg_combinebackups_rule() {
    assert_eq!(
        reconstructed_path("base/5/INCREMENTAL.16384").as_deref(),
        Some("base/5/16384")
    );
    assert_eq!(
        reconstructed_path("base/5/INCREMENTAL.16384_fsm.1").as_deref(),
        Some("base/5/16384_fsm.1")
    );
    assert_eq!(
        reconstructed_path("global/INCREMENTAL.1262").as_deref(),
        Some("global/1262")
    );
    assert_eq!(
        reconstructed_path("pg_tblspc/16400/PG_17_202406281/5/INCREMENTAL.16401").as_deref(),
        Some("pg_tblspc/16400/PG_17_202406281/5/16401")
    );
    // Elsewhere it is just a name.
    for p in [
        "INCREMENTAL.conf",
        "pg_xact/INCREMENTAL.0000",
        "base/INCREMENTAL.x",
        "base/5/INCREMENTAL.",
        "base/5/16384",
    ] {
        assert_eq!(reconstructed_path(p), None, "{p}");
    }
}

#[test]
fn geometry_is_checked() {
    assert!(BlockGeometry::default().validate().is_ok());
    for (block_size, segment_blocks) in [(8000, 131_072), (65536, 1), (8192, 0)] {
        let g = BlockGeometry {
            block_size,
            segment_blocks,
        };
        assert!(g.validate().is_err(), "{g:?}");
    }
}
