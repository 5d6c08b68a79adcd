//! `pgstream list`: the backups, and the WAL coverage of the repository (backup_core::coverage).
//!
//! Backups, segment ranges and gaps are read from catalog records and file names, so they need
//! no passphrase. Branch points, the end of a partial segment and the backups' recoverable
//! windows read history files and partial segments, which an encrypted repository encrypts: they
//! are shown when PGSTREAM_PASSPHRASE or --passphrase-file is given, and a note says so when
//! neither is. A passphrase that is given but wrong is an error (exit 5), not a silent fallback.

mod chain;
mod json;
mod text;

use anyhow::Context as _;
use backup_core::catalog::{BackupRecord, Catalog};
use backup_core::coverage::{self, CoverageError, WalCoverage};
use backup_core::expire::{read_pin, PinError};
use backup_core::restore::last_commit::LastCommits;
use backup_core::restore::pitr::TargetTime;
use backup_core::restore::window::Window;
use backup_core::wal::commits::XactRecord;
use backup_core::{RepoError, Repository, PASSPHRASE_ENV};

use crate::args::ListArgs;
use crate::exit::{classified, Failure};

/// One listed backup.
struct Listed {
    record: BackupRecord,
    pinned: bool,
    /// For an incremental backup: its chain.
    chain: Option<chain::ChainInfo>,
    /// With each window's last archived commit or abort. `None`: not computed (encrypted
    /// repository, no passphrase).
    windows: Option<Vec<(Window, Option<XactRecord>)>>,
}

/// What `list` prints, in either form.
struct Listing {
    repo: backup_core::store::RepoLocation,
    encrypted: bool,
    backups: Vec<Listed>,
    wal: WalCoverage,
}

/// Printed (on stderr with --json) when an encrypted repository is listed without a passphrase.
const NEEDS_PASSPHRASE: &str = "the repository is encrypted and no passphrase was given: set \
     PGSTREAM_PASSPHRASE or pass --passphrase-file FILE to see where timelines branched, where \
     partial segments end and each backup's recoverable window";

pub fn run(args: ListArgs) -> anyhow::Result<()> {
    let location = &args.repo.repo;
    let store =
        backup_core::store::open(location).map_err(|e| anyhow::Error::new(RepoError::from(e)))?;
    let dir = store.as_ref();
    let config = match backup_core::repo::read_config(dir) {
        Ok(c) => c,
        Err(e @ RepoError::NotRepository { .. }) => return Err(classified(Failure::Repository, e)),
        Err(e) => return Err(anyhow::Error::new(e)),
    };
    let encrypted = config.encryption.is_some();
    let passphrase_given =
        args.repo.passphrase_file.is_some() || std::env::var_os(PASSPHRASE_ENV).is_some();
    let repo: Option<Repository> = if encrypted && !passphrase_given {
        None
    } else {
        Some(super::open_repo(&args.repo)?)
    };
    // With the keys, every record is authenticated; without, checksums only (and list says
    // so for encrypted repositories).
    let records = repo
        .as_ref()
        .map(|r| r.catalog())
        .unwrap_or_else(|| Catalog::new(dir))
        .list()
        .with_context(|| format!("listing backups in {location}"))?;
    let wal = coverage::wal_coverage(dir, repo.as_ref()).map_err(cli_error)?;
    let mut backups = Vec::new();
    let mut last_commits = LastCommits::default();
    let chains: Vec<_> = records
        .iter()
        .map(|r| chain::chain_info(&records, r))
        .collect();
    for (record, chain) in records.into_iter().zip(chains) {
        let windows = match &repo {
            Some(r) => {
                let mut ws = Vec::new();
                for w in coverage::backup_windows(r, &record, &wal).map_err(cli_error)? {
                    let last = last_commits.get(r, &w).map_err(super::restore::cli_error)?;
                    ws.push((w, last));
                }
                Some(ws)
            }
            None => None,
        };
        backups.push(Listed {
            pinned: pinned(dir, repo.as_ref(), &record.id)?,
            chain,
            record,
            windows,
        });
    }
    let listing = Listing {
        repo: location.clone(),
        encrypted,
        backups,
        wal,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json::listing(&listing))?
        );
        if !listing.wal.contents_read {
            crate::logging::notice("note", NEEDS_PASSPHRASE);
        }
    } else {
        print!("{}", text::listing(&listing));
    }
    Ok(())
}

/// Whether the backup is pinned (`pgstream keep`). The pin's checksum is always checked, and
/// its MAC too when the repository is open with its key; a damaged pin is an error (exit 6)
/// naming the file and how to fix it.
fn pinned(
    dir: &dyn backup_core::store::Store,
    repo: Option<&Repository>,
    id: &str,
) -> anyhow::Result<bool> {
    let key = repo.and_then(|r| r.keyring());
    match read_pin(dir, id, key) {
        Ok(pin) => Ok(pin.is_some()),
        Err(e @ PinError::Damaged { .. }) => Err(classified(Failure::Verification, e)),
        Err(e) => Err(classified(Failure::LocalIo, e)),
    }
}

/// A commit's time as `--target-time` takes it (PostgreSQL's form, UTC, microseconds).
fn commit_time(x: &XactRecord) -> String {
    TargetTime {
        unix_micros: x.unix_micros(),
    }
    .postgres()
}

/// Exit codes as for the same failures elsewhere: the repository's and catalog's own, a
/// history file or partial segment that does not read as restore classifies it.
fn cli_error(e: CoverageError) -> anyhow::Error {
    match e {
        CoverageError::Repo(e) => anyhow::Error::new(e),
        CoverageError::Catalog(e) => anyhow::Error::new(e),
        CoverageError::Store(e) => anyhow::Error::new(e),
        CoverageError::Window(e) => super::restore::cli_error(e),
    }
}
