//! The UPLOAD_MANIFEST exchange, message by message, from the bytes a walsender sends
//! (testdata's builders) through the codec.

use bytes::BytesMut;
use testdata::wire::{self, ErrorFields};

use super::*;
use crate::codec::{self, DEFAULT_MAX_MESSAGE_SIZE};

/// The messages encoded in `bytes`, in order.
fn messages(bytes: &[u8]) -> Vec<BackendMessage> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(m) = codec::decode(&mut buf, DEFAULT_MAX_MESSAGE_SIZE).unwrap() {
        out.push(m);
    }
    assert!(buf.is_empty(), "trailing bytes");
    out
}

fn feed(ex: &mut UploadExchange, bytes: &[u8]) -> Vec<Result<Next, String>> {
    messages(bytes)
        .into_iter()
        .map(|m| {
            ex.on_message(m).map_err(|e| match e {
                ExchangeError::Server(db) => format!("server: {}", db.message),
                ExchangeError::Protocol(p) => format!("protocol: {p}"),
            })
        })
        .collect()
}

fn error(message: &str) -> Vec<u8> {
    wire::error_response(&ErrorFields::new("ERROR", "55000", message))
}

#[test]
fn accepted_upload_copy_in_then_command_complete_then_ready() {
    let mut ex = UploadExchange::new();
    assert!(!ex.is_sending());
    assert_eq!(
        feed(&mut ex, &wire::copy_in_response()),
        [Ok(Next::SendManifest)]
    );
    assert!(ex.is_sending());
    ex.copy_done_sent();
    assert!(!ex.is_sending());
    let mut tail = wire::command_complete("UPLOAD_MANIFEST");
    tail.extend(wire::ready_for_query(b'I'));
    assert_eq!(feed(&mut ex, &tail), [Ok(Next::Read), Ok(Next::Done)]);
}

#[test]
fn refusal_before_copy_in_is_the_servers_error_after_ready_for_query() {
    // A walsender of a server that cannot take manifests answers the query with an error.
    let mut ex = UploadExchange::new();
    let mut bytes = error("syntax error");
    bytes.extend(wire::ready_for_query(b'I'));
    assert_eq!(
        feed(&mut ex, &bytes),
        [Ok(Next::Read), Err("server: syntax error".into())]
    );
}

#[test]
fn refusal_of_the_manifest_during_or_after_the_copy_is_reported_after_ready_for_query() {
    // The server parses as it receives: a manifest of another cluster is refused while the
    // client may still be sending; the rest of the copy is ignored by the server.
    for refuse_before_done in [true, false] {
        let mut ex = UploadExchange::new();
        feed(&mut ex, &wire::copy_in_response());
        if !refuse_before_done {
            ex.copy_done_sent();
        }
        let refusal =
            "system identifier in backup manifest is 1, but database system identifier is 2";
        let mut bytes = error(refusal);
        bytes.extend(wire::ready_for_query(b'I'));
        let got = feed(&mut ex, &bytes);
        assert_eq!(got[0], Ok(Next::Read));
        assert_eq!(got[1], Err(format!("server: {refusal}")));
    }
}

#[test]
fn unexpected_messages_are_protocol_errors() {
    // CopyOut instead of CopyIn.
    let mut ex = UploadExchange::new();
    let got = feed(&mut ex, &wire::copy_out_response());
    assert!(
        matches!(&got[0], Err(e) if e.starts_with("protocol:") && e.contains("'H'")),
        "{got:?}"
    );
    // Data from the server while the client sends.
    let mut ex = UploadExchange::new();
    feed(&mut ex, &wire::copy_in_response());
    let got = feed(&mut ex, &wire::copy_data(b"x"));
    assert!(
        matches!(&got[0], Err(e) if e.starts_with("protocol:")),
        "{got:?}"
    );
    // ReadyForQuery without CommandComplete.
    let mut ex = UploadExchange::new();
    feed(&mut ex, &wire::copy_in_response());
    ex.copy_done_sent();
    let got = feed(&mut ex, &wire::ready_for_query(b'I'));
    assert!(
        matches!(&got[0], Err(e) if e.starts_with("protocol:")),
        "{got:?}"
    );
}
