//! The names a Caddy site is made of besides its domains: reverse-proxy upstreams and response
//! header names and values, each refused with the rule it broke.

use std::fmt;
use std::str::FromStr;

use super::{DomainName, NameError};

/// A reverse-proxy upstream: `host:port`, where host is a domain name, an IPv4 address or a
/// bracketed IPv6 address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Upstream {
    host: String,
    port: u16,
}

impl FromStr for Upstream {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |rule| NameError::new("upstream", s, rule);
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| err("must look like host:port, for example 127.0.0.1:8080"))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| err("the port must be a number from 1 to 65535"))?;
        let host = host_part("upstream", s, host)?;
        Ok(Self { host, port })
    }
}

/// The host of an address (an upstream, a tunnel service): a bracketed IPv6 address, an IPv4
/// address, or a domain name that is not a wildcard, in its canonical form. Errors name
/// `field` and show the whole `input`.
pub(super) fn host_part(field: &'static str, input: &str, host: &str) -> Result<String, NameError> {
    let err = |rule| NameError::new(field, input, rule);
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>()
            .map_err(|_| err("the bracketed host must be an IPv6 address"))?;
        return Ok(format!("[{v6}]"));
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(host.to_owned());
    }
    let d: DomainName = host.parse().map_err(|e: NameError| err(e.rule))?;
    if d.is_wildcard() {
        return Err(err("the host must not be a wildcard"));
    }
    Ok(d.0)
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// A response header name: 1–64 token characters (RFC 9110).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HeaderName(String);

impl FromStr for HeaderName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 64 {
            return Err(NameError::new(
                "header name",
                s,
                "must be 1 to 64 characters",
            ));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        {
            return Err(NameError::new(
                "header name",
                s,
                "may contain only letters, digits and !#$%&'*+-.^_`|~",
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

impl HeaderName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A response header value: up to 1024 printable ASCII characters without `"`, `\`, `{` or `}`
/// (so it can be quoted in a Caddyfile and never holds a placeholder).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HeaderValue(String);

impl FromStr for HeaderValue {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > 1024 {
            return Err(NameError::new(
                "header value",
                s,
                "must be at most 1024 characters",
            ));
        }
        if !s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(NameError::new(
                "header value",
                s,
                "must be printable ASCII (no control characters or newlines)",
            ));
        }
        if s.contains(['"', '\\', '{', '}']) {
            return Err(NameError::new(
                "header value",
                s,
                "must not contain '\"', '\\', '{' or '}'",
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

impl HeaderValue {
    /// The value as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams() {
        for (good, shown) in [
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("[::1]:9000", "[::1]:9000"),
            ("App.internal:80", "app.internal:80"),
        ] {
            assert_eq!(good.parse::<Upstream>().unwrap().to_string(), shown);
        }
        for bad in [
            "127.0.0.1",
            "host:0",
            "host:99999",
            "[nothex]:80",
            "*.x.com:80",
            "a b:80",
            "{upstream}:80",
            "h:80\nreverse_proxy evil",
        ] {
            let err = bad.parse::<Upstream>().unwrap_err();
            assert_eq!(err.field, "upstream", "{bad}");
        }
    }

    #[test]
    fn headers() {
        assert!("X-Frame-Options".parse::<HeaderName>().is_ok());
        assert!("X Frame".parse::<HeaderName>().is_err());
        assert!("DENY".parse::<HeaderValue>().is_ok());
        assert!(
            "max-age=63072000; includeSubDomains"
                .parse::<HeaderValue>()
                .is_ok()
        );
        for bad in ["a\nb", "a\"b", "{http.host}", "a\\b"] {
            assert!(bad.parse::<HeaderValue>().is_err(), "{bad}");
        }
    }
}
