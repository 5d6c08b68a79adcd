//! `pgstream rekey`: a new passphrase, a new data key (`--rotate-data-key`), or an old data key
//! retired (`--retire-key`).

use anyhow::Context as _;
use backup_core::repo::{retire, RekeyOptions};
use backup_core::Repository;

use crate::args::RekeyArgs;

/// The environment variable with the new passphrase.
const NEW_PASSPHRASE_ENV: &str = "PGSTREAM_NEW_PASSPHRASE";

pub fn run(args: RekeyArgs) -> anyhow::Result<()> {
    let old = backup_core::passphrase_from_env_or_file(args.repo.passphrase_file.as_deref())
        .context("the current passphrase")?;
    if let Some(key_id) = args.retire_key {
        let store =
            backup_core::store::open(&args.repo.repo).map_err(backup_core::RepoError::from)?;
        let done = retire::retire_key(store.as_ref(), &old, key_id)
            .map_err(retire_failure)
            .with_context(|| format!("retiring data key {key_id} of {}", args.repo.repo))?;
        println!(
            "data key {key_id} retired from {} ({} objects checked, {} records and pins sealed \
             again with the active key)",
            args.repo.repo,
            done.objects_checked,
            done.resealed.len()
        );
        return Ok(());
    }
    let new_given = args.new_passphrase_file.is_some()
        || std::env::var_os(NEW_PASSPHRASE_ENV).is_some_and(|v| !v.is_empty());
    let new = if args.rotate_data_key && !new_given {
        old.clone()
    } else {
        backup_core::repo::passphrase::passphrase_from(
            args.new_passphrase_file.as_deref(),
            std::env::var_os(NEW_PASSPHRASE_ENV),
        )
        .with_context(|| {
            format!("the new passphrase (--new-passphrase-file or {NEW_PASSPHRASE_ENV})")
        })?
    };
    let options = RekeyOptions {
        rotate: args.rotate_data_key,
        ..RekeyOptions::default()
    };
    let active = Repository::rekey_with(&args.repo.repo, &old, &new, options)
        .with_context(|| format!("rekeying {}", args.repo.repo))?;
    if args.rotate_data_key {
        println!(
            "data key {active} added to {} and now used for every new file; older keys stay \
             for reading (restart a running receive-wal so it writes with the new key){}",
            args.repo.repo,
            if new_given {
                "; the passphrase changed too"
            } else {
                ""
            }
        );
    } else {
        println!(
            "passphrase changed for {}; no data was rewritten, and the old passphrase no longer \
             opens it",
            args.repo.repo
        );
    }
    Ok(())
}

/// Exit codes: a key still needed, or a writer running, is the repository's state (5).
fn retire_failure(e: retire::RetireError) -> anyhow::Error {
    use crate::exit::{classified, Failure};
    match e {
        retire::RetireError::Repo(r) => anyhow::Error::new(r),
        retire::RetireError::Store(s) => anyhow::Error::new(s),
        retire::RetireError::Unreadable { .. } => classified(Failure::Verification, e),
        other => classified(Failure::Repository, other),
    }
}
