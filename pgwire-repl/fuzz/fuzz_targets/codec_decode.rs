//! Backend message framing: any byte stream, cut anywhere, must decode to messages or a clean
//! error, never a panic, and never consume bytes of an incomplete message.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgwire_repl::codec::decode;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::new();
    for chunk in data.chunks(7) {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            match decode(&mut buf, 1 << 16) {
                Ok(Some(_)) => assert!(buf.len() < before),
                Ok(None) => {
                    assert_eq!(buf.len(), before);
                    break;
                }
                Err(_) => return,
            }
        }
    }
});
