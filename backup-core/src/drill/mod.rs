//! Restore drills: restore a backup into a private scratch directory, start PostgreSQL on it,
//! recover to the target, promote, run checks, stop, clean up, and report how long each phase
//! took and what every check found.
//!
//! - [`settings`]: the `-c` overrides that keep the copy inside its scratch directory.
//! - [`recovery`]: waiting for the target and promoting.
//! - [`checks`]: row counts, the SQL file, amcheck.
//! - [`control`]: the settings recovery requires, from the restored pg_control.
//! - [`report`]: the report, as JSON or markdown.
//!
//! [`run`] refuses a plan before touching anything when the backup, the binaries or the OS user
//! cannot be found ([`DrillError`]); from the moment its scratch directory exists, every outcome
//! (a failed restore, a server that exits, a failed check, a signal) is a [`DrillReport`].

pub mod checks;
pub mod control;
pub mod recovery;
pub mod report;
pub mod settings;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::catalog::BackupRecord;
use crate::fsutil;
use crate::localpg::{LocalPgError, LocalServer, PgBin, RunAs, StartOptions};
use crate::repo::Repository;
use crate::restore::pitr::{
    self, PitrError, PitrPlan, Recovery, RecoveryTarget, TargetAction, TargetTimeline,
};
use crate::Secret;
use checks::CheckOptions;
use report::{BackupUsed, CheckResult, CheckStatus, DrillReport, Reached, Timings};

/// The passphrase file restore_command's wal-fetch reads, in the scratch directory.
const PASSPHRASE_FILE: &str = "wal-fetch.passphrase";
/// wal-fetch's prefetch spool, in the scratch directory (removed once recovery is over).
const SPOOL_DIR: &str = "wal-spool";
/// Lines of server log quoted in a failed drill's report.
const LOG_TAIL_LINES: usize = 40;

/// What to drill.
#[derive(Debug)]
pub struct DrillPlan {
    /// A backup id, `latest`, or `None`: the newest backup that suits the target.
    pub backup: Option<String>,
    pub target: RecoveryTarget,
    pub timeline: TargetTimeline,
    pub inclusive: bool,
    /// Copy the WAL into `pg_wal/` instead of fetching it through restore_command.
    pub copy_wal: bool,
    /// The pgstream executable restore_command runs (absolute).
    pub program: PathBuf,
    /// The repository passphrase (encrypted repositories): written to a 0600 file in the
    /// scratch directory for wal-fetch, and removed at the end.
    pub passphrase: Option<Secret>,
    /// The directory the private scratch directory is made in.
    pub scratch_parent: PathBuf,
    /// Keep the scratch directory (the passphrase file is removed all the same).
    pub keep: bool,
    /// `--pg-bin`: the server binaries' directory, else found for the backup's major.
    pub pg_bin: Option<PathBuf>,
    /// `--os-user`.
    pub os_user: Option<String>,
    /// The role the checks connect as, and the database the SQL file runs in.
    pub db_user: String,
    pub check_db: String,
    /// The SQL file's name and text.
    pub check_sql: Option<(String, String)>,
    pub amcheck: bool,
    /// Extra `-c` settings for the server (`--server-setting`).
    pub server_settings: Vec<(String, String)>,
    /// Longest wait from starting the server until it is promoted.
    pub timeout: Duration,
}

/// Why a drill was refused before it started (nothing is left behind).
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error(transparent)]
    Pitr(#[from] PitrError),
    #[error(transparent)]
    LocalPg(#[from] LocalPgError),
    /// A usage problem; the message says what to change.
    #[error("{0}")]
    Invalid(String),
}

/// Runs the drill. Blocking parts (the restore) run on tokio's blocking pool.
pub async fn run(
    repo: Repository,
    plan: DrillPlan,
    cancel: CancellationToken,
) -> Result<DrillReport, DrillError> {
    let started = Instant::now();
    let started_at = crate::catalog::rfc3339(SystemTime::now());
    let mut pitr_plan = PitrPlan {
        backup: plan.backup.clone(),
        target: PathBuf::new(),
        tablespace_map: BTreeMap::new(),
        force: false,
        recovery: Some(Recovery {
            target: plan.target.clone(),
            // Pause at an explicit target, so the drill sees where replay stopped before it
            // promotes; the latest target ends recovery and promotes on its own.
            action: (plan.target != RecoveryTarget::Latest).then_some(TargetAction::Pause),
            timeline: plan.timeline,
            inclusive: plan.inclusive,
            copy_wal: plan.copy_wal,
            passphrase_file: None,
            program: plan.program.clone(),
            spool_dir: None,
        }),
    };
    let record = pitr::chosen_backup(&repo, &pitr_plan)?;
    let bin = PgBin::find(record.server_major, plan.pg_bin.as_deref())?;
    bin.require(&["postgres", "pg_ctl"])?;
    let run_as = RunAs::resolve(plan.os_user.as_deref())?;
    if repo.codec().encryption.is_some() && !plan.copy_wal && plan.passphrase.is_none() {
        return Err(DrillError::Invalid(
            "the repository is encrypted: the drill needs its passphrase for wal-fetch".into(),
        ));
    }
    if !plan.copy_wal {
        check_wal_fetch_runs(&plan.program, repo.location(), &run_as)?;
    }
    let scratch = make_scratch(&plan.scratch_parent, &record.id, &run_as)?;

    let mut report = DrillReport {
        result: "FAIL",
        passed: false,
        started_at,
        repository: repo.location().to_string(),
        backup: Some(BackupUsed {
            id: record.id.clone(),
            server_version: record.server_version.clone(),
            start_lsn: record.start_lsn.to_string(),
            end_lsn: record.end_lsn.to_string(),
            end_time: record.end_time.clone(),
            timeline: record.end_timeline,
        }),
        target: plan.target.to_string(),
        target_timeline: match plan.timeline {
            TargetTimeline::Latest => "latest".into(),
            TargetTimeline::Current => "current".into(),
            TargetTimeline::Number(n) => n.0.to_string(),
        },
        reached: Reached::default(),
        wal_source: if plan.copy_wal {
            "copied into pg_wal/ by the restore (--copy-wal)".into()
        } else {
            "restore_command = pgstream wal-fetch".into()
        },
        server: Some(format!("{} ({})", bin.version, bin.dir.display())),
        os_user: run_as.name(),
        timings: Timings::default(),
        checks: Vec::new(),
        row_counts: Vec::new(),
        failure: None,
        server_log_tail: None,
        scratch_dir: scratch.display().to_string(),
        scratch_kept: plan.keep,
        interrupted: false,
    };

    pitr_plan.backup = Some(record.id.clone());
    pitr_plan.target = scratch.join("data");
    pitr_plan.tablespace_map = tablespace_map(&record, &scratch);
    let mut drill = Drill {
        plan: &plan,
        bin,
        run_as,
        scratch: scratch.clone(),
        started,
        server: None,
        refused: None,
    };
    let outcome = drill.drive(repo, pitr_plan, &mut report, &cancel).await;
    if let Err(e) = outcome {
        if matches!(e, LocalPgError::Cancelled) {
            report.interrupted = true;
            report.failure = Some("interrupted by SIGINT or SIGTERM".into());
        } else {
            report.failure = Some(e.to_string());
        }
        if let Some(server) = &drill.server {
            report.server_log_tail = Some(server.log_tail(LOG_TAIL_LINES));
        }
    }
    if let Some(mut server) = drill.server.take() {
        let stopped = Instant::now();
        let outcome = server.stop().map(|()| "stopped cleanly".to_string());
        report.checks.push(CheckResult {
            name: "shutdown".into(),
            database: None,
            status: if outcome.is_ok() {
                CheckStatus::Pass
            } else {
                CheckStatus::Fail
            },
            detail: outcome.unwrap_or_else(|e| e.to_string()),
            seconds: stopped.elapsed().as_secs_f64(),
        });
    }
    if let Err(e) = cleanup(&scratch, plan.keep) {
        report.failure.get_or_insert(e);
        report.scratch_kept = true;
    }
    if let Some(e) = drill.refused.take() {
        return Err(e.into());
    }
    report.timings.total_seconds = started.elapsed().as_secs_f64();
    report.finish();
    Ok(report)
}

/// The state of a drill in progress.
struct Drill<'a> {
    plan: &'a DrillPlan,
    bin: PgBin,
    run_as: RunAs,
    scratch: PathBuf,
    started: Instant,
    server: Option<LocalServer>,
    /// The restore refused the target or options (outside the window, no such timeline): a
    /// usage error, returned as such once the scratch directory is gone.
    refused: Option<PitrError>,
}

impl Drill<'_> {
    async fn drive(
        &mut self,
        repo: Repository,
        mut pitr_plan: PitrPlan,
        report: &mut DrillReport,
        cancel: &CancellationToken,
    ) -> Result<(), LocalPgError> {
        let plan = self.plan;
        // Restore.
        if let Some(secret) = &plan.passphrase {
            let file = self.scratch.join(PASSPHRASE_FILE);
            fsutil::write_new_file_durably(&file, secret.expose(), 0o600)?;
            self.run_as.chown(&file)?;
            if let Some(r) = pitr_plan.recovery.as_mut() {
                r.passphrase_file = Some(file);
            }
        }
        if let Some(r) = pitr_plan.recovery.as_mut() {
            r.spool_dir = Some(self.scratch.join(SPOOL_DIR));
        }
        let restore_started = Instant::now();
        let restored = tokio::task::spawn_blocking(move || pitr::run(&repo, &pitr_plan))
            .await
            .map_err(|e| LocalPgError::Failed {
                program: "the restore task".into(),
                status: "panicked".into(),
                output: e.to_string(),
            })?;
        report.timings.restore_seconds = Some(restore_started.elapsed().as_secs_f64());
        match restored {
            Ok(_) => {}
            Err(
                e @ (PitrError::Invalid(_)
                | PitrError::OutsideWindow { .. }
                | PitrError::NoBackup { .. }
                | PitrError::NoHistory { .. }),
            ) => {
                let message = e.to_string();
                self.refused = Some(e);
                return Err(LocalPgError::User(message));
            }
            Err(e) => {
                return Err(LocalPgError::Failed {
                    program: "the restore".into(),
                    status: "failed".into(),
                    output: e.to_string(),
                })
            }
        }
        if cancel.is_cancelled() {
            return Err(LocalPgError::Cancelled);
        }
        // Hand the copy to the server's user, with the drill's own access rules.
        let hba = self.scratch.join("pg_hba.drill.conf");
        fsutil::write_new_file_durably(&hba, settings::DRILL_HBA.as_bytes(), 0o600)?;
        fsutil::write_new_file_durably(&self.scratch.join("pg_ident.drill.conf"), b"", 0o600)?;
        ensure_postgresql_conf(&self.scratch.join("data"))?;
        self.run_as.chown_tree(&self.scratch)?;

        // Start, replay, promote.
        let data = self.scratch.join("data");
        let mut opts = StartOptions::new(
            self.bin.clone(),
            self.run_as.clone(),
            data.clone(),
            &self.scratch,
        );
        // At least the source's values of the settings hot standby checks, which the copy's
        // configuration may lack; --server-setting still wins.
        let mut server_settings = control::read(&self.bin, &self.run_as, &data)
            .unwrap_or_else(|why| {
                tracing::warn!(%why, "could not read the restored pg_control: the copy's own max_connections, max_worker_processes, ... apply");
                Vec::new()
            });
        server_settings.extend(plan.server_settings.iter().cloned());
        opts.settings = settings::overrides(self.bin.major, &data, &hba, &server_settings);
        let server_started = Instant::now();
        let deadline = server_started + plan.timeout;
        let server = self.server.insert(LocalServer::start(opts)?);
        let mut conn = server
            .wait_ready(&plan.db_user, &plan.check_db, plan.timeout, Some(cancel))
            .await?;
        report.timings.server_start_seconds = Some(server_started.elapsed().as_secs_f64());
        let explicit = plan.target != RecoveryTarget::Latest;
        let recovered = recovery::recover(
            server,
            &mut conn,
            self.bin.major,
            explicit,
            deadline,
            plan.timeout,
            cancel,
        )
        .await?;
        conn.close().await;
        // Recovery is over, and with it restore_command: the passphrase goes before anything
        // runs on the promoted copy as a superuser (the checks, the SQL file, and whatever the
        // backed-up database itself runs, such as login event triggers).
        remove_passphrase_file(&self.scratch)?;
        fsutil::remove_dir_all_durably(&self.scratch.join(SPOOL_DIR))?;
        report.reached = recovered.reached;
        report.timings.wal_replay_seconds =
            Some((recovered.target_at - server_started).as_secs_f64());
        report.timings.promote_seconds =
            Some((recovered.promoted_at - recovered.target_at).as_secs_f64());

        // A new connection to the promoted server: the end of the recovery time.
        let connect_started = Instant::now();
        let mut conn = server
            .connect(&plan.db_user, &plan.check_db)
            .await
            .map_err(|source| LocalPgError::Query {
                sql: "connecting to the promoted server".into(),
                source,
            })?;
        crate::localpg::sql::query_value(&mut conn, "SELECT 1").await?;
        report.timings.total_recovery_seconds = Some(self.started.elapsed().as_secs_f64());
        report.checks.push(CheckResult {
            name: "connect".into(),
            database: Some(plan.check_db.clone()),
            status: CheckStatus::Pass,
            detail: format!("connected as {} after promotion", plan.db_user),
            seconds: connect_started.elapsed().as_secs_f64(),
        });
        report.reached.timeline = recovery::current_timeline(&mut conn).await?;
        conn.close().await;

        // Checks.
        let checks_started = Instant::now();
        let (results, counts) = checks::run_checks(
            server,
            &CheckOptions {
                db_user: plan.db_user.clone(),
                check_db: plan.check_db.clone(),
                check_sql: plan.check_sql.clone(),
                amcheck: plan.amcheck,
                major: self.bin.major,
            },
            cancel,
        )
        .await?;
        report.checks.extend(results);
        report.row_counts = counts;
        report.timings.checks_seconds = Some(checks_started.elapsed().as_secs_f64());
        if cancel.is_cancelled() {
            return Err(LocalPgError::Cancelled);
        }
        Ok(())
    }
}

/// restore_command runs `program wal-fetch --repo REPO` as the server's user: refuse the drill
/// at once, rather than after the unpack with a recovery that finds no WAL, when that user
/// cannot run the program or read the repository (`pgstream list` needs no passphrase).
fn check_wal_fetch_runs(
    program: &Path,
    repo: &crate::store::RepoLocation,
    run_as: &RunAs,
) -> Result<(), DrillError> {
    if matches!(run_as, RunAs::Current) {
        return Ok(());
    }
    let location = repo.absolute();
    let repo = location.to_string();
    let mut cmd = std::process::Command::new(program);
    // As restore_command will: with the S3 settings it names, and no secret of ours.
    let s3_env = crate::store::s3::settings::command_env_for(&location)
        .map_err(|e| DrillError::Invalid(format!("restore_command for {repo}: {e}")))?;
    for k in crate::store::s3::settings::SECRET_VARS {
        cmd.env_remove(k);
    }
    cmd.envs(s3_env);
    cmd.args(["list", "--json", "--repo"])
        .arg(&repo)
        .current_dir("/")
        .env_remove(crate::PASSPHRASE_ENV)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    run_as.apply(&mut cmd);
    let why = match cmd.output() {
        Ok(out) if out.status.success() => return Ok(()),
        Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
        Err(e) => e.to_string(),
    };
    Err(DrillError::Invalid(format!(
        "the server's user {} cannot run `{} list --repo {}` ({why}); restore_command runs \
         pgstream wal-fetch as that user: let it run this pgstream and read the repository, or \
         use --copy-wal",
        run_as.name(),
        program.display(),
        repo
    )))
}

/// Every tablespace of the backup, mapped to `scratch/tablespaces/<oid>`: a drill never writes
/// to the original locations.
fn tablespace_map(record: &BackupRecord, scratch: &Path) -> BTreeMap<PathBuf, PathBuf> {
    record
        .archives
        .iter()
        .filter_map(|a| {
            let oid = a.tablespace_oid?;
            let location = a.tablespace_location.as_ref()?;
            Some((
                PathBuf::from(location),
                scratch.join("tablespaces").join(oid.to_string()),
            ))
        })
        .collect()
}

/// Creates the private scratch directory `<parent>/pgstream-drill-<backup>-<pid>` (0700, owned
/// by the server's user, which must be able to enter it).
fn make_scratch(parent: &Path, backup: &str, run_as: &RunAs) -> Result<PathBuf, DrillError> {
    if !parent.is_dir() {
        return Err(DrillError::Invalid(format!(
            "--scratch {}: not a directory (the drill makes its own directory inside it)",
            parent.display()
        )));
    }
    let parent = std::fs::canonicalize(parent).map_err(|e| LocalPgError::Io {
        op: "resolving",
        path: parent.to_path_buf(),
        source: e,
    })?;
    let dir = parent.join(format!("pgstream-drill-{backup}-{}", std::process::id()));
    fsutil::create_dir_durably(&dir).map_err(LocalPgError::from)?;
    run_as.chown(&dir)?;
    Ok(dir)
}

/// Writes an empty `postgresql.conf` into the restored `data` when the backup had none: a
/// cluster configured outside its data directory (Debian's /etc/postgresql/...) is backed up
/// without one, and the server does not start without it. The drill's `-c` settings and the
/// server's defaults then apply.
fn ensure_postgresql_conf(data: &Path) -> Result<(), LocalPgError> {
    let conf = data.join("postgresql.conf");
    if std::fs::symlink_metadata(&conf).is_err() {
        fsutil::write_new_file_durably(
            &conf,
            b"# Written by pgstream drill: the backup had no postgresql.conf (the cluster was \
              configured outside its data directory).\n",
            0o600,
        )?;
    }
    Ok(())
}

/// Removes the passphrase file, if there is one.
fn remove_passphrase_file(scratch: &Path) -> Result<(), fsutil::FsError> {
    let pass = scratch.join(PASSPHRASE_FILE);
    if std::fs::symlink_metadata(&pass).is_ok() {
        fsutil::remove_durably(&pass)?;
    }
    Ok(())
}

/// Removes the passphrase file always, and the scratch directory unless `keep`.
fn cleanup(scratch: &Path, keep: bool) -> Result<(), String> {
    remove_passphrase_file(scratch).map_err(|e| format!("removing the passphrase file: {e}"))?;
    fsutil::remove_dir_all_durably(&scratch.join(SPOOL_DIR))
        .map_err(|e| format!("removing wal-fetch's spool: {e}"))?;
    if !keep {
        fsutil::remove_dir_all_durably(scratch)
            .map_err(|e| format!("removing the scratch directory: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_without_postgresql_conf_gets_an_empty_one_and_an_existing_one_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("postgresql.conf");
        ensure_postgresql_conf(dir.path()).unwrap();
        let written = std::fs::read_to_string(&conf).unwrap();
        assert!(
            written.starts_with("# Written by pgstream drill"),
            "{written}"
        );
        assert!(written.lines().all(|l| l.starts_with('#')), "{written}");
        std::fs::write(&conf, "shared_buffers = 64MB\n").unwrap();
        ensure_postgresql_conf(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(&conf).unwrap(),
            "shared_buffers = 64MB\n"
        );
    }
}
