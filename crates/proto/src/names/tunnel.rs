//! The names a Cloudflare Tunnel is made of: its name (it names a unit and a token file on the
//! host), the public hostnames it routes, and the service behind each, checked as cloudflared
//! checks them and stricter where a host path or a unit name is at stake.

use std::fmt;
use std::str::FromStr;

use super::{DomainName, NameError, ResourceName};

/// A tunnel's name: 1–63 characters of `[a-z0-9-]`, starting with a letter or a digit. It names
/// the unit `gatehouse-tunnel@NAME.service` and the token file, so nothing else is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TunnelName(String);

impl FromStr for TunnelName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name: ResourceName = s.parse().map_err(|e: NameError| NameError {
            field: "tunnel name",
            ..e
        })?;
        Ok(Self(name.as_str().to_owned()))
    }
}

impl TunnelName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The systemd unit that runs it.
    pub fn unit(&self) -> String {
        format!("gatehouse-tunnel@{}.service", self.0)
    }
}

impl fmt::Display for TunnelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tunnel's connector token, as the agent writes it into the token file: base64 text of at
/// most 4096 characters. It is a secret: `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct TunnelToken(String);

impl FromStr for TunnelToken {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let base64 = |b: u8| b.is_ascii_alphanumeric() || b"+/=-_".contains(&b);
        if s.is_empty() || s.len() > 4096 || !s.bytes().all(base64) {
            // The value is never echoed back: it is a secret.
            return Err(NameError::new(
                "token",
                "(hidden)",
                "must be the tunnel token Cloudflare issued (base64, at most 4096 characters)",
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

impl TunnelToken {
    /// The token itself, for the token file.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TunnelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TunnelToken(***)")
    }
}

/// What a tunnel route reaches on the host's side.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TunnelService {
    /// `scheme://host[:port]`, no path, no user: http, https, tcp, ssh, rdp or smb.
    Url {
        scheme: String,
        host: String,
        port: Option<u16>,
    },
    /// `http_status:NNN`.
    HttpStatus(u16),
    /// A gatehouse site on the same host (`site:NAME`): reached through the local Caddy with
    /// the site's name.
    Site(ResourceName),
}

const SCHEMES: [&str; 6] = ["http", "https", "tcp", "ssh", "rdp", "smb"];

impl FromStr for TunnelService {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |rule| NameError::new("service", s, rule);
        if s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, ';' | '"' | '\'' | '`'))
        {
            return Err(err(
                "must not contain whitespace, quotes, ';' or control characters",
            ));
        }
        if let Some(site) = s.strip_prefix("site:") {
            let name = site.parse().map_err(|e: NameError| NameError {
                field: "service",
                value: s.chars().take(80).collect(),
                rule: e.rule,
            })?;
            return Ok(Self::Site(name));
        }
        if let Some(code) = s.strip_prefix("http_status:") {
            return match code.parse::<u16>() {
                Ok(code @ 100..=599) => Ok(Self::HttpStatus(code)),
                _ => Err(err("http_status needs a status from 100 to 599")),
            };
        }
        let (scheme, rest) = s.split_once("://").ok_or_else(|| {
            err("must be scheme://host[:port] (http, https, tcp, ssh, rdp, smb), http_status:NNN or site:NAME")
        })?;
        if !SCHEMES.contains(&scheme) {
            return Err(err("the scheme must be http, https, tcp, ssh, rdp or smb"));
        }
        if rest.contains('@') {
            return Err(err("must not carry a user ('@')"));
        }
        if rest.contains(['/', '?', '#']) {
            return Err(err(
                "must not have a path: cloudflared routes to host[:port] only",
            ));
        }
        let (host, port) =
            split_port(rest).ok_or_else(|| err("the port must be a number from 1 to 65535"))?;
        let host = super::site::host_part("service", s, host)?;
        Ok(Self::Url {
            scheme: scheme.to_owned(),
            host,
            port,
        })
    }
}

/// `host[:port]` → host and port; `None` for a port that is not 1–65535.
fn split_port(rest: &str) -> Option<(&str, Option<u16>)> {
    let bracket_end = rest.rfind(']');
    match rest.rfind(':') {
        Some(at) if bracket_end.is_none_or(|b| at > b) => {
            let port: u16 = rest[at + 1..].parse().ok().filter(|p| *p > 0)?;
            Some((&rest[..at], Some(port)))
        }
        _ => Some((rest, None)),
    }
}

impl fmt::Display for TunnelService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Url {
                scheme,
                host,
                port: Some(p),
            } => write!(f, "{scheme}://{host}:{p}"),
            Self::Url { scheme, host, .. } => write!(f, "{scheme}://{host}"),
            Self::HttpStatus(code) => write!(f, "http_status:{code}"),
            Self::Site(name) => write!(f, "site:{name}"),
        }
    }
}

/// One route: a public hostname (no port; `*` only as the leftmost label) and its service.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TunnelRoute {
    pub hostname: DomainName,
    pub service: TunnelService,
}

impl FromStr for TunnelRoute {
    type Err = NameError;
    /// `HOST=SERVICE`, as `--route` takes it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (host, service) = s.split_once('=').ok_or_else(|| {
            NameError::new(
                "route",
                s,
                "must be HOST=SERVICE, for example acme.example.com=http://10.0.0.5:8069",
            )
        })?;
        let hostname = host.parse().map_err(|e: NameError| NameError {
            field: "hostname",
            ..e
        })?;
        Ok(Self {
            hostname,
            service: service.parse()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_names_are_safe_in_unit_and_file_names() {
        let name: TunnelName = "odoo-acme".parse().unwrap();
        assert_eq!(name.unit(), "gatehouse-tunnel@odoo-acme.service");
        for bad in [
            "",
            "a.service",
            "../x",
            "a b",
            "a;b",
            "a@b",
            "A",
            "-a",
            "x/y",
        ] {
            let e = bad.parse::<TunnelName>().unwrap_err();
            assert_eq!(e.field, "tunnel name", "{bad:?}");
        }
    }

    #[test]
    fn tokens_are_base64_and_never_shown() {
        let token: TunnelToken = "eyJhIjoiYSJ9".parse().unwrap();
        assert_eq!(format!("{token:?}"), "TunnelToken(***)");
        for bad in ["", "a b", "a\nb", "$(reboot)", "a;b"] {
            let e = bad.parse::<TunnelToken>().unwrap_err();
            assert_eq!(e.field, "token");
            assert!(!e.to_string().contains(bad) || bad.is_empty(), "{e}");
        }
    }

    #[test]
    fn services_are_read_as_cloudflared_reads_them() {
        for good in [
            "http://172.16.16.105:8069",
            "https://localhost",
            "tcp://[::1]:22",
            "ssh://db.internal:22",
            "http_status:404",
            "site:shop",
        ] {
            let s: TunnelService = good.parse().unwrap_or_else(|e| panic!("{good}: {e}"));
            assert_eq!(s.to_string(), good);
        }
        for (bad, why) in [
            ("http://host/path", "path"),
            ("http://user@host", "user"),
            ("http://host:0", "port"),
            ("http://host:99999", "port"),
            ("http://a b", "whitespace"),
            ("http://host;rm", "';'"),
            ("ftp://host", "scheme"),
            ("host:80", "scheme://"),
            ("http_status:42", "100 to 599"),
            ("site:../etc", "lowercase"),
            ("site:a.b", "a-z"),
            ("http://*.example.com", "wildcard"),
        ] {
            let e = bad.parse::<TunnelService>().unwrap_err();
            assert_eq!(e.field, "service");
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn routes_name_the_field_that_is_wrong() {
        let r: TunnelRoute = "acme.example.com=http://172.16.16.105:8069"
            .parse()
            .unwrap();
        assert_eq!(r.hostname.as_str(), "acme.example.com");
        for (bad, field) in [
            ("acme.example.com", "route"),
            ("acme.example.com:443=http://x", "hostname"),
            ("a.*.example.com=http://x", "hostname"),
            ("a b.example.com=http://x", "hostname"),
            ("acme.example.com=http://x/y", "service"),
        ] {
            assert_eq!(
                bad.parse::<TunnelRoute>().unwrap_err().field,
                field,
                "{bad}"
            );
        }
    }
}
