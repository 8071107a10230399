//! The commands, one module per group: each builds a request, calls the admin API and prints
//! the answer.

pub mod acme;
pub mod agents;
pub mod apitokens;
pub mod audit;
pub mod certs;
pub mod cloudflare;
pub mod sites;
pub mod tokens;

use std::collections::HashMap;
use std::io::{IsTerminal, Write};

use anyhow::{anyhow, bail};
use gatehouse_proto::names::parse_label_arg;

use crate::{Cli, Command};

/// Runs the command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    // Check arguments before connecting, so a typo fails fast and offline.
    match &cli.command {
        Command::Token(tokens::TokenCommand::Create { ttl, labels }) => {
            tokens::parse_ttl(ttl)?;
            labels_arg(labels)?;
        }
        Command::Agents(agents::AgentsCommand::Label { labels, .. }) => {
            labels_arg(labels)?;
        }
        Command::Site(cmd) => sites::check(cmd)?,
        _ => {}
    }
    let mut client = crate::client::connect(&cli).await?;
    let out = cli.output;
    match cli.command {
        Command::Token(cmd) => tokens::run(&mut client, cmd, out).await,
        Command::Agents(cmd) => agents::run(&mut client, cmd, out).await,
        Command::Apitoken(cmd) => apitokens::run(&mut client, cmd, out).await,
        Command::Audit(cmd) => audit::run(&mut client, cmd, out).await,
        Command::Site(cmd) => sites::run(&mut client, cmd, out).await,
        Command::Cert(cmd) => certs::run(&mut client, cmd, out).await,
        Command::Cloudflare(cmd) => cloudflare::run(&mut client, cmd, out).await,
        Command::Acme(cmd) => acme::run(&mut client, cmd, out).await,
        Command::Completions { .. } | Command::Man { .. } => {
            unreachable!("answered before connecting")
        }
    }
}

pub fn confirm(question: &str, yes: bool) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!("{question}: refusing without --yes when not on a terminal");
    }
    print!("{question} [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        bail!("cancelled")
    }
}

pub fn labels_arg(args: &[String]) -> anyhow::Result<HashMap<String, String>> {
    args.iter()
        .map(|a| parse_label_arg(a).map_err(|e| anyhow!("--label: {e}")))
        .collect()
}

pub fn labels_text(labels: &HashMap<String, String>) -> String {
    let mut pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    if pairs.is_empty() {
        "-".into()
    } else {
        pairs.join(",")
    }
}

pub fn now() -> i64 {
    gatehouse_common::now_unix()
}
