//! `gatehousectl cloudflare …`: Cloudflare accounts and zones.

use anyhow::anyhow;
use clap::Subcommand;
use gatehouse_proto::v1::*;

use crate::Output;
use crate::client::{Client, explain};
use crate::output::{self, say, time};

#[derive(Debug, Subcommand)]
pub enum CloudflareCommand {
    /// Cloudflare accounts (API tokens, stored encrypted).
    #[command(subcommand)]
    Account(AccountCommand),
    /// The zones the accounts can see.
    Zones {
        /// Only this account's zones.
        #[arg(long)]
        account: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Add an account: its API token is verified with Cloudflare first.
    Add {
        /// A name for the account.
        #[arg(long)]
        name: String,
        /// A file holding the API token (never pass tokens on a command line).
        #[arg(long)]
        token_file: std::path::PathBuf,
        /// The API root (default: Cloudflare's).
        #[arg(long)]
        api_url: Option<String>,
    },
    /// List accounts (never their tokens).
    List,
}

pub async fn run(client: &mut Client, cmd: CloudflareCommand, out: Output) -> anyhow::Result<()> {
    match cmd {
        CloudflareCommand::Account(AccountCommand::Add {
            name,
            token_file,
            api_url,
        }) => {
            let token = std::fs::read_to_string(&token_file)
                .map_err(|e| anyhow!("cannot read --token-file {}: {e}", token_file.display()))?;
            let a = client
                .add_cloudflare_account(AddCloudflareAccountRequest {
                    name,
                    token: token.trim().to_owned(),
                    api_url: api_url.unwrap_or_default(),
                })
                .await
                .map_err(explain)?
                .into_inner();
            output::show(out, &a, || {
                say!(
                    "Cloudflare account {} added (token {} verified)",
                    a.name,
                    a.token_id
                );
            });
        }
        CloudflareCommand::Account(AccountCommand::List) => {
            let accounts = client
                .list_cloudflare_accounts(ListCloudflareAccountsRequest {})
                .await
                .map_err(explain)?
                .into_inner()
                .accounts;
            output::list(out, &accounts, &["NAME", "API", "TOKEN ID", "ADDED"], |a| {
                vec![
                    a.name.clone(),
                    a.api_url.clone(),
                    a.token_id.clone(),
                    time(a.created_at),
                ]
            });
        }
        CloudflareCommand::Zones { account } => {
            let zones = client
                .list_zones(ListZonesRequest {
                    account: account.unwrap_or_default(),
                })
                .await
                .map_err(explain)?
                .into_inner()
                .zones;
            output::list(out, &zones, &["ZONE", "ID", "STATUS", "ACCOUNT"], |z| {
                vec![
                    z.name.clone(),
                    z.id.clone(),
                    z.status.clone(),
                    z.account.clone(),
                ]
            });
        }
    }
    Ok(())
}
