//! `pgstream list`.

use anyhow::Context as _;
use backup_core::catalog::Catalog;

use crate::args::ListArgs;
use crate::exit::{classified, Failure};

pub fn run(args: ListArgs) -> anyhow::Result<()> {
    if !args
        .repo
        .join(backup_core::repo::config::CONFIG_FILE)
        .exists()
    {
        return Err(classified(
            Failure::Repository,
            anyhow::anyhow!(
                "{} is not a pgstream repository (create one with `pgstream init --repo {}`)",
                args.repo.display(),
                args.repo.display()
            ),
        ));
    }
    let backups = Catalog::new(&args.repo)
        .list()
        .with_context(|| format!("listing backups in {}", args.repo.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&backups)?);
        return Ok(());
    }
    if backups.is_empty() {
        println!("no backups in {}", args.repo.display());
        return Ok(());
    }
    println!(
        "{:<20} {:<21} {:>9} {:>12} {:>4} {:>10} {:>10}  label",
        "id", "end time", "duration", "end lsn", "tli", "size", "stored"
    );
    for b in &backups {
        println!(
            "{:<20} {:<21} {:>8.1}s {:>12} {:>4} {:>10} {:>10}  {}",
            b.id,
            b.end_time,
            b.duration_seconds,
            b.end_lsn.to_string(),
            b.end_timeline,
            super::base::human_bytes(b.raw_bytes),
            super::base::human_bytes(b.stored_bytes),
            b.label
        );
    }
    Ok(())
}
