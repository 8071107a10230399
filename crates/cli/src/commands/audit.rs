//! `gatehousectl audit …`: the audit log of every change.

use clap::Subcommand;
use gatehouse_proto::v1::*;

use crate::Output;
use crate::client::{Client, explain};
use crate::output::{self, time};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Show the newest audit entries.
    List {
        /// How many entries.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

pub async fn run(client: &mut Client, cmd: AuditCommand, out: Output) -> anyhow::Result<()> {
    let AuditCommand::List { limit } = cmd;
    let entries = client
        .list_audit(ListAuditRequest { limit })
        .await
        .map_err(explain)?
        .into_inner()
        .entries;
    output::list(
        out,
        &entries,
        &["TIME", "ACTOR", "ACTION", "TARGET", "RESULT"],
        |e| {
            vec![
                time(e.at_ms / 1000),
                e.actor.clone(),
                e.action.clone(),
                e.target.clone(),
                e.result.clone(),
            ]
        },
    );
    Ok(())
}
