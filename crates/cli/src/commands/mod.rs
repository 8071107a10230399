//! The commands, one module per group: each builds a request, calls the admin API and prints
//! the answer.

pub mod acme;
pub mod agents;
pub mod alerts;
pub mod allowlists;
pub mod apitokens;
pub mod audit;
pub mod backup;
pub mod certs;
pub mod cloudflare;
pub mod sites;
pub mod tokens;
pub mod tunnels;
pub mod ui;
pub mod wireguard;

use crate::args::labels_arg;
use crate::{Cli, Command};

/// Runs the command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    // Check arguments before connecting, so a typo fails fast and offline.
    match &cli.command {
        Command::Token(tokens::TokenCommand::Create { ttl, labels }) => {
            tokens::parse_ttl(ttl)?;
            labels_arg(labels)?;
        }
        Command::Agents(agents::AgentsCommand::Label {
            id,
            labels,
            selector,
        }) => {
            if selector.is_some() {
                let changes: Vec<String> = id.iter().chain(labels).cloned().collect();
                agents::label_changes(&changes)?;
            } else {
                labels_arg(labels)?;
            }
        }
        Command::Site(cmd) => sites::check(cmd)?,
        Command::Tunnel(cmd) => tunnels::check(cmd)?,
        Command::Allowlist(cmd) => allowlists::check(cmd)?,
        Command::Wg(cmd) => wireguard::check(cmd)?,
        Command::Alert(cmd) => alerts::check(cmd)?,
        _ => {}
    }
    let mut client = crate::client::connect(&cli).await?;
    let out = cli.output;
    match cli.command {
        Command::Token(cmd) => tokens::run(&mut client, cmd, out).await,
        Command::Agents(cmd) => agents::run(&mut client, cmd, out).await,
        Command::Apitoken(cmd) => apitokens::run(&mut client, cmd, out).await,
        Command::Audit(cmd) => audit::run(&mut client, cmd, out).await,
        Command::Backup { to } => backup::run(&mut client, to, out).await,
        Command::Site(cmd) => sites::run(&mut client, cmd, out).await,
        Command::Cert(cmd) => certs::run(&mut client, cmd, out).await,
        Command::Cloudflare(cmd) => cloudflare::run(&mut client, cmd, out).await,
        Command::Acme(cmd) => acme::run(&mut client, cmd, out).await,
        Command::Tunnel(cmd) => tunnels::run(&mut client, cmd, out).await,
        Command::Allowlist(cmd) => allowlists::run(&mut client, cmd, out).await,
        Command::Wg(cmd) => wireguard::run(&mut client, cmd, out).await,
        Command::Alert(cmd) => alerts::run(&mut client, cmd, out).await,
        Command::Ui(cmd) => ui::run(&mut client, cmd, out).await,
        Command::Completions { .. } | Command::Man { .. } => {
            unreachable!("answered before connecting")
        }
    }
}
