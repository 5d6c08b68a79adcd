//! START_REPLICATION payloads: the server's `w`/`k` and the client's `r`/`h`. Whatever parses
//! must re-encode to the same bytes (keepalive and status flags only when they are 0 or 1).
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use pgwire_repl::message::{
    parse_client_replication_message, parse_replication_message, ClientReplicationMessage,
    ReplicationMessage,
};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::new();
    if let Ok(m) = parse_replication_message(Bytes::copy_from_slice(data)) {
        m.encode(&mut buf);
        let flag_ok = match &m {
            ReplicationMessage::XLogData(_) => true,
            ReplicationMessage::PrimaryKeepalive(_) => data[17] <= 1,
        };
        if flag_ok {
            assert_eq!(&buf[..], data);
        }
    }
    buf.clear();
    if let Ok(m) = parse_client_replication_message(data) {
        match m {
            ClientReplicationMessage::StandbyStatusUpdate(s) => {
                s.encode(&mut buf);
                if data[33] <= 1 {
                    assert_eq!(&buf[..], data);
                }
            }
            ClientReplicationMessage::HotStandbyFeedback(h) => {
                h.encode(&mut buf);
                assert_eq!(&buf[..], data);
            }
        }
    }
});
