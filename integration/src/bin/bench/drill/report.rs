//! The drill benchmark's section of docs/BENCHMARKS.md: the table of timings per way, and its
//! place between the `<!-- bench:drill -->` markers.

use std::fmt::Write as _;

use super::super::{machine, median};
use super::{Options, Prepared, Run, Way, CHUNK_TX, MIB};

/// Median and min–max of one measure over the runs, or `—` when the way has no such phase.
fn cell(runs: &[Run], f: impl Fn(&Run) -> Option<f64>) -> String {
    let v: Vec<f64> = runs.iter().filter_map(f).collect();
    if v.is_empty() {
        return "—".into();
    }
    let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = v.iter().cloned().fold(0.0, f64::max);
    format!("{:.2} ({lo:.2}–{hi:.2})", median(v))
}

pub fn report(o: &Options, p: &Prepared, results: &[Way], load: &str) -> String {
    let mut s = String::new();
    writeln!(s, "## Restore drill: time to recover to a point in time\n").unwrap();
    writeln!(
        s,
        "Measured by `just bench` (integration/src/bin/bench/drill.rs): PostgreSQL {}, pgbench scale {} ({:.0} MiB). After the backups, {} pgbench transactions (`-c 4 -j 2 -M prepared`, chunks of {} per client) wrote {:.0} MiB of WAL in {:.0} s; T was taken from the server's clock, one more chunk ({:.0} MiB of WAL) ran after T, then `pg_switch_wal()`. {} runs per way, rotating which goes first; medians, min–max in brackets. Machine: {}; load average before / after: {load}.\n",
        o.major,
        o.scale,
        p.db_bytes as f64 / MIB,
        p.transactions,
        CHUNK_TX,
        p.load_wal_bytes as f64 / MIB,
        p.load_seconds,
        p.after_target_wal_bytes as f64 / MIB,
        o.runs,
        machine()
    )
    .unwrap();
    writeln!(
        s,
        "- *pgstream drill*: `pgstream drill --target-time T --json` on the repository that `pgstream receive-wal` and `pgstream base` filled (lz4, AES-256-GCM); the phases are the report's own timings (docs/cli.md, drill): restore = choosing the backup to unpacked, fsynced and recovery settings written (the repository is opened before, WAL is fetched during replay); replay = server start to paused at T; total recovery = drill start to promoted and a new connection made. *command wall* is the whole process, checks (row counts, amcheck) and cleanup included.\n- *pgstream drill --copy-wal*: the same, but the restore phase also writes the WAL recovery needs into `pg_wal/` (decrypted, decompressed, fsynced), so replay runs no `wal-fetch` process.\n- *by hand*: `lz4 -dc | tar -xf` of pg_basebackup's base.tar.lz4 and `tar -xf` of pg_wal.tar (or `lz4 -dc | tar -xf` of pg_wal.tar.lz4), `recovery.signal`, `sync -f`, then start with `restore_command = 'cp <pg_receivewal dir>/%f %p'`, `recovery_target_time = T`, `recovery_target_action = promote` (the test harness's start: chown to the server user, settings, `pg_ctl start -w`), polling `SELECT pg_is_in_recovery()` every 50 ms with a new psql connection. Its server start is start to consistent; its replay and promotion are in its total, not measured apart. No checks.\n- *WAL replayed*: from the backup's start LSN to where replay stopped (pg_basebackup's backup starts a few MiB later than pgstream's, taken just before it).\n"
    )
    .unwrap();
    writeln!(
        s,
        "| way | restore / unpack (s) | server start (s) | WAL replay (s) | promotion (s) | total recovery (s) | checks (s) | command wall (s) | WAL replayed (MiB) |"
    )
    .unwrap();
    writeln!(s, "|---|---|---|---|---|---|---|---|---|").unwrap();
    for r in results {
        writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} |",
            r.way,
            cell(&r.runs, |x| Some(x.restore)),
            cell(&r.runs, |x| x.server_start),
            cell(&r.runs, |x| x.replay),
            cell(&r.runs, |x| x.promote),
            cell(&r.runs, |x| Some(x.total_recovery)),
            cell(&r.runs, |x| x.checks),
            cell(&r.runs, |x| Some(x.wall)),
            median(r.runs.iter().map(|x| x.replayed_bytes as f64).collect()) / MIB,
        )
        .unwrap();
    }
    for r in results.iter().filter(|r| !r.not_passed.is_empty()) {
        writeln!(
            s,
            "\n{}: checks not passed: {}.",
            r.way,
            r.not_passed.join(", ")
        )
        .unwrap();
    }
    let restored: Vec<f64> = results
        .iter()
        .flat_map(|r| r.runs.iter().filter_map(|x| x.restored_bytes))
        .map(|b| b as f64)
        .collect();
    if let (Some(ours), false) = (results.first(), restored.is_empty()) {
        let mib = median(restored) / MIB;
        let restore = median(ours.runs.iter().map(|x| x.restore).collect());
        writeln!(
            s,
            "\nThe unpacked data directory (by hand, before the start; files counted): {mib:.0} MiB. The drill's restore phase wrote about as much (its WAL comes later, through restore_command): {:.0} MiB/s at its median {restore:.2} s.",
            mib / restore
        )
        .unwrap();
    }
    if let [drills @ .., by_hand] = results {
        let median_total = |r: &Way| median(r.runs.iter().map(|x| x.total_recovery).collect());
        for d in drills {
            writeln!(
                s,
                "\nTotal recovery ratio ({} / by hand): {:.2}.",
                d.way,
                median_total(d) / median_total(by_hand)
            )
            .unwrap();
        }
    }
    s
}
