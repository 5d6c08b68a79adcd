//! backup_manifest parsing: any bytes give a manifest or an error, never a panic; a parsed
//! manifest can be verified against an empty archive without panicking.
#![no_main]

use backup_core::manifest::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::parse(data) {
        let _ = m.verify_files(&[]);
        let _ = m.start_lsn();
        let _ = m.end_lsn();
    }
});
