//! Helpers over pgwire-repl's replication stream shared by `receive` and `basebackup`.

use std::time::Duration;

use pgwire_repl::replication::{ReplicationEvent, ReplicationStream};

/// How long a polite stop waits for the server to end the COPY before giving up.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks the server to stop streaming and reads until it confirms, for at most
/// [`STOP_TIMEOUT`]. Best effort: the caller has already made its WAL durable, and
/// closing the connection ends the stream (and a temporary slot) anyway.
pub(crate) async fn stop_politely(stream: &mut ReplicationStream<'_>) {
    if stream.stop().await.is_ok() {
        let _ = tokio::time::timeout(STOP_TIMEOUT, async {
            while let Ok(Some(ev)) = stream.next().await {
                if matches!(ev, ReplicationEvent::Stopped) {
                    break;
                }
            }
        })
        .await;
    }
}

/// What a silent connection calls for (see [`Liveness`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Silence {
    /// Half the stall timeout without a message: ask the server for a reply (a status update
    /// with reply requested, which a live walsender answers at once with a keepalive).
    Ping,
    /// The whole stall timeout without a message: the connection is taken for lost.
    Lost,
}

/// Detects a connection that stopped delivering without closing: a stalled network, a
/// vanished server whose FIN never came (half-open), a proxy that stopped forwarding. TCP
/// itself notices none of these for many minutes, and an idle walsender sends nothing while
/// it hears from us, so a stream is pinged after half of `timeout` of silence and taken for
/// lost after all of it, as PostgreSQL's walreceiver does with `wal_receiver_timeout`.
/// Silence is counted only while waiting for the server, never while our own disk is busy.
#[derive(Debug, Clone)]
pub(crate) struct Liveness {
    timeout: Option<Duration>,
    heard: tokio::time::Instant,
    pinged: bool,
}

impl Liveness {
    /// Watches with `timeout` (`None`: never time out).
    pub(crate) fn new(timeout: Option<Duration>) -> Liveness {
        Liveness {
            timeout: timeout.filter(|t| !t.is_zero()),
            heard: tokio::time::Instant::now(),
            pinged: false,
        }
    }

    /// The server was heard from (or we are back to waiting for it after our own work).
    pub(crate) fn heard(&mut self) {
        self.heard = tokio::time::Instant::now();
        self.pinged = false;
    }

    /// A ping was sent.
    pub(crate) fn pinged(&mut self) {
        self.pinged = true;
    }

    /// Resolves when the silence calls for a ping (once per silence) or for giving up; never
    /// without a timeout. Cancellation-safe (a `select!` arm).
    pub(crate) async fn silence(&self) -> Silence {
        let Some(timeout) = self.timeout else {
            return std::future::pending().await;
        };
        if self.pinged {
            tokio::time::sleep_until(self.heard + timeout).await;
            Silence::Lost
        } else {
            tokio::time::sleep_until(self.heard + timeout / 2).await;
            Silence::Ping
        }
    }

    /// Resolves when the whole timeout passed in silence (for streams that cannot be pinged:
    /// BASE_BACKUP's archives); never without a timeout.
    pub(crate) async fn lost(&self) {
        match self.timeout {
            Some(timeout) => tokio::time::sleep_until(self.heard + timeout).await,
            None => std::future::pending().await,
        }
    }

    /// The error for a connection taken for lost.
    pub(crate) fn lost_error(&self) -> pgwire_repl::Error {
        let secs = self.timeout.map_or(0, |t| t.as_secs());
        pgwire_repl::Error::ConnectionLost(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "nothing received from the server for {secs} s (--stall-timeout): the network \
                 or the server stalled, or the server vanished without closing the connection"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    #[test]
    fn silence_pings_at_half_the_timeout_then_gives_up() {
        runtime().block_on(async {
            let ms = Duration::from_millis;
            let mut live = Liveness::new(Some(ms(400)));
            let start = tokio::time::Instant::now();
            assert_eq!(live.silence().await, Silence::Ping);
            assert!(start.elapsed() >= ms(200));
            live.pinged();
            assert_eq!(live.silence().await, Silence::Lost);
            assert!(start.elapsed() >= ms(400));
            // Hearing from the server starts the count again.
            live.heard();
            let again = tokio::time::Instant::now();
            assert_eq!(live.silence().await, Silence::Ping);
            assert!(again.elapsed() >= ms(200));
            live.lost().await;
            assert!(again.elapsed() >= ms(400));
        });
        let live = Liveness::new(Some(Duration::from_secs(10)));
        assert!(live.lost_error().to_string().contains("for 10 s"));
    }

    #[test]
    fn a_zero_or_no_timeout_never_resolves() {
        runtime().block_on(async {
            for t in [None, Some(Duration::ZERO)] {
                let live = Liveness::new(t);
                let wait = Duration::from_millis(300);
                assert!(tokio::time::timeout(wait, live.silence()).await.is_err());
                assert!(tokio::time::timeout(wait, live.lost()).await.is_err());
            }
        });
    }
}
