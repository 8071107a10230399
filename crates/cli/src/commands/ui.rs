//! `gatehousectl ui login`: a one-time link to the status page.

use clap::Subcommand;
use gatehouse_proto::v1::*;

use crate::Output;
use crate::client::{Client, explain};
use crate::output::{self, time};

#[derive(Debug, Subcommand)]
pub enum UiCommand {
    /// Print a one-time link that signs this caller in to the status page (with its role).
    Login,
}

pub async fn run(client: &mut Client, cmd: UiCommand, out: Output) -> anyhow::Result<()> {
    let UiCommand::Login = cmd;
    let link = client
        .create_ui_login(CreateUiLoginRequest {})
        .await
        .map_err(explain)?
        .into_inner();
    output::show(out, &link, || {
        println!("{}", link.url);
        eprintln!(
            "open it once before {}; it signs you in with your role",
            time(link.expires_at)
        );
    });
    Ok(())
}
