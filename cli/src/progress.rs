//! Progress for long commands: a bar with bytes, rate and ETA on a terminal, otherwise a log
//! line every 10 seconds (so cron mails and journald stay readable).
//!
//! Log lines written while a bar is shown go through [`LogWriter`], which takes the bar off the
//! screen, writes the line and draws the bar again below it, so no line is drawn through the
//! bar. The bar is removed when the command ends, however it ends (the reporter's `Drop`).

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use backup_core::basebackup::{Phase, Progress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The bar on screen, if any: log lines are written around it.
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Runs `write` with the active bar (if any) off the screen.
pub fn around_bar<T>(write: impl FnOnce() -> T) -> T {
    let bar = ACTIVE.lock().ok().and_then(|b| b.clone());
    match bar {
        Some(bar) => bar.suspend(write),
        None => write(),
    }
}

/// The tracing writer: stderr, around the progress bar. tracing-subscriber formats each event
/// into one buffer and writes it with one call, so a line is never split by a redraw.
pub struct LogWriter;

impl LogWriter {
    pub fn new() -> LogWriter {
        LogWriter
    }
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        around_bar(|| std::io::stderr().lock().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

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
        let target =
            (allow_bar && std::io::stderr().is_terminal()).then(ProgressDrawTarget::stderr);
        Reporter::with_target(target, what)
    }

    /// A bar drawn to `target`, or log lines when `None`.
    pub fn with_target(target: Option<ProgressDrawTarget>, what: &'static str) -> Reporter {
        let bar = target.map(|target| {
            // A spinner until the server's size estimate is known (connecting, the checkpoint),
            // ticking so that a long checkpoint does not look like a hang.
            let bar = ProgressBar::with_draw_target(None, target);
            bar.set_style(spinner_style());
            bar.set_message(what);
            bar.enable_steady_tick(Duration::from_millis(200));
            if let Ok(mut active) = ACTIVE.lock() {
                *active = Some(bar.clone());
            }
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

    /// Removes the bar from the screen (also done when the reporter is dropped).
    pub fn done(&self) {
        if let Some(bar) = &self.bar {
            if let Ok(mut active) = ACTIVE.lock() {
                *active = None;
            }
            bar.finish_and_clear();
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.done();
    }
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {msg} {elapsed}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
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
                    bar.set_style(bar_style());
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

#[cfg(test)]
mod tests {
    use super::*;
    use indicatif::{InMemoryTerm, TermLike as _};

    fn on_screen(term: &InMemoryTerm) -> String {
        term.contents()
    }

    /// The bar on screen is process-wide: one test at a time under `cargo test`'s threads.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn reporter(term: &InMemoryTerm) -> Reporter {
        Reporter::with_target(
            Some(ProgressDrawTarget::term_like_with_hz(
                Box::new(term.clone()),
                250,
            )),
            "base backup",
        )
    }

    #[test]
    fn stale_waiting_for_checkpoint_bar_is_removed_when_the_command_ends() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let term = InMemoryTerm::new(10, 100);
        let r = reporter(&term);
        r.phase(Phase::Checkpoint);
        if let Some(bar) = &r.bar {
            bar.tick();
        }
        assert!(
            on_screen(&term).contains("waiting for the server's checkpoint"),
            "{:?}",
            on_screen(&term)
        );
        // An error return drops the reporter without calling done().
        drop(r);
        assert_eq!(on_screen(&term).trim(), "", "bar left on screen");
        assert!(ACTIVE.lock().unwrap().is_none());
    }

    #[test]
    fn log_lines_are_not_drawn_through_the_progress_bar() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let term = InMemoryTerm::new(10, 100);
        let r = reporter(&term);
        r.phase(Phase::Streaming { total: Some(1000) });
        r.bytes(500);
        if let Some(bar) = &r.bar {
            bar.tick();
        }
        assert!(
            on_screen(&term).contains("streaming"),
            "{:?}",
            on_screen(&term)
        );
        // While a log line is written, the bar is off the screen; then drawn again.
        let during = around_bar(|| {
            term.write_line("INFO a log line").unwrap();
            on_screen(&term)
        });
        assert_eq!(
            during.trim(),
            "INFO a log line",
            "bar on screen while logging"
        );
        let after = on_screen(&term);
        let lines: Vec<&str> = after.lines().collect();
        assert_eq!(lines.first(), Some(&"INFO a log line"), "{after:?}");
        assert!(
            lines.iter().skip(1).any(|l| l.contains("streaming")),
            "{after:?}"
        );
        drop(r);
        assert_eq!(on_screen(&term).trim(), "INFO a log line");
    }
}
