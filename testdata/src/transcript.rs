//! What a client sent to the fake walsender, and how a script failed.

use std::fmt;

use crate::wire::{
    self, FrontendMessage, HotStandbyFeedback, ReplicationFeedback, StandbyStatusUpdate,
};

/// Everything a client sent on one connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transcript {
    /// Whether an SSLRequest (answered `N`) preceded the StartupMessage.
    pub ssl_requested: bool,
    /// StartupMessage parameters in the order sent.
    pub startup_params: Vec<(String, String)>,
    /// Every message after the startup packet, in order, including skipped feedback.
    pub messages: Vec<FrontendMessage>,
    /// Whether the client's end of stream (or a reset) was seen, before or shortly after the
    /// fake closed.
    pub client_closed: bool,
}

impl Transcript {
    /// The value of a startup parameter.
    pub fn startup_param(&self, name: &str) -> Option<&str> {
        self.startup_params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The texts of all Query messages.
    pub fn queries(&self) -> Vec<&str> {
        self.messages
            .iter()
            .filter_map(|m| match m {
                FrontendMessage::Query(q) => Some(q.as_str()),
                _ => None,
            })
            .collect()
    }

    fn feedback(&self) -> impl Iterator<Item = ReplicationFeedback> + '_ {
        self.messages.iter().filter_map(|m| match m {
            FrontendMessage::CopyData(p) => wire::parse_replication_feedback(p).ok(),
            _ => None,
        })
    }

    /// All well-formed StandbyStatusUpdates, in order.
    pub fn standby_status_updates(&self) -> Vec<StandbyStatusUpdate> {
        self.feedback()
            .filter_map(|f| match f {
                ReplicationFeedback::StandbyStatus(s) => Some(s),
                ReplicationFeedback::HotStandbyFeedback(_) => None,
            })
            .collect()
    }

    /// All well-formed HotStandbyFeedback messages, in order.
    pub fn hot_standby_feedback(&self) -> Vec<HotStandbyFeedback> {
        self.feedback()
            .filter_map(|f| match f {
                ReplicationFeedback::HotStandbyFeedback(h) => Some(h),
                ReplicationFeedback::StandbyStatus(_) => None,
            })
            .collect()
    }
}

/// Why a script failed: a message such as `step 4: expected Query matching "IDENTIFY_SYSTEM",
/// got CopyData (...)`, and what the client had sent on that connection by then.
#[derive(Clone)]
pub struct ScriptError {
    /// The failure, prefixed with the step (and the connection when there are several).
    pub message: String,
    /// The failing connection's transcript up to the failure.
    pub transcript: Transcript,
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

// `unwrap()` prints Debug: show the message plainly, then what the client sent.
impl fmt::Debug for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.message)?;
        write!(f, "client messages on that connection:")?;
        for m in &self.transcript.messages {
            write!(f, "\n  {}", m.describe())?;
        }
        Ok(())
    }
}

impl std::error::Error for ScriptError {}
