//! The gatehouse agent: enrolls once, keeps one stream open to the controller, applies the
//! host's desired state and reports what it sees. The host keeps working while the controller
//! is away.

pub mod config;
pub mod enroll;
pub mod host;
pub mod identity;
pub mod logging;
pub mod pki;
pub mod reconcile;
pub mod runtime;
pub mod service;
pub mod session;
pub mod state;
pub mod status;
pub mod transport;

/// The current Unix time in seconds.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub use gatehouse_common::random_below;
