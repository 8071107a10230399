//! The one module that touches WireGuard. Interfaces through wireguard-control: the kernel
//! backend where the module is loaded, else userspace (wireguard-go), which runs under its own
//! systemd unit `gatehouse-wg@IFACE.service` (or, without systemd, as a process of its own)
//! so an agent restart never takes an interface down. Addresses, MTU and link state through
//! route netlink. Keys are made here and kept 0600 in `state_dir/wireguard`; only the public
//! key leaves the host.

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use gatehouse_common::wgkeys::PrivateKey;
use gatehouse_proto::names::{InterfaceName, WgEndpoint, WgKey};
use gatehouse_proto::spec::WireguardPeer;
use ipnet::IpNet;
use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_request::netlink_request_rtnl;
use wireguard_control::{Backend, Device, DeviceUpdate, Key, PeerConfigBuilder};

/// How a userspace interface is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Userspace {
    /// `gatehouse-wg@IFACE.service`.
    Systemd,
    /// `wireguard-go IFACE`, which detaches by itself (hosts without systemd, tests).
    Direct,
}

/// What the agent needs to run interfaces.
#[derive(Debug, Clone)]
pub struct WireGuard {
    /// Where keys are kept (0700).
    pub dir: PathBuf,
    pub userspace: Userspace,
    pub wireguard_go: PathBuf,
    pub systemd: super::systemd::Systemd,
}

/// A peer as the interface has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LivePeer {
    pub public_key: WgKey,
    pub preshared_key: bool,
    pub endpoint: Option<SocketAddr>,
    pub allowed_ips: BTreeSet<IpNet>,
    pub keepalive: u16,
    /// Unix time of the latest handshake (0: none).
    pub latest_handshake: i64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// An interface as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    pub backend_kernel: bool,
    pub public_key: Option<WgKey>,
    pub listen_port: Option<u16>,
    pub peers: Vec<LivePeer>,
    pub addresses: BTreeSet<IpNet>,
    pub mtu: Option<u32>,
    pub up: bool,
}

fn wg_name(iface: &InterfaceName) -> wireguard_control::InterfaceName {
    iface
        .as_str()
        .parse()
        .expect("a valid interface name is a valid WireGuard name")
}

fn key_of(k: &WgKey) -> Key {
    Key::from_base64(k.as_str()).expect("a checked key decodes")
}

fn wg_key(k: &Key) -> WgKey {
    WgKey::from_bytes(&k.0)
}

fn index(iface: &InterfaceName) -> io::Result<u32> {
    nix::net::if_::if_nametoindex(iface.as_str())
        .map_err(|e| io::Error::new(io::ErrorKind::NotFound, format!("{iface}: {e}")))
}

impl WireGuard {
    fn key_file(&self, iface: &InterfaceName) -> PathBuf {
        self.dir.join(format!("{iface}.key"))
    }

    fn revision_file(&self, iface: &InterfaceName) -> PathBuf {
        self.dir.join(format!("{iface}.revision"))
    }

    /// The interfaces this host runs for gatehouse (those it holds a key for).
    pub fn managed(&self) -> Vec<InterfaceName> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<InterfaceName> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".key")?.parse().ok()
            })
            .collect();
        out.sort();
        out
    }

    /// The interface's key and the revision it was made for, if there is one.
    pub fn key(&self, iface: &InterfaceName) -> Option<(PrivateKey, u64)> {
        let text = std::fs::read_to_string(self.key_file(iface)).ok()?;
        let key = Key::from_base64(text.trim()).ok()?;
        let revision = std::fs::read_to_string(self.revision_file(iface))
            .ok()
            .and_then(|r| r.trim().parse().ok())
            .unwrap_or(0);
        Some((PrivateKey::from_bytes(key.0), revision))
    }

    /// Makes a new key for the interface (0600, atomically), for `revision`.
    pub fn new_key(&self, iface: &InterfaceName, revision: u64) -> io::Result<PrivateKey> {
        crate::host::files::ensure_dir(&self.dir, 0o700).map_err(io::Error::other)?;
        let key = PrivateKey::generate();
        gatehouse_common::files::write_private(
            &self.key_file(iface),
            format!("{}\n", key.expose()).as_bytes(),
        )?;
        gatehouse_common::files::write_private(
            &self.revision_file(iface),
            format!("{revision}\n").as_bytes(),
        )?;
        Ok(key)
    }

    /// The interface as it is, or `None` when it does not exist.
    pub fn live(&self, iface: &InterfaceName) -> Option<Live> {
        let name = wg_name(iface);
        let (device, kernel) = match Device::get(&name, Backend::Kernel) {
            Ok(d) => (d, true),
            Err(_) => (Device::get(&name, Backend::Userspace).ok()?, false),
        };
        let (addresses, mtu, up) = link_state(iface).unwrap_or_default();
        Some(Live {
            backend_kernel: kernel,
            public_key: device.public_key.as_ref().map(wg_key),
            listen_port: device.listen_port,
            peers: device
                .peers
                .iter()
                .map(|p| LivePeer {
                    public_key: wg_key(&p.config.public_key),
                    preshared_key: p.config.preshared_key.is_some(),
                    endpoint: p.config.endpoint,
                    allowed_ips: p
                        .config
                        .allowed_ips
                        .iter()
                        .filter_map(|a| IpNet::new(a.address, a.cidr).ok())
                        .map(|n| n.trunc())
                        .collect(),
                    keepalive: p.config.persistent_keepalive_interval.unwrap_or(0),
                    latest_handshake: p
                        .stats
                        .last_handshake_time
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_secs() as i64),
                    rx_bytes: p.stats.rx_bytes,
                    tx_bytes: p.stats.tx_bytes,
                })
                .collect(),
            addresses,
            mtu,
            up,
        })
    }

    /// Creates the interface: in the kernel when it can, else with wireguard-go.
    pub async fn create(&self, iface: &InterfaceName) -> Result<(), String> {
        let name = wg_name(iface);
        if DeviceUpdate::new().apply(&name, Backend::Kernel).is_ok() {
            return Ok(());
        }
        match self.userspace {
            Userspace::Systemd => {
                let unit: super::systemd::UnitName = iface
                    .unit()
                    .parse()
                    .map_err(|e: super::systemd::SystemdError| e.to_string())?;
                self.systemd
                    .enable_now(&unit, super::systemd::Wait::Yes)
                    .await
                    .map_err(|e| format!("cannot start {unit}: {e}"))?;
            }
            Userspace::Direct => {
                let out = tokio::process::Command::new(&self.wireguard_go)
                    .arg(iface.as_str())
                    .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1")
                    .output()
                    .await
                    .map_err(|e| {
                        format!(
                            "cannot run {} (install the package wireguard-go): {e}",
                            self.wireguard_go.display()
                        )
                    })?;
                if !out.status.success() {
                    return Err(format!(
                        "wireguard-go {iface} failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
            }
        }
        // The UAPI socket appears once wireguard-go is ready.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while Device::get(&name, Backend::Userspace).is_err() {
            if tokio::time::Instant::now() > deadline {
                return Err(format!("{iface}: wireguard-go did not come up within 10s"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Sets the key, the port and the peer changes in one update; peers not named keep their
    /// sessions.
    pub async fn configure(
        &self,
        iface: &InterfaceName,
        kernel: bool,
        key: Option<&PrivateKey>,
        port: Option<u16>,
        upsert: &[WireguardPeer],
        remove: &[WgKey],
    ) -> Result<(), String> {
        let mut update = DeviceUpdate::new();
        if let Some(k) = key {
            update = update.set_private_key(key_of(&k.expose()));
        }
        if let Some(p) = port {
            update = update.set_listen_port(p);
        }
        for k in remove {
            update = update.remove_peer_by_key(&key_of(k));
        }
        for p in upsert {
            let mut b = PeerConfigBuilder::new(&key_of(&p.public_key))
                .replace_allowed_ips()
                .set_persistent_keepalive_interval(p.keepalive);
            for net in &p.allowed_ips {
                b = b.add_allowed_ip(net.network(), net.prefix_len());
            }
            b = match &p.preshared_key {
                Some(psk) => b.set_preshared_key(key_of(psk)),
                None => b.unset_preshared_key(),
            };
            if let Some(e) = &p.endpoint {
                match resolve(e).await {
                    Some(addr) => b = b.set_endpoint(addr),
                    None => {
                        tracing::warn!(interface = %iface, endpoint = %e, "cannot resolve a peer's endpoint; it is added without one")
                    }
                }
            }
            update = update.add_peer(b);
        }
        let backend = if kernel {
            Backend::Kernel
        } else {
            Backend::Userspace
        };
        let name = wg_name(iface);
        tokio::task::spawn_blocking(move || update.apply(&name, backend))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("{iface}: cannot configure WireGuard: {e}"))
    }

    /// Gives the link exactly `addresses`, its MTU, and brings it up.
    pub fn set_link(&self, iface: &InterfaceName, addresses: &[IpNet], mtu: u32) -> io::Result<()> {
        let index = index(iface)?;
        let (have, _, _) = link_state(iface)?;
        let want: BTreeSet<IpNet> = addresses.iter().copied().collect();
        for gone in have.difference(&want) {
            netlink_request_rtnl(
                RouteNetlinkMessage::DelAddress(address_message(index, *gone)),
                Some(NLM_F_REQUEST | NLM_F_ACK),
            )?;
        }
        for new in want.difference(&have) {
            netlink_request_rtnl(
                RouteNetlinkMessage::NewAddress(address_message(index, *new)),
                Some(NLM_F_REQUEST | NLM_F_ACK | NLM_F_REPLACE | NLM_F_CREATE),
            )?;
        }
        let mut link = LinkMessage::default();
        link.header.index = index;
        link.header.flags = LinkFlags::Up;
        link.header.change_mask = LinkFlags::Up;
        link.attributes = vec![LinkAttribute::Mtu(mtu)];
        netlink_request_rtnl(
            RouteNetlinkMessage::SetLink(link),
            Some(NLM_F_REQUEST | NLM_F_ACK),
        )?;
        Ok(())
    }

    /// Turns forwarding on for the interface (a hub forwards between its peers).
    pub fn forward(&self, iface: &InterfaceName) -> io::Result<()> {
        for path in [
            format!("/proc/sys/net/ipv4/conf/{iface}/forwarding"),
            format!("/proc/sys/net/ipv6/conf/{iface}/forwarding"),
            // IPv6 forwards only with the global switch on.
            "/proc/sys/net/ipv6/conf/all/forwarding".to_owned(),
        ] {
            std::fs::write(&path, "1\n")
                .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
        }
        Ok(())
    }

    /// Whether forwarding is on for the interface.
    pub fn forwarding(&self, iface: &InterfaceName) -> bool {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{iface}/forwarding"))
            .is_ok_and(|v| v.trim() == "1")
    }

    /// Takes the interface down and forgets its key.
    pub async fn remove(&self, iface: &InterfaceName) -> Result<(), String> {
        if self.userspace == Userspace::Systemd
            && let Ok(unit) = iface.unit().parse::<super::systemd::UnitName>()
        {
            // Not started by the unit (a kernel interface): nothing to stop.
            let _ = self.systemd.disable_now(&unit).await;
        }
        if let Ok(index) = index(iface) {
            let mut link = LinkMessage::default();
            link.header.index = index;
            netlink_request_rtnl(
                RouteNetlinkMessage::DelLink(link),
                Some(NLM_F_REQUEST | NLM_F_ACK),
            )
            .map_err(|e| format!("cannot delete {iface}: {e}"))?;
        }
        // A userspace interface's socket and name files.
        if let Ok(d) = Device::get(&wg_name(iface), Backend::Userspace) {
            let _ = d.delete();
        }
        for f in [self.key_file(iface), self.revision_file(iface)] {
            match std::fs::remove_file(&f) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("cannot remove {}: {e}", f.display())),
            }
        }
        Ok(())
    }
}

/// An endpoint as a socket address (a DNS name is looked up).
pub async fn resolve(endpoint: &WgEndpoint) -> Option<SocketAddr> {
    let text = endpoint.to_string();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr);
    }
    tokio::task::spawn_blocking(move || text.to_socket_addrs().ok()?.next())
        .await
        .ok()
        .flatten()
}

fn address_message(index: u32, net: IpNet) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.index = index;
    m.header.prefix_len = net.prefix_len();
    m.header.scope = AddressScope::Universe;
    let addr = net.addr();
    m.header.family = match addr {
        IpAddr::V4(_) => netlink_packet_route::AddressFamily::Inet,
        IpAddr::V6(_) => netlink_packet_route::AddressFamily::Inet6,
    };
    m.attributes = match addr {
        IpAddr::V4(_) => vec![
            AddressAttribute::Local(addr),
            AddressAttribute::Address(addr),
        ],
        IpAddr::V6(_) => vec![AddressAttribute::Address(addr)],
    };
    m
}

/// The link's global addresses (with their prefixes), its MTU and whether it is up.
fn link_state(iface: &InterfaceName) -> io::Result<(BTreeSet<IpNet>, Option<u32>, bool)> {
    let index = index(iface)?;
    let mut addresses = BTreeSet::new();
    let dump = netlink_request_rtnl(
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        Some(NLM_F_DUMP | NLM_F_REQUEST),
    )?;
    for m in dump {
        if let NetlinkMessage {
            payload: NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(a)),
            ..
        } = m
            && a.header.index == index
            && a.header.scope == AddressScope::Universe
        {
            for attr in &a.attributes {
                if let AddressAttribute::Address(ip) = attr
                    && let Ok(net) = IpNet::new(*ip, a.header.prefix_len)
                {
                    addresses.insert(net);
                }
            }
        }
    }
    let mut link = LinkMessage::default();
    link.header.index = index;
    let mut mtu = None;
    let mut up = false;
    for m in netlink_request_rtnl(
        RouteNetlinkMessage::GetLink(link),
        Some(NLM_F_REQUEST | NLM_F_ACK),
    )? {
        if let NetlinkMessage {
            payload: NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)),
            ..
        } = m
        {
            up = l.header.flags.contains(LinkFlags::Up);
            mtu = l.attributes.iter().find_map(|a| match a {
                LinkAttribute::Mtu(m) => Some(*m),
                _ => None,
            });
        }
    }
    Ok((addresses, mtu, up))
}
