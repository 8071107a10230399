//! `gatehousectl agents …`: enrolled agents, their status, labels and history.

use std::time::Duration;

use clap::Subcommand;
use gatehouse_proto::v1::*;

use crate::Output;
use crate::args::{confirm, labels_arg, labels_text, now};
use crate::client::{Client, explain};
use crate::output::{self, bytes, relative, say, time};

#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// List agents with their status and latest metrics (every page).
    List {
        /// Only agents whose labels match: role=edge,region=fra; region!=fra; gpu; !gpu.
        #[arg(long)]
        selector: Option<String>,
        /// Only agents with this status.
        #[arg(long, value_parser = ["online", "offline", "revoked"])]
        status: Option<String>,
        /// Agents asked for per call (the controller caps it at 5000).
        #[arg(long, default_value_t = 500)]
        page_size: u32,
    },
    /// Show one agent in detail.
    Show { id: String },
    /// Revoke an agent: its stream closes now and it cannot connect again.
    Revoke {
        id: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Make an earlier generation's content the newest generation.
    Rollback {
        id: String,
        /// The generation to go back to (see `agents status`).
        #[arg(long = "to")]
        to: u64,
    },
    /// The last apply result per item, installed certificates and the generation history.
    Status { id: String },
    /// Replace an agent's labels, or with --selector change them on every matching agent in one
    /// call: `agents label --selector role=edge region=fra tier-` (a new generation each).
    Label {
        /// The agent whose labels are replaced (KEY=VALUE…; none clears them); with --selector,
        /// leave it out.
        #[arg(required_unless_present = "selector")]
        id: Option<String>,
        /// Change the agents this selector matches: KEY=VALUE sets, KEY- removes.
        #[arg(long)]
        selector: Option<String>,
        #[arg(value_name = "KEY=VALUE")]
        labels: Vec<String>,
    },
}

pub async fn run(client: &mut Client, cmd: AgentsCommand, out: Output) -> anyhow::Result<()> {
    let agent = match cmd {
        AgentsCommand::List {
            selector,
            status,
            page_size,
        } => {
            let mut agents = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_agents(ListAgentsRequest {
                        page_size,
                        page_token,
                        selector: selector.clone().unwrap_or_default(),
                        status: status.clone().unwrap_or_default(),
                    })
                    .await
                    .map_err(explain)?
                    .into_inner();
                agents.extend(page.agents);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            let now = now();
            output::list(
                out,
                &agents,
                &[
                    "ID",
                    "HOSTNAME",
                    "STATUS",
                    "LAST SEEN",
                    "GENERATION",
                    "CPU",
                    "MEMORY",
                    "LABELS",
                ],
                |a| {
                    let m = a.metrics.clone().unwrap_or_default();
                    vec![
                        a.id.clone(),
                        a.hostname.clone(),
                        a.status.clone(),
                        relative(a.last_seen_at, now),
                        format!("{}/{}", a.applied_generation, a.desired_generation),
                        if a.metrics.is_some() {
                            format!("{:.0}%", m.cpu_percent)
                        } else {
                            "-".into()
                        },
                        if a.metrics.is_some() {
                            format!(
                                "{}/{}",
                                bytes(m.memory_used_bytes),
                                bytes(m.memory_total_bytes)
                            )
                        } else {
                            "-".into()
                        },
                        labels_text(&a.labels),
                    ]
                },
            );
            return Ok(());
        }
        AgentsCommand::Show { id } => client.get_agent(GetAgentRequest { id }).await,
        AgentsCommand::Rollback { id, to } => {
            client
                .rollback_agent(RollbackAgentRequest {
                    agent_id: id,
                    to_generation: to,
                })
                .await
        }
        AgentsCommand::Status { id } => {
            let status = client
                .get_agent_status(GetAgentRequest { id })
                .await
                .map_err(explain)?
                .into_inner();
            print_status(&status, out);
            return Ok(());
        }
        AgentsCommand::Revoke { id, yes } => {
            confirm(
                &format!("Revoke agent {id}? It will be disconnected and refused from now on"),
                yes,
            )?;
            client.revoke_agent(RevokeAgentRequest { id }).await
        }
        AgentsCommand::Label {
            id,
            selector: Some(selector),
            labels,
        } => {
            // With a selector, every argument is a change (clap takes the first for an id).
            let changes: Vec<String> = id.into_iter().chain(labels).collect();
            let (set, remove) = label_changes(&changes)?;
            let done = client
                .label_agents(LabelAgentsRequest {
                    selector,
                    set,
                    remove,
                })
                .await
                .map_err(explain)?
                .into_inner();
            output::show(out, &done, || {
                say!("{} agents matched, {} changed", done.matched, done.changed);
            });
            return Ok(());
        }
        AgentsCommand::Label { id, labels, .. } => {
            let id = id.unwrap_or_default();
            client
                .set_agent_labels(SetAgentLabelsRequest {
                    id,
                    labels: labels_arg(&labels)?,
                })
                .await
        }
    }
    .map_err(explain)?
    .into_inner();
    output::show(out, &agent, || {
        print_agent(&agent);
    });
    Ok(())
}

/// `KEY=VALUE` (set) and `KEY-` (remove) arguments of `agents label --selector`.
pub fn label_changes(
    args: &[String],
) -> anyhow::Result<(std::collections::HashMap<String, String>, Vec<String>)> {
    let (removed, set): (Vec<&String>, Vec<&String>) = args
        .iter()
        .partition(|a| a.ends_with('-') && !a.contains('='));
    let set: Vec<String> = set.into_iter().cloned().collect();
    let remove = removed
        .into_iter()
        .map(|a| a.trim_end_matches('-').to_owned())
        .collect();
    Ok((labels_arg(&set)?, remove))
}

fn print_status(s: &AgentStatus, out: Output) {
    let agent = s.agent.clone().unwrap_or_default();
    if out == Output::Json {
        output::json(s);
        return;
    }
    say!(
        "agent {} ({}): generation {} applied / {} desired, last apply {}",
        agent.id,
        agent.status,
        s.applied_generation,
        agent.desired_generation,
        time(s.applied_at)
    );
    say!();
    let rows = s
        .results
        .iter()
        .map(|r| {
            vec![
                r.item(),
                r.item_state().word().to_owned(),
                r.message.clone(),
            ]
        })
        .collect::<Vec<_>>();
    output::table(&["ITEM", "STATE", "MESSAGE"], &rows);
    if !s.certificates.is_empty() {
        say!();
        let rows = s
            .certificates
            .iter()
            .map(|c| {
                vec![
                    c.name.clone(),
                    c.serial.clone(),
                    time(c.not_after),
                    c.path.clone(),
                ]
            })
            .collect::<Vec<_>>();
        output::table(&["CERTIFICATE", "SERIAL", "EXPIRES", "PATH"], &rows);
    }
    say!();
    let rows = s
        .history
        .iter()
        .map(|h| {
            vec![
                h.generation.to_string(),
                time(h.created_at),
                h.sites.to_string(),
                h.certificates.to_string(),
            ]
        })
        .collect::<Vec<_>>();
    output::table(&["GENERATION", "CREATED", "SITES", "CERTIFICATES"], &rows);
}

fn print_agent(a: &Agent) {
    let now = now();
    let facts = a.facts.clone().unwrap_or_default();
    say!("id:            {}", a.id);
    say!("hostname:      {}", a.hostname);
    say!("status:        {}", a.status);
    say!("labels:        {}", labels_text(&a.labels));
    say!(
        "version:       {}",
        if a.version.is_empty() {
            "-"
        } else {
            &a.version
        }
    );
    say!(
        "os:            {} ({}, kernel {})",
        facts.os,
        facts.arch,
        facts.kernel
    );
    say!("enrolled:      {}", time(a.enrolled_at));
    say!("last seen:     {}", relative(a.last_seen_at, now));
    say!("connected:     {}", relative(a.connected_since, now));
    say!(
        "generation:    {} applied / {} desired",
        a.applied_generation,
        a.desired_generation
    );
    say!(
        "certificate:   serial {}, expires {}",
        a.certificate_serial,
        time(a.certificate_not_after)
    );
    if a.revoked_at > 0 {
        say!("revoked:       {}", time(a.revoked_at));
    }
    if let Some(m) = &a.metrics {
        say!("cpu:           {:.1}%", m.cpu_percent);
        say!(
            "memory:        {} of {}",
            bytes(m.memory_used_bytes),
            bytes(m.memory_total_bytes)
        );
        say!(
            "swap:          {} of {}",
            bytes(m.swap_used_bytes),
            bytes(m.swap_total_bytes)
        );
        say!(
            "load:          {:.2} {:.2} {:.2}",
            m.load_1,
            m.load_5,
            m.load_15
        );
        say!(
            "uptime:        {}",
            humantime::format_duration(Duration::from_secs(m.uptime_seconds))
        );
        for fs in &m.filesystems {
            say!(
                "filesystem:    {} {} free of {}",
                fs.mount_point,
                bytes(fs.available_bytes),
                bytes(fs.total_bytes)
            );
        }
        for i in &m.interfaces {
            say!(
                "interface:     {} rx {} tx {}",
                i.name,
                bytes(i.rx_bytes),
                bytes(i.tx_bytes)
            );
        }
    }
}
