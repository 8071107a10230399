//! Sites: a host's Caddy sites, with their certificates and, for sites named in a Cloudflare
//! zone, their records there.

use gatehouse_proto::v1::*;

use super::agents::{agent_by_id, change_state, last_apply};
use super::certificates::certificate_source;
use super::{Audited, agent_id_arg};
use crate::Shared;
use crate::error::{Error, Result};
use crate::sites::{self, CertificateSource};
use crate::store::DesiredStateRow;

/// The sites of one agent as the API shows them.
async fn sites_of(shared: &Shared, agent_id: &str) -> Result<Vec<Site>> {
    let latest = shared
        .store
        .desired_latest(agent_id)
        .await?
        .unwrap_or_else(|| DesiredStateRow {
            generation: 0,
            state: DesiredState::default(),
            created_at: 0,
        });
    let (applied, _, results) = last_apply(shared, agent_id).await?;
    let inventory = shared.fleet.view(agent_id).certificates;
    let on_cloudflare: Vec<_> = shared
        .store
        .cloudflare_sites()
        .await?
        .into_iter()
        .filter(|r| r.agent_id == agent_id)
        .collect();
    let in_state: Vec<String> = latest.state.sites.iter().map(|s| s.name.clone()).collect();
    let mut out: Vec<Site> = latest
        .state
        .sites
        .into_iter()
        .map(|spec| {
            let (state, error) =
                sites::site_state(&spec.name, latest.generation, applied, &results);
            let cf = on_cloudflare.iter().find(|r| r.site == spec.name);
            Site {
                agent_id: agent_id.to_owned(),
                certificate: sites::site_certificate(&spec, &inventory),
                fqdn: cf.map(|r| r.fqdn.clone()).unwrap_or_default(),
                cloudflare_state: cf.map(|r| r.state.clone()).unwrap_or_default(),
                spec: Some(spec),
                generation: latest.generation,
                state,
                error,
            }
        })
        .collect();
    // A set-up at Cloudflare that stopped before the site reached the desired state.
    for row in on_cloudflare.iter().filter(|r| !in_state.contains(&r.site)) {
        out.push(Site {
            agent_id: agent_id.to_owned(),
            spec: Some(SiteSpec {
                name: row.site.clone(),
                domains: vec![row.fqdn.clone()],
                ..Default::default()
            }),
            generation: 0,
            state: "setting-up".into(),
            error: String::new(),
            certificate: None,
            fqdn: row.fqdn.clone(),
            cloudflare_state: row.state.clone(),
        });
    }
    Ok(out)
}

async fn site(shared: &Shared, agent_id: &str, name: &str) -> Result<Site> {
    sites_of(shared, agent_id)
        .await?
        .into_iter()
        .find(|s| s.spec.as_ref().is_some_and(|spec| spec.name == name))
        .ok_or_else(|| {
            Error::NotFound(format!(
                "no site {name:?} on agent {agent_id}: see gatehousectl site list"
            ))
        })
}

impl Audited for PutSiteRequest {
    type Response = Site;
    fn target(&self) -> String {
        let name = match (&self.cloudflare, self.site.as_ref()) {
            (Some(cf), _) if cf.name.is_empty() => format!("(new name in {})", cf.zone),
            (Some(cf), _) => cf.name.clone(),
            (None, Some(s)) => s.name.clone(),
            (None, None) => String::new(),
        };
        format!("agent:{}/site:{name}", self.agent_id)
    }
}

pub(super) async fn put_site(shared: &Shared, req: PutSiteRequest) -> Result<Site> {
    let id = agent_id_arg(&req.agent_id)?;
    let mut site_spec = req
        .site
        .clone()
        .ok_or_else(|| Error::Invalid("site: required".into()))?;
    let key_type = KeyType::try_from(req.key_type)
        .map_err(|_| Error::Invalid("key_type: unknown key type".into()))?;
    for list in &site_spec.allow {
        crate::allowlists::get(shared, list)
            .await
            .map_err(|e| e.reworded(|m| format!("allow: {m}")))?;
    }
    let proxied = req.cloudflare.as_ref().is_some_and(|cf| cf.proxied);
    site_spec.trusted_proxies = trusted_proxies(&shared.config(), &site_spec, proxied)?;
    let source = match &req.cloudflare {
        Some(cf) => {
            let agent = agent_by_id(shared, &id).await?;
            let addresses = agent.facts.map(|f| f.addresses).unwrap_or_default();
            let row = sites::cloudflare::set_up(shared, &id, cf, &addresses).await?;
            shared.store.agent_set_domain(&id, &row.fqdn).await?;
            site_spec.name = row.site.clone();
            site_spec.domains = vec![row.fqdn.clone()];
            let own_certificate = || SiteTls {
                mode: Some(site_tls::Mode::Certificate(row.site.clone())),
            };
            if !req.certificate_issuer.is_empty() {
                // The controller's own issuer (ACME by DNS-01 in this zone).
                site_spec.tls = Some(own_certificate());
                Some(certificate_source(shared, &req.certificate_issuer, key_type).await?)
            } else if cf.proxied {
                site_spec.tls = Some(own_certificate());
                Some(CertificateSource {
                    issuer: format!("origin-ca:{}", cf.account),
                    key_type: KeyType::P256,
                })
            } else {
                let config = shared.config();
                site_spec.tls = Some(SiteTls {
                    mode: Some(site_tls::Mode::CaddyManaged(CaddyManaged {
                        acme_ca: config.caddy_acme_ca.clone(),
                        acme_ca_root: config.caddy_acme_ca_root.clone(),
                    })),
                });
                None
            }
        }
        None if !req.certificate_issuer.is_empty() => {
            Some(certificate_source(shared, &req.certificate_issuer, key_type).await?)
        }
        None => req
            .internal_certificate
            .then(|| CertificateSource::internal(key_type)),
    };
    let name = site_spec.name.clone();
    change_state(shared, &id, |state| {
        sites::put_site(state, site_spec, source)
    })
    .await?;
    site(shared, &id, &name).await
}

/// The peers whose `CF-Connecting-IP` an allowlisted site believes: the operator's own, plus
/// loopback (cloudflared reaches the site from there, and a process on the host can reach the
/// upstream without Caddy anyway), plus Cloudflare's ranges when the site is proxied.
fn trusted_proxies(
    config: &crate::config::Config,
    site: &gatehouse_proto::v1::SiteSpec,
    proxied: bool,
) -> Result<Vec<String>> {
    let mut out: Vec<ipnet::IpNet> = Vec::new();
    for p in &site.trusted_proxies {
        let net: ipnet::IpNet = p.parse().map_err(|_| {
            Error::Invalid(format!(
                "trusted_proxies: {p:?} is not a CIDR like 10.0.0.0/8"
            ))
        })?;
        out.push(net.trunc());
    }
    if site.allow.is_empty() {
        if !out.is_empty() {
            return Err(Error::Invalid(
                "trusted_proxies: only an allowlisted site (--allow) uses them".into(),
            ));
        }
        return Ok(Vec::new());
    }
    out.extend(["127.0.0.1/32", "::1/128"].map(|n| n.parse::<ipnet::IpNet>().expect("valid")));
    if proxied {
        out.extend(config.cloudflare_ranges.iter().copied());
    }
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|n| seen.insert(*n));
    Ok(out.iter().map(ToString::to_string).collect())
}

pub(crate) async fn list_sites(
    shared: &Shared,
    req: ListSitesRequest,
) -> Result<ListSitesResponse> {
    let ids = match req.agent_id.as_str() {
        "" => shared
            .store
            .agent_list()
            .await?
            .into_iter()
            .map(|a| a.id)
            .collect(),
        id => vec![agent_id_arg(id)?],
    };
    let mut out = Vec::new();
    for id in ids {
        out.extend(sites_of(shared, &id).await?);
    }
    Ok(ListSitesResponse { sites: out })
}

pub(super) async fn get_site(shared: &Shared, req: GetSiteRequest) -> Result<Site> {
    site(shared, &agent_id_arg(&req.agent_id)?, &req.name).await
}

impl Audited for GetSiteRequest {
    type Response = Site;
    fn target(&self) -> String {
        format!("agent:{}/site:{}", self.agent_id, self.name)
    }
}

pub(super) async fn delete_site(shared: &Shared, req: GetSiteRequest) -> Result<Site> {
    let id = agent_id_arg(&req.agent_id)?;
    let before = site(shared, &id, &req.name).await?;
    sites::cloudflare::tear_down(shared, &id, &req.name).await?;
    if before.state == "setting-up" {
        // It never reached the desired state: removing it at Cloudflare is all.
        return Ok(Site {
            state: "deleted".into(),
            ..before
        });
    }
    let state = change_state(shared, &id, |state| sites::delete_site(state, &req.name)).await?;
    Ok(Site {
        generation: state.generation,
        state: "deleted".into(),
        ..before
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allowlisted_site_trusts_loopback_and_cloudflare_only_when_proxied() {
        let mut config = crate::config::Config::with_data_dir(std::path::Path::new("/x"));
        config.cloudflare_ranges = vec!["173.245.48.0/20".parse().unwrap()];
        let mut site = gatehouse_proto::v1::SiteSpec {
            allow: vec!["home".into()],
            trusted_proxies: vec!["10.1.2.3/8".into()],
            ..Default::default()
        };
        assert_eq!(
            trusted_proxies(&config, &site, false).unwrap(),
            ["10.0.0.0/8", "127.0.0.1/32", "::1/128"]
        );
        assert_eq!(
            trusted_proxies(&config, &site, true).unwrap(),
            ["10.0.0.0/8", "127.0.0.1/32", "::1/128", "173.245.48.0/20"]
        );
        site.trusted_proxies = vec!["10.0.0.0/8 }".into()];
        let bad = trusted_proxies(&config, &site, false).unwrap_err();
        assert!(bad.to_string().contains("trusted_proxies"), "{bad}");
        site.allow.clear();
        site.trusted_proxies = vec!["10.0.0.0/8".into()];
        let unused = trusted_proxies(&config, &site, false).unwrap_err();
        assert!(unused.to_string().contains("--allow"), "{unused}");
        site.trusted_proxies.clear();
        assert!(trusted_proxies(&config, &site, true).unwrap().is_empty());
    }
}
