//! START_REPLICATION through pgwire-repl against real servers: the received bytes equal the
//! server's WAL segment files, status updates advance the slot, and stream endings (our stop,
//! a server shutdown) are events rather than errors.

mod support;

use std::sync::Arc;

use integration::{cluster, test_majors};
use pgwire_repl::message::StandbyStatusUpdate;
use pgwire_repl::replication::ReplicationEvent;
use pgwire_repl::{Lsn, PgTimestamp};

const SEG: u64 = 16 << 20;

fn status(pos: Lsn, reply: bool) -> StandbyStatusUpdate {
    StandbyStatusUpdate {
        write: pos,
        flush: pos,
        apply: Lsn::INVALID,
        send_time: PgTimestamp::now(),
        reply_requested: reply,
    }
}

#[tokio::test]
async fn streamed_wal_equals_server_segments_and_status_advances_slot() {
    for major in test_majors() {
        let ctx = format!("PostgreSQL {major}");
        let pg = cluster(major).start();
        let mut conn = support::replication(&pg).await;
        assert_eq!(conn.wal_segment_size().await.unwrap(), SEG, "{ctx}");
        conn.create_physical_slot("pgstream_test", false, true)
            .await
            .unwrap();
        // RESERVE_WAL keeps everything from the slot's restart_lsn, which is at or before
        // the flush position reported after it.
        let id = conn.identify_system().await.unwrap();
        let start = id.xlogpos.segment_start(SEG);

        // Fill the current segment and switch, so at least one complete segment exists.
        pg.psql(
            "CREATE TABLE w AS SELECT g, md5(g::text) AS s FROM generate_series(1, 60000) g;
             SELECT pg_switch_wal();",
        );
        let target = Lsn(start.0 + SEG);

        let mut received = Vec::with_capacity(SEG as usize);
        let mut pos = start;
        let mut stream = conn
            .start_replication(Some("pgstream_test"), start, Some(id.timeline))
            .await
            .unwrap();
        while pos < target {
            match stream.next().await.unwrap() {
                Some(ReplicationEvent::XLogData(x)) => {
                    assert_eq!(x.wal_start, pos, "{ctx}: gap or overlap in XLogData");
                    let take = ((target.0 - pos.0) as usize).min(x.data.len());
                    received.extend_from_slice(&x.data[..take]);
                    pos = Lsn(pos.0 + x.data.len() as u64);
                }
                Some(ReplicationEvent::Keepalive(k)) => {
                    if k.reply_requested {
                        stream
                            .send_status(status(Lsn::INVALID, false))
                            .await
                            .unwrap();
                    }
                }
                other => panic!("{ctx}: unexpected {other:?}"),
            }
        }
        let name = support::segment_file_name(id.timeline.0, start.0, SEG);
        let on_server = std::fs::read(pg.data_dir().join("pg_wal").join(&name)).unwrap();
        assert!(
            received == on_server,
            "{ctx}: streamed {name} differs from the server's file"
        );

        // Reporting the flush position moves the slot's restart_lsn.
        stream.send_status(status(target, true)).await.unwrap();
        let query =
            "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'pgstream_test'";
        support::wait_until("restart_lsn advances", || {
            let got: Lsn = pg.psql(query).parse().unwrap();
            got >= target
        });

        // Our stop ends the stream cleanly and the connection can be used again.
        stream.stop().await.unwrap();
        loop {
            match stream.next().await.unwrap() {
                Some(ReplicationEvent::Stopped) => break,
                Some(ReplicationEvent::XLogData(_) | ReplicationEvent::Keepalive(_)) => {}
                other => panic!("{ctx}: unexpected {other:?} after stop"),
            }
        }
        assert_eq!(stream.next().await.unwrap(), None);
        drop(stream);
        conn.identify_system().await.expect("usable after stop");
        conn.drop_slot("pgstream_test", false).await.unwrap();
        let err = conn.drop_slot("pgstream_test", false).await.unwrap_err();
        assert_eq!(err.code(), Some("42704"), "{ctx}: {err}");
    }
}

#[tokio::test]
async fn server_fast_shutdown_ends_stream_with_event() {
    for major in test_majors() {
        let ctx = format!("PostgreSQL {major}");
        let pg = Arc::new(cluster(major).start());
        let mut conn = support::replication(&pg).await;
        let id = conn.identify_system().await.unwrap();
        let mut stream = conn
            .start_replication(None, id.xlogpos.segment_start(SEG), Some(id.timeline))
            .await
            .unwrap();
        let stopper = {
            let pg = Arc::clone(&pg);
            tokio::task::spawn_blocking(move || pg.stop())
        };
        let mut pos = Lsn::INVALID;
        // The walsender waits for us to confirm everything before it exits: answer keepalives.
        let ended = loop {
            match stream.next().await {
                Ok(Some(ReplicationEvent::XLogData(x))) => {
                    pos = Lsn(x.wal_start.0 + x.data.len() as u64)
                }
                Ok(Some(ReplicationEvent::Keepalive(k))) => {
                    if k.reply_requested {
                        stream
                            .send_status(status(pos.max(k.wal_end), false))
                            .await
                            .unwrap();
                    }
                }
                Ok(Some(ReplicationEvent::ServerShutdown)) => break true,
                Ok(other) => panic!("{ctx}: unexpected {other:?}"),
                Err(e) => panic!("{ctx}: shutdown surfaced as an error: {e}"),
            }
        };
        assert!(ended);
        stopper.await.unwrap();
        drop(stream);
        let err = conn.identify_system().await.unwrap_err();
        assert!(err.is_connection_lost(), "{ctx}: {err}");
    }
}

#[tokio::test]
async fn slots_temporary_persistent_read_and_duplicate() {
    for major in test_majors() {
        let ctx = format!("PostgreSQL {major}");
        let pg = cluster(major).start();
        let mut conn = support::replication(&pg).await;
        let tmp = conn
            .create_physical_slot("tmp_slot", true, true)
            .await
            .unwrap();
        assert_eq!(tmp.name, "tmp_slot");
        let dup = conn
            .create_physical_slot("tmp_slot", false, true)
            .await
            .unwrap_err();
        assert_eq!(dup.code(), Some("42710"), "{ctx}: {dup}");
        conn.create_physical_slot("keep_slot", false, true)
            .await
            .unwrap();
        let flush = conn.identify_system().await.unwrap().xlogpos;
        let restart: Lsn = pg
            .psql("SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'keep_slot'")
            .parse()
            .unwrap();
        assert!(
            restart.is_valid() && restart <= flush,
            "{ctx}: RESERVE_WAL did not reserve"
        );
        if major >= 15 {
            let state = conn
                .read_replication_slot("keep_slot")
                .await
                .unwrap()
                .unwrap();
            assert_eq!(state.restart_lsn, Some(restart), "{ctx}");
            assert_eq!(state.restart_timeline.map(|t| t.0), Some(1), "{ctx}");
            assert_eq!(
                conn.read_replication_slot("nope").await.unwrap(),
                None,
                "{ctx}"
            );
        } else {
            assert!(
                conn.read_replication_slot("keep_slot").await.is_err(),
                "{ctx}"
            );
        }
        // A temporary slot dies with its session.
        conn.close().await;
        support::wait_until("the temporary slot is gone", || {
            pg.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'tmp_slot'") == "0"
        });
        assert_eq!(
            pg.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'keep_slot'"),
            "1"
        );
    }
}
