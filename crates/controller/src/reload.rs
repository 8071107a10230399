//! SIGHUP: the config file read again. What can change while running takes effect now: the log
//! filter, the report interval (every agent's desired state carries it: each gets a new
//! generation), certificate lifetimes, the stream timeout (new streams), the Caddy ACME CA for
//! new sites, the DNS-01 check servers and the per-minute limits. The rest waits for a restart
//! and is logged as such. A file that does not parse changes nothing.

use std::path::Path;

use gatehouse_common::logging::LogFilter;
use tracing::{info, warn};

use crate::Shared;
use crate::config::Config;

/// Reads `path` again and applies it.
pub async fn from_file(shared: &Shared, path: &Path, required: bool, log: &LogFilter) {
    match Config::load(path, required) {
        Ok(new) => apply(shared, new, log).await,
        Err(e) => {
            warn!(error = %e, "the config file was not read again: the running config stays")
        }
    }
}

/// Applies a config read again.
pub async fn apply(shared: &Shared, new: Config, log: &LogFilter) {
    let old = shared.config();
    let (config, restart) = old.reloaded(new);
    if let Err(e) = log.set(&config.log) {
        warn!(error = %e, "cannot change the log filter");
    }
    shared.issuance.set_limit(config.issuance_limit);
    shared
        .failed_enrollments
        .set_limit(config.enroll_failure_limit);
    shared
        .failed_checkins
        .set_limit(config.checkin.failure_limit);
    let interval = config.report_interval;
    let interval_changed = interval != old.report_interval;
    shared.set_config(config);
    if !restart.is_empty() {
        warn!(settings = ?restart, "these settings changed in the config file and take effect at the next restart");
    }
    info!("config file read again");
    if interval_changed {
        report_interval_changed(shared, interval.as_secs() as u32).await;
    }
}

/// Gives every agent the new report interval: a new generation of its desired state.
async fn report_interval_changed(shared: &Shared, seconds: u32) {
    let agents = match shared.store.agent_list().await {
        Ok(agents) => agents,
        Err(e) => {
            warn!(error = %e, "cannot give agents the new report interval");
            return;
        }
    };
    let mut told = 0;
    for agent in agents.iter().filter(|a| a.revoked_at.is_none()) {
        let changed = crate::desired::change(shared, &agent.id, |mut state| {
            state.report_interval_seconds = seconds;
            Ok(state)
        })
        .await;
        match changed {
            Ok(_) => told += 1,
            Err(e) => {
                warn!(agent_id = %agent.id, error = %e, "cannot give the agent the new report interval")
            }
        }
    }
    info!(
        agents = told,
        report_interval_seconds = seconds,
        "report interval changed"
    );
}
