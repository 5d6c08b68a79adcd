//! `verify` of incremental backups: each link of a chain (the parent is there, readable and
//! fits the record; its stored manifest is the one that was uploaded), and a backup whose
//! chain holds a bad backup is reported as not restorable.

use std::collections::BTreeMap;
use std::io::Read;

use super::{problem, BackupReport, Problem};
use crate::catalog::{BackupRecord, Catalog};
use crate::layout;
use crate::repo::Repository;

/// The ids to verify for `record`: its chain, full backup first, then it. A parent that is
/// gone is listed too, so its absence is reported.
pub(super) fn with_ancestors(catalog: &Catalog, record: &BackupRecord) -> Vec<String> {
    let mut ids = vec![record.id.clone()];
    let mut parent = record.parent().map(str::to_string);
    while let Some(p) = parent {
        ids.push(p.clone());
        parent = catalog
            .read(&p)
            .ok()
            .and_then(|r| r.parent().map(str::to_string));
    }
    ids.reverse();
    ids
}

/// Adds the chain problems of every incremental backup in `reports`, after each backup's own
/// files were checked.
pub(super) fn check_chains(repo: &Repository, catalog: &Catalog, reports: &mut [BackupReport]) {
    let ok: BTreeMap<String, bool> = reports.iter().map(|r| (r.id.clone(), r.ok)).collect();
    for report in reports.iter_mut() {
        let Ok(record) = catalog.read(&report.id) else {
            continue; // its own report names the record
        };
        let Some(inc) = &record.incremental else {
            continue;
        };
        let record_file = Catalog::record_name(&record.id);
        let mut problems: Vec<Problem> = Vec::new();
        match catalog.chain(&record) {
            Err(e) => problems.push(problem(&record_file, e)),
            Ok(chain) => {
                let parent = &chain[chain.len() - 2];
                if let Err(why) = manifest_link(repo, parent, &inc.parent_manifest_sha256) {
                    problems.push(problem(
                        &record_file,
                        format!("a link to the wrong parent: {why}"),
                    ));
                }
                for ancestor in &chain[..chain.len() - 1] {
                    if ok.get(&ancestor.id) == Some(&false) {
                        problems.push(problem(
                            &record_file,
                            format!(
                                "backup {} of its chain has problems (see there): this \
                                 incremental backup cannot be restored",
                                ancestor.id
                            ),
                        ));
                    }
                }
            }
        }
        if !problems.is_empty() {
            report.ok = false;
            report.problems.extend(problems);
        }
    }
}

/// Whether `parent`'s stored manifest hashes to what its child recorded when it uploaded it.
fn manifest_link(repo: &Repository, parent: &BackupRecord, want: &str) -> Result<(), String> {
    let name = layout::backup_file(&parent.id, &parent.manifest_file);
    let mut reader = repo.open_file(&name).map_err(|e| e.to_string())?;
    let mut hash = openssl::sha::Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hash.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("{name}: {e}")),
        }
    }
    let got = hex::encode(hash.finish());
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "it was taken relative to a manifest with SHA-256 {want}, but {name} of its parent {} \
             hashes to {got}",
            parent.id
        ))
    }
}
