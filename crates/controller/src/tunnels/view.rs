//! A tunnel as the admin API shows it: the row, the host's view and Cloudflare's side by side.

use gatehouse_proto::v1::{self as pb, TunnelStatus};

use super::ingress;
use super::revision;
use crate::Shared;
use crate::cloudflare::accounts::client;
use crate::error::{Error, Result};
use crate::store::TunnelRow;

/// A tunnel as the admin API shows it: the row, the host's latest report and last apply, and
/// (when asked for) Cloudflare's view beside it.
pub async fn view(shared: &Shared, row: &TunnelRow, with_cloudflare: bool) -> Result<pb::Tunnel> {
    let live = shared.fleet.view(&row.agent_id);
    let host: Option<TunnelStatus> = live.tunnels.iter().find(|t| t.name == row.name).cloned();
    let (host_state, host_error) = match shared.store.agent_get(&row.agent_id).await? {
        Some(a) => a
            .last_apply
            .and_then(|apply| {
                apply
                    .results
                    .into_iter()
                    .find(|r| r.kind == "tunnel" && r.name == row.name)
                    .map(|r| (r.state, r.message))
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
    Ok(pb::Tunnel {
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
        revision: revision(shared, &row.agent_id, &row.name).await?,
        host_state,
        host_error,
    })
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
