//! Network faults from a TCP proxy (support::proxy) during `base` and `receive-wal`
//! (docs/RELIABILITY.md): a stall (nothing forwarded, nothing closed), a reset (RST on both
//! sides) and a half-open connection (the server gone, the client told nothing: no FIN, no
//! RST). `base` fails with exit 3 and a clear message, within its --stall-timeout for the
//! silent faults, and leaves nothing complete; `receive-wal` reconnects and loses nothing:
//! afterwards every segment of the archive is the server's and the stream caught up. A closed
//! connection (FIN) and a refused one: base_faults.rs, receive_wal_reconnect.rs. The newest
//! major only (the faults are on pgstream's side), one cluster for everything, with a
//! wal_sender_timeout (8 s) longer than pgstream's --stall-timeout (4 s), as by default (60 s
//! each): after a stall the server still holds the old walsender, and its slot, when
//! receive-wal reconnects.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use backup_core::receive::start::ArchiveState;
use integration::{cluster, scratch_dir, Cluster};
use support::faults::{error_line, listed_ids, verify_clean, Faulted};
use support::proxy::Proxy;
use support::receiver::wait_for;
use support::wal::{archived, partial, slot_flush, Keyed};
use support::{newest_major, ok, s, wait_until};

const KEY: Keyed = Keyed("network faults passphrase");
const STALL_TIMEOUT: &str = "4";

/// A fault the proxy makes on the connections open at that moment.
type Fault = fn(&Proxy);

/// The faults, by name.
const FAULTS: &[(&str, Fault)] = &[
    ("stall", Proxy::stall),
    ("reset", Proxy::reset),
    ("half-open", Proxy::vanish),
];

fn via(proxy: &Proxy) -> String {
    format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=disable",
        proxy.port
    )
}

fn newest_cluster() -> Cluster {
    cluster(newest_major())
        .initdb_arg("--wal-segsize=1")
        .setting("wal_keep_size", "256MB")
        .setting("wal_sender_timeout", "8s")
        .start()
}

/// No slot of a base backup is left (the server drops it with the walsender).
fn assert_no_temporary_slot_soon(pg: &Cluster, ctx: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = pg.psql("SELECT count(*) FROM pg_replication_slots WHERE temporary");
        if n == "0" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{ctx}: {n} temporary slot(s) left"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn base_fails_with_exit_3_on_a_stalled_reset_or_half_open_connection() {
    let pg = newest_cluster();
    let scratch = scratch_dir();
    let repo = scratch.path().join("repo");
    KEY.init_repo(&repo);
    let direct = pg.conninfo("postgres");
    let mut complete = 0;
    for (name, fault) in FAULTS {
        let ctx = format!("PostgreSQL {} base, {name}", pg.major());
        let started = Instant::now();
        let proxy = Proxy::start(pg.port());
        let conninfo = via(&proxy);
        // Throttled, so it is still streaming when the fault comes.
        let args = [
            "base",
            "--repo",
            s(&repo),
            "--source",
            &conninfo,
            "--no-progress",
            "--max-rate",
            "32k",
            "--stall-timeout",
            STALL_TIMEOUT,
        ];
        let p = Faulted::spawn(&args, Some(KEY.0), "", &[]);
        wait_until(&format!("{ctx}: the files stream"), || {
            p.stderr().contains("checkpoint done, streaming")
        });
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            proxy.connections(),
            2,
            "{ctx}: both connections via the proxy"
        );
        let faulted = Instant::now();
        fault(&proxy);
        let run = p.wait(60);
        let took = faulted.elapsed();
        assert_eq!(run.code, 3, "{ctx}: {run:?}");
        let line = error_line(&run, &ctx);
        assert!(
            line.contains("connection to the server was lost"),
            "{ctx}: {line}"
        );
        if *name != "reset" {
            assert!(
                line.contains(&format!(
                    "nothing received from the server for {STALL_TIMEOUT} s"
                )),
                "{ctx}: {line}"
            );
        }
        assert!(
            took < Duration::from_secs(30),
            "{ctx}: noticed after {took:?}"
        );
        assert_eq!(listed_ids(&repo, KEY.0, &ctx).len(), complete, "{ctx}");
        assert_no_temporary_slot_soon(&pg, &ctx);
        // The next backup (the network healed) completes and removes what was left.
        ok(
            KEY.pgstream(&[
                "base",
                "--repo",
                s(&repo),
                "--source",
                &direct,
                "--no-progress",
            ]),
            &format!("{ctx}: the next base"),
        );
        let ids = listed_ids(&repo, KEY.0, &ctx);
        assert_eq!(ids.len(), complete + 1, "{ctx}: {ids:?}");
        complete = ids.len();
        assert_eq!(
            support::faults::backup_dirs(&repo),
            ids.iter().map(|id| (id.clone(), true)).collect::<Vec<_>>(),
            "{ctx}: a leftover is still there"
        );
        verify_clean(&repo, KEY.0, Some("latest"), &ctx);
        eprintln!(
            "{ctx}: failed {:.1} s after the fault, round {:.1} s",
            took.as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
    }
}

/// Every complete segment of the archive is the server's, partials a prefix of it, and the
/// complete ones follow each other without a gap; returns how many there are.
fn assert_archive_true(repo_dir: &Path, pg: &Cluster, ctx: &str) -> usize {
    let repo = KEY.open_repo(repo_dir);
    let state = ArchiveState::scan(repo.store().as_ref(), repo.config()).unwrap();
    let pg_wal = pg.data_dir().join("pg_wal");
    let mut segnos = Vec::new();
    for seg in &state.complete {
        let server = std::fs::read(pg_wal.join(seg.to_string())).unwrap();
        assert!(
            archived(&repo, seg).unwrap() == server,
            "{ctx}: archived {seg} differs from the server's"
        );
        segnos.push(seg.segno);
    }
    segnos.sort();
    for w in segnos.windows(2) {
        assert_eq!(w[0] + 1, w[1], "{ctx}: a gap after segment {}", w[0]);
    }
    for (seg, _) in &state.partials {
        let server = std::fs::read(pg_wal.join(seg.to_string())).unwrap();
        assert!(
            server.starts_with(&partial(&repo, seg).unwrap()),
            "{ctx}: the partial of {seg} is not a prefix of the server's"
        );
    }
    segnos.len()
}

/// Writes WAL, switches, and waits until the receiver reported all of it durable.
fn wal_and_catch_up(pg: &Cluster, slot: &str, log: impl Fn() -> String, what: &str) {
    pg.psql(
        "INSERT INTO t (note) SELECT md5(g::text) FROM generate_series(1, 3000) g;
         SELECT pg_switch_wal();",
    );
    let target = support::wal::lsn(&pg.psql("SELECT pg_current_wal_flush_lsn()"));
    wait_for(what, 90, || slot_flush(pg, slot) >= target, log);
}

#[test]
fn receive_wal_reconnects_after_a_stalled_reset_or_half_open_connection_and_loses_nothing() {
    let pg = newest_cluster();
    pg.psql("CREATE TABLE t (id serial, note text)");
    let scratch = scratch_dir();
    let repo = scratch.path().join("repo");
    KEY.init_repo(&repo);
    let proxy = Proxy::start(pg.port());
    let conninfo = via(&proxy);
    let slot = "net";
    let args = [
        "receive-wal",
        "--repo",
        s(&repo),
        "--source",
        &conninfo,
        "--slot",
        slot,
        "--create-slot",
        "--status-interval",
        "1",
        "--stall-timeout",
        STALL_TIMEOUT,
    ];
    let mut p = Faulted::spawn(&args, Some(KEY.0), "", &[]);
    let ctx = format!("PostgreSQL {} receive-wal", pg.major());
    wal_and_catch_up(&pg, slot, || p.stderr(), &format!("{ctx}: first catch-up"));
    for (name, fault) in FAULTS {
        let ctx = format!("{ctx}, {name}");
        let started = Instant::now();
        let before = proxy.connections();
        let reconnects = p.stderr().matches("reconnecting in").count();
        fault(&proxy);
        // WAL written during the fault arrives after the reconnect.
        pg.psql("INSERT INTO t (note) SELECT md5(g::text) FROM generate_series(1, 3000) g");
        wait_for(
            &format!("{ctx}: reconnected"),
            90,
            || proxy.connections() > before && p.stderr().contains("streaming from"),
            || p.stderr(),
        );
        wal_and_catch_up(&pg, slot, || p.stderr(), &format!("{ctx}: caught up"));
        assert!(p.is_running(), "{ctx}: {}", p.stderr());
        assert!(
            p.stderr().matches("reconnecting in").count() > reconnects,
            "{ctx}: no reconnect logged: {}",
            p.stderr()
        );
        if *name != "reset" {
            assert!(
                p.stderr().contains("nothing received from the server"),
                "{ctx}: {}",
                p.stderr()
            );
        }
        if *name == "stall" {
            // The server kept the stalled walsender, and the slot, until its
            // wal_sender_timeout (8 s, longer than our 4): the reconnect waited for it.
            assert!(
                p.stderr()
                    .contains("the walsender of our previous connection still holds the slot"),
                "{ctx}: {}",
                p.stderr()
            );
        }
        assert_archive_true(&repo, &pg, &ctx);
        eprintln!(
            "{ctx}: reconnected and caught up in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    p.signal("TERM");
    let run = p.wait(30);
    assert_eq!(run.code, 0, "{ctx}: {run:?}");
    let n = assert_archive_true(&repo, &pg, &ctx);
    assert!(n > FAULTS.len(), "{ctx}: {n} segments");
    verify_clean(&repo, KEY.0, None, &ctx);
}
