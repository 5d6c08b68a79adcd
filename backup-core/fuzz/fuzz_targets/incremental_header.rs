//! The INCREMENTAL.* header parser (restore/incremental_file.rs): any bytes, with a claimed
//! member size and block geometry taken from the first bytes, give a header or an error, never
//! a panic; an accepted header always fits the member exactly and stays inside the segment.
#![no_main]

use backup_core::restore::incremental_file::{BlockGeometry, IncrementalHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&shape, rest)) = data.split_first() else { return };
    let geometry = BlockGeometry {
        block_size: 1024 << (shape % 6),
        segment_blocks: 1 + u32::from(shape >> 3) * 16,
    };
    // The member may claim more bytes than the stream holds (a truncated archive).
    let size = rest.len() as u64 + u64::from(shape & 1) * 4096;
    let mut input = rest;
    if let Ok(h) = IncrementalHeader::read(&mut input, size, geometry) {
        let blocks = h.blocks.len() as u64;
        assert_eq!(h.header_bytes + blocks * u64::from(geometry.block_size), size);
        assert!(h.blocks.iter().all(|&b| b < geometry.segment_blocks));
        assert!(h.truncation_blocks <= geometry.segment_blocks);
        assert!(h.block_length() <= geometry.segment_blocks);
    }
});
