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
