//! The gatehouse controller: owns the fleet's desired state, the identity CA, the store and the
//! admin API. Agents connect to it; it never runs anything on their hosts.

pub mod admin_api;
pub mod agent_api;
pub mod ca;
pub mod config;
pub mod dev;
pub mod fleet;
pub mod secrets;
pub mod server;
pub mod store;
pub mod tls;

/// What every service shares.
#[derive(Debug)]
pub struct Shared {
    pub store: store::Store,
    pub ca: ca::AgentCa,
    pub fleet: fleet::Fleet,
    pub revoked: tls::RevokedAgents,
    pub config: config::Config,
}

/// The current Unix time in seconds.
pub fn now() -> i64 {
    gatehouse_agent::now_unix()
}
