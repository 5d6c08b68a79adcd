//! What receive-wal counts for monitoring: positions, lag, segments, reconnects and errors. The
//! stream updates it as it goes (atomics and one small lock per batch); a metrics endpoint
//! reads [`ReceiveMetrics::snapshot`] from another thread.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pgwire_repl::{Lsn, TimelineId};

use super::ReceiveError;

/// The kinds errors are counted by (every kind is reported, zero or not).
pub const ERROR_KINDS: [&str; 8] = [
    "connection",
    "server",
    "server_shutdown",
    "wal_unavailable",
    "repository",
    "io",
    "protocol",
    "internal",
];

/// The most (server position, time seen) samples kept for the lag in seconds. When full, no
/// sample is added until WAL is flushed: the oldest, which decides the lag, are kept.
const MAX_SAMPLES: usize = 4096;

/// receive-wal's counters, shared with whoever reports them.
#[derive(Debug, Default)]
pub struct ReceiveMetrics {
    segment_size: AtomicU64,
    timeline: AtomicU64,
    received: AtomicU64,
    flushed: AtomicU64,
    server_end: AtomicU64,
    segments_archived: AtomicU64,
    reconnects: AtomicU64,
    last_flush_unix_ms: AtomicU64,
    errors: [AtomicU64; ERROR_KINDS.len()],
    /// When each server end-of-WAL position was first seen, oldest first: the first one past
    /// the flushed position dates the oldest WAL not yet durable here.
    samples: Mutex<VecDeque<(Lsn, Instant)>>,
}

/// The counters at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSnapshot {
    pub timeline: u32,
    /// Everything before this was received and written (not necessarily fsynced).
    pub received: Lsn,
    /// Everything before this is durable (what the server was told as flush).
    pub flushed: Lsn,
    /// Everything before this is archived as complete segments.
    pub archived: Lsn,
    /// The server's end of WAL as it last reported it.
    pub server_end: Lsn,
    /// `server_end - flushed` (0 when caught up).
    pub lag_bytes: u64,
    /// How long the oldest WAL the server has and we have not flushed has been waiting.
    pub lag: Duration,
    pub segments_archived: u64,
    pub reconnects: u64,
    /// The last fsync that moved the flushed position, as Unix time.
    pub last_flush: Option<SystemTime>,
    /// Errors by kind ([`ERROR_KINDS`] order).
    pub errors: Vec<(&'static str, u64)>,
}

impl ReceiveMetrics {
    pub fn new() -> ReceiveMetrics {
        ReceiveMetrics::default()
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let flushed = Lsn(self.flushed.load(Relaxed));
        let server_end = Lsn(self.server_end.load(Relaxed));
        let received = Lsn(self.received.load(Relaxed));
        let seg = self.segment_size();
        let lag = self
            .samples
            .lock()
            .ok()
            .and_then(|s| s.front().map(|(_, t)| t.elapsed()))
            .unwrap_or_default();
        let last_flush = match self.last_flush_unix_ms.load(Relaxed) {
            0 => None,
            ms => Some(UNIX_EPOCH + Duration::from_millis(ms)),
        };
        MetricsSnapshot {
            timeline: self.timeline.load(Relaxed) as u32,
            received,
            flushed,
            archived: if seg == 0 {
                Lsn(0)
            } else {
                received.segment_start(seg)
            },
            server_end,
            lag_bytes: server_end.0.saturating_sub(flushed.0),
            lag,
            segments_archived: self.segments_archived.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            last_flush,
            errors: ERROR_KINDS
                .iter()
                .zip(&self.errors)
                .map(|(k, n)| (*k, n.load(Relaxed)))
                .collect(),
        }
    }

    fn segment_size(&self) -> u64 {
        self.segment_size.load(Relaxed)
    }

    /// The stream wrote (and maybe fsynced) up to `received`, with `flushed` durable. Each
    /// segment boundary `received` crossed on the same timeline is a segment archived.
    pub(crate) fn streamed(&self, timeline: TimelineId, received: Lsn, flushed: Lsn, seg: u64) {
        self.segment_size.store(seg, Relaxed);
        let old_tli = self.timeline.swap(u64::from(timeline.0), Relaxed);
        let old = self.received.swap(received.0, Relaxed);
        if old_tli == u64::from(timeline.0) && seg > 0 && received.0 > old && old > 0 {
            let crossed = received.0 / seg - old / seg;
            self.segments_archived.fetch_add(crossed, Relaxed);
        }
        if self.flushed.swap(flushed.0, Relaxed) != flushed.0 {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            self.last_flush_unix_ms
                .store(now.as_millis() as u64, Relaxed);
        }
        if let Ok(mut samples) = self.samples.lock() {
            while samples.front().is_some_and(|(lsn, _)| *lsn <= flushed) {
                samples.pop_front();
            }
        }
        if flushed > Lsn(self.server_end.load(Relaxed)) {
            self.server_end.store(flushed.0, Relaxed);
        }
    }

    /// The server reported its end of WAL (in a keepalive or with WAL data).
    pub(crate) fn server_end(&self, end: Lsn) {
        let old = self.server_end.fetch_max(end.0, Relaxed);
        if end.0 <= old || end <= Lsn(self.flushed.load(Relaxed)) {
            return;
        }
        if let Ok(mut samples) = self.samples.lock() {
            if samples.len() < MAX_SAMPLES {
                samples.push_back((end, Instant::now()));
            }
        }
    }

    /// A reconnect after `e`.
    pub(crate) fn reconnect(&self, e: &ReceiveError) {
        self.error(e);
        self.reconnects.fetch_add(1, Relaxed);
    }

    /// An error, counted by kind.
    pub(crate) fn error(&self, e: &ReceiveError) {
        let kind = error_kind(e);
        if let Some(i) = ERROR_KINDS.iter().position(|k| *k == kind) {
            self.errors[i].fetch_add(1, Relaxed);
        }
    }
}

/// The kind an error is counted as.
pub fn error_kind(e: &ReceiveError) -> &'static str {
    use pgwire_repl::Error as E;
    match e {
        ReceiveError::Client(E::Server(db)) if !db.code.starts_with("08") => "server",
        ReceiveError::Client(_) => "connection",
        ReceiveError::ServerShutdown => "server_shutdown",
        ReceiveError::UnsupportedServer { .. } => "server",
        ReceiveError::WalRemoved { .. }
        | ReceiveError::SlotInvalidated { .. }
        | ReceiveError::SlotMissing { .. } => "wal_unavailable",
        ReceiveError::Repo(_) | ReceiveError::TimelineBehind { .. } | ReceiveError::Archive(_) => {
            "repository"
        }
        ReceiveError::Partial(_) | ReceiveError::Fs(_) | ReceiveError::Store(_) => "io",
        ReceiveError::Protocol(_) => "protocol",
        ReceiveError::Internal(_) => "internal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 16 << 20;

    #[test]
    fn segments_lag_and_flush_time() {
        let m = ReceiveMetrics::new();
        let tli = TimelineId(1);
        m.streamed(tli, Lsn(3 * SEG), Lsn(3 * SEG), SEG);
        m.server_end(Lsn(5 * SEG + 100));
        m.streamed(tli, Lsn(5 * SEG + 10), Lsn(4 * SEG), SEG);
        let s = m.snapshot();
        assert_eq!(s.segments_archived, 2);
        assert_eq!(s.archived, Lsn(5 * SEG));
        assert_eq!(s.lag_bytes, SEG + 100);
        assert!(s.last_flush.is_some());
        std::thread::sleep(Duration::from_millis(20));
        assert!(m.snapshot().lag >= Duration::from_millis(20));
        // Caught up: no lag.
        m.streamed(tli, Lsn(5 * SEG + 100), Lsn(5 * SEG + 100), SEG);
        let s = m.snapshot();
        assert_eq!((s.lag_bytes, s.lag), (0, Duration::ZERO));
        // A new timeline starts counting afresh.
        m.streamed(TimelineId(2), Lsn(5 * SEG), Lsn(5 * SEG), SEG);
        assert_eq!(m.snapshot().segments_archived, 2);
        m.reconnect(&ReceiveError::ServerShutdown);
        let s = m.snapshot();
        assert_eq!(s.reconnects, 1);
        assert!(s.errors.contains(&("server_shutdown", 1)));
    }
}
