//! Changing a tunnel that exists: routes, restarts, a new secret, and delete in the order
//! Cloudflare accepts.

use base64::Engine as _;
use gatehouse_proto::names::DomainName;
use tracing::info;

use super::create::{fail, publish, put};
use super::{HOST_WAIT, Named, local_sites, revision, sealed_name, wait, wait_async, with_tunnel};
use super::{dns, ingress};
use crate::Shared;
use crate::cloudflare::accounts::client;
use crate::error::{Error, Refused, Result};
use crate::store::{TunnelRouteRow, TunnelRow};

/// Adds a route, or replaces the one with the same hostname.
pub async fn add_route(shared: &Shared, named: Named, route: TunnelRouteRow) -> Result<TunnelRow> {
    let mut row = named.row(shared).await?;
    row.routes.retain(|r| r.hostname != route.hostname);
    row.routes.push(route);
    republish(shared, &named, row).await
}

/// Removes the route for `hostname` (and its DNS record, if gatehouse's).
pub async fn remove_route(shared: &Shared, named: Named, hostname: &str) -> Result<TunnelRow> {
    let hostname: DomainName = hostname.parse()?;
    let mut row = named.row(shared).await?;
    let before = row.routes.len();
    row.routes.retain(|r| r.hostname != hostname.as_str());
    if row.routes.len() == before {
        return Err(Error::NotFound(format!(
            "the tunnel {} has no route for {hostname}",
            named.name
        )));
    }
    republish(shared, &named, row).await
}

async fn republish(shared: &Shared, named: &Named, mut row: TunnelRow) -> Result<TunnelRow> {
    if row.tunnel_id.is_empty() {
        return Err(Error::Precondition(format!(
            "the tunnel {} is not made yet ({}): run tunnel create again first",
            named.name, row.state
        )));
    }
    let sites = local_sites(shared, &named.agent_id).await?;
    ingress::canonical(&row.routes, |n| sites.get(n).cloned())?;
    let cf = client(shared, &row.account).await?;
    publish(shared, &cf, &mut row, &sites).await?;
    Ok(row)
}

/// Asks the host to restart the tunnel.
pub async fn restart(shared: &Shared, named: Named) -> Result<TunnelRow> {
    let row = named.row(shared).await?;
    let next = revision(shared, &named.agent_id, named.name.as_str()).await? + 1;
    let name = named.name.to_string();
    crate::desired::change(shared, &named.agent_id, |state| {
        Ok(with_tunnel(state, &name, Some(next)))
    })
    .await?;
    info!(agent_id = %named.agent_id, tunnel = %named.name, revision = next, "tunnel restart asked");
    Ok(row)
}

/// A new secret at Cloudflare (so a new token), the token to the host, a restart there; done
/// once the host says the tunnel is ready again with it.
pub async fn rotate(shared: &Shared, named: Named) -> Result<TunnelRow> {
    let mut row = named.row(shared).await?;
    if row.tunnel_id.is_empty() {
        return Err(Error::Precondition(format!(
            "the tunnel {} is not made yet: run tunnel create again first",
            named.name
        )));
    }
    let cf = client(shared, &row.account).await?;
    let secret =
        base64::engine::general_purpose::STANDARD.encode(crate::secrets::random_bytes::<32>());
    let token = cf
        .rotate_tunnel_secret(&row.cloudflare_account_id, &row.tunnel_id, &secret)
        .await?;
    row.token_sealed = shared.master_key.seal(
        &sealed_name(&named.agent_id, named.name.as_str()),
        token.as_bytes(),
    );
    put(shared, &mut row).await?;
    info!(agent_id = %named.agent_id, tunnel = %named.name, "tunnel secret rotated at Cloudflare");
    let next = revision(shared, &named.agent_id, named.name.as_str()).await? + 1;
    let name = named.name.to_string();
    crate::desired::change(shared, &named.agent_id, |state| {
        Ok(with_tunnel(state, &name, Some(next)))
    })
    .await?;
    let ready = wait(HOST_WAIT, || {
        let view = shared.fleet.view(&named.agent_id);
        view.tunnels
            .iter()
            .any(|t| t.name == name && t.revision >= next && t.ready)
            .then_some(())
    })
    .await;
    if ready.is_none() {
        return Err(Error::Unavailable(format!(
            "the new token is on its way to the host, but the tunnel {name} did not report ready \
             with it within {} s: see gatehousectl tunnel show (the old token opens no new connections)",
            HOST_WAIT.as_secs()
        )));
    }
    Ok(row)
}

/// Removes the tunnel from the host, then everything made for it at Cloudflare, then forgets
/// it. With `force`, the host is not waited for.
pub async fn delete(shared: &Shared, named: Named, force: bool) -> Result<TunnelRow> {
    let mut row = named.row(shared).await?;
    let agent = named.agent_id.clone();
    let name = named.name.to_string();
    row.state = "deleting: waiting for the host to stop the tunnel".into();
    put(shared, &mut row).await?;
    let mut on_host = false;
    let state = crate::desired::change(shared, &agent, |mut state| {
        on_host = state.tunnels.iter().any(|t| t.name == name);
        state.tunnels.retain(|t| t.name != name);
        Ok::<_, Refused>(state)
    })
    .await?;
    // A tunnel the host was never given (a create that stopped early) has nothing to stop.
    if on_host && !force {
        let generation = state.generation;
        let done = wait_async(HOST_WAIT, || async {
            let a = shared.store.agent_get(&agent).await.ok().flatten()?;
            let apply = a.last_apply?;
            (apply.generation >= generation).then(|| {
                apply
                    .results
                    .into_iter()
                    .find(|r| r.kind == "tunnel" && r.name == name && r.state == "failed")
                    .map(|r| r.message)
            })
        })
        .await;
        match done {
            None => {
                let e = Error::Unavailable(format!(
                    "the host has not stopped the tunnel within {} s (is agent {agent} connected?); \
                     run tunnel delete again, or with --force for a host that is gone",
                    HOST_WAIT.as_secs()
                ));
                return Err(fail(shared, &mut row, "stopping the tunnel on the host", e).await);
            }
            Some(Some(why)) => {
                let e = Error::Precondition(format!("the host could not remove it: {why}"));
                return Err(fail(shared, &mut row, "stopping the tunnel on the host", e).await);
            }
            Some(None) => {}
        }
    }
    if !row.tunnel_id.is_empty() {
        let cf = client(shared, &row.account).await?;
        let account = row.cloudflare_account_id.clone();
        let id = row.tunnel_id.clone();
        if let Err(e) = cf.delete_tunnel_connections(&account, &id).await
            && e.status() != Some(404)
        {
            return Err(fail(shared, &mut row, "deleting the connections", e.into()).await);
        }
        row.state = "deleting: DNS records".into();
        put(shared, &mut row).await?;
        row.routes.clear();
        if let Err(e) = dns::sync(shared, &cf, &mut row).await {
            return Err(fail(shared, &mut row, "deleting the DNS records", e).await);
        }
        if let Err(e) = cf.delete_tunnel(&account, &id).await
            && e.status() != Some(404)
        {
            return Err(fail(shared, &mut row, "deleting the tunnel", e.into()).await);
        }
    }
    shared.store.tunnel_delete(&agent, &name).await?;
    info!(agent_id = %agent, tunnel = %name, "tunnel deleted");
    row.state = "deleted".into();
    Ok(row)
}
