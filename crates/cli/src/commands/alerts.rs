//! `gatehousectl alert …`: what the controller's rules raised, and silences.

use clap::{Args, Subcommand};
use gatehouse_proto::v1::*;

use crate::Output;
use crate::args::{labels_text, now, seconds};
use crate::client::{Client, explain};
use crate::output::{self, relative, time};

#[derive(Debug, Subcommand)]
pub enum AlertCommand {
    /// Firing and pending alerts: since when, and why.
    List {
        /// Also those that resolved recently.
        #[arg(long)]
        resolved: bool,
    },
    /// Hold alerts whose labels include every --match back from every receiver for a while
    /// (`alert silence --match agent=ID --for 2h --comment "…"`); `silence list|expire`.
    Silence(SilenceArgs),
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct SilenceArgs {
    #[command(subcommand)]
    pub command: Option<SilenceCommand>,
    /// A label the alerts carry: agent=ID, alertname=HostOffline, severity=warning.
    #[arg(long = "match", value_name = "LABEL=VALUE", required = true)]
    pub matchers: Vec<String>,
    /// How long: 30m, 2h, 3d.
    #[arg(long = "for", value_parser = seconds, required = true)]
    pub duration: Option<u64>,
    /// Why (shown with the silence and in the audit log).
    #[arg(long, required = true)]
    pub comment: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum SilenceCommand {
    /// Active silences (with --expired, ended ones too).
    List {
        #[arg(long)]
        expired: bool,
    },
    /// End a silence now.
    Expire { id: String },
}

/// `LABEL=VALUE` matchers, checked before connecting.
pub fn matchers(args: &[String]) -> anyhow::Result<std::collections::HashMap<String, String>> {
    args.iter()
        .map(|a| match a.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => anyhow::bail!("--match {a:?}: expected LABEL=VALUE, like agent=ab12cd34ef56gh78"),
        })
        .collect()
}

/// Checks the arguments before connecting.
pub fn check(cmd: &AlertCommand) -> anyhow::Result<()> {
    if let AlertCommand::Silence(args) = cmd
        && args.command.is_none()
    {
        matchers(&args.matchers)?;
    }
    Ok(())
}

fn silences(out: Output, silences: &[Silence]) {
    let now = now();
    output::list(
        out,
        silences,
        &["ID", "MATCHES", "ENDS", "BY", "COMMENT"],
        |s| {
            vec![
                s.id.clone(),
                labels_text(&s.matchers),
                relative(s.ends_at, now),
                s.created_by.clone(),
                s.comment.clone(),
            ]
        },
    );
}

pub async fn run(client: &mut Client, cmd: AlertCommand, out: Output) -> anyhow::Result<()> {
    match cmd {
        AlertCommand::List { resolved } => {
            let alerts = client
                .list_alerts(ListAlertsRequest {
                    include_resolved: resolved,
                })
                .await
                .map_err(explain)?
                .into_inner()
                .alerts;
            let now = now();
            output::list(
                out,
                &alerts,
                &["ALERT", "SEVERITY", "STATE", "SINCE", "LABELS", "WHY"],
                |a| {
                    let mut state = a.state.clone();
                    if !a.silenced_by.is_empty() {
                        state += " (silenced)";
                    }
                    if !a.notification_error.is_empty() {
                        state += " (not delivered)";
                    }
                    let since = match a.state.as_str() {
                        "firing" => a.fired_at,
                        "resolved" => a.resolved_at,
                        _ => a.active_since,
                    };
                    vec![
                        a.name.clone(),
                        a.severity.clone(),
                        state,
                        relative(since, now),
                        labels_text(&a.labels),
                        a.summary.clone(),
                    ]
                },
            );
        }
        AlertCommand::Silence(SilenceArgs {
            command: None,
            matchers: m,
            duration,
            comment,
        }) => {
            let silence = client
                .create_silence(CreateSilenceRequest {
                    matchers: matchers(&m)?,
                    duration_seconds: duration.unwrap_or_default(),
                    comment: comment.unwrap_or_default(),
                })
                .await
                .map_err(explain)?
                .into_inner();
            output::show(out, &silence, || {
                println!(
                    "silence {} holds back {} until {}",
                    silence.id,
                    labels_text(&silence.matchers),
                    time(silence.ends_at)
                );
            });
        }
        AlertCommand::Silence(SilenceArgs {
            command: Some(SilenceCommand::List { expired }),
            ..
        }) => {
            let list = client
                .list_silences(ListSilencesRequest {
                    include_expired: expired,
                })
                .await
                .map_err(explain)?
                .into_inner()
                .silences;
            silences(out, &list);
        }
        AlertCommand::Silence(SilenceArgs {
            command: Some(SilenceCommand::Expire { id }),
            ..
        }) => {
            let silence = client
                .expire_silence(ExpireSilenceRequest { id })
                .await
                .map_err(explain)?
                .into_inner();
            output::show(out, &silence, || {
                println!("silence {} ended", silence.id);
            });
        }
    }
    Ok(())
}
