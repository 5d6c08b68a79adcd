//! `pgstream base`: a base backup over the replication protocol, streamed straight into the
//! repository and verified against the server's manifest while it streams.
//!
//! Order of events, and what makes a backup visible only when it is whole:
//! 1. connect, IDENTIFY_SYSTEM, bind the repository to the cluster (or refuse another one);
//! 2. a second connection creates a temporary slot, then BASE_BACKUP starts on the first;
//! 3. each tar archive flows network → bounded channel → sink (compress, encrypt, fsync) while
//!    its members are walked and checksummed; WAL streams alongside into `wal/`;
//! 4. the manifest (sent last) is checked against every member seen, then stored;
//! 5. the WAL up to the backup's end is stored; then the record is written, last and
//!    create-only: that is the commit (catalog::lifecycle).
//!
//! The backup's id is claimed with a `backup.<id>` lease before anything is written under
//! `backups/<id>/`, and held until the record is durable, so a concurrent run never takes the
//! backup for a dead one. Any failure or cancellation leaves at most an unfinished id without a
//! record, removed on the spot when possible and otherwise by the next run.

mod archive;
mod error;
pub mod incremental;
mod manifest;
mod open;
mod tablespaces;
mod walstream;

pub use error::BaseBackupError;
pub use incremental::{IncrementalError, IncrementalPlan, Parent};

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use pgwire_repl::basebackup::options::{
    Checkpoint, Manifest as ManifestOption, ManifestChecksums, ServerCompression,
};
use pgwire_repl::basebackup::{BaseBackupEvent, BaseBackupOptions, BaseBackupStream};
use pgwire_repl::config::{Config, ReplicationMode};
use pgwire_repl::{Connection, Lsn, TimelineId};
use tokio_util::sync::CancellationToken;

use crate::catalog::{self, lifecycle, BackupRecord, BackupStatus, Catalog};
use crate::layout;
use crate::replication::Liveness;
use crate::repo::Repository;
use crate::store::lease::LeaseHolder;
use crate::store::{delete_prefix, RepoLocation};
use crate::tarwalk::SeenFile;
use crate::wal::WalSegmentSize;
use archive::{ArchiveWriter, TablespaceOf};
use manifest::{store_manifest, verify_manifest};
use walstream::WalStreamer;

/// A point on the backup's timeline, logged at debug level (`PGSTREAM_LOG=debug` shows where
/// the wall time goes: connections, checkpoint, streaming, finishing).
fn mark(phase: &'static str) {
    tracing::debug!(phase, "base backup timeline");
}
/// The oldest server pgstream backs up (backup manifests arrived in 13).
pub const MIN_SERVER_MAJOR: u32 = 13;

/// At most this many manifest mismatches are listed in the error.
const MISMATCHES_SHOWN: usize = 20;

/// What to back up and how.
#[derive(Debug, Clone)]
pub struct BaseBackupPlan {
    /// The source server (replication=true is set here).
    pub source: Config,
    pub label: Option<String>,
    pub checkpoint: Checkpoint,
    /// Server-side rate limit in kB/s.
    pub max_rate_kb: Option<u32>,
    /// Let the server compress (15+); the archives are stored as they arrive.
    pub server_compression: Option<ServerCompression>,
    /// Ask the server to verify page checksums while reading files.
    pub verify_checksums: bool,
    /// An incremental backup (PostgreSQL 17+), or a policy choosing one; `None`: full.
    pub incremental: Option<IncrementalPlan>,
    /// How long a connection may deliver nothing, once the files stream, before it is taken
    /// for lost (a stalled network, a server gone without closing it); `None`: forever.
    pub stall_timeout: Option<Duration>,
}

/// Where the backup is; for progress reporting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Connecting,
    /// BASE_BACKUP sent; the server runs its checkpoint.
    Checkpoint,
    /// Files streaming; `total` is the server's estimate in bytes.
    Streaming {
        total: Option<u64>,
    },
    /// Checking the manifest and storing the remaining WAL.
    Finishing,
}

/// Receives progress; called from the backup task (keep it cheap).
pub trait Progress: Send + Sync {
    fn phase(&self, phase: Phase);
    /// Bytes of the database streamed so far.
    fn bytes(&self, done: u64);
}

/// Ignores progress.
pub struct NoProgress;

impl Progress for NoProgress {
    fn phase(&self, _: Phase) {}
    fn bytes(&self, _: u64) {}
}

/// Both replication connections of a backup, checked to reach the same cluster, with the
/// WAL the backup will need already reserved by a temporary slot on the second.
pub struct Connected {
    conn: Connection,
    identity: pgwire_repl::commands::SystemIdentity,
    major: u32,
    server_version: String,
    seg_bytes: u64,
    wal: walstream::PreparedStream,
}

impl std::fmt::Debug for Connected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connected")
            .field("major", &self.major)
            .field("system_id", &self.identity.system_id)
            .finish_non_exhaustive()
    }
}

/// Opens both connections at once and reserves WAL. Needs no repository, so a caller can
/// open the repository (a deliberately slow key derivation) meanwhile: see [`run_connected`].
pub async fn connect(plan: &BaseBackupPlan) -> Result<Connected, BaseBackupError> {
    let mut source = plan.source.clone();
    source.replication = ReplicationMode::Physical;
    let first = async {
        let mut conn = Connection::connect(&source).await?;
        let major = conn.server_version().major;
        if major < MIN_SERVER_MAJOR {
            return Err(BaseBackupError::UnsupportedServer { major });
        }
        let identity = conn.identify_system().await?;
        let seg_bytes = conn.wal_segment_size().await?;
        Ok((conn, major, identity, seg_bytes))
    };
    let ((conn, major, identity, seg_bytes), second) =
        tokio::try_join!(first, walstream::connect(&source))?;
    mark("connected");
    let wal = walstream::prepare(second, identity.system_id).await?;
    mark("WAL reserved");
    let server_version = conn.parameter("server_version").unwrap_or("").to_string();
    Ok(Connected {
        conn,
        identity,
        major,
        server_version,
        seg_bytes,
        wal,
    })
}

/// Runs a base backup into `repo` and returns its catalog record.
pub async fn run(
    repo: Repository,
    plan: BaseBackupPlan,
    cancel: CancellationToken,
    progress: Arc<dyn Progress>,
) -> Result<BackupRecord, BaseBackupError> {
    progress.phase(Phase::Connecting);
    let connected = tokio::select! {
        biased;
        _ = cancel.cancelled() => return Err(BaseBackupError::Cancelled),
        c = connect(&plan) => c?,
    };
    run_connected(repo, plan, connected, cancel, progress).await
}

/// [`run`] over connections [`connect`] opened.
pub async fn run_connected(
    repo: Repository,
    plan: BaseBackupPlan,
    connected: Connected,
    cancel: CancellationToken,
    progress: Arc<dyn Progress>,
) -> Result<BackupRecord, BaseBackupError> {
    let location = repo.location().clone();
    let opened: OpeningRepository = Box::pin(std::future::ready(Some(repo)));
    run_opening(location, opened, plan, connected, cancel, progress).await
}

/// The repository at `location` as the caller is still opening it (unlocking it is a
/// deliberately slow key derivation); `None` when that failed, and the caller reports why.
pub type OpeningRepository =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<Repository>> + Send>>;

/// [`run_connected`] while the repository is still being opened: BASE_BACKUP is sent first,
/// so the server's checkpoint overlaps the key derivation and the first data waits in the
/// socket; nothing is written to the repository before it is open and bound to the cluster.
/// When `repo` yields `None`, the backup stops with [`BaseBackupError::RepositoryNotOpened`].
pub async fn run_opening(
    location: RepoLocation,
    repo: OpeningRepository,
    plan: BaseBackupPlan,
    connected: Connected,
    cancel: CancellationToken,
    progress: Arc<dyn Progress>,
) -> Result<BackupRecord, BaseBackupError> {
    // On a runtime worker, the task reading the server polls the socket itself; left on the
    // caller's `block_on` thread, every readiness event would be relayed to it by a worker
    // (a wake-up of two threads per read: measured 13% of pgstream's CPU).
    let task = tokio::spawn(run_here(location, repo, plan, connected, cancel, progress));
    let abort = task.abort_handle();
    let _abort_if_dropped = AbortOnDrop(abort);
    match task.await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(BaseBackupError::Internal(format!(
            "the backup task ended: {e}"
        ))),
    }
}

/// Stops the spawned backup when its caller's future is dropped, as before it was spawned.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn run_here(
    location: RepoLocation,
    opening: OpeningRepository,
    plan: BaseBackupPlan,
    connected: Connected,
    cancel: CancellationToken,
    progress: Arc<dyn Progress>,
) -> Result<BackupRecord, BaseBackupError> {
    let Connected {
        mut conn,
        identity,
        major,
        server_version,
        seg_bytes,
        wal,
    } = connected;
    let seg_size = WalSegmentSize::new(seg_bytes)
        .map_err(|e| BaseBackupError::Internal(format!("wal_segment_size: {e}")))?;
    let start_time = SystemTime::now();
    let started = Instant::now();
    // The default label names the id the backup will most likely get (BASE_BACKUP goes out
    // before the repository is open); the id itself is claimed once it is, and a run started
    // in the same second gets a suffix.
    let provisional = catalog::new_backup_id(start_time, |_| false);
    let mut options = backup_options(&plan, &provisional);
    progress.phase(Phase::Checkpoint);
    let (stream, repo, incremental_of) = open::start(
        &mut conn,
        &mut options,
        opening,
        &cancel,
        &location,
        (&identity, major, seg_bytes, plan.incremental.as_ref()),
    )
    .await?;
    let claim = {
        let repo = Arc::clone(&repo);
        tokio::task::spawn_blocking(move || {
            remove_dead(&repo);
            lifecycle::claim_new_id(
                repo.store().as_ref(),
                start_time,
                &LeaseHolder::this_process("pgstream base"),
            )
        })
        .await
        .map_err(|e| BaseBackupError::Internal(e.to_string()))??
    };
    let id = claim.id().to_string();
    let span = tracing::info_span!("base_backup", backup_id = %id);
    let _enter = span.enter();

    let result = async {
        let record = take(
            stream,
            options.label,
            &repo,
            &id,
            seg_size,
            wal,
            &cancel,
            progress.as_ref(),
            Meta {
                start_time,
                started,
                system_id: identity.system_id,
                server_version,
                major,
                stall_timeout: plan.stall_timeout,
            },
        )
        .await
        .map_err(|e| match &incremental_of {
            Some(of) => incremental::explain(e, &of.parent),
            None => e,
        })?;
        let mut record = record;
        record.incremental = incremental_of.clone();
        record.seal(repo.sealing_key())?;
        crate::failpoint!("base.before-record");
        // The lease must still be ours (on object stores it can be lost to an expiry).
        claim
            .lease()
            .check()
            .map_err(crate::repo::RepoError::from)?;
        let repo2 = Arc::clone(&repo);
        let rec = record.clone();
        tokio::task::spawn_blocking(move || Catalog::new(repo2.store().as_ref()).write(&rec))
            .await
            .map_err(|e| BaseBackupError::Internal(e.to_string()))??;
        mark("record durable");
        crate::failpoint!("base.after-record");
        Ok(record)
    }
    .await;
    match result {
        Ok(record) => {
            conn.close().await;
            tracing::info!(
                start = %record.start_lsn,
                end = %record.end_lsn,
                files = record.files_verified,
                "backup complete"
            );
            Ok(record)
        }
        Err(e) => {
            // Still under our lease: nothing else can own these files.
            let store = Arc::clone(repo.store());
            let prefix = Catalog::prefix(&id);
            let cleaned =
                tokio::task::spawn_blocking(move || delete_prefix(store.as_ref(), &prefix)).await;
            if !matches!(cleaned, Ok(Ok(_))) {
                tracing::warn!("could not remove the unfinished backup; the next run will");
            }
            drop(claim);
            Err(e)
        }
    }
}

struct Meta {
    start_time: SystemTime,
    started: Instant,
    system_id: u64,
    server_version: String,
    major: u32,
    /// See [`BaseBackupPlan::stall_timeout`].
    stall_timeout: Option<Duration>,
}

/// Removes what runs that died left behind (only provably dead ones: see
/// [`lifecycle::remove_dead`]); a failure to do so is only worth a warning.
fn remove_dead(repo: &Repository) {
    if let Err(e) = lifecycle::remove_dead(repo.store().as_ref(), "pgstream base (cleanup)") {
        tracing::warn!(error = %e, "could not look for unfinished backups");
    }
}

/// The BASE_BACKUP command's options for backup `id`.
fn backup_options(plan: &BaseBackupPlan, id: &str) -> BaseBackupOptions {
    BaseBackupOptions {
        label: plan
            .label
            .clone()
            .unwrap_or_else(|| format!("pgstream base backup {id}")),
        progress: true,
        checkpoint: plan.checkpoint,
        // WAL comes from our own stream, so the server must not wait for archiving.
        wal: false,
        wait_for_wal_archive: false,
        max_rate_kb: plan.max_rate_kb,
        // Symlinks in pg_tblspc instead of a tablespace_map file: restore can then point
        // tablespaces elsewhere without editing a file the manifest covers.
        tablespace_map: false,
        verify_checksums: plan.verify_checksums,
        manifest: ManifestOption::Yes,
        manifest_checksums: ManifestChecksums::Crc32c,
        server_compression: plan.server_compression.clone(),
        incremental: false,
    }
}

#[allow(clippy::too_many_arguments)]
async fn take(
    mut stream: BaseBackupStream<'_>,
    label: String,
    repo: &Arc<Repository>,
    id: &str,
    seg_size: WalSegmentSize,
    wal: walstream::PreparedStream,
    cancel: &CancellationToken,
    progress: &dyn Progress,
    meta: Meta,
) -> Result<BackupRecord, BaseBackupError> {
    // The user's token stays apart: the WAL streamer cancels only this child when it fails,
    // and its error, not "stopped", is then the one to report.
    let user_cancel = cancel;
    let cancel = cancel.child_token();
    let mut first_data = true;
    let mut streamer: Option<WalStreamer> = None;
    let mut wal = Some(wal);
    let mut tablespaces = Vec::new();
    let mut current: Option<ArchiveWriter> = None;
    let mut archives = Vec::new();
    let mut seen: Vec<SeenFile> = Vec::new();
    let mut manifest = Vec::new();
    let mut got_manifest = false;
    let mut start: Option<(Lsn, TimelineId)> = None;
    let mut end: Option<(Lsn, TimelineId)> = None;
    let mut received: u64 = 0;
    let mut server_progress = false;
    let mut live = Liveness::new(meta.stall_timeout);

    let outcome: Result<(), BaseBackupError> = async {
        loop {
            // Silence counts while waiting for the server, once the files stream (during the
            // checkpoint before them a server sends nothing, for as long as it takes).
            live.heard();
            let ev = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(BaseBackupError::Cancelled),
                ev = stream.next() => ev?,
                _ = live.lost(), if start.is_some() => return Err(live.lost_error().into()),
            };
            let Some(ev) = ev else { break };
            match ev {
                BaseBackupEvent::Started { start_lsn, timeline } => {
                    mark("checkpoint done");
                    tracing::info!(start = %start_lsn, timeline = %timeline, "checkpoint done, streaming");
                    start = Some((start_lsn, timeline));
                    let prepared = wal.take().expect("Started comes once");
                    streamer = Some(WalStreamer::spawn(
                        prepared,
                        start_lsn,
                        timeline,
                        seg_size,
                        Arc::clone(repo),
                        id.to_string(),
                        cancel.clone(),
                        meta.stall_timeout,
                    ));
                }
                BaseBackupEvent::Tablespaces(list) => {
                    tablespaces::check_server_list(&list)?;
                    let total: Option<u64> =
                        list.iter().map(|t| t.size_kb.map(|k| k * 1024)).sum();
                    progress.phase(Phase::Streaming { total });
                    tablespaces = list;
                }
                BaseBackupEvent::ArchiveStart { name, tablespace_location } => {
                    let tablespace = match tablespace_location {
                        None => None,
                        Some(location) => {
                            tablespaces::check(format!("of archive {name}"), &location)?;
                            let oid = tablespaces
                                .iter()
                                .find(|t| t.location.as_deref() == Some(location.as_str()))
                                .and_then(|t| t.oid)
                                .or_else(|| name.split('.').next().and_then(|s| s.parse().ok()))
                                .ok_or_else(|| {
                                    BaseBackupError::Internal(format!(
                                        "archive {name} names no known tablespace"
                                    ))
                                })?;
                            Some(TablespaceOf { oid, location })
                        }
                    };
                    current = Some(ArchiveWriter::start(Arc::clone(repo), id, name, tablespace));
                }
                BaseBackupEvent::ArchiveData(data) => {
                    if first_data {
                        first_data = false;
                        mark("first data");
                    }
                    received += data.len() as u64;
                    if !server_progress {
                        progress.bytes(received);
                    }
                    let writer = current.as_mut().ok_or_else(|| {
                        BaseBackupError::Internal("archive data outside an archive".into())
                    })?;
                    tokio::select! {
                        biased;
                        _ = cancel.cancelled() => return Err(BaseBackupError::Cancelled),
                        r = writer.send(data) => r?,
                    }
                }
                BaseBackupEvent::ArchiveEnd => {
                    let writer = current.take().ok_or_else(|| {
                        BaseBackupError::Internal("archive end outside an archive".into())
                    })?;
                    mark("archive received");
                    let out = writer.finish().await?;
                    mark("archive durable and walked");
                    tracing::info!(archive = %out.record.name, bytes = out.record.raw_bytes, files = out.seen.len(), "archive stored");
                    if out.record.tablespace_oid.is_none() {
                        tablespaces::check_links(&out.seen)?;
                    }
                    seen.extend(out.seen);
                    archives.push(out.record);
                    crate::failpoint!("base.archive-stored");
                }
                BaseBackupEvent::Progress(done) => {
                    server_progress = true;
                    progress.bytes(done);
                }
                BaseBackupEvent::ManifestStart => got_manifest = true,
                BaseBackupEvent::ManifestData(d) => manifest.extend_from_slice(&d),
                BaseBackupEvent::Finished { end_lsn, timeline } => {
                    end = Some((end_lsn, timeline));
                }
            }
        }
        Ok(())
    }
    .await;
    drop(stream);
    if outcome.is_err() {
        // Its files must be let go of before the unfinished backup is removed.
        if let Some(writer) = current.take() {
            writer.abort().await;
        }
    }
    if let Err(e) = outcome {
        if let Some(s) = streamer {
            if matches!(e, BaseBackupError::Cancelled) && !user_cancel.is_cancelled() {
                if let Some(cause) = s.failure().await {
                    return Err(cause);
                }
            } else {
                s.abort().await;
            }
        }
        return Err(e);
    }
    let (Some((start_lsn, start_tli)), Some((end_lsn, end_tli)), Some(streamer)) =
        (start, end, streamer)
    else {
        return Err(BaseBackupError::Internal(
            "BASE_BACKUP ended without start and end positions".into(),
        ));
    };
    progress.phase(Phase::Finishing);
    if !got_manifest {
        streamer.abort().await;
        return Err(BaseBackupError::NoManifest);
    }
    let files_verified = match verify_manifest(&manifest, &seen, start_lsn, end_lsn) {
        Ok(n) => n,
        Err(e) => {
            streamer.abort().await;
            return Err(e);
        }
    };
    mark("manifest verified");
    let manifest_file = format!("backup_manifest{}", layout::suffix(repo.codec()));
    let manifest_stored = store_manifest(repo, id, &manifest_file, manifest).await?;
    crate::failpoint!("base.manifest-stored");
    let wal_outcome = tokio::select! {
        biased;
        _ = user_cancel.cancelled() => return Err(BaseBackupError::Cancelled),
        r = streamer.finish(end_lsn) => r?,
    };
    mark("WAL stored");
    crate::failpoint!("base.wal-stored");
    let end_time = SystemTime::now();
    let raw_bytes = archives.iter().map(|a| a.raw_bytes).sum();
    let stored_bytes = archives.iter().map(|a| a.stored_bytes).sum::<u64>()
        + manifest_stored
        + wal_outcome.stored_bytes;
    let codec = repo.codec();
    Ok(BackupRecord {
        format: catalog::RECORD_FORMAT,
        id: id.to_string(),
        label,
        status: BackupStatus::Complete,
        start_lsn,
        start_timeline: start_tli.0,
        end_lsn,
        end_timeline: end_tli.0,
        start_time: catalog::rfc3339(meta.start_time),
        end_time: catalog::rfc3339(end_time),
        duration_seconds: meta.started.elapsed().as_secs_f64(),
        server_version: meta.server_version,
        server_major: meta.major,
        system_identifier: meta.system_id.to_string(),
        wal_segment_size: seg_size.bytes(),
        raw_bytes,
        stored_bytes,
        compression: codec.compression.to_string(),
        encryption: codec
            .encryption
            .as_ref()
            .map(|e| e.aead.name().to_string())
            .unwrap_or_else(|| "none".to_string()),
        archives,
        manifest_file,
        files_verified,
        wal_segments: wal_outcome.segments,
        partial_wal_file: wal_outcome.partial,
        history_files: wal_outcome.history_files,
        incremental: None,
        checksum: None,
        mac: None,
        key_id: None,
    })
}
