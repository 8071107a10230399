//! Hosts and clients joining and leaving a network. Each gets the lowest free IPv4 and IPv6
//! address of the network (or the ones asked for); the store's unique keys settle a race
//! between two allocations, and the loser picks again.

use std::net::IpAddr;

use gatehouse_proto::names::{AgentId, ResourceName, WgEndpoint, WgKey};
use ipnet::IpNet;

use super::{CLIENT, HOST, ipam, networks};
use crate::Shared;
use crate::error::{Error, Result};
use crate::store::{WgNetworkRow, WgPeerRow};

/// How often an allocation is tried again after another took the same address.
const ATTEMPTS: usize = 32;

/// The name a sealed preshared key is bound to.
pub fn sealed_psk_name(network: &str, client: &str) -> String {
    format!("wg-psk:{network}/{client}")
}

/// What `wg host add` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewHost {
    pub network: String,
    pub agent_id: String,
    pub hub: bool,
    pub endpoint: String,
    pub ipv4: String,
    pub ipv6: String,
}

/// What `wg client add` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewClient {
    pub network: String,
    pub name: String,
    pub public_key: String,
    pub preshared_key: String,
    /// 0: never.
    pub expires_at: i64,
    pub ipv4: String,
    pub ipv6: String,
}

/// A host joins `network`; its key is made on the host and reported later.
pub async fn add_host(shared: &Shared, new: NewHost) -> Result<WgPeerRow> {
    let network = networks::get(shared, &new.network).await?;
    let id: AgentId = new.agent_id.parse()?;
    if shared.store.agent_get(id.as_str()).await?.is_none() {
        return Err(Error::NotFound(format!(
            "no agent {id}: see gatehousectl agents list"
        )));
    }
    let endpoint = endpoint(&new.endpoint)?;
    if new.hub && endpoint.is_empty() {
        return Err(Error::Invalid(
            "endpoint: a hub needs the HOST:PORT its peers reach it at".into(),
        ));
    }
    let peer = WgPeerRow {
        network: network.name.clone(),
        name: id.to_string(),
        kind: HOST.into(),
        agent_id: id.to_string(),
        public_key: String::new(),
        ipv4: String::new(),
        ipv6: String::new(),
        hub: new.hub,
        endpoint,
        preshared_key: String::new(),
        expires_at: 0,
        key_revision: 0,
        created_at: shared.now(),
    };
    let added = insert(shared, &network, peer, &new.ipv4, &new.ipv6).await?;
    super::desired::sync(shared, &network.name).await?;
    Ok(added)
}

/// A client joins `network` by its public key. It attaches to the network's hub, which must
/// have reported its key already (the client's config needs it).
pub async fn add_client(shared: &Shared, new: NewClient) -> Result<(WgPeerRow, WgPeerRow)> {
    let network = networks::get(shared, &new.network).await?;
    let name: ResourceName = new.name.parse()?;
    let key: WgKey = new
        .public_key
        .parse()
        .map_err(|e| Error::Invalid(format!("public_key: {e}")))?;
    let psk = match new.preshared_key.as_str() {
        "" => String::new(),
        text => {
            let psk: WgKey = text
                .parse()
                .map_err(|_| Error::Invalid("preshared_key: not a WireGuard key".into()))?;
            shared.master_key.seal(
                &sealed_psk_name(&network.name, name.as_str()),
                psk.as_str().as_bytes(),
            )
        }
    };
    let hub = hub(shared, &network).await?;
    if shared
        .store
        .wg_key_taken(&network.name, key.as_str())
        .await?
    {
        return Err(Error::Exists(format!(
            "public_key: a peer of {} has this key already",
            network.name
        )));
    }
    let peer = WgPeerRow {
        network: network.name.clone(),
        name: name.to_string(),
        kind: CLIENT.into(),
        agent_id: String::new(),
        public_key: key.to_string(),
        ipv4: String::new(),
        ipv6: String::new(),
        hub: false,
        endpoint: String::new(),
        preshared_key: psk,
        expires_at: new.expires_at,
        key_revision: 0,
        created_at: shared.now(),
    };
    let client = insert(shared, &network, peer, &new.ipv4, &new.ipv6).await?;
    super::desired::sync(shared, &network.name).await?;
    Ok((client, hub))
}

/// The hub clients attach to: the network's first hub with its key reported and an endpoint.
pub async fn hub(shared: &Shared, network: &WgNetworkRow) -> Result<WgPeerRow> {
    let hubs = shared.store.wg_hubs(&network.name).await?;
    match hubs.iter().find(|h| !h.public_key.is_empty()) {
        Some(h) => Ok(h.clone()),
        None if hubs.is_empty() => Err(Error::Precondition(format!(
            "network {} has no hub for clients to attach to: gatehousectl wg host add {} \
             --agent ID --hub --endpoint HOST:PORT",
            network.name, network.name
        ))),
        None => Err(Error::Precondition(format!(
            "the hub of network {} has not reported its key yet (is its agent connected?)",
            network.name
        ))),
    }
}

/// Removes a host or a client; its addresses are free again.
pub async fn remove(shared: &Shared, network: &str, name: &str) -> Result<WgPeerRow> {
    let network = networks::get(shared, network).await?;
    let gone = shared
        .store
        .wg_peer_delete(&network.name, name)
        .await?
        .ok_or_else(|| {
            Error::NotFound(format!(
                "network {} has no peer {name:?}: see gatehousectl wg network show {}",
                network.name, network.name
            ))
        })?;
    if let (Ok(a), Ok(b)) = (gone.ipv4.parse(), gone.ipv6.parse()) {
        shared.wg_addresses.note(&network.name, a, b, false);
    }
    if gone.kind == HOST {
        super::desired::forget(shared, &gone.agent_id, &network.name).await?;
    }
    super::desired::sync(shared, &network.name).await?;
    Ok(gone)
}

/// `HOST:PORT`, checked; "" stays "".
fn endpoint(text: &str) -> Result<String> {
    if text.is_empty() {
        return Ok(String::new());
    }
    let e: WgEndpoint = text
        .parse()
        .map_err(|e| Error::Invalid(format!("endpoint: {e}")))?;
    Ok(e.to_string())
}

/// Gives `peer` its addresses and records it: the ones asked for, or the lowest free ones,
/// picked again when another allocation took them first.
async fn insert(
    shared: &Shared,
    network: &WgNetworkRow,
    mut peer: WgPeerRow,
    want_v4: &str,
    want_v6: &str,
) -> Result<WgPeerRow> {
    let ranges = |text: &str| {
        text.parse::<IpNet>()
            .map_err(|_| Error::Internal(format!("network {}: bad range", network.name)))
    };
    let (v4_range, v6_range) = (ranges(&network.ipv4)?, ranges(&network.ipv6)?);
    let asked_v4 = (!want_v4.is_empty())
        .then(|| ipam::requested(v4_range, "ipv4", want_v4))
        .transpose()?;
    let asked_v6 = (!want_v6.is_empty())
        .then(|| ipam::requested(v6_range, "ipv6", want_v6))
        .transpose()?;
    for _ in 0..ATTEMPTS {
        let (used_v4, used_v6) = networks::used(shared, &network.name).await?;
        let pick =
            |asked: Option<IpAddr>, range: IpNet, used: &std::collections::BTreeSet<_>| match asked
            {
                Some(a) if used.contains(&a) => Err(Error::Exists(format!(
                    "{a} is taken in network {}",
                    network.name
                ))),
                Some(a) => Ok(a),
                None => ipam::next_free(range, used).ok_or_else(|| {
                    Error::Exhausted(format!(
                        "network {} has no free address left in {range}: remove a peer or \
                         make a larger network",
                        network.name
                    ))
                }),
            };
        peer.ipv4 = pick(asked_v4, v4_range, &used_v4)?.to_string();
        peer.ipv6 = pick(asked_v6, v6_range, &used_v6)?.to_string();
        if shared.store.wg_peer_insert(&peer).await? {
            if let (Ok(a), Ok(b)) = (peer.ipv4.parse(), peer.ipv6.parse()) {
                shared.wg_addresses.note(&network.name, a, b, true);
            }
            tracing::info!(network = %network.name, peer = %peer.name, kind = %peer.kind,
                ipv4 = %peer.ipv4, ipv6 = %peer.ipv6, "WireGuard peer added");
            return Ok(peer);
        }
        let peers = shared.store.wg_peers(&network.name).await?;
        if peers.iter().any(|p| p.name == peer.name) {
            return Err(Error::Exists(format!(
                "{} {} is in network {} already",
                peer.kind, peer.name, network.name
            )));
        }
        // Another allocation (maybe another controller's) took an address: read the network
        // again and pick again.
        shared.wg_addresses.forget(&network.name);
    }
    Err(Error::Unavailable(format!(
        "network {}: addresses kept being taken by other additions; try again",
        network.name
    )))
}

/// Asks a host for a new key. Its peers keep the old one until the host reports the new key,
/// then all get it at once; the others' sessions are not touched.
pub async fn rotate_host_key(shared: &Shared, network: &str, agent_id: &str) -> Result<WgPeerRow> {
    let network = networks::get(shared, network).await?;
    let id: AgentId = agent_id.parse()?;
    if !shared
        .store
        .wg_host_rotate(&network.name, id.as_str())
        .await?
    {
        return Err(Error::NotFound(format!(
            "host {id} is not in network {}: see gatehousectl wg network show {}",
            network.name, network.name
        )));
    }
    super::desired::sync(shared, &network.name).await?;
    shared
        .store
        .wg_peers(&network.name)
        .await?
        .into_iter()
        .find(|p| p.name == id.as_str())
        .ok_or_else(|| Error::NotFound(format!("host {id} left network {}", network.name)))
}
