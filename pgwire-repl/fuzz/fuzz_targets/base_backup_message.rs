//! BASE_BACKUP (v15+) payloads: `n`/`d`/`p`/`m`. Whatever parses must re-encode to the same
//! bytes, and archive names must never be usable as paths.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use pgwire_repl::message::{parse_base_backup_message, BaseBackupCopyMessage};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = parse_base_backup_message(Bytes::copy_from_slice(data)) {
        if let BaseBackupCopyMessage::NewArchive { name, .. } = &m {
            assert!(!name.is_empty() && !name.starts_with('.'));
            assert!(!name.contains(['/', '\\', '\0']));
        }
        let mut buf = BytesMut::new();
        m.encode(&mut buf);
        assert_eq!(&buf[..], data);
    }
});
