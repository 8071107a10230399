//! Cloudflare Tunnels over the admin API (the work is in `crate::tunnels`).

use std::sync::Arc;

use gatehouse_proto::v1::controller_message::Msg as Down;
use gatehouse_proto::v1::*;
use tokio::sync::mpsc;
use tonic::Status;

use super::{Audited, ItemStream};
use crate::Shared;
use crate::error::{Error, Result};
use crate::tunnels::{self, Named, ingress};

fn target(agent_id: &str, name: &str) -> String {
    format!("agent:{agent_id}/tunnel:{name}")
}

impl Audited for CreateTunnelRequest {
    type Response = Tunnel;
    fn target(&self) -> String {
        target(&self.agent_id, &self.name)
    }
    fn detail(&self) -> Option<String> {
        let hosts: Vec<&str> = self.routes.iter().map(|r| r.hostname.as_str()).collect();
        (!hosts.is_empty()).then(|| format!("routes={}", hosts.join(",")))
    }
}

impl Audited for GetTunnelRequest {
    type Response = Tunnel;
    fn target(&self) -> String {
        target(&self.agent_id, &self.name)
    }
}

impl Audited for DeleteTunnelRequest {
    type Response = Tunnel;
    fn target(&self) -> String {
        target(&self.agent_id, &self.name)
    }
    fn detail(&self) -> Option<String> {
        self.force.then(|| "force".into())
    }
}

impl Audited for TunnelRouteRequest {
    type Response = Tunnel;
    fn target(&self) -> String {
        target(&self.agent_id, &self.name)
    }
    fn detail(&self) -> Option<String> {
        self.route
            .as_ref()
            .map(|r| format!("hostname={}", r.hostname))
    }
}

pub(super) async fn create_tunnel(shared: &Shared, r: CreateTunnelRequest) -> Result<Tunnel> {
    let named = Named::parse(&r.agent_id, &r.name)?;
    let routes = r
        .routes
        .iter()
        .map(ingress::route_row)
        .collect::<Result<Vec<_>>>()?;
    let row = tunnels::create(shared, named, &r.account, routes).await?;
    tunnels::view(shared, &row, false).await
}

pub(crate) async fn list_tunnels(
    shared: &Shared,
    r: ListTunnelsRequest,
) -> Result<ListTunnelsResponse> {
    let agent = match r.agent_id.as_str() {
        "" => None,
        id => Some(super::agent_id_arg(id)?),
    };
    // Each agent's record and desired state are read once, for all of its tunnels.
    let mut hosts: std::collections::HashMap<String, tunnels::Host> = Default::default();
    let mut out = Vec::new();
    for row in shared.store.tunnels(agent.as_deref()).await? {
        if !hosts.contains_key(&row.agent_id) {
            let host = tunnels::Host::read(shared, &row.agent_id).await?;
            hosts.insert(row.agent_id.clone(), host);
        }
        out.push(tunnels::view_on(shared, &row, &hosts[&row.agent_id], false).await);
    }
    Ok(ListTunnelsResponse { tunnels: out })
}

pub(super) async fn get_tunnel(shared: &Shared, r: GetTunnelRequest) -> Result<Tunnel> {
    let named = Named::parse(&r.agent_id, &r.name)?;
    let row = shared
        .store
        .tunnel_get(&named.agent_id, named.name.as_str())
        .await?
        .ok_or_else(|| not_found(&named))?;
    tunnels::view(shared, &row, true).await
}

fn not_found(named: &Named) -> Error {
    Error::NotFound(format!(
        "agent {} has no tunnel {}: see gatehousectl tunnel list",
        named.agent_id, named.name
    ))
}

fn route_of(r: &TunnelRouteRequest) -> Result<&TunnelRoute> {
    r.route
        .as_ref()
        .ok_or_else(|| Error::Invalid("route: required".into()))
}

pub(super) async fn add_tunnel_route(shared: &Shared, r: TunnelRouteRequest) -> Result<Tunnel> {
    let named = Named::parse(&r.agent_id, &r.name)?;
    let route = ingress::route_row(route_of(&r)?)?;
    let row = tunnels::add_route(shared, named, route).await?;
    tunnels::view(shared, &row, false).await
}

pub(super) async fn remove_tunnel_route(shared: &Shared, r: TunnelRouteRequest) -> Result<Tunnel> {
    let named = Named::parse(&r.agent_id, &r.name)?;
    let row = tunnels::remove_route(shared, named, &route_of(&r)?.hostname).await?;
    tunnels::view(shared, &row, false).await
}

pub(super) async fn restart_tunnel(shared: &Shared, r: GetTunnelRequest) -> Result<Tunnel> {
    let row = tunnels::restart(shared, Named::parse(&r.agent_id, &r.name)?).await?;
    tunnels::view(shared, &row, false).await
}

pub(super) async fn rotate_tunnel(shared: &Shared, r: GetTunnelRequest) -> Result<Tunnel> {
    let row = tunnels::rotate(shared, Named::parse(&r.agent_id, &r.name)?).await?;
    tunnels::view(shared, &row, true).await
}

pub(super) async fn delete_tunnel(shared: &Shared, r: DeleteTunnelRequest) -> Result<Tunnel> {
    let row = tunnels::delete(shared, Named::parse(&r.agent_id, &r.name)?, r.force).await?;
    Ok(Tunnel {
        agent_id: row.agent_id,
        name: row.name,
        account: row.account,
        tunnel_id: row.tunnel_id,
        state: row.state,
        created_at: row.created_at,
        ..Tunnel::default()
    })
}

/// One log request: its lines as they come; the agent is told to stop when the caller hangs
/// up.
struct Reader {
    shared: Arc<Shared>,
    agent: String,
    id: u64,
    lines: mpsc::Receiver<LogLines>,
    done: bool,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.shared.fleet.close_logs(self.id);
        if !self.done {
            let _ = self
                .shared
                .fleet
                .command(&self.agent, Down::LogsCancel(LogsCancel { id: self.id }));
        }
    }
}

pub(super) async fn get_tunnel_logs(
    shared: &Arc<Shared>,
    r: GetTunnelLogsRequest,
) -> Result<ItemStream<TunnelLogLines>> {
    let named = Named::parse(&r.agent_id, &r.name)?;
    shared
        .store
        .tunnel_get(&named.agent_id, named.name.as_str())
        .await?
        .ok_or_else(|| not_found(&named))?;
    let (id, lines) = shared.fleet.open_logs(&named.agent_id);
    let request = LogsRequest {
        id,
        tunnel: named.name.to_string(),
        lines: r.lines,
        follow: r.follow,
    };
    if let Err(e) = shared
        .fleet
        .command(&named.agent_id, Down::LogsRequest(request))
    {
        shared.fleet.close_logs(id);
        return Err(Error::Unavailable(format!(
            "{e}: a tunnel's logs are read on its host"
        )));
    }
    let reader = Reader {
        shared: shared.clone(),
        agent: named.agent_id,
        id,
        lines,
        done: false,
    };
    let stream = futures_util::stream::unfold(reader, |mut reader| async move {
        if reader.done {
            return None;
        }
        let batch = reader.lines.recv().await?;
        reader.done = batch.done;
        let item = if batch.error.is_empty() || !batch.lines.is_empty() {
            Ok(TunnelLogLines { lines: batch.lines })
        } else {
            Err(Status::unavailable(format!(
                "cannot read the journal on the host: {}",
                batch.error
            )))
        };
        Some((item, reader))
    });
    Ok(Box::pin(stream))
}
