//! The gatehouse controller: owns the fleet's desired state, the identity CA, the store and the
//! admin API. Agents connect to it; it never runs anything on their hosts.

pub mod acme;
pub mod agent_api;
pub mod alerts;
pub mod allowlists;
pub mod api;
pub mod audit;
pub mod backup;
pub mod ca;
pub mod certificates;
pub mod cloudflare;
pub mod config;
pub mod daemon;
pub mod desired;
#[cfg(feature = "dev")]
pub mod dev;
pub mod error;
pub mod fleet;
pub mod health;
pub mod http;
pub mod idle;
pub mod limit;
pub mod local;
pub mod reload;
pub mod secrets;
pub mod server;
pub mod sites;
pub mod store;
pub mod tls;
pub mod tokens;
pub mod tunnels;
pub mod wireguard;

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
    /// The running config; a reload replaces what can change while running.
    config: std::sync::RwLock<std::sync::Arc<config::Config>>,
    /// Seals and opens secrets at rest (Cloudflare tokens).
    pub master_key: secrets::MasterKey,
    /// Serialises read-modify-write changes of desired states in this controller.
    pub state_changes: tokio::sync::Mutex<()>,
    /// Wakes the ACME worker (a new order, a retry).
    pub acme_wake: tokio::sync::Notify,
    /// Certificates signed per agent and name per minute.
    pub issuance: limit::PerMinute,
    /// Failed enrollments per source address per minute.
    pub failed_enrollments: limit::PerMinute,
    /// Bad allowlist check-in tokens per source address.
    pub failed_checkins: limit::PerMinute,
    /// When each device last checked in here.
    pub last_checkins: allowlists::checkin::LastCheckins,
    /// Rung when an allowlist's entries change (a check-in, a revocation, an entry).
    pub allowlists_changed: tokio::sync::Notify,
    /// How each allowlist's Cloudflare lists last synced.
    pub list_sync: allowlists::sync::Statuses,
    /// What every allowlist allows now (by name), as the sync loop last computed it: agent
    /// streams send hosts the lists their sites use when these change.
    pub allowlist_sets: tokio::sync::watch::Sender<allowlists::Sets>,
    /// WireGuard networks whose hosts' desired states are to be computed again.
    pub wg_pending: wireguard::desired::Pending,
    /// The addresses each WireGuard network's peers hold, as this controller knows them.
    pub wg_addresses: wireguard::ipam::Cache,
    /// Wakes the alerts loop (a notification was queued).
    pub alerts_wake: tokio::sync::Notify,
    /// Every agent stream and ACME order in flight: shutdown waits for them before the store
    /// closes.
    pub tasks: tokio_util::task::TaskTracker,
    /// Wall-clock time wherever it decides something (a manual one in tests).
    pub clock: gatehouse_common::Clock,
}

impl Shared {
    /// Now, in Unix seconds, by the controller's clock.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// The running config.
    pub fn config(&self) -> std::sync::Arc<config::Config> {
        self.config.read().expect("config lock").clone()
    }

    /// Replaces the running config (see [`reload`]).
    pub(crate) fn set_config(&self, config: config::Config) {
        *self.config.write().expect("config lock") = std::sync::Arc::new(config);
    }

    /// An agent's status: revoked, online (connected and reporting), or offline (about three
    /// reports missed).
    pub fn agent_status(&self, row: &store::AgentRow) -> &'static str {
        let live = self.fleet.view(&row.id);
        let window = 3 * self.config().report_interval.as_secs() as i64 + 5;
        let last_seen = live.last_seen.or(row.last_seen_at).unwrap_or(0);
        if row.revoked_at.is_some() {
            "revoked"
        } else if live.connected_since.is_some() && self.now() - last_seen <= window {
            "online"
        } else {
            "offline"
        }
    }
}

/// An error and its sources on one line.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    gatehouse_common::error_chain(e)
}
