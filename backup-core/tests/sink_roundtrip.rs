//! Every compression × encryption combination round-trips through FileSink / open_reader, for
//! empty files, files smaller than a chunk, exact chunk multiples and many chunks.

use backup_core::crypto::chunked::{DEFAULT_CHUNK_SIZE, FILE_MAGIC};
use backup_core::crypto::keywrap::generate_data_key;
use backup_core::sink::{open_reader, FileCodec, FileEncryption, FileSink};
use backup_core::store::local::LocalStore;
use backup_core::{Aead, Compression, FileError};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

fn pattern(len: usize) -> Vec<u8> {
    // Half text-like, half pseudo-random: exercises compressible and incompressible blocks.
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|i| {
            if (i / 4096) % 2 == 0 {
                b"postgres WAL page "[i % 18]
            } else {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            }
        })
        .collect()
}

fn codecs() -> Vec<(String, FileCodec)> {
    let keys = Arc::new(backup_core::crypto::keyring::Keyring::single(
        generate_data_key().unwrap(),
    ));
    let mut out = Vec::new();
    for c in [
        Compression::None,
        Compression::Lz4,
        Compression::Zstd(3),
        Compression::Zstd(11),
        Compression::Gzip(1),
        Compression::Gzip(9),
    ] {
        out.push((format!("{c}/none"), FileCodec::plain(c)));
        for aead in [Aead::Aes256Gcm, Aead::ChaCha20Poly1305] {
            for chunk_size in [1024, DEFAULT_CHUNK_SIZE] {
                out.push((
                    format!("{c}/{aead}/{chunk_size}"),
                    FileCodec {
                        compression: c,
                        encryption: Some(FileEncryption {
                            aead,
                            keys: keys.clone(),
                            chunk_size,
                            // Both header formats: version 2 names key 0.
                            key_ids: chunk_size == 1024,
                        }),
                    },
                ));
            }
        }
    }
    out
}

/// Writes `data` as object `identity` of the local store at `root` (the file `root/identity`).
fn write(root: &Path, identity: &str, codec: &FileCodec, data: &[u8]) -> backup_core::SinkSummary {
    let mut sink = FileSink::create(&LocalStore::new(root), identity, codec).unwrap();
    // Uneven write sizes, to cross chunk boundaries in every way.
    for piece in data.chunks(7919) {
        sink.write_all(piece).unwrap();
    }
    sink.finish().unwrap()
}

fn read(root: &Path, identity: &str, codec: &FileCodec) -> Vec<u8> {
    let mut out = Vec::new();
    open_reader(&LocalStore::new(root), identity, codec)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn every_combination_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let sizes = [0usize, 1, 1023, 1024, 4096, 65536, 3 * 65536 + 17, 700_000];
    for (name, codec) in codecs() {
        for &size in &sizes {
            let data = pattern(size);
            let root = dir
                .path()
                .join(format!("f-{}-{size}", name.replace([':', '/'], "_")));
            let summary = write(&root, "backups/x/base.tar", &codec, &data);
            let stored = std::fs::read(root.join("backups/x/base.tar")).unwrap();
            assert_eq!(summary.raw_bytes, size as u64, "{name} {size}");
            assert_eq!(summary.stored_bytes, stored.len() as u64, "{name} {size}");
            assert_eq!(
                summary.stored_crc32c,
                crc32c::crc32c(&stored),
                "{name} {size}"
            );
            assert_eq!(
                stored.starts_with(FILE_MAGIC),
                codec.encryption.is_some(),
                "{name}"
            );
            let back = read(&root, "backups/x/base.tar", &codec);
            assert!(back == data, "{name} size {size}: content differs");
        }
    }
    // Only the committed files remain: no temporaries.
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let x = e.unwrap().path().join("backups/x");
        assert!(std::fs::read_dir(x).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains(".tmp.")));
    }
}

#[test]
fn unencrypted_files_are_standard_frames() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(300_000);
    let lz4 = dir.path().join("a.lz4");
    write(
        dir.path(),
        "a.lz4",
        &FileCodec::plain(Compression::Lz4),
        &data,
    );
    let stored = std::fs::read(&lz4).unwrap();
    assert_eq!(
        &stored[..4],
        &0x184D2204u32.to_le_bytes(),
        "lz4 frame magic"
    );
    let mut out = Vec::new();
    lz4_flex::frame::FrameDecoder::new(&stored[..])
        .read_to_end(&mut out)
        .unwrap();
    assert!(out == data);

    let zst = dir.path().join("a.zst");
    write(
        dir.path(),
        "a.zst",
        &FileCodec::plain(Compression::Zstd(5)),
        &data,
    );
    let stored = std::fs::read(&zst).unwrap();
    assert_eq!(
        &stored[..4],
        &0xFD2FB528u32.to_le_bytes(),
        "zstd frame magic"
    );
    assert!(zstd::decode_all(&stored[..]).unwrap() == data);

    let gz = dir.path().join("a.gz");
    write(
        dir.path(),
        "a.gz",
        &FileCodec::plain(Compression::Gzip(6)),
        &data,
    );
    let stored = std::fs::read(&gz).unwrap();
    assert_eq!(&stored[..2], &[0x1f, 0x8b], "gzip magic");
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&stored[..])
        .read_to_end(&mut out)
        .unwrap();
    assert!(out == data);
}

#[test]
fn dropped_sink_leaves_nothing_and_finish_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let codec = FileCodec::plain(Compression::Lz4);
    let store = LocalStore::new(dir.path());
    {
        let mut sink = FileSink::create(&store, "x", &codec).unwrap();
        sink.write_all(&pattern(200_000)).unwrap();
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    write(dir.path(), "x", &codec, b"first");
    let mut sink = FileSink::create(&store, "x", &codec).unwrap();
    sink.write_all(b"second").unwrap();
    let err = sink.finish().unwrap_err();
    assert!(err.to_string().contains("refusing to overwrite"), "{err}");
    assert_eq!(read(dir.path(), "x", &codec), b"first");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    let mut sink = FileSink::create(&store, "x", &codec).unwrap();
    sink.write_all(b"third").unwrap();
    sink.finish_replacing().unwrap();
    assert_eq!(read(dir.path(), "x", &codec), b"third");
}

#[test]
fn mismatched_codecs_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let enc = FileCodec::encrypted(
        Compression::Lz4,
        Aead::Aes256Gcm,
        generate_data_key().unwrap(),
    );
    let plain = FileCodec::plain(Compression::Lz4);
    let store = LocalStore::new(dir.path());
    let p_path = dir.path().join("plain");
    write(dir.path(), "enc", &enc, b"data");
    write(dir.path(), "plain", &plain, b"data");

    let err = open_reader(&store, "enc", &plain).err().unwrap();
    assert!(matches!(err, FileError::NoKey { .. }), "{err}");
    let err = open_reader(&store, "plain", &enc).err().unwrap();
    let msg = err.to_string();
    assert!(matches!(err, FileError::BadMagic { .. }), "{msg}");
    assert!(msg.contains("unencrypted lz4"), "{msg}");

    // A plain file whose frame is damaged: the decoder's complaint names file and format.
    let mut bytes = std::fs::read(&p_path).unwrap();
    let n = bytes.len();
    bytes.truncate(n - 3);
    std::fs::write(&p_path, &bytes).unwrap();
    let mut r = open_reader(&store, "plain", &plain).unwrap();
    let e = r.read_to_end(&mut Vec::new()).unwrap_err();
    let fe = FileError::from_io(&e).expect("FileError inside");
    assert!(matches!(fe, FileError::Decompress { .. }), "{fe}");
    assert!(fe.to_string().contains("lz4"), "{fe}");
}
