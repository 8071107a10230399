//! WireGuard interfaces in the one reconcile shape. The plan is a minimal diff: a peer is
//! added, changed or removed on its own (the others keep their sessions), the key is made only
//! when there is none or the controller asked for a new one, and an interface the desired state
//! no longer names is removed with its key.

use std::collections::{BTreeMap, BTreeSet};

use gatehouse_proto::names::{InterfaceName, WgKey};
use gatehouse_proto::spec::{Wireguard, WireguardPeer};
use gatehouse_proto::v1::{ItemResult, WireguardPeerStatus, WireguardStatus};

use super::{Outcome, Resource, failed};
use crate::host::wireguard::{Live, LivePeer, WireGuard};

/// The interfaces the desired state names.
#[derive(Debug, Default)]
pub struct Desired {
    pub interfaces: Vec<Wireguard>,
}

/// What is on the host.
#[derive(Debug, Default)]
pub struct Observed {
    live: BTreeMap<InterfaceName, Live>,
    /// The revision each key was made for.
    keys: BTreeMap<InterfaceName, (WgKey, u64)>,
    forwarding: BTreeSet<InterfaceName>,
    managed: Vec<InterfaceName>,
}

/// One step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Create(InterfaceName),
    /// Make a new key (none yet, or the controller raised the revision).
    NewKey(InterfaceName),
    /// The interface runs another key than the one kept: set the kept one.
    SetKey(InterfaceName),
    Port(InterfaceName),
    Peers {
        interface: InterfaceName,
        upsert: Vec<WireguardPeer>,
        remove: Vec<WgKey>,
    },
    Link(InterfaceName),
    Forward(InterfaceName),
    Remove(InterfaceName),
}

impl Change {
    fn interface(&self) -> &InterfaceName {
        match self {
            Change::Create(i)
            | Change::NewKey(i)
            | Change::SetKey(i)
            | Change::Port(i)
            | Change::Link(i)
            | Change::Forward(i)
            | Change::Remove(i) => i,
            Change::Peers { interface, .. } => interface,
        }
    }
}

/// The WireGuard resource.
#[derive(Debug, Clone)]
pub struct Interfaces {
    wg: WireGuard,
}

fn same(want: &WireguardPeer, live: &LivePeer) -> bool {
    let endpoint_ok = match (&want.endpoint, live.endpoint) {
        (None, _) => true,
        (Some(_), None) => false,
        // A literal address must match; a name is looked up only when the peer is set.
        (Some(e), Some(have)) => e
            .to_string()
            .parse::<std::net::SocketAddr>()
            .map_or(true, |a| a == have),
    };
    let allowed: BTreeSet<ipnet::IpNet> = want.allowed_ips.iter().map(|n| n.trunc()).collect();
    endpoint_ok
        && allowed == live.allowed_ips
        && want.keepalive == live.keepalive
        && want.preshared_key.is_some() == live.preshared_key
}

/// The steps for one interface.
fn plan_one(w: &Wireguard, observed: &Observed, out: &mut Vec<Change>) {
    let iface = &w.interface;
    let live = observed.live.get(iface);
    let key = observed.keys.get(iface);
    if live.is_none() {
        out.push(Change::Create(iface.clone()));
    }
    match key {
        Some((_, revision)) if *revision == w.key_revision => {
            if live.is_none_or(|l| l.public_key.as_ref() != key.map(|k| &k.0)) {
                out.push(Change::SetKey(iface.clone()));
            }
        }
        _ => out.push(Change::NewKey(iface.clone())),
    }
    if live.is_none_or(|l| l.listen_port != Some(w.listen_port)) {
        out.push(Change::Port(iface.clone()));
    }
    let have: BTreeMap<&WgKey, &LivePeer> = live
        .map(|l| l.peers.iter().map(|p| (&p.public_key, p)).collect())
        .unwrap_or_default();
    let upsert: Vec<WireguardPeer> = w
        .peers
        .iter()
        .filter(|p| have.get(&p.public_key).is_none_or(|l| !same(p, l)))
        .cloned()
        .collect();
    let wanted: BTreeSet<&WgKey> = w.peers.iter().map(|p| &p.public_key).collect();
    let remove: Vec<WgKey> = have
        .keys()
        .filter(|k| !wanted.contains(*k))
        .map(|k| (*k).clone())
        .collect();
    if !upsert.is_empty() || !remove.is_empty() {
        out.push(Change::Peers {
            interface: iface.clone(),
            upsert,
            remove,
        });
    }
    let addresses: BTreeSet<ipnet::IpNet> = w.addresses.iter().copied().collect();
    if live.is_none_or(|l| l.addresses != addresses || l.mtu != Some(w.mtu) || !l.up) {
        out.push(Change::Link(iface.clone()));
    }
    if w.forward && !observed.forwarding.contains(iface) {
        out.push(Change::Forward(iface.clone()));
    }
}

impl Interfaces {
    pub fn new(wg: WireGuard) -> Self {
        Self { wg }
    }

    /// Each interface's network and the public key it has ("" before it has one), from the
    /// key files alone.
    pub fn keys(&self, desired: &[Wireguard]) -> Vec<(String, String)> {
        desired
            .iter()
            .map(|w| {
                let key = self.wg.key(&w.interface);
                let public = key.map(|(k, _)| k.public().to_string());
                (w.network.to_string(), public.unwrap_or_default())
            })
            .collect()
    }

    /// Each interface of `desired` as it is now, for the report.
    pub fn status(&self, desired: &[Wireguard]) -> Vec<WireguardStatus> {
        desired
            .iter()
            .map(|w| {
                let key = self.wg.key(&w.interface);
                let mut s = WireguardStatus {
                    network: w.network.to_string(),
                    interface: w.interface.to_string(),
                    public_key: key
                        .as_ref()
                        .map(|(k, _)| k.public().to_string())
                        .unwrap_or_default(),
                    key_revision: key.map_or(0, |(_, r)| r),
                    ..Default::default()
                };
                s.forwarding = self.wg.forwarding(&w.interface);
                match self.wg.live(&w.interface) {
                    Some(live) => {
                        s.listen_port = u32::from(live.listen_port.unwrap_or(0));
                        s.peers = live
                            .peers
                            .iter()
                            .map(|p| WireguardPeerStatus {
                                public_key: p.public_key.to_string(),
                                endpoint: p.endpoint.map(|e| e.to_string()).unwrap_or_default(),
                                latest_handshake: p.latest_handshake,
                                rx_bytes: p.rx_bytes,
                                tx_bytes: p.tx_bytes,
                            })
                            .collect();
                    }
                    None => s.error = format!("interface {} is not up", w.interface),
                }
                s
            })
            .collect()
    }

    /// Whether this host runs any interface for gatehouse.
    pub fn on_host(&self) -> bool {
        !self.wg.managed().is_empty()
    }

    async fn apply_one(&self, w: &Wireguard, changes: &[Change]) -> Result<(), String> {
        let iface = &w.interface;
        let has = |f: fn(&Change) -> bool| changes.iter().any(f);
        if has(|c| matches!(c, Change::Create(_))) {
            self.wg.create(iface).await?;
        }
        let key = if has(|c| matches!(c, Change::NewKey(_))) {
            let k = self
                .wg
                .new_key(iface, w.key_revision)
                .map_err(|e| format!("cannot keep the key of {iface}: {e}"))?;
            tracing::info!(interface = %iface, public_key = %k.public(), "WireGuard key made");
            Some(k)
        } else if has(|c| matches!(c, Change::SetKey(_))) {
            self.wg.key(iface).map(|(k, _)| k)
        } else {
            None
        };
        let port = has(|c| matches!(c, Change::Port(_))).then_some(w.listen_port);
        let (upsert, remove) = changes
            .iter()
            .find_map(|c| match c {
                Change::Peers { upsert, remove, .. } => Some((upsert.clone(), remove.clone())),
                _ => None,
            })
            .unwrap_or_default();
        if key.is_some() || port.is_some() || !upsert.is_empty() || !remove.is_empty() {
            let kernel = self
                .blocking(iface, |wg, i| wg.live(i))
                .await?
                .is_some_and(|l| l.backend_kernel);
            self.wg
                .configure(iface, kernel, key.as_ref(), port, &upsert, &remove)
                .await?;
            if !upsert.is_empty() || !remove.is_empty() {
                tracing::info!(interface = %iface, added_or_changed = upsert.len(), removed = remove.len(), "WireGuard peers updated");
            }
        }
        if has(|c| matches!(c, Change::Link(_))) {
            let (addresses, mtu) = (w.addresses.clone(), w.mtu);
            self.blocking(iface, move |wg, i| wg.set_link(i, &addresses, mtu))
                .await?
                .map_err(|e| format!("cannot set up the link {iface}: {e}"))?;
        }
        if has(|c| matches!(c, Change::Forward(_))) {
            self.blocking(iface, |wg, i| wg.forward(i))
                .await?
                .map_err(|e| format!("cannot turn forwarding on for {iface}: {e}"))?;
        }
        Ok(())
    }

    /// Runs a netlink or UAPI call off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        iface: &InterfaceName,
        f: impl FnOnce(&WireGuard, &InterfaceName) -> T + Send + 'static,
    ) -> Result<T, String> {
        let (wg, iface) = (self.wg.clone(), iface.clone());
        tokio::task::spawn_blocking(move || f(&wg, &iface))
            .await
            .map_err(|e| e.to_string())
    }
}

impl Resource for Interfaces {
    type Desired = Desired;
    type Observed = Observed;
    type Change = Change;

    async fn observe(&self) -> Result<Observed, String> {
        let wg = self.wg.clone();
        tokio::task::spawn_blocking(move || {
            let managed = wg.managed();
            let mut o = Observed::default();
            for iface in managed.iter() {
                if let Some((k, r)) = wg.key(iface) {
                    o.keys.insert(iface.clone(), (k.public(), r));
                }
                if let Some(live) = wg.live(iface) {
                    o.live.insert(iface.clone(), live);
                }
                if wg.forwarding(iface) {
                    o.forwarding.insert(iface.clone());
                }
            }
            o.managed = managed;
            o
        })
        .await
        .map_err(|e| e.to_string())
    }

    fn plan(desired: &Desired, observed: &Observed) -> Vec<Change> {
        let mut out = Vec::new();
        for w in &desired.interfaces {
            plan_one(w, observed, &mut out);
        }
        let wanted: BTreeSet<&InterfaceName> =
            desired.interfaces.iter().map(|w| &w.interface).collect();
        for iface in &observed.managed {
            if !wanted.contains(iface) {
                out.push(Change::Remove(iface.clone()));
            }
        }
        out
    }

    async fn apply(&self, desired: &Desired, changes: Vec<Change>, out: &mut Outcome) {
        for w in &desired.interfaces {
            let mine: Vec<Change> = changes
                .iter()
                .filter(|c| c.interface() == &w.interface)
                .cloned()
                .collect();
            let item = ("wireguard", w.network.to_string());
            match self.apply_one(w, &mine).await {
                Ok(()) => out.results.push(ItemResult::applied(item.0, &item.1)),
                Err(e) => out.results.push(failed(item, e)),
            }
        }
        for c in &changes {
            if let Change::Remove(iface) = c {
                match self.wg.remove(iface).await {
                    Ok(()) => tracing::info!(interface = %iface, "WireGuard interface removed"),
                    Err(e) => {
                        tracing::warn!(interface = %iface, "cannot remove a WireGuard interface: {e}")
                    }
                }
            }
        }
    }
}
