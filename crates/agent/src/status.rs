//! `status.json`: what the agent is doing, written on every change, read by
//! `gatehouse-agent status` and by monitoring.

use serde::{Deserialize, Serialize};

use crate::config::Paths;
use crate::host::files::{self, FileError};

/// The agent's view of itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub agent_id: String,
    pub controller: String,
    /// Whether the stream to the controller is open.
    pub connected: bool,
    /// Unix seconds when the current stream opened.
    pub connected_since: Option<i64>,
    /// How many connection attempts failed since the last success.
    pub failed_attempts: u64,
    pub last_error: Option<String>,
    /// The generation of the desired state applied on this host.
    pub applied_generation: u64,
    /// Where the applied state came from: "persisted" (at start) or "controller".
    pub applied_from: Option<String>,
    pub identity_serial: String,
    pub identity_not_after: i64,
    /// How many times the identity certificate was renewed since the agent started.
    pub identity_renewals: u64,
}

impl Status {
    /// Writes the status file.
    pub fn save(&self, paths: &Paths) -> Result<(), FileError> {
        let text = serde_json::to_vec_pretty(self).expect("serialisable");
        files::write_atomic(&paths.status(), &text, 0o644, None)
    }

    /// Reads the status file.
    pub fn load(paths: &Paths) -> Result<Self, String> {
        let path = paths.status();
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "cannot read {}: {e} (is the agent running?)",
                path.display()
            )
        })?;
        serde_json::from_str(&text).map_err(|e| format!("{} is damaged: {e}", path.display()))
    }
}
