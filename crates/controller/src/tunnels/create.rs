//! Creating a tunnel (or finishing a create that stopped): the row first, then the tunnel at
//! Cloudflare, its token, its configuration and DNS, then the host's desired state.

use base64::Engine as _;
use gatehouse_proto::names::ResourceName;
use tracing::info;

use super::ingress::LocalSite;
use super::{Named, READY, local_sites, sealed_name, with_tunnel, zone_of};
use super::{dns, ingress};
use crate::Shared;
use crate::cloudflare::Client;
use crate::cloudflare::accounts::client;
use crate::error::{Error, Result};
use crate::store::{TunnelRouteRow, TunnelRow};

/// Creates a tunnel on a host, or finishes creating it.
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
pub(super) async fn publish(
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

pub(super) async fn put(shared: &Shared, row: &mut TunnelRow) -> Result<()> {
    row.updated_at = shared.now();
    shared.store.tunnel_put(row).await?;
    Ok(())
}

/// Records where the set-up (or the removal) stopped, and says how to finish it.
pub(super) async fn fail(shared: &Shared, row: &mut TunnelRow, step: &str, e: Error) -> Error {
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
