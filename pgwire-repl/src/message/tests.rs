//! Tests for `message`: hand-written byte fixtures, round trips, every error path, and a
//! deterministic pseudo-random sweep that feeds arbitrary payloads to every parser.

use super::*;

fn bytes(b: &[u8]) -> Bytes {
    Bytes::copy_from_slice(b)
}

fn reason(e: ProtocolError) -> (&'static str, String) {
    match e {
        ProtocolError::Malformed { what, reason } => (what, reason),
        e => panic!("unexpected error kind {e:?}"),
    }
}

const XLOGDATA: [u8; 29] = [
    b'w', //
    0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x28, // wal_start 0/3000028
    0x00, 0x00, 0x00, 0x01, 0x0A, 0x00, 0x01, 0x00, // wal_end 1/A000100
    0x00, 0x02, 0x8F, 0x5C, 0x28, 0xF5, 0xC2, 0x8F, // send_time
    0xDE, 0xAD, 0xBE, 0xEF, // WAL bytes
];

const KEEPALIVE: [u8; 18] = [
    b'k', //
    0x00, 0x00, 0x00, 0x16, 0xB3, 0x74, 0xD8, 0x48, // wal_end 16/B374D848
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE, // send_time -2
    0x01, // reply requested
];

const STATUS: [u8; 34] = [
    b'r', //
    0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x28, // write
    0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, // flush
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // apply
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0xE8, // send_time 1000
    0x00, // no reply requested
];

const FEEDBACK: [u8; 25] = [
    b'h', //
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, // send_time 7
    0x00, 0x00, 0x02, 0xDA, // xmin 730
    0x00, 0x00, 0x00, 0x01, // xmin epoch 1
    0x00, 0x00, 0x00, 0x05, // catalog xmin 5
    0x00, 0x00, 0x00, 0x02, // catalog epoch 2
];

#[test]
fn xlogdata_fixture() {
    let payload = bytes(&XLOGDATA);
    let m = parse_replication_message(payload.clone()).unwrap();
    let ReplicationMessage::XLogData(x) = &m else {
        panic!("{m:?}")
    };
    assert_eq!(x.wal_start, "0/3000028".parse().unwrap());
    assert_eq!(x.wal_end, "1/A000100".parse().unwrap());
    assert_eq!(x.send_time, PgTimestamp(0x0002_8F5C_28F5_C28F));
    assert_eq!(&x.data[..], &[0xDE, 0xAD, 0xBE, 0xEF]);
    assert_eq!(x.data_end(), Some(Lsn(0x300_002C)));
    // Zero-copy: the data points into the payload's buffer.
    assert_eq!(x.data.as_ptr(), payload[25..].as_ptr());
    let mut buf = BytesMut::new();
    m.encode(&mut buf);
    assert_eq!(&buf[..], &XLOGDATA);
}

#[test]
fn xlogdata_may_be_empty_and_data_end_overflow_is_none() {
    let m = parse_replication_message(bytes(&XLOGDATA[..25])).unwrap();
    let ReplicationMessage::XLogData(mut x) = m else {
        panic!()
    };
    assert!(x.data.is_empty());
    x.wal_start = Lsn(u64::MAX);
    x.data = Bytes::from_static(b"x");
    assert_eq!(x.data_end(), None);
}

#[test]
fn keepalive_fixture() {
    let m = parse_replication_message(bytes(&KEEPALIVE)).unwrap();
    let want = PrimaryKeepalive {
        wal_end: Lsn(0x16_B374_D848),
        send_time: PgTimestamp(-2),
        reply_requested: true,
    };
    assert_eq!(m, ReplicationMessage::PrimaryKeepalive(want));
    let mut buf = BytesMut::new();
    want.encode(&mut buf);
    assert_eq!(&buf[..], &KEEPALIVE);
}

#[test]
fn keepalive_reply_flag_is_any_nonzero_byte_like_postgres() {
    let mut k = KEEPALIVE;
    k[17] = 0;
    let ReplicationMessage::PrimaryKeepalive(p) = parse_replication_message(bytes(&k)).unwrap()
    else {
        panic!()
    };
    assert!(!p.reply_requested);
    k[17] = 2;
    let ReplicationMessage::PrimaryKeepalive(p) = parse_replication_message(bytes(&k)).unwrap()
    else {
        panic!()
    };
    assert!(p.reply_requested);
}

#[test]
fn replication_message_errors() {
    let (_, r) = reason(parse_replication_message(Bytes::new()).unwrap_err());
    assert_eq!(r, "empty payload");
    let (what, r) = reason(parse_replication_message(bytes(&XLOGDATA[..24])).unwrap_err());
    assert_eq!(
        (what, r.as_str()),
        ("XLogData", "24 bytes, expected at least 25")
    );
    let (what, r) = reason(parse_replication_message(bytes(&KEEPALIVE[..17])).unwrap_err());
    assert_eq!(
        (what, r.as_str()),
        ("primary keepalive", "17 bytes, expected at least 18")
    );
    let mut long = KEEPALIVE.to_vec();
    long.extend_from_slice(&[0, 0]);
    let (_, r) = reason(parse_replication_message(bytes(&long)).unwrap_err());
    assert_eq!(r, "2 unexpected trailing bytes");
    let (what, r) = reason(parse_replication_message(bytes(b"x123")).unwrap_err());
    assert_eq!(what, "replication CopyData");
    assert!(r.contains("unknown message type 'x' (0x78)"), "{r}");
    let (_, r) = reason(parse_replication_message(bytes(&[0x00])).unwrap_err());
    assert!(r.contains("unknown message type 0x00"), "{r}");
    // Client messages are not server messages.
    assert!(parse_replication_message(bytes(&STATUS)).is_err());
}

#[test]
fn standby_status_fixture_and_round_trip() {
    let want = StandbyStatusUpdate {
        write: Lsn(0x300_0028),
        flush: Lsn(0x300_0000),
        apply: Lsn::INVALID,
        send_time: PgTimestamp(1000),
        reply_requested: false,
    };
    let mut buf = BytesMut::new();
    want.encode(&mut buf);
    assert_eq!(buf.len(), StandbyStatusUpdate::LEN);
    assert_eq!(&buf[..], &STATUS);
    assert_eq!(parse_standby_status_update(&STATUS).unwrap(), want);
    let with_reply = StandbyStatusUpdate {
        reply_requested: true,
        ..want
    };
    buf.clear();
    with_reply.encode(&mut buf);
    assert_eq!(buf[33], 1);
    assert_eq!(parse_standby_status_update(&buf).unwrap(), with_reply);
    assert_eq!(
        parse_client_replication_message(&STATUS).unwrap(),
        ClientReplicationMessage::StandbyStatusUpdate(want)
    );
}

#[test]
fn hot_standby_feedback_fixture_and_round_trip() {
    let want = HotStandbyFeedback {
        send_time: PgTimestamp(7),
        xmin: 730,
        xmin_epoch: 1,
        catalog_xmin: 5,
        catalog_xmin_epoch: 2,
    };
    let mut buf = BytesMut::new();
    want.encode(&mut buf);
    assert_eq!(&buf[..], &FEEDBACK);
    assert_eq!(parse_hot_standby_feedback(&FEEDBACK).unwrap(), want);
    assert_eq!(
        parse_client_replication_message(&FEEDBACK).unwrap(),
        ClientReplicationMessage::HotStandbyFeedback(want)
    );
    buf.clear();
    HotStandbyFeedback::default().encode(&mut buf);
    assert_eq!(&buf[..], &[&b"h"[..], &[0; 24]].concat()[..]);
}

#[test]
fn client_message_errors() {
    let (what, r) = reason(parse_standby_status_update(&STATUS[..33]).unwrap_err());
    assert_eq!(
        (what, r.as_str()),
        ("standby status update", "33 bytes, expected at least 34")
    );
    let (_, r) = reason(parse_standby_status_update(&[&STATUS[..], &[9]].concat()).unwrap_err());
    assert_eq!(r, "1 unexpected trailing bytes");
    let (_, r) = reason(parse_standby_status_update(&FEEDBACK).unwrap_err());
    assert!(r.contains("unknown message type 'h'"), "{r}");
    let (_, r) = reason(parse_standby_status_update(&[]).unwrap_err());
    assert_eq!(r, "empty payload");
    let (what, r) = reason(parse_hot_standby_feedback(&FEEDBACK[..1]).unwrap_err());
    assert_eq!(
        (what, r.as_str()),
        ("hot standby feedback", "1 bytes, expected at least 25")
    );
    let (_, r) = reason(parse_hot_standby_feedback(&[&FEEDBACK[..], &[0]].concat()).unwrap_err());
    assert_eq!(r, "1 unexpected trailing bytes");
    assert!(parse_hot_standby_feedback(&STATUS).is_err());
    assert!(parse_hot_standby_feedback(&[]).is_err());
    let (what, r) = reason(parse_client_replication_message(&KEEPALIVE).unwrap_err());
    assert_eq!(what, "client replication CopyData");
    assert!(r.contains("'k'"), "{r}");
    assert!(parse_client_replication_message(&[]).is_err());
}

const NEW_ARCHIVE_BASE: [u8; 11] = [b'n', b'b', b'a', b's', b'e', b'.', b't', b'a', b'r', 0, 0];
const NEW_ARCHIVE_TBS: [u8; 26] = [
    b'n', b'1', b'6', b'3', b'8', b'4', b'.', b't', b'a', b'r', b'.', b'g', b'z', 0, //
    b'/', b's', b'r', b'v', b'/', b't', b'b', b's', b'/', b'a', b'1', 0,
];
const PROGRESS: [u8; 9] = [b'p', 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00];

#[test]
fn base_backup_fixtures_and_round_trips() {
    let cases = [
        (
            &NEW_ARCHIVE_BASE[..],
            BaseBackupCopyMessage::NewArchive {
                name: "base.tar".into(),
                tablespace_location: String::new(),
            },
        ),
        (
            &NEW_ARCHIVE_TBS[..],
            BaseBackupCopyMessage::NewArchive {
                name: "16384.tar.gz".into(),
                tablespace_location: "/srv/tbs/a1".into(),
            },
        ),
        (&PROGRESS[..], BaseBackupCopyMessage::Progress(1 << 32)),
        (&[b'm'][..], BaseBackupCopyMessage::ManifestStart),
        (
            &[b'd', 1, 2, 3][..],
            BaseBackupCopyMessage::Data(Bytes::from_static(&[1, 2, 3])),
        ),
        (&[b'd'][..], BaseBackupCopyMessage::Data(Bytes::new())),
    ];
    for (fixture, want) in cases {
        assert_eq!(
            parse_base_backup_message(bytes(fixture)).unwrap(),
            want,
            "{fixture:x?}"
        );
        let mut buf = BytesMut::new();
        want.encode(&mut buf);
        assert_eq!(&buf[..], fixture);
    }
    let payload = bytes(&[b'd', 9, 9]);
    let BaseBackupCopyMessage::Data(d) = parse_base_backup_message(payload.clone()).unwrap() else {
        panic!()
    };
    assert_eq!(
        d.as_ptr(),
        payload[1..].as_ptr(),
        "data is a slice of the payload"
    );
}

#[test]
fn base_backup_progress_bounds() {
    let max = [b'p', 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
    assert_eq!(
        parse_base_backup_message(bytes(&max)).unwrap(),
        BaseBackupCopyMessage::Progress(i64::MAX as u64)
    );
    let zero = [b'p', 0, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(
        parse_base_backup_message(bytes(&zero)).unwrap(),
        BaseBackupCopyMessage::Progress(0)
    );
    let minus_one = [b'p', 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
    let (what, r) = reason(parse_base_backup_message(bytes(&minus_one)).unwrap_err());
    assert_eq!(
        (what, r.as_str()),
        ("BASE_BACKUP progress", "negative byte count -1")
    );
}

#[test]
fn base_backup_length_errors() {
    let (_, r) = reason(parse_base_backup_message(bytes(&PROGRESS[..8])).unwrap_err());
    assert_eq!(r, "8 bytes, expected at least 9");
    let (_, r) =
        reason(parse_base_backup_message(bytes(&[&PROGRESS[..], &[0]].concat())).unwrap_err());
    assert_eq!(r, "1 unexpected trailing bytes");
    let (what, r) = reason(parse_base_backup_message(bytes(b"m\0")).unwrap_err());
    assert_eq!(
        (what, r.as_str()),
        ("BASE_BACKUP manifest-start", "1 unexpected trailing bytes")
    );
    let (_, r) = reason(parse_base_backup_message(Bytes::new()).unwrap_err());
    assert_eq!(r, "empty payload");
    let (what, r) = reason(parse_base_backup_message(bytes(b"w")).unwrap_err());
    assert_eq!(what, "BASE_BACKUP CopyData");
    assert!(r.contains("unknown message type 'w'"), "{r}");
}

#[test]
fn base_backup_new_archive_string_errors() {
    let (what, r) = reason(parse_base_backup_message(bytes(b"nbase.tar")).unwrap_err());
    assert_eq!(what, "BASE_BACKUP new-archive");
    assert_eq!(r, "archive name is not NUL-terminated");
    let (_, r) = reason(parse_base_backup_message(bytes(b"nbase.tar\0/x")).unwrap_err());
    assert_eq!(r, "tablespace location is not NUL-terminated");
    let (_, r) = reason(parse_base_backup_message(bytes(b"nbase.tar\0\0x")).unwrap_err());
    assert_eq!(r, "1 unexpected trailing bytes");
    let (_, r) = reason(parse_base_backup_message(bytes(b"nbase\xFF.tar\0\0")).unwrap_err());
    assert!(r.starts_with("archive name is not valid UTF-8"), "{r}");
    let (_, r) = reason(parse_base_backup_message(bytes(b"nbase.tar\0/\xC3\0")).unwrap_err());
    assert!(
        r.starts_with("tablespace location is not valid UTF-8"),
        "{r}"
    );
}

#[test]
fn base_backup_bad_archive_names() {
    for (name, why) in [
        (&b""[..], "it is empty"),
        (b".tar", "it starts with '.'"),
        (b"..", "it starts with '.'"),
        (b"../base.tar", "it starts with '.'"),
        (b"a/base.tar", "it contains a path separator"),
        (b"/etc/passwd", "it contains a path separator"),
        (b"a\\b.tar", "it contains a path separator"),
    ] {
        let payload = [&b"n"[..], name, b"\0\0"].concat();
        let (_, r) = reason(parse_base_backup_message(bytes(&payload)).unwrap_err());
        assert!(r.starts_with("invalid archive name"), "{r}");
        assert!(r.ends_with(why), "{name:?}: {r}");
    }
    // A dot elsewhere is fine.
    assert!(parse_base_backup_message(bytes(b"nbase.tar.zst\0\0")).is_ok());
}

/// xorshift64*: deterministic, dependency-free pseudo-random bytes.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn parse_everything(p: &[u8]) {
    let _ = parse_replication_message(bytes(p));
    let _ = parse_base_backup_message(bytes(p));
    let _ = parse_standby_status_update(p);
    let _ = parse_hot_standby_feedback(p);
    let _ = parse_client_replication_message(p);
}

#[test]
fn arbitrary_payloads_never_panic() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let tags = b"wkrhndpm\0x";
    for _ in 0..50_000 {
        let len = (rng.next() % 48) as usize;
        let mut p: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if let Some(first) = p.first_mut() {
            if rng.next() & 3 != 0 {
                *first = tags[(rng.next() % tags.len() as u64) as usize];
            }
        }
        // Sprinkle NULs so the string parser sees terminators.
        for b in p.iter_mut().skip(1) {
            if rng.next() & 7 == 0 {
                *b = 0;
            }
        }
        parse_everything(&p);
    }
}

#[test]
fn truncated_and_extended_fixtures_are_rejected_without_panic() {
    let fixtures: [&[u8]; 8] = [
        &XLOGDATA,
        &KEEPALIVE,
        &STATUS,
        &FEEDBACK,
        &NEW_ARCHIVE_BASE,
        &NEW_ARCHIVE_TBS,
        &PROGRESS,
        b"m",
    ];
    for f in fixtures {
        for cut in 0..f.len() {
            parse_everything(&f[..cut]);
        }
        parse_everything(&[f, &[0xAB]].concat());
    }
}

#[test]
fn round_trips_of_random_values() {
    let mut rng = XorShift(42);
    let mut buf = BytesMut::new();
    for _ in 0..2_000 {
        let data = Bytes::from(
            (0..rng.next() % 40)
                .map(|_| rng.next() as u8)
                .collect::<Vec<_>>(),
        );
        let msgs = [
            ReplicationMessage::XLogData(XLogData {
                wal_start: Lsn(rng.next()),
                wal_end: Lsn(rng.next()),
                send_time: PgTimestamp(rng.next() as i64),
                data: data.clone(),
            }),
            ReplicationMessage::PrimaryKeepalive(PrimaryKeepalive {
                wal_end: Lsn(rng.next()),
                send_time: PgTimestamp(rng.next() as i64),
                reply_requested: rng.next() & 1 == 0,
            }),
        ];
        for m in msgs {
            buf.clear();
            m.encode(&mut buf);
            assert_eq!(parse_replication_message(buf.split().freeze()).unwrap(), m);
        }
        let s = StandbyStatusUpdate {
            write: Lsn(rng.next()),
            flush: Lsn(rng.next()),
            apply: Lsn(rng.next()),
            send_time: PgTimestamp(rng.next() as i64),
            reply_requested: rng.next() & 1 == 0,
        };
        s.encode(&mut buf);
        assert_eq!(parse_standby_status_update(&buf.split()).unwrap(), s);
        let h = HotStandbyFeedback {
            send_time: PgTimestamp(rng.next() as i64),
            xmin: rng.next() as u32,
            xmin_epoch: rng.next() as u32,
            catalog_xmin: rng.next() as u32,
            catalog_xmin_epoch: rng.next() as u32,
        };
        h.encode(&mut buf);
        assert_eq!(parse_hot_standby_feedback(&buf.split()).unwrap(), h);
        let p = BaseBackupCopyMessage::Progress(rng.next() >> 1);
        p.encode(&mut buf);
        assert_eq!(parse_base_backup_message(buf.split().freeze()).unwrap(), p);
        let d = BaseBackupCopyMessage::Data(data);
        d.encode(&mut buf);
        assert_eq!(parse_base_backup_message(buf.split().freeze()).unwrap(), d);
    }
}
