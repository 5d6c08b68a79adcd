//! Encrypted files detect every kind of damage: any flipped byte, truncation at and between chunk
//! boundaries, a dropped final chunk, reordered chunks, appended data and swapped files.

use backup_core::crypto::chunked::MIN_CHUNK_SIZE;
use backup_core::crypto::keywrap::generate_data_key;
use backup_core::sink::{open_reader, FileCodec, FileEncryption, FileSink};
use backup_core::store::local::LocalStore;
use backup_core::{Aead, Compression, FileError};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

const CS: usize = MIN_CHUNK_SIZE as usize;
const REC: usize = CS + 16;
const IDENTITY: &str = "wal/000000010000000000000001";
/// Header length for IDENTITY: 50 fixed bytes plus the identity.
const HDR: usize = 50 + IDENTITY.len();

fn codec(aead: Aead) -> FileCodec {
    FileCodec {
        compression: Compression::None,
        encryption: Some(FileEncryption {
            aead,
            keys: Arc::new(backup_core::crypto::keyring::Keyring::single(
                generate_data_key().unwrap(),
            )),
            key_ids: false,
            chunk_size: MIN_CHUNK_SIZE,
        }),
    }
}

/// Writes 4 full chunks plus a 100-byte final chunk; returns the plaintext and stored bytes.
fn make(dir: &Path, codec: &FileCodec) -> (Vec<u8>, Vec<u8>) {
    let data: Vec<u8> = (0..4 * CS + 100).map(|i| (i * 31 % 251) as u8).collect();
    let root = dir.join("orig");
    let path = root.join(IDENTITY);
    let mut s = FileSink::create(&LocalStore::new(&root), IDENTITY, codec).unwrap();
    s.write_all(&data).unwrap();
    s.finish().unwrap();
    let stored = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(stored.len(), HDR + 4 * REC + 100 + 16);
    (data, stored)
}

/// Reads `bytes` as `identity`; returns the error (open- or read-time), or None if it read cleanly.
fn try_read(dir: &Path, bytes: &[u8], codec: &FileCodec, identity: &str) -> Option<FileError> {
    let path = dir.join(identity);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    let mut r = match open_reader(&LocalStore::new(dir), identity, codec) {
        Ok(r) => r,
        Err(e) => return Some(e),
    };
    match r.read_to_end(&mut Vec::new()) {
        Ok(_) => None,
        Err(e) => Some(into_file_error(e)),
    }
}

/// Moves the FileError out of an io::Error produced by a reader.
fn into_file_error(e: std::io::Error) -> FileError {
    let shown = e.to_string();
    *e.into_inner()
        .unwrap_or_else(|| panic!("bare io error {shown}"))
        .downcast::<FileError>()
        .unwrap_or_else(|e| panic!("not a FileError: {e}"))
}

fn err(dir: &Path, bytes: &[u8], codec: &FileCodec) -> FileError {
    try_read(dir, bytes, codec, IDENTITY).expect("damage went undetected")
}

#[test]
fn untouched_file_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    for aead in [Aead::Aes256Gcm, Aead::ChaCha20Poly1305] {
        let c = codec(aead);
        let (data, stored) = make(dir.path(), &c);
        assert!(try_read(dir.path(), &stored, &c, IDENTITY).is_none());
        let mut out = Vec::new();
        open_reader(&LocalStore::new(dir.path()), IDENTITY, &c)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
    }
}

#[test]
fn any_flipped_byte_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let c = codec(Aead::Aes256Gcm);
    let (_, stored) = make(dir.path(), &c);
    for i in 0..stored.len() {
        for mask in [0x01u8, 0x80] {
            let mut v = stored.clone();
            v[i] ^= mask;
            let e = try_read(dir.path(), &v, &c, IDENTITY)
                .unwrap_or_else(|| panic!("flip of byte {i} (mask {mask:#x}) went undetected"));
            assert!(!matches!(e, FileError::Io { .. }), "byte {i}: {e}");
        }
    }
}

#[test]
fn flipped_bytes_name_the_field_or_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let c = codec(Aead::ChaCha20Poly1305);
    let (_, stored) = make(dir.path(), &c);
    let flip = |i: usize| {
        let mut v = stored.clone();
        v[i] ^= 0x40;
        err(dir.path(), &v, &c)
    };
    assert!(matches!(flip(0), FileError::BadMagic { .. }));
    let e = flip(9);
    assert!(
        matches!(e, FileError::UnsupportedVersion { version: 0x41, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("upgrade pgstream"), "{e}");
    assert!(matches!(flip(10), FileError::BadHeader { .. }));
    assert!(
        matches!(flip(12), FileError::BadHeader { .. }),
        "chunk size"
    );
    // A chunk size still in range changes the header hash, which every chunk authenticates.
    assert!(matches!(flip(14), FileError::AuthFailed { chunk: 0, .. }));
    // The salt changes the file key: the first chunk no longer authenticates.
    assert!(matches!(flip(20), FileError::AuthFailed { chunk: 0, .. }));
    // The stored identity no longer matches the expected name.
    assert!(matches!(flip(HDR - 1), FileError::IdentityMismatch { .. }));
    // Body of chunk 2, tag of chunk 3.
    let e = flip(HDR + 2 * REC + 5);
    assert!(matches!(e, FileError::AuthFailed { chunk: 2, .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(IDENTITY) && msg.contains("chunk 2"), "{msg}");
    let e = flip(HDR + 4 * REC - 1);
    assert!(matches!(e, FileError::AuthFailed { chunk: 3, .. }), "{e}");
}

#[test]
fn truncation_anywhere_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let c = codec(Aead::Aes256Gcm);
    let (_, stored) = make(dir.path(), &c);
    for len in 0..stored.len() {
        let e = try_read(dir.path(), &stored[..len], &c, IDENTITY)
            .unwrap_or_else(|| panic!("truncation to {len} bytes went undetected"));
        assert!(!matches!(e, FileError::Io { .. }), "{len}: {e}");
    }
    // At chunk boundaries the error says the file was cut short after a non-final chunk.
    for k in 1..=4 {
        let e = err(dir.path(), &stored[..HDR + k * REC], &c);
        match &e {
            FileError::Truncated { detail, .. } => {
                assert!(detail.contains(&format!("after chunk {}", k - 1)), "{e}")
            }
            other => panic!("cut after chunk {k}: {other}"),
        }
    }
    let e = err(dir.path(), &stored[..HDR], &c);
    assert!(e.to_string().contains("no chunks"), "{e}");
    let e = err(dir.path(), &stored[..HDR + REC + 10], &c);
    assert!(
        matches!(e, FileError::Truncated { .. }),
        "shorter than a tag: {e}"
    );
    let e = err(dir.path(), &stored[..HDR + REC + 500], &c);
    assert!(
        matches!(e, FileError::AuthFailed { chunk: 1, .. }),
        "mid-chunk: {e}"
    );
    assert!(e.to_string().contains("truncated"), "{e}");
    let e = err(dir.path(), &stored[..20], &c);
    assert!(
        matches!(e, FileError::Truncated { .. }),
        "inside header: {e}"
    );
}

#[test]
fn dropped_final_chunk_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let c = codec(Aead::Aes256Gcm);
    let (_, stored) = make(dir.path(), &c);
    let e = err(dir.path(), &stored[..HDR + 4 * REC], &c);
    assert!(e.to_string().contains("not the final chunk"), "{e}");
}

#[test]
fn swapped_and_duplicated_chunks_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let c = codec(Aead::Aes256Gcm);
    let (_, stored) = make(dir.path(), &c);
    let chunk = |i: usize| &stored[HDR + i * REC..HDR + (i + 1) * REC];
    let mut swapped = stored[..HDR].to_vec();
    for i in [0, 2, 1, 3] {
        swapped.extend_from_slice(chunk(i));
    }
    swapped.extend_from_slice(&stored[HDR + 4 * REC..]);
    let e = err(dir.path(), &swapped, &c);
    assert!(matches!(e, FileError::AuthFailed { chunk: 1, .. }), "{e}");

    let mut dup = stored[..HDR + REC].to_vec();
    dup.extend_from_slice(&stored[HDR..]);
    assert!(matches!(
        err(dir.path(), &dup, &c),
        FileError::AuthFailed { chunk: 1, .. }
    ));

    // Appended bytes merge with the short final chunk into a record that fails.
    let mut appended = stored.clone();
    appended.extend_from_slice(chunk(0));
    let e = err(dir.path(), &appended, &c);
    assert!(matches!(e, FileError::AuthFailed { chunk: 4, .. }), "{e}");
}

#[test]
fn files_cannot_be_swapped_between_names_or_keys() {
    let dir = tempfile::tempdir().unwrap();
    let c = codec(Aead::Aes256Gcm);
    let (_, stored) = make(dir.path(), &c);
    let e = try_read(dir.path(), &stored, &c, "wal/000000010000000000000002").unwrap();
    match &e {
        FileError::IdentityMismatch {
            expected, found, ..
        } => {
            assert_eq!(expected, "wal/000000010000000000000002");
            assert_eq!(found, IDENTITY);
        }
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("swapped or renamed"));

    // A header rewritten to claim the other name: the key is derived from the expected name,
    // and the header hash is in every chunk's AAD, so the chunks fail.
    let other = "wal/000000010000000000000002";
    let mut forged = stored[..48].to_vec();
    forged.extend_from_slice(&(other.len() as u16).to_be_bytes());
    forged.extend_from_slice(other.as_bytes());
    forged.extend_from_slice(&stored[HDR..]);
    let e = try_read(dir.path(), &forged, &c, other).unwrap();
    assert!(matches!(e, FileError::AuthFailed { chunk: 0, .. }), "{e}");

    // Same file under another repository's data key.
    let e = err(dir.path(), &stored, &codec(Aead::Aes256Gcm));
    assert!(matches!(e, FileError::AuthFailed { chunk: 0, .. }), "{e}");
}

#[test]
fn chunk_multiple_and_empty_files_have_a_final_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let c = codec(Aead::Aes256Gcm);
    for len in [0, CS, 3 * CS] {
        let root = dir.path().join(format!("m{len}"));
        let path = root.join(IDENTITY);
        let mut s = FileSink::create(&LocalStore::new(&root), IDENTITY, &c).unwrap();
        s.write_all(&vec![7u8; len]).unwrap();
        s.finish().unwrap();
        let stored = std::fs::read(&path).unwrap();
        let chunks = len.div_ceil(CS).max(1);
        assert_eq!(stored.len(), HDR + len + 16 * chunks, "len {len}");
        assert!(try_read(dir.path(), &stored, &c, IDENTITY).is_none());
        if len > 0 {
            let e = err(dir.path(), &stored[..stored.len() - REC], &c);
            assert!(
                e.to_string().contains("not the final chunk")
                    || e.to_string().contains("no chunks"),
                "{e}"
            );
            // After a full-size final chunk, appended data is named as such.
            let mut appended = stored.clone();
            appended.extend_from_slice(&stored[HDR..HDR + 20]);
            let e = err(dir.path(), &appended, &c);
            assert!(matches!(e, FileError::TrailingData { .. }), "{e}");
            assert!(e.to_string().contains("follows the final chunk"), "{e}");
        }
    }
}
