//! The life of a backup id, on any backend (docs/format.md, "Committing a backup"):
//!
//! 1. a writer claims a new id by taking the lease `backup.<id>` (create-only; two runs in the
//!    same second get `<stamp>` and `<stamp>-2`), and checks that no record has the id;
//! 2. it writes the backup's files under `backups/<id>/`, then the record, last and create-only:
//!    that is the commit;
//! 3. it releases the lease.
//!
//! An id with objects but no record is unfinished: being written while its lease is live, dead
//! otherwise (its writer crashed, or an expire crashed while deleting it: expire deletes the
//! record first). Only dead ones are removed, each under its own lease so no writer can claim
//! the id meanwhile, and never one that has a record.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use super::{new_backup_id, Catalog, CatalogError, RECORD_FILE};
use crate::index::{self, BackupListing};
use crate::store::lease::{LeaseGuard, LeaseHolder, LeaseInfo, LOCKS_DIR};
use crate::store::{delete_prefix, PutMode, Store, StoreError};

/// The lease that owns backup id `id`.
pub fn lease_name(id: &str) -> String {
    format!("backup.{id}")
}

/// An id this process owns, with the lease that says so.
#[derive(Debug)]
pub struct Claim {
    id: String,
    lease: Box<dyn LeaseGuard>,
}

impl Claim {
    /// The backup id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The lease (to check it is still held before committing).
    pub fn lease(&self) -> &dyn LeaseGuard {
        self.lease.as_ref()
    }
}

/// Claims a new id for a backup that starts at `start`. Leftovers of a dead run that had the
/// same id are removed first.
pub fn claim_new_id(
    store: &dyn Store,
    start: SystemTime,
    holder: &LeaseHolder,
) -> Result<Claim, CatalogError> {
    let base = new_backup_id(start, |_| false);
    let catalog = Catalog::new(store);
    for n in 1..=10_000u32 {
        let id = if n == 1 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        let lease = match store.acquire_lease(&lease_name(&id), holder) {
            Ok(l) => l,
            Err(StoreError::LeaseHeld { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        if catalog.exists(&id)? {
            continue;
        }
        let removed = delete_prefix(store, &Catalog::prefix(&id))?;
        if removed > 0 {
            tracing::info!(backup_id = %id, files = removed, "removed what a run that died left under this id");
        }
        return Ok(Claim { id, lease });
    }
    Err(CatalogError::Busy {
        id: base,
        holder: "10000 other runs".into(),
    })
}

/// Claims the given id (a copy keeps the source's id), waiting up to `wait` for a live holder
/// of its lease (another copy of the same backup, or an expire deleting it). `None` when the id
/// has a record: the backup is complete there. Leftovers of a dead run under the id are
/// removed first.
pub fn claim_id(
    store: &dyn Store,
    id: &str,
    holder: &LeaseHolder,
    wait: Duration,
) -> Result<Option<Claim>, CatalogError> {
    let catalog = Catalog::new(store);
    let lease = crate::store::lease::acquire_waiting(store, &lease_name(id), holder, wait)
        .map_err(|e| match e {
            StoreError::LeaseHeld { holder, .. } => CatalogError::Busy {
                id: id.to_string(),
                holder: holder.to_string(),
            },
            other => other.into(),
        })?;
    if catalog.exists(id)? {
        return Ok(None);
    }
    let removed = delete_prefix(store, &Catalog::prefix(id))?;
    if removed > 0 {
        tracing::info!(backup_id = %id, files = removed, "removed what an interrupted run left under this id");
    }
    Ok(Some(Claim {
        id: id.to_string(),
        lease,
    }))
}

/// A backup id with objects (or a lease) but no record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfinished {
    pub id: String,
    /// Objects stored under it so far.
    pub objects: usize,
    pub bytes: u64,
    /// The live writer, if any: `None` means the run that wrote it is dead.
    pub writer: Option<LeaseInfo>,
}

/// Every unfinished backup, oldest first, from `listing` (made before this call) and the
/// leases: a writer that has stored nothing yet is found by its lease alone.
pub fn unfinished(
    store: &dyn Store,
    listing: &BackupListing,
) -> Result<Vec<Unfinished>, CatalogError> {
    let mut ids: BTreeSet<String> = listing
        .backups
        .values()
        .filter(|b| !b.has_record)
        .map(|b| b.id.clone())
        .collect();
    let lease_prefix = format!("{LOCKS_DIR}/backup.");
    for o in store.list(&lease_prefix)? {
        let id = &o.name[lease_prefix.len()..];
        if super::is_backup_id(id) && !listing.backups.get(id).is_some_and(|b| b.has_record) {
            ids.insert(id.to_string());
        }
    }
    let mut out = Vec::new();
    for id in ids {
        let writer = store.read_lease(&lease_name(&id))?.filter(|l| l.live);
        let entry = listing.backups.get(&id);
        out.push(Unfinished {
            objects: entry.map_or(0, |e| e.objects.len()),
            bytes: entry.map_or(0, |e| e.bytes()),
            writer,
            id,
        });
    }
    Ok(out)
}

/// The unfinished backups whose writer is alive (for `expire`, which deletes no WAL while one
/// exists: its start is not recorded yet).
pub fn in_progress(store: &dyn Store) -> Result<Vec<Unfinished>, CatalogError> {
    let listing = index::scan_backups(store)?;
    Ok(unfinished(store, &listing)?
        .into_iter()
        .filter(|u| u.writer.is_some())
        .collect())
}

/// What [`remove_dead`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removed {
    /// Unfinished backup ids whose objects were removed.
    pub ids: Vec<String>,
    /// Directories an older pgstream left (`.<id>.inprogress`, `.<id>.expiring`).
    pub legacy: Vec<String>,
    /// Older-format backups left complete inside `.<id>.inprogress` and moved into place.
    pub adopted: Vec<String>,
}

/// An older pgstream's unfinished directory is taken for dead when nothing in it changed for
/// this long (that version wrote continuously while it lived).
const LEGACY_QUIET: Duration = Duration::from_secs(24 * 3600);

/// Removes unfinished backups whose writer is dead. Each is removed under its own lease (so
/// no writer claims the id meanwhile) and only after checking again that it has no record: a
/// complete backup is never removed.
pub fn remove_dead(store: &dyn Store, purpose: &str) -> Result<Removed, CatalogError> {
    let listing = index::scan_backups(store)?;
    let holder = LeaseHolder::this_process(purpose);
    let catalog = Catalog::new(store);
    let mut out = Removed::default();
    for u in unfinished(store, &listing)? {
        if u.writer.is_some() {
            continue;
        }
        let _lease = match store.acquire_lease(&lease_name(&u.id), &holder) {
            Ok(l) => l,
            // Claimed again since we looked: it is someone's now.
            Err(StoreError::LeaseHeld { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        if catalog.exists(&u.id)? {
            continue;
        }
        let n = delete_prefix(store, &Catalog::prefix(&u.id))?;
        if n > 0 {
            tracing::info!(backup_id = %u.id, files = n, "removed an unfinished backup whose writer is gone");
            out.ids.push(u.id);
        }
    }
    legacy(store, &listing, &holder, &mut out)?;
    Ok(out)
}

/// Leftovers of the directory-rename layout of older versions.
fn legacy(
    store: &dyn Store,
    listing: &BackupListing,
    holder: &LeaseHolder,
    out: &mut Removed,
) -> Result<(), CatalogError> {
    let catalog = Catalog::new(store);
    let now = SystemTime::now();
    for (dir, objects) in &listing.legacy {
        let prefix = format!("{}/{dir}/", super::BACKUPS_DIR);
        if let Some(id) = dir
            .strip_prefix('.')
            .and_then(|d| d.strip_suffix(".inprogress"))
        {
            let has_record = objects.iter().any(|o| o.name.ends_with(RECORD_FILE));
            let quiet = objects
                .iter()
                .filter_map(|o| o.modified)
                .max()
                .is_none_or(|m| now.duration_since(m).is_ok_and(|d| d > LEGACY_QUIET));
            if !has_record && !quiet {
                continue;
            }
            if has_record && super::is_backup_id(id) && !catalog.exists(id)? {
                // Crashed between its record and its rename: the backup is complete. Its files
                // were sealed under their final names, so a byte copy puts it in place.
                let Ok(_lease) = store.acquire_lease(&lease_name(id), holder) else {
                    continue;
                };
                adopt(store, &prefix, id, objects)?;
                out.adopted.push(id.to_string());
            }
        }
        delete_prefix(store, &prefix)?;
        tracing::info!(dir = %dir, "removed a directory an older pgstream left");
        out.legacy.push(dir.clone());
    }
    Ok(())
}

fn adopt(
    store: &dyn Store,
    prefix: &str,
    id: &str,
    objects: &[crate::store::ObjectMeta],
) -> Result<(), CatalogError> {
    let target = Catalog::prefix(id);
    // The record goes last, as for any backup.
    let (records, files): (Vec<_>, Vec<_>) = objects
        .iter()
        .filter(|o| !o.name.ends_with("/lock"))
        .partition(|o| o.name.ends_with(RECORD_FILE));
    for o in files.into_iter().chain(records) {
        let to = format!("{target}{}", &o.name[prefix.len()..]);
        let mut src = store.open(&o.name)?;
        let mut w = store.create(&to)?;
        std::io::copy(&mut src, &mut w)
            .map_err(|e| crate::store::io_to_store(e, "copying into", || store.describe(&to)))?;
        match w.commit(PutMode::Create) {
            Ok(()) => {}
            Err(e) if e.is_already_exists() => {}
            Err(e) => return Err(e.into()),
        }
    }
    tracing::info!(backup_id = %id, "an older pgstream's complete backup was moved into place");
    Ok(())
}

/// Deletes backup `id` for expire, crash-safely: under its lease, the record first (from then
/// on it is no backup, and a crash leaves an unfinished id that [`remove_dead`] finishes), then
/// everything else under it.
pub fn delete_backup(store: &dyn Store, id: &str, purpose: &str) -> Result<(), CatalogError> {
    let _lease = store
        .acquire_lease(&lease_name(id), &LeaseHolder::this_process(purpose))
        .map_err(|e| match e {
            StoreError::LeaseHeld { holder, .. } => CatalogError::Busy {
                id: id.to_string(),
                holder: holder.to_string(),
            },
            other => other.into(),
        })?;
    store.delete(&[Catalog::record_name(id)])?;
    crate::failpoint!("expire.record-deleted");
    delete_prefix(store, &Catalog::prefix(id))?;
    Ok(())
}
