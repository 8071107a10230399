//! WireGuard networks over the admin API (the work is in `crate::wireguard`).

use std::time::Duration;

use gatehouse_proto::v1::*;

use super::Audited;
use crate::Shared;
use crate::error::{Error, Result};
use crate::store::{WgNetworkRow, WgPeerRow};
use crate::wireguard::{ipam, networks, peers};

impl Audited for CreateWgNetworkRequest {
    type Response = WgNetwork;
    fn target(&self) -> String {
        format!("wg-network:{}", self.name)
    }
}

impl Audited for GetWgNetworkRequest {
    type Response = WgNetwork;
    fn target(&self) -> String {
        format!("wg-network:{}", self.name)
    }
}

impl Audited for AddWgHostRequest {
    type Response = WgPeer;
    fn target(&self) -> String {
        format!("wg-network:{}/host:{}", self.network, self.agent_id)
    }
    fn detail(&self) -> Option<String> {
        self.hub.then(|| "hub".into())
    }
}

impl Audited for AddWgClientRequest {
    type Response = AddWgClientResponse;
    fn target(&self) -> String {
        format!("wg-network:{}/client:{}", self.network, self.name)
    }
}

impl Audited for RotateWgHostKeyRequest {
    type Response = WgPeer;
    fn target(&self) -> String {
        format!("wg-network:{}/host:{}", self.network, self.agent_id)
    }
}

impl Audited for RemoveWgPeerRequest {
    type Response = WgPeer;
    fn target(&self) -> String {
        format!("wg-network:{}/peer:{}", self.network, self.name)
    }
}

fn peer_view(p: &WgPeerRow) -> WgPeer {
    WgPeer {
        network: p.network.clone(),
        name: p.name.clone(),
        kind: p.kind.clone(),
        agent_id: p.agent_id.clone(),
        public_key: p.public_key.clone(),
        ipv4: p.ipv4.clone(),
        ipv6: p.ipv6.clone(),
        hub: p.hub,
        endpoint: p.endpoint.clone(),
        expires_at: p.expires_at,
        created_at: p.created_at,
        preshared_key: !p.preshared_key.is_empty(),
    }
}

/// A network with its peers and what is left of its IPv4 range.
async fn view(shared: &Shared, n: &WgNetworkRow) -> Result<WgNetwork> {
    let peers = shared.store.wg_peers(&n.name).await?;
    let (used_v4, _) = networks::used(shared, &n.name).await?;
    let range = n
        .ipv4
        .parse()
        .map_err(|_| Error::Internal(format!("network {}: bad range", n.name)))?;
    Ok(WgNetwork {
        name: n.name.clone(),
        interface: n.interface.clone(),
        ipv4: n.ipv4.clone(),
        ipv6: n.ipv6.clone(),
        topology: n.topology.clone(),
        port: u32::from(n.port),
        mtu: n.mtu,
        dns: n.dns.clone(),
        keepalive_seconds: n.keepalive_seconds,
        created_at: n.created_at,
        peers: peers.iter().map(peer_view).collect(),
        ipv4_free: ipam::free(range, &used_v4),
    })
}

pub(super) async fn create_wg_network(
    shared: &Shared,
    r: CreateWgNetworkRequest,
) -> Result<WgNetwork> {
    let port = u16::try_from(r.port)
        .map_err(|_| Error::Invalid("port: must be from 1 to 65535".into()))?;
    let row = networks::create(
        shared,
        networks::NewNetwork {
            name: r.name,
            ipv4: r.ipv4,
            ipv6: r.ipv6,
            topology: r.topology,
            port,
            mtu: r.mtu,
            dns: r.dns,
            keepalive: Duration::from_secs(u64::from(r.keepalive_seconds)),
            interface: r.interface,
        },
    )
    .await?;
    view(shared, &row).await
}

pub(super) async fn list_wg_networks(
    shared: &Shared,
    _: ListWgNetworksRequest,
) -> Result<ListWgNetworksResponse> {
    let mut out = Vec::new();
    for n in shared.store.wg_networks().await? {
        out.push(view(shared, &n).await?);
    }
    Ok(ListWgNetworksResponse { networks: out })
}

pub(super) async fn get_wg_network(shared: &Shared, r: GetWgNetworkRequest) -> Result<WgNetwork> {
    view(shared, &networks::get(shared, &r.name).await?).await
}

pub(super) async fn delete_wg_network(
    shared: &Shared,
    r: GetWgNetworkRequest,
) -> Result<WgNetwork> {
    let row = networks::delete(shared, &r.name).await?;
    view(shared, &row).await
}

pub(super) async fn add_wg_host(shared: &Shared, r: AddWgHostRequest) -> Result<WgPeer> {
    let peer = peers::add_host(
        shared,
        peers::NewHost {
            network: r.network,
            agent_id: r.agent_id,
            hub: r.hub,
            endpoint: r.endpoint,
            ipv4: r.ipv4,
            ipv6: r.ipv6,
        },
    )
    .await?;
    Ok(peer_view(&peer))
}

pub(super) async fn add_wg_client(
    shared: &Shared,
    r: AddWgClientRequest,
) -> Result<AddWgClientResponse> {
    let expires_at = match r.expires_seconds {
        0 => 0,
        s => shared.now() + i64::try_from(s).unwrap_or(i64::MAX / 2),
    };
    let (client, hub) = peers::add_client(
        shared,
        peers::NewClient {
            network: r.network,
            name: r.name,
            public_key: r.public_key,
            preshared_key: r.preshared_key,
            expires_at,
            ipv4: r.ipv4,
            ipv6: r.ipv6,
        },
    )
    .await?;
    let network = networks::get(shared, &client.network).await?;
    let config = WgClientConfig {
        addresses: vec![
            format!("{}/32", client.ipv4),
            format!("{}/128", client.ipv6),
        ],
        dns: network.dns.clone(),
        mtu: network.mtu,
        hub_public_key: hub.public_key.clone(),
        hub_endpoint: hub.endpoint.clone(),
        allowed_ips: vec![network.ipv4.clone(), network.ipv6.clone()],
        keepalive_seconds: network.keepalive_seconds,
    };
    Ok(AddWgClientResponse {
        client: Some(peer_view(&client)),
        config: Some(config),
    })
}

pub(super) async fn remove_wg_peer(shared: &Shared, r: RemoveWgPeerRequest) -> Result<WgPeer> {
    let peer = peers::remove(shared, &r.network, &r.name).await?;
    Ok(peer_view(&peer))
}

pub(crate) async fn get_wg_status(
    shared: &Shared,
    r: GetWgStatusRequest,
) -> Result<GetWgStatusResponse> {
    let network = (!r.network.is_empty()).then_some(r.network.as_str());
    Ok(GetWgStatusResponse {
        networks: crate::wireguard::status::show(shared, network).await?,
    })
}

pub(super) async fn rotate_wg_host_key(
    shared: &Shared,
    r: RotateWgHostKeyRequest,
) -> Result<WgPeer> {
    let peer = peers::rotate_host_key(shared, &r.network, &r.agent_id).await?;
    Ok(peer_view(&peer))
}
