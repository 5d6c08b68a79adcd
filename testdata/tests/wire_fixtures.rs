//! The wire builders and parsers against hand-written hex fixtures (lengths computed by hand
//! from the protocol documentation, not from the code under test).

use bytes::BytesMut;
use testdata::wire::{self, oid, ErrorFields, FrontendMessage, ReplicationFeedback, StartupPacket};

/// Decodes hex, ignoring whitespace.
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert_eq!(digits.len() % 2, 0, "odd number of hex digits in {s:?}");
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

#[test]
fn authentication_messages() {
    assert_eq!(wire::auth_ok(), hex("52 00000008 00000000"));
    assert_eq!(wire::auth_cleartext_password(), hex("52 00000008 00000003"));
    assert_eq!(
        wire::auth_md5_password([1, 2, 3, 4]),
        hex("52 0000000c 00000005 01020304")
    );
    assert_eq!(
        wire::auth_sasl(&["SCRAM-SHA-256"]),
        hex("52 00000017 0000000a 5343 5241 4d2d 5348 412d 3235 3600 00")
    );
    assert_eq!(
        wire::auth_sasl_continue(b"r=abc"),
        hex("52 0000000d 0000000b 723d616263")
    );
    assert_eq!(
        wire::auth_sasl_final(b"v=xyz"),
        hex("52 0000000d 0000000c 763d78797a")
    );
}

#[test]
fn session_messages() {
    assert_eq!(
        wire::parameter_status("a", "b"),
        hex("53 00000008 6100 6200")
    );
    assert_eq!(
        wire::backend_key_data(1, 2),
        hex("4b 0000000c 00000001 00000002")
    );
    assert_eq!(wire::ready_for_query(wire::TX_IDLE), hex("5a 00000005 49"));
    assert_eq!(
        wire::command_complete("COPY 0"),
        hex("43 0000000b 434f5059203000")
    );
    assert_eq!(
        wire::negotiate_protocol_version(0, &["_pq_.foo"]),
        hex("76 00000015 00000000 00000001 5f70715f2e666f6f00")
    );
}

#[test]
fn result_set_messages() {
    assert_eq!(
        wire::row_description(&[("tli", oid::INT8)]),
        hex("54 0000001c 0001 746c6900 00000000 0000 00000014 0008 ffffffff 0000")
    );
    assert_eq!(
        wire::row_description(&[("x", oid::TEXT)]),
        hex("54 0000001a 0001 7800 00000000 0000 00000019 ffff ffffffff 0000")
    );
    assert_eq!(
        wire::data_row(&[Some(b"ab"), None]),
        hex("44 00000010 0002 00000002 6162 ffffffff")
    );
    assert_eq!(
        wire::data_row_text(&[Some("ab"), None]),
        wire::data_row(&[Some(b"ab"), None])
    );
}

#[test]
fn error_and_notice() {
    let f = ErrorFields::new("ERROR", "58P01", "gone")
        .with_detail("d")
        .with_hint("h");
    assert_eq!(
        wire::error_response(&f),
        hex("45 00000026 53 4552524f5200 56 4552524f5200 43 353850303100 4d 676f6e6500 44 6400 48 6800 00")
    );
    let n = ErrorFields::new("NOTICE", "00000", "m");
    assert_eq!(
        wire::notice_response(&n),
        hex("4e 0000001f 53 4e4f5449434500 56 4e4f5449434500 43 303030303000 4d 6d00 00")
    );
}

#[test]
fn copy_messages() {
    assert_eq!(wire::copy_out_response(), hex("48 00000007 00 0000"));
    assert_eq!(wire::copy_in_response(), hex("47 00000007 00 0000"));
    assert_eq!(wire::copy_both_response(), hex("57 00000007 00 0000"));
    assert_eq!(wire::copy_data(b"xy"), hex("64 00000006 7879"));
    assert_eq!(wire::copy_done(), hex("63 00000004"));
}

#[test]
fn replication_payloads() {
    assert_eq!(
        wire::xlog_data_payload(
            0x1_0000_0000,
            0x1_0000_0002,
            0x0102_0304_0506_0708,
            &[0xAA, 0xBB]
        ),
        hex("77 0000000100000000 0000000100000002 0102030405060708 aabb")
    );
    assert_eq!(
        wire::keepalive_payload(0x16B_3748, 1, true),
        hex("6b 00000000016b3748 0000000000000001 01")
    );
    assert_eq!(
        wire::keepalive_payload(0, -1, false),
        hex("6b 0000000000000000 ffffffffffffffff 00")
    );
    assert_eq!(
        wire::bb_new_archive_payload("base.tar", ""),
        hex("6e 626173652e74617200 00")
    );
    assert_eq!(
        wire::bb_new_archive_payload("16385.tar", "/t"),
        hex("6e 31363338352e74617200 2f7400")
    );
    assert_eq!(wire::bb_data_payload(b"x"), hex("64 78"));
    assert_eq!(wire::bb_progress_payload(1024), hex("70 0000000000000400"));
    assert_eq!(wire::bb_manifest_payload(), hex("6d"));
}

#[test]
fn lsn_and_time() {
    assert_eq!(wire::format_lsn(0x16B_3748), "0/16B3748");
    assert_eq!(wire::format_lsn(0x1_0000_0000), "1/0");
    assert_eq!(wire::format_lsn(0xABCD_EF01_0000_00FF), "ABCDEF01/FF");
    // 2024-01-01 is ~24 years after the PostgreSQL epoch.
    assert!(wire::now_pg_micros() > 24 * 365 * 86_400 * 1_000_000);
}

#[test]
fn startup_packets() {
    let ssl = hex("00000008 04d2162f");
    assert_eq!(wire::ssl_request(), ssl);
    assert_eq!(
        wire::parse_startup_packet(&ssl),
        Ok(StartupPacket::SslRequest)
    );
    assert_eq!(
        wire::parse_startup_packet(&hex("00000008 04d21630")),
        Ok(StartupPacket::GssEncRequest)
    );
    assert_eq!(
        wire::parse_startup_packet(&hex("00000010 04d2162e 00000007 01020304")),
        Ok(StartupPacket::CancelRequest {
            pid: 7,
            secret: vec![1, 2, 3, 4]
        })
    );

    let startup =
        hex("00000026 00030000 7573657200 6261636b757000 7265706c69636174696f6e00 7472756500 00");
    assert_eq!(
        wire::startup_message(&[("user", "backup"), ("replication", "true")]),
        startup
    );
    assert_eq!(
        wire::parse_startup_packet(&startup),
        Ok(StartupPacket::Startup {
            protocol: 196_608,
            params: vec![
                ("user".into(), "backup".into()),
                ("replication".into(), "true".into())
            ],
        })
    );

    // Incremental decoding: nothing until the whole packet is there, then exactly one packet.
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&startup[..10]);
    assert_eq!(wire::decode_startup_packet(&mut buf), Ok(None));
    buf.extend_from_slice(&startup[10..]);
    buf.extend_from_slice(&hex("51"));
    assert!(matches!(
        wire::decode_startup_packet(&mut buf),
        Ok(Some(StartupPacket::Startup { .. }))
    ));
    assert_eq!(&buf[..], &hex("51")[..]);
}

#[test]
fn malformed_startup_packets() {
    // Missing the final NUL after the parameters.
    assert!(wire::parse_startup_packet(&hex("0000000f 00030000 7500 7600")).is_err());
    // Length word disagrees with the packet.
    assert!(wire::parse_startup_packet(&hex("00000009 04d2162f")).is_err());
    // Unknown code.
    let e = wire::parse_startup_packet(&hex("00000008 00020000")).unwrap_err();
    assert!(e.0.contains("unknown startup packet code"), "{e}");
    // Absurd length.
    let mut buf = BytesMut::from(&hex("7fffffff 00030000")[..]);
    assert!(wire::decode_startup_packet(&mut buf).is_err());
}

#[test]
fn frontend_messages() {
    let q = hex("51 00000014 4944454e544946595f53595354454d00");
    assert_eq!(wire::query("IDENTIFY_SYSTEM"), q);
    assert_eq!(wire::password_message("pw"), hex("70 00000007 707700"));
    assert_eq!(wire::copy_fail("x"), hex("66 00000006 7800"));
    assert_eq!(wire::terminate(), hex("58 00000004"));

    let mut buf = BytesMut::new();
    buf.extend_from_slice(&q);
    buf.extend_from_slice(&hex(
        "70 00000007 707700 63 00000004 66 00000006 7800 58 00000004 5a 00000004",
    ));
    let mut got = Vec::new();
    while let Some(m) = wire::decode_frontend_message(&mut buf).unwrap() {
        got.push(m);
    }
    assert_eq!(
        got,
        vec![
            FrontendMessage::Query("IDENTIFY_SYSTEM".into()),
            FrontendMessage::PasswordMessage(b"pw\0".to_vec()),
            FrontendMessage::CopyDone,
            FrontendMessage::CopyFail("x".into()),
            FrontendMessage::Terminate,
            FrontendMessage::Other {
                tag: b'Z',
                body: vec![]
            },
        ]
    );
    assert!(buf.is_empty());

    // A partial frame stays in the buffer.
    let mut buf = BytesMut::from(&q[..7]);
    assert_eq!(wire::decode_frontend_message(&mut buf), Ok(None));
    assert_eq!(buf.len(), 7);
}

#[test]
fn malformed_frontend_messages() {
    let bad = |bytes: &str| {
        wire::decode_frontend_message(&mut BytesMut::from(&hex(bytes)[..])).unwrap_err()
    };
    assert!(bad("51 00000006 6162").0.contains("not NUL-terminated"));
    assert!(bad("63 00000005 00").0.contains("empty body"));
    assert!(bad("51 00000003").0.contains("invalid length"));
    assert!(bad("64 40000000").0.contains("limit"));
}

#[test]
fn standby_status_update_and_feedback() {
    let r = hex("72 0000000003000000 0000000002000000 0000000000000000 0000000000000005 01");
    assert_eq!(r.len(), 34);
    let s = wire::StandbyStatusUpdate {
        write_lsn: 0x300_0000,
        flush_lsn: 0x200_0000,
        apply_lsn: 0,
        send_time: 5,
        reply_requested: true,
    };
    assert_eq!(wire::standby_status_update_payload(&s), r);
    assert_eq!(
        wire::parse_replication_feedback(&r),
        Ok(ReplicationFeedback::StandbyStatus(s))
    );

    let mut framed = BytesMut::from(&hex("64 00000026")[..]);
    framed.extend_from_slice(&r);
    let m = wire::decode_frontend_message(&mut framed).unwrap().unwrap();
    assert_eq!(m, FrontendMessage::CopyData(r.clone()));
    assert_eq!(
        m.describe(),
        "CopyData (StandbyStatusUpdate write 0/3000000 flush 0/2000000 apply 0/0 reply 1)"
    );

    let h = hex("68 0000000000000007 00000001 00000002 00000003 00000004");
    let hf = wire::HotStandbyFeedback {
        send_time: 7,
        xmin: 1,
        xmin_epoch: 2,
        catalog_xmin: 3,
        catalog_xmin_epoch: 4,
    };
    assert_eq!(wire::hot_standby_feedback_payload(&hf), h);
    assert_eq!(
        wire::parse_replication_feedback(&h),
        Ok(ReplicationFeedback::HotStandbyFeedback(hf))
    );

    // Wrong lengths and bytes are refused, as the server does.
    assert!(wire::parse_replication_feedback(&r[..33])
        .unwrap_err()
        .0
        .contains("34 bytes"));
    let mut r2 = r.clone();
    r2[33] = 2;
    assert!(wire::parse_replication_feedback(&r2).is_err());
    assert!(wire::parse_replication_feedback(&h[..24]).is_err());
    assert!(wire::parse_replication_feedback(b"").is_err());
    assert!(wire::parse_replication_feedback(b"z").is_err());
}
