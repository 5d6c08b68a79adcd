//! Incremental chains in retention: a kept incremental backup is restored with every backup
//! before it in its chain, so those are kept too, whatever the rules say of them, and the
//! report says which incremental needs them.

use std::collections::HashMap;

use super::policy::KeepReason;
use crate::catalog::BackupRecord;

/// Adds [`KeepReason::Chain`] to every ancestor of a kept backup (`records` oldest first, with
/// their reasons; an empty list means expired). Returns, per backup, the kept incremental
/// backups that need it, oldest first.
pub(super) fn protect_chains(
    records: &[BackupRecord],
    reasons: &mut [Vec<KeepReason>],
) -> Vec<Vec<String>> {
    let index: HashMap<&str, usize> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.as_str(), i))
        .collect();
    let mut needed_by = vec![Vec::new(); records.len()];
    let kept: Vec<usize> = (0..records.len())
        .filter(|&i| !reasons[i].is_empty())
        .collect();
    for i in kept {
        let mut parent = records[i].parent();
        // A missing parent ends the walk: that chain is broken already (verify says so).
        while let Some(j) = parent.and_then(|p| index.get(p).copied()) {
            if !needed_by[j].contains(&records[i].id) {
                needed_by[j].push(records[i].id.clone());
            }
            if !reasons[j].contains(&KeepReason::Chain) {
                reasons[j].push(KeepReason::Chain);
                reasons[j].sort();
            }
            parent = records[j].parent();
        }
    }
    needed_by
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::IncrementalOf;
    use crate::test_support::backup_record;

    fn inc(id: &str, segno: u64, parent: &BackupRecord) -> BackupRecord {
        BackupRecord {
            incremental: Some(IncrementalOf {
                parent: parent.id.clone(),
                parent_manifest_sha256: String::new(),
                full: parent.chain_full().into(),
                depth: parent.chain_depth() + 1,
                block_size: 8192,
                segment_blocks: 131_072,
            }),
            ..backup_record(id, segno)
        }
    }

    #[test]
    fn every_ancestor_of_a_kept_incremental_is_kept_and_says_why() {
        let full = backup_record("20261121T020000Z", 2);
        let i1 = inc("20261122T020000Z", 4, &full);
        let i2 = inc("20261123T020000Z", 6, &i1);
        let other = backup_record("20261120T020000Z", 1);
        let records = vec![other, full, i1, i2];
        // Only the newest is kept by the rules.
        let mut reasons = vec![vec![], vec![], vec![], vec![KeepReason::Newest]];
        let needed = protect_chains(&records, &mut reasons);
        assert!(reasons[0].is_empty(), "the unrelated full backup may go");
        assert_eq!(reasons[1], [KeepReason::Chain]);
        assert_eq!(reasons[2], [KeepReason::Chain]);
        assert_eq!(needed[1], [records[3].id.clone()]);
        assert_eq!(needed[2], [records[3].id.clone()]);
        assert!(needed[3].is_empty());
    }

    #[test]
    fn an_expired_incremental_protects_nothing_and_a_missing_parent_ends_the_walk() {
        let full = backup_record("20261121T020000Z", 2);
        let i1 = inc("20261122T020000Z", 4, &full);
        let newer_full = backup_record("20261123T020000Z", 6);
        let records = vec![i1.clone(), newer_full];
        let mut reasons = vec![vec![], vec![KeepReason::Newest]];
        protect_chains(&records, &mut reasons);
        assert!(reasons[0].is_empty());
        let records = vec![i1];
        let mut reasons = vec![vec![KeepReason::Newest]];
        let needed = protect_chains(&records, &mut reasons);
        assert_eq!(needed, [Vec::<String>::new()]);
    }
}
