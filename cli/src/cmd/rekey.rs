//! `pgstream rekey`.

use anyhow::Context as _;
use backup_core::Repository;

use crate::args::RekeyArgs;

/// The environment variable with the new passphrase.
const NEW_PASSPHRASE_ENV: &str = "PGSTREAM_NEW_PASSPHRASE";

pub fn run(args: RekeyArgs) -> anyhow::Result<()> {
    let old = backup_core::passphrase_from_env_or_file(args.repo.passphrase_file.as_deref())
        .context("the current passphrase")?;
    let new = backup_core::repo::passphrase::passphrase_from(
        args.new_passphrase_file.as_deref(),
        std::env::var_os(NEW_PASSPHRASE_ENV),
    )
    .with_context(|| {
        format!("the new passphrase (--new-passphrase-file or {NEW_PASSPHRASE_ENV})")
    })?;
    Repository::rekey(&args.repo.repo, &old, &new)
        .with_context(|| format!("changing the passphrase of {}", args.repo.repo))?;
    println!(
        "passphrase changed for {}; no data was rewritten, and the old passphrase no longer opens it",
        args.repo.repo
    );
    Ok(())
}
