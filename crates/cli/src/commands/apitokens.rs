//! `gatehousectl apitoken …`: API tokens for the admin API.

use clap::Subcommand;
use gatehouse_proto::v1::*;

use crate::Output;
use crate::args::{confirm, now};
use crate::client::{Client, explain};
use crate::output::{self, relative, say};

#[derive(Debug, Subcommand)]
pub enum ApiTokenCommand {
    /// Create an API token and print it (shown once).
    Create {
        /// A name to recognise it by.
        #[arg(long)]
        name: String,
        /// admin, operator or viewer.
        #[arg(long)]
        role: String,
    },
    /// List API tokens.
    List,
    /// Revoke an API token.
    Revoke {
        id: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

pub async fn run(client: &mut Client, cmd: ApiTokenCommand, out: Output) -> anyhow::Result<()> {
    match cmd {
        ApiTokenCommand::Create { name, role } => {
            let answer = client
                .create_api_token(CreateApiTokenRequest { name, role })
                .await
                .map_err(explain)?
                .into_inner();
            let info = answer.info.clone().unwrap_or_default();
            output::show(out, &answer, || {
                say!("{}", answer.token);
                eprintln!(
                    "API token {} ({}, role {}); it is shown only now.",
                    info.id, info.name, info.role
                );
            });
        }
        ApiTokenCommand::List => {
            let tokens = client
                .list_api_tokens(ListApiTokensRequest {})
                .await
                .map_err(explain)?
                .into_inner()
                .tokens;
            let now = now();
            output::list(
                out,
                &tokens,
                &["ID", "NAME", "ROLE", "STATE", "LAST USED"],
                |t| {
                    vec![
                        t.id.clone(),
                        t.name.clone(),
                        t.role.clone(),
                        if t.revoked_at > 0 {
                            "revoked".into()
                        } else {
                            "active".into()
                        },
                        relative(t.last_used_at, now),
                    ]
                },
            );
        }
        ApiTokenCommand::Revoke { id, yes } => {
            confirm(&format!("Revoke API token {id}?"), yes)?;
            let t = client
                .revoke_api_token(RevokeApiTokenRequest { id })
                .await
                .map_err(explain)?
                .into_inner()
                .token
                .unwrap_or_default();
            output::show(out, &t, || {
                say!("API token {} revoked", t.id);
            });
        }
    }
    Ok(())
}
