//! Everything the agent does to its host goes through these modules, one per external system.

pub mod caddy;
pub mod certs;
pub mod files;
pub mod metrics;
pub mod systemd;
pub mod wireguard;
