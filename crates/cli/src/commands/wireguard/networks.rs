//! `gatehousectl wg network …`: networks, their ranges, topology and settings.

use anyhow::anyhow;
use clap::Subcommand;
use gatehouse_proto::v1::*;

use super::expiry;
use crate::Output;
use crate::args::{confirm, now, seconds as parse_duration};
use crate::client::{Client, explain};
use crate::output::{self, say};

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a network.
    Create {
        /// Its name: [a-z0-9-].
        name: String,
        /// The IPv4 range.
        #[arg(long, default_value = "10.60.0.0/24")]
        ipv4: String,
        /// The IPv6 range (default: a random unique local /64).
        #[arg(long)]
        ipv6: Option<String>,
        /// hub (every peer through a hub host) or mesh (hosts peer directly).
        #[arg(long, value_parser = ["hub", "mesh"], default_value = "hub")]
        topology: String,
        /// The UDP port hosts listen on.
        #[arg(long, default_value_t = 51820)]
        port: u16,
        #[arg(long, default_value_t = 1420)]
        mtu: u32,
        /// DNS servers for clients (repeatable).
        #[arg(long = "dns", value_name = "IP")]
        dns: Vec<String>,
        /// PersistentKeepalive for peers behind NAT.
        #[arg(long, default_value = "25s", value_parser = parse_duration)]
        keepalive: u64,
        /// The interface on every host (default: gh-NAME).
        #[arg(long)]
        interface: Option<String>,
    },
    /// List networks.
    List,
    /// Show a network and its peers.
    Show { name: String },
    /// Delete a network that has no peers left.
    Delete {
        name: String,
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

pub(super) async fn run(
    client: &mut Client,
    cmd: NetworkCommand,
    out: Output,
) -> anyhow::Result<()> {
    let shown = match cmd {
        NetworkCommand::Create {
            name,
            ipv4,
            ipv6,
            topology,
            port,
            mtu,
            dns,
            keepalive,
            interface,
        } => client
            .create_wg_network(CreateWgNetworkRequest {
                name,
                ipv4,
                ipv6: ipv6.unwrap_or_default(),
                topology,
                port: u32::from(port),
                mtu,
                dns,
                keepalive_seconds: u32::try_from(keepalive)
                    .map_err(|_| anyhow!("--keepalive: at most 65535s"))?,
                interface: interface.unwrap_or_default(),
            })
            .await
            .map_err(explain)?
            .into_inner(),
        NetworkCommand::List => {
            let networks = client
                .list_wg_networks(ListWgNetworksRequest {})
                .await
                .map_err(explain)?
                .into_inner()
                .networks;
            output::list(
                out,
                &networks,
                &[
                    "NETWORK",
                    "INTERFACE",
                    "IPV4",
                    "IPV6",
                    "TOPOLOGY",
                    "HOSTS",
                    "CLIENTS",
                ],
                |n| {
                    let count = |kind: &str| n.peers.iter().filter(|p| p.kind == kind).count();
                    vec![
                        n.name.clone(),
                        n.interface.clone(),
                        n.ipv4.clone(),
                        n.ipv6.clone(),
                        n.topology.clone(),
                        count("host").to_string(),
                        count("client").to_string(),
                    ]
                },
            );
            return Ok(());
        }
        NetworkCommand::Show { name } => client
            .get_wg_network(GetWgNetworkRequest { name })
            .await
            .map_err(explain)?
            .into_inner(),
        NetworkCommand::Delete { name, yes } => {
            confirm(&format!("Delete WireGuard network {name}?"), yes)?;
            let gone = client
                .delete_wg_network(GetWgNetworkRequest { name })
                .await
                .map_err(explain)?
                .into_inner();
            output::show(out, &gone, || say!("deleted network {}", gone.name));
            return Ok(());
        }
    };
    output::show(out, &shown, || print_network(&shown));
    Ok(())
}

fn print_network(n: &WgNetwork) {
    say!(
        "network {}: {} on {}, {} and {}, port {}, MTU {}, keepalive {}s{}; {} IPv4 addresses free",
        n.name,
        n.topology,
        n.interface,
        n.ipv4,
        n.ipv6,
        n.port,
        n.mtu,
        n.keepalive_seconds,
        if n.dns.is_empty() {
            String::new()
        } else {
            format!(", DNS {}", n.dns.join(" "))
        },
        n.ipv4_free
    );
    let now = now();
    let rows: Vec<Vec<String>> = n
        .peers
        .iter()
        .map(|p| {
            vec![
                if p.hub {
                    format!("{} (hub)", p.kind)
                } else {
                    p.kind.clone()
                },
                p.name.clone(),
                p.ipv4.clone(),
                p.ipv6.clone(),
                if p.public_key.is_empty() {
                    "(not reported yet)".into()
                } else {
                    p.public_key.clone()
                },
                if p.endpoint.is_empty() {
                    "-".into()
                } else {
                    p.endpoint.clone()
                },
                expiry(p.expires_at, now),
            ]
        })
        .collect();
    output::table(
        &[
            "KIND",
            "NAME",
            "IPV4",
            "IPV6",
            "PUBLIC KEY",
            "ENDPOINT",
            "EXPIRES",
        ],
        &rows,
    );
}
