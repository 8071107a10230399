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

/// A uniformly random number in `0..=max`.
pub fn random_below(max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    let mut bytes = [0u8; 8];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system RNG works");
    u64::from_le_bytes(bytes) % (max + 1)
}
