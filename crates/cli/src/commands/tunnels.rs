//! `gatehousectl tunnel …`: Cloudflare Tunnels on agents.

use anyhow::bail;
use clap::{Args, Subcommand};
use gatehouse_proto::names::{AgentId, TunnelName, TunnelRoute};
use gatehouse_proto::v1::*;

use crate::Output;
use crate::args::confirm;
use crate::client::{Client, explain};
use crate::output::{self, say, time};
use gatehouse_proto::v1 as pb;

/// Origin options for the routes of one command.
#[derive(Debug, Clone, Args)]
pub struct OriginOptions {
    /// Do not verify the origin's TLS certificate.
    #[arg(long)]
    no_tls_verify: bool,
    /// The Host header sent to the origin.
    #[arg(long)]
    http_host_header: Option<String>,
    /// The server name expected in the origin's certificate (and sent as SNI).
    #[arg(long)]
    origin_server_name: Option<String>,
    /// How long cloudflared waits to connect to the origin (for example 10s).
    #[arg(long, value_parser = parse_seconds)]
    connect_timeout: Option<u32>,
}

fn parse_seconds(text: &str) -> Result<u32, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration like 10s: {e}"))?;
    u32::try_from(d.as_secs())
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| format!("{text:?} must be at least one second"))
}

#[derive(Debug, Subcommand)]
pub enum TunnelCommand {
    /// Create a tunnel on an agent (or finish creating it): the tunnel at Cloudflare, its
    /// ingress, one proxied CNAME per hostname, and its unit on the host.
    Create {
        /// The agent that runs the tunnel.
        #[arg(long)]
        agent: String,
        /// The tunnel's name: [a-z0-9-] (it names the unit gatehouse-tunnel@NAME.service).
        #[arg(long)]
        name: String,
        /// The Cloudflare account (default: the one whose zones hold the routes).
        #[arg(long)]
        account: Option<String>,
        /// HOST=SERVICE (repeatable): SERVICE is scheme://host[:port], http_status:NNN or
        /// site:NAME (a gatehouse site on the same host).
        #[arg(long = "route", value_name = "HOST=SERVICE")]
        routes: Vec<String>,
        /// Apply to every --route of this command (use `route add` for per-route options).
        #[command(flatten)]
        origin: OriginOptions,
    },
    /// Routes of a tunnel.
    #[command(subcommand)]
    Route(RouteCommand),
    /// List tunnels.
    List {
        /// Only this agent's.
        #[arg(long)]
        agent: Option<String>,
    },
    /// Show a tunnel: the host's view and Cloudflare's side by side.
    Show(Which),
    /// Print the tunnel's journal from its host.
    Logs {
        #[command(flatten)]
        which: Which,
        /// How many of the last lines.
        #[arg(long, short = 'n', default_value_t = 100)]
        lines: u32,
        /// Keep printing new lines until interrupted.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Restart the tunnel on its host.
    Restart(Which),
    /// Give the tunnel a new secret: a new token on the host, a restart, and wait until it is
    /// ready again (the old token opens no new connections).
    Rotate(Which),
    /// Delete the tunnel: the unit and token on the host, then its connections, its DNS
    /// records (only gatehouse's own) and the tunnel at Cloudflare.
    Delete {
        #[command(flatten)]
        which: Which,
        /// Do not wait for the host to stop the tunnel (a host that is gone for good).
        #[arg(long)]
        force: bool,
        /// Do not ask.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RouteCommand {
    /// Add a route (or replace the one for the same hostname).
    Add {
        #[command(flatten)]
        which: Which,
        /// HOST=SERVICE.
        #[arg(value_name = "HOST=SERVICE")]
        route: String,
        #[command(flatten)]
        origin: OriginOptions,
    },
    /// Remove the route for a hostname (and its DNS record, when gatehouse made it).
    Remove {
        #[command(flatten)]
        which: Which,
        hostname: String,
    },
}

/// A tunnel by name; `--agent` is needed only when several agents have one of that name.
#[derive(Debug, Clone, Args)]
pub struct Which {
    /// The tunnel's name.
    name: String,
    /// The agent that runs it.
    #[arg(long)]
    agent: Option<String>,
}

fn route_message(text: &str, o: &OriginOptions) -> anyhow::Result<pb::TunnelRoute> {
    let parsed: TunnelRoute = text.parse()?;
    Ok(pb::TunnelRoute {
        hostname: parsed.hostname.to_string(),
        service: parsed.service.to_string(),
        no_tls_verify: o.no_tls_verify,
        http_host_header: o.http_host_header.clone().unwrap_or_default(),
        origin_server_name: o.origin_server_name.clone().unwrap_or_default(),
        connect_timeout_seconds: o.connect_timeout.unwrap_or(0),
    })
}

/// Checks the arguments before connecting: names, hostnames and services.
pub fn check(cmd: &TunnelCommand) -> anyhow::Result<()> {
    let which = |w: &Which| -> anyhow::Result<()> {
        w.name.parse::<TunnelName>()?;
        if let Some(a) = &w.agent {
            a.parse::<AgentId>()?;
        }
        Ok(())
    };
    match cmd {
        TunnelCommand::Create {
            agent,
            name,
            routes,
            origin,
            ..
        } => {
            agent.parse::<AgentId>()?;
            name.parse::<TunnelName>()?;
            for r in routes {
                route_message(r, origin)?;
            }
        }
        TunnelCommand::Route(RouteCommand::Add {
            which: w,
            route,
            origin,
        }) => {
            which(w)?;
            route_message(route, origin)?;
        }
        TunnelCommand::Route(RouteCommand::Remove { which: w, hostname }) => {
            which(w)?;
            hostname.parse::<gatehouse_proto::names::DomainName>()?;
        }
        TunnelCommand::Show(w) | TunnelCommand::Restart(w) | TunnelCommand::Rotate(w) => which(w)?,
        TunnelCommand::Logs { which: w, .. } | TunnelCommand::Delete { which: w, .. } => which(w)?,
        TunnelCommand::List { agent } => {
            if let Some(a) = agent {
                a.parse::<AgentId>()?;
            }
        }
    }
    Ok(())
}

/// The agent that runs the tunnel `which` names.
async fn agent_of(client: &mut Client, which: &Which) -> anyhow::Result<String> {
    if let Some(a) = &which.agent {
        return Ok(a.clone());
    }
    let all = client
        .list_tunnels(ListTunnelsRequest::default())
        .await
        .map_err(explain)?
        .into_inner()
        .tunnels;
    let agents: Vec<String> = all
        .into_iter()
        .filter(|t| t.name == which.name)
        .map(|t| t.agent_id)
        .collect();
    match agents.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("no tunnel {}: see gatehousectl tunnel list", which.name),
        _ => bail!(
            "several agents have a tunnel {}: choose one with --agent ({})",
            which.name,
            agents.join(", ")
        ),
    }
}

pub async fn run(client: &mut Client, cmd: TunnelCommand, out: Output) -> anyhow::Result<()> {
    let get = |agent: String, w: &Which| GetTunnelRequest {
        agent_id: agent,
        name: w.name.clone(),
    };
    let tunnel = match cmd {
        TunnelCommand::Create {
            agent,
            name,
            account,
            routes,
            origin,
        } => {
            let routes = routes
                .iter()
                .map(|r| route_message(r, &origin))
                .collect::<anyhow::Result<Vec<_>>>()?;
            client
                .create_tunnel(CreateTunnelRequest {
                    agent_id: agent,
                    name,
                    account: account.unwrap_or_default(),
                    routes,
                })
                .await
        }
        TunnelCommand::Route(RouteCommand::Add {
            which,
            route,
            origin,
        }) => {
            let agent = agent_of(client, &which).await?;
            client
                .add_tunnel_route(TunnelRouteRequest {
                    agent_id: agent,
                    name: which.name.clone(),
                    route: Some(route_message(&route, &origin)?),
                })
                .await
        }
        TunnelCommand::Route(RouteCommand::Remove { which, hostname }) => {
            let agent = agent_of(client, &which).await?;
            client
                .remove_tunnel_route(TunnelRouteRequest {
                    agent_id: agent,
                    name: which.name.clone(),
                    route: Some(pb::TunnelRoute {
                        hostname,
                        ..Default::default()
                    }),
                })
                .await
        }
        TunnelCommand::List { agent } => {
            let tunnels = client
                .list_tunnels(ListTunnelsRequest {
                    agent_id: agent.unwrap_or_default(),
                })
                .await
                .map_err(explain)?
                .into_inner()
                .tunnels;
            output::list(
                out,
                &tunnels,
                &["AGENT", "TUNNEL", "ROUTES", "STATE", "HOST", "READY"],
                |t| {
                    let host = t.host.clone().unwrap_or_default();
                    vec![
                        t.agent_id.clone(),
                        t.name.clone(),
                        t.routes
                            .iter()
                            .map(|r| r.hostname.as_str())
                            .collect::<Vec<_>>()
                            .join(","),
                        t.state.clone(),
                        if host.active_state.is_empty() {
                            "-".into()
                        } else {
                            host.active_state.clone()
                        },
                        ready_text(&host),
                    ]
                },
            );
            return Ok(());
        }
        TunnelCommand::Show(which) => {
            let agent = agent_of(client, &which).await?;
            client.get_tunnel(get(agent, &which)).await
        }
        TunnelCommand::Restart(which) => {
            let agent = agent_of(client, &which).await?;
            client.restart_tunnel(get(agent, &which)).await
        }
        TunnelCommand::Rotate(which) => {
            let agent = agent_of(client, &which).await?;
            client.rotate_tunnel(get(agent, &which)).await
        }
        TunnelCommand::Delete { which, force, yes } => {
            let agent = agent_of(client, &which).await?;
            confirm(
                &format!(
                    "Delete tunnel {} on agent {agent}, its DNS records and the tunnel at Cloudflare?",
                    which.name
                ),
                yes,
            )?;
            let gone = client
                .delete_tunnel(DeleteTunnelRequest {
                    agent_id: agent,
                    name: which.name.clone(),
                    force,
                })
                .await
                .map_err(explain)?
                .into_inner();
            output::show(out, &gone, || {
                say!("deleted tunnel {} on agent {}", gone.name, gone.agent_id)
            });
            return Ok(());
        }
        TunnelCommand::Logs {
            which,
            lines,
            follow,
        } => {
            let agent = agent_of(client, &which).await?;
            let mut stream = client
                .get_tunnel_logs(GetTunnelLogsRequest {
                    agent_id: agent,
                    name: which.name.clone(),
                    lines,
                    follow,
                })
                .await
                .map_err(explain)?
                .into_inner();
            while let Some(batch) = stream.message().await.map_err(explain)? {
                for line in &batch.lines {
                    if out == Output::Json {
                        output::json_line(line);
                    } else {
                        say!("{line}");
                    }
                }
            }
            return Ok(());
        }
    };
    let tunnel = tunnel.map_err(explain)?.into_inner();
    output::show(out, &tunnel, || print_tunnel(&tunnel));
    Ok(())
}

fn ready_text(h: &TunnelStatus) -> String {
    match (h.active_state.as_str(), h.ready) {
        ("", _) => "-".into(),
        (_, true) => format!("yes ({})", h.ready_connections),
        _ => "no".into(),
    }
}

fn print_tunnel(t: &Tunnel) {
    say!(
        "tunnel {} on agent {} (Cloudflare account {}, id {})",
        t.name,
        t.agent_id,
        t.account,
        if t.tunnel_id.is_empty() {
            "-"
        } else {
            &t.tunnel_id
        }
    );
    say!(
        "state: {}   config version {}   revision {}   created {}",
        t.state,
        t.config_version,
        t.revision,
        time(t.created_at)
    );
    say!("routes:");
    for r in &t.routes {
        let mut opts = Vec::new();
        if r.no_tls_verify {
            opts.push("no-tls-verify".to_owned());
        }
        if !r.http_host_header.is_empty() {
            opts.push(format!("host header {}", r.http_host_header));
        }
        if !r.origin_server_name.is_empty() {
            opts.push(format!("server name {}", r.origin_server_name));
        }
        if r.connect_timeout_seconds > 0 {
            opts.push(format!("connect timeout {}s", r.connect_timeout_seconds));
        }
        let dns = if t.dns_records.contains(&r.hostname) {
            "CNAME"
        } else {
            "no DNS record yet"
        };
        say!(
            "  {} -> {} ({dns}){}",
            r.hostname,
            r.service,
            if opts.is_empty() {
                String::new()
            } else {
                format!(" [{}]", opts.join(", "))
            }
        );
    }
    say!("  (anything else) -> http_status:404");
    match &t.host {
        Some(h) => {
            say!(
                "host: {} ({}), pid {}, restarts {} (watchdog {}), metrics 127.0.0.1:{}",
                h.active_state,
                h.sub_state,
                h.main_pid,
                h.restarts,
                h.watchdog_restarts,
                h.metrics_port
            );
            say!(
                "      ready: {}, connector {}{}",
                ready_text(h),
                if h.connector_id.is_empty() {
                    "-"
                } else {
                    &h.connector_id
                },
                if h.error.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", h.error)
                }
            );
        }
        None => say!("host: not reported yet ({} {})", t.host_state, t.host_error),
    }
    if !t.host_error.is_empty() {
        say!("host apply: {} — {}", t.host_state, t.host_error);
    }
    if let Some(cf) = &t.cloudflare {
        if cf.fetched {
            let mut connectors: Vec<&str> = cf
                .connections
                .iter()
                .map(|c| c.client_id.as_str())
                .collect();
            connectors.dedup();
            say!(
                "cloudflare: {}, {} connections (connectors: {})",
                cf.status,
                cf.connections.len(),
                if connectors.is_empty() {
                    "-".into()
                } else {
                    connectors.join(", ")
                }
            );
        } else {
            say!("cloudflare: not reachable ({})", cf.error);
        }
    }
    for w in &t.warnings {
        say!("warning: {w}");
    }
}
