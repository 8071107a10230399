//! A tunnel's routes, checked, and the ingress configuration Cloudflare gets for them: in one
//! canonical form (rules sorted by hostname, the `http_status:404` catch-all last), so the same
//! routes always give the same configuration.

use gatehouse_proto::names::{DomainName, TunnelRoute, TunnelService};
use gatehouse_proto::v1 as pb;

use crate::cloudflare::tunnels::{IngressRule, OriginRequest};
use crate::error::{Error, Result};
use crate::store::TunnelRouteRow;

/// The longest origin connect timeout accepted, in seconds.
const MAX_CONNECT_TIMEOUT: u32 = 300;

/// A route from the admin API, checked field by field (the message names the field).
pub fn route_row(route: &pb::TunnelRoute) -> Result<TunnelRouteRow> {
    let parsed: TunnelRoute = format!("{}={}", route.hostname, route.service).parse()?;
    if !route.http_host_header.is_empty() {
        header_value("http_host_header", &route.http_host_header)?;
    }
    if !route.origin_server_name.is_empty() {
        route
            .origin_server_name
            .parse::<DomainName>()
            .map_err(|e| Error::Invalid(format!("origin_server_name: {e}")))?;
    }
    if route.connect_timeout_seconds > MAX_CONNECT_TIMEOUT {
        return Err(Error::Invalid(format!(
            "connect_timeout: {} s is more than {MAX_CONNECT_TIMEOUT} s",
            route.connect_timeout_seconds
        )));
    }
    Ok(TunnelRouteRow {
        hostname: parsed.hostname.to_string(),
        service: parsed.service.to_string(),
        no_tls_verify: route.no_tls_verify,
        http_host_header: route.http_host_header.clone(),
        origin_server_name: route.origin_server_name.clone(),
        connect_timeout: u64::from(route.connect_timeout_seconds),
    })
}

fn header_value(field: &str, value: &str) -> Result<()> {
    if value.len() > 255
        || value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | ';' | '/'))
    {
        return Err(Error::Invalid(format!(
            "{field}: {:?} must be a host name (no spaces, quotes, ';' or '/')",
            gatehouse_proto::text::escape(value)
        )));
    }
    Ok(())
}

/// The route as the admin API shows it.
pub fn route_view(r: &TunnelRouteRow) -> pb::TunnelRoute {
    pb::TunnelRoute {
        hostname: r.hostname.clone(),
        service: r.service.clone(),
        no_tls_verify: r.no_tls_verify,
        http_host_header: r.http_host_header.clone(),
        origin_server_name: r.origin_server_name.clone(),
        connect_timeout_seconds: r.connect_timeout as u32,
    }
}

/// Where a gatehouse site on the tunnel's host answers: its first domain (or the route's
/// hostname when it is one of the site's) and its port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSite {
    pub domains: Vec<String>,
    pub port: u16,
}

/// The canonical ingress configuration for `routes`; `site` finds the sites that `site:NAME`
/// routes name (an error when the host has no such site).
pub fn canonical(
    routes: &[TunnelRouteRow],
    site: impl Fn(&str) -> Option<LocalSite>,
) -> Result<Vec<IngressRule>> {
    let mut sorted: Vec<&TunnelRouteRow> = routes.iter().collect();
    sorted.sort_by(|a, b| a.hostname.cmp(&b.hostname));
    let mut rules = Vec::with_capacity(sorted.len() + 1);
    for r in sorted {
        let mut origin = OriginRequest {
            no_tls_verify: r.no_tls_verify,
            http_host_header: (!r.http_host_header.is_empty()).then(|| r.http_host_header.clone()),
            origin_server_name: (!r.origin_server_name.is_empty())
                .then(|| r.origin_server_name.clone()),
            connect_timeout: (r.connect_timeout > 0).then_some(r.connect_timeout),
        };
        let service: TunnelService = r.service.parse()?;
        let service = match service {
            TunnelService::Site(name) => {
                let local = site(name.as_str()).ok_or_else(|| {
                    Error::Precondition(format!(
                        "route {}: the host has no site {name} (see gatehousectl site list)",
                        r.hostname
                    ))
                })?;
                // Caddy picks the site by its name: the route's hostname when the site serves
                // it, else the site's first domain.
                let name = if local.domains.contains(&r.hostname) {
                    r.hostname.clone()
                } else {
                    local.domains.first().cloned().unwrap_or_default()
                };
                origin
                    .origin_server_name
                    .get_or_insert_with(|| name.clone());
                origin.http_host_header.get_or_insert(name);
                format!("https://127.0.0.1:{}", local.port)
            }
            other => other.to_string(),
        };
        rules.push(IngressRule {
            hostname: Some(r.hostname.clone()),
            service,
            origin_request: origin,
        });
    }
    rules.push(IngressRule {
        hostname: None,
        service: "http_status:404".into(),
        origin_request: OriginRequest::default(),
    });
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(host: &str, service: &str) -> TunnelRouteRow {
        TunnelRouteRow {
            hostname: host.into(),
            service: service.into(),
            ..TunnelRouteRow::default()
        }
    }

    #[test]
    fn rules_are_sorted_with_the_catch_all_last() {
        let rules = canonical(
            &[
                row("shop.example.com", "http://10.0.0.5:8069"),
                row("api.example.com", "http://localhost:3000"),
            ],
            |_| None,
        )
        .unwrap();
        let hosts: Vec<_> = rules.iter().map(|r| r.hostname.clone()).collect();
        assert_eq!(
            hosts,
            [
                Some("api.example.com".into()),
                Some("shop.example.com".into()),
                None
            ]
        );
        assert_eq!(rules[2].service, "http_status:404");
    }

    #[test]
    fn a_site_route_reaches_caddy_with_the_site_name() {
        let site = |name: &str| {
            (name == "shop").then(|| LocalSite {
                domains: vec!["shop.internal".into()],
                port: 8443,
            })
        };
        let rules = canonical(&[row("shop.example.com", "site:shop")], site).unwrap();
        assert_eq!(rules[0].service, "https://127.0.0.1:8443");
        assert_eq!(
            rules[0].origin_request.origin_server_name.as_deref(),
            Some("shop.internal")
        );
        let missing = canonical(&[row("x.example.com", "site:nope")], site).unwrap_err();
        assert!(missing.to_string().contains("no site nope"), "{missing}");
    }

    #[test]
    fn hostile_routes_are_refused_naming_the_field() {
        let route = |host: &str, service: &str| pb::TunnelRoute {
            hostname: host.into(),
            service: service.into(),
            ..Default::default()
        };
        for (r, field) in [
            (route("a.example.com:8443", "http://x"), "hostname"),
            (route("a.*.example.com", "http://x"), "hostname"),
            (route("a b.example.com", "http://x"), "hostname"),
            (route("a.example.com", "http://x/path"), "service"),
            (route("a.example.com", "http://u@x"), "service"),
            (route("a.example.com", "http://x;reboot"), "service"),
            (route("a.example.com", "site:../x"), "service"),
        ] {
            let e = route_row(&r).unwrap_err().to_string();
            assert!(e.contains(field), "{e} should name {field}");
        }
        let mut r = route("a.example.com", "http://x");
        r.http_host_header = "a b".into();
        assert!(
            route_row(&r)
                .unwrap_err()
                .to_string()
                .contains("http_host_header")
        );
        r.http_host_header.clear();
        r.connect_timeout_seconds = 100_000;
        assert!(
            route_row(&r)
                .unwrap_err()
                .to_string()
                .contains("connect_timeout")
        );
    }
}
