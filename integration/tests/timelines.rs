//! Timelines and stream failures through pgwire-repl against real servers: a promoted standby
//! ends its historic timeline with an event (not an error) and the connection goes on, a
//! multi-host conninfo follows a failover, and server errors inside COPY (a removed segment, a
//! start point ahead of the flush position) surface as `Error::Server` instead of hangs.

mod support;

use std::path::Path;
use std::time::Duration;

use integration::{cluster, test_majors};
use pgwire_repl::config::{ReplicationMode, TargetSessionAttrs};
use pgwire_repl::message::StandbyStatusUpdate;
use pgwire_repl::replication::{ReplicationEvent, ReplicationStream};
use pgwire_repl::{Connection, Error, Lsn, PgTimestamp, TimelineId};
use support::standby::{wait_for_replay, Pair};

const SEG: u64 = 16 << 20;

/// Longest wait for one stream event: a stalled stream fails the test instead of hanging it.
const EVENT_TIMEOUT: Duration = Duration::from_secs(60);

/// A primary and a pg_basebackup -R standby that streams from it. wal_keep_size on both keeps
/// the timeline-1 segments these tests read back after the promotion.
fn primary_with_standby(major: u32) -> Pair {
    support::standby::primary_with_standby(major, "256MB")
}

/// The next event, failing the test when none comes within [`EVENT_TIMEOUT`].
async fn next_event(
    stream: &mut ReplicationStream<'_>,
    ctx: &str,
) -> Result<Option<ReplicationEvent>, Error> {
    tokio::time::timeout(EVENT_TIMEOUT, stream.next())
        .await
        .unwrap_or_else(|_| panic!("{ctx}: no stream event within {EVENT_TIMEOUT:?}"))
}

/// Answers a keepalive that asks for a reply (without confirming anything).
async fn answer(stream: &mut ReplicationStream<'_>, reply_requested: bool) {
    if reply_requested {
        let status = StandbyStatusUpdate {
            write: Lsn::INVALID,
            flush: Lsn::INVALID,
            apply: Lsn::INVALID,
            send_time: PgTimestamp::now(),
            reply_requested: false,
        };
        stream.send_status(status).await.unwrap();
    }
}

/// Parses the first line of a history file: `parentTLI<TAB>switchLSN<TAB>reason`.
fn parse_history_line(content: &[u8], ctx: &str) -> (u32, Lsn) {
    let text = std::str::from_utf8(content)
        .unwrap_or_else(|_| panic!("{ctx}: history file is not UTF-8: {content:?}"));
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .unwrap_or_else(|| panic!("{ctx}: empty history file {text:?}"));
    let fields: Vec<&str> = line.split('\t').collect();
    assert!(fields.len() >= 3, "{ctx}: history line {line:?}");
    let parent = fields[0]
        .parse()
        .unwrap_or_else(|_| panic!("{ctx}: parent timeline in {line:?}"));
    let switch = fields[1]
        .parse()
        .unwrap_or_else(|_| panic!("{ctx}: switch LSN in {line:?}"));
    (parent, switch)
}

fn read_segment(pg_wal: &Path, tli: u32, lsn: u64, ctx: &str) -> Vec<u8> {
    let name = support::segment_file_name(tli, lsn, SEG);
    std::fs::read(pg_wal.join(&name)).unwrap_or_else(|e| panic!("{ctx}: reading {name}: {e}"))
}

#[tokio::test]
async fn promoted_standby_ends_timeline_one_at_the_switch_point() {
    for major in test_majors() {
        let ctx = format!("PostgreSQL {major}");
        let pair = primary_with_standby(major);
        let (primary, standby) = (&pair.primary, &pair.standby);

        // Begin on a fresh segment, fill it and switch, so that one complete timeline-1
        // segment lies between the start and the switch point.
        primary.psql("CREATE TABLE before_switch (x int); SELECT pg_switch_wal()");
        let start: Lsn = primary
            .psql("SELECT pg_current_wal_lsn()")
            .parse::<Lsn>()
            .unwrap()
            .segment_start(SEG);
        primary.psql(
            "INSERT INTO before_switch SELECT generate_series(1, 20000);
             SELECT pg_switch_wal();
             INSERT INTO before_switch VALUES (0);",
        );
        let replayed = wait_for_replay(primary, standby);
        standby.promote();

        let mut conn = support::replication(standby).await;
        let id = conn.identify_system().await.unwrap();
        assert_eq!(id.timeline, TimelineId(2), "{ctx}: IDENTIFY_SYSTEM");
        let history = conn.timeline_history(TimelineId(2)).await.unwrap();
        assert_eq!(history.filename, "00000002.history", "{ctx}");
        let (parent, switch) = parse_history_line(&history.content, &ctx);
        assert_eq!(parent, 1, "{ctx}: parent timeline");
        assert!(
            switch >= replayed && switch.segment_start(SEG).0 > start.0,
            "{ctx}: switch point {switch} (replayed {replayed}, start {start})"
        );

        // Timeline 1 from `start`: contiguous WAL up to the switch point, then the event.
        let mut received = Vec::with_capacity((switch.0 - start.0) as usize);
        let mut pos = start;
        let mut stream = conn
            .start_replication(None, start, Some(TimelineId(1)))
            .await
            .unwrap();
        let end = loop {
            match next_event(&mut stream, &ctx).await {
                Ok(Some(ReplicationEvent::XLogData(x))) => {
                    assert_eq!(x.wal_start, pos, "{ctx}: gap or overlap in XLogData");
                    received.extend_from_slice(&x.data);
                    pos = Lsn(pos.0 + x.data.len() as u64);
                }
                Ok(Some(ReplicationEvent::Keepalive(k))) => {
                    answer(&mut stream, k.reply_requested).await
                }
                Ok(Some(ReplicationEvent::EndOfTimeline {
                    next_timeline,
                    next_start,
                })) => break (next_timeline, next_start),
                other => panic!("{ctx}: unexpected {other:?} on timeline 1"),
            }
        };
        assert_eq!(end, (TimelineId(2), switch), "{ctx}: EndOfTimeline");
        assert_eq!(
            pos, switch,
            "{ctx}: timeline 1 streamed up to the switch point"
        );
        assert_eq!(
            next_event(&mut stream, &ctx).await.unwrap(),
            None,
            "{ctx}: events after EndOfTimeline"
        );
        drop(stream);

        // What came on timeline 1 is what the primary wrote on timeline 1.
        let pg_wal = primary.data_dir().join("pg_wal");
        let mut seg_start = start.0;
        while seg_start < switch.0 {
            let len = (switch.0 - seg_start).min(SEG) as usize;
            let offset = (seg_start - start.0) as usize;
            let on_primary = read_segment(&pg_wal, 1, seg_start, &ctx);
            let name = support::segment_file_name(1, seg_start, SEG);
            assert!(
                received[offset..offset + len] == on_primary[..len],
                "{ctx}: timeline 1 bytes of {name} (first {len}) differ from the primary's file"
            );
            seg_start += SEG;
        }

        // The same connection goes on with timeline 2.
        let tl2_start = switch.segment_start(SEG);
        let mut stream = conn
            .start_replication(None, tl2_start, Some(TimelineId(2)))
            .await
            .unwrap();
        loop {
            match next_event(&mut stream, &ctx).await {
                Ok(Some(ReplicationEvent::XLogData(x))) => {
                    assert_eq!(
                        x.wal_start, tl2_start,
                        "{ctx}: first XLogData on timeline 2"
                    );
                    assert!(!x.data.is_empty(), "{ctx}: empty XLogData");
                    break;
                }
                Ok(Some(ReplicationEvent::Keepalive(k))) => {
                    answer(&mut stream, k.reply_requested).await
                }
                other => panic!("{ctx}: unexpected {other:?} on timeline 2"),
            }
        }
        stream.stop().await.unwrap();
        loop {
            match next_event(&mut stream, &ctx).await {
                Ok(Some(ReplicationEvent::Stopped)) => break,
                Ok(Some(ReplicationEvent::XLogData(_) | ReplicationEvent::Keepalive(_))) => {}
                other => panic!("{ctx}: unexpected {other:?} after stop on timeline 2"),
            }
        }
        drop(stream);

        // Exactly at the switch point the server skips COPY and names the next timeline.
        let mut stream = conn
            .start_replication(None, switch, Some(TimelineId(1)))
            .await
            .unwrap();
        assert_eq!(
            next_event(&mut stream, &ctx).await.unwrap(),
            Some(ReplicationEvent::EndOfTimeline {
                next_timeline: TimelineId(2),
                next_start: switch,
            }),
            "{ctx}: START_REPLICATION at the switch point"
        );
        assert_eq!(next_event(&mut stream, &ctx).await.unwrap(), None, "{ctx}");
        drop(stream);

        // Past the fork, timeline 1 is not this server's history: an ERROR before COPY.
        let past_fork = Lsn(switch.0 + 8);
        let mut stream = conn
            .start_replication(None, past_fork, Some(TimelineId(1)))
            .await
            .unwrap();
        let err = next_event(&mut stream, &ctx)
            .await
            .expect_err("START_REPLICATION past the fork of timeline 1");
        let db = err
            .as_db_error()
            .unwrap_or_else(|| panic!("{ctx}: not a server error: {err:?}"));
        assert!(
            db.message.contains("is not in this server's history"),
            "{ctx}: {db:?}"
        );
        assert!(
            db.detail
                .as_deref()
                .is_some_and(|d| d.contains(&switch.to_string())),
            "{ctx}: the detail names the fork point {switch}: {db:?}"
        );
        drop(stream);
        let again = conn.identify_system().await.unwrap();
        assert_eq!(again.timeline, TimelineId(2), "{ctx}: usable afterwards");
        conn.close().await;
    }
}

#[tokio::test]
async fn multi_host_conninfo_follows_a_failover() {
    for major in test_majors() {
        let ctx = format!("PostgreSQL {major}");
        let pair = primary_with_standby(major);
        let (primary, standby) = (&pair.primary, &pair.standby);
        let conninfo = format!(
            "host=127.0.0.1,127.0.0.1 port={},{} user=postgres dbname=postgres sslmode=disable \
             target_session_attrs=primary replication=true",
            primary.port(),
            standby.port()
        );
        let cfg = support::config(&conninfo);
        assert_eq!(cfg.replication, ReplicationMode::Physical, "{ctx}");
        assert_eq!(
            cfg.target_session_attrs,
            TargetSessionAttrs::Primary,
            "{ctx}"
        );

        let mut conn = Connection::connect(&cfg)
            .await
            .unwrap_or_else(|e| panic!("{ctx}: connecting before the failover: {e}"));
        assert_eq!(
            conn.target().port,
            primary.port(),
            "{ctx}: reached the primary"
        );
        let id = conn.identify_system().await.unwrap();
        assert_eq!(id.timeline, TimelineId(1), "{ctx}");
        let system_id = id.system_id;
        conn.close().await;

        // Standby listed first: skipped, because it is in recovery (13 has no in_hot_standby
        // parameter, so the client asks the walsender).
        let mut reversed = cfg.clone();
        reversed.targets.reverse();
        let conn = Connection::connect(&reversed)
            .await
            .unwrap_or_else(|e| panic!("{ctx}: connecting with the standby first: {e}"));
        assert_eq!(
            conn.target().port,
            primary.port(),
            "{ctx}: skipped the standby"
        );
        conn.close().await;

        primary.stop_immediate();
        standby.promote();

        let mut conn = Connection::connect(&cfg)
            .await
            .unwrap_or_else(|e| panic!("{ctx}: connecting after the failover: {e}"));
        assert_eq!(
            conn.target().port,
            standby.port(),
            "{ctx}: reached the new primary"
        );
        let id = conn.identify_system().await.unwrap();
        assert_eq!(
            id.timeline,
            TimelineId(2),
            "{ctx}: timeline after promotion"
        );
        assert_eq!(id.system_id, system_id, "{ctx}: same cluster");
        conn.close().await;
    }
}

#[tokio::test]
async fn removed_segment_is_a_server_error_inside_copy() {
    for major in test_majors() {
        let ctx = format!("PostgreSQL {major}");
        let pg = cluster(major)
            .setting("fsync", "off")
            .setting("min_wal_size", "32MB")
            .setting("max_wal_size", "64MB")
            .start();
        let first = Lsn(0x100_0000);
        let first_name = support::segment_file_name(1, first.0, SEG);
        for _ in 0..3 {
            pg.psql("CREATE TABLE IF NOT EXISTS filler (x int); INSERT INTO filler VALUES (1)");
            pg.psql("SELECT pg_switch_wal()");
            pg.psql("CHECKPOINT");
        }
        assert!(
            !pg.data_dir().join("pg_wal").join(&first_name).exists(),
            "{ctx}: {first_name} should have been removed or recycled by the checkpoints"
        );

        let mut conn = support::replication(&pg).await;
        let mut stream = conn.start_replication(None, first, None).await.unwrap();
        let err = loop {
            match next_event(&mut stream, &ctx).await {
                Ok(Some(ReplicationEvent::Keepalive(k))) => {
                    answer(&mut stream, k.reply_requested).await
                }
                Ok(other) => panic!("{ctx}: expected an error, got {other:?}"),
                Err(e) => break e,
            }
        };
        let db = err
            .as_db_error()
            .unwrap_or_else(|| panic!("{ctx}: not a server error: {err:?}"));
        assert!(
            db.message.contains(&first_name) && db.message.contains("has already been removed"),
            "{ctx}: {db:?}"
        );
        assert_eq!(db.code, "58P01", "{ctx}: SQLSTATE undefined_file kept");
        assert_eq!(db.severity, "ERROR", "{ctx}");
        assert_eq!(next_event(&mut stream, &ctx).await.unwrap(), None, "{ctx}");
        drop(stream);
        // An ERROR (not FATAL) ends the COPY only; the walsender takes commands again.
        let id = conn
            .identify_system()
            .await
            .unwrap_or_else(|e| panic!("{ctx}: connection unusable after the error: {e}"));
        assert_eq!(id.timeline, TimelineId(1), "{ctx}");
        conn.close().await;
    }
}

#[tokio::test]
async fn start_ahead_of_flush_is_a_server_error() {
    for major in test_majors() {
        let ctx = format!("PostgreSQL {major}");
        let pg = cluster(major).setting("fsync", "off").start();
        let mut conn = support::replication(&pg).await;
        let id = conn.identify_system().await.unwrap();
        let ahead = Lsn(id.xlogpos.segment_start(SEG).0 + 4 * SEG);
        let mut stream = conn
            .start_replication(None, ahead, Some(id.timeline))
            .await
            .unwrap();
        let err = loop {
            match next_event(&mut stream, &ctx).await {
                Ok(Some(ReplicationEvent::Keepalive(k))) => {
                    answer(&mut stream, k.reply_requested).await
                }
                Ok(other) => panic!("{ctx}: expected an error, got {other:?}"),
                Err(e) => break e,
            }
        };
        let db = err
            .as_db_error()
            .unwrap_or_else(|| panic!("{ctx}: not a server error: {err:?}"));
        assert!(
            db.message.contains("ahead of the WAL flush position"),
            "{ctx}: {db:?}"
        );
        assert_eq!(db.severity, "ERROR", "{ctx}");
        assert_eq!(next_event(&mut stream, &ctx).await.unwrap(), None, "{ctx}");
        drop(stream);
        let again = conn
            .identify_system()
            .await
            .unwrap_or_else(|e| panic!("{ctx}: connection unusable after the error: {e}"));
        assert_eq!(again.system_id, id.system_id, "{ctx}");
        conn.close().await;
    }
}
