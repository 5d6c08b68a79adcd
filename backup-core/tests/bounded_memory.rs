//! 200 MiB through compress → encrypt → file and back, with memory that does not grow with the
//! file. This binary holds a single test so the process's peak RSS (VmHWM) is this test's own.

use backup_core::crypto::keywrap::generate_data_key;
use backup_core::sink::{open_reader, FileCodec};
use backup_core::store::local::LocalStore;
use backup_core::{Aead, Compression, FileSink};
use std::io::{Read, Write};

const TOTAL: usize = 200 << 20;
const BLOCK: usize = 1 << 20;

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// Block `i` of the stream: cheap to regenerate on the read side for comparison.
fn fill(block: &mut [u8], i: usize) {
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for (j, chunk) in block.chunks_mut(8).enumerate() {
        // Runs of repeats keep it compressible, the xorshift keeps it from being trivial.
        if j % 4 == 0 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
}

#[test]
fn two_hundred_mib_stream_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();

    let codec = FileCodec::encrypted(
        Compression::Lz4,
        Aead::Aes256Gcm,
        generate_data_key().unwrap(),
    );
    let mut block = vec![0u8; BLOCK];
    let store = LocalStore::new(dir.path());
    let mut sink = FileSink::create(&store, "big.lz4", &codec).unwrap();
    for i in 0..TOTAL / BLOCK {
        fill(&mut block, i);
        sink.write_all(&block).unwrap();
    }
    let summary = sink.finish().unwrap();
    assert_eq!(summary.raw_bytes, TOTAL as u64);

    let mut reader = open_reader(&store, "big.lz4", &codec).unwrap();
    let mut got = vec![0u8; BLOCK];
    for i in 0..TOTAL / BLOCK {
        fill(&mut block, i);
        reader.read_exact(&mut got).unwrap();
        assert!(got == block, "block {i} differs");
    }
    assert_eq!(reader.read(&mut got).unwrap(), 0, "no data past the end");

    // Whole-file buffering would need > 200 MiB; the pipeline needs a few MiB over the
    // test's own two 1 MiB blocks and the test harness.
    let peak = peak_rss_kib();
    assert!(
        peak < 64 * 1024,
        "peak RSS {peak} KiB while streaming 200 MiB: something buffers whole files"
    );
}
