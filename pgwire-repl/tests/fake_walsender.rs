//! The client against the scripted fake walsender (`testdata`): what a real server will not do
//! on demand (truncated frames, oversized headers, errors and FATALs inside COPY, malformed
//! BASE_BACKUP messages, v12/v13 reply shapes). Each test checks what the client returned and,
//! through the fake's transcript, exactly what it sent.

use std::future::Future;
use std::time::Duration;

use pgwire_repl::auth::AuthError;
use pgwire_repl::basebackup::{BaseBackupEvent, BaseBackupOptions, TablespaceInfo};
use pgwire_repl::message::StandbyStatusUpdate;
use pgwire_repl::replication::ReplicationEvent;
use pgwire_repl::{Config, Connection, Error, Lsn, PgTimestamp, ProtocolError, TimelineId};
use testdata::replies::{self, BaseBackupSpec};
use testdata::wire::{self, oid, FrontendMessage};
use testdata::{FakeWalsender, Script, Transcript};

const SYSID: u64 = 7_300_000_000_000_000_001;

/// Every client step gets this long; the fake's own steps time out after 10 s.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(CLIENT_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {CLIENT_TIMEOUT:?}"))
}

fn config_with(fake: &FakeWalsender, extra: &str) -> Config {
    Config::parse(&format!(
        "host=127.0.0.1 port={} user=u sslmode=disable replication=true {extra}",
        fake.port()
    ))
    .unwrap()
}

async fn connect(fake: &FakeWalsender) -> Connection {
    within("connect", Connection::connect(&config_with(fake, "")))
        .await
        .expect("connecting to the fake walsender")
}

async fn finish(fake: FakeWalsender) -> Transcript {
    within("the fake walsender", fake.finish()).await.unwrap()
}

/// Asserts `err` is the "no longer usable" error of a connection marked broken.
fn assert_unusable(err: &Error, why: &str) {
    match err {
        Error::ConnectionLost(io) => {
            assert_eq!(io.kind(), std::io::ErrorKind::NotConnected, "{err}");
            let text = io.to_string();
            assert!(
                text.contains("the connection is no longer usable") && text.contains(why),
                "expected a 'no longer usable ({why} ...)' error, got: {text}"
            );
        }
        other => panic!("expected ConnectionLost (no longer usable), got {other:?}"),
    }
}

fn status(write: u64, flush: u64, apply: u64) -> StandbyStatusUpdate {
    StandbyStatusUpdate {
        write: Lsn(write),
        flush: Lsn(flush),
        apply: Lsn(apply),
        send_time: PgTimestamp::default(),
        reply_requested: false,
    }
}

fn query(q: &str) -> FrontendMessage {
    FrontendMessage::Query(q.to_owned())
}

async fn next_event(
    stream: &mut pgwire_repl::replication::ReplicationStream<'_>,
) -> Result<Option<ReplicationEvent>, Error> {
    within("ReplicationStream::next", stream.next()).await
}

fn expect_xlog(ev: Option<ReplicationEvent>, start: u64, data: &[u8]) {
    match ev {
        Some(ReplicationEvent::XLogData(x)) => {
            assert_eq!(x.wal_start, Lsn(start));
            assert_eq!(&x.data[..], data);
        }
        other => panic!("expected XLogData at {start:X}, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// A broken stream (lost socket, oversized or unknown message, abandoned stream) leaves the
// connection unusable.

#[tokio::test]
async fn truncated_xlogdata_frame_then_close_is_connection_lost_and_connection_unusable() {
    let full = wire::copy_data(&wire::xlog_data_payload(
        0x100_0010, 0x100_0020, 0, &[7; 16],
    ));
    let fake = FakeWalsender::start(
        Script::new()
            .expect_startup()
            .authenticate_ok("17.4")
            .expect_query("START_REPLICATION")
            .start_copy_both()
            .send_xlogdata(0x100_0000, &[1; 16])
            .send_truncated(&full, 20),
    );
    let mut conn = connect(&fake).await;
    let mut stream = conn
        .start_replication(None, Lsn(0x100_0000), Some(TimelineId(1)))
        .await
        .unwrap();
    expect_xlog(next_event(&mut stream).await.unwrap(), 0x100_0000, &[1; 16]);
    match next_event(&mut stream).await {
        Err(Error::ConnectionLost(io)) => {
            assert_eq!(io.kind(), std::io::ErrorKind::UnexpectedEof, "{io}")
        }
        other => panic!("expected ConnectionLost, got {other:?}"),
    }
    // A finished stream stays finished.
    assert_eq!(next_event(&mut stream).await.unwrap(), None);
    drop(stream);
    let err = conn.identify_system().await.unwrap_err();
    assert_unusable(&err, "connection lost");
    conn.close().await;

    let t = finish(fake).await;
    assert_eq!(
        t.messages,
        vec![query("START_REPLICATION PHYSICAL 0/1000000 TIMELINE 1")],
        "nothing may be sent after the connection was lost"
    );
}

#[tokio::test]
async fn oversized_copydata_header_is_refused_at_once_without_buffering() {
    let fake = FakeWalsender::start(
        Script::new()
            .expect_startup()
            .authenticate_ok("17.4")
            .expect_query("START_REPLICATION")
            .start_copy_both()
            .send_oversized_header(b'd', 1 << 30)
            .wait_for_client_close(),
    );
    let mut conn = connect(&fake).await;
    let mut stream = conn
        .start_replication(None, Lsn(0x100_0000), None)
        .await
        .unwrap();
    // The fake keeps the socket open: a client waiting for 1 GiB would hang here.
    match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
        Ok(Err(Error::Protocol(ProtocolError::MessageTooLarge { tag, len, limit }))) => {
            assert_eq!((tag, len, limit), ('d', 1 << 30, 64 * 1024 * 1024));
        }
        Ok(other) => panic!("expected MessageTooLarge, got {other:?}"),
        Err(_) => panic!("the client waited for the 1 GiB message instead of refusing it"),
    }
    drop(stream);
    assert_unusable(&conn.identify_system().await.unwrap_err(), "protocol error");
    conn.close().await;
    let t = finish(fake).await;
    assert_eq!(
        t.messages,
        vec![query("START_REPLICATION PHYSICAL 0/1000000")]
    );
    assert!(t.client_closed);
}

#[tokio::test]
async fn set_max_message_size_applies_a_smaller_limit() {
    let fake = FakeWalsender::start(
        Script::new()
            .expect_startup()
            .authenticate_ok("17.4")
            .expect_query("START_REPLICATION")
            .start_copy_both()
            // 25 header + 900 data bytes in a 4 + 925 length word: under the limit.
            .send_xlogdata(0x100_0000, &[3; 900])
            .send_oversized_header(b'd', 2000)
            .wait_for_client_close(),
    );
    let mut conn = connect(&fake).await;
    conn.set_max_message_size(1000);
    let mut stream = conn
        .start_replication(None, Lsn(0x100_0000), None)
        .await
        .unwrap();
    expect_xlog(
        next_event(&mut stream).await.unwrap(),
        0x100_0000,
        &[3; 900],
    );
    match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
        Ok(Err(Error::Protocol(ProtocolError::MessageTooLarge { tag, len, limit }))) => {
            assert_eq!((tag, len, limit), ('d', 2000, 1000));
        }
        Ok(other) => panic!("expected MessageTooLarge, got {other:?}"),
        Err(_) => panic!("the client waited for the message instead of refusing it"),
    }
    drop(stream);
    conn.close().await;
    finish(fake).await;
}

#[tokio::test]
async fn unknown_backend_message_type_is_a_protocol_error_and_breaks_the_connection() {
    let fake = FakeWalsender::start(
        Script::new()
            .expect_startup()
            .authenticate_ok("17.4")
            .expect_query("IDENTIFY_SYSTEM")
            .send_raw(&wire::frame(b'!', b"what is this\0"))
            .wait_for_client_close(),
    );
    let mut conn = connect(&fake).await;
    match within("identify_system", conn.identify_system()).await {
        Err(Error::Protocol(ProtocolError::Unexpected { tag, context })) => {
            assert_eq!(tag, '!');
            assert!(context.contains("unknown"), "{context}");
        }
        other => panic!("expected Protocol(Unexpected '!'), got {other:?}"),
    }
    assert_unusable(&conn.identify_system().await.unwrap_err(), "protocol error");
    conn.close().await;
    let t = finish(fake).await;
    assert_eq!(t.messages, vec![query("IDENTIFY_SYSTEM")]);
}

#[tokio::test]
async fn dropping_a_replication_stream_mid_copy_makes_later_calls_fail_clearly() {
    let fake = FakeWalsender::start(
        Script::new()
            .expect_startup()
            .authenticate_ok("17.4")
            .expect_query("START_REPLICATION")
            .start_copy_both()
            .send_xlogdata(0x100_0000, &[5; 32])
            .send_xlogdata(0x100_0020, &[6; 32])
            .wait_for_client_close(),
    );
    let mut conn = connect(&fake).await;
    let mut stream = conn
        .start_replication(None, Lsn(0x100_0000), None)
        .await
        .unwrap();
    expect_xlog(next_event(&mut stream).await.unwrap(), 0x100_0000, &[5; 32]);
    drop(stream);
    // Leftover COPY data must not be read as the answer to IDENTIFY_SYSTEM.
    assert_unusable(
        &conn.identify_system().await.unwrap_err(),
        "a replication stream was abandoned",
    );
    assert_unusable(
        &conn.simple_query("SHOW server_version").await.unwrap_err(),
        "abandoned",
    );
    conn.close().await;
    let t = finish(fake).await;
    assert_eq!(
        t.messages,
        vec![query("START_REPLICATION PHYSICAL 0/1000000")]
    );
}

#[tokio::test]
async fn dropping_a_base_backup_stream_mid_copy_makes_later_calls_fail_clearly() {
    let spec = BaseBackupSpec::new(0x200_0028, 1, 0x200_0100)
        .with_archive("base.tar", "", tar_like(b'b', 300))
        .with_chunk_size(50);
    let fake = FakeWalsender::start(
        Script::for_major(16)
            .expect_startup()
            .authenticate_ok("16.4")
            .expect_query("BASE_BACKUP")
            .reply_base_backup_v15(&spec)
            .wait_for_client_close(),
    );
    let mut conn = connect(&fake).await;
    let mut bb = conn
        .base_backup(&BaseBackupOptions::default())
        .await
        .unwrap();
    loop {
        match within("BaseBackupStream::next", bb.next()).await.unwrap() {
            Some(BaseBackupEvent::ArchiveData(_)) => break,
            Some(_) => {}
            None => panic!("the stream ended before any data"),
        }
    }
    drop(bb);
    assert_unusable(
        &conn.identify_system().await.unwrap_err(),
        "a BASE_BACKUP stream was abandoned",
    );
    conn.close().await;
    let t = finish(fake).await;
    assert_eq!(t.queries().len(), 1);
    assert!(
        t.queries()[0].starts_with("BASE_BACKUP ("),
        "{:?}",
        t.queries()
    );
}

// ---------------------------------------------------------------------------------------------
// The ways a walsender talks to and ends a stream.

#[tokio::test]
async fn keepalive_reply_requested_is_answered_with_the_exact_status_update() {
    let wal = [0x42u8; 256];
    let fake = FakeWalsender::start(
        Script::new()
            .strict()
            .expect_startup()
            .authenticate_ok("17.4")
            .expect_query("START_REPLICATION")
            .start_copy_both()
            .send_xlogdata(0x300_0000, &wal)
            .send_keepalive(0x300_0100, true)
            .expect_standby_status_where("write 0/3000100 flush 0/3000080 apply 0/0 reply 0", |s| {
                s.write_lsn == 0x300_0100
                    && s.flush_lsn == 0x300_0080
                    && s.apply_lsn == 0
                    && !s.reply_requested
                    && s.send_time > 0
            })
            .expect_copy_done()
            .send_stream_end()
            .expect_terminate(),
    );
    let mut conn = connect(&fake).await;
    let mut stream = conn
        .start_replication(Some("archiver"), Lsn(0x300_0000), Some(TimelineId(1)))
        .await
        .unwrap();
    expect_xlog(next_event(&mut stream).await.unwrap(), 0x300_0000, &wal);
    match next_event(&mut stream).await.unwrap() {
        Some(ReplicationEvent::Keepalive(k)) => {
            assert_eq!(k.wal_end, Lsn(0x300_0100));
            assert!(k.reply_requested);
        }
        other => panic!("expected a keepalive, got {other:?}"),
    }
    stream
        .send_status(status(0x300_0100, 0x300_0080, 0))
        .await
        .unwrap();
    stream.stop().await.unwrap();
    assert_eq!(
        next_event(&mut stream).await.unwrap(),
        Some(ReplicationEvent::Stopped)
    );
    drop(stream);
    conn.close().await;

    let t = finish(fake).await;
    let FrontendMessage::CopyData(r) = &t.messages[1] else {
        panic!("expected CopyData, got {:?}", t.messages);
    };
    assert_eq!((r.len(), r[0]), (34, b'r'));
    assert_eq!(&r[1..9], &0x300_0100u64.to_be_bytes());
    assert_eq!(&r[9..17], &0x300_0080u64.to_be_bytes());
    assert_eq!(&r[17..25], &[0; 8]);
    assert_eq!(r[33], 0);
    assert_eq!(
        t.messages[0],
        query("START_REPLICATION SLOT \"archiver\" PHYSICAL 0/3000000 TIMELINE 1")
    );
    assert_eq!(
        t.messages[2..],
        [FrontendMessage::CopyDone, FrontendMessage::Terminate]
    );
}

/// The server's CopyDone at the end of a historic timeline, the client's CopyDone, then
/// TIMELINE_HISTORY and a new START_REPLICATION on the same connection.
async fn end_of_timeline_then_history_and_restart(major: u32, version: &str) {
    let history = b"1\t0/3000100\tno recovery target specified\n";
    let fake = FakeWalsender::start(
        Script::for_major(major)
            .strict()
            .expect_startup()
            .authenticate_ok(version)
            .expect_query("START_REPLICATION")
            .start_copy_both()
            .send_xlogdata(0x300_0000, &[9; 0x180])
            .send_copy_done()
            .expect_copy_done()
            .send_end_of_timeline(2, 0x300_0100)
            .expect_query("TIMELINE_HISTORY")
            .reply_timeline_history(2, history)
            .expect_query("START_REPLICATION")
            .start_copy_both()
            .send_xlogdata(0x300_0100, &[10; 64])
            .expect_copy_done()
            .send_stream_end()
            .expect_terminate(),
    );
    let mut conn = connect(&fake).await;
    let mut stream = conn
        .start_replication(None, Lsn(0x300_0000), Some(TimelineId(1)))
        .await
        .unwrap();
    expect_xlog(
        next_event(&mut stream).await.unwrap(),
        0x300_0000,
        &[9; 0x180],
    );
    assert_eq!(
        next_event(&mut stream).await.unwrap(),
        Some(ReplicationEvent::EndOfTimeline {
            next_timeline: TimelineId(2),
            next_start: Lsn(0x300_0100),
        })
    );
    assert_eq!(next_event(&mut stream).await.unwrap(), None);
    drop(stream);

    let h = within("timeline_history", conn.timeline_history(TimelineId(2)))
        .await
        .unwrap();
    assert_eq!(h.filename, "00000002.history");
    assert_eq!(&h.content[..], history);

    let mut stream = conn
        .start_replication(None, Lsn(0x300_0100), Some(TimelineId(2)))
        .await
        .unwrap();
    expect_xlog(
        next_event(&mut stream).await.unwrap(),
        0x300_0100,
        &[10; 64],
    );
    stream.stop().await.unwrap();
    assert_eq!(
        next_event(&mut stream).await.unwrap(),
        Some(ReplicationEvent::Stopped)
    );
    drop(stream);
    conn.close().await;

    let t = finish(fake).await;
    assert_eq!(
        t.messages,
        vec![
            query("START_REPLICATION PHYSICAL 0/3000000 TIMELINE 1"),
            FrontendMessage::CopyDone,
            query("TIMELINE_HISTORY 2"),
            query("START_REPLICATION PHYSICAL 0/3000100 TIMELINE 2"),
            FrontendMessage::CopyDone,
            FrontendMessage::Terminate,
        ]
    );
}

#[tokio::test]
async fn server_copydone_is_answered_and_yields_end_of_timeline_then_history_and_restart() {
    end_of_timeline_then_history_and_restart(16, "16.4").await;
}

#[tokio::test]
async fn end_of_timeline_then_bytea_timeline_history_on_major_13() {
    end_of_timeline_then_history_and_restart(13, "13.16").await;
}

#[tokio::test]
async fn start_exactly_at_timeline_end_yields_end_of_timeline_without_copy() {
    let fake = FakeWalsender::start(
        Script::new()
            .strict()
            .expect_startup()
            .authenticate_ok("17.4")
            .expect_query("START_REPLICATION")
            .send_end_of_timeline(3, 0x500_0000)
            .expect_query("IDENTIFY_SYSTEM")
            .reply_identify_system(SYSID, 3, 0x500_0100, 17)
            .expect_terminate(),
    );
    let mut conn = connect(&fake).await;
    let mut stream = conn
        .start_replication(None, Lsn(0x500_0000), Some(TimelineId(2)))
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut stream).await.unwrap(),
        Some(ReplicationEvent::EndOfTimeline {
            next_timeline: TimelineId(3),
            next_start: Lsn(0x500_0000),
        })
    );
    drop(stream);
    let id = conn.identify_system().await.unwrap();
    assert_eq!(id.timeline, TimelineId(3));
    conn.close().await;
    let t = finish(fake).await;
    assert_eq!(
        t.messages,
        vec![
            query("START_REPLICATION PHYSICAL 0/5000000 TIMELINE 2"),
            query("IDENTIFY_SYSTEM"),
            FrontendMessage::Terminate,
        ],
        "no CopyDone: there was no COPY"
    );
}

#[tokio::test]
async fn server_shutdown_mid_stream_is_an_event_not_an_error() {
    let fake = FakeWalsender::start(
        Script::new()
            .expect_startup()
            .authenticate_ok("17.4")
            .expect_query("START_REPLICATION")
            .start_copy_both()
            .send_xlogdata(0x100_0000, &[9; 64])
            .shutdown_when_caught_up(0x100_0040),
    );
    let mut conn = connect(&fake).await;
    let mut stream = conn
        .start_replication(None, Lsn(0x100_0000), None)
        .await
        .unwrap();
    expect_xlog(next_event(&mut stream).await.unwrap(), 0x100_0000, &[9; 64]);
    match next_event(&mut stream).await.unwrap() {
        Some(ReplicationEvent::Keepalive(k)) => {
            assert_eq!(k.wal_end, Lsn(0x100_0040));
            assert!(k.reply_requested);
            // Everything received is durably stored: report it as flushed.
            stream
                .send_status(status(0x100_0040, 0x100_0040, 0))
                .await
                .unwrap();
        }
        other => panic!("expected the shutdown keepalive, got {other:?}"),
    }
    assert_eq!(
        next_event(&mut stream).await.unwrap(),
        Some(ReplicationEvent::ServerShutdown)
    );
    assert_eq!(next_event(&mut stream).await.unwrap(), None);
    drop(stream);
    assert_unusable(
        &conn.identify_system().await.unwrap_err(),
        "the server shut down",
    );
    conn.close().await;

    let t = finish(fake).await;
    let updates = t.standby_status_updates();
    assert_eq!(updates.len(), 1, "{:?}", t.messages);
    assert_eq!(
        (
            updates[0].write_lsn,
            updates[0].flush_lsn,
            updates[0].apply_lsn
        ),
        (0x100_0040, 0x100_0040, 0)
    );
}

#[tokio::test]
async fn next_is_cancellation_safe_with_a_frame_split_across_reads_and_notices_inside_copy() {
    let wal: Vec<u8> = (0..200u8).collect();
    let frame = wire::copy_data(&wire::xlog_data_payload(0x100_0000, 0x100_00C8, 0, &wal));
    let fake = FakeWalsender::start(
        Script::new()
            .strict()
            .expect_startup()
            .authenticate_ok("17.4")
            .expect_query("START_REPLICATION")
            .start_copy_both()
            .send_notice("a notice inside COPY")
            .send_parameter_status("in_hot_standby", "off")
            // The header itself is cut, then the body.
            .send_raw(&frame[..3])
            .sleep(Duration::from_millis(100))
            .send_raw(&frame[3..40])
            .sleep(Duration::from_millis(100))
            .send_raw(&frame[40..])
            .send_keepalive(0x100_00C8, false)
            .expect_copy_done()
            .send_stream_end()
            .expect_terminate(),
    );
    let mut conn = connect(&fake).await;
    let mut stream = conn
        .start_replication(None, Lsn(0x100_0000), None)
        .await
        .unwrap();
    let mut timer_fired = 0;
    let mut events = Vec::new();
    while events.len() < 2 {
        tokio::select! {
            ev = stream.next() => events.push(ev.unwrap().unwrap()),
            _ = tokio::time::sleep(Duration::from_millis(20)) => timer_fired += 1,
        }
        assert!(timer_fired < 500, "no event within 10 s");
    }
    // next() futures were dropped while part of the frame was buffered; nothing was lost.
    assert!(timer_fired >= 1);
    expect_xlog(Some(events[0].clone()), 0x100_0000, &wal);
    assert!(
        matches!(&events[1], ReplicationEvent::Keepalive(k) if k.wal_end == Lsn(0x100_00C8) && !k.reply_requested),
        "{:?}",
        events[1]
    );
    stream.stop().await.unwrap();
    assert_eq!(
        next_event(&mut stream).await.unwrap(),
        Some(ReplicationEvent::Stopped)
    );
    drop(stream);
    let notices: Vec<String> = conn.take_notices().into_iter().map(|n| n.message).collect();
    assert_eq!(notices, vec!["a notice inside COPY".to_owned()]);
    assert_eq!(conn.parameter("in_hot_standby"), Some("off"));
    conn.close().await;
    let t = finish(fake).await;
    assert_eq!(
        t.messages,
        vec![
            query("START_REPLICATION PHYSICAL 0/1000000"),
            FrontendMessage::CopyDone,
            FrontendMessage::Terminate
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Server errors inside COPY.

#[tokio::test]
async fn error_inside_copy_keeps_sqlstate_detail_hint_and_the_connection_usable() {
    let removed = "requested WAL segment 000000010000000000000001 has already been removed";
    let fake = FakeWalsender::start(
        Script::new()
            .strict()
            .expect_startup()
            .authenticate_ok("17.4")
            .expect_query("START_REPLICATION")
            .start_copy_both()
            .send_xlogdata(0x100_0000, &[1; 8])
            .send_error_in_copy("58P01", removed)
            .expect_query("IDENTIFY_SYSTEM")
            .reply_identify_system(SYSID, 1, 0x300_0000, 17)
            .expect_query("START_REPLICATION")
            .start_copy_both()
            .reply_error(
                "58P01",
                removed,
                Some("The WAL was recycled by a checkpoint."),
                Some("Use a replication slot."),
            )
            .expect_terminate(),
    );
    let mut conn = connect(&fake).await;
    let mut stream = conn
        .start_replication(None, Lsn(0x100_0000), None)
        .await
        .unwrap();
    expect_xlog(next_event(&mut stream).await.unwrap(), 0x100_0000, &[1; 8]);
    let err = next_event(&mut stream).await.unwrap_err();
    let db = err.as_db_error().expect("Error::Server");
    assert_eq!(
        (db.severity.as_str(), db.code(), db.message.as_str()),
        ("ERROR", "58P01", removed)
    );
    assert!(!err.is_connection_lost());
    assert_eq!(next_event(&mut stream).await.unwrap(), None);
    drop(stream);

    let id = within("identify_system", conn.identify_system())
        .await
        .unwrap();
    assert_eq!(
        (id.system_id, id.timeline, id.xlogpos),
        (SYSID, TimelineId(1), Lsn(0x300_0000))
    );

    let mut stream = conn
        .start_replication(None, Lsn(0x100_0000), None)
        .await
        .unwrap();
    match next_event(&mut stream).await {
        Err(Error::Server(db)) => {
            assert_eq!(db.code(), "58P01");
            assert_eq!(db.message, removed);
            assert_eq!(
                db.detail.as_deref(),
                Some("The WAL was recycled by a checkpoint.")
            );
            assert_eq!(db.hint.as_deref(), Some("Use a replication slot."));
        }
        other => panic!("expected Error::Server 58P01, got {other:?}"),
    }
    drop(stream);
    conn.close().await;

    let t = finish(fake).await;
    assert_eq!(
        t.messages,
        vec![
            query("START_REPLICATION PHYSICAL 0/1000000"),
            query("IDENTIFY_SYSTEM"),
            query("START_REPLICATION PHYSICAL 0/1000000"),
            FrontendMessage::Terminate,
        ],
        "no CopyDone after the server left COPY with an error"
    );
}

#[tokio::test]
async fn fatal_inside_copy_is_a_lost_connection_and_marks_it_unusable() {
    let fake = FakeWalsender::start(
        Script::new()
            .expect_startup()
            .authenticate_ok("17.4")
            .expect_query("START_REPLICATION")
            .start_copy_both()
            .send_xlogdata(0x100_0000, &[1; 8])
            .send_fatal(
                "57P01",
                "terminating connection due to administrator command",
            ),
    );
    let mut conn = connect(&fake).await;
    let mut stream = conn
        .start_replication(None, Lsn(0x100_0000), None)
        .await
        .unwrap();
    expect_xlog(next_event(&mut stream).await.unwrap(), 0x100_0000, &[1; 8]);
    let err = next_event(&mut stream).await.unwrap_err();
    let db = err.as_db_error().expect("Error::Server");
    assert_eq!(
        (db.severity.as_str(), db.code(), db.message.as_str()),
        (
            "FATAL",
            "57P01",
            "terminating connection due to administrator command"
        )
    );
    assert!(err.is_connection_lost());
    assert_eq!(next_event(&mut stream).await.unwrap(), None);
    drop(stream);
    assert_unusable(
        &conn.identify_system().await.unwrap_err(),
        "terminating connection due to administrator command",
    );
    conn.close().await;
    let t = finish(fake).await;
    assert_eq!(
        t.messages,
        vec![query("START_REPLICATION PHYSICAL 0/1000000")]
    );
}

// ---------------------------------------------------------------------------------------------
// BASE_BACKUP over both transports, and malformed BASE_BACKUP messages.

/// Archive-like bytes: `n` bytes of a pattern ending in a non-zero byte, then the 1024-byte
/// tar terminator (which v14 servers leave out and the client must put back).
fn tar_like(seed: u8, n: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..n)
        .map(|i| seed.wrapping_add((i % 251) as u8) | 1)
        .collect();
    v.extend([0u8; 1024]);
    v
}

const MANIFEST: &[u8] = b"{ \"PostgreSQL-Backup-Manifest-Version\": 1, \"Files\": [] }\n";
const NOTICE: &str = "all required WAL segments have been archived";

fn two_tablespace_spec() -> BaseBackupSpec {
    BaseBackupSpec::new(0x200_0028, 1, 0x200_0138)
        .with_archive("16385.tar", "/srv/ts1", tar_like(b'a', 123))
        .with_archive("base.tar", "", tar_like(b'b', 250))
        .with_manifest(MANIFEST.to_vec())
        .with_chunk_size(7)
        .with_notice(NOTICE)
}

/// A BASE_BACKUP event with data chunks merged, so both transports compare equal.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Merged {
    Started(Lsn, TimelineId),
    Tablespaces(Vec<TablespaceInfo>),
    Archive {
        name: String,
        location: Option<String>,
        data: Vec<u8>,
        ended: bool,
    },
    Manifest(Vec<u8>),
    Finished(Lsn, TimelineId),
}

/// What a BASE_BACKUP stream delivered: merged events, progress values, data chunk count,
/// notices, and how it ended.
struct Collected {
    events: Vec<Merged>,
    progress: Vec<u64>,
    chunks: usize,
    notices: Vec<String>,
    end: Result<(), Error>,
}

async fn collect_base_backup(conn: &mut Connection) -> Collected {
    let mut bb = conn
        .base_backup(&BaseBackupOptions::default())
        .await
        .unwrap();
    let mut c = Collected {
        events: Vec::new(),
        progress: Vec::new(),
        chunks: 0,
        notices: Vec::new(),
        end: Ok(()),
    };
    let mut finished = false;
    loop {
        let ev = match within("BaseBackupStream::next", bb.next()).await {
            Ok(Some(ev)) => ev,
            Ok(None) => break,
            Err(e) => {
                c.end = Err(e);
                break;
            }
        };
        assert!(!finished, "{ev:?} after Finished");
        match ev {
            BaseBackupEvent::Started {
                start_lsn,
                timeline,
            } => c.events.push(Merged::Started(start_lsn, timeline)),
            BaseBackupEvent::Tablespaces(t) => c.events.push(Merged::Tablespaces(t)),
            BaseBackupEvent::ArchiveStart {
                name,
                tablespace_location,
            } => c.events.push(Merged::Archive {
                name,
                location: tablespace_location,
                data: Vec::new(),
                ended: false,
            }),
            BaseBackupEvent::ArchiveData(d) => {
                c.chunks += 1;
                match c.events.last_mut() {
                    Some(Merged::Archive {
                        data, ended: false, ..
                    }) => data.extend_from_slice(&d),
                    other => panic!("ArchiveData outside an archive, after {other:?}"),
                }
            }
            BaseBackupEvent::ArchiveEnd => match c.events.last_mut() {
                Some(Merged::Archive { ended, .. }) if !*ended => *ended = true,
                other => panic!("ArchiveEnd outside an archive, after {other:?}"),
            },
            BaseBackupEvent::Progress(n) => c.progress.push(n),
            BaseBackupEvent::ManifestStart => c.events.push(Merged::Manifest(Vec::new())),
            BaseBackupEvent::ManifestData(d) => match c.events.last_mut() {
                Some(Merged::Manifest(m)) => m.extend_from_slice(&d),
                other => panic!("ManifestData outside the manifest, after {other:?}"),
            },
            BaseBackupEvent::Finished { end_lsn, timeline } => {
                finished = true;
                c.events.push(Merged::Finished(end_lsn, timeline));
            }
        }
    }
    c.notices = bb.take_notices().into_iter().map(|n| n.message).collect();
    c
}

fn expected_events(spec: &BaseBackupSpec, finished: bool) -> Vec<Merged> {
    let mut v = vec![
        Merged::Started(Lsn(spec.start_lsn), TimelineId(spec.tli)),
        Merged::Tablespaces(vec![
            TablespaceInfo {
                oid: Some(16385),
                location: Some("/srv/ts1".into()),
                size_kb: None,
            },
            TablespaceInfo {
                oid: None,
                location: None,
                size_kb: None,
            },
        ]),
    ];
    for a in &spec.archives {
        v.push(Merged::Archive {
            name: a.name.clone(),
            location: (!a.location.is_empty()).then(|| a.location.clone()),
            data: a.data.clone(),
            ended: true,
        });
    }
    v.push(Merged::Manifest(spec.manifest.clone().unwrap()));
    if finished {
        v.push(Merged::Finished(
            Lsn(spec.end_lsn),
            TimelineId(spec.end_tli),
        ));
    }
    v
}

#[tokio::test]
async fn base_backup_v15_and_v14_transports_give_identical_events_and_complete_tars() {
    let spec = two_tablespace_spec();
    let fake15 = FakeWalsender::start(
        Script::for_major(16)
            .strict()
            .expect_startup()
            .authenticate_ok("16.4")
            .expect_query("BASE_BACKUP (")
            .reply_base_backup_v15(&spec)
            .expect_terminate(),
    );
    let mut conn = connect(&fake15).await;
    let v15 = collect_base_backup(&mut conn).await;
    conn.close().await;
    let t15 = finish(fake15).await;

    let fake14 = FakeWalsender::start(
        Script::for_major(14)
            .strict()
            .expect_startup()
            .authenticate_ok("14.13")
            .expect_query("BASE_BACKUP LABEL")
            .reply_base_backup_v14(&spec)
            .expect_terminate(),
    );
    let mut conn = connect(&fake14).await;
    let v14 = collect_base_backup(&mut conn).await;
    conn.close().await;
    let t14 = finish(fake14).await;

    v15.end.unwrap();
    v14.end.unwrap();
    let expected = expected_events(&spec, true);
    assert_eq!(v15.events, expected);
    assert_eq!(v14.events, v15.events);
    // Each archive ends with the tar terminator, which the v14 server did not send.
    for a in &spec.archives {
        assert!(a.data.ends_with(&[0; 1024]));
    }
    assert_eq!(
        v15.progress,
        vec![
            spec.archives[0].data.len() as u64,
            (spec.archives[0].data.len() + spec.archives[1].data.len()) as u64,
        ]
    );
    assert!(v14.progress.is_empty());
    // Tiny chunks came through as separate events (plus one terminator per archive on v14).
    let data_len: usize = spec.archives.iter().map(|a| a.data.len()).sum();
    assert_eq!(v15.chunks, data_len.div_ceil(7));
    let sent14: usize = spec
        .archives
        .iter()
        .map(|a| (a.data.len() - 1024).div_ceil(7) + 1)
        .sum();
    assert_eq!(v14.chunks, sent14);
    assert_eq!(v15.notices, vec![NOTICE.to_owned()]);
    assert_eq!(v14.notices, vec![NOTICE.to_owned()]);

    for t in [&t15, &t14] {
        assert_eq!(t.messages.len(), 2, "{:?}", t.messages);
        assert_eq!(t.messages[1], FrontendMessage::Terminate);
    }
}

#[tokio::test]
async fn base_backup_checksum_failure_is_a_server_error_after_the_data_and_connection_stays_usable()
{
    for major in [16, 14] {
        let spec = two_tablespace_spec().with_checksum_failure();
        let script = Script::for_major(major)
            .strict()
            .expect_startup()
            .authenticate_ok(&format!("{major}.4"))
            .expect_query("BASE_BACKUP");
        let script = if major >= 15 {
            script.reply_base_backup_v15(&spec)
        } else {
            script.reply_base_backup_v14(&spec)
        };
        let fake = FakeWalsender::start(
            script
                .expect_query("IDENTIFY_SYSTEM")
                .reply_identify_system(SYSID, 1, 0x300_0000, major)
                .expect_terminate(),
        );
        let mut conn = connect(&fake).await;
        let got = collect_base_backup(&mut conn).await;
        // All the data arrived; no Finished.
        assert_eq!(got.events, expected_events(&spec, false), "major {major}");
        let err = got.end.unwrap_err();
        assert_eq!(err.code(), Some("XX001"), "major {major}: {err:?}");
        assert!(!err.is_connection_lost());
        let id = within("identify_system", conn.identify_system())
            .await
            .unwrap();
        assert_eq!(id.system_id, SYSID);
        conn.close().await;
        let t = finish(fake).await;
        assert_eq!(t.queries().len(), 2);
        assert_eq!(t.queries()[1], "IDENTIFY_SYSTEM");
    }
}

/// The v15 BASE_BACKUP header (start and tablespace result sets, CopyOutResponse), then the
/// given CopyData payloads.
fn v15_reply_with(payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut out = replies::result_set(
        &[("recptr", oid::TEXT), ("tli", oid::INT8)],
        &[vec![Some("0/2000028"), Some("1")]],
        "SELECT",
    );
    out.extend(replies::result_set(
        &[
            ("spcoid", oid::OID),
            ("spclocation", oid::TEXT),
            ("size", oid::INT8),
        ],
        &[vec![None, None, None]],
        "SELECT",
    ));
    out.extend(wire::copy_out_response());
    for p in payloads {
        out.extend(wire::copy_data(p));
    }
    out
}

async fn base_backup_protocol_error(payloads: &[Vec<u8>]) -> ProtocolError {
    let fake = FakeWalsender::start(
        Script::for_major(16)
            .expect_startup()
            .authenticate_ok("16.4")
            .expect_query("BASE_BACKUP")
            .send_raw(&v15_reply_with(payloads))
            .wait_for_client_close(),
    );
    let mut conn = connect(&fake).await;
    let mut bb = conn
        .base_backup(&BaseBackupOptions::default())
        .await
        .unwrap();
    let err = loop {
        match within("BaseBackupStream::next", bb.next()).await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the stream ended without an error"),
            Err(e) => break e,
        }
    };
    // A stream that failed stays finished.
    assert!(matches!(bb.next().await, Ok(None)));
    drop(bb);
    // The stream position is unknown now: nothing more may be read as a reply.
    assert_unusable(&conn.identify_system().await.unwrap_err(), "");
    conn.close().await;
    let t = finish(fake).await;
    assert_eq!(t.queries().len(), 1, "{:?}", t.messages);
    match err {
        Error::Protocol(p) => p,
        other => panic!("expected Error::Protocol, got {other:?}"),
    }
}

#[tokio::test]
async fn base_backup_unknown_copydata_type_is_a_protocol_error() {
    let err = base_backup_protocol_error(&[
        wire::bb_new_archive_payload("base.tar", ""),
        b"x123".to_vec(),
    ])
    .await;
    match err {
        ProtocolError::Malformed { what, reason } => {
            assert_eq!(what, "BASE_BACKUP CopyData");
            assert!(reason.contains("unknown message type 'x'"), "{reason}");
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[tokio::test]
async fn base_backup_archive_name_with_slash_is_a_protocol_error() {
    let err =
        base_backup_protocol_error(&[wire::bb_new_archive_payload("../etc/base.tar", "")]).await;
    match err {
        ProtocolError::Malformed { what, reason } => {
            assert_eq!(what, "BASE_BACKUP new-archive");
            assert!(reason.contains("\"../etc/base.tar\""), "{reason}");
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
    let err = base_backup_protocol_error(&[wire::bb_new_archive_payload("pg_wal/x.tar", "")]).await;
    assert!(
        err.to_string().contains("path separator"),
        "expected a path-separator error, got {err}"
    );
}

#[tokio::test]
async fn base_backup_new_archive_after_manifest_is_a_protocol_error() {
    let err = base_backup_protocol_error(&[
        wire::bb_new_archive_payload("base.tar", ""),
        wire::bb_data_payload(b"abc"),
        wire::bb_manifest_payload(),
        wire::bb_data_payload(b"{}"),
        wire::bb_new_archive_payload("16385.tar", "/srv/ts1"),
    ])
    .await;
    match err {
        ProtocolError::Unexpected { tag, context } => {
            assert_eq!(tag, 'n');
            assert!(context.contains("after the manifest"), "{context}");
        }
        other => panic!("expected Unexpected 'n', got {other:?}"),
    }
}

#[tokio::test]
async fn fatal_inside_base_backup_is_a_lost_connection_and_marks_it_unusable() {
    let fake = FakeWalsender::start(
        Script::for_major(16)
            .expect_startup()
            .authenticate_ok("16.4")
            .expect_query("BASE_BACKUP")
            .send_raw(&v15_reply_with(&[
                wire::bb_new_archive_payload("base.tar", ""),
                wire::bb_data_payload(b"abc"),
            ]))
            .send_fatal(
                "57P01",
                "terminating connection due to administrator command",
            ),
    );
    let mut conn = connect(&fake).await;
    let mut bb = conn
        .base_backup(&BaseBackupOptions::default())
        .await
        .unwrap();
    let mut data = Vec::new();
    let err = loop {
        match within("BaseBackupStream::next", bb.next()).await {
            Ok(Some(BaseBackupEvent::ArchiveData(d))) => data.extend_from_slice(&d),
            Ok(Some(_)) => {}
            Ok(None) => panic!("the stream ended without an error"),
            Err(e) => break e,
        }
    };
    assert_eq!(data, b"abc");
    assert_eq!(err.code(), Some("57P01"), "{err:?}");
    assert!(err.is_connection_lost());
    assert!(matches!(bb.next().await, Ok(None)));
    drop(bb);
    assert_unusable(
        &conn.identify_system().await.unwrap_err(),
        "the server ended the session",
    );
    conn.close().await;
    let t = finish(fake).await;
    assert_eq!(t.queries().len(), 1, "{:?}", t.messages);
}

// ---------------------------------------------------------------------------------------------
// Startup and authentication.

#[tokio::test]
async fn cleartext_password_request_is_answered_with_the_configured_password() {
    let fake = FakeWalsender::start(
        Script::new()
            .strict()
            .expect_startup()
            .request_cleartext_password()
            .expect_password(Some("s3cret pw"))
            .authenticate_ok("17.4")
            .expect_terminate(),
    );
    let conn = within(
        "connect",
        Connection::connect(&config_with(&fake, "password='s3cret pw'")),
    )
    .await
    .unwrap();
    assert_eq!(conn.process_id(), 4242);
    conn.close().await;
    let t = finish(fake).await;
    assert!(!t.ssl_requested, "sslmode=disable sends no SSLRequest");
    assert_eq!(t.startup_param("user"), Some("u"));
    assert_eq!(t.startup_param("replication"), Some("true"));
    assert_eq!(
        t.messages,
        vec![
            FrontendMessage::PasswordMessage(b"s3cret pw\0".to_vec()),
            FrontendMessage::Terminate
        ]
    );
}

#[tokio::test]
async fn md5_password_request_is_answered_with_postgres_md5_hash() {
    let salt = [0x9a, 0x01, 0xff, 0x42];
    // An oracle not written here: md5(md5(password || user) hex || salt), "md5" + hex.
    let expected = postgres_protocol::authentication::md5_hash(b"u", b"hunter2", salt);
    let fake = FakeWalsender::start(
        Script::new()
            .strict()
            .expect_startup()
            .request_md5_password(salt)
            .expect_password(Some(&expected))
            .authenticate_ok("17.4")
            .expect_terminate(),
    );
    let conn = within(
        "connect",
        Connection::connect(&config_with(&fake, "password=hunter2")),
    )
    .await
    .unwrap();
    conn.close().await;
    let t = finish(fake).await;
    let mut body = expected.clone().into_bytes();
    body.push(0);
    assert_eq!(body.len(), 3 + 32 + 1);
    assert_eq!(t.messages[0], FrontendMessage::PasswordMessage(body));
}

#[tokio::test]
async fn password_request_without_a_password_is_password_required_and_sends_none() {
    for request in ["cleartext", "md5"] {
        let script = Script::new().expect_startup();
        let script = if request == "md5" {
            script.request_md5_password([1, 2, 3, 4])
        } else {
            script.request_cleartext_password()
        };
        let fake = FakeWalsender::start(script.wait_for_client_close());
        // No password, and a password file that does not exist (not the user's ~/.pgpass).
        let cfg = config_with(&fake, "passfile=/nonexistent/pgstream-test-pgpass");
        match within("connect", Connection::connect(&cfg)).await {
            Err(Error::Auth { target, source }) => {
                assert_eq!(source, AuthError::PasswordRequired, "{request}");
                assert!(target.contains("127.0.0.1"), "{target}");
            }
            other => panic!("{request}: expected Auth PasswordRequired, got {other:?}"),
        }
        let t = finish(fake).await;
        assert!(
            !t.messages
                .iter()
                .any(|m| matches!(m, FrontendMessage::PasswordMessage(_))),
            "{request}: a password message was sent: {:?}",
            t.messages
        );
        assert!(t.client_closed);
    }
}

#[tokio::test]
async fn negotiate_protocol_version_during_startup_is_tolerated() {
    let fake = FakeWalsender::start(
        Script::new()
            .strict()
            .expect_startup()
            .send_raw(&wire::negotiate_protocol_version(0, &["_pq_.something"]))
            .authenticate_ok("17.4")
            .expect_query("IDENTIFY_SYSTEM")
            .reply_identify_system(SYSID, 1, 0x300_0000, 17)
            .expect_terminate(),
    );
    let mut conn = connect(&fake).await;
    assert_eq!(conn.server_version().major, 17);
    assert_eq!(conn.identify_system().await.unwrap().system_id, SYSID);
    conn.close().await;
    let t = finish(fake).await;
    assert_eq!(
        t.messages,
        vec![query("IDENTIFY_SYSTEM"), FrontendMessage::Terminate]
    );

    // Also after AuthenticationOk, before ReadyForQuery.
    let mut login = replies::login_ok("17.4", 7, 8);
    let z = login.split_off(login.len() - 6);
    login.extend(wire::negotiate_protocol_version(0, &[]));
    login.extend(z);
    let fake = FakeWalsender::start(
        Script::new()
            .expect_startup()
            .send_raw(&login)
            .expect_terminate(),
    );
    let conn = connect(&fake).await;
    assert_eq!(conn.process_id(), 7);
    conn.close().await;
    finish(fake).await;
}

#[tokio::test]
async fn error_response_during_startup_is_a_server_error_with_its_sqlstate() {
    let msg = "no pg_hba.conf entry for replication connection from host \"127.0.0.1\", user \"u\", no encryption";
    let fake = FakeWalsender::start(Script::new().expect_startup().send_fatal("28000", msg));
    let err = within("connect", Connection::connect(&config_with(&fake, "")))
        .await
        .unwrap_err();
    let db = err.as_db_error().expect("Error::Server");
    assert_eq!(
        (db.severity.as_str(), db.code(), db.message.as_str()),
        ("FATAL", "28000", msg)
    );
    assert!(err.is_connection_lost());
    let t = finish(fake).await;
    assert!(t.messages.is_empty(), "{:?}", t.messages);
}

#[tokio::test]
async fn error_response_after_authentication_ok_is_a_server_error_with_its_sqlstate() {
    let fake = FakeWalsender::start(
        Script::new()
            .expect_startup()
            .send_raw(&wire::auth_ok())
            .send_fatal("53300", "sorry, too many clients already"),
    );
    let err = within("connect", Connection::connect(&config_with(&fake, "")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("53300"), "{err:?}");
    assert!(err.is_connection_lost());
    let t = finish(fake).await;
    assert!(t.messages.is_empty(), "{:?}", t.messages);
}

#[tokio::test]
async fn channel_binding_require_refuses_cleartext_and_md5_before_sending_the_password() {
    for md5 in [false, true] {
        let script = Script::new().expect_startup();
        let script = if md5 {
            script.request_md5_password([1, 2, 3, 4])
        } else {
            script.request_cleartext_password()
        };
        let fake = FakeWalsender::start(script.wait_for_client_close());
        let cfg = config_with(&fake, "password=hunter2 channel_binding=require");
        match within("connect", Connection::connect(&cfg)).await {
            Err(Error::Auth {
                source: AuthError::ChannelBindingRequired { .. },
                ..
            }) => {}
            other => panic!("md5={md5}: expected ChannelBindingRequired, got {other:?}"),
        }
        let t = finish(fake).await;
        assert!(
            !t.messages
                .iter()
                .any(|m| matches!(m, FrontendMessage::PasswordMessage(_))),
            "md5={md5}: the password was sent: {:?}",
            t.messages
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Reply shapes of older servers.

#[tokio::test]
async fn drop_slot_accepts_the_v12_answer_with_two_command_completes() {
    let mut reply = wire::command_complete("DROP_REPLICATION_SLOT");
    reply.extend(wire::command_complete("SELECT"));
    reply.extend(wire::ready_for_query(wire::TX_IDLE));
    let fake = FakeWalsender::start(
        Script::for_major(12)
            .strict()
            .expect_startup()
            .authenticate_ok("12.20")
            .expect_query("DROP_REPLICATION_SLOT")
            .send_raw(&reply)
            .expect_query("IDENTIFY_SYSTEM")
            .reply_identify_system(SYSID, 1, 0x300_0000, 12)
            .expect_terminate(),
    );
    let mut conn = connect(&fake).await;
    within("drop_slot", conn.drop_slot("old_slot", true))
        .await
        .unwrap();
    // Nothing of the answer is left over to be misread by the next command.
    assert_eq!(conn.identify_system().await.unwrap().system_id, SYSID);
    conn.close().await;
    let t = finish(fake).await;
    assert_eq!(
        t.queries(),
        vec!["DROP_REPLICATION_SLOT \"old_slot\" WAIT", "IDENTIFY_SYSTEM"]
    );
}

#[tokio::test]
async fn identify_system_parses_int8_timeline_of_16_and_int4_of_13() {
    for (major, version) in [(16, "16.4"), (13, "13.16")] {
        let fake = FakeWalsender::start(
            Script::for_major(major)
                .strict()
                .expect_startup()
                .authenticate_ok(version)
                .expect_query("IDENTIFY_SYSTEM")
                .reply_identify_system(SYSID, 0x7FFF_FFFF, 0xA_0000_0028, major)
                .expect_terminate(),
        );
        let mut conn = connect(&fake).await;
        let id = within("identify_system", conn.identify_system())
            .await
            .unwrap();
        assert_eq!(id.system_id, SYSID, "major {major}");
        assert_eq!(id.timeline, TimelineId(0x7FFF_FFFF), "major {major}");
        assert_eq!(id.xlogpos, Lsn(0xA_0000_0028), "major {major}");
        assert_eq!(id.dbname, None);
        conn.close().await;
        let t = finish(fake).await;
        assert_eq!(t.queries(), vec!["IDENTIFY_SYSTEM"]);
    }
}
