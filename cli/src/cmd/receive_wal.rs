//! `pgstream receive-wal`: the long-lived WAL receiver.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use backup_core::receive::{self, ReceiveError, ReceiveMetrics, ReceiveOptions};

use crate::args::ReceiveWalArgs;
use crate::exit::{classified, Failure};

pub async fn run(args: ReceiveWalArgs) -> anyhow::Result<()> {
    let mut source = super::base::source_config(&args.source)?;
    if let Some(name) = &args.application_name {
        source.application_name = Some(name.clone());
    } else {
        source = source.with_fallback_application_name("pgstream");
    }
    if args.status_interval == 0 {
        return Err(classified(
            Failure::Usage,
            anyhow::anyhow!("--status-interval must be at least 1 second"),
        ));
    }
    if args.create_slot && args.slot.is_none() {
        return Err(classified(
            Failure::Usage,
            anyhow::anyhow!("--create-slot needs --slot NAME"),
        ));
    }
    let metrics = match args.metrics_listen {
        Some(addr) => {
            let metrics = Arc::new(ReceiveMetrics::new());
            let (m, slot) = (Arc::clone(&metrics), args.slot.clone());
            let bound = crate::metrics::http::serve(addr, move || {
                crate::metrics::receive::render(&m.snapshot(), slot.as_deref())
            })
            .map_err(|e| {
                classified(
                    Failure::Usage,
                    anyhow::anyhow!(
                        "--metrics-listen {addr}: cannot listen there: {e} (pick a free \
                         address and port)"
                    ),
                )
            })?;
            tracing::info!("serving OpenMetrics at http://{bound}/metrics");
            Some(metrics)
        }
        None => None,
    };
    let options = ReceiveOptions {
        source,
        slot: args.slot.clone(),
        create_slot: args.create_slot,
        synchronous: args.synchronous,
        status_interval: Duration::from_secs(args.status_interval),
        stall_timeout: (args.stall_timeout > 0).then(|| Duration::from_secs(args.stall_timeout)),
        reconnect: !args.no_reconnect,
        metrics,
    };
    let role = options.source.effective_user();
    let repo = super::open_repo(&args.repo)?;
    let cancel = crate::signals::install().context("installing signal handlers")?;
    match receive::run(repo, options, cancel).await {
        Ok(Some(summary)) => {
            tracing::info!(
                lsn = %summary.flushed,
                timeline = summary.timeline.0,
                "receive-wal stopped: WAL up to {} on timeline {} is durably archived",
                summary.flushed,
                summary.timeline.0
            );
            Ok(())
        }
        Ok(None) => {
            tracing::info!("receive-wal stopped before it could start streaming");
            Ok(())
        }
        Err(e) => {
            let failure = failure_of(&e);
            Err(crate::exit::replication_role_hint(
                classified(failure, anyhow::Error::new(e).context("receive-wal failed")),
                &role,
            ))
        }
    }
}

fn failure_of(e: &ReceiveError) -> Failure {
    use pgwire_repl::Error as E;
    match e {
        ReceiveError::Client(c) => match c {
            E::Config(_) | E::InvalidArgument(_) => Failure::Usage,
            E::Server(db) if !db.code.starts_with("28") => Failure::Server,
            E::Protocol(_) | E::Unsupported { .. } | E::UnexpectedResult { .. } => Failure::Server,
            _ => Failure::Connection,
        },
        ReceiveError::Repo(r) => crate::exit::classify_repo(r),
        ReceiveError::TimelineBehind { .. } => Failure::Repository,
        ReceiveError::Archive(a) => archive_exit(a),
        ReceiveError::Store(s)
        | ReceiveError::Partial(backup_core::receive::PartialError::Store(s)) => {
            crate::exit::classify_store(s)
        }
        ReceiveError::Partial(_) | ReceiveError::Fs(_) => Failure::LocalIo,
        ReceiveError::UnsupportedServer { .. }
        | ReceiveError::WalRemoved { .. }
        | ReceiveError::SlotInvalidated { .. }
        | ReceiveError::SlotMissing { .. }
        | ReceiveError::Protocol(_)
        | ReceiveError::ServerShutdown => Failure::Server,
        ReceiveError::Internal(_) => Failure::Other,
    }
}

/// Storing a completed segment failed: writing it is local I/O (a full disk is exit 7, as
/// for `archive-push`, not a repository problem); conflicting or foreign WAL is the
/// repository's.
fn archive_exit(e: &backup_core::wal::archive::WalArchiveError) -> Failure {
    use backup_core::wal::archive::WalArchiveError as W;
    match e {
        W::Repo(r) => crate::exit::classify_repo(r),
        W::Store(s)
        | W::Sink {
            source: backup_core::SinkError::Store(s),
            ..
        } => crate::exit::classify_store(s),
        W::Sink { .. } | W::Fs(_) | W::Source { .. } => Failure::LocalIo,
        _ => Failure::Repository,
    }
}
