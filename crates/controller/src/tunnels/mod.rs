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

mod create;
pub mod dns;
pub mod ingress;
mod manage;
mod view;

use std::time::Duration;

use gatehouse_proto::names::TunnelName;
use gatehouse_proto::v1::{DesiredState, TunnelSpec};

use crate::Shared;
use crate::error::{Error, Result};
use crate::store::TunnelRow;
use ingress::LocalSite;

pub use create::create;
pub use manage::{add_route, delete, remove_route, restart, rotate};
pub use view::{Host, view, view_on};

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
