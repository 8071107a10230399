//! The commands: each builds a request, calls the admin API and prints the answer.

use crate::output::say;
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Subcommand;
use gatehouse_common::transport::{self, ControllerUrl};
use gatehouse_proto::names::parse_label_arg;
use gatehouse_proto::v1::admin_service_client::AdminServiceClient;
use gatehouse_proto::v1::*;
use serde_json::{Value, json};
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::output::{self, bytes, relative, time};
use crate::{Cli, Output};

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

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Show the newest audit entries.
    List {
        /// How many entries.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type Client = AdminServiceClient<InterceptedService<Channel, Bearer>>;

async fn client(cli: &Cli) -> anyhow::Result<Client> {
    let (channel, bearer) = match &cli.controller {
        Some(url) => {
            let url = ControllerUrl::parse(url, 7444).map_err(|e| anyhow!("--controller: {e}"))?;
            let ca_file = cli
                .ca_file
                .as_ref()
                .ok_or_else(|| anyhow!("--controller needs --ca-file (the controller's ca.pem)"))?;
            let ca = std::fs::read_to_string(ca_file)
                .with_context(|| format!("cannot read --ca-file {}", ca_file.display()))?;
            let token = cli.token.as_ref().ok_or_else(|| {
                anyhow!("--controller needs an API token: --token or GATEHOUSE_TOKEN")
            })?;
            let value = MetadataValue::try_from(format!("Bearer {}", token.trim()))
                .map_err(|_| anyhow!("the API token has characters a token never has"))?;
            let tls = transport::client_config(&ca).context("--ca-file")?;
            let channel = transport::tls_channel(&url, tls).await.map_err(|e| {
                anyhow!(
                    "cannot reach the admin API at {url}: {}",
                    gatehouse_common::error_chain(&e)
                )
            })?;
            (channel, Some(value))
        }
        None => {
            let channel = transport::unix_channel(cli.socket.clone()).await.map_err(|e| {
                anyhow!(
                    "cannot reach the admin socket {}: {} (is the controller running here, and are you root? \
                     Or use --controller, --ca-file and --token)",
                    cli.socket.display(),
                    gatehouse_common::error_chain(&e)
                )
            })?;
            (channel, None)
        }
    };
    Ok(AdminServiceClient::with_interceptor(
        channel,
        Bearer(bearer),
    ))
}

/// Turns a refusal into a message that says what to do.
pub fn explain(status: tonic::Status) -> anyhow::Error {
    let hint = match status.code() {
        tonic::Code::Unauthenticated => " (check the API token)",
        tonic::Code::PermissionDenied => " (ask an admin for a token with a higher role)",
        // Only when no answer came: a controller that answered (its response carries
        // headers) is running, and its message says what is wrong.
        tonic::Code::Unavailable if status.metadata().is_empty() => " (is the controller running?)",
        _ => "",
    };
    anyhow!("{}{hint}", status.message())
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

fn labels_arg(args: &[String]) -> anyhow::Result<HashMap<String, String>> {
    args.iter()
        .map(|a| parse_label_arg(a).map_err(|e| anyhow!("--label: {e}")))
        .collect()
}

fn labels_text(labels: &HashMap<String, String>) -> String {
    let mut pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    if pairs.is_empty() {
        "-".into()
    } else {
        pairs.join(",")
    }
}

fn now() -> i64 {
    gatehouse_common::now_unix()
}

/// Runs the command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    // Check arguments before connecting, so a typo fails fast and offline.
    match &cli.command {
        crate::Command::Token(TokenCommand::Create { ttl, labels }) => {
            parse_ttl(ttl)?;
            labels_arg(labels)?;
        }
        crate::Command::Agents(AgentsCommand::Label { labels, .. }) => {
            labels_arg(labels)?;
        }
        crate::Command::Site(cmd) => crate::sites::check(cmd)?,
        _ => {}
    }
    let mut client = client(&cli).await?;
    let out = cli.output;
    match cli.command {
        crate::Command::Token(cmd) => token(&mut client, cmd, out).await,
        crate::Command::Agents(cmd) => agents(&mut client, cmd, out).await,
        crate::Command::Apitoken(cmd) => api_tokens(&mut client, cmd, out).await,
        crate::Command::Site(cmd) => crate::sites::site(&mut client, cmd, out).await,
        crate::Command::Cert(cmd) => crate::sites::cert(&mut client, cmd, out).await,
        crate::Command::Cloudflare(cmd) => crate::sites::cloudflare(&mut client, cmd, out).await,
        crate::Command::Acme(cmd) => crate::acme::acme(&mut client, cmd, out).await,
        crate::Command::Audit(AuditCommand::List { limit }) => {
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
                audit_json,
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
        crate::Command::Completions { .. } | crate::Command::Man { .. } => {
            unreachable!("answered before connecting")
        }
    }
}

fn parse_ttl(ttl: &str) -> anyhow::Result<Duration> {
    let d = humantime::parse_duration(ttl)
        .map_err(|e| anyhow!("--ttl {ttl:?}: not a duration like 30m or 1h ({e})"))?;
    if d < Duration::from_secs(1) {
        bail!("--ttl {ttl:?}: at least one second");
    }
    Ok(d)
}

async fn token(client: &mut Client, cmd: TokenCommand, out: Output) -> anyhow::Result<()> {
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
            let info = answer.info.unwrap_or_default();
            if out == Output::Json {
                let mut v = join_token_json(&info);
                v["token"] = json!(answer.token);
                output::json(&v);
            } else {
                say!("{}", answer.token);
                eprintln!(
                    "join token {} expires {}; it works once. Enroll with:\n  gatehouse-agent enroll --controller https://CONTROLLER:7443 --ca-hash sha256:… --token {}",
                    info.id,
                    time(info.expires_at),
                    answer.token
                );
            }
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
                join_token_json,
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
            if out == Output::Json {
                output::json(&join_token_json(&t));
            } else {
                say!("join token {} revoked", t.id);
            }
        }
    }
    Ok(())
}

async fn agents(client: &mut Client, cmd: AgentsCommand, out: Output) -> anyhow::Result<()> {
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
                agent_json,
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
    if out == Output::Json {
        output::json(&agent_json(&agent));
    } else {
        print_agent(&agent);
    }
    Ok(())
}

fn print_status(s: &AgentStatus, out: Output) {
    let agent = s.agent.clone().unwrap_or_default();
    if out == Output::Json {
        output::json(&json!({
            "agent": agent_json(&agent),
            "applied_generation": s.applied_generation,
            "applied_at": s.applied_at,
            "results": s.results.iter().map(|r| json!({
                "item": r.item(), "kind": r.kind, "name": r.name,
                "state": r.item_state().word(), "message": r.message,
            })).collect::<Vec<_>>(),
            "certificates": s.certificates.iter().map(crate::sites::inventory_json).collect::<Vec<_>>(),
            "history": s.history.iter().map(|h| json!({
                "generation": h.generation, "created_at": h.created_at,
                "sites": h.sites, "certificates": h.certificates,
            })).collect::<Vec<_>>(),
        }));
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

async fn api_tokens(client: &mut Client, cmd: ApiTokenCommand, out: Output) -> anyhow::Result<()> {
    match cmd {
        ApiTokenCommand::Create { name, role } => {
            let answer = client
                .create_api_token(CreateApiTokenRequest { name, role })
                .await
                .map_err(explain)?
                .into_inner();
            let info = answer.info.unwrap_or_default();
            if out == Output::Json {
                let mut v = api_token_json(&info);
                v["token"] = json!(answer.token);
                output::json(&v);
            } else {
                say!("{}", answer.token);
                eprintln!(
                    "API token {} ({}, role {}); it is shown only now.",
                    info.id, info.name, info.role
                );
            }
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
                api_token_json,
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
            if out == Output::Json {
                output::json(&api_token_json(&t));
            } else {
                say!("API token {} revoked", t.id);
            }
        }
    }
    Ok(())
}

fn join_token_json(t: &JoinToken) -> Value {
    json!({
        "id": t.id, "state": t.state, "labels": t.labels,
        "created_at": t.created_at, "expires_at": t.expires_at,
        "used_at": t.used_at, "used_by_agent": t.used_by_agent, "revoked_at": t.revoked_at,
    })
}

fn api_token_json(t: &ApiToken) -> Value {
    json!({
        "id": t.id, "name": t.name, "role": t.role, "created_at": t.created_at,
        "revoked_at": t.revoked_at, "last_used_at": t.last_used_at,
    })
}

fn audit_json(e: &AuditEntry) -> Value {
    json!({ "at_ms": e.at_ms, "actor": e.actor, "action": e.action, "target": e.target, "result": e.result })
}

fn agent_json(a: &Agent) -> Value {
    let facts = a.facts.clone().unwrap_or_default();
    let metrics = a.metrics.as_ref().map(|m| {
        json!({
            "sampled_at": a.metrics_sampled_at,
            "cpu_percent": m.cpu_percent,
            "memory_total_bytes": m.memory_total_bytes, "memory_used_bytes": m.memory_used_bytes,
            "swap_total_bytes": m.swap_total_bytes, "swap_used_bytes": m.swap_used_bytes,
            "load": [m.load_1, m.load_5, m.load_15],
            "uptime_seconds": m.uptime_seconds,
            "filesystems": m.filesystems.iter().map(|f| json!({
                "mount_point": f.mount_point, "file_system": f.file_system,
                "total_bytes": f.total_bytes, "available_bytes": f.available_bytes,
            })).collect::<Vec<_>>(),
            "interfaces": m.interfaces.iter().map(|i| json!({
                "name": i.name, "rx_bytes": i.rx_bytes, "tx_bytes": i.tx_bytes,
            })).collect::<Vec<_>>(),
        })
    });
    json!({
        "id": a.id, "hostname": a.hostname, "status": a.status, "labels": a.labels,
        "enrolled_at": a.enrolled_at, "revoked_at": a.revoked_at,
        "last_seen_at": a.last_seen_at, "connected_since": a.connected_since, "sessions": a.sessions,
        "desired_generation": a.desired_generation, "applied_generation": a.applied_generation,
        "version": a.version,
        "facts": { "hostname": facts.hostname, "os": facts.os, "kernel": facts.kernel, "arch": facts.arch, "addresses": facts.addresses },
        "certificate": { "serial": a.certificate_serial, "not_after": a.certificate_not_after },
        "domain": a.domain,
        "metrics": metrics,
    })
}
