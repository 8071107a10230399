//! `gatehousectl wg …`: WireGuard networks, their hosts and clients. A client's key pair and
//! preshared key are made here, on the operator's machine; only the public key and the
//! preshared key go to the controller, and the config with the private key is printed once.

mod clients;
mod config;
mod hosts;
mod networks;

use anyhow::anyhow;
use clap::Subcommand;
use gatehouse_proto::names::{InterfaceName, ResourceName, WgKey};
use gatehouse_proto::v1::*;

pub use clients::ClientCommand;
pub use hosts::HostCommand;
pub use networks::NetworkCommand;

use crate::Output;
use crate::args::now;
use crate::client::{Client, explain};
use crate::output::{self, relative, say, time};

#[derive(Debug, Subcommand)]
pub enum WgCommand {
    /// Networks: their ranges, topology and settings.
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Hosts (agents) in a network; their keys are made on the host.
    #[command(subcommand)]
    Host(HostCommand),
    /// Clients (laptops, phones) attached to a network's hub.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Every peer with its addresses, endpoint, latest handshake and traffic, as the hosts
    /// report them; peers that never completed a handshake are called out.
    Show { network: Option<String> },
}

/// Checks names and keys before connecting.
pub fn check(cmd: &WgCommand) -> anyhow::Result<()> {
    let name = |n: &str| n.parse::<ResourceName>().map(drop);
    match cmd {
        WgCommand::Network(NetworkCommand::Create {
            name: n, interface, ..
        }) => {
            name(n)?;
            if let Some(i) = interface {
                i.parse::<InterfaceName>()?;
            }
        }
        WgCommand::Network(
            NetworkCommand::Show { name: n } | NetworkCommand::Delete { name: n, .. },
        ) => name(n)?,
        WgCommand::Network(NetworkCommand::List) => {}
        WgCommand::Host(
            HostCommand::Add { network, .. }
            | HostCommand::Remove { network, .. }
            | HostCommand::RotateKey { network, .. },
        ) => name(network)?,
        WgCommand::Client(ClientCommand::Add {
            network,
            name: n,
            public_key,
            ..
        }) => {
            name(network)?;
            name(n).map_err(|e| anyhow!("client {e}"))?;
            if let Some(k) = public_key {
                k.parse::<WgKey>()?;
            }
        }
        WgCommand::Client(
            ClientCommand::Show { network, name: n } | ClientCommand::Remove { network, name: n },
        ) => {
            name(network)?;
            name(n).map_err(|e| anyhow!("client {e}"))?;
        }
        WgCommand::Client(ClientCommand::List { network }) => name(network)?,
        WgCommand::Show { network } => {
            if let Some(n) = network {
                name(n)?;
            }
        }
    }
    Ok(())
}

pub async fn run(client: &mut Client, cmd: WgCommand, out: Output) -> anyhow::Result<()> {
    match cmd {
        WgCommand::Network(cmd) => networks::run(client, cmd, out).await,
        WgCommand::Host(cmd) => hosts::run(client, cmd, out).await,
        WgCommand::Client(cmd) => clients::run(client, cmd, out).await,
        WgCommand::Show { network } => {
            let shown = client
                .get_wg_status(GetWgStatusRequest {
                    network: network.unwrap_or_default(),
                })
                .await
                .map_err(explain)?
                .into_inner();
            output::show(out, &shown.networks, || print_status(&shown.networks));
            Ok(())
        }
    }
}

async fn remove(
    client: &mut Client,
    network: String,
    name: String,
    out: Output,
) -> anyhow::Result<()> {
    let peer = client
        .remove_wg_peer(RemoveWgPeerRequest { network, name })
        .await
        .map_err(explain)?
        .into_inner();
    output::show(out, &peer, || {
        say!(
            "removed {} {} from {}; {} and {} are free again",
            peer.kind,
            peer.name,
            peer.network,
            peer.ipv4,
            peer.ipv6
        )
    });
    Ok(())
}

fn expiry(at: i64, now: i64) -> String {
    if at == 0 {
        "never".into()
    } else {
        format!("{} ({})", time(at), relative(at, now))
    }
}

fn print_status(networks: &[WgNetworkStatus]) {
    let now = now();
    for (i, n) in networks.iter().enumerate() {
        if i > 0 {
            say!();
        }
        say!("network {} ({})", n.name, n.interface);
        let rows: Vec<Vec<String>> = n
            .peers
            .iter()
            .map(|p| {
                vec![
                    p.name.clone(),
                    match (p.hub, p.forwarding) {
                        (true, true) => format!("{} (hub, forwarding)", p.kind),
                        (true, false) => format!("{} (hub, not forwarding yet)", p.kind),
                        (false, _) => p.kind.clone(),
                    },
                    format!("{} {}", p.ipv4, p.ipv6),
                    if p.endpoint.is_empty() {
                        "-".into()
                    } else {
                        p.endpoint.clone()
                    },
                    if p.latest_handshake == 0 {
                        "never".into()
                    } else {
                        relative(p.latest_handshake, now)
                    },
                    output::bytes(p.rx_bytes),
                    output::bytes(p.tx_bytes),
                ]
            })
            .collect();
        output::table(
            &[
                "PEER",
                "KIND",
                "ADDRESSES",
                "ENDPOINT",
                "HANDSHAKE",
                "RX",
                "TX",
            ],
            &rows,
        );
        let never: Vec<&str> = n
            .peers
            .iter()
            .filter(|p| p.latest_handshake == 0)
            .map(|p| p.name.as_str())
            .collect();
        if !never.is_empty() {
            say!(
                "never completed a handshake: {} (keys, endpoints, a firewall?)",
                never.join(", ")
            );
        }
        for p in n.peers.iter().filter(|p| !p.error.is_empty()) {
            say!("{}: {}", p.name, p.error);
        }
    }
}
