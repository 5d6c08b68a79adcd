//! Reconnecting: which errors are worth a retry, and the backoff between attempts.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::ReceiveError;

/// First and largest reconnect delay.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

impl ReceiveError {
    /// Whether reconnecting may help (a lost connection, a restarting server, a failover).
    pub fn is_transient(&self) -> bool {
        match self {
            ReceiveError::ServerShutdown => true,
            ReceiveError::Client(e) => client_error_is_transient(e),
            _ => false,
        }
    }
}

fn client_error_is_transient(e: &pgwire_repl::Error) -> bool {
    use pgwire_repl::Error as E;
    match e {
        E::ConnectionLost(_) | E::Connect { .. } | E::ConnectTimeout { .. } => true,
        E::SessionAttrs { .. } => true,
        // Not when every host refused us for good (authentication, TLS).
        E::AllHostsFailed(all) => all.iter().any(client_error_is_transient),
        // Shutting down / starting up / crash recovery (57P01..57P03) and other FATALs that
        // end the session; not authentication failures.
        E::Server(db) => {
            db.code.starts_with("57P") || (e.is_connection_lost() && !db.code.starts_with("28"))
        }
        _ => false,
    }
}

/// Logs `e` and waits the backoff of `attempt`; false when cancelled meanwhile.
pub(super) async fn wait_to_retry(
    e: &ReceiveError,
    attempt: u32,
    cancel: &CancellationToken,
) -> bool {
    let delay = backoff(attempt);
    tracing::warn!(
        "{e}; reconnecting in {:.1} s (attempt {attempt})",
        delay.as_secs_f64()
    );
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

/// Exponential backoff from 1 s to 60 s, with up to 50 % random jitter.
fn backoff(attempt: u32) -> Duration {
    let base = BACKOFF_MIN
        .saturating_mul(1 << attempt.saturating_sub(1).min(6))
        .min(BACKOFF_MAX);
    let r: [u8; 2] = crate::crypto::random_bytes().unwrap_or([0, 0]);
    let frac = f64::from(u16::from_be_bytes(r)) / f64::from(u16::MAX) * 0.5;
    base.mul_f64(1.0 + frac).min(BACKOFF_MAX.mul_f64(1.5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        for attempt in 1..20 {
            let d = backoff(attempt);
            let base = Duration::from_secs(1 << (attempt - 1).min(6)).min(BACKOFF_MAX);
            assert!(d >= base && d <= base.mul_f64(1.5) && d <= BACKOFF_MAX.mul_f64(1.5));
        }
    }

    #[test]
    fn all_hosts_refusing_authentication_is_not_retried() {
        use pgwire_repl::{DbError, Error as E};
        let fatal = |code: &str| {
            E::Server(Box::new(DbError {
                severity: "FATAL".into(),
                code: code.into(),
                ..DbError::default()
            }))
        };
        let refused = || E::Connect {
            target: "127.0.0.1:1".into(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        let transient = |e: E| ReceiveError::Client(e).is_transient();
        assert!(transient(refused()));
        assert!(transient(fatal("57P03")));
        assert!(!transient(fatal("28P01")));
        assert!(transient(E::AllHostsFailed(vec![
            fatal("28P01"),
            refused()
        ])));
        assert!(!transient(E::AllHostsFailed(vec![
            fatal("28P01"),
            fatal("28000")
        ])));
    }
}
