//! The encrypted file reader: any bytes as a stored file give plaintext that authenticated, or an
//! error, never a panic or an unbounded allocation.
#![no_main]

use std::io::Read;
use std::path::Path;

use backup_core::crypto::chunked::ChunkOpener;
use backup_core::crypto::keywrap::generate_data_key;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = generate_data_key().expect("random key");
    if let Ok(mut opener) = ChunkOpener::new(data, Path::new("fuzz"), "backups/x/base.tar", &key) {
        let mut sink = Vec::new();
        let _ = opener.read_to_end(&mut sink);
    }
});
