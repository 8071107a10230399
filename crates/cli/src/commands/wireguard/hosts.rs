//! `gatehousectl wg host …`: hosts joining and leaving a network; their keys are made on the
//! host.

use clap::Subcommand;
use gatehouse_proto::v1::*;

use crate::Output;
use crate::client::{Client, explain};
use crate::output::{self, say};

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

pub async fn run(client: &mut Client, cmd: HostCommand, out: Output) -> anyhow::Result<()> {
    match cmd {
        HostCommand::Add {
            network,
            agent,
            hub,
            endpoint,
            ipv4,
            ipv6,
        } => {
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
        HostCommand::Remove { network, agent } => super::remove(client, network, agent, out).await,
        HostCommand::RotateKey { network, agent } => {
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
    }
}
