use super::*;
use crate::compress::Compression;
use crate::crypto::DataKey;
use crate::store::local::LocalStore;
use std::path::{Path, PathBuf};

const MIB: u64 = 1 << 20;
const MARKER: &[u8] = b"plaintext-marker-in-wal";

fn codecs() -> Vec<FileCodec> {
    let key = || DataKey::from_bytes([9u8; 32]);
    vec![
        FileCodec::plain(Compression::None),
        FileCodec::encrypted(Compression::Lz4, Aead::Aes256Gcm, key()),
        FileCodec::encrypted(Compression::None, Aead::ChaCha20Poly1305, key()),
    ]
}

fn segment() -> SegmentName {
    SegmentName::new(TimelineId(1), 3, WalSegmentSize::new(MIB).unwrap())
}

const ID: &str = "wal/0000000100000000/000000010000000000000003.partial.recv";

/// WAL-like content: a marker every 1000 bytes, so plaintext would be easy to spot.
fn wal(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            let k = i % 1000;
            if k < MARKER.len() {
                MARKER[k]
            } else {
                (i * 7 + i / 251) as u8
            }
        })
        .collect()
}

/// The local store holding `path`, the file stored as [`ID`] (three name components).
fn at(path: &Path) -> LocalStore {
    LocalStore::new(path.ancestors().nth(3).unwrap())
}

fn read_all(path: &Path, codec: &FileCodec) -> (Vec<u8>, PartialEnd) {
    let mut r = PartialReader::open(&at(path), ID, codec).unwrap();
    let mut out = Vec::new();
    r.read_to_end(&mut out).unwrap();
    assert_eq!(r.valid_len(), out.len() as u64);
    (out, r.end().clone())
}

/// Writes `pieces` as one record each; returns the path, the content and each record's end
/// offset in the file.
fn write(dir: &Path, codec: &FileCodec, pieces: &[usize]) -> (PathBuf, Vec<u8>, Vec<u64>) {
    let path = dir.join(ID);
    let total: usize = pieces.iter().sum();
    let content = wal(total);
    let mut w = PartialWriter::create(&LocalStore::new(dir), ID, segment(), codec).unwrap();
    let mut at = 0;
    let mut ends = Vec::new();
    for &n in pieces {
        w.append(&content[at..at + n]).unwrap();
        at += n;
        ends.push(w.file_pos);
    }
    w.sync().unwrap();
    assert_eq!(w.synced_len(), total as u64);
    (path, content, ends)
}

#[test]
fn round_trip_for_every_codec() {
    for codec in codecs() {
        let dir = tempfile::tempdir().unwrap();
        let (path, content, _) = write(dir.path(), &codec, &[100, 8192, 1, 300_000]);
        let (read, end) = read_all(&path, &codec);
        assert_eq!(read, content);
        assert_eq!(end, PartialEnd::Clean);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let bytes = std::fs::read(&path).unwrap();
        let has_marker = bytes.windows(MARKER.len()).any(|w| w == MARKER);
        assert_eq!(
            has_marker,
            codec.encryption.is_none(),
            "plaintext iff unencrypted"
        );
        assert!(bytes.len() as u64 > MIB, "pre-sized past the segment size");
    }
}

#[test]
fn a_whole_segment_fits_and_one_byte_more_does_not() {
    for codec in codecs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ID);
        let mut w =
            PartialWriter::create(&LocalStore::new(dir.path()), ID, segment(), &codec).unwrap();
        let content = wal(MIB as usize);
        w.append(&content).unwrap();
        assert!(w.is_complete());
        assert!(matches!(w.append(b"x"), Err(PartialError::Overflow { .. })));
        w.sync().unwrap();
        assert_eq!(read_all(&path, &codec).0, content);
    }
}

#[test]
fn many_tiny_records_grow_the_file() {
    for codec in codecs() {
        let dir = tempfile::tempdir().unwrap();
        let pieces = vec![7usize; 40_000];
        let (path, content, _) = write(dir.path(), &codec, &pieces);
        assert_eq!(read_all(&path, &codec).0, content);
    }
}

#[test]
fn a_torn_last_record_leaves_the_records_before_it() {
    for codec in codecs() {
        let dir = tempfile::tempdir().unwrap();
        let (path, content, ends) = write(dir.path(), &codec, &[5000, 6000, 7000]);
        let bytes = std::fs::read(&path).unwrap();
        // Cut the last record at every 97th byte (what a crash mid-write leaves, zeros after).
        for cut in (ends[1]..ends[2]).step_by(97) {
            let mut torn = bytes.clone();
            for b in &mut torn[cut as usize..] {
                *b = 0;
            }
            std::fs::write(&path, &torn).unwrap();
            let (read, end) = read_all(&path, &codec);
            assert_eq!(read, content[..11000], "cut at {cut}");
            if cut == ends[1] {
                assert_eq!(end, PartialEnd::Clean);
            } else {
                assert!(
                    matches!(end, PartialEnd::Invalid { file_offset, .. } if file_offset == ends[1]),
                    "{end:?}"
                );
            }
        }
        // Truncated files too.
        std::fs::write(&path, &bytes[..ends[2] as usize - 1]).unwrap();
        assert_eq!(read_all(&path, &codec).0, content[..11000]);
        std::fs::write(&path, &bytes[..ends[2] as usize]).unwrap();
        assert_eq!(
            read_all(&path, &codec),
            (content.clone(), PartialEnd::Clean)
        );
    }
}

#[test]
fn every_flipped_byte_is_detected_and_only_a_valid_prefix_is_returned() {
    for codec in codecs() {
        let dir = tempfile::tempdir().unwrap();
        let (path, content, ends) = write(dir.path(), &codec, &[3000, 2000, 1000]);
        let bytes = std::fs::read(&path).unwrap();
        let tag = PartialReader::open(&at(&path), ID, &codec)
            .unwrap()
            .sealer
            .tag_len() as u64;
        let header_len = ends[0] - (RECORD_HEADER_LEN as u64 + 3000 + tag);
        for i in (0..ends[2] as usize).step_by(13) {
            let mut bad = bytes.clone();
            bad[i] ^= 0x20;
            std::fs::write(&path, &bad).unwrap();
            let reader = PartialReader::open(&at(&path), ID, &codec);
            if (i as u64) < header_len {
                // Salt bytes give another key; a different header hash fails record 0.
                if let Ok(mut r) = reader {
                    let mut out = Vec::new();
                    r.read_to_end(&mut out).unwrap();
                    assert!(
                        out.is_empty(),
                        "header byte {i} flipped yet {} bytes read",
                        out.len()
                    );
                }
                continue;
            }
            let mut r = reader.unwrap();
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            let record = ends.iter().position(|&e| (i as u64) < e).unwrap();
            let before = [0, 3000, 5000][record];
            assert_eq!(out, content[..before], "byte {i} (record {record})");
            assert!(matches!(r.end(), PartialEnd::Invalid { .. }), "byte {i}");
        }
    }
}

#[test]
fn reordered_spliced_and_moved_records_fail() {
    let codec = &codecs()[1];
    let dir = tempfile::tempdir().unwrap();
    let (path, content, ends) = write(dir.path(), codec, &[1000, 1000, 1000]);
    let bytes = std::fs::read(&path).unwrap();
    let (r0, r1, r2) = (ends[0] as usize, ends[1] as usize, ends[2] as usize);
    let header = &bytes[..r0 - (r1 - r0)];
    let rec = |a: usize, b: usize| bytes[a..b].to_vec();
    let first = rec(header.len(), r0);
    // Swap records 1 and 2.
    let swapped = [header, &first, &rec(r1, r2), &rec(r0, r1)].concat();
    std::fs::write(&path, &swapped).unwrap();
    assert_eq!(read_all(&path, codec).0, content[..1000]);
    // Drop record 1.
    let dropped = [header, &first, &rec(r1, r2)].concat();
    std::fs::write(&path, &dropped).unwrap();
    assert_eq!(read_all(&path, codec).0, content[..1000]);
    // Record 1 from another file of the same segment (another salt, so another key).
    let dir2 = tempfile::tempdir().unwrap();
    let (path2, _, ends2) = write(dir2.path(), codec, &[1000, 1000, 1000]);
    let other = std::fs::read(&path2).unwrap();
    let spliced = [header, &first, &other[ends2[0] as usize..ends2[1] as usize]].concat();
    std::fs::write(&path, &spliced).unwrap();
    assert_eq!(read_all(&path, codec).0, content[..1000]);
    // The intact file under another name does not open.
    std::fs::write(&path, &bytes).unwrap();
    let moved = "wal/x/000000010000000000000004.partial.recv";
    let store = at(&path);
    std::fs::create_dir_all(dir.path().join("wal/x")).unwrap();
    std::fs::write(dir.path().join(moved), &bytes).unwrap();
    let err = PartialReader::open(&store, moved, codec).unwrap_err();
    assert!(err.to_string().contains("written as"), "{err}");
    // Nor with the wrong repository key.
    let wrong = FileCodec::encrypted(
        Compression::Lz4,
        Aead::Aes256Gcm,
        DataKey::from_bytes([1u8; 32]),
    );
    assert!(read_all(&path, &wrong).0.is_empty());
    // Nor as an unencrypted repository's file.
    assert!(PartialReader::open(&store, ID, &codecs()[0]).is_err());
}

#[test]
fn resume_keeps_the_valid_prefix_under_a_fresh_key_and_continues() {
    for codec in codecs() {
        let dir = tempfile::tempdir().unwrap();
        let (path, content, ends) = write(dir.path(), &codec, &[4000, 4000, 4000]);
        let before = std::fs::read(&path).unwrap();
        // A crash left record 2 torn.
        let mut torn = before.clone();
        torn[ends[2] as usize - 5] ^= 1;
        std::fs::write(&path, &torn).unwrap();
        let (mut w, end) = PartialWriter::resume(&at(&path), ID, segment(), &codec).unwrap();
        assert!(matches!(end, PartialEnd::Invalid { .. }), "{end:?}");
        assert_eq!(w.len(), 8000);
        assert_eq!(w.synced_len(), 8000);
        let more = wal(20_000);
        w.append(&more[8000..]).unwrap();
        w.sync().unwrap();
        let (read, end) = read_all(&path, &codec);
        assert_eq!(end, PartialEnd::Clean);
        assert_eq!(read, more);
        assert_eq!(read[..12000], content[..]);
        let after = std::fs::read(&path).unwrap();
        if codec.encryption.is_some() {
            assert_ne!(after[28..60], before[28..60], "a fresh salt");
        }
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left");
        // Resuming a missing file starts an empty one; the wrong segment is refused.
        let empty = LocalStore::new(dir.path().join("new"));
        let (w, _) = PartialWriter::resume(&empty, ID, segment(), &codec).unwrap();
        assert!(w.is_empty());
        assert!(PartialWriter::resume(&at(&path), ID, segment().next(), &codec).is_err());
    }
}

#[test]
fn garbage_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(ID);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    for junk in [
        &b""[..],
        b"PGSTPART",
        &[0u8; 200],
        b"\x04\x22\x4d\x18 lz4 frame",
    ] {
        std::fs::write(&path, junk).unwrap();
        assert!(matches!(
            PartialReader::open(&at(&path), ID, &codecs()[1]),
            Err(PartialError::BadHeader { .. })
        ));
    }
}

#[test]
fn receiving_names() {
    let seg = SegmentName::new(TimelineId(2), 0x1_05, WalSegmentSize::DEFAULT);
    assert_eq!(
        receiving_name(&seg, true),
        "wal/0000000200000001/000000020000000100000005.partial.recv.enc"
    );
    assert_eq!(
        receiving_name(&seg, false),
        "wal/0000000200000001/000000020000000100000005.partial.recv"
    );
}
