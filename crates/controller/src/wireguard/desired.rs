//! What each host of a network runs: its interface and its peers, computed from the network's
//! rows whenever one changes, and put into the host's desired state. Preshared keys stay out of
//! the stored state; [`with_secrets`] fills them in when a state is sent.

use gatehouse_proto::v1::{DesiredState, WireguardPeer, WireguardSpec, WireguardStatus};
use ipnet::IpNet;

use super::{CLIENT, HOST, Topology, peers::sealed_psk_name};
use crate::Shared;
use crate::error::{Error, Result};
use crate::store::{WgNetworkRow, WgPeerRow};

fn prefix(range: &str) -> u8 {
    range.parse::<IpNet>().map(|n| n.prefix_len()).unwrap_or(32)
}

fn own(p: &WgPeerRow) -> Vec<String> {
    vec![format!("{}/32", p.ipv4), format!("{}/128", p.ipv6)]
}

fn live(p: &WgPeerRow, now: i64) -> bool {
    !p.public_key.is_empty() && (p.expires_at == 0 || p.expires_at > now)
}

/// The interface `host` runs for `network`, given all the network's peers, at `now` (expired
/// clients are left out). Preshared keys are left empty.
pub fn host_spec(
    network: &WgNetworkRow,
    peers: &[WgPeerRow],
    host: &WgPeerRow,
    now: i64,
) -> WireguardSpec {
    let topology = Topology::parse(&network.topology).unwrap_or(Topology::Hub);
    let others: Vec<&WgPeerRow> = peers
        .iter()
        .filter(|p| p.name != host.name && live(p, now))
        .collect();
    let clients: Vec<&WgPeerRow> = others
        .iter()
        .copied()
        .filter(|p| p.kind == CLIENT)
        .collect();
    // Clients attach to the first hub; with two hubs their ranges could not overlap.
    let hub = others.iter().copied().find(|p| p.kind == HOST && p.hub);
    let peer = |p: &WgPeerRow, allowed_ips: Vec<String>| WireguardPeer {
        public_key: p.public_key.clone(),
        preshared_key: String::new(),
        endpoint: p.endpoint.clone(),
        allowed_ips,
        keepalive_seconds: network.keepalive_seconds,
        comment: format!("{} {}", p.kind, p.name),
    };
    let mut out: Vec<WireguardPeer> = Vec::new();
    if host.hub {
        // A hub knows everyone by their own addresses.
        out.extend(others.iter().map(|p| peer(p, own(p))));
    } else {
        match topology {
            Topology::Hub => {
                if let Some(h) = hub {
                    out.push(peer(h, vec![network.ipv4.clone(), network.ipv6.clone()]));
                }
            }
            Topology::Mesh => {
                for p in others.iter().filter(|p| p.kind == HOST) {
                    let mut allowed = own(p);
                    if hub.is_some_and(|h| h.name == p.name) {
                        // Clients are reached through the hub.
                        allowed.extend(clients.iter().flat_map(|c| own(c)));
                    }
                    out.push(peer(p, allowed));
                }
            }
        }
    }
    out.sort_by(|a, b| a.public_key.cmp(&b.public_key));
    WireguardSpec {
        network: network.name.clone(),
        interface: network.interface.clone(),
        key_revision: host.key_revision.max(0) as u64,
        addresses: vec![
            format!("{}/{}", host.ipv4, prefix(&network.ipv4)),
            format!("{}/{}", host.ipv6, prefix(&network.ipv6)),
        ],
        listen_port: u32::from(network.port),
        mtu: network.mtu,
        forward: host.hub,
        peers: out,
    }
}

/// `state` with `network`'s interface set to `spec` (or removed with `None`).
fn with_spec(mut state: DesiredState, network: &str, spec: Option<WireguardSpec>) -> DesiredState {
    state.wireguard.retain(|w| w.network != network);
    state.wireguard.extend(spec);
    state.wireguard.sort_by(|a, b| a.network.cmp(&b.network));
    state
}

/// The networks waiting for [`run`] to sync them. Many changes in a row (10,000 clients
/// added) cost one sync of their network, not one each.
#[derive(Debug, Default)]
pub struct Pending {
    networks: std::sync::Mutex<std::collections::BTreeSet<String>>,
    wake: tokio::sync::Notify,
}

impl Pending {
    /// Asks for `network` to be synced soon.
    pub fn add(&self, network: &str) {
        self.networks
            .lock()
            .expect("pending lock")
            .insert(network.to_owned());
        self.wake.notify_one();
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.networks.lock().expect("pending lock"))
            .into_iter()
            .collect()
    }
}

/// Syncs the networks asked for, until `shutdown`.
pub async fn run(shared: std::sync::Arc<Shared>, shutdown: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = shared.wg_pending.wake.notified() => {}
        }
        for network in shared.wg_pending.take() {
            if let Err(e) = sync_now(&shared, &network).await {
                tracing::warn!(network = %network, "cannot update the hosts of a WireGuard network: {e}");
                // Tried again on the next change or expiry round.
            }
        }
    }
}

/// Asks for what every host of `network` runs to be computed again (soon, coalesced).
pub async fn sync(shared: &Shared, network: &str) -> Result<()> {
    shared.wg_pending.add(network);
    Ok(())
}

/// Puts what every host of `network` must run into its desired state (a new generation only
/// where it changed).
pub async fn sync_now(shared: &Shared, network: &str) -> Result<()> {
    let Some(row) = shared.store.wg_network_get(network).await? else {
        return Ok(());
    };
    let peers = shared.store.wg_peers(network).await?;
    let now = shared.now();
    for host in peers.iter().filter(|p| p.kind == HOST) {
        let spec = host_spec(&row, &peers, host, now);
        crate::desired::change(shared, &host.agent_id, |state| {
            Ok(with_spec(state, network, Some(spec)))
        })
        .await?;
    }
    Ok(())
}

/// Takes `network`'s interface off a host that left it.
pub async fn forget(shared: &Shared, agent: &str, network: &str) -> Result<()> {
    crate::desired::change(shared, agent, |state| Ok(with_spec(state, network, None))).await?;
    Ok(())
}

/// Records the keys a host reports for its interfaces; the networks whose keys changed are
/// synced, so every peer learns the new key.
pub async fn reported(shared: &Shared, agent: &str, statuses: &[WireguardStatus]) -> Result<()> {
    for s in statuses.iter().filter(|s| !s.public_key.is_empty()) {
        if shared
            .store
            .wg_host_key_set(&s.network, agent, &s.public_key)
            .await?
        {
            tracing::info!(network = %s.network, agent, key = %s.public_key, "WireGuard host key recorded");
            sync(shared, &s.network).await?;
        }
    }
    Ok(())
}

/// `state` with the preshared keys of the hub's clients filled in from the sealed store.
pub async fn with_secrets(shared: &Shared, mut state: DesiredState) -> Result<DesiredState> {
    for spec in state.wireguard.iter_mut().filter(|w| w.forward) {
        let clients = shared.store.wg_peers(&spec.network).await?;
        for p in spec.peers.iter_mut().filter(|p| p.preshared_key.is_empty()) {
            let Some(c) = clients
                .iter()
                .find(|c| c.kind == CLIENT && c.public_key == p.public_key)
            else {
                continue;
            };
            if c.preshared_key.is_empty() {
                continue;
            }
            let plain = shared
                .master_key
                .open(&sealed_psk_name(&c.network, &c.name), &c.preshared_key)
                .map_err(|e| Error::Internal(format!("client {}: {e}", c.name)))?;
            p.preshared_key = String::from_utf8(plain).map_err(|_| {
                Error::Internal(format!(
                    "client {}: the stored preshared key is damaged",
                    c.name
                ))
            })?;
        }
    }
    Ok(state)
}

/// Removes the clients whose time is up, and syncs their networks.
pub async fn expire(shared: &Shared) -> Result<usize> {
    let now = shared.now();
    let mut removed = 0;
    for n in shared.store.wg_networks().await? {
        let expired: Vec<WgPeerRow> = shared
            .store
            .wg_peers(&n.name)
            .await?
            .into_iter()
            .filter(|p| p.kind == CLIENT && p.expires_at != 0 && p.expires_at <= now)
            .collect();
        for p in &expired {
            shared.store.wg_peer_delete(&n.name, &p.name).await?;
            if let (Ok(a), Ok(b)) = (p.ipv4.parse(), p.ipv6.parse()) {
                shared.wg_addresses.note(&n.name, a, b, false);
            }
            tracing::info!(network = %n.name, client = %p.name, "WireGuard client expired and removed");
        }
        if !expired.is_empty() {
            removed += expired.len();
            sync(shared, &n.name).await?;
        }
    }
    Ok(removed)
}

/// How often expired clients are looked for.
const EXPIRY_EVERY: std::time::Duration = std::time::Duration::from_secs(15);

/// Removes expired clients every [`EXPIRY_EVERY`] until `shutdown`.
pub async fn expiry(shared: std::sync::Arc<Shared>, shutdown: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(EXPIRY_EVERY) => {}
        }
        if let Err(e) = expire(&shared).await {
            tracing::warn!("cannot remove expired WireGuard clients: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(topology: &str) -> WgNetworkRow {
        WgNetworkRow {
            name: "office".into(),
            interface: "gh-office".into(),
            ipv4: "10.60.0.0/24".into(),
            ipv6: "fd12::/64".into(),
            topology: topology.into(),
            port: 51820,
            mtu: 1420,
            dns: vec![],
            keepalive_seconds: 25,
            created_at: 0,
        }
    }

    fn peer(kind: &str, name: &str, n: u8, hub: bool) -> WgPeerRow {
        WgPeerRow {
            network: "office".into(),
            name: name.into(),
            kind: kind.into(),
            agent_id: if kind == HOST {
                name.into()
            } else {
                String::new()
            },
            public_key: format!("key-{name}"),
            ipv4: format!("10.60.0.{n}"),
            ipv6: format!("fd12::{n}"),
            hub,
            endpoint: if hub {
                "hub.example.com:51820".into()
            } else {
                String::new()
            },
            preshared_key: String::new(),
            expires_at: 0,
            key_revision: 0,
            created_at: 0,
        }
    }

    fn allowed(spec: &WireguardSpec, key: &str) -> Vec<String> {
        spec.peers
            .iter()
            .find(|p| p.public_key == key)
            .map(|p| p.allowed_ips.clone())
            .unwrap_or_default()
    }

    #[test]
    fn in_a_hub_network_everyone_goes_through_the_hub() {
        let mut phone = peer(CLIENT, "phone", 9, false);
        phone.expires_at = 1000;
        let mut unreported = peer(HOST, "c", 4, false);
        unreported.public_key.clear();
        let peers = vec![
            peer(HOST, "hub", 1, true),
            peer(HOST, "a", 2, false),
            phone,
            unreported,
        ];
        let n = network("hub");
        let hub = host_spec(&n, &peers, &peers[0], 500);
        assert!(hub.forward);
        assert_eq!(hub.addresses, ["10.60.0.1/24", "fd12::1/64"]);
        assert_eq!(hub.peers.len(), 2, "a and the phone; c has no key yet");
        assert_eq!(allowed(&hub, "key-phone"), ["10.60.0.9/32", "fd12::9/128"]);
        let a = host_spec(&n, &peers, &peers[1], 500);
        assert!(!a.forward);
        assert_eq!(a.peers.len(), 1);
        assert_eq!(allowed(&a, "key-hub"), ["10.60.0.0/24", "fd12::/64"]);
        assert_eq!(a.peers[0].endpoint, "hub.example.com:51820");
        // The phone's time is up: the hub drops it.
        let later = host_spec(&n, &peers, &peers[0], 1000);
        assert!(later.peers.iter().all(|p| p.public_key != "key-phone"));
    }

    #[test]
    fn in_a_mesh_hosts_peer_directly_and_clients_go_through_the_hub() {
        let peers = vec![
            peer(HOST, "hub", 1, true),
            peer(HOST, "a", 2, false),
            peer(HOST, "b", 3, false),
            peer(CLIENT, "phone", 9, false),
        ];
        let n = network("mesh");
        let a = host_spec(&n, &peers, &peers[1], 0);
        assert_eq!(a.peers.len(), 2, "the hub and b, not the phone");
        assert_eq!(allowed(&a, "key-b"), ["10.60.0.3/32", "fd12::3/128"]);
        assert_eq!(
            allowed(&a, "key-hub"),
            ["10.60.0.1/32", "fd12::1/128", "10.60.0.9/32", "fd12::9/128"]
        );
        let hub = host_spec(&n, &peers, &peers[0], 0);
        assert_eq!(hub.peers.len(), 3);
        let keys: Vec<&str> = a.peers.iter().map(|p| p.public_key.as_str()).collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted, "peers in a stable order");
    }
}
