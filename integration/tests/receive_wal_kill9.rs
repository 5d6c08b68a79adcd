//! kill -9 of `receive-wal --synchronous` at random moments under a commit load
//! (docs/RELIABILITY.md): clients insert rows one commit at a time, each commit waiting for
//! receive-wal's flush (it is the server's synchronous standby); receive-wal is killed -9 and
//! started again, over and over, at random moments (while connecting, resuming its partial
//! segment, streaming, completing a segment). At the end the repository's backup plus every
//! byte of WAL it received is restored and every commit a client saw acknowledged must be
//! there. CI kills 5 times; `just soak` 100 (PGSTREAM_SOAK_KILLS), and writes the figures to
//! PGSTREAM_SOAK_REPORT when set. PGSTREAM_SOAK_SEED repeats a run's moments.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration::{cluster, scratch_dir, Cluster};
use support::receiver::{wait_for, LogFile, Receiver};
use support::wal::Keyed;
use support::{newest_major, s};

const KEY: Keyed = Keyed("kill -9 soak passphrase");
const APP: &str = "pgstream_kill9";
const LOADERS: usize = 3;

/// xorshift64*: the moments of the kills, repeatable from the seed.
struct Moments(u64);

impl Moments {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A delay in `[0, max_ms)` milliseconds.
    fn delay(&mut self, max_ms: u64) -> Duration {
        Duration::from_millis(self.next() % max_ms)
    }
}

/// Clients committing one row at a time; every id whose commit returned is kept.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<i64>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(pg: &Cluster) -> Load {
        let stop: Arc<AtomicBool> = Arc::default();
        let acked: Arc<Mutex<Vec<i64>>> = Arc::default();
        let conninfo = pg.conninfo("postgres");
        let threads = (0..LOADERS)
            .map(|_| {
                let (stop, acked, conninfo) =
                    (Arc::clone(&stop), Arc::clone(&acked), conninfo.clone());
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async {
                        let cfg = support::config(&conninfo);
                        let mut conn = pgwire_repl::Connection::connect(&cfg).await.unwrap();
                        while !stop.load(Ordering::SeqCst) {
                            let rs = conn
                                .simple_query("INSERT INTO acked DEFAULT VALUES RETURNING id")
                                .await
                                .expect("a commit failed");
                            let id = rs[0].rows[0][0].as_ref().expect("an id");
                            let id: i64 = std::str::from_utf8(id).unwrap().parse().unwrap();
                            // The commit returned: acknowledged, so it must survive.
                            acked.lock().unwrap().push(id);
                        }
                    });
                })
            })
            .collect();
        Load {
            stop,
            acked,
            threads,
        }
    }

    fn count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Stops the clients (each finishes its commit in flight) and returns every acknowledged id.
    fn finish(self) -> BTreeSet<i64> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("a client thread panicked");
        }
        let acked = self.acked.lock().unwrap();
        acked.iter().copied().collect()
    }
}

fn receiver(repo: &std::path::Path, pg: &Cluster, log: std::path::PathBuf) -> Receiver {
    Receiver::spawn(
        &[],
        repo,
        &pg.conninfo("postgres"),
        KEY.0,
        &[
            "--slot",
            "kill9",
            "--create-slot",
            "--synchronous",
            "--application-name",
            APP,
        ],
        log,
        LogFile::Append,
    )
}

#[test]
fn synchronous_receive_wal_killed_at_random_moments_keeps_every_acknowledged_commit() {
    let started = Instant::now();
    let kills: usize = std::env::var("PGSTREAM_SOAK_KILLS")
        .ok()
        .map(|v| v.parse().expect("PGSTREAM_SOAK_KILLS: a number"))
        .unwrap_or(5);
    let seed: u64 = std::env::var("PGSTREAM_SOAK_SEED")
        .ok()
        .map(|v| v.parse().expect("PGSTREAM_SOAK_SEED: a number"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    let mut moments = Moments(seed);
    let major = newest_major();
    let ctx = format!("PostgreSQL {major} seed {seed}");
    let pg = cluster(major)
        .initdb_arg("--wal-segsize=1")
        .setting("synchronous_standby_names", APP)
        .setting("synchronous_commit", "on")
        .start();
    let scratch = scratch_dir();
    let repo = scratch.path().join("repo");
    KEY.init_repo(&repo);
    // Before a synchronous standby exists: these must not wait for one.
    pg.psql(
        "SET synchronous_commit = local;
         CREATE TABLE acked (id bigserial PRIMARY KEY, t timestamptz DEFAULT now())",
    );
    let run = KEY.pgstream(&[
        "base",
        "--repo",
        s(&repo),
        "--source",
        &pg.conninfo("postgres"),
        "--no-progress",
    ]);
    assert_eq!(run.code, 0, "{ctx}: base: {run:?}");
    let log = scratch.path().join("receive-wal.log");
    let mut r = receiver(&repo, &pg, log.clone());
    wait_for(
        "receive-wal is the synchronous standby",
        60,
        || {
            pg.psql(&format!(
                "SELECT sync_state FROM pg_stat_replication WHERE application_name = '{APP}'"
            )) == "sync"
        },
        || r.log(),
    );
    let load = Load::start(&pg);
    wait_for("commits flow", 60, || load.count() > 10, || r.log());
    for kill in 1..=kills {
        // Every fifth round, let commits flow first, so the load never starves; otherwise a
        // random moment after the start (connecting, resuming, streaming).
        if kill % 5 == 0 {
            let n = load.count();
            wait_for(
                &format!("{ctx}: commits after kill {}", kill - 1),
                120,
                || load.count() > n,
                || r.log(),
            );
        }
        std::thread::sleep(moments.delay(1500));
        r.kill9();
        r = receiver(&repo, &pg, log.clone());
    }
    // The last receiver catches up with the load, then the clients stop.
    let n = load.count();
    wait_for(
        &format!("{ctx}: commits after the last kill"),
        120,
        || load.count() > n + 20,
        || r.log(),
    );
    let acked = load.finish();
    pg.stop_immediate();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(r.terminate(), 0, "{ctx}");
    let restored = support::wal::restore_with_received_wal(
        &KEY,
        major,
        &repo,
        &scratch.path().join("restored"),
        &ctx,
    );
    let rows: BTreeSet<i64> = restored
        .psql("SELECT id FROM acked")
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    let lost: Vec<&i64> = acked.difference(&rows).collect();
    let secs = started.elapsed().as_secs_f64();
    let report = format!(
        "receive-wal --synchronous killed -9 {kills} times at random moments (seed {seed}) under \
         {LOADERS} committing clients: {} commits acknowledged, {} rows restored, {} \
         acknowledged commits lost; PostgreSQL {major}, {secs:.0} s",
        acked.len(),
        rows.len(),
        lost.len()
    );
    eprintln!("{report}");
    if let Ok(path) = std::env::var("PGSTREAM_SOAK_REPORT") {
        std::fs::write(&path, format!("{report}\n")).unwrap();
    }
    assert!(
        lost.is_empty(),
        "{ctx}: acknowledged commits lost: {lost:?} (of {})",
        acked.len()
    );
    assert!(
        acked.len() > kills,
        "{ctx}: too few commits to mean anything"
    );
}
