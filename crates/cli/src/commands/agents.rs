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
    /// List agents with their status and latest metrics.
    List,
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
    /// Replace an agent's labels (a new desired-state generation).
    Label {
        id: String,
        /// key=value (repeatable); none clears the labels.
        #[arg(value_name = "KEY=VALUE")]
        labels: Vec<String>,
    },
}

pub async fn run(client: &mut Client, cmd: AgentsCommand, out: Output) -> anyhow::Result<()> {
    let agent = match cmd {
        AgentsCommand::List => {
            let agents = client
                .list_agents(ListAgentsRequest {})
                .await
                .map_err(explain)?
                .into_inner()
                .agents;
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
        AgentsCommand::Label { id, labels } => {
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
