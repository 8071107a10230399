//! Validated forms of the desired-state items. The controller converts at its API, the agent
//! converts what it receives; neither acts on an unvalidated spec.

use std::collections::BTreeMap;
use std::fmt;

use crate::names::{
    DomainName, HeaderName, HeaderValue, NameError, ResourceName, TunnelName, TunnelToken, Upstream,
};
use crate::v1;

mod wireguard;
pub use wireguard::{Wireguard, WireguardPeer};

/// A spec item that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{item}: {reason}")]
pub struct SpecError {
    /// `site/<name>` or `certificate/<name>`.
    pub item: String,
    pub reason: String,
}

impl SpecError {
    /// Both parts may hold a caller's text: they are kept escaped (one visible line).
    fn new(item: &str, reason: impl fmt::Display) -> Self {
        Self {
            item: crate::text::escape(item).into_owned(),
            reason: crate::text::escape(&reason.to_string()).into_owned(),
        }
    }
}

/// How a site gets its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteTls {
    /// The files of a certificate in the same desired state.
    Certificate(ResourceName),
    /// Caddy's own ACME, optionally with a given directory and root.
    CaddyManaged {
        acme_ca: Option<String>,
        acme_ca_root: Option<String>,
    },
    /// Caddy's local CA.
    CaddyInternal,
}

/// A validated site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub name: ResourceName,
    pub domains: Vec<DomainName>,
    pub upstreams: Vec<Upstream>,
    pub tls: SiteTls,
    pub headers: BTreeMap<HeaderName, HeaderValue>,
    pub port: u16,
    /// Allowlists whose entries alone may reach the site (empty: everyone).
    pub allow: Vec<ResourceName>,
    /// Peers whose `CF-Connecting-IP` names the client the allowlists judge.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// Who signs a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Issuer {
    /// The controller's site CA.
    Internal,
    /// Cloudflare's Origin CA, through the named account.
    OriginCa(ResourceName),
    /// An ACME CA, through the named ACME account (DNS-01 via Cloudflare).
    Acme(ResourceName),
}

impl Issuer {
    /// Parses `internal`, `origin-ca:ACCOUNT` or `acme:ACCOUNT`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let account = |name: &str| {
            name.parse::<ResourceName>()
                .map_err(|e| format!("issuer {text:?}: {e}"))
        };
        match text {
            "internal" | "" => Ok(Issuer::Internal),
            other => match other.split_once(':') {
                Some(("origin-ca", name)) => Ok(Issuer::OriginCa(account(name)?)),
                Some(("acme", name)) => Ok(Issuer::Acme(account(name)?)),
                _ => Err(format!(
                    "issuer {other:?} is not supported (internal, origin-ca:ACCOUNT, acme:ACCOUNT)"
                )),
            },
        }
    }
}

impl fmt::Display for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Issuer::Internal => f.write_str("internal"),
            Issuer::OriginCa(account) => write!(f, "origin-ca:{account}"),
            Issuer::Acme(account) => write!(f, "acme:{account}"),
        }
    }
}

/// A validated certificate spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    pub name: ResourceName,
    pub domains: Vec<DomainName>,
    pub key_type: v1::KeyType,
    pub issuer: Issuer,
    pub revision: u64,
}

fn domains(item: &str, list: &[String]) -> Result<Vec<DomainName>, SpecError> {
    if list.is_empty() {
        return Err(SpecError::new(
            item,
            "domains: at least one domain is required",
        ));
    }
    if list.len() > 100 {
        return Err(SpecError::new(item, "domains: at most 100"));
    }
    let mut out: Vec<DomainName> = Vec::with_capacity(list.len());
    for d in list {
        let d: DomainName = d.parse().map_err(|e: NameError| SpecError::new(item, e))?;
        if !out.contains(&d) {
            out.push(d);
        }
    }
    Ok(out)
}

fn safe_text(item: &str, field: &str, text: &str) -> Result<(), SpecError> {
    if text.is_empty()
        || text.len() > 1024
        || text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '{' | '}' | '"' | '\\'))
    {
        return Err(SpecError::new(
            item,
            format!(
                "{field}: 1 to 1024 characters without whitespace, quotes, backslashes or braces"
            ),
        ));
    }
    Ok(())
}

impl TryFrom<&v1::SiteSpec> for Site {
    type Error = SpecError;
    fn try_from(spec: &v1::SiteSpec) -> Result<Self, SpecError> {
        let name: ResourceName = spec
            .name
            .parse()
            .map_err(|e: NameError| SpecError::new(&format!("site/{}", spec.name), e))?;
        let item = format!("site/{name}");
        let domains = domains(&item, &spec.domains)?;
        if spec.upstreams.is_empty() {
            return Err(SpecError::new(
                &item,
                "upstreams: at least one host:port is required",
            ));
        }
        let upstreams = spec
            .upstreams
            .iter()
            .map(|u| u.parse::<Upstream>().map_err(|e| SpecError::new(&item, e)))
            .collect::<Result<Vec<_>, _>>()?;
        let tls = match spec.tls.as_ref().and_then(|t| t.mode.as_ref()) {
            Some(v1::site_tls::Mode::Certificate(cert)) => SiteTls::Certificate(
                cert.parse()
                    .map_err(|e: NameError| SpecError::new(&item, format!("certificate {e}")))?,
            ),
            Some(v1::site_tls::Mode::CaddyManaged(m)) => {
                let acme_ca = (!m.acme_ca.is_empty()).then(|| m.acme_ca.clone());
                if let Some(url) = &acme_ca {
                    safe_text(&item, "acme_ca", url)?;
                    if !url.starts_with("https://") {
                        return Err(SpecError::new(&item, "acme_ca: must be an https:// URL"));
                    }
                }
                let acme_ca_root = (!m.acme_ca_root.is_empty()).then(|| m.acme_ca_root.clone());
                if let Some(path) = &acme_ca_root {
                    safe_text(&item, "acme_ca_root", path)?;
                    if !path.starts_with('/') || path.contains("..") {
                        return Err(SpecError::new(
                            &item,
                            "acme_ca_root: must be an absolute path without '..'",
                        ));
                    }
                }
                SiteTls::CaddyManaged {
                    acme_ca,
                    acme_ca_root,
                }
            }
            Some(v1::site_tls::Mode::CaddyInternal(_)) => SiteTls::CaddyInternal,
            None => return Err(SpecError::new(&item, "tls: a TLS mode is required")),
        };
        let mut headers = BTreeMap::new();
        for (k, v) in &spec.response_headers {
            let k: HeaderName = k.parse().map_err(|e| SpecError::new(&item, e))?;
            let v: HeaderValue = v.parse().map_err(|e| SpecError::new(&item, e))?;
            headers.insert(k, v);
        }
        let port = match spec.port {
            0 => 443,
            p => u16::try_from(p)
                .map_err(|_| SpecError::new(&item, "port: must be from 1 to 65535"))?,
        };
        let mut allow: Vec<ResourceName> = Vec::with_capacity(spec.allow.len());
        for a in &spec.allow {
            let a: ResourceName = a
                .parse()
                .map_err(|e| SpecError::new(&item, format!("allow: {e}")))?;
            if !allow.contains(&a) {
                allow.push(a);
            }
        }
        let mut trusted_proxies: Vec<ipnet::IpNet> = Vec::new();
        for p in &spec.trusted_proxies {
            let p: ipnet::IpNet = p.parse().map_err(|_| {
                SpecError::new(
                    &item,
                    format!("trusted_proxies: {p:?} is not a CIDR like 173.245.48.0/20"),
                )
            })?;
            if !trusted_proxies.contains(&p.trunc()) {
                trusted_proxies.push(p.trunc());
            }
        }
        Ok(Site {
            name,
            domains,
            upstreams,
            tls,
            headers,
            port,
            allow,
            trusted_proxies,
        })
    }
}

impl TryFrom<&v1::CertificateSpec> for Certificate {
    type Error = SpecError;
    fn try_from(spec: &v1::CertificateSpec) -> Result<Self, SpecError> {
        let name: ResourceName = spec
            .name
            .parse()
            .map_err(|e: NameError| SpecError::new(&format!("certificate/{}", spec.name), e))?;
        let item = format!("certificate/{name}");
        let domains = domains(&item, &spec.domains)?;
        let key_type = v1::KeyType::try_from(spec.key_type)
            .map_err(|_| SpecError::new(&item, "key_type: unknown key type"))?;
        let issuer = Issuer::parse(&spec.issuer).map_err(|e| SpecError::new(&item, e))?;
        Ok(Certificate {
            name,
            domains,
            key_type,
            issuer,
            revision: spec.revision,
        })
    }
}

/// A whole desired state, validated item by item: what is usable, and an error per item that
/// is not (bad fields, duplicate names, a site naming a certificate that is not there).
#[derive(Debug, Default)]
pub struct ValidState {
    pub certificates: Vec<Certificate>,
    pub sites: Vec<Site>,
    pub tunnels: Vec<Tunnel>,
    pub wireguard: Vec<Wireguard>,
    pub errors: Vec<SpecError>,
}

impl ValidState {
    /// Validates every item of `state`.
    pub fn from_state(state: &v1::DesiredState) -> Self {
        let mut out = Self::default();
        for spec in &state.certificates {
            match Certificate::try_from(spec) {
                Ok(c) if out.certificates.iter().any(|o| o.name == c.name) => out.errors.push(
                    SpecError::new(&format!("certificate/{}", c.name), "duplicate name"),
                ),
                Ok(c) => out.certificates.push(c),
                Err(e) => out.errors.push(e),
            }
        }
        for spec in &state.sites {
            match Site::try_from(spec) {
                Ok(s) if out.sites.iter().any(|o| o.name == s.name) => out.errors.push(
                    SpecError::new(&format!("site/{}", s.name), "duplicate name"),
                ),
                Ok(s) => {
                    if let SiteTls::Certificate(cert) = &s.tls
                        && !out.certificates.iter().any(|c| &c.name == cert)
                    {
                        out.errors.push(SpecError::new(
                            &format!("site/{}", s.name),
                            format!("tls: certificate {cert} is not in the desired state"),
                        ));
                        continue;
                    }
                    out.sites.push(s);
                }
                Err(e) => out.errors.push(e),
            }
        }
        for spec in &state.tunnels {
            match Tunnel::try_from(spec) {
                Ok(t) if out.tunnels.iter().any(|o| o.name == t.name) => out.errors.push(
                    SpecError::new(&format!("tunnel/{}", t.name), "duplicate name"),
                ),
                Ok(t) => out.tunnels.push(t),
                Err(e) => out.errors.push(e),
            }
        }
        for spec in &state.wireguard {
            match Wireguard::try_from(spec) {
                Ok(w)
                    if out
                        .wireguard
                        .iter()
                        .any(|o| o.network == w.network || o.interface == w.interface) =>
                {
                    out.errors.push(SpecError::new(
                        &format!("wireguard/{}", w.network),
                        "duplicate network or interface",
                    ))
                }
                Ok(w) => out.wireguard.push(w),
                Err(e) => out.errors.push(e),
            }
        }
        out
    }
}

/// A validated tunnel: its unit's name and the token it runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    pub name: TunnelName,
    pub token: TunnelToken,
    pub revision: u64,
}

impl TryFrom<&v1::TunnelSpec> for Tunnel {
    type Error = SpecError;
    fn try_from(spec: &v1::TunnelSpec) -> Result<Self, SpecError> {
        let item = format!("tunnel/{}", spec.name);
        let name = spec
            .name
            .parse()
            .map_err(|e: NameError| SpecError::new(&item, e))?;
        let token = spec
            .token
            .parse()
            .map_err(|e: NameError| SpecError::new(&item, e))?;
        Ok(Self {
            name,
            token,
            revision: spec.revision,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> v1::SiteSpec {
        v1::SiteSpec {
            name: "www".into(),
            domains: vec!["www.example.com".into()],
            upstreams: vec!["127.0.0.1:8080".into()],
            tls: Some(v1::SiteTls {
                mode: Some(v1::site_tls::Mode::Certificate("www".into())),
            }),
            response_headers: Default::default(),
            port: 0,
            allow: vec![],
            trusted_proxies: vec![],
        }
    }

    fn cert() -> v1::CertificateSpec {
        v1::CertificateSpec {
            name: "www".into(),
            domains: vec!["www.example.com".into()],
            issuer: "internal".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_good_site_and_certificate() {
        let state = v1::DesiredState {
            certificates: vec![cert()],
            sites: vec![site()],
            ..Default::default()
        };
        let valid = ValidState::from_state(&state);
        assert!(valid.errors.is_empty(), "{:?}", valid.errors);
        assert_eq!(valid.sites[0].port, 443);
    }

    #[test]
    fn every_bad_field_is_named() {
        type Change = Box<dyn Fn(&mut v1::SiteSpec)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|s| s.name = "../x".into()), "invalid name"),
            (
                Box::new(|s| s.domains = vec!["a{b}.com".into()]),
                "invalid domain",
            ),
            (Box::new(|s| s.domains.clear()), "domains:"),
            (
                Box::new(|s| s.upstreams = vec!["x".into()]),
                "invalid upstream",
            ),
            (Box::new(|s| s.upstreams.clear()), "upstreams:"),
            (Box::new(|s| s.tls = None), "tls:"),
            (Box::new(|s| s.port = 70000), "port:"),
            (Box::new(|s| s.allow = vec!["Bad List".into()]), "allow:"),
            (
                Box::new(|s| s.trusted_proxies = vec!["1.2.3.4/8 }".into()]),
                "trusted_proxies:",
            ),
            (
                Box::new(|s| {
                    s.response_headers.insert("X-A".into(), "a\nb".into());
                }),
                "header value",
            ),
            (
                Box::new(|s| {
                    s.tls = Some(v1::SiteTls {
                        mode: Some(v1::site_tls::Mode::CaddyManaged(v1::CaddyManaged {
                            acme_ca: "http://x }".into(),
                            acme_ca_root: String::new(),
                        })),
                    })
                }),
                "acme_ca:",
            ),
        ];
        for (change, expected) in cases {
            let mut s = site();
            change(&mut s);
            let err = Site::try_from(&s).unwrap_err();
            assert!(
                err.to_string().contains(expected),
                "{err} (wanted {expected})"
            );
            assert!(err.item.starts_with("site/"));
        }
    }

    #[test]
    fn hostile_tunnel_specs_are_refused_naming_the_field() {
        let spec = |name: &str, token: &str| v1::TunnelSpec {
            name: name.into(),
            token: token.into(),
            revision: 0,
        };
        let state = v1::DesiredState {
            tunnels: vec![
                spec("odoo", "eyJhIjoiYSJ9"),
                spec("../etc", "eyJhIjoiYSJ9"),
                spec("a@b.service", "eyJhIjoiYSJ9"),
                spec("x;reboot", "eyJhIjoiYSJ9"),
                spec("ok", "tok en"),
                spec("odoo", "eyJhIjoiYSJ9"),
            ],
            ..Default::default()
        };
        let valid = ValidState::from_state(&state);
        assert_eq!(valid.tunnels.len(), 1);
        let reasons: Vec<String> = valid.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(reasons.len(), 5, "{reasons:?}");
        for r in &reasons[..3] {
            assert!(r.contains("tunnel name"), "{r}");
        }
        assert!(reasons[3].contains("token") && !reasons[3].contains("tok en"));
        assert!(reasons[4].contains("duplicate name"));
    }

    #[test]
    fn a_site_needs_its_certificate_and_names_are_unique() {
        let state = v1::DesiredState {
            sites: vec![site(), site()],
            ..Default::default()
        };
        let valid = ValidState::from_state(&state);
        assert!(valid.sites.is_empty());
        assert!(
            valid
                .errors
                .iter()
                .any(|e| e.reason.contains("not in the desired state"))
        );
        let state = v1::DesiredState {
            certificates: vec![cert(), cert()],
            ..Default::default()
        };
        let valid = ValidState::from_state(&state);
        assert_eq!(valid.certificates.len(), 1);
        assert_eq!(valid.errors[0].reason, "duplicate name");
    }
}
