//! `pgstream base --incremental` (PostgreSQL 17+): before BASE_BACKUP, on the same
//! connection, the parent backup's stored manifest streams to the server (UPLOAD_MANIFEST);
//! the server then sends changed relation files as `INCREMENTAL.<name>`, which are stored and
//! checked against its manifest like any other file.
//!
//! Everything that can be known before the server does any work is checked here, each with the
//! fix in its message: the server's version and `summarize_wal`, the parent (present, readable,
//! its own chain whole, same cluster and major, on the server's timeline history). What only
//! the server knows, whether its WAL summaries still reach back to the parent, arrives as its
//! error during BASE_BACKUP and is translated by [`explain`].

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pgwire_repl::basebackup::options::MIN_INCREMENTAL_MAJOR;
use pgwire_repl::commands::SystemIdentity;
use pgwire_repl::Connection;

use super::BaseBackupError;
use crate::catalog::{BackupRecord, Catalog, CatalogError, ChainError, IncrementalOf};
use crate::layout;
use crate::repo::Repository;
use crate::restore::incremental_file::BlockGeometry;
use crate::restore::window::backup_on_path;
use crate::wal::TimelineHistory;

/// Bytes of the parent's manifest read per piece sent.
const PIECE: usize = 64 * 1024;

/// Which backup an incremental backup is relative to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parent {
    /// The newest backup in the repository.
    Latest,
    /// This backup.
    Id(String),
}

/// An incremental backup, or a schedule policy that picks incremental or full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncrementalPlan {
    pub parent: Parent,
    /// Policy: take a full backup instead when there is no backup yet, when the full backup
    /// of the newest chain started longer ago than this, or when the newest backup cannot be
    /// a parent (another timeline, a broken chain). `None`: incremental, or an error saying why
    /// not.
    pub full_if_older_than: Option<Duration>,
}

/// Why an incremental backup cannot be taken. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum IncrementalError {
    #[error(
        "incremental backups need PostgreSQL {MIN_INCREMENTAL_MAJOR} or later; the server runs \
         PostgreSQL {major}: take a full backup (without --incremental)"
    )]
    ServerTooOld { major: u32 },
    #[error(
        "the server has summarize_wal = off, and incremental backups need its WAL summaries: \
         run ALTER SYSTEM SET summarize_wal = on; SELECT pg_reload_conf(); then take a full \
         backup, which later incremental backups can build on (pgstream check --incremental \
         checks this)"
    )]
    SummarizeWalOff,
    #[error("the repository has no backup yet to be incremental to: take a full backup first")]
    NoBackups,
    #[error(
        "backup {id} is not in the repository (expired, deleted, or never taken): choose \
         another parent with --from (see pgstream list), or take a full backup"
    )]
    ParentMissing { id: String },
    #[error("the parent backup {id} cannot be read: {source}")]
    ParentUnreadable {
        id: String,
        #[source]
        source: CatalogError,
    },
    #[error("the parent backup cannot be restored, so nothing can build on it: {0}")]
    ParentChain(#[source] ChainError),
    #[error(
        "backup {id} is of another cluster (system identifier {parent}, the server's is \
         {server}): take a full backup"
    )]
    ParentOtherCluster {
        id: String,
        parent: u64,
        server: u64,
    },
    #[error("backup {id} is of PostgreSQL {parent}, the server runs {server}: take a full backup")]
    ParentOtherMajor {
        id: String,
        parent: u32,
        server: u32,
    },
    #[error(
        "backup {id} ended at {end} on timeline {timeline}, which is not in the history of the \
         server's timeline {server} (the server was restored to an earlier point or is another \
         branch): take a full backup"
    )]
    ParentOtherTimeline {
        id: String,
        end: pgwire_repl::Lsn,
        timeline: u32,
        server: u32,
    },
    #[error(
        "the server's WAL summaries do not reach back to backup {id}: {server}. Summaries \
         exist only from when summarize_wal was turned on and are removed after \
         wal_summary_keep_time (default 10 days): take a full backup"
    )]
    SummariesMissing { id: String, server: String },
    #[error("the server refused backup {id} as the base of an incremental backup: {server}")]
    ParentRefused { id: String, server: String },
    #[error("reading the manifest of backup {id} ({file}): {reason}")]
    ParentManifest {
        id: String,
        file: String,
        reason: String,
    },
    #[error("the server reported an unusable {what}: {value:?}")]
    Geometry { what: &'static str, value: String },
}

/// Checks the server and the parent, and uploads the parent's manifest on `conn`. Returns what
/// the new backup's record says of its parent, or `None` when the plan's policy chose a full
/// backup (the reason is logged).
pub(super) async fn prepare(
    conn: &mut Connection,
    repo: &Arc<Repository>,
    identity: &SystemIdentity,
    major: u32,
    plan: &IncrementalPlan,
) -> Result<Option<IncrementalOf>, BaseBackupError> {
    let policy = plan.full_if_older_than;
    if major < MIN_INCREMENTAL_MAJOR {
        return Err(IncrementalError::ServerTooOld { major }.into());
    }
    if conn.show("summarize_wal").await? != "on" {
        return Err(IncrementalError::SummarizeWalOff.into());
    }
    let geometry = geometry(conn).await?;
    let catalog = repo.catalog();
    let parent = match choose_parent(repo, &catalog, &plan.parent) {
        Ok(p) => p,
        Err(IncrementalError::NoBackups) if policy.is_some() => {
            tracing::info!("no backup yet: taking a full backup");
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(max_age) = policy {
        let full = catalog.read(parent.chain_full()).map_err(|source| {
            IncrementalError::ParentUnreadable {
                id: parent.chain_full().to_string(),
                source,
            }
        })?;
        if older_than(&full, max_age) {
            tracing::info!(full = %full.id, "the newest full backup is older than the policy allows: taking a full backup");
            return Ok(None);
        }
    }
    match check_parent(conn, &catalog, &parent, identity, major).await {
        Ok(()) => {}
        Err(e) if policy.is_some() && falls_back_to_full(&e) => {
            tracing::warn!(error = %e, "taking a full backup instead of an incremental one");
            return Ok(None);
        }
        Err(e) => return Err(e),
    }
    let sha256 = upload(conn, repo, &parent).await?;
    tracing::info!(parent = %parent.id, depth = parent.chain_depth() + 1, "parent manifest uploaded");
    Ok(Some(IncrementalOf {
        parent: parent.id.clone(),
        parent_manifest_sha256: sha256,
        full: parent.chain_full().to_string(),
        depth: parent.chain_depth() + 1,
        block_size: geometry.block_size,
        segment_blocks: geometry.segment_blocks,
    }))
}

/// Problems a full backup solves, which a schedule policy answers with one.
fn falls_back_to_full(e: &BaseBackupError) -> bool {
    matches!(
        e,
        BaseBackupError::Incremental(
            IncrementalError::ParentOtherTimeline { .. }
                | IncrementalError::ParentChain(_)
                | IncrementalError::ParentOtherMajor { .. }
        )
    )
}

fn older_than(record: &BackupRecord, max_age: Duration) -> bool {
    match humantime::parse_rfc3339_weak(&record.start_time) {
        Ok(t) => SystemTime::now()
            .duration_since(t)
            .is_ok_and(|age| age > max_age),
        // An unreadable time cannot prove the chain young enough.
        Err(_) => true,
    }
}

async fn geometry(conn: &mut Connection) -> Result<BlockGeometry, BaseBackupError> {
    let block = conn.show("block_size").await?;
    let block_size: u32 = block
        .trim()
        .parse()
        .map_err(|_| IncrementalError::Geometry {
            what: "block_size",
            value: block.clone(),
        })?;
    let segment = conn.show("segment_size").await?;
    let bytes = parse_size(&segment).ok_or_else(|| IncrementalError::Geometry {
        what: "segment_size",
        value: segment.clone(),
    })?;
    let g = BlockGeometry {
        block_size,
        segment_blocks: u32::try_from(bytes / u64::from(block_size.max(1))).unwrap_or(0),
    };
    g.validate().map_err(|_| {
        IncrementalError::Geometry {
            what: "block_size and segment_size",
            value: format!("{block}, {segment}"),
        }
        .into()
    })
}

/// `8kB`, `1GB`, `32MB` (SHOW's units) in bytes.
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        _ => return None,
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

fn choose_parent(
    repo: &Repository,
    catalog: &Catalog<'_>,
    parent: &Parent,
) -> Result<BackupRecord, IncrementalError> {
    let record = match parent {
        Parent::Latest => match catalog.resolve("latest") {
            Ok(r) => r,
            Err(CatalogError::NoBackups) => return Err(IncrementalError::NoBackups),
            Err(source) => {
                return Err(IncrementalError::ParentUnreadable {
                    id: "latest".into(),
                    source,
                })
            }
        },
        Parent::Id(id) => match catalog.read(id) {
            Ok(r) => r,
            Err(CatalogError::NoSuchBackup { .. }) => {
                return Err(IncrementalError::ParentMissing { id: id.clone() })
            }
            Err(source) => {
                return Err(IncrementalError::ParentUnreadable {
                    id: id.clone(),
                    source,
                })
            }
        },
    };
    let key = repo.keyring();
    record
        .verify_mac(key, &catalog.record_path(&record.id))
        .map_err(|source| IncrementalError::ParentUnreadable {
            id: record.id.clone(),
            source,
        })?;
    Ok(record)
}

async fn check_parent(
    conn: &mut Connection,
    catalog: &Catalog<'_>,
    parent: &BackupRecord,
    identity: &SystemIdentity,
    major: u32,
) -> Result<(), BaseBackupError> {
    let id = parent.id.clone();
    if parent.system_identifier() != Some(identity.system_id) {
        return Err(IncrementalError::ParentOtherCluster {
            id,
            parent: parent.system_identifier().unwrap_or(0),
            server: identity.system_id,
        }
        .into());
    }
    if parent.server_major != major {
        return Err(IncrementalError::ParentOtherMajor {
            id,
            parent: parent.server_major,
            server: major,
        }
        .into());
    }
    catalog
        .chain(parent)
        .map_err(IncrementalError::ParentChain)?;
    let server_tli = identity.timeline;
    if parent.end_timeline() != server_tli {
        let history = if server_tli.0 > 1 {
            let file = conn.timeline_history(server_tli).await?;
            TimelineHistory::parse(server_tli, &file.content).map_err(|e| {
                BaseBackupError::Internal(format!("the server's {}: {e}", file.filename))
            })?
        } else {
            TimelineHistory::root(server_tli)
        };
        if !backup_on_path(parent, &history) {
            return Err(IncrementalError::ParentOtherTimeline {
                id,
                end: parent.end_lsn,
                timeline: parent.end_timeline,
                server: server_tli.0,
            }
            .into());
        }
    }
    Ok(())
}

/// Streams the parent's stored manifest to the server; returns its SHA-256 (hex).
async fn upload(
    conn: &mut Connection,
    repo: &Arc<Repository>,
    parent: &BackupRecord,
) -> Result<String, BaseBackupError> {
    let file = layout::backup_file(&parent.id, &parent.manifest_file);
    let manifest_err = |reason: String| IncrementalError::ParentManifest {
        id: parent.id.clone(),
        file: file.clone(),
        reason,
    };
    let mut reader = repo
        .open_file(&file)
        .map_err(|e| manifest_err(e.to_string()))?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, String>>(4);
    let read = tokio::task::spawn_blocking(move || {
        let mut hash = openssl::sha::Sha256::new();
        loop {
            let mut piece = vec![0u8; PIECE];
            match reader.read(&mut piece) {
                Ok(0) => return Some(hex::encode(hash.finish())),
                Ok(n) => {
                    piece.truncate(n);
                    hash.update(&piece);
                    if tx.blocking_send(Ok(piece)).is_err() {
                        return None;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(e.to_string()));
                    return None;
                }
            }
        }
    });
    let refused = |e: pgwire_repl::Error| -> BaseBackupError {
        match e {
            pgwire_repl::Error::Server(db) => IncrementalError::ParentRefused {
                id: parent.id.clone(),
                server: db.to_string(),
            }
            .into(),
            other => other.into(),
        }
    };
    let mut sending = conn.start_manifest_upload().await.map_err(refused)?;
    while let Some(piece) = rx.recv().await {
        let piece = piece.map_err(&manifest_err)?;
        sending.send(&piece).await.map_err(refused)?;
    }
    let sha256 = read
        .await
        .map_err(|e| BaseBackupError::Internal(format!("the manifest reader failed: {e}")))?
        .ok_or_else(|| manifest_err("the reader stopped early".into()))?;
    sending.finish().await.map_err(refused)?;
    Ok(sha256)
}

/// Translates the server's refusals of `BASE_BACKUP (INCREMENTAL)` (SQLSTATE 55000, from
/// basebackup_incremental.c) into errors that say what to do.
pub(super) fn explain(e: BaseBackupError, parent: &str) -> BaseBackupError {
    let BaseBackupError::Client(pgwire_repl::Error::Server(db)) = &e else {
        return e;
    };
    if db.code != "55000" {
        return e;
    }
    let server = db.to_string();
    let m = db.message.as_str();
    if m.starts_with("WAL summaries are required") {
        IncrementalError::SummariesMissing {
            id: parent.to_string(),
            server,
        }
        .into()
    } else if m.contains("unless WAL summarization is enabled") {
        IncrementalError::SummarizeWalOff.into()
    } else if m.starts_with("manifest requires WAL") || m.contains("not in this server's history") {
        IncrementalError::ParentRefused {
            id: parent.to_string(),
            server,
        }
        .into()
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_sizes_parse() {
        assert_eq!(parse_size("1GB"), Some(1 << 30));
        assert_eq!(parse_size("8kB"), Some(8192));
        assert_eq!(parse_size("8192"), Some(8192));
        assert_eq!(parse_size("2 MB"), Some(2 << 20));
        assert_eq!(parse_size("1XB"), None);
        assert_eq!(parse_size("GB"), None);
    }

    #[test]
    fn server_refusals_are_explained() {
        let server = |code: &str, message: &str| {
            BaseBackupError::Client(pgwire_repl::Error::Server(Box::new(pgwire_repl::DbError {
                severity: "ERROR".into(),
                code: code.into(),
                message: message.into(),
                ..Default::default()
            })))
        };
        let e = explain(
            server(
                "55000",
                "WAL summaries are required on timeline 1 from 0/2000028 to 0/5000028, but no \
                 summaries for that timeline and LSN range exist",
            ),
            "P",
        );
        assert!(
            matches!(&e, BaseBackupError::Incremental(IncrementalError::SummariesMissing { id, .. }) if id == "P"),
            "{e}"
        );
        assert!(e.to_string().contains("take a full backup"), "{e}");
        let e = explain(
            server(
                "55000",
                "incremental backups cannot be taken unless WAL summarization is enabled",
            ),
            "P",
        );
        assert!(
            e.to_string()
                .contains("ALTER SYSTEM SET summarize_wal = on"),
            "{e}"
        );
        // Anything else is left as it was.
        let e = explain(server("XX001", "checksum failure"), "P");
        assert!(matches!(e, BaseBackupError::Client(_)), "{e}");
    }
}
