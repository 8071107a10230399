//! `gatehousectl token …`: one-time join tokens for enrolling agents.

use std::time::Duration;

use anyhow::{anyhow, bail};
use clap::Subcommand;
use gatehouse_proto::v1::*;

use crate::Output;
use crate::args::{confirm, labels_arg, labels_text};
use crate::client::{Client, explain};
use crate::output::{self, say, time};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a one-time join token and print it (shown once).
    Create {
        /// How long the token stays valid (for example 30m, 1h, 2d).
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// A label for the agent that enrolls with it, key=value (repeatable).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
    },
    /// List join tokens and whether they are valid, used, expired or revoked.
    List,
    /// Revoke an unused join token.
    Revoke {
        id: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

pub async fn run(client: &mut Client, cmd: TokenCommand, out: Output) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create { ttl, labels } => {
            let answer = client
                .create_join_token(CreateJoinTokenRequest {
                    ttl_seconds: parse_ttl(&ttl)?.as_secs(),
                    labels: labels_arg(&labels)?,
                })
                .await
                .map_err(explain)?
                .into_inner();
            let info = answer.info.clone().unwrap_or_default();
            output::show(out, &answer, || {
                say!("{}", answer.token);
                eprintln!(
                    "join token {} expires {}; it works once. Enroll with:\n  gatehouse-agent enroll --controller https://CONTROLLER:7443 --ca-hash sha256:… --token {}",
                    info.id,
                    time(info.expires_at),
                    answer.token
                );
            });
        }
        TokenCommand::List => {
            let tokens = client
                .list_join_tokens(ListJoinTokensRequest {})
                .await
                .map_err(explain)?
                .into_inner()
                .tokens;
            output::list(
                out,
                &tokens,
                &["ID", "STATE", "EXPIRES", "USED BY", "LABELS"],
                |t| {
                    vec![
                        t.id.clone(),
                        t.state.clone(),
                        time(t.expires_at),
                        if t.used_by_agent.is_empty() {
                            "-".into()
                        } else {
                            t.used_by_agent.clone()
                        },
                        labels_text(&t.labels),
                    ]
                },
            );
        }
        TokenCommand::Revoke { id, yes } => {
            confirm(&format!("Revoke join token {id}?"), yes)?;
            let t = client
                .revoke_join_token(RevokeJoinTokenRequest { id })
                .await
                .map_err(explain)?
                .into_inner()
                .token
                .unwrap_or_default();
            output::show(out, &t, || {
                say!("join token {} revoked", t.id);
            });
        }
    }
    Ok(())
}

pub fn parse_ttl(ttl: &str) -> anyhow::Result<Duration> {
    let d = humantime::parse_duration(ttl)
        .map_err(|e| anyhow!("--ttl {ttl:?}: not a duration like 30m or 1h ({e})"))?;
    if d < Duration::from_secs(1) {
        bail!("--ttl {ttl:?}: at least one second");
    }
    Ok(d)
}
