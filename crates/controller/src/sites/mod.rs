//! Sites and their certificates as changes to a host's desired state. Pure: each function takes
//! the current state and returns the next one, or says why not. Their names in Cloudflare
//! zones are in [`cloudflare`].

pub mod cloudflare;

use gatehouse_proto::spec::{Site, SiteTls, ValidState};
use gatehouse_proto::v1::{
    CertificateInventory, CertificateSpec, DesiredState, ItemResult, KeyType, SiteSpec,
};

pub use crate::error::Refused;

/// Where a site's own certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSource {
    /// `internal` or `origin-ca:ACCOUNT`.
    pub issuer: String,
    pub key_type: KeyType,
}

impl CertificateSource {
    /// The controller's internal CA.
    pub fn internal(key_type: KeyType) -> Self {
        Self {
            issuer: "internal".into(),
            key_type,
        }
    }
}

/// Adds or replaces `site`. With `certificate`, the site's certificate (named by its
/// `tls.certificate`) is created or updated for the site's domains from that source.
pub fn put_site(
    mut state: DesiredState,
    site: SiteSpec,
    certificate: Option<CertificateSource>,
) -> Result<DesiredState, Refused> {
    let valid = Site::try_from(&site).map_err(|e| Refused(e.to_string()))?;
    if let SiteTls::Certificate(cert) = &valid.tls {
        let domains: Vec<String> = valid.domains.iter().map(ToString::to_string).collect();
        match state
            .certificates
            .iter_mut()
            .find(|c| c.name == cert.as_str())
        {
            Some(existing) if certificate.is_some() => {
                let source = certificate.clone().expect("checked");
                if existing.issuer != source.issuer {
                    return Err(Refused(format!(
                        "certificate {cert} exists with issuer {}; choose another name",
                        existing.issuer
                    )));
                }
                let key_type = source.key_type as i32;
                if existing.key_type != key_type {
                    // A new key type needs a new key.
                    existing.key_type = key_type;
                    existing.revision += 1;
                }
                existing.domains = domains;
            }
            Some(_) => {}
            None if certificate.is_some() => {
                let source = certificate.clone().expect("checked");
                state.certificates.push(CertificateSpec {
                    name: cert.to_string(),
                    domains,
                    issuer: source.issuer,
                    key_type: source.key_type as i32,
                    ..Default::default()
                })
            }
            None => {
                return Err(Refused(format!(
                    "certificate {cert} does not exist on this agent: use --tls internal, or \
                     create the certificate first"
                )));
            }
        }
    }
    state.sites.retain(|s| s.name != site.name);
    state.sites.push(site);
    state.sites.sort_by(|a, b| a.name.cmp(&b.name));
    check(&state)?;
    Ok(state)
}

/// Adds or updates a certificate that no site names (files for other software, or for sites
/// made later with `--tls files`). New domains or a new key type make a new revision.
pub fn put_certificate(
    mut state: DesiredState,
    name: &str,
    domains: Vec<String>,
    source: CertificateSource,
) -> Result<DesiredState, Refused> {
    match state.certificates.iter_mut().find(|c| c.name == name) {
        Some(existing) => {
            if existing.issuer != source.issuer {
                return Err(Refused(format!(
                    "certificate {name} exists with issuer {}; choose another name",
                    existing.issuer
                )));
            }
            if existing.domains != domains || existing.key_type != source.key_type as i32 {
                existing.domains = domains;
                existing.key_type = source.key_type as i32;
                existing.revision += 1;
            }
        }
        None => state.certificates.push(CertificateSpec {
            name: name.to_owned(),
            domains,
            issuer: source.issuer,
            key_type: source.key_type as i32,
            ..Default::default()
        }),
    }
    check(&state)?;
    Ok(state)
}

/// Removes a site, and its certificate when no other site uses it.
pub fn delete_site(mut state: DesiredState, name: &str) -> Result<DesiredState, Refused> {
    let Some(pos) = state.sites.iter().position(|s| s.name == name) else {
        return Err(Refused(format!(
            "no site {name:?} on this agent: see gatehousectl site list"
        )));
    };
    let site = state.sites.remove(pos);
    if let Some(cert) = site.tls.and_then(|t| t.mode).and_then(|m| match m {
        gatehouse_proto::v1::site_tls::Mode::Certificate(c) => Some(c),
        _ => None,
    }) {
        let still_used = state.sites.iter().any(|s| {
            matches!(
                s.tls.as_ref().and_then(|t| t.mode.as_ref()),
                Some(gatehouse_proto::v1::site_tls::Mode::Certificate(c)) if *c == cert
            )
        });
        if !still_used {
            state.certificates.retain(|c| c.name != cert);
        }
    }
    Ok(state)
}

/// Asks for a new key and certificate (the next revision).
pub fn reissue(mut state: DesiredState, certificate: &str) -> Result<DesiredState, Refused> {
    let cert = state
        .certificates
        .iter_mut()
        .find(|c| c.name == certificate)
        .ok_or_else(|| Refused(format!("no certificate {certificate:?} on this agent")))?;
    cert.revision += 1;
    Ok(state)
}

/// A rollback: the sites and certificates of an earlier generation (its generation number is
/// replaced when it is stored as the newest). Tunnels stay as they are now: each one's tunnel,
/// token and DNS at Cloudflare have their own lifecycle (`tunnel delete`).
pub fn rollback(earlier: DesiredState, current: DesiredState) -> DesiredState {
    DesiredState {
        generation: 0,
        tunnels: current.tunnels,
        ..earlier
    }
}

fn check(state: &DesiredState) -> Result<(), Refused> {
    // Tunnels are stored without their tokens (kept sealed apart and filled in when a state is
    // sent) and were checked by `crate::tunnels` on the way in.
    let stored = DesiredState {
        tunnels: Vec::new(),
        ..state.clone()
    };
    match ValidState::from_state(&stored).errors.first() {
        Some(e) => Err(Refused(e.to_string())),
        None => Ok(()),
    }
}

/// A site's state from the agent's last apply: "applied", "failed" or "pending".
pub fn site_state(
    name: &str,
    site_generation: u64,
    applied_generation: u64,
    results: &[ItemResult],
) -> (String, String) {
    if applied_generation < site_generation {
        return ("pending".into(), String::new());
    }
    match results.iter().find(|r| r.kind == "site" && r.name == name) {
        Some(r) => (r.item_state().word().into(), r.message.clone()),
        None => ("pending".into(), String::new()),
    }
}

/// The installed certificate a site uses, from the agent's inventory.
pub fn site_certificate(
    site: &SiteSpec,
    inventory: &[CertificateInventory],
) -> Option<CertificateInventory> {
    match site.tls.as_ref()?.mode.as_ref()? {
        gatehouse_proto::v1::site_tls::Mode::Certificate(name) => {
            inventory.iter().find(|c| &c.name == name).cloned()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_proto::v1::{SiteTls as Tls, site_tls::Mode};

    fn site(name: &str, cert: &str) -> SiteSpec {
        SiteSpec {
            name: name.into(),
            domains: vec![format!("{name}.example.com")],
            upstreams: vec!["127.0.0.1:8080".into()],
            tls: Some(Tls {
                mode: Some(Mode::Certificate(cert.into())),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn put_creates_the_internal_certificate_and_replaces_by_name() {
        let s = put_site(
            DesiredState::default(),
            site("www", "www"),
            Some(CertificateSource::internal(KeyType::P256)),
        )
        .unwrap();
        assert_eq!(s.certificates.len(), 1);
        assert_eq!(s.certificates[0].domains, ["www.example.com"]);
        let mut changed = site("www", "www");
        changed.domains = vec!["new.example.com".into()];
        let s = put_site(s, changed, Some(CertificateSource::internal(KeyType::P256))).unwrap();
        assert_eq!(s.sites.len(), 1);
        assert_eq!(s.certificates[0].domains, ["new.example.com"]);
        // Idempotent: the same request again changes nothing.
        let again = put_site(
            s.clone(),
            s.sites[0].clone(),
            Some(CertificateSource::internal(KeyType::P256)),
        )
        .unwrap();
        assert_eq!(again, s);
        // Another key type is a new key.
        let rsa = put_site(
            s.clone(),
            s.sites[0].clone(),
            Some(CertificateSource::internal(KeyType::Rsa2048)),
        )
        .unwrap();
        assert_eq!(rsa.certificates[0].key_type, KeyType::Rsa2048 as i32);
        assert_eq!(rsa.certificates[0].revision, s.certificates[0].revision + 1);
    }

    #[test]
    fn put_refuses_bad_sites_and_missing_certificates() {
        let err = put_site(DesiredState::default(), site("www", "other"), None).unwrap_err();
        assert!(err.0.contains("does not exist"), "{err}");
        let mut bad = site("www", "www");
        bad.domains = vec!["{evil}".into()];
        let err = put_site(
            DesiredState::default(),
            bad,
            Some(CertificateSource::internal(KeyType::P256)),
        )
        .unwrap_err();
        assert!(err.0.contains("invalid domain"), "{err}");
    }

    #[test]
    fn delete_removes_an_unshared_certificate_only() {
        let s = put_site(
            DesiredState::default(),
            site("a", "shared"),
            Some(CertificateSource::internal(KeyType::P256)),
        )
        .unwrap();
        let s = put_site(
            s,
            site("b", "shared"),
            Some(CertificateSource::internal(KeyType::P256)),
        )
        .unwrap();
        let s = delete_site(s, "a").unwrap();
        assert_eq!(s.certificates.len(), 1);
        let s = delete_site(s, "b").unwrap();
        assert!(s.certificates.is_empty() && s.sites.is_empty());
        assert!(delete_site(s, "b").is_err());
    }

    #[test]
    fn reissue_raises_the_revision() {
        let s = put_site(
            DesiredState::default(),
            site("www", "www"),
            Some(CertificateSource::internal(KeyType::P256)),
        )
        .unwrap();
        let s = reissue(s, "www").unwrap();
        assert_eq!(s.certificates[0].revision, 1);
        assert!(reissue(s, "nope").is_err());
    }

    #[test]
    fn site_states() {
        let results = vec![
            ItemResult::applied("site", "a"),
            ItemResult::failed("site", "b", "caddy validate rejected"),
            ItemResult::pending("site", "c", "waiting for certificate c"),
        ];
        assert_eq!(site_state("a", 3, 2, &results).0, "pending");
        assert_eq!(site_state("a", 3, 3, &results).0, "applied");
        assert_eq!(
            site_state("b", 3, 3, &results),
            ("failed".into(), "caddy validate rejected".into())
        );
        assert_eq!(site_state("c", 3, 3, &results).0, "pending");
    }
}
