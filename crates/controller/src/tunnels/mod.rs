//! Cloudflare Tunnels, from one place: a remotely managed tunnel per (host, name), its ingress
//! configuration, one proxied CNAME per hostname, and the unit on the host.
//!
//! Every step that makes something at Cloudflare is recorded in the store before the next one
//! (the `tunnels` row), so a failure midway leaves a state `tunnel show` explains and running
//! the same command again finishes. The token is kept sealed apart from the desired state and
//! filled in only when a desired state goes down the agent's stream ([`with_tokens`]).
//!
//! Delete goes in the one order Cloudflare accepts: the host stops the unit and removes the
//! token, then the connections are dropped, then gatehouse's own DNS records, then the tunnel.

pub mod dns;
pub mod ingress;

use std::time::Duration;

use base64::Engine as _;
use gatehouse_proto::names::{DomainName, ResourceName, TunnelName};
use gatehouse_proto::v1::{self as pb, DesiredState, TunnelSpec, TunnelStatus};
use tracing::info;

use crate::Shared;
use crate::cloudflare::Client;
use crate::cloudflare::accounts::client;
use crate::error::{Error, Refused, Result};
use crate::store::{TunnelRouteRow, TunnelRow};
use ingress::LocalSite;

/// How long delete and rotate wait for the host.
pub const HOST_WAIT: Duration = Duration::from_secs(60);
/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(250);

/// The row's state once everything is made.
const READY: &str = "ready";

fn sealed_name(agent_id: &str, name: &str) -> String {
    format!("tunnel.{agent_id}.{name}")
}

/// A tunnel named in a request.
#[derive(Debug)]
pub struct Named {
    pub agent_id: String,
    pub name: TunnelName,
}

impl Named {
    pub fn parse(agent_id: &str, name: &str) -> Result<Self> {
        Ok(Self {
            agent_id: agent_id
                .parse::<gatehouse_proto::names::AgentId>()?
                .to_string(),
            name: name.parse()?,
        })
    }

    async fn row(&self, shared: &Shared) -> Result<TunnelRow> {
        shared
            .store
            .tunnel_get(&self.agent_id, self.name.as_str())
            .await?
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "agent {} has no tunnel {}: see gatehousectl tunnel list",
                    self.agent_id, self.name
                ))
            })
    }
}

/// Creates a tunnel on a host, or finishes creating it.
pub async fn create(
    shared: &Shared,
    named: Named,
    account: &str,
    routes: Vec<TunnelRouteRow>,
) -> Result<TunnelRow> {
    let agent = &named.agent_id;
    shared.store.agent_get(agent).await?.ok_or_else(|| {
        Error::NotFound(format!("no agent {agent}: see gatehousectl agents list"))
    })?;
    let mut hostnames: Vec<&str> = routes.iter().map(|r| r.hostname.as_str()).collect();
    hostnames.sort_unstable();
    if let Some(w) = hostnames.windows(2).find(|w| w[0] == w[1]) {
        return Err(Error::Invalid(format!(
            "route: the hostname {} is given twice",
            w[0]
        )));
    }
    let existing = shared.store.tunnel_get(agent, named.name.as_str()).await?;
    if let Some(row) = &existing
        && row.state == READY
        && row.routes != routes
    {
        return Err(Error::Exists(format!(
            "agent {agent} already has a tunnel {}: change its routes with gatehousectl tunnel route add|remove",
            named.name
        )));
    }
    let account = match (&existing, account) {
        (Some(row), "") => row.account.clone(),
        (Some(row), a) if a != row.account => {
            return Err(Error::Exists(format!(
                "the tunnel {} is in the Cloudflare account {}, not {a}",
                named.name, row.account
            )));
        }
        (_, "") => account_for(shared, &routes).await?,
        (_, a) => a.parse::<ResourceName>()?.to_string(),
    };
    let cf = client(shared, &account).await?;
    let account_id = match &existing {
        Some(row) if !row.cloudflare_account_id.is_empty() => row.cloudflare_account_id.clone(),
        _ => account_id(&cf, &account, &routes).await?,
    };
    let now = shared.now();
    let mut row = existing.unwrap_or(TunnelRow {
        agent_id: agent.clone(),
        name: named.name.to_string(),
        account: account.clone(),
        cloudflare_account_id: account_id.clone(),
        tunnel_id: String::new(),
        token_sealed: String::new(),
        secret_sha256: String::new(),
        routes: Vec::new(),
        records: Default::default(),
        config_version: 0,
        state: "creating the tunnel at Cloudflare".into(),
        created_at: now,
        updated_at: now,
    });
    row.routes = routes;
    // The host's sites are checked before anything is made.
    let sites = local_sites(shared, agent).await?;
    ingress::canonical(&row.routes, |n| sites.get(n).cloned())?;
    put(shared, &mut row).await?;

    if row.tunnel_id.is_empty() {
        // The secret is chosen here and its hash recorded first: a tunnel of this name found
        // later is known to be this one only if its token carries it.
        let secret =
            base64::engine::general_purpose::STANDARD.encode(crate::secrets::random_bytes::<32>());
        row.secret_sha256 = crate::secrets::sha256_hex(secret.as_bytes());
        row.state = "creating the tunnel at Cloudflare".into();
        put(shared, &mut row).await?;
        let made = match cf
            .create_tunnel(&account_id, named.name.as_str(), &secret)
            .await
        {
            Ok(t) => Some((t.id, t.token)),
            Err(e) if e.has_code(1013) || e.status() == Some(409) => None,
            Err(e) => return Err(fail(shared, &mut row, "creating the tunnel", e.into()).await),
        };
        let (id, token) = match made {
            Some(made) => made,
            None => adopt(shared, &cf, &mut row).await?,
        };
        row.tunnel_id = id;
        row.token_sealed = shared
            .master_key
            .seal(&sealed_name(agent, named.name.as_str()), token.as_bytes());
        row.state = "configuring the tunnel".into();
        put(shared, &mut row).await?;
        info!(agent_id = %agent, tunnel = %named.name, tunnel_id = %row.tunnel_id, "tunnel created at Cloudflare");
    }
    if row.token_sealed.is_empty() {
        let token = match cf.tunnel_token(&account_id, &row.tunnel_id).await {
            Ok(t) => t,
            Err(e) => return Err(fail(shared, &mut row, "reading the token", e.into()).await),
        };
        row.token_sealed = shared
            .master_key
            .seal(&sealed_name(agent, named.name.as_str()), token.as_bytes());
        put(shared, &mut row).await?;
    }
    publish(shared, &cf, &mut row, &sites).await?;
    let name = named.name.to_string();
    crate::desired::change(shared, agent, |state| Ok(with_tunnel(state, &name, None))).await?;
    Ok(row)
}

/// The tunnel named like this one at Cloudflare (HTTP 409 on create) is adopted when the store
/// says it is this one: its token carries the secret whose hash gatehouse recorded before it
/// asked for the tunnel (a create whose answer was lost). Anything else is refused.
async fn adopt(shared: &Shared, cf: &Client, row: &mut TunnelRow) -> Result<(String, String)> {
    let (name, account) = (row.name.clone(), row.account.clone());
    let refuse = |why: &str| {
        Error::Exists(format!(
            "a tunnel named {name} already exists in the Cloudflare account {account} and {why}: \
             delete it there (or with cloudflared tunnel delete) or choose another --name"
        ))
    };
    let Some(found) = cf
        .tunnel_by_name(&row.cloudflare_account_id, &row.name)
        .await?
    else {
        return Err(refuse("it could not be read back"));
    };
    let token = match cf.tunnel_token(&row.cloudflare_account_id, &found.id).await {
        Ok(t) => t,
        Err(e) => return Err(fail(shared, row, "reading the token", e.into()).await),
    };
    let ours = crate::cloudflare::tunnels::token_secret(&token)
        .is_some_and(|s| crate::secrets::sha256_hex(s.as_bytes()) == row.secret_sha256);
    if !ours || row.secret_sha256.is_empty() {
        let e = refuse("gatehouse did not make it");
        row.state = format!("refused: {e}");
        put(shared, row).await?;
        return Err(e);
    }
    info!(tunnel = %row.name, tunnel_id = %found.id, "adopted the tunnel gatehouse made before its answer was lost");
    Ok((found.id, token))
}

/// The ingress configuration and the DNS records, as the row's routes say; then the row is
/// ready.
async fn publish(
    shared: &Shared,
    cf: &Client,
    row: &mut TunnelRow,
    sites: &std::collections::BTreeMap<String, LocalSite>,
) -> Result<()> {
    let rules = ingress::canonical(&row.routes, |n| sites.get(n).cloned())?;
    match cf
        .put_tunnel_configuration(&row.cloudflare_account_id, &row.tunnel_id, &rules)
        .await
    {
        Ok(version) => {
            row.config_version = version;
            row.state = "creating DNS records".into();
            put(shared, row).await?;
        }
        Err(e) => return Err(fail(shared, row, "configuring the tunnel", e.into()).await),
    }
    if let Err(e) = dns::sync(shared, cf, row).await {
        return Err(fail(shared, row, "the DNS records", e).await);
    }
    row.state = READY.into();
    put(shared, row).await
}

async fn put(shared: &Shared, row: &mut TunnelRow) -> Result<()> {
    row.updated_at = shared.now();
    shared.store.tunnel_put(row).await?;
    Ok(())
}

/// Records where the set-up (or the removal) stopped, and says how to finish it.
async fn fail(shared: &Shared, row: &mut TunnelRow, step: &str, e: Error) -> Error {
    row.state = format!("stopped at {step}: {e}");
    let _ = put(shared, row).await;
    e.reworded(|_| {
        format!(
            "{}; run the same command again to finish (tunnel show explains)",
            row.state
        )
    })
}

/// The Cloudflare account (gatehouse's name) whose zones hold every route's hostname.
async fn account_for(shared: &Shared, routes: &[TunnelRouteRow]) -> Result<String> {
    let accounts = shared.store.cloudflare_accounts().await?;
    if routes.is_empty() {
        return match accounts.as_slice() {
            [one] => Ok(one.name.clone()),
            _ => Err(Error::Invalid(
                "account: a tunnel without routes needs --account".into(),
            )),
        };
    }
    let mut holding = Vec::new();
    for a in &accounts {
        let zones: Vec<String> = client(shared, &a.name)
            .await?
            .zones()
            .await?
            .into_iter()
            .map(|z| z.name)
            .collect();
        if routes
            .iter()
            .all(|r| zone_of(&r.hostname, zones.iter().map(String::as_str)).is_some())
        {
            holding.push(a.name.clone());
        }
    }
    match holding.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Error::Precondition(format!(
            "no Cloudflare account gatehouse knows holds the zones of every route ({}): \
             add one with gatehousectl cloudflare account add, or split the routes",
            routes
                .iter()
                .map(|r| r.hostname.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        _ => Err(Error::Invalid(format!(
            "account: several accounts hold these zones ({}); choose one with --account",
            holding.join(", ")
        ))),
    }
}

/// Cloudflare's id of the account, from the zones it holds.
async fn account_id(cf: &Client, account: &str, routes: &[TunnelRouteRow]) -> Result<String> {
    let zones = cf.zones().await?;
    let zone = match routes.first() {
        Some(r) => {
            let name = zone_of(&r.hostname, zones.iter().map(|z| z.name.as_str()));
            zones.iter().find(|z| Some(z.name.as_str()) == name)
        }
        None => zones.first(),
    };
    zone.map(|z| z.account.id.clone())
        .filter(|id| !id.is_empty())
        .ok_or_else(|| {
            Error::Precondition(format!(
                "the Cloudflare account {account} has no zone for these routes: see gatehousectl cloudflare zones"
            ))
        })
}

/// The longest zone name that `hostname` is in (`*.shop.example.com` is in `example.com`).
pub fn zone_of<'a>(hostname: &str, zones: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let host = hostname.strip_prefix("*.").unwrap_or(hostname);
    zones
        .filter(|z| host == *z || host.ends_with(&format!(".{z}")))
        .max_by_key(|z| z.len())
}

/// The host's sites, by name, as a tunnel reaches them.
async fn local_sites(
    shared: &Shared,
    agent: &str,
) -> Result<std::collections::BTreeMap<String, LocalSite>> {
    let state = shared
        .store
        .desired_latest(agent)
        .await?
        .map(|d| d.state)
        .unwrap_or_default();
    Ok(state
        .sites
        .iter()
        .map(|s| {
            let port = if s.port == 0 { 443 } else { s.port as u16 };
            (
                s.name.clone(),
                LocalSite {
                    domains: s.domains.clone(),
                    port,
                },
            )
        })
        .collect())
}

/// `state` with the tunnel in it; `revision` raised when given (restart, rotate).
fn with_tunnel(mut state: DesiredState, name: &str, revision: Option<u64>) -> DesiredState {
    match state.tunnels.iter_mut().find(|t| t.name == name) {
        Some(t) => {
            if let Some(r) = revision {
                t.revision = r;
            }
        }
        None => state.tunnels.push(TunnelSpec {
            name: name.to_owned(),
            token: String::new(),
            revision: revision.unwrap_or(0),
        }),
    }
    state.tunnels.sort_by(|a, b| a.name.cmp(&b.name));
    state
}

/// The revision the desired state holds for the tunnel.
async fn revision(shared: &Shared, agent: &str, name: &str) -> Result<u64> {
    Ok(shared
        .store
        .desired_latest(agent)
        .await?
        .and_then(|d| d.state.tunnels.into_iter().find(|t| t.name == name))
        .map_or(0, |t| t.revision))
}

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

/// Polls `check` until it gives a value or `timeout` passes.
async fn wait<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    wait_async(timeout, || std::future::ready(check())).await
}

async fn wait_async<T, F: Future<Output = Option<T>>>(
    timeout: Duration,
    mut check: impl FnMut() -> F,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `state` with every tunnel's token, unsealed from the store, as the agent needs it.
pub async fn with_tokens(
    shared: &Shared,
    agent: &str,
    mut state: DesiredState,
) -> Result<DesiredState> {
    for t in state.tunnels.iter_mut().filter(|t| t.token.is_empty()) {
        let Some(row) = shared.store.tunnel_get(agent, &t.name).await? else {
            continue;
        };
        if row.token_sealed.is_empty() {
            continue;
        }
        let plain = shared
            .master_key
            .open(&sealed_name(agent, &t.name), &row.token_sealed)
            .map_err(|e| Error::Internal(format!("tunnel {}: {e}", t.name)))?;
        t.token = String::from_utf8(plain).map_err(|_| {
            Error::Internal(format!("tunnel {}: the stored token is damaged", t.name))
        })?;
    }
    Ok(state)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_find_their_longest_zone() {
        let zones = ["example.com", "shop.example.com", "example.org"];
        assert_eq!(
            zone_of("a.shop.example.com", zones.into_iter()),
            Some("shop.example.com")
        );
        assert_eq!(
            zone_of("*.example.com", zones.into_iter()),
            Some("example.com")
        );
        assert_eq!(zone_of("example.net", zones.into_iter()), None);
        assert_eq!(zone_of("badexample.com", zones.into_iter()), None);
    }

    #[test]
    fn a_tunnel_is_added_once_and_restarts_raise_its_revision() {
        let state = with_tunnel(DesiredState::default(), "b", None);
        let state = with_tunnel(state, "a", None);
        let state = with_tunnel(state, "b", Some(3));
        let names: Vec<_> = state
            .tunnels
            .iter()
            .map(|t| (t.name.as_str(), t.revision))
            .collect();
        assert_eq!(names, [("a", 0), ("b", 3)]);
        assert!(state.tunnels.iter().all(|t| t.token.is_empty()));
    }
}
