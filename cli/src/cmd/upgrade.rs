//! `pgstream upgrade`: repository format 1 → 2.

use anyhow::Context as _;
use backup_core::Repository;

use crate::args::UpgradeArgs;

pub fn run(args: UpgradeArgs) -> anyhow::Result<()> {
    let passphrase = super::passphrase_if_needed(&args.repo)?;
    let done = Repository::upgrade(&args.repo.repo, passphrase.as_ref())
        .with_context(|| format!("upgrading {}", args.repo.repo))?;
    if done {
        println!(
            "{} is now at repository format version 2: its configuration, records and pins are \
             authenticated, and data keys can be rotated (pgstream rekey --rotate-data-key); \
             older pgstream versions no longer open it",
            args.repo.repo
        );
    } else {
        println!(
            "{} is already at repository format version 2",
            args.repo.repo
        );
    }
    Ok(())
}
