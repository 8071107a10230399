//! A validated WireGuard interface: every field that reaches the kernel, a UAPI socket or a
//! file name is typed here, so the agent never acts on an unchecked one.

use ipnet::IpNet;

use super::SpecError;
use crate::names::{InterfaceName, NameError, ResourceName, WgEndpoint, WgKey};
use crate::v1;

/// The most peers one interface may have.
pub const PEERS_MAX: usize = 20_000;

/// One network's interface on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wireguard {
    pub network: ResourceName,
    pub interface: InterfaceName,
    pub key_revision: u64,
    pub addresses: Vec<IpNet>,
    pub listen_port: u16,
    pub mtu: u32,
    pub forward: bool,
    pub peers: Vec<WireguardPeer>,
}

/// A peer of the interface.
#[derive(Clone, PartialEq, Eq)]
pub struct WireguardPeer {
    pub public_key: WgKey,
    /// A secret: never shown by `Debug`.
    pub preshared_key: Option<WgKey>,
    pub endpoint: Option<WgEndpoint>,
    pub allowed_ips: Vec<IpNet>,
    pub keepalive: u16,
}

impl std::fmt::Debug for WireguardPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireguardPeer")
            .field("public_key", &self.public_key)
            .field("preshared_key", &self.preshared_key.as_ref().map(|_| "***"))
            .field("endpoint", &self.endpoint)
            .field("allowed_ips", &self.allowed_ips)
            .field("keepalive", &self.keepalive)
            .finish()
    }
}

impl TryFrom<&v1::WireguardSpec> for Wireguard {
    type Error = SpecError;
    fn try_from(spec: &v1::WireguardSpec) -> Result<Self, SpecError> {
        let network: ResourceName = spec
            .network
            .parse()
            .map_err(|e: NameError| SpecError::new(&format!("wireguard/{}", spec.network), e))?;
        let item = format!("wireguard/{network}");
        let err = |m: String| SpecError::new(&item, m);
        let interface: InterfaceName = spec
            .interface
            .parse()
            .map_err(|e: NameError| err(e.to_string()))?;
        let nets = |field: &str, list: &[String]| -> Result<Vec<IpNet>, SpecError> {
            list.iter()
                .map(|a| {
                    a.parse::<IpNet>()
                        .map_err(|_| err(format!("{field}: {a:?} is not an address with a prefix")))
                })
                .collect()
        };
        let addresses = nets("addresses", &spec.addresses)?;
        if addresses.is_empty() {
            return Err(err("addresses: at least one is required".into()));
        }
        let listen_port = u16::try_from(spec.listen_port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| err("listen_port: must be from 1 to 65535".into()))?;
        if !(1280..=9000).contains(&spec.mtu) {
            return Err(err("mtu: must be from 1280 to 9000".into()));
        }
        if spec.peers.len() > PEERS_MAX {
            return Err(err(format!("peers: at most {PEERS_MAX}")));
        }
        let mut peers: Vec<WireguardPeer> = Vec::with_capacity(spec.peers.len());
        for p in &spec.peers {
            let public_key: WgKey = p
                .public_key
                .parse()
                .map_err(|e: NameError| err(format!("peer: {e}")))?;
            if peers.iter().any(|o| o.public_key == public_key) {
                return Err(err(format!("peer {public_key}: listed twice")));
            }
            let preshared_key =
                match p.preshared_key.as_str() {
                    "" => None,
                    k => Some(k.parse::<WgKey>().map_err(|_| {
                        err(format!("peer {public_key}: preshared_key is not a key"))
                    })?),
                };
            let endpoint = match p.endpoint.as_str() {
                "" => None,
                e => Some(
                    e.parse::<WgEndpoint>()
                        .map_err(|e| err(format!("peer {public_key}: {e}")))?,
                ),
            };
            let keepalive = u16::try_from(p.keepalive_seconds)
                .map_err(|_| err(format!("peer {public_key}: keepalive at most 65535")))?;
            peers.push(WireguardPeer {
                public_key,
                preshared_key,
                endpoint,
                allowed_ips: nets("allowed_ips", &p.allowed_ips)?,
                keepalive,
            });
        }
        Ok(Self {
            network,
            interface,
            key_revision: spec.key_revision,
            addresses,
            listen_port,
            mtu: spec.mtu,
            forward: spec.forward,
            peers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> v1::WireguardSpec {
        v1::WireguardSpec {
            network: "office".into(),
            interface: "gh-office".into(),
            key_revision: 0,
            addresses: vec!["10.60.0.1/24".into(), "fd12::1/64".into()],
            listen_port: 51820,
            mtu: 1420,
            forward: true,
            peers: vec![v1::WireguardPeer {
                public_key: WgKey::from_bytes(&[1; 32]).to_string(),
                preshared_key: WgKey::from_bytes(&[2; 32]).to_string(),
                endpoint: "hub.example.com:51820".into(),
                allowed_ips: vec!["10.60.0.2/32".into()],
                keepalive_seconds: 25,
                comment: "host a".into(),
            }],
        }
    }

    #[test]
    fn a_good_interface_and_every_bad_field_named() {
        let w = Wireguard::try_from(&spec()).unwrap();
        assert_eq!(w.interface.as_str(), "gh-office");
        assert!(!format!("{w:?}").contains(&WgKey::from_bytes(&[2; 32]).to_string()));
        type Change = Box<dyn Fn(&mut v1::WireguardSpec)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|s| s.network = "../x".into()), "invalid name"),
            (
                Box::new(|s| s.interface = "wg0/../../x".into()),
                "interface name",
            ),
            (
                Box::new(|s| s.addresses = vec!["10.0.0.1".into()]),
                "addresses:",
            ),
            (Box::new(|s| s.addresses.clear()), "addresses:"),
            (Box::new(|s| s.listen_port = 0), "listen_port:"),
            (Box::new(|s| s.mtu = 68), "mtu:"),
            (
                Box::new(|s| s.peers[0].public_key = "x".into()),
                "WireGuard key",
            ),
            (
                Box::new(|s| s.peers[0].preshared_key = "x".into()),
                "preshared_key",
            ),
            (
                Box::new(|s| s.peers[0].endpoint = "a b:1".into()),
                "endpoint",
            ),
            (
                Box::new(|s| s.peers[0].allowed_ips = vec!["0/0".into()]),
                "allowed_ips:",
            ),
            (
                Box::new(|s| {
                    let p = s.peers[0].clone();
                    s.peers.push(p);
                }),
                "listed twice",
            ),
        ];
        for (change, says) in cases {
            let mut s = spec();
            change(&mut s);
            let e = Wireguard::try_from(&s).unwrap_err();
            assert!(e.reason.contains(says), "{} should say {says}", e.reason);
        }
    }
}
