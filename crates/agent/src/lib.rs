//! The gatehouse agent: enrolls once, keeps one stream open to the controller, applies the
//! host's desired state and reports what it sees. The host keeps working while the controller
//! is away.

pub mod config;
pub mod daemon;
pub mod enroll;
pub mod host;
pub mod identity;
mod logs;
pub mod reconcile;
pub mod reports;
mod rotation;
pub mod runtime;
pub mod session;
pub mod state;
pub mod status;

/// Shared with the controller and the CLI; re-exported where they always were.
pub use gatehouse_common::{logging, now_unix, pki, random_below, service, transport};
