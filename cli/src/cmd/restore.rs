//! `pgstream restore`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context as _;
use backup_core::restore::{self, RestorePlan};

use crate::args::RestoreArgs;
use crate::exit::{classified, Failure};

pub async fn run(args: RestoreArgs) -> anyhow::Result<()> {
    let mut tablespace_map = BTreeMap::new();
    for m in &args.tablespace_map {
        let (old, new) = m.split_once('=').ok_or_else(|| {
            classified(
                Failure::Usage,
                anyhow::anyhow!("--tablespace-map {m:?}: expected OLD=NEW"),
            )
        })?;
        let (old, new) = (PathBuf::from(old), PathBuf::from(new));
        if !old.is_absolute() || !new.is_absolute() {
            return Err(classified(
                Failure::Usage,
                anyhow::anyhow!("--tablespace-map {m:?}: both paths must be absolute"),
            ));
        }
        tablespace_map.insert(old, new);
    }
    let target = absolute(&args.to)?;
    let repo = super::open_repo(&args.repo)?;
    let plan = RestorePlan {
        backup: args.backup.clone(),
        target: target.clone(),
        tablespace_map,
    };
    let summary = tokio::task::spawn_blocking(move || restore::run(&repo, &plan))
        .await
        .context("the restore task failed")?
        .context("restore failed")?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "backup": summary.backup.id,
                "target": summary.target,
                "files": summary.files,
                "bytes": summary.bytes,
                "wal_segments": summary.wal_segments,
                "tablespaces": summary.tablespaces,
                "seconds": summary.seconds,
                "end_lsn": summary.backup.end_lsn.to_string(),
            }))?
        );
    } else {
        println!(
            "restored backup {} into {}: {} files ({}), {} WAL segment(s), {:.1} s",
            summary.backup.id,
            summary.target.display(),
            summary.files,
            super::base::human_bytes(summary.bytes),
            summary.wal_segments,
            summary.seconds
        );
        for (oid, dir) in &summary.tablespaces {
            println!("  tablespace {oid} restored into {}", dir.display());
        }
        println!(
            "start it with: pg_ctl -D {} start   (PostgreSQL {}; it replays WAL up to {} and is then consistent)",
            summary.target.display(),
            summary.backup.server_major,
            summary.backup.end_lsn
        );
        println!(
            "check it first with: pg_verifybackup {}",
            summary.target.display()
        );
    }
    Ok(())
}

fn absolute(p: &std::path::Path) -> anyhow::Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(std::env::current_dir()
            .context("finding the current directory")?
            .join(p))
    }
}
