//! One module per subcommand.

mod archive_push;
mod base;
mod check;
pub mod copy;
pub mod demo;
pub mod drill;
pub mod expire;
mod init;
pub mod keep;
mod list;
mod receive_wal;
mod rekey;
mod restore;
mod status;
mod status_reports;
mod switch_wal;
mod upgrade;
mod verify;
mod wal_fetch;

pub use base::human_bytes;
pub(crate) use base::{parse_rate, parse_server_compression};
pub use status::parse_duration;

use crate::args::Command;

/// Runs a parsed command.
pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Init(a) => init::run(a),
        Command::Rekey(a) => rekey::run(a),
        Command::Upgrade(a) => upgrade::run(a),
        Command::Base(a) => base::run(a).await,
        Command::Restore(a) => restore::run(a).await,
        Command::List(a) => list::run(a),
        Command::ArchivePush(a) => archive_push::run(a),
        Command::WalFetch(a) => wal_fetch::run(a),
        Command::SwitchWal(a) => switch_wal::switch_wal(a).await,
        Command::RestorePoint(a) => switch_wal::restore_point(a).await,
        Command::ReceiveWal(a) => receive_wal::run(a).await,
        Command::Status(a) => status::run(a).await,
        Command::Check(a) => check::run(a).await,
        Command::Verify(a) => verify::run(a).await,
        Command::Expire(a) => expire::run(a).await,
        Command::Keep(a) => keep::run(a).await,
        Command::Copy(a) => copy::run(a).await,
        Command::Drill(a) => drill::run(a).await,
        Command::Demo(a) => demo::run(a).await,
        // Answered in main, which has the parsed matches and the file.
        Command::Config(_) => Ok(()),
    }
}

/// Opens the repository named by `repo`, asking for its passphrase as configured.
pub fn open_repo(repo: &crate::args::RepoArgs) -> anyhow::Result<backup_core::Repository> {
    use anyhow::Context as _;
    let passphrase = passphrase_if_needed(repo)?;
    backup_core::Repository::open(&repo.repo, passphrase.as_ref())
        .with_context(|| format!("opening repository {}", repo.repo))
}

/// The passphrase: required when the repository is encrypted; when it says it is not, one
/// that was given anyway is still passed on, and the repository refuses it (a configuration
/// altered to say "unencrypted" must not make the next writer store plaintext).
pub(crate) fn passphrase_if_needed(
    repo: &crate::args::RepoArgs,
) -> anyhow::Result<Option<backup_core::Secret>> {
    let config = backup_core::store::open(&repo.repo)
        .map_err(backup_core::RepoError::from)
        .and_then(|store| backup_core::repo::read_config(store.as_ref()));
    let encrypted = match config {
        Ok(c) => c.encryption.is_some(),
        // A damaged config: ask anyway, and let Repository::open explain.
        Err(backup_core::RepoError::BadConfig { .. }) => true,
        // Let Repository::open explain a missing repository.
        Err(_) => return Ok(None),
    };
    let given = repo.passphrase_file.is_some()
        || std::env::var_os(backup_core::PASSPHRASE_ENV).is_some_and(|v| !v.is_empty());
    if !encrypted && !given {
        return Ok(None);
    }
    Ok(Some(backup_core::passphrase_from_env_or_file(
        repo.passphrase_file.as_deref(),
    )?))
}
