//! SIGINT and SIGTERM cancel the running command through a token, so every layer can stop
//! cleanly (close connections, remove temporary files) instead of dying mid-write.

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// SIGINT and SIGTERM, taken over from their default action (exit) once this is made.
pub struct StopSignals {
    int: Signal,
    term: Signal,
}

impl StopSignals {
    pub fn new() -> std::io::Result<Self> {
        Ok(StopSignals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    /// Waits for the next SIGINT or SIGTERM and returns its name.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

/// Returns a token cancelled on the first SIGINT or SIGTERM. A second signal exits at once.
pub fn install() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut signals = StopSignals::new()?;
    let t = token.clone();
    tokio::spawn(async move {
        let name = signals.recv().await;
        tracing::warn!("{name} received: stopping (send it again to exit at once)");
        t.cancel();
        signals.recv().await;
        std::process::exit(crate::exit::Failure::Interrupted as i32);
    });
    Ok(token)
}
