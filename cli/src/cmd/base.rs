//! `pgstream base`.

use std::sync::Arc;

use anyhow::Context as _;
use backup_core::basebackup::{
    self, BaseBackupPlan, IncrementalError, IncrementalPlan, Parent, Progress as _,
};
use backup_core::catalog::BackupRecord;
use pgwire_repl::basebackup::options::{Checkpoint, CompressionMethod, ServerCompression};
use pgwire_repl::Config;

use crate::args::{BaseArgs, CheckpointArg};
use crate::exit::{classified, Failure};
use crate::progress::Reporter;

pub async fn run(args: BaseArgs) -> anyhow::Result<()> {
    let plan = plan(&args)?;
    let cancel = crate::signals::install().context("installing signal handlers")?;
    let reporter = Arc::new(Reporter::new(!args.no_progress, "base backup"));
    let mut result = take(&args, plan.clone(), cancel.clone(), reporter.clone()).await;
    let policy = plan
        .incremental
        .as_ref()
        .is_some_and(|i| i.full_if_older_than.is_some());
    if policy && summaries_missing(&result) {
        // Only the server knows its summaries no longer reach the parent; a full backup is
        // what the policy answers that with.
        if let Err(e) = &result {
            tracing::warn!("{}; taking a full backup instead", crate::exit::message(e));
        }
        let full = BaseBackupPlan {
            incremental: None,
            ..plan
        };
        result = take(&args, full, cancel, reporter.clone()).await;
    }
    reporter.done();
    let record = result?;
    tracing::info!(
        backup_id = %record.id,
        start_lsn = %record.start_lsn,
        end_lsn = %record.end_lsn,
        timeline = record.end_timeline,
        "backup {} stored and verified",
        record.id
    );
    if args.json {
        println!("{}", serde_json::to_string_pretty(&record)?);
    } else {
        let kind = match &record.incremental {
            Some(i) => format!(
                "incremental backup {} (of {}, chain of {} from full backup {})",
                record.id, i.parent, i.depth, i.full
            ),
            None => format!("backup {}", record.id),
        };
        println!(
            "{kind} complete: {} of data in {} archive(s), stored as {} ({} {}), {} files verified against the server's manifest, WAL {}..{} on timeline {}, {:.1} s",
            human_bytes(record.raw_bytes),
            record.archives.len(),
            human_bytes(record.stored_bytes),
            record.compression,
            record.encryption,
            record.files_verified,
            record.start_lsn,
            record.end_lsn,
            record.end_timeline,
            record.duration_seconds
        );
    }
    Ok(())
}

fn summaries_missing(result: &anyhow::Result<BackupRecord>) -> bool {
    let Err(e) = result else { return false };
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<basebackup::BaseBackupError>(),
            Some(basebackup::BaseBackupError::Incremental(
                IncrementalError::SummariesMissing { .. }
            ))
        )
    })
}

/// The plan `args` ask for, checked before anything connects.
fn plan(args: &BaseArgs) -> anyhow::Result<BaseBackupPlan> {
    let source = source_config(&args.source)?;
    let incremental = if let Some(d) = &args.full_every {
        let every = super::parse_duration(d)
            .map_err(|e| classified(Failure::Usage, anyhow::anyhow!("--full-every: {e}")))?;
        Some(IncrementalPlan {
            parent: Parent::Latest,
            full_if_older_than: Some(every),
        })
    } else if args.incremental {
        Some(IncrementalPlan {
            parent: match args.from.as_deref() {
                None | Some("latest") => Parent::Latest,
                Some(id) => Parent::Id(id.to_string()),
            },
            full_if_older_than: None,
        })
    } else {
        None
    };
    Ok(BaseBackupPlan {
        source,
        label: args.label.clone(),
        checkpoint: match args.checkpoint {
            CheckpointArg::Fast => Checkpoint::Fast,
            CheckpointArg::Spread => Checkpoint::Spread,
        },
        max_rate_kb: args
            .max_rate
            .as_deref()
            .map(parse_rate)
            .transpose()
            .map_err(|e| classified(Failure::Usage, anyhow::anyhow!("--max-rate: {e}")))?,
        server_compression: args
            .server_compression
            .as_deref()
            .map(parse_server_compression)
            .transpose()
            .map_err(|e| {
                classified(Failure::Usage, anyhow::anyhow!("--server-compression: {e}"))
            })?,
        verify_checksums: !args.no_verify_checksums,
        incremental,
        stall_timeout: (args.stall_timeout > 0)
            .then(|| std::time::Duration::from_secs(args.stall_timeout)),
    })
}

/// One backup as `plan` says; the reporter is left for the caller to finish.
async fn take(
    args: &BaseArgs,
    plan: BaseBackupPlan,
    cancel: tokio_util::sync::CancellationToken,
    reporter: Arc<Reporter>,
) -> anyhow::Result<BackupRecord> {
    // Unlocking the repository (scrypt, ~0.1 s of CPU) overlaps with connecting, reserving
    // WAL and the server's checkpoint; a repository problem is still the one reported when
    // both fail.
    let repo_args = args.repo.clone();
    let mut opening = tokio::task::spawn_blocking(move || super::open_repo(&repo_args));
    let connecting = {
        let (plan, cancel) = (plan.clone(), cancel.clone());
        async move {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => Err(basebackup::BaseBackupError::Cancelled),
                c = basebackup::connect(&plan) => c,
            }
        }
    };
    tokio::pin!(connecting);
    reporter.phase(basebackup::Phase::Connecting);
    let mut opened = None;
    let connected = tokio::select! {
        repo = &mut opening => {
            opened = Some(repo.context("opening the repository")??);
            connecting.await
        }
        connected = &mut connecting => connected,
    };
    let connected = match connected {
        Ok(connected) => connected,
        Err(e) => {
            if opened.is_none() {
                opening.await.context("opening the repository")??;
            }
            reporter.done();
            let role = plan.source.effective_user();
            return Err(crate::exit::replication_role_hint(
                anyhow::Error::new(e).context("base backup failed"),
                &role,
            ));
        }
    };
    // BASE_BACKUP goes out before the repository is open; when opening then fails, the
    // backup stops and this is the error reported.
    let (open_error_tx, mut open_error) = tokio::sync::oneshot::channel::<anyhow::Error>();
    let repo: basebackup::OpeningRepository = match opened {
        Some(repo) => Box::pin(std::future::ready(Some(repo))),
        None => Box::pin(async move {
            let e = match opening.await.context("opening the repository") {
                Ok(Ok(repo)) => return Some(repo),
                Ok(Err(e)) | Err(e) => e,
            };
            let _ = open_error_tx.send(e);
            None
        }),
    };
    let dir = args.repo.repo.clone();
    let result = basebackup::run_opening(dir, repo, plan, connected, cancel, reporter).await;
    if let Err(basebackup::BaseBackupError::RepositoryNotOpened) = result {
        if let Ok(e) = open_error.try_recv() {
            return Err(e);
        }
    }
    result.context("base backup failed")
}

/// Parses `--source`, refusing a password on the command line (other users can read argv).
pub fn source_config(source: &str) -> anyhow::Result<Config> {
    let bare = Config::parse(source)
        .map_err(|e| classified(Failure::Usage, anyhow::anyhow!("--source: {e}")))?;
    if bare.password.is_some() {
        return Err(classified(
            Failure::Usage,
            anyhow::anyhow!(
                "--source contains a password, and command lines are visible to other users; \
                 put it in PGPASSWORD or a .pgpass file (or passfile=) instead"
            ),
        ));
    }
    Config::parse_with_env(source, &env_with_connect_timeout)
        .map_err(|e| classified(Failure::Usage, anyhow::anyhow!("--source: {e}")))
}

/// Seconds allowed for connecting (TCP, TLS and authentication, per host) when neither the
/// conninfo nor PGCONNECT_TIMEOUT sets connect_timeout. libpq waits forever by default; a
/// backup run from cron must not hang on a host that accepts the connection but never answers.
/// `connect_timeout=0` still means no limit.
pub const DEFAULT_CONNECT_TIMEOUT_SECONDS: u64 = 30;

/// The process environment, with PGCONNECT_TIMEOUT defaulting to
/// [`DEFAULT_CONNECT_TIMEOUT_SECONDS`] (the conninfo's own setting still wins).
fn env_with_connect_timeout(name: &str) -> Option<String> {
    let value = std::env::var(name).ok();
    if name == "PGCONNECT_TIMEOUT" && value.as_deref().is_none_or(str::is_empty) {
        return Some(DEFAULT_CONNECT_TIMEOUT_SECONDS.to_string());
    }
    value
}

/// `500` (kB/s), `500k`, `20M`: the server's MAX_RATE in kB/s.
pub(crate) fn parse_rate(s: &str) -> Result<u32, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1),
        Some('M' | 'm') => (&s[..s.len() - 1], 1024),
        _ => (s, 1),
    };
    let n: u32 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a rate such as 500k or 20M"))?;
    n.checked_mul(mult)
        .filter(|kb| (32..=1_048_576).contains(kb))
        .ok_or_else(|| format!("{s:?} is outside 32 kB/s .. 1024 MB/s"))
}

pub(crate) fn parse_server_compression(s: &str) -> Result<ServerCompression, String> {
    let (method, detail) = match s.split_once(':') {
        Some((m, d)) => (m, Some(d.to_string())),
        None => (s, None),
    };
    let method = match method {
        "lz4" => CompressionMethod::Lz4,
        "zstd" => CompressionMethod::Zstd,
        "gzip" => CompressionMethod::Gzip,
        other => return Err(format!("{other:?} is not lz4, zstd or gzip")),
    };
    Ok(ServerCompression { method, detail })
}

/// `1.5 GiB`-style sizes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("500"), Ok(500));
        assert_eq!(parse_rate("500k"), Ok(500));
        assert_eq!(parse_rate("20M"), Ok(20 * 1024));
        assert!(parse_rate("10").is_err());
        assert!(parse_rate("2000M").is_err());
        assert!(parse_rate("fast").is_err());
    }

    #[test]
    fn password_in_source_is_refused() {
        let err = source_config("host=db password=secret").unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("PGPASSWORD") && !text.contains("secret"),
            "{text}"
        );
        assert!(source_config("postgresql://u:pw@db/").is_err());
    }

    #[test]
    fn connect_timeout_default_applies_unless_the_conninfo_sets_one() {
        let c = source_config("host=db1 user=backup").unwrap();
        // The test process has no PGCONNECT_TIMEOUT of its own (nextest runs one per process;
        // the CI environment does not set it).
        if std::env::var_os("PGCONNECT_TIMEOUT").is_none() {
            assert_eq!(
                c.connect_timeout,
                Some(std::time::Duration::from_secs(
                    DEFAULT_CONNECT_TIMEOUT_SECONDS
                ))
            );
        }
        let c = source_config("host=db1 user=backup connect_timeout=5").unwrap();
        assert_eq!(c.connect_timeout, Some(std::time::Duration::from_secs(5)));
        let c = source_config("host=db1 user=backup connect_timeout=0").unwrap();
        assert_eq!(c.connect_timeout, None);
    }

    #[test]
    fn sizes() {
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
