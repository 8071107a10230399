//! Creating, reading and deleting networks.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use gatehouse_proto::names::{InterfaceName, ResourceName};
use ipnet::IpNet;

use super::{Topology, ipam};
use crate::Shared;
use crate::error::{Error, Result};
use crate::store::WgNetworkRow;

/// What `wg network create` asks for; empty fields take the defaults.
#[derive(Debug, Clone, Default)]
pub struct NewNetwork {
    pub name: String,
    pub ipv4: String,
    pub ipv6: String,
    pub topology: String,
    pub port: u16,
    pub mtu: u32,
    pub dns: Vec<String>,
    pub keepalive: Duration,
    pub interface: String,
}

pub const DEFAULT_IPV4: &str = "10.60.0.0/24";
pub const DEFAULT_PORT: u16 = 51820;
pub const DEFAULT_MTU: u32 = 1420;
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(25);

/// Checks `new` and records the network.
pub async fn create(shared: &Shared, new: NewNetwork) -> Result<WgNetworkRow> {
    let name: ResourceName = new.name.parse()?;
    let interface = match new.interface.as_str() {
        "" => format!("gh-{name}").parse::<InterfaceName>().map_err(|_| {
            Error::Invalid(format!(
                "interface: gh-{name} is longer than 15 characters: give one with --interface"
            ))
        })?,
        given => given
            .parse::<InterfaceName>()
            .map_err(|e| Error::Invalid(format!("interface: {e}")))?,
    };
    let ipv4 = match new.ipv4.as_str() {
        "" => DEFAULT_IPV4.parse().expect("valid"),
        text => range(text, "ipv4", false)?,
    };
    let ipv6 = match new.ipv6.as_str() {
        "" => IpNet::V6(ipam::random_ula()),
        text => range(text, "ipv6", true)?,
    };
    let topology = Topology::parse(&new.topology)?;
    let port = if new.port == 0 {
        DEFAULT_PORT
    } else {
        new.port
    };
    let mtu = match new.mtu {
        0 => DEFAULT_MTU,
        m if (1280..=9000).contains(&m) => m,
        m => {
            return Err(Error::Invalid(format!(
                "mtu: {m} is not from 1280 (IPv6's minimum) to 9000"
            )));
        }
    };
    let mut dns = Vec::with_capacity(new.dns.len());
    for d in &new.dns {
        let ip: IpAddr = d
            .parse()
            .map_err(|_| Error::Invalid(format!("dns: {d:?} is not an address")))?;
        dns.push(ip.to_string());
    }
    let keepalive = if new.keepalive.is_zero() {
        DEFAULT_KEEPALIVE
    } else {
        new.keepalive
    };
    if keepalive > Duration::from_secs(65535) {
        return Err(Error::Invalid("keepalive: at most 65535s".into()));
    }
    for other in shared.store.wg_networks().await? {
        if other.name == name.as_str() {
            return Err(Error::Exists(format!("there is a network {name} already")));
        }
        if other.interface == interface.as_str() {
            return Err(Error::Exists(format!(
                "interface: network {} uses {interface} already",
                other.name
            )));
        }
        for (mine, theirs) in [(ipv4, &other.ipv4), (ipv6, &other.ipv6)] {
            let theirs: IpNet = theirs
                .parse()
                .map_err(|_| Error::Internal(format!("network {}: bad range", other.name)))?;
            if mine.contains(&theirs.network()) || theirs.contains(&mine.network()) {
                return Err(Error::Exists(format!(
                    "{mine} overlaps {theirs} of network {}: a host in both could not route \
                     them",
                    other.name
                )));
            }
        }
    }
    let row = WgNetworkRow {
        name: name.to_string(),
        interface: interface.to_string(),
        ipv4: ipv4.to_string(),
        ipv6: ipv6.to_string(),
        topology: topology.word().into(),
        port,
        mtu,
        dns,
        keepalive_seconds: keepalive.as_secs() as u32,
        created_at: shared.now(),
    };
    if !shared.store.wg_network_insert(&row).await? {
        return Err(Error::Exists(format!("there is a network {name} already")));
    }
    tracing::info!(network = %name, ipv4 = %row.ipv4, ipv6 = %row.ipv6, "WireGuard network created");
    Ok(row)
}

/// A range given for a network: IPv4 from /8 to /30, IPv6 from /64 to /120, given as its
/// network address.
fn range(text: &str, field: &str, v6: bool) -> Result<IpNet> {
    let net: IpNet = text
        .parse()
        .map_err(|_| Error::Invalid(format!("{field}: {text:?} is not a CIDR")))?;
    let ok = match net {
        IpNet::V4(n) if !v6 => (8..=30).contains(&n.prefix_len()),
        IpNet::V6(n) if v6 => (64..=120).contains(&n.prefix_len()),
        _ => false,
    };
    if !ok {
        return Err(Error::Invalid(format!(
            "{field}: {text} must be an {} range from /{}",
            if v6 { "IPv6" } else { "IPv4" },
            if v6 { "64 to /120" } else { "8 to /30" }
        )));
    }
    if net.trunc() != net {
        return Err(Error::Invalid(format!(
            "{field}: {text} has host bits set (did you mean {}?)",
            net.trunc()
        )));
    }
    Ok(net)
}

/// One network, or a clear "no such network".
pub async fn get(shared: &Shared, name: &str) -> Result<WgNetworkRow> {
    let name: ResourceName = name.parse()?;
    shared
        .store
        .wg_network_get(name.as_str())
        .await?
        .ok_or_else(|| {
            Error::NotFound(format!(
                "no WireGuard network {name}: see gatehousectl wg network list"
            ))
        })
}

/// Deletes a network that has no peers left.
pub async fn delete(shared: &Shared, name: &str) -> Result<WgNetworkRow> {
    let row = get(shared, name).await?;
    if !shared.store.wg_network_delete(&row.name).await? {
        let peers = shared.store.wg_peers(&row.name).await?;
        return Err(Error::Precondition(format!(
            "network {} still has {} peer(s): remove them first (gatehousectl wg host remove, \
             wg client remove)",
            row.name,
            peers.len()
        )));
    }
    shared.wg_addresses.forget(&row.name);
    Ok(row)
}

/// The addresses of `network` in use, per family (from this controller's cache when it has
/// them).
pub async fn used(shared: &Shared, network: &str) -> Result<ipam::Used> {
    if let Some(known) = shared.wg_addresses.get(network) {
        return Ok(known);
    }
    let mut v4 = BTreeSet::new();
    let mut v6 = BTreeSet::new();
    for (a, b) in shared.store.wg_addresses(network).await? {
        v4.extend(a.parse::<IpAddr>().ok());
        v6.extend(b.parse::<IpAddr>().ok());
    }
    shared.wg_addresses.put(network, (v4.clone(), v6.clone()));
    Ok((v4, v6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked_by_family_size_and_host_bits() {
        assert!(range("10.60.0.0/24", "ipv4", false).is_ok());
        assert!(range("fd12:3456:789a:1::/64", "ipv6", true).is_ok());
        for (text, v6) in [
            ("10.60.0.1/24", false),
            ("10.60.0.0/31", false),
            ("fd00::/64", false),
            ("10.0.0.0/8x", false),
            ("fd00::/48", true),
            ("10.60.0.0/24", true),
        ] {
            assert!(range(text, "r", v6).is_err(), "{text}");
        }
    }
}
