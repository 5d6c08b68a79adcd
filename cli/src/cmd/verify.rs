//! `pgstream verify`.

use anyhow::Context as _;
use backup_core::verify::{self, VerifyReport};

use crate::args::VerifyArgs;
use crate::exit::{classified, Failure};

pub async fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let repo = super::open_repo(&args.repo)?;
    let only = args.backup.clone();
    let report = tokio::task::spawn_blocking(move || verify::verify(&repo, only.as_deref()))
        .await
        .context("the verify task failed")?
        .with_context(|| format!("verifying {}", args.repo.repo))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_human(&report);
    }
    if let Some(path) = &args.report {
        let json = format!("{}\n", serde_json::to_string_pretty(&report)?);
        backup_core::fsutil::write_file_durably(path, json.as_bytes(), 0o644)
            .with_context(|| format!("writing the report to {}", path.display()))?;
    }
    if report.ok() {
        return Ok(());
    }
    let count = report
        .backups
        .iter()
        .map(|b| b.problems.len())
        .sum::<usize>()
        + report.wal.gaps.len()
        + report.wal.bad_files.len();
    Err(classified(
        Failure::Verification,
        anyhow::anyhow!(
            "verification failed: {count} problem{} in {}",
            if count == 1 { "" } else { "s" },
            args.repo.repo
        ),
    ))
}

fn print_human(report: &VerifyReport) {
    if report.backups.is_empty() {
        println!("no backups");
    }
    for b in &report.backups {
        if b.ok {
            println!("backup {}: OK", b.id);
        } else {
            println!("backup {}: {} problem(s)", b.id, b.problems.len());
            for p in &b.problems {
                println!("  {}: {}", p.file, p.problem);
            }
        }
    }
    let wal = &report.wal;
    if wal.ok {
        println!("WAL archive: OK ({} files checked)", wal.files_checked);
        return;
    }
    println!(
        "WAL archive: {} gap(s), {} bad file(s) ({} files checked)",
        wal.gaps.len(),
        wal.bad_files.len(),
        wal.files_checked
    );
    for g in &wal.gaps {
        let segments = if g.first == g.last {
            format!("segment {} is missing", g.first)
        } else {
            format!("segments {} to {} are missing", g.first, g.last)
        };
        println!(
            "  gap: {segments} (WAL {} to {}); point-in-time recovery cannot pass it from backup(s) {}",
            g.start_lsn,
            g.end_lsn,
            g.backups.join(", ")
        );
    }
    for p in &wal.bad_files {
        println!("  {}: {}", p.file, p.problem);
    }
}
