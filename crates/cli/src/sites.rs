//! `gatehousectl site …` and `gatehousectl cert …`.

use anyhow::{anyhow, bail};
use clap::{Subcommand, ValueEnum};
use gatehouse_proto::names::{DomainName, ResourceName};
use gatehouse_proto::v1::*;
use serde_json::{Value, json};

use crate::Output;
use crate::commands::{Client, confirm, explain};
use crate::output::{self, time};

/// How a site gets its certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsMode {
    /// A certificate from the controller's internal CA; its key is generated on the host.
    Internal,
    /// An existing certificate on the agent (--certificate NAME).
    Files,
    /// Caddy gets its own certificate by ACME (--acme-ca to choose the CA).
    CaddyManaged,
    /// Caddy's own local CA.
    CaddyInternal,
}

/// Key types for certificates whose keys are made on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Key {
    /// ECDSA P-256.
    P256,
    /// RSA 2048.
    Rsa2048,
}

#[derive(Debug, Subcommand)]
pub enum SiteCommand {
    /// Create or replace a site on an agent: a Caddy reverse proxy with TLS.
    Create {
        /// The agent that serves the site.
        #[arg(long)]
        agent: String,
        /// A domain of the site (repeatable); the first names the site by default.
        #[arg(long = "domain", required = true)]
        domains: Vec<String>,
        /// Where requests go, host:port (repeatable, load-balanced).
        #[arg(long = "upstream", required = true)]
        upstreams: Vec<String>,
        /// How the site gets its certificate.
        #[arg(long, value_enum, default_value_t = TlsMode::Internal)]
        tls: TlsMode,
        /// The certificate to use with --tls files (default: the site's name).
        #[arg(long)]
        certificate: Option<String>,
        /// The site's name (default: from the first domain).
        #[arg(long)]
        name: Option<String>,
        /// The port Caddy serves it on.
        #[arg(long, default_value_t = 443)]
        port: u16,
        /// A response header, Name=value (repeatable).
        #[arg(long = "header", value_name = "NAME=VALUE")]
        headers: Vec<String>,
        /// The key type of the certificate made with --tls internal.
        #[arg(long, value_enum, default_value_t = Key::P256)]
        key_type: Key,
        /// The ACME directory Caddy uses with --tls caddy-managed.
        #[arg(long)]
        acme_ca: Option<String>,
        /// A PEM file on the host with that CA's root, for private CAs.
        #[arg(long)]
        acme_ca_root: Option<String>,
    },
    /// List sites with their state on the agents.
    List {
        /// Only this agent's sites.
        #[arg(long)]
        agent: Option<String>,
    },
    /// Show one site.
    Show {
        #[arg(long)]
        agent: String,
        name: String,
    },
    /// Delete a site (and its certificate, when no other site uses it).
    Delete {
        #[arg(long)]
        agent: String,
        name: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Ask the agent for a new key and certificate now.
    Reissue {
        #[arg(long)]
        agent: String,
        name: String,
    },
}

/// Builds the request, checking every name before anything is sent.
fn site_request(cmd: &SiteCommand) -> anyhow::Result<Option<PutSiteRequest>> {
    let SiteCommand::Create {
        agent,
        domains,
        upstreams,
        tls,
        certificate,
        name,
        port,
        headers,
        key_type,
        acme_ca,
        acme_ca_root,
    } = cmd
    else {
        return Ok(None);
    };
    let first: DomainName = domains[0].parse().map_err(|e| anyhow!("--domain: {e}"))?;
    let name = match name {
        Some(n) => n
            .parse::<ResourceName>()
            .map_err(|e| anyhow!("--name: {e}"))?,
        None => ResourceName::from_domain(&first),
    };
    if certificate.is_some() && *tls != TlsMode::Files {
        bail!("--certificate goes with --tls files");
    }
    if (acme_ca.is_some() || acme_ca_root.is_some()) && *tls != TlsMode::CaddyManaged {
        bail!("--acme-ca and --acme-ca-root go with --tls caddy-managed");
    }
    let mode = match tls {
        TlsMode::Internal => site_tls::Mode::Certificate(name.to_string()),
        TlsMode::Files => {
            site_tls::Mode::Certificate(certificate.clone().unwrap_or_else(|| name.to_string()))
        }
        TlsMode::CaddyManaged => site_tls::Mode::CaddyManaged(CaddyManaged {
            acme_ca: acme_ca.clone().unwrap_or_default(),
            acme_ca_root: acme_ca_root.clone().unwrap_or_default(),
        }),
        TlsMode::CaddyInternal => site_tls::Mode::CaddyInternal(true),
    };
    let mut response_headers = std::collections::HashMap::new();
    for h in headers {
        let (k, v) = h
            .split_once('=')
            .ok_or_else(|| anyhow!("--header {h:?}: must look like Name=value"))?;
        response_headers.insert(k.to_owned(), v.to_owned());
    }
    let site = SiteSpec {
        name: name.to_string(),
        domains: domains.clone(),
        upstreams: upstreams.clone(),
        tls: Some(SiteTls { mode: Some(mode) }),
        response_headers,
        port: u32::from(*port),
    };
    // The same rules the controller and the agent apply, checked here first.
    gatehouse_proto::spec::Site::try_from(&site).map_err(|e| anyhow!("{}", e.reason))?;
    Ok(Some(PutSiteRequest {
        agent_id: agent.clone(),
        site: Some(site),
        internal_certificate: *tls == TlsMode::Internal,
        key_type: match key_type {
            Key::P256 => KeyType::P256,
            Key::Rsa2048 => KeyType::Rsa2048,
        } as i32,
    }))
}

/// Checks arguments before connecting.
pub fn check(cmd: &SiteCommand) -> anyhow::Result<()> {
    site_request(cmd).map(|_| ())
}

pub async fn site(client: &mut Client, cmd: SiteCommand, out: Output) -> anyhow::Result<()> {
    if let Some(request) = site_request(&cmd)? {
        let site = client
            .put_site(request)
            .await
            .map_err(explain)?
            .into_inner();
        return print_site(&site, out);
    }
    match cmd {
        SiteCommand::List { agent } => {
            let sites = client
                .list_sites(ListSitesRequest {
                    agent_id: agent.unwrap_or_default(),
                })
                .await
                .map_err(explain)?
                .into_inner()
                .sites;
            if out == Output::Json {
                output::json(&Value::Array(sites.iter().map(site_json).collect()));
            } else {
                let rows = sites
                    .iter()
                    .map(|s| {
                        let spec = s.spec.clone().unwrap_or_default();
                        vec![
                            s.agent_id.clone(),
                            spec.name.clone(),
                            spec.domains.join(","),
                            tls_text(&spec),
                            s.state.clone(),
                            s.error.clone(),
                        ]
                    })
                    .collect::<Vec<_>>();
                output::table(
                    &["AGENT", "SITE", "DOMAINS", "TLS", "STATE", "ERROR"],
                    &rows,
                );
            }
            Ok(())
        }
        SiteCommand::Show { agent, name } => {
            let site = client
                .get_site(GetSiteRequest {
                    agent_id: agent,
                    name,
                })
                .await
                .map_err(explain)?
                .into_inner();
            print_site(&site, out)
        }
        SiteCommand::Delete { agent, name, yes } => {
            confirm(&format!("Delete site {name} on agent {agent}?"), yes)?;
            let site = client
                .delete_site(GetSiteRequest {
                    agent_id: agent,
                    name,
                })
                .await
                .map_err(explain)?
                .into_inner();
            print_site(&site, out)
        }
        SiteCommand::Create { .. } => unreachable!("handled above"),
    }
}

pub async fn cert(client: &mut Client, cmd: CertCommand, out: Output) -> anyhow::Result<()> {
    match cmd {
        CertCommand::Reissue { agent, name } => {
            let a = client
                .reissue_certificate(ReissueCertificateRequest {
                    agent_id: agent.clone(),
                    name: name.clone(),
                })
                .await
                .map_err(explain)?
                .into_inner();
            if out == Output::Json {
                output::json(
                    &json!({"agent_id": a.id, "certificate": name, "desired_generation": a.desired_generation}),
                );
            } else {
                println!(
                    "certificate {name} on agent {agent}: a new key and certificate are on their way (generation {})",
                    a.desired_generation
                );
            }
            Ok(())
        }
    }
}

fn tls_text(spec: &SiteSpec) -> String {
    match spec.tls.as_ref().and_then(|t| t.mode.as_ref()) {
        Some(site_tls::Mode::Certificate(c)) => format!("files:{c}"),
        Some(site_tls::Mode::CaddyManaged(m)) if !m.acme_ca.is_empty() => {
            format!("caddy-managed:{}", m.acme_ca)
        }
        Some(site_tls::Mode::CaddyManaged(_)) => "caddy-managed".into(),
        Some(site_tls::Mode::CaddyInternal(_)) => "caddy-internal".into(),
        None => "-".into(),
    }
}

pub fn inventory_json(c: &CertificateInventory) -> Value {
    json!({
        "name": c.name, "serial": c.serial, "not_after": c.not_after, "sha256": c.sha256,
        "path": c.path, "revision": c.revision, "domains": c.domains,
    })
}

fn site_json(s: &Site) -> Value {
    let spec = s.spec.clone().unwrap_or_default();
    let mut headers: Vec<(&String, &String)> = spec.response_headers.iter().collect();
    headers.sort();
    json!({
        "agent_id": s.agent_id, "name": spec.name, "domains": spec.domains,
        "upstreams": spec.upstreams, "tls": tls_text(&spec), "port": spec.port,
        "headers": headers.into_iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
        "generation": s.generation, "state": s.state, "error": s.error,
        "certificate": s.certificate.as_ref().map(inventory_json),
    })
}

fn print_site(s: &Site, out: Output) -> anyhow::Result<()> {
    if out == Output::Json {
        output::json(&site_json(s));
        return Ok(());
    }
    let spec = s.spec.clone().unwrap_or_default();
    println!("site:        {} (agent {})", spec.name, s.agent_id);
    println!("domains:     {}", spec.domains.join(", "));
    println!("upstreams:   {}", spec.upstreams.join(", "));
    println!("tls:         {}", tls_text(&spec));
    println!(
        "port:        {}",
        if spec.port == 0 { 443 } else { spec.port }
    );
    println!("generation:  {}", s.generation);
    println!(
        "state:       {}{}",
        s.state,
        if s.error.is_empty() {
            String::new()
        } else {
            format!(": {}", s.error)
        }
    );
    if let Some(c) = &s.certificate {
        println!(
            "certificate: serial {}, expires {}, {}",
            c.serial,
            time(c.not_after),
            c.path
        );
    }
    Ok(())
}
