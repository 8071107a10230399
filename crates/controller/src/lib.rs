//! The gatehouse controller: owns the fleet's desired state, the identity CA, the store and the
//! admin API. Agents connect to it; it never runs anything on their hosts.

pub mod acme;
pub mod admin_api;
pub mod agent_api;
pub mod ca;
pub mod cloudflare;
pub mod cloudflare_sites;
pub mod config;
pub mod dev;
pub mod fleet;
pub mod secrets;
pub mod server;
pub mod sites;
pub mod store;
pub mod tls;

/// What every service shares.
#[derive(Debug)]
pub struct Shared {
    pub store: store::Store,
    /// The identity CA (agents and the controller).
    pub ca: ca::Ca,
    /// The `internal` issuer's CA for site certificates.
    pub site_ca: ca::Ca,
    pub fleet: fleet::Fleet,
    pub revoked: tls::RevokedAgents,
    pub config: config::Config,
    /// Seals and opens secrets at rest (Cloudflare tokens).
    pub master_key: secrets::MasterKey,
    /// Serialises read-modify-write changes of desired states in this controller.
    pub state_changes: tokio::sync::Mutex<()>,
    /// Wakes the ACME worker (a new order, a retry).
    pub acme_wake: tokio::sync::Notify,
}

/// The current Unix time in seconds.
pub fn now() -> i64 {
    gatehouse_agent::now_unix()
}

/// An error and its sources on one line.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    gatehouse_agent::enroll::error_chain(e)
}
