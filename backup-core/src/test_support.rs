//! Builders shared by the unit tests: cheap repositories and hand-made backup records.

use std::path::Path;

use crate::catalog::{BackupRecord, BackupStatus, RECORD_FORMAT};
use crate::compress::Compression;
use crate::crypto::{Encryption, Secret};
use crate::repo::config::{ClusterIdentity, RepoConfig};
use crate::repo::{InitOptions, KdfCost, Repository};
use crate::store::mem::MemStore;
use crate::store::RepoLocation;
use std::sync::Arc;

/// The system identifier of the test clusters.
pub(crate) const SYSID: u64 = 7_300_000_000_000_000_001;

/// The passphrase of encrypted test repositories.
pub(crate) const PASSPHRASE: &str = "pw";

/// `InitOptions` with `encryption` and a cheap scrypt cost, so the tests stay fast.
pub(crate) fn fast_init_options(encryption: Encryption) -> InitOptions {
    InitOptions {
        encryption,
        kdf_cost: KdfCost {
            log2_n: 10,
            r: 8,
            p: 1,
        },
        ..InitOptions::default()
    }
}

/// A PostgreSQL 16 cluster [`SYSID`] with `wal_segment_size`.
pub(crate) fn cluster(wal_segment_size: u32) -> ClusterIdentity {
    ClusterIdentity {
        system_identifier: SYSID,
        major: 16,
        wal_segment_size,
    }
}

/// A new repository in `dir` with `encryption` ([`PASSPHRASE`] when encrypted), bound to
/// `cluster` when given.
pub(crate) fn test_repo(
    dir: &Path,
    encryption: Encryption,
    cluster: Option<ClusterIdentity>,
) -> Repository {
    let encrypted = encryption != Encryption::None;
    let pass = Secret::from(PASSPHRASE);
    let options = fast_init_options(encryption);
    let location = RepoLocation::local(dir);
    let mut repo = Repository::init(&location, options, encrypted.then_some(&pass)).unwrap();
    if let Some(cluster) = cluster {
        repo.bind_cluster(cluster).unwrap();
    }
    repo
}

/// [`test_repo`] on the in-memory backend; the store is returned too, for tests that look
/// under the repository or damage it.
pub(crate) fn mem_repo(
    encryption: Encryption,
    cluster: Option<ClusterIdentity>,
) -> (MemStore, Repository) {
    let store = MemStore::default();
    let encrypted = encryption != Encryption::None;
    let pass = Secret::from(PASSPHRASE);
    let options = fast_init_options(encryption);
    let mut repo =
        Repository::init_in(Arc::new(store.clone()), options, encrypted.then_some(&pass)).unwrap();
    if let Some(cluster) = cluster {
        repo.bind_cluster(cluster).unwrap();
    }
    (store, repo)
}

/// The config of an unencrypted lz4 repository bound to a 16 MiB-segment cluster.
pub(crate) fn bound_config() -> RepoConfig {
    RepoConfig {
        format_version: crate::repo::config::FORMAT_VERSION,
        mac: None,
        repository_id: "00".repeat(16),
        created_unix: 0,
        compression: Compression::Lz4,
        encryption: None,
        cluster: Some(cluster(16 << 20)),
    }
}

/// A complete, unsealed record of backup `id` (`YYYYMMDDTHHMMSSZ`, which gives its start time;
/// it took 5 s) of cluster [`SYSID`] with 16 MiB segments on timeline 1, starting 0x28 into
/// segment `start_segno` and ending in it.
pub(crate) fn backup_record(id: &str, start_segno: u64) -> BackupRecord {
    let at = |seconds: u32| {
        format!(
            "{}-{}-{}T{}:{}:{seconds:02}Z",
            &id[0..4],
            &id[4..6],
            &id[6..8],
            &id[9..11],
            &id[11..13]
        )
    };
    let started: u32 = id[13..15].parse().unwrap();
    BackupRecord {
        format: RECORD_FORMAT,
        id: id.to_string(),
        label: String::new(),
        status: BackupStatus::Complete,
        start_lsn: pgwire_repl::Lsn((start_segno << 24) + 0x28),
        start_timeline: 1,
        end_lsn: pgwire_repl::Lsn((start_segno << 24) + 0x100),
        end_timeline: 1,
        start_time: at(started),
        end_time: at(started + 5),
        duration_seconds: 5.0,
        server_version: "16.2".into(),
        server_major: 16,
        system_identifier: SYSID.to_string(),
        wal_segment_size: 16 << 20,
        raw_bytes: 1000,
        stored_bytes: 500,
        compression: "lz4".into(),
        encryption: "aes-256-gcm".into(),
        archives: vec![],
        manifest_file: "backup_manifest.lz4.enc".into(),
        files_verified: 10,
        wal_segments: vec![format!("0000000100000000{start_segno:08X}")],
        partial_wal_file: None,
        history_files: vec![],
        incremental: None,
        checksum: None,
        mac: None,
        key_id: None,
    }
}

/// A 1 MiB WAL segment of timeline `tli` with `valid` page headers (the rest zero), like the
/// server's files; its first page's long header names cluster `sysid`.
pub(crate) fn wal_segment(sysid: u64, tli: u32, segno: u64, valid: usize) -> Vec<u8> {
    const MIB: u32 = 1 << 20;
    let mut out = vec![0u8; MIB as usize];
    for (k, page) in out.chunks_mut(8192).take(valid).enumerate() {
        page[0..2].copy_from_slice(&0xD113u16.to_le_bytes());
        let info: u16 = if k == 0 { 2 } else { 0 };
        page[2..4].copy_from_slice(&info.to_le_bytes());
        page[4..8].copy_from_slice(&tli.to_le_bytes());
        let addr = segno * u64::from(MIB) + (k * 8192) as u64;
        page[8..16].copy_from_slice(&addr.to_le_bytes());
        page[40..48].copy_from_slice(&(segno * 1000 + k as u64).to_le_bytes());
        if k == 0 {
            page[24..32].copy_from_slice(&sysid.to_le_bytes());
            page[32..36].copy_from_slice(&MIB.to_le_bytes());
            page[36..40].copy_from_slice(&8192u32.to_le_bytes());
        }
    }
    out
}
