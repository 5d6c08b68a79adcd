//! What `expire` reads before deciding, through the repository index: the files of the WAL
//! archive by kind, the history files, the backups and their sizes, unfinished backups (being
//! written, or left by runs that died); and the lease that keeps two `expire`/`keep` runs from
//! interleaving.

use std::collections::BTreeMap;

use pgwire_repl::TimelineId;

use super::retain::WalFile;
use super::ExpireError;
use crate::catalog::lifecycle::{self, Unfinished};
use crate::index::{self, BackupListing};
use crate::repo::Repository;
use crate::store::lease::{self, LeaseGuard, LeaseHolder};

/// The lease `expire` and `keep` hold.
pub const LEASE: &str = "expire";

/// Takes the `expire` lease, waiting for another expire or keep to finish. A dry run takes
/// none (it must not change a single object, and deletes nothing to race with).
pub fn lock(repo: &Repository, purpose: &str) -> Result<Box<dyn LeaseGuard>, ExpireError> {
    Ok(lease::acquire_waiting(
        repo.store().as_ref(),
        LEASE,
        &LeaseHolder::this_process(purpose),
        None,
    )?)
}

/// The WAL archive as expire sees it.
#[derive(Debug, Default)]
pub struct WalListing {
    /// Files that belong to a segment (candidates for deletion).
    pub files: Vec<WalFile>,
    /// Timelines whose history file is in the archive.
    pub history_timelines: Vec<TimelineId>,
}

/// Lists `wal/`. Names expire does not recognise (another codec's suffix, stray files) are not
/// listed, so they are never deleted.
pub fn scan_wal(repo: &Repository) -> Result<WalListing, ExpireError> {
    let listing = index::scan_wal(repo.store().as_ref(), repo.config())?;
    Ok(WalListing {
        files: listing.files.into_iter().map(|o| o.file).collect(),
        history_timelines: listing.histories.keys().copied().collect(),
    })
}

/// What `backups/` holds, for expire.
#[derive(Debug, Default)]
pub struct BackupsSeen {
    /// Bytes stored per backup id.
    pub bytes: BTreeMap<String, u64>,
    /// Unfinished backups whose writer is alive: their start is not recorded anywhere expire
    /// can read, so while one exists no WAL is deleted.
    pub in_progress: Vec<Unfinished>,
    /// Unfinished backups whose writer died, and directories older versions left: removed.
    pub leftovers: Vec<String>,
}

/// Looks at `backups/`: sizes, and unfinished backups by whether their writer lives.
pub fn scan_backups(repo: &Repository) -> Result<BackupsSeen, ExpireError> {
    let store = repo.store().as_ref();
    let listing: BackupListing = index::scan_backups(store)?;
    let mut seen = BackupsSeen {
        bytes: listing
            .backups
            .values()
            .map(|b| (b.id.clone(), b.bytes()))
            .collect(),
        ..BackupsSeen::default()
    };
    for u in lifecycle::unfinished(store, &listing)? {
        if u.writer.is_some() {
            seen.in_progress.push(u);
        } else {
            seen.leftovers.push(u.id);
        }
    }
    seen.leftovers.extend(listing.legacy.keys().cloned());
    Ok(seen)
}

/// The ids of backups being written now.
pub fn backups_in_progress(repo: &Repository) -> Result<Vec<String>, ExpireError> {
    Ok(lifecycle::in_progress(repo.store().as_ref())?
        .into_iter()
        .map(|u| u.id)
        .collect())
}
