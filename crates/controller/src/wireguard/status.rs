//! What the hosts of a network see of each peer: the latest handshake any of them had with it,
//! the traffic, and where it was last seen, from the hosts' latest reports.

use gatehouse_proto::v1::{WgNetworkStatus, WgPeerState};

use super::HOST;
use crate::Shared;
use crate::error::Result;

/// Every network (or the one named), each peer with what the hosts report of it.
pub async fn show(shared: &Shared, network: Option<&str>) -> Result<Vec<WgNetworkStatus>> {
    let networks = match network {
        Some(n) => vec![super::networks::get(shared, n).await?],
        None => shared.store.wg_networks().await?,
    };
    let mut out = Vec::with_capacity(networks.len());
    for n in networks {
        let peers = shared.store.wg_peers(&n.name).await?;
        // Each host's own view of the network's interface.
        let views: Vec<(String, Option<gatehouse_proto::v1::WireguardStatus>)> = peers
            .iter()
            .filter(|p| p.kind == HOST)
            .map(|p| {
                let live = shared.fleet.view(&p.agent_id);
                let status = live.wireguard.into_iter().find(|w| w.network == n.name);
                (p.agent_id.clone(), status)
            })
            .collect();
        let mut states = Vec::with_capacity(peers.len());
        for p in &peers {
            let mut s = WgPeerState {
                name: p.name.clone(),
                kind: p.kind.clone(),
                hub: p.hub,
                ipv4: p.ipv4.clone(),
                ipv6: p.ipv6.clone(),
                public_key: p.public_key.clone(),
                endpoint: p.endpoint.clone(),
                ..Default::default()
            };
            if p.kind == HOST {
                match views.iter().find(|(id, _)| id == &p.agent_id) {
                    Some((_, Some(own))) => {
                        s.reported = true;
                        s.forwarding = own.forwarding;
                        s.error = own.error.clone();
                    }
                    _ => s.error = "no report of this interface from the host yet".into(),
                }
            }
            for (observer, status) in &views {
                let Some(seen) = status
                    .iter()
                    .flat_map(|st| st.peers.iter())
                    .find(|q| !p.public_key.is_empty() && q.public_key == p.public_key)
                else {
                    continue;
                };
                s.seen_by.push(observer.clone());
                s.rx_bytes += seen.rx_bytes;
                s.tx_bytes += seen.tx_bytes;
                if seen.latest_handshake > s.latest_handshake {
                    s.latest_handshake = seen.latest_handshake;
                    if !seen.endpoint.is_empty() {
                        s.endpoint = seen.endpoint.clone();
                    }
                }
            }
            states.push(s);
        }
        out.push(WgNetworkStatus {
            name: n.name.clone(),
            interface: n.interface.clone(),
            peers: states,
        });
    }
    Ok(out)
}
