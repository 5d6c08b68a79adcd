//! The restore half of `just bench`: `pgstream restore` of the backup the base benchmark just
//! took, against unpacking pg_basebackup's client-lz4 tar output of the same cluster with the
//! lz4 and tar command-line tools, each made durable before its clock stops.
//!
//! What is compared, exactly:
//! - pgstream: `pgstream restore --repo R --to T` (every archive authenticated, decrypted,
//!   decompressed and unpacked, every file and directory fsynced, the backup's WAL written to
//!   `pg_wal/`, `backup_manifest` written; the process exits only when all of it is durable).
//! - tar: `lz4 -dc base.tar.lz4 | tar -xf - -C T`, the same for every tablespace's
//!   `<oid>.tar.lz4` into its own directory and for `pg_wal.tar(.lz4)` into `T/pg_wal`, then
//!   `sync -f T` (syncfs(2): flushes the whole filesystem T is on, so both are durable).
//!   `backup_manifest` is copied too. Nothing is verified on this side: lz4's frame checksum
//!   is the only check.
//!
//! Both read their input from the page cache (written moments before) and write to the same
//! local filesystem; runs alternate, each restore goes into a fresh directory, and an untimed
//! `sync -f` before each run starts both with nothing else dirty (as far as this process can
//! tell: other jobs on the machine may still write meanwhile).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{dir_size, measure, median, Sample};

/// One tool's restore runs of one dataset.
pub struct RestoreRow {
    pub dataset: String,
    pub tool: &'static str,
    pub samples: Vec<Sample>,
    /// Bytes in the restored directories (data directory and tablespaces).
    pub restored_bytes: u64,
}

impl RestoreRow {
    fn wall(&self) -> f64 {
        median(self.samples.iter().map(|s| s.wall).collect())
    }
    fn spread(&self) -> (f64, f64) {
        let w: Vec<f64> = self.samples.iter().map(|s| s.wall).collect();
        (
            w.iter().cloned().fold(f64::INFINITY, f64::min),
            w.iter().cloned().fold(0.0, f64::max),
        )
    }
    fn cpu(&self) -> f64 {
        median(self.samples.iter().map(|s| s.cpu).collect())
    }
    fn rss_mb(&self) -> f64 {
        self.samples.iter().map(|s| s.max_rss_kb).max().unwrap_or(0) as f64 / 1024.0
    }
    fn mib_per_s(&self) -> f64 {
        self.restored_bytes as f64 / 1048576.0 / self.wall()
    }
}

/// The shell script that unpacks pg_basebackup's tar output in `backup` into `target`
/// (tablespace `<oid>.tar*` into `target-ts-<oid>`) and syncs it.
fn tar_script(backup: &Path, target: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(backup)
        .expect("pg_basebackup's output directory")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let q = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', "'\\''"));
    let unpack = |name: &str, into: &Path| {
        let src = backup.join(name);
        if name.ends_with(".lz4") {
            format!(
                "mkdir -p {d} && /usr/bin/lz4 -dc {s} | tar -xf - -C {d}\n",
                d = q(into),
                s = q(&src)
            )
        } else {
            format!(
                "mkdir -p {d} && tar -xf {s} -C {d}\n",
                d = q(into),
                s = q(&src)
            )
        }
    };
    // base.tar first: it creates pg_wal/ and pg_tblspc/.
    let mut script = String::from("set -e -o pipefail\n");
    script += &unpack("base.tar.lz4", target);
    for name in &names {
        let stem = name.trim_end_matches(".lz4");
        if name == "base.tar.lz4" || name == "backup_manifest" {
            continue;
        } else if stem == "pg_wal.tar" {
            script += &unpack(name, &target.join("pg_wal"));
        } else if let Some(oid) = stem.strip_suffix(".tar") {
            let ts = PathBuf::from(format!("{}-ts-{oid}", target.display()));
            script += &unpack(name, &ts);
        } else {
            panic!("unexpected file {name} in pg_basebackup's output");
        }
    }
    script += &format!(
        "cp {} {}\nsync -f {}\n",
        q(&backup.join("backup_manifest")),
        q(target),
        q(target)
    );
    script
}

/// The last backup each tool took of one cluster.
pub struct Backups<'a> {
    /// pg_basebackup's output directory.
    pub pg_backup: &'a Path,
    /// pgstream's repository.
    pub repo: &'a Path,
    /// The cluster's tablespaces: OID and location.
    pub tablespaces: &'a [(u32, String)],
}

/// Restores both `backups` `runs` times each, alternating, into fresh directories under
/// `scratch`.
pub fn bench(
    dataset: &str,
    runs: usize,
    pgstream: &Path,
    passphrase: &str,
    backups: &Backups<'_>,
    scratch: &Path,
) -> (RestoreRow, RestoreRow) {
    let Backups {
        pg_backup,
        repo,
        tablespaces,
    } = *backups;
    assert!(
        Path::new("/usr/bin/lz4").exists(),
        "/usr/bin/lz4 is missing: apt-get install lz4"
    );
    let mut tar = Vec::new();
    let mut ours = Vec::new();
    let mut tar_bytes = 0;
    let mut our_bytes = 0;
    for run in 0..runs {
        let order = if run % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for is_tar in order {
            // Untimed: whatever else is dirty on the filesystem (earlier runs, other jobs) is
            // written now, not charged to the next restore's sync.
            let flushed = Command::new("sync").arg("-f").arg(scratch).status();
            assert!(flushed.is_ok_and(|s| s.success()), "sync -f failed");
            let target = scratch.join(format!(
                "restore{run}-{}",
                if is_tar { "tar" } else { "ps" }
            ));
            let sample = if is_tar {
                let mut cmd = Command::new("bash");
                cmd.arg("-c").arg(tar_script(pg_backup, &target));
                measure(cmd, &target, None)
            } else {
                let mut cmd = Command::new(pgstream);
                cmd.args(["restore", "--repo"])
                    .arg(repo)
                    .arg("--to")
                    .arg(&target)
                    .env("PGSTREAM_PASSPHRASE", passphrase)
                    .env("PGSTREAM_LOG", "warn");
                // Next to the target, as the tar side does: never the live server's location.
                for (oid, location) in tablespaces {
                    cmd.arg("--tablespace-map")
                        .arg(format!("{location}={}-ts-{oid}", target.display()));
                }
                measure(cmd, &target, None)
            };
            // The data directory plus any tablespace directories next to it.
            let mut bytes = sample.stored_bytes;
            let prefix = format!("{}-ts-", target.file_name().unwrap().to_string_lossy());
            for e in std::fs::read_dir(scratch).unwrap().flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    bytes += dir_size(&e.path());
                    std::fs::remove_dir_all(e.path()).ok();
                }
            }
            if is_tar {
                tar.push(sample);
                tar_bytes = bytes;
            } else {
                ours.push(sample);
                our_bytes = bytes;
            }
            std::fs::remove_dir_all(&target).ok();
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    (
        RestoreRow {
            dataset: dataset.to_string(),
            tool: "tar (lz4 -dc piped to tar -xf, then sync -f)",
            samples: tar,
            restored_bytes: tar_bytes,
        },
        RestoreRow {
            dataset: dataset.to_string(),
            tool: "pgstream restore (lz4, AES-256-GCM)",
            samples: ours,
            restored_bytes: our_bytes,
        },
    )
}

/// The generated part of the restore section.
pub fn report(major: u32, runs: usize, machine: &str, load: &str, rows: &[RestoreRow]) -> String {
    let mut s = String::new();
    writeln!(
        s,
        "## Restore: pgstream restore vs unpacking pg_basebackup's tar\n"
    )
    .unwrap();
    writeln!(
        s,
        "Measured by `just bench` (integration/src/bin/bench/restore.rs), on the backups the base benchmark above just took: PostgreSQL {major}, {runs} runs per tool, alternating, medians shown (spread: min–max wall; peak RSS: the maximum). Machine: {machine}; load average {load}. *pgstream*: `pgstream restore --repo R --to T` (authenticates and decrypts every archive, decompresses, unpacks, writes the backup's WAL into `pg_wal/` and `backup_manifest`, fsyncs every file and directory). *tar*: `lz4 -dc base.tar.lz4 | tar -xf - -C T`, the same for every tablespace's tar and for `pg_wal.tar.lz4` into `T/pg_wal`, `backup_manifest` copied, then `sync -f T` (syncfs of the filesystem); no authentication. An untimed `sync -f` precedes every run of either tool. tar reads pg_basebackup's output from the page cache; pgstream reads its repository from disk (its files are written with O_DIRECT, so they are not cached). Both write to the same local disk. MiB/s is restored bytes (files in the data directory and tablespaces) over wall time.\n"
    )
    .unwrap();
    writeln!(
        s,
        "| dataset | tool | restored (MiB) | wall (s) | wall min–max (s) | MiB/s | CPU (s) | peak RSS (MiB) |"
    )
    .unwrap();
    writeln!(s, "|---|---|---|---|---|---|---|---|").unwrap();
    for r in rows {
        let (lo, hi) = r.spread();
        writeln!(
            s,
            "| {} | {} | {:.0} | {:.2} | {lo:.2}–{hi:.2} | {:.0} | {:.2} | {:.1} |",
            r.dataset,
            r.tool,
            r.restored_bytes as f64 / 1048576.0,
            r.wall(),
            r.mib_per_s(),
            r.cpu(),
            r.rss_mb()
        )
        .unwrap();
    }
    writeln!(
        s,
        "\n| dataset | throughput ratio (pgstream / tar) | wall ratio (pgstream / tar) | CPU ratio |"
    )
    .unwrap();
    writeln!(s, "|---|---|---|---|").unwrap();
    for pair in rows.chunks(2) {
        let (tar, ps) = (&pair[0], &pair[1]);
        writeln!(
            s,
            "| {} | {:.2} | {:.2} | {:.2} |",
            tar.dataset,
            ps.mib_per_s() / tar.mib_per_s(),
            ps.wall() / tar.wall(),
            ps.cpu() / tar.cpu()
        )
        .unwrap();
    }
    s
}
