//! receive-wal's metrics, from backup-core's counters.

use std::time::UNIX_EPOCH;

use backup_core::receive::MetricsSnapshot;

use super::{Exposition, Type};

/// The exposition of one snapshot. `slot` labels the samples (empty: none).
pub fn render(s: &MetricsSnapshot, slot: Option<&str>) -> String {
    let slot_label;
    let labels: &[(&str, &str)] = match slot {
        Some(name) => {
            slot_label = [("slot", name)];
            &slot_label
        }
        None => &[],
    };
    let mut e = Exposition::new();
    e.family(
        "pgstream_build",
        Type::Info,
        None,
        "The pgstream version serving these metrics.",
    )
    .sample(&[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    let lsn = |e: &mut Exposition, name: &str, help: &str, v: u64| {
        e.family(name, Type::Gauge, Some("bytes"), help)
            .sample(labels, v as f64);
    };
    lsn(
        &mut e,
        "pgstream_receive_received_lsn_bytes",
        "WAL position received and written (not necessarily fsynced), as a byte offset.",
        s.received.0,
    );
    lsn(
        &mut e,
        "pgstream_receive_flushed_lsn_bytes",
        "WAL position durably stored (reported to the server as flushed), as a byte offset.",
        s.flushed.0,
    );
    lsn(
        &mut e,
        "pgstream_receive_archived_lsn_bytes",
        "WAL position up to which complete segments are archived, as a byte offset.",
        s.archived.0,
    );
    lsn(
        &mut e,
        "pgstream_receive_server_lsn_bytes",
        "The server's end of WAL as it last reported it, as a byte offset.",
        s.server_end.0,
    );
    e.family(
        "pgstream_receive_lag_bytes",
        Type::Gauge,
        Some("bytes"),
        "WAL the server has that is not yet durably stored here.",
    )
    .sample(labels, s.lag_bytes as f64);
    e.family(
        "pgstream_receive_lag_seconds",
        Type::Gauge,
        Some("seconds"),
        "How long the oldest WAL not yet durably stored here has been on the server.",
    )
    .sample(labels, s.lag.as_secs_f64());
    e.family(
        "pgstream_receive_timeline",
        Type::Gauge,
        None,
        "The timeline being received.",
    )
    .sample(labels, f64::from(s.timeline));
    e.family(
        "pgstream_receive_segments_archived",
        Type::Counter,
        None,
        "WAL segments completed and archived since receive-wal started.",
    )
    .sample(labels, s.segments_archived as f64);
    e.family(
        "pgstream_receive_reconnects",
        Type::Counter,
        None,
        "Reconnections after a lost connection or a server restart.",
    )
    .sample(labels, s.reconnects as f64);
    e.family(
        "pgstream_receive_errors",
        Type::Counter,
        None,
        "Errors by kind (those retried; a permanent one ends receive-wal).",
    );
    for (kind, n) in &s.errors {
        let mut l = labels.to_vec();
        l.push(("kind", kind));
        e.sample(&l, *n as f64);
    }
    e.family(
        "pgstream_receive_last_flush_timestamp_seconds",
        Type::Gauge,
        Some("seconds"),
        "When WAL was last made durable here (Unix time).",
    );
    if let Some(t) = s.last_flush {
        let secs = t
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        e.sample(labels, secs);
    }
    e.finish()
}
