//! What the gatehouse daemons and the CLI share and that belongs to neither: the transport to
//! the controller (its URL type, TLS client configs, channels), certificate facts (PEM, SPKI
//! pins), systemd notify, logging set-up, the stream's coalescing outbox and application-level
//! liveness, backoff with jitter, randomness, time, error chains and config-file reading.

pub mod backoff;
pub mod clock;
pub mod config;
pub mod files;
pub mod liveness;
pub mod logging;
pub mod outbox;
pub mod pki;
pub mod service;
pub mod signals;
pub mod transport;
pub mod wgkeys;

pub use backoff::{Backoff, jitter, random_below};
pub use clock::Clock;
pub use liveness::{Liveness, Stalled};
pub use outbox::{Full, Outbox};

/// The current Unix time in seconds.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A Unix time as RFC 3339 in UTC, to the second (times before 1970 as 1970).
pub fn rfc3339(unix: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// An error and its sources on one line (a source already in the text is not repeated).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
