//! `gatehousectl site …`: Caddy sites on agents.

use anyhow::{anyhow, bail};
use clap::{Subcommand, ValueEnum};
use gatehouse_proto::names::{DomainName, ResourceName};
use gatehouse_proto::v1::*;

use crate::Output;
use crate::args::confirm;
use crate::client::{Client, explain};
use crate::output::{self, say, time};

/// How a site gets its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// A certificate from the controller's internal CA; its key is generated on the host.
    Internal,
    /// An existing certificate on the agent (--certificate NAME).
    Files,
    /// Caddy gets its own certificate by ACME (--acme-ca to choose the CA).
    CaddyManaged,
    /// Caddy's own local CA.
    CaddyInternal,
    /// A certificate the controller gets by ACME (DNS-01 through Cloudflare) with this
    /// account; its key is generated on the host.
    Acme(ResourceName),
}

/// Parses `--tls`.
fn parse_tls(text: &str) -> Result<TlsMode, String> {
    Ok(match text {
        "internal" => TlsMode::Internal,
        "files" => TlsMode::Files,
        "caddy-managed" => TlsMode::CaddyManaged,
        "caddy-internal" => TlsMode::CaddyInternal,
        other => match other.strip_prefix("acme:") {
            Some(account) => {
                TlsMode::Acme(account.parse().map_err(|e| format!("acme:ACCOUNT: {e}"))?)
            }
            None => {
                return Err(format!(
                    "{other:?}: use internal, files, caddy-managed, caddy-internal or acme:ACCOUNT"
                ));
            }
        },
    })
}

/// Key types for certificates whose keys are made on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Key {
    /// ECDSA P-256.
    P256,
    /// RSA 2048.
    Rsa2048,
}

// Parsed once per run: the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum SiteCommand {
    /// Create or replace a site on an agent: a Caddy reverse proxy with TLS.
    Create {
        /// The agent that serves the site.
        #[arg(long)]
        agent: String,
        /// A domain of the site (repeatable); the first names the site by default.
        #[arg(
            long = "domain",
            required_unless_present = "zone",
            conflicts_with = "zone"
        )]
        domains: Vec<String>,
        /// Give the site a name in this Cloudflare zone instead (--name is then the label;
        /// without it a free agent-<10 characters> name is picked).
        #[arg(long)]
        zone: Option<String>,
        /// The Cloudflare account of the zone (default: the only one).
        #[arg(long, requires = "zone")]
        account: Option<String>,
        /// Proxied through Cloudflare, with a Cloudflare Origin CA certificate (the default).
        #[arg(long, requires = "zone", conflicts_with = "dns_only")]
        proxied: bool,
        /// DNS only: Caddy gets its own certificate by ACME.
        #[arg(long, requires = "zone")]
        dns_only: bool,
        /// The host's IPv4 address for the A record (default: the one the agent reported).
        #[arg(long, requires = "zone")]
        address: Option<String>,
        /// An IPv6 address for an AAAA record (default: a public one the agent reported).
        #[arg(long, requires = "zone")]
        address_v6: Option<String>,
        /// Where requests go, host:port (repeatable, load-balanced).
        #[arg(long = "upstream", required = true)]
        upstreams: Vec<String>,
        /// How the site gets its certificate.
        /// internal, files, caddy-managed, caddy-internal or acme:ACCOUNT.
        #[arg(long, default_value = "internal", value_parser = parse_tls)]
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
        /// Let in only the addresses of this allowlist (repeatable); every other client gets 403.
        #[arg(long = "allow", value_name = "LIST")]
        allow: Vec<String>,
        /// With --allow: a reverse proxy in front of Caddy whose CF-Connecting-IP names the
        /// client (repeatable; loopback, and Cloudflare when proxied, are trusted already).
        #[arg(long = "trusted-proxy", value_name = "CIDR", requires = "allow")]
        trusted_proxies: Vec<String>,
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
        allow,
        trusted_proxies,
        key_type,
        acme_ca,
        acme_ca_root,
        zone,
        account,
        proxied: _,
        dns_only,
        address,
        address_v6,
    } = cmd
    else {
        return Ok(None);
    };
    if let Some(zone) = zone {
        return cloudflare_request(
            cmd,
            zone,
            account.clone(),
            *dns_only,
            address.clone(),
            address_v6.clone(),
            name.clone(),
        )
        .map(Some);
    }
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
        TlsMode::Internal | TlsMode::Acme(_) => site_tls::Mode::Certificate(name.to_string()),
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
        allow: allow.clone(),
        trusted_proxies: trusted_proxies.clone(),
    };
    // The same rules the controller and the agent apply, checked here first.
    gatehouse_proto::spec::Site::try_from(&site).map_err(|e| anyhow!("{}", e.reason))?;
    Ok(Some(PutSiteRequest {
        agent_id: agent.clone(),
        site: Some(site),
        internal_certificate: *tls == TlsMode::Internal,
        certificate_issuer: match tls {
            TlsMode::Acme(account) => format!("acme:{account}"),
            _ => String::new(),
        },
        cloudflare: None,
        key_type: match key_type {
            Key::P256 => KeyType::P256,
            Key::Rsa2048 => KeyType::Rsa2048,
        } as i32,
    }))
}

/// A site named in a Cloudflare zone: the controller picks the name and the TLS mode.
fn cloudflare_request(
    cmd: &SiteCommand,
    zone: &str,
    account: Option<String>,
    dns_only: bool,
    address: Option<String>,
    address_v6: Option<String>,
    label: Option<String>,
) -> anyhow::Result<PutSiteRequest> {
    let SiteCommand::Create {
        agent,
        upstreams,
        tls,
        certificate,
        port,
        headers,
        allow,
        trusted_proxies,
        ..
    } = cmd
    else {
        unreachable!("only create has a zone")
    };
    let acme = match tls {
        TlsMode::Acme(account) => Some(account),
        TlsMode::Internal => None,
        _ => bail!(
            "with --zone the certificate comes from the Origin CA (--proxied), Caddy's ACME \
             (--dns-only), or the controller's ACME (--tls acme:ACCOUNT)"
        ),
    };
    if certificate.is_some() {
        bail!("--certificate does not go with --zone");
    }
    let zone_name: DomainName = zone.parse().map_err(|e| anyhow!("--zone: {e}"))?;
    if let Some(l) = &label {
        l.parse::<ResourceName>()
            .map_err(|e| anyhow!("--name: {e}"))?;
    }
    let mut response_headers = std::collections::HashMap::new();
    for h in headers {
        let (k, v) = h
            .split_once('=')
            .ok_or_else(|| anyhow!("--header {h:?}: must look like Name=value"))?;
        response_headers.insert(k.to_owned(), v.to_owned());
    }
    let site = SiteSpec {
        name: label.clone().unwrap_or_default(),
        domains: vec![],
        upstreams: upstreams.clone(),
        tls: None,
        response_headers,
        port: u32::from(*port),
        allow: allow.clone(),
        trusted_proxies: trusted_proxies.clone(),
    };
    // Check upstreams and headers with the same rules, the domain being the zone for now.
    let mut probe = site.clone();
    probe.name = label.clone().unwrap_or_else(|| "probe".into());
    probe.domains = vec![zone_name.to_string()];
    probe.tls = Some(SiteTls {
        mode: Some(site_tls::Mode::CaddyInternal(true)),
    });
    gatehouse_proto::spec::Site::try_from(&probe).map_err(|e| anyhow!("{}", e.reason))?;
    Ok(PutSiteRequest {
        agent_id: agent.clone(),
        site: Some(site),
        internal_certificate: false,
        key_type: 0,
        cloudflare: Some(CloudflareSite {
            account: account.unwrap_or_default(),
            zone: zone_name.to_string(),
            name: label.unwrap_or_default(),
            proxied: !dns_only,
            address: address.unwrap_or_default(),
            address_v6: address_v6.unwrap_or_default(),
        }),
        certificate_issuer: acme.map(|a| format!("acme:{a}")).unwrap_or_default(),
    })
}

/// Checks arguments before connecting.
pub fn check(cmd: &SiteCommand) -> anyhow::Result<()> {
    site_request(cmd).map(|_| ())
}

pub async fn run(client: &mut Client, cmd: SiteCommand, out: Output) -> anyhow::Result<()> {
    if let Some(mut request) = site_request(&cmd)? {
        if let Some(cf) = request.cloudflare.as_mut()
            && cf.account.is_empty()
        {
            let accounts = client
                .list_cloudflare_accounts(ListCloudflareAccountsRequest {})
                .await
                .map_err(explain)?
                .into_inner()
                .accounts;
            match accounts.as_slice() {
                [one] => cf.account = one.name.clone(),
                [] => {
                    bail!("no Cloudflare account: add one with gatehousectl cloudflare account add")
                }
                _ => bail!("several Cloudflare accounts: choose one with --account"),
            }
        }
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
            output::list(
                out,
                &sites,
                &["AGENT", "SITE", "DOMAINS", "TLS", "STATE", "ERROR"],
                |s| {
                    let spec = s.spec.clone().unwrap_or_default();
                    vec![
                        s.agent_id.clone(),
                        spec.name.clone(),
                        spec.domains.join(","),
                        tls_text(&spec),
                        s.state.clone(),
                        s.error.clone(),
                    ]
                },
            );
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

fn print_site(s: &Site, out: Output) -> anyhow::Result<()> {
    if out == Output::Json {
        output::json(s);
        return Ok(());
    }
    let spec = s.spec.clone().unwrap_or_default();
    say!("site:        {} (agent {})", spec.name, s.agent_id);
    say!("domains:     {}", spec.domains.join(", "));
    say!("upstreams:   {}", spec.upstreams.join(", "));
    say!("tls:         {}", tls_text(&spec));
    say!(
        "port:        {}",
        if spec.port == 0 { 443 } else { spec.port }
    );
    if !s.fqdn.is_empty() {
        say!("cloudflare:  {} ({})", s.fqdn, s.cloudflare_state);
    }
    say!("generation:  {}", s.generation);
    say!(
        "state:       {}{}",
        s.state,
        if s.error.is_empty() {
            String::new()
        } else {
            format!(": {}", s.error)
        }
    );
    if let Some(c) = &s.certificate {
        say!(
            "certificate: serial {}, expires {}, {}",
            c.serial,
            time(c.not_after),
            c.path
        );
    }
    Ok(())
}
