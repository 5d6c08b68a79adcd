//! Why `expire` or `keep` refused or failed. Nothing is deleted once any of these is found
//! before the deleting starts.

use pgwire_repl::TimelineId;

use crate::catalog::CatalogError;
use crate::repo::RepoError;
use crate::store::StoreError;

/// A pin file (`backups/<id>/pin.json`) that cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// The pin's checksum, MAC or id does not match: damaged, altered or copied from another
    /// backup.
    #[error(
        "pin {path} is damaged or was altered: {reason}; re-pin with `pgstream keep {id}` or \
         remove the pin with `pgstream keep --unpin {id}`"
    )]
    Damaged {
        path: String,
        id: String,
        reason: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why expire (or keep) stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExpireError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// `keep` of an id that is not a complete backup, and other catalog failures outside the
    /// records themselves.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(
        "the repository has no complete backup: there is nothing to expire, and without a \
         backup no WAL can be judged unneeded (nothing was deleted)"
    )]
    NoBackups,
    /// A backup record that cannot be read or authenticated: expire will not guess what that
    /// backup needs.
    #[error(
        "refusing to expire: the record of backup {id} cannot be trusted ({source}); nothing was \
         deleted. Run `pgstream verify --backup {id}`"
    )]
    Record {
        id: String,
        #[source]
        source: CatalogError,
    },
    /// A timeline history file that cannot be read: which WAL a timeline needs is unknown.
    #[error(
        "refusing to expire: the history file of timeline {timeline} cannot be read ({reason}); \
         nothing was deleted. Run `pgstream verify`"
    )]
    History {
        timeline: TimelineId,
        reason: String,
    },
    #[error(transparent)]
    Pin(#[from] PinError),
    /// A pin expire cannot read or trust: whether the backup may go would be a guess.
    #[error("refusing to expire: {0}; nothing was deleted")]
    UnreadablePin(#[source] PinError),
    /// The policy is invalid (no rule, `--keep-last 0`, a zero duration).
    #[error("{0}")]
    Policy(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}
