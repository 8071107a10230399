//! `gatehousectl wg …`: WireGuard networks, their hosts and clients. A client's key pair and
//! preshared key are made here, on the operator's machine; only the public key and the
//! preshared key go to the controller, and the config with the private key is printed once.

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use clap::Subcommand;
use gatehouse_common::wgkeys::PrivateKey;
use gatehouse_proto::names::{InterfaceName, ResourceName, WgEndpoint, WgKey};
use gatehouse_proto::v1::*;

use crate::Output;
use crate::args::{confirm, now, seconds as parse_duration};
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

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Add a host: it gets the next free addresses and makes its key.
    Add {
        network: String,
        #[arg(long)]
        agent: String,
        /// Other peers go through it (it forwards between them).
        #[arg(long)]
        hub: bool,
        /// HOST:PORT other peers reach it at (a hub needs one).
        #[arg(long)]
        endpoint: Option<String>,
        #[arg(long)]
        ipv4: Option<String>,
        #[arg(long)]
        ipv6: Option<String>,
    },
    /// Remove a host from a network; its addresses are free again.
    Remove {
        network: String,
        #[arg(long)]
        agent: String,
    },
    /// Make the host make a new key; its peers get it once the host reports it.
    RotateKey {
        network: String,
        #[arg(long)]
        agent: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Add a client and print its config once (with a QR code for phones).
    Add {
        network: String,
        /// The client's name: [a-z0-9-].
        #[arg(long)]
        name: String,
        /// Remove it from the hub after this long.
        #[arg(long, value_parser = parse_duration)]
        expires: Option<u64>,
        /// The client's own public key: nothing private is made, and no config is printed.
        #[arg(long)]
        public_key: Option<String>,
        /// No preshared key.
        #[arg(long)]
        no_preshared_key: bool,
        /// Also write the QR code as a PNG image.
        #[arg(long, value_name = "FILE")]
        qr_png: Option<PathBuf>,
        /// Print no QR code on the terminal.
        #[arg(long)]
        no_qr: bool,
        #[arg(long)]
        ipv4: Option<String>,
        #[arg(long)]
        ipv6: Option<String>,
    },
    /// List a network's clients.
    List { network: String },
    /// Show one client.
    Show {
        network: String,
        #[arg(long)]
        name: String,
    },
    /// Remove a client; its addresses are free again.
    Remove {
        network: String,
        #[arg(long)]
        name: String,
    },
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
        WgCommand::Network(cmd) => network(client, cmd, out).await,
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
        WgCommand::Host(HostCommand::Add {
            network,
            agent,
            hub,
            endpoint,
            ipv4,
            ipv6,
        }) => {
            let peer = client
                .add_wg_host(AddWgHostRequest {
                    network,
                    agent_id: agent,
                    hub,
                    endpoint: endpoint.unwrap_or_default(),
                    ipv4: ipv4.unwrap_or_default(),
                    ipv6: ipv6.unwrap_or_default(),
                })
                .await
                .map_err(explain)?
                .into_inner();
            output::show(out, &peer, || {
                say!(
                    "host {} joins {} as {} and {}{}; it makes its key and reports it",
                    peer.name,
                    peer.network,
                    peer.ipv4,
                    peer.ipv6,
                    if peer.hub { " (hub)" } else { "" }
                )
            });
            Ok(())
        }
        WgCommand::Host(HostCommand::Remove { network, agent }) => {
            remove(client, network, agent, out).await
        }
        WgCommand::Host(HostCommand::RotateKey { network, agent }) => {
            let peer = client
                .rotate_wg_host_key(RotateWgHostKeyRequest {
                    network,
                    agent_id: agent,
                })
                .await
                .map_err(explain)?
                .into_inner();
            output::show(out, &peer, || {
                say!(
                    "host {} makes a new key for {}; its peers get it once it reports it",
                    peer.name,
                    peer.network
                )
            });
            Ok(())
        }
        WgCommand::Client(ClientCommand::Add {
            network,
            name,
            expires,
            public_key,
            no_preshared_key,
            qr_png,
            no_qr,
            ipv4,
            ipv6,
        }) => {
            let private = public_key.is_none().then(PrivateKey::generate);
            let public = match (&public_key, &private) {
                (Some(k), _) => k.parse::<WgKey>()?,
                (None, Some(p)) => p.public(),
                (None, None) => unreachable!("a key is made when none is given"),
            };
            let psk = (!no_preshared_key).then(PrivateKey::random);
            let added = client
                .add_wg_client(AddWgClientRequest {
                    network,
                    name,
                    public_key: public.to_string(),
                    preshared_key: psk
                        .as_ref()
                        .map(|k| k.expose().to_string())
                        .unwrap_or_default(),
                    expires_seconds: expires.unwrap_or(0),
                    ipv4: ipv4.unwrap_or_default(),
                    ipv6: ipv6.unwrap_or_default(),
                })
                .await
                .map_err(explain)?
                .into_inner();
            let peer = added.client.context("the controller sent no client")?;
            let config = added.config.context("the controller sent no config")?;
            let Some(private) = private else {
                // Their own key: they write their config; here is what it needs.
                output::show(out, &config, || {
                    say!(
                        "client {} added as {} and {}; its peer: {} at {}, allowed {}",
                        peer.name,
                        peer.ipv4,
                        peer.ipv6,
                        config.hub_public_key,
                        config.hub_endpoint,
                        config.allowed_ips.join(", ")
                    )
                });
                return Ok(());
            };
            let text = client_config(&config, &private, psk.as_ref())?;
            if let Some(path) = &qr_png {
                crate::qr::write_png(&text, path)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            if out == Output::Json {
                output::json(&serde_json::json!({ "client": peer, "config": text }));
                return Ok(());
            }
            // The config is the one thing printed raw: it is the file to save.
            print!("{text}");
            if !no_qr {
                eprintln!();
                eprintln!("{}", crate::qr::terminal(&text)?);
            }
            eprintln!(
                "This config holds the client's private key and is shown once: save it as \
                 {}.conf or scan the code.",
                peer.network
            );
            Ok(())
        }
        WgCommand::Client(ClientCommand::List { network }) => {
            let n = client
                .get_wg_network(GetWgNetworkRequest { name: network })
                .await
                .map_err(explain)?
                .into_inner();
            let clients: Vec<WgPeer> = n.peers.into_iter().filter(|p| p.kind == "client").collect();
            let now = now();
            output::list(
                out,
                &clients,
                &["CLIENT", "IPV4", "IPV6", "PUBLIC KEY", "EXPIRES"],
                |p| {
                    vec![
                        p.name.clone(),
                        p.ipv4.clone(),
                        p.ipv6.clone(),
                        p.public_key.clone(),
                        expiry(p.expires_at, now),
                    ]
                },
            );
            Ok(())
        }
        WgCommand::Client(ClientCommand::Show { network, name }) => {
            let n = client
                .get_wg_network(GetWgNetworkRequest {
                    name: network.clone(),
                })
                .await
                .map_err(explain)?
                .into_inner();
            let peer = n
                .peers
                .into_iter()
                .find(|p| p.kind == "client" && p.name == name)
                .ok_or_else(|| anyhow!("network {network} has no client {name}"))?;
            output::show(out, &peer, || print_peer(&peer));
            Ok(())
        }
        WgCommand::Client(ClientCommand::Remove { network, name }) => {
            remove(client, network, name, out).await
        }
    }
}

async fn network(client: &mut Client, cmd: NetworkCommand, out: Output) -> anyhow::Result<()> {
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

fn print_peer(p: &WgPeer) {
    say!("{} {} in network {}", p.kind, p.name, p.network);
    say!("  addresses:     {} {}", p.ipv4, p.ipv6);
    say!("  public key:    {}", p.public_key);
    say!(
        "  preshared key: {}",
        if p.preshared_key { "yes" } else { "no" }
    );
    say!("  expires:       {}", expiry(p.expires_at, now()));
    say!("  added:         {}", time(p.created_at));
}

/// The client's wg-quick config: its private key, addresses, DNS and MTU, and the hub as its
/// one peer. Every value from the controller is checked first, so nothing it sends can add a
/// line to the file.
pub fn client_config(
    c: &WgClientConfig,
    private: &PrivateKey,
    psk: Option<&PrivateKey>,
) -> anyhow::Result<String> {
    let nets = |field: &str, list: &[String]| -> anyhow::Result<String> {
        let parsed = list
            .iter()
            .map(|a| {
                a.parse::<ipnet::IpNet>()
                    .map(|n| n.to_string())
                    .map_err(|_| anyhow!("the controller sent a bad {field}: {a:?}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(parsed.join(", "))
    };
    let hub: WgKey = c.hub_public_key.parse()?;
    let endpoint: WgEndpoint = c.hub_endpoint.parse()?;
    let dns = c
        .dns
        .iter()
        .map(|d| {
            d.parse::<std::net::IpAddr>()
                .map(|a| a.to_string())
                .map_err(|_| anyhow!("the controller sent a bad DNS server: {d:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut out = String::from("[Interface]\n");
    out.push_str(&format!("PrivateKey = {}\n", private.expose()));
    out.push_str(&format!("Address = {}\n", nets("address", &c.addresses)?));
    if !dns.is_empty() {
        out.push_str(&format!("DNS = {}\n", dns.join(", ")));
    }
    if c.mtu != 0 {
        out.push_str(&format!("MTU = {}\n", c.mtu));
    }
    out.push_str("\n[Peer]\n");
    out.push_str(&format!("PublicKey = {hub}\n"));
    if let Some(psk) = psk {
        out.push_str(&format!("PresharedKey = {}\n", psk.expose()));
    }
    out.push_str(&format!("Endpoint = {endpoint}\n"));
    out.push_str(&format!(
        "AllowedIPs = {}\n",
        nets("allowed range", &c.allowed_ips)?
    ));
    if c.keepalive_seconds != 0 {
        out.push_str(&format!("PersistentKeepalive = {}\n", c.keepalive_seconds));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> WgClientConfig {
        WgClientConfig {
            addresses: vec!["10.60.0.5/32".into(), "fd12:3456:789a::5/128".into()],
            dns: vec!["10.60.0.1".into()],
            mtu: 1420,
            hub_public_key: PrivateKey::generate().public().to_string(),
            hub_endpoint: "hub.example.com:51820".into(),
            allowed_ips: vec!["10.60.0.0/24".into(), "fd12:3456:789a::/64".into()],
            keepalive_seconds: 25,
        }
    }

    #[test]
    fn a_client_config_has_its_key_the_hub_and_nothing_the_controller_could_inject() {
        let private = PrivateKey::generate();
        let psk = PrivateKey::random();
        let text = client_config(&config(), &private, Some(&psk)).unwrap();
        assert!(text.starts_with(&format!("[Interface]\nPrivateKey = {}\n", private.expose())));
        assert!(text.contains("Address = 10.60.0.5/32, fd12:3456:789a::5/128\n"));
        assert!(text.contains(&format!("PresharedKey = {}\n", psk.expose())));
        assert!(text.contains("AllowedIPs = 10.60.0.0/24, fd12:3456:789a::/64\n"));
        assert!(text.ends_with("PersistentKeepalive = 25\n"));
        for bad in [
            WgClientConfig {
                hub_endpoint: "hub:1\nPostUp = rm -rf /".into(),
                ..config()
            },
            WgClientConfig {
                dns: vec!["1.1.1.1\nPostUp = x".into()],
                ..config()
            },
            WgClientConfig {
                allowed_ips: vec!["0.0.0.0/0, ::/0\nPostUp = x".into()],
                ..config()
            },
            WgClientConfig {
                hub_public_key: "x".into(),
                ..config()
            },
        ] {
            assert!(client_config(&bad, &private, None).is_err());
        }
    }
}
