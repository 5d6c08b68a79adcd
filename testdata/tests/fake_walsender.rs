//! Drives the fake walsender with a raw tokio TcpStream client written here, byte by byte.

use std::time::Duration;

use testdata::wire::{self, FrontendMessage, StandbyStatusUpdate};
use testdata::{BaseBackupSpec, FakeWalsender, Script};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SYSID: u64 = 7_300_000_000_000_000_001;

/// A minimal client: writes raw bytes, reads backend frames.
struct Client {
    s: TcpStream,
}

impl Client {
    async fn connect(fake: &FakeWalsender) -> Client {
        Client {
            s: TcpStream::connect(fake.addr()).await.unwrap(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.unwrap();
    }

    /// The next frame, or None at a clean end of stream.
    async fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut head = [0u8; 5];
        match self.s.read_exact(&mut head[..1]).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
            Err(e) => panic!("read failed: {e}"),
        }
        self.s.read_exact(&mut head[1..]).await.unwrap();
        let len = u32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len - 4];
        self.s.read_exact(&mut body).await.unwrap();
        Some((head[0], body))
    }

    async fn expect(&mut self, tag: u8) -> Vec<u8> {
        let (t, body) = self.frame().await.expect("unexpected end of stream");
        assert_eq!(t as char, tag as char, "body {body:?}");
        body
    }

    /// Frames up to and including ReadyForQuery; returns their tags and bodies.
    async fn until_ready(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        loop {
            let f = self
                .frame()
                .await
                .expect("unexpected end of stream before ReadyForQuery");
            let done = f.0 == b'Z';
            out.push(f);
            if done {
                return out;
            }
        }
    }

    async fn login(&mut self) {
        self.send(&wire::ssl_request()).await;
        let mut b = [0u8; 1];
        self.s.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"N");
        self.send(&wire::startup_message(&[
            ("user", "backup"),
            ("replication", "true"),
        ]))
        .await;
        let login = self.until_ready().await;
        let tags: String = login.iter().map(|(t, _)| *t as char).collect();
        assert_eq!(tags, "RSSSSSSSSKZ");
    }

    async fn status(&mut self, write: u64, flush: u64, reply: bool) {
        let s = StandbyStatusUpdate {
            write_lsn: write,
            flush_lsn: flush,
            apply_lsn: 0,
            send_time: 1,
            reply_requested: reply,
        };
        self.send(&wire::copy_data(&wire::standby_status_update_payload(&s)))
            .await;
    }

    /// Asserts the peer closed: EOF with no more bytes.
    async fn expect_eof(&mut self) {
        let mut rest = Vec::new();
        self.s.read_to_end(&mut rest).await.unwrap();
        assert!(
            rest.is_empty(),
            "{} unexpected bytes before EOF",
            rest.len()
        );
    }
}

fn text(v: &[u8]) -> &str {
    std::str::from_utf8(v).unwrap()
}

/// The text values of a DataRow body.
fn values(body: &[u8]) -> Vec<Option<String>> {
    let n = u16::from_be_bytes([body[0], body[1]]) as usize;
    let (mut p, mut out) = (2, Vec::new());
    for _ in 0..n {
        let len = i32::from_be_bytes(body[p..p + 4].try_into().unwrap());
        p += 4;
        if len < 0 {
            out.push(None);
        } else {
            out.push(Some(text(&body[p..p + len as usize]).to_owned()));
            p += len as usize;
        }
    }
    out
}

#[tokio::test]
async fn identify_start_keepalive_status_end_of_timeline() {
    let wal = vec![0x5Au8; 300];
    let fake = FakeWalsender::start(
        Script::for_major(16)
            .expect_startup()
            .authenticate_ok("16.2")
            .expect_query("IDENTIFY_SYSTEM")
            .reply_identify_system(SYSID, 1, 0x300_0060, 16)
            .expect_query("START_REPLICATION")
            .start_copy_both()
            .send_xlogdata(0x300_0000, &wal)
            .send_keepalive(0x300_012C, true)
            .expect_standby_status_where("write = 0/300012C", |s| s.write_lsn == 0x300_012C)
            .send_copy_done()
            .expect_copy_done()
            .send_end_of_timeline(2, 0x300_0100)
            .expect_terminate()
            .wait_for_client_close(),
    );
    let mut c = Client::connect(&fake).await;
    c.login().await;

    c.send(&wire::query("IDENTIFY_SYSTEM")).await;
    let r = c.until_ready().await;
    assert_eq!(
        r.iter().map(|(t, _)| *t as char).collect::<String>(),
        "TDCZ"
    );
    assert_eq!(
        values(&r[1].1),
        vec![
            Some(SYSID.to_string()),
            Some("1".into()),
            Some("0/3000060".into()),
            None
        ]
    );

    c.send(&wire::query("START_REPLICATION 0/3000000 TIMELINE 1"))
        .await;
    assert_eq!(c.expect(b'W').await, [0, 0, 0]);
    let w = c.expect(b'd').await;
    assert_eq!(w[0], b'w');
    assert_eq!(u64::from_be_bytes(w[1..9].try_into().unwrap()), 0x300_0000);
    assert_eq!(u64::from_be_bytes(w[9..17].try_into().unwrap()), 0x300_012C);
    assert_eq!(&w[25..], &wal[..]);
    let k = c.expect(b'd').await;
    assert_eq!((k[0], k.len(), k[17]), (b'k', 18, 1));
    assert_eq!(u64::from_be_bytes(k[1..9].try_into().unwrap()), 0x300_012C);

    c.status(0x300_012C, 0, false).await;
    c.expect(b'c').await;
    c.send(&wire::copy_done()).await;
    let r = c.until_ready().await;
    assert_eq!(
        r.iter().map(|(t, _)| *t as char).collect::<String>(),
        "TDCCZ"
    );
    assert_eq!(
        values(&r[1].1),
        vec![Some("2".into()), Some("0/3000100".into())]
    );
    assert_eq!(text(&r[2].1), "START_STREAMING\0");
    assert_eq!(text(&r[3].1), "START_REPLICATION\0");
    c.send(&wire::terminate()).await;
    drop(c);

    let t = fake.finish().await.unwrap();
    assert!(t.ssl_requested);
    assert_eq!(t.startup_param("user"), Some("backup"));
    assert_eq!(t.startup_param("replication"), Some("true"));
    assert_eq!(
        t.queries(),
        vec!["IDENTIFY_SYSTEM", "START_REPLICATION 0/3000000 TIMELINE 1"]
    );
    assert_eq!(t.standby_status_updates().len(), 1);
    assert_eq!(t.messages.last(), Some(&FrontendMessage::Terminate));
    assert!(t.client_closed);
}

#[tokio::test]
async fn wrong_message_names_the_step() {
    let fake = FakeWalsender::start(
        Script::new()
            .expect_startup()
            .authenticate_ok("17.4")
            .expect_query("IDENTIFY_SYSTEM"),
    );
    let mut c = Client::connect(&fake).await;
    c.login().await;
    c.status(1, 0, false).await;
    let err = fake.finish().await.unwrap_err();
    assert!(
        err.message.starts_with("step 3: expected Query matching \"IDENTIFY_SYSTEM\", got CopyData (StandbyStatusUpdate"),
        "{err}"
    );
    assert_eq!(err.transcript.messages.len(), 1);
    // The fake closed the connection after the failure.
    c.expect_eof().await;
}

#[tokio::test]
async fn end_of_connection_and_timeout_are_reported() {
    let fake = FakeWalsender::start(
        Script::new()
            .expect_startup()
            .authenticate_ok("17.4")
            .expect_copy_done(),
    );
    let mut c = Client::connect(&fake).await;
    c.login().await;
    drop(c);
    let err = fake.finish().await.unwrap_err();
    assert_eq!(
        err.message,
        "step 3: expected CopyDone, got end of connection"
    );

    let fake = FakeWalsender::start(
        Script::new()
            .timeout(Duration::from_millis(200))
            .expect_startup(),
    );
    let _c = Client::connect(&fake).await;
    let err = fake.finish().await.unwrap_err();
    assert!(
        err.message
            .starts_with("step 1: timed out after 200ms waiting for the startup packet"),
        "{err}"
    );

    let fake = FakeWalsender::start(
        Script::new()
            .timeout(Duration::from_millis(100))
            .expect_startup(),
    );
    let err = fake.finish().await.unwrap_err();
    assert_eq!(err.message, "no client connected within 100ms");
}

#[tokio::test]
async fn feedback_inside_copy_both_is_skipped_unless_strict() {
    let script = || {
        Script::new()
            .expect_startup()
            .authenticate_ok("17.4")
            .expect_query("START_REPLICATION")
            .start_copy_both()
            .expect_copy_done()
            .send_stream_end()
    };
    for strict in [false, true] {
        let fake = FakeWalsender::start(if strict { script().strict() } else { script() });
        let mut c = Client::connect(&fake).await;
        c.login().await;
        c.send(&wire::query("START_REPLICATION 0/1000000")).await;
        c.expect(b'W').await;
        c.status(0x100_0000, 0, false).await;
        c.send(&wire::copy_data(&wire::hot_standby_feedback_payload(
            &Default::default(),
        )))
        .await;
        c.send(&wire::copy_done()).await;
        if strict {
            let err = fake.finish().await.unwrap_err();
            assert!(
                err.message
                    .starts_with("step 5: expected CopyDone, got CopyData (StandbyStatusUpdate"),
                "{err}"
            );
        } else {
            let r = c.until_ready().await;
            assert_eq!(
                r.iter().map(|(t, _)| *t as char).collect::<String>(),
                "cCCZ"
            );
            drop(c);
            let t = fake.finish().await.unwrap();
            assert_eq!(t.messages.len(), 4, "{:?}", t.messages);
            assert_eq!(t.hot_standby_feedback().len(), 1);
        }
    }
}

#[tokio::test]
async fn truncated_frame_then_close() {
    let xlog = wire::copy_data(&wire::xlog_data_payload(
        0x100_0000, 0x100_0010, 0, &[1; 16],
    ));
    let fake = FakeWalsender::start(
        Script::new()
            .expect_startup()
            .authenticate_ok("17.4")
            .expect_query("START_REPLICATION")
            .start_copy_both()
            .send_truncated(&xlog, 20),
    );
    let mut c = Client::connect(&fake).await;
    c.login().await;
    c.send(&wire::query("START_REPLICATION 0/1000000")).await;
    c.expect(b'W').await;
    let mut rest = Vec::new();
    c.s.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, xlog[..20]);
    fake.finish().await.unwrap();
}

#[tokio::test]
async fn oversized_header_then_client_closes() {
    let fake = FakeWalsender::start(
        Script::new()
            .expect_startup()
            .authenticate_ok("17.4")
            .send_oversized_header(b'd', 1 << 30)
            .wait_for_client_close(),
    );
    let mut c = Client::connect(&fake).await;
    c.login().await;
    let mut head = [0u8; 5];
    c.s.read_exact(&mut head).await.unwrap();
    assert_eq!(head, [b'd', 0x40, 0, 0, 0]);
    c.send(&wire::terminate()).await;
    drop(c);
    let t = fake.finish().await.unwrap();
    assert_eq!(t.messages, vec![FrontendMessage::Terminate]);

    // A client that keeps talking instead of closing fails the step.
    let fake = FakeWalsender::start(
        Script::new()
            .expect_startup()
            .authenticate_ok("17.4")
            .send_oversized_header(b'd', 1 << 30)
            .wait_for_client_close(),
    );
    let mut c = Client::connect(&fake).await;
    c.login().await;
    c.send(&wire::query("SELECT 1")).await;
    let err = fake.finish().await.unwrap_err();
    assert_eq!(
        err.message,
        "step 4: expected the client to close the connection, got Query \"SELECT 1\""
    );
}

#[tokio::test]
async fn shutdown_waits_for_the_client_to_catch_up() {
    let fake = FakeWalsender::start(
        Script::new()
            .expect_startup()
            .authenticate_ok("17.4")
            .expect_query("START_REPLICATION")
            .start_copy_both()
            .send_xlogdata(0x100_0000, &[9; 64])
            .shutdown_when_caught_up(0x100_0040),
    );
    let mut c = Client::connect(&fake).await;
    c.login().await;
    c.send(&wire::query("START_REPLICATION 0/1000000")).await;
    c.expect(b'W').await;
    assert_eq!(c.expect(b'd').await[0], b'w');
    let k = c.expect(b'd').await;
    assert_eq!((k[0], k[17]), (b'k', 1));
    // Short of sentPtr: the server keeps waiting; then caught up (write, no flush).
    c.status(0x100_0020, 0, false).await;
    c.status(0x100_0040, 0, false).await;
    // C "COPY 0" inside CopyBoth, no CopyDone, then EOF.
    assert_eq!(c.expect(b'C').await, b"COPY 0\0");
    c.expect_eof().await;
    let t = fake.finish().await.unwrap();
    assert_eq!(t.standby_status_updates().len(), 2);

    // send_shutdown_done alone: C "COPY 0" and close, whatever the client did.
    let fake = FakeWalsender::start(
        Script::new()
            .expect_startup()
            .authenticate_ok("17.4")
            .expect_query("START_REPLICATION")
            .start_copy_both()
            .send_shutdown_done(),
    );
    let mut c = Client::connect(&fake).await;
    c.login().await;
    c.send(&wire::query("START_REPLICATION 0/1000000")).await;
    c.expect(b'W').await;
    assert_eq!(c.expect(b'C').await, b"COPY 0\0");
    c.expect_eof().await;
    fake.finish().await.unwrap();
}

#[tokio::test]
async fn error_inside_copy_then_ready() {
    let fake = FakeWalsender::start(
        Script::new()
            .expect_startup()
            .authenticate_ok("17.4")
            .expect_query("START_REPLICATION")
            .start_copy_both()
            .send_error_in_copy(
                "58P01",
                "requested WAL segment 000000010000000000000001 has already been removed",
            )
            .expect_terminate(),
    );
    let mut c = Client::connect(&fake).await;
    c.login().await;
    c.send(&wire::query("START_REPLICATION 0/1000000")).await;
    c.expect(b'W').await;
    let e = c.expect(b'E').await;
    assert!(e.windows(7).any(|w| w == b"C58P01\0"));
    assert_eq!(c.expect(b'Z').await, b"I");
    c.send(&wire::terminate()).await;
    fake.finish().await.unwrap();
}

#[tokio::test]
async fn password_and_fatal() {
    let fake = FakeWalsender::start(
        Script::new()
            .expect_startup()
            .request_cleartext_password()
            .expect_password(Some("secret"))
            .send_fatal(
                "28P01",
                "password authentication failed for user \"backup\"",
            ),
    );
    let mut c = Client::connect(&fake).await;
    c.send(&wire::startup_message(&[
        ("user", "backup"),
        ("replication", "true"),
    ]))
    .await;
    assert_eq!(c.expect(b'R').await, [0, 0, 0, 3]);
    c.send(&wire::password_message("secret")).await;
    let e = c.expect(b'E').await;
    assert!(e.starts_with(b"SFATAL\0VFATAL\0C28P01\0"));
    c.expect_eof().await;
    let t = fake.finish().await.unwrap();
    assert!(!t.ssl_requested);

    let fake = FakeWalsender::start(
        Script::new()
            .expect_startup()
            .request_md5_password([1, 2, 3, 4])
            .expect_password(Some("md5abc")),
    );
    let mut c = Client::connect(&fake).await;
    c.send(&wire::startup_message(&[("user", "backup")])).await;
    assert_eq!(c.expect(b'R').await, [0, 0, 0, 5, 1, 2, 3, 4]);
    c.send(&wire::password_message("md5xyz")).await;
    let err = fake.finish().await.unwrap_err();
    assert_eq!(
        err.message,
        "step 3: expected password \"md5abc\", got \"md5xyz\\0\""
    );
}

#[tokio::test]
async fn reconnect_sequence() {
    let first = Script::new()
        .expect_startup()
        .authenticate_ok("17.4")
        .expect_query("IDENTIFY_SYSTEM")
        .close();
    let second = Script::new()
        .expect_startup()
        .authenticate_ok("17.4")
        .expect_query("IDENTIFY_SYSTEM")
        .reply_identify_system(SYSID, 1, 0x100_0000, 17)
        .wait_for_client_close();
    let fake = FakeWalsender::start_sequence(vec![first, second]);
    let mut c = Client::connect(&fake).await;
    c.login().await;
    c.send(&wire::query("IDENTIFY_SYSTEM")).await;
    c.expect_eof().await;
    let mut c = Client::connect(&fake).await;
    c.login().await;
    c.send(&wire::query("IDENTIFY_SYSTEM")).await;
    assert_eq!(c.until_ready().await.len(), 4);
    drop(c);
    let all = fake.finish_all().await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|t| t.queries() == ["IDENTIFY_SYSTEM"]));

    // Errors on a later connection name it.
    let fake = FakeWalsender::start_sequence(vec![
        Script::new().expect_startup().close(),
        Script::new().expect_startup().expect_terminate(),
    ]);
    let mut c = Client::connect(&fake).await;
    c.send(&wire::startup_message(&[("user", "u")])).await;
    c.expect_eof().await;
    let mut c = Client::connect(&fake).await;
    c.send(&wire::startup_message(&[("user", "u")])).await;
    c.send(&wire::query("x")).await;
    let err = fake.finish_all().await.unwrap_err();
    assert_eq!(
        err.message,
        "connection 2, step 2: expected Terminate, got Query \"x\""
    );
}

#[tokio::test]
async fn base_backup_v15_through_the_fake() {
    let mut base = vec![3u8; 70_000];
    base.extend(vec![0u8; 1024]);
    let spec = BaseBackupSpec::new(0x200_0028, 1, 0x200_0100)
        .with_archive("base.tar", "", base.clone())
        .with_manifest(b"{}".to_vec())
        .with_chunk_size(16 * 1024);
    let fake = FakeWalsender::start(
        Script::for_major(15)
            .expect_startup()
            .authenticate_ok("15.15")
            .expect_query("BASE_BACKUP")
            .reply_base_backup_v15(&spec)
            .expect_terminate(),
    );
    let mut c = Client::connect(&fake).await;
    c.login().await;
    c.send(&wire::query(
        "BASE_BACKUP ( LABEL 'x', MANIFEST 'yes', TARGET 'client' )",
    ))
    .await;
    let mut frames = Vec::new();
    let mut results = 0;
    loop {
        let f = c.frame().await.unwrap();
        if f.0 == b'T' {
            results += 1;
        }
        if f.0 == b'Z' {
            break;
        }
        frames.push(f);
    }
    assert_eq!(results, 3);
    let mut archive: Vec<u8> = Vec::new();
    let mut in_manifest = false;
    let mut manifest: Vec<u8> = Vec::new();
    for (t, body) in &frames {
        if *t == b'd' {
            match body[0] {
                b'n' => assert_eq!(body, &wire::bb_new_archive_payload("base.tar", "")),
                b'm' => in_manifest = true,
                b'd' if in_manifest => manifest.extend(&body[1..]),
                b'd' => archive.extend(&body[1..]),
                b'p' => assert_eq!(
                    i64::from_be_bytes(body[1..9].try_into().unwrap()),
                    base.len() as i64
                ),
                other => panic!("unexpected payload type {other}"),
            }
        }
    }
    assert_eq!(archive, base);
    assert_eq!(manifest, b"{}");
    c.send(&wire::terminate()).await;
    fake.finish().await.unwrap();
}
