//! The encrypted file reader: any bytes as a stored file give plaintext that authenticated, or an
//! error, never a panic or an unbounded allocation.
#![no_main]

use std::io::Read;
use std::path::Path;

use backup_core::crypto::chunked::ChunkOpener;
use backup_core::crypto::keyring::Keyring;
use backup_core::crypto::keywrap::generate_data_key;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Key 0 (format 1 headers) and whatever id a format 2 header names that is not 0: unknown.
    let keys = Keyring::single(generate_data_key().expect("random key"));
    if let Ok(mut opener) = ChunkOpener::new(data, Path::new("fuzz"), "backups/x/base.tar", &keys) {
        let mut sink = Vec::new();
        let _ = opener.read_to_end(&mut sink);
    }
});
