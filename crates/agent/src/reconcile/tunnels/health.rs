//! Each tunnel's health beside the passes: systemd's view of its unit and cloudflared's
//! `/ready`; a tunnel whose `/ready` has failed for `restart_unready_after` while its unit
//! looks active (the hang cloudflared is known for) is restarted.

use std::collections::BTreeSet;
use std::time::Duration;

use gatehouse_proto::spec;
use gatehouse_proto::v1::TunnelStatus;
use tracing::warn;

use super::Tunnels;
use crate::host::systemd::{UnitName, Wait};

impl Tunnels {
    /// Each desired tunnel as systemd and cloudflared see it; restarts the ones whose `/ready`
    /// has failed for longer than `restart_unready_after` while their unit is active.
    pub async fn check(&self, tunnels: &[spec::Tunnel], now: i64) -> Vec<TunnelStatus> {
        let mut out = Vec::with_capacity(tunnels.len());
        for t in tunnels {
            let unit = UnitName::tunnel(&t.name);
            let name = t.name.to_string();
            let mut status = TunnelStatus {
                name: name.clone(),
                ..TunnelStatus::default()
            };
            match self.systemd.state(&unit).await {
                Ok(s) => {
                    status.active_state = s.active_state;
                    status.sub_state = s.sub_state;
                    status.main_pid = s.main_pid;
                    status.restarts = s.restarts;
                }
                Err(e) => status.error = e.to_string(),
            }
            if let Some(settings) = self.settings(&name) {
                status.metrics_port = u32::from(settings.port);
                status.revision = settings.revision;
                if status.active_state == "active" {
                    match ready(settings.port).await {
                        Ok(r) => {
                            status.ready = r.ready;
                            status.ready_connections = r.connections;
                            status.connector_id = r.connector_id;
                        }
                        Err(e) => status.error = e,
                    }
                }
            }
            let restart = {
                let mut health = self.health.lock().expect("health lock");
                let h = health.entry(name.clone()).or_default();
                if status.ready || status.active_state != "active" {
                    h.unready_since = None;
                } else {
                    h.unready_since.get_or_insert(now);
                }
                status.unready_since = h.unready_since.unwrap_or(0);
                let due = h.unready_since.is_some_and(|since| {
                    now - since >= self.config.restart_unready_after.as_secs() as i64
                });
                if due {
                    h.watchdog_restarts += 1;
                    h.unready_since = None;
                }
                status.watchdog_restarts = h.watchdog_restarts;
                due
            };
            if restart {
                warn!(tunnel = %name, after = ?self.config.restart_unready_after, "the tunnel stayed unready; restarting it");
                if let Err(e) = self.systemd.restart(&unit, Wait::No).await {
                    warn!(tunnel = %name, error = %e, "cannot restart the tunnel");
                }
            }
            out.push(status);
        }
        let names: BTreeSet<String> = tunnels.iter().map(|t| t.name.to_string()).collect();
        self.health
            .lock()
            .expect("health lock")
            .retain(|n, _| names.contains(n));
        out
    }
}

/// What cloudflared's `/ready` says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ready {
    pub ready: bool,
    pub connections: u32,
    pub connector_id: String,
}

/// Reads `http://127.0.0.1:PORT/ready` (200 ready, 503 not, with `{status, readyConnections,
/// connectorId}`).
async fn ready(port: u16) -> Result<Ready, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Body {
        #[serde(default)]
        ready_connections: u32,
        #[serde(default)]
        connector_id: String,
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .get(format!("http://127.0.0.1:{port}/ready"))
        .send()
        .await
        .map_err(|e| format!("cannot read /ready on 127.0.0.1:{port}: {e}"))?;
    let ok = response.status().is_success();
    let body: Body = response
        .json()
        .await
        .map_err(|e| format!("/ready on 127.0.0.1:{port} answered something else: {e}"))?;
    Ok(Ready {
        ready: ok && body.ready_connections > 0,
        connections: body.ready_connections,
        connector_id: body.connector_id,
    })
}
