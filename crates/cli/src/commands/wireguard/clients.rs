//! `gatehousectl wg client …`: clients attached to a network's hub. A client's key pair and
//! preshared key are made here, on the operator's machine; only the public key and the
//! preshared key go to the controller, and the config with the private key is printed once.

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use clap::Subcommand;
use gatehouse_common::wgkeys::PrivateKey;
use gatehouse_proto::names::WgKey;
use gatehouse_proto::v1::*;

use super::config::client_config;
use super::expiry;
use crate::Output;
use crate::args::{now, seconds as parse_duration};
use crate::client::{Client, explain};
use crate::output::{self, say, time};

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

pub async fn run(client: &mut Client, cmd: ClientCommand, out: Output) -> anyhow::Result<()> {
    match cmd {
        ClientCommand::Add {
            network,
            name,
            expires,
            public_key,
            no_preshared_key,
            qr_png,
            no_qr,
            ipv4,
            ipv6,
        } => {
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
        ClientCommand::List { network } => {
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
        ClientCommand::Show { network, name } => {
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
        ClientCommand::Remove { network, name } => super::remove(client, network, name, out).await,
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
    say!("  expires:       {}", super::expiry(p.expires_at, now()));
    say!("  added:         {}", time(p.created_at));
}
