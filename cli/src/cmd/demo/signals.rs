//! Ctrl-C and SIGTERM during the demo: the first one cancels the demo, which then stops its
//! children and its server and removes its directory. Unlike the other commands, a second signal
//! does not exit at once: that would leave a server running. It is only acknowledged.

use tokio_util::sync::CancellationToken;

use crate::signals::StopSignals;

pub fn install() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut signals = StopSignals::new()?;
    let t = token.clone();
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let name = signals.recv().await;
            if first {
                eprintln!("pgstream demo: {name} received: stopping and cleaning up");
                t.cancel();
                first = false;
            } else {
                eprintln!(
                    "pgstream demo: {name} received: still cleaning up (stopping the server and \
                     the commands it started); it exits when done"
                );
            }
        }
    });
    Ok(token)
}
