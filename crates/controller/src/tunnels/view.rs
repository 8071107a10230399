//! A tunnel as the admin API shows it: the row, the host's view and Cloudflare's side by side.

use gatehouse_proto::v1::{self as pb, DesiredState, TunnelStatus};

use super::ingress;
use crate::Shared;
use crate::cloudflare::accounts::client;
use crate::error::{Error, Result};
use crate::store::{AgentRow, TunnelRow};

/// What a host's tunnels are shown with: the agent (its last apply) and its desired state
/// (each tunnel's revision). Read once per agent, however many tunnels it has.
#[derive(Debug, Default)]
pub struct Host {
    agent: Option<AgentRow>,
    desired: DesiredState,
}

impl Host {
    pub async fn read(shared: &Shared, agent_id: &str) -> Result<Self> {
        Ok(Self {
            agent: shared.store.agent_get(agent_id).await?,
            desired: shared
                .store
                .desired_latest(agent_id)
                .await?
                .map(|d| d.state)
                .unwrap_or_default(),
        })
    }
}

/// A tunnel as the admin API shows it: the row, the host's latest report and last apply, and
/// (when asked for) Cloudflare's view beside it.
pub async fn view(shared: &Shared, row: &TunnelRow, with_cloudflare: bool) -> Result<pb::Tunnel> {
    let host = Host::read(shared, &row.agent_id).await?;
    Ok(view_on(shared, row, &host, with_cloudflare).await)
}

/// The same, with the host already read.
pub async fn view_on(
    shared: &Shared,
    row: &TunnelRow,
    on: &Host,
    with_cloudflare: bool,
) -> pb::Tunnel {
    let live = shared.fleet.view(&row.agent_id);
    let host: Option<TunnelStatus> = live.tunnels.iter().find(|t| t.name == row.name).cloned();
    let (host_state, host_error) = match &on.agent {
        Some(a) => a
            .last_apply
            .as_ref()
            .and_then(|apply| {
                apply
                    .results
                    .iter()
                    .find(|r| r.kind == "tunnel" && r.name == row.name)
                    .map(|r| (r.state.clone(), r.message.clone()))
            })
            .unwrap_or_else(|| ("pending".into(), String::new())),
        None => (String::new(), String::new()),
    };
    let mut warnings = Vec::new();
    let cloudflare = if with_cloudflare && !row.tunnel_id.is_empty() {
        Some(cloudflare_view(shared, row).await)
    } else {
        None
    };
    if let (Some(cf), Some(h)) = (&cloudflare, &host) {
        let mut stale: Vec<&str> = cf
            .connections
            .iter()
            .map(|c| c.client_id.as_str())
            .filter(|c| *c != h.connector_id)
            .collect();
        stale.sort_unstable();
        stale.dedup();
        for c in stale {
            warnings.push(format!(
                "Cloudflare still lists connector {c}, which the host no longer runs (it goes once its connections drop)"
            ));
        }
        if h.ready && cf.fetched && cf.connections.is_empty() {
            warnings.push("the host says ready, but Cloudflare lists no connection".into());
        }
    }
    if let Some(h) = &host
        && h.active_state == "active"
        && !h.ready
    {
        warnings.push(format!(
            "the unit is active but cloudflared is not ready{}",
            if h.error.is_empty() {
                String::new()
            } else {
                format!(": {}", h.error)
            }
        ));
    }
    pb::Tunnel {
        agent_id: row.agent_id.clone(),
        name: row.name.clone(),
        account: row.account.clone(),
        tunnel_id: row.tunnel_id.clone(),
        routes: row.routes.iter().map(ingress::route_view).collect(),
        state: row.state.clone(),
        config_version: row.config_version,
        dns_records: row.records.keys().cloned().collect(),
        host,
        cloudflare,
        warnings,
        created_at: row.created_at,
        revision: on
            .desired
            .tunnels
            .iter()
            .find(|t| t.name == row.name)
            .map_or(0, |t| t.revision),
        host_state,
        host_error,
    }
}

async fn cloudflare_view(shared: &Shared, row: &TunnelRow) -> pb::TunnelCloudflareView {
    let fetched = match client(shared, &row.account).await {
        Ok(cf) => cf
            .tunnel(&row.cloudflare_account_id, &row.tunnel_id)
            .await
            .map_err(Error::from),
        Err(e) => Err(e),
    };
    match fetched {
        Ok(t) => pb::TunnelCloudflareView {
            fetched: true,
            status: t.status,
            connections: t
                .connections
                .into_iter()
                .map(|c| pb::TunnelConnectionView {
                    id: c.id,
                    client_id: c.client_id,
                    colo_name: c.colo_name,
                    opened_at: c.opened_at,
                    client_version: c.client_version,
                })
                .collect(),
            error: String::new(),
        },
        Err(e) => pb::TunnelCloudflareView {
            fetched: false,
            error: e.to_string(),
            ..Default::default()
        },
    }
}
