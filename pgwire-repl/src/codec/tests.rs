use super::*;

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn decode_all(bytes: &[u8]) -> Vec<BackendMessage> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(m) = decode(&mut buf, DEFAULT_MAX_MESSAGE_SIZE).unwrap() {
        out.push(m);
    }
    assert!(buf.is_empty(), "left over: {buf:?}");
    out
}

#[test]
fn decodes_ready_for_query_byte_fixture() {
    assert_eq!(
        decode_all(&[b'Z', 0, 0, 0, 5, b'I']),
        vec![BackendMessage::ReadyForQuery(b'I')]
    );
}

#[test]
fn incomplete_messages_wait_for_more_bytes() {
    let full = frame(b'd', b"hello world");
    for cut in 0..full.len() {
        let mut buf = BytesMut::from(&full[..cut]);
        assert_eq!(decode(&mut buf, 1024).unwrap(), None, "cut at {cut}");
        assert_eq!(buf.len(), cut, "nothing consumed at {cut}");
    }
    let mut buf = BytesMut::from(&full[..]);
    assert_eq!(
        decode(&mut buf, 1024).unwrap(),
        Some(BackendMessage::CopyData(Bytes::from_static(b"hello world")))
    );
}

#[test]
fn refuses_oversized_message_before_buffering_it() {
    let mut buf = BytesMut::from(&[b'd', 0x40, 0, 0, 0, 1, 2, 3][..]);
    match decode(&mut buf, DEFAULT_MAX_MESSAGE_SIZE) {
        Err(ProtocolError::MessageTooLarge { tag: 'd', len, .. }) => assert_eq!(len, 0x4000_0000),
        other => panic!("{other:?}"),
    }
}

#[test]
fn refuses_length_below_four() {
    for len in [-1i32, 0, 3] {
        let mut v = vec![b'Z'];
        v.extend_from_slice(&len.to_be_bytes());
        let mut buf = BytesMut::from(&v[..]);
        assert!(matches!(
            decode(&mut buf, 1024),
            Err(ProtocolError::InvalidLength { .. })
        ));
    }
}

#[test]
fn decodes_error_response_fields() {
    let body = b"SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed for user \"x\"\0Dsome detail\0Hsome hint\0Fauth.c\0L330\0Rauth_failed\0\0";
    let msgs = decode_all(&frame(b'E', body));
    let BackendMessage::ErrorResponse(e) = &msgs[0] else {
        panic!("{msgs:?}")
    };
    assert_eq!(e.severity, "FATAL");
    assert_eq!(e.code, "28P01");
    assert_eq!(e.message, "password authentication failed for user \"x\"");
    assert_eq!(e.detail.as_deref(), Some("some detail"));
    assert_eq!(e.hint.as_deref(), Some("some hint"));
    assert_eq!(e.routine.as_deref(), Some("auth_failed"));
    let shown = e.to_string();
    assert!(
        shown.contains("28P01") && shown.contains("HINT: some hint"),
        "{shown}"
    );
}

#[test]
fn decodes_sasl_mechanisms_and_md5_salt() {
    let mut body = 10i32.to_be_bytes().to_vec();
    body.extend_from_slice(b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0");
    let mut md5 = 5i32.to_be_bytes().to_vec();
    md5.extend_from_slice(&[1, 2, 3, 4]);
    let mut bytes = frame(b'R', &body);
    bytes.extend(frame(b'R', &md5));
    assert_eq!(
        decode_all(&bytes),
        vec![
            BackendMessage::Authentication(AuthRequest::Sasl(vec![
                "SCRAM-SHA-256-PLUS".into(),
                "SCRAM-SHA-256".into()
            ])),
            BackendMessage::Authentication(AuthRequest::Md5Password { salt: [1, 2, 3, 4] }),
        ]
    );
}

#[test]
fn decodes_row_description_and_data_row_with_null() {
    let mut t = 2i16.to_be_bytes().to_vec();
    for (name, oid) in [("systemid", 25i32), ("timeline", 23)] {
        t.extend_from_slice(name.as_bytes());
        t.push(0);
        t.extend_from_slice(&0i32.to_be_bytes());
        t.extend_from_slice(&0i16.to_be_bytes());
        t.extend_from_slice(&oid.to_be_bytes());
        t.extend_from_slice(&(-1i16).to_be_bytes());
        t.extend_from_slice(&0i32.to_be_bytes());
        t.extend_from_slice(&0i16.to_be_bytes());
    }
    let mut d = 2i16.to_be_bytes().to_vec();
    d.extend_from_slice(&3i32.to_be_bytes());
    d.extend_from_slice(b"123");
    d.extend_from_slice(&(-1i32).to_be_bytes());
    let mut bytes = frame(b'T', &t);
    bytes.extend(frame(b'D', &d));
    let msgs = decode_all(&bytes);
    assert_eq!(
        msgs[0],
        BackendMessage::RowDescription(vec![
            FieldDescription {
                name: "systemid".into(),
                type_oid: 25
            },
            FieldDescription {
                name: "timeline".into(),
                type_oid: 23
            }
        ])
    );
    assert_eq!(
        msgs[1],
        BackendMessage::DataRow(vec![Some(Bytes::from_static(b"123")), None])
    );
}

#[test]
fn decodes_copy_both_and_negotiate_protocol_version() {
    let mut v = 0i32.to_be_bytes().to_vec();
    v.extend_from_slice(&1i32.to_be_bytes());
    v.extend_from_slice(b"_pq_.x\0");
    let mut bytes = frame(b'W', &[0, 0, 0]);
    bytes.extend(frame(b'v', &v));
    assert_eq!(
        decode_all(&bytes),
        vec![
            BackendMessage::CopyBothResponse,
            BackendMessage::NegotiateProtocolVersion {
                newest_minor: 0,
                unrecognized: vec!["_pq_.x".into()]
            }
        ]
    );
}

#[test]
fn rejects_truncated_bodies_and_trailing_bytes() {
    // DataRow announcing a 10-byte value with 2 bytes present.
    let mut d = 1i16.to_be_bytes().to_vec();
    d.extend_from_slice(&10i32.to_be_bytes());
    d.extend_from_slice(b"ab");
    let mut buf = BytesMut::from(&frame(b'D', &d)[..]);
    assert!(matches!(
        decode(&mut buf, 1024),
        Err(ProtocolError::Malformed { .. })
    ));
    let mut buf = BytesMut::from(&frame(b'Z', b"IX")[..]);
    assert!(decode(&mut buf, 1024).is_err());
    let mut buf = BytesMut::from(&frame(b'S', b"no-nul")[..]);
    assert!(decode(&mut buf, 1024).is_err());
}

#[test]
fn unknown_tag_is_an_error() {
    let mut buf = BytesMut::from(&frame(b'?', b"")[..]);
    assert!(matches!(
        decode(&mut buf, 1024),
        Err(ProtocolError::Unexpected { tag: '?', .. })
    ));
}

/// Arbitrary bytes never panic the decoder (a cheap, deterministic stand-in for fuzzing in CI;
/// the cargo-fuzz targets in `fuzz/` go further).
#[test]
fn arbitrary_bytes_never_panic() {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let tags = b"RSKZTDCIENGHWdcvA12n?";
    for _ in 0..20_000 {
        let len = (next() % 64) as usize;
        let mut v = vec![tags[(next() % tags.len() as u64) as usize]];
        v.extend_from_slice(&((len + 4) as i32).to_be_bytes());
        for _ in 0..len {
            v.push(next() as u8);
        }
        let mut buf = BytesMut::from(&v[..]);
        let _ = decode(&mut buf, 1 << 20);
    }
}
