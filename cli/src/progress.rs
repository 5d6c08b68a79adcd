//! Progress for long commands: a bar with bytes, rate and ETA on a terminal, otherwise a log
//! line every 10 seconds (so cron mails and journald stay readable).

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use backup_core::basebackup::{Phase, Progress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

const LOG_INTERVAL: Duration = Duration::from_secs(10);

pub struct Reporter {
    what: &'static str,
    bar: Option<ProgressBar>,
    state: Mutex<LogState>,
}

struct LogState {
    total: Option<u64>,
    last_log: Instant,
    started: Instant,
}

impl Reporter {
    /// A bar when `allow_bar` and stderr is a terminal; log lines otherwise.
    pub fn new(allow_bar: bool, what: &'static str) -> Reporter {
        let bar = (allow_bar && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_message(what);
            bar
        });
        Reporter {
            what,
            bar,
            state: Mutex::new(LogState {
                total: None,
                last_log: Instant::now(),
                started: Instant::now(),
            }),
        }
    }

    /// Removes the bar.
    pub fn done(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Progress for Reporter {
    fn phase(&self, phase: Phase) {
        let text = match &phase {
            Phase::Connecting => "connecting".to_string(),
            Phase::Checkpoint => "waiting for the server's checkpoint".to_string(),
            Phase::Streaming { total } => {
                if let Ok(mut s) = self.state.lock() {
                    s.total = *total;
                }
                if let (Some(bar), Some(t)) = (&self.bar, total) {
                    bar.set_length(*t);
                }
                "streaming".to_string()
            }
            Phase::Finishing => "verifying the manifest and storing the last WAL".to_string(),
        };
        match &self.bar {
            Some(bar) => bar.set_message(format!("{}: {text}", self.what)),
            None => tracing::info!("{}: {text}", self.what),
        }
    }

    fn bytes(&self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            return;
        }
        let Ok(mut s) = self.state.lock() else { return };
        if s.last_log.elapsed() < LOG_INTERVAL {
            return;
        }
        s.last_log = Instant::now();
        let secs = s.started.elapsed().as_secs_f64().max(0.001);
        let rate = done as f64 / secs;
        match s.total {
            Some(total) if total > 0 => {
                let pct = (done as f64 * 100.0 / total as f64).min(100.0);
                let eta = (total.saturating_sub(done)) as f64 / rate.max(1.0);
                tracing::info!(
                    "{}: {} of {} ({pct:.0}%), {}/s, about {eta:.0} s left",
                    self.what,
                    crate::cmd::human_bytes(done),
                    crate::cmd::human_bytes(total),
                    crate::cmd::human_bytes(rate as u64)
                );
            }
            _ => tracing::info!(
                "{}: {} streamed, {}/s",
                self.what,
                crate::cmd::human_bytes(done),
                crate::cmd::human_bytes(rate as u64)
            ),
        }
    }
}
