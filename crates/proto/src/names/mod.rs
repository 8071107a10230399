//! Validated names. Each type can only be built through `FromStr`, which checks the rule the
//! error message names.

mod selector;
mod site;
mod tunnel;
mod wireguard;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

pub use selector::Selector;
pub use site::{HeaderName, HeaderValue, Upstream};
pub use tunnel::{TunnelName, TunnelRoute, TunnelService, TunnelToken};
pub use wireguard::{InterfaceName, WgEndpoint, WgKey};

/// Why a name was refused: the field it came from and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field} {value:?}: {rule}")]
pub struct NameError {
    /// The kind of name, for example "agent id".
    pub field: &'static str,
    /// The offending input (truncated to 80 characters).
    pub value: String,
    /// The rule it broke.
    pub rule: &'static str,
}

impl NameError {
    fn new(field: &'static str, value: &str, rule: &'static str) -> Self {
        let value = value.chars().take(80).collect();
        Self { field, value, rule }
    }
}

/// An agent id: 16 characters of `[a-z0-9]`, chosen by the controller at enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentId(String);

impl AgentId {
    /// The length of every agent id.
    pub const LEN: usize = 16;

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URI SAN the agent's identity certificate carries.
    pub fn uri(&self) -> String {
        format!("{}{}", crate::AGENT_URI_PREFIX, self.0)
    }

    /// Reads the id back from an identity certificate's URI SAN.
    pub fn from_uri(uri: &str) -> Result<Self, NameError> {
        let id = uri.strip_prefix(crate::AGENT_URI_PREFIX).ok_or_else(|| {
            NameError::new(
                "agent uri",
                uri,
                "must start with spiffe://gatehouse/agent/",
            )
        })?;
        id.parse()
    }
}

impl FromStr for AgentId {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != Self::LEN {
            return Err(NameError::new(
                "agent id",
                s,
                "must be exactly 16 characters",
            ));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(NameError::new(
                "agent id",
                s,
                "may contain only lowercase letters a-z and digits 0-9",
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A label key: 1–63 characters of `[a-z0-9._-]`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LabelKey(String);

impl FromStr for LabelKey {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 63 {
            return Err(NameError::new("label key", s, "must be 1 to 63 characters"));
        }
        if !s.as_bytes()[0].is_ascii_alphanumeric() {
            return Err(NameError::new(
                "label key",
                s,
                "must start with a letter or digit",
            ));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        {
            return Err(NameError::new(
                "label key",
                s,
                "may contain only a-z, 0-9, '.', '_' and '-'",
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

impl LabelKey {
    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A label value: at most 253 printable characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LabelValue(String);

impl FromStr for LabelValue {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > 253 {
            return Err(NameError::new(
                "label value",
                s,
                "must be at most 253 bytes",
            ));
        }
        if s.chars().any(char::is_control) {
            return Err(NameError::new(
                "label value",
                s,
                "must not contain control characters",
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

impl LabelValue {
    /// The value as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Validates a whole label map (as it arrives in a request) and returns it sorted.
pub fn validate_labels<'a>(
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<BTreeMap<String, String>, NameError> {
    let mut out = BTreeMap::new();
    for (k, v) in labels {
        let k: LabelKey = k.parse()?;
        let v: LabelValue = v.parse()?;
        out.insert(k.0, v.0);
    }
    if out.len() > 64 {
        return Err(NameError::new(
            "labels",
            &out.len().to_string(),
            "at most 64 labels",
        ));
    }
    Ok(out)
}

/// Parses `key=value` as given on a command line.
pub fn parse_label_arg(arg: &str) -> Result<(String, String), NameError> {
    let (k, v) = arg
        .split_once('=')
        .ok_or_else(|| NameError::new("label", arg, "must look like key=value"))?;
    let k: LabelKey = k.parse()?;
    let v: LabelValue = v.parse()?;
    Ok((k.0, v.0))
}

/// A DNS name as it may appear in a certificate or a Caddy site address: lowercase LDH labels of
/// 1–63 characters, at most 253 characters in all, IDNA names in their `xn--` form, and `*` only
/// as the whole leftmost label, no trailing dot (one canonical form). Input is lowercased.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainName(String);

impl FromStr for DomainName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |rule| NameError::new("domain", s, rule);
        if s.is_empty() {
            return Err(err("must not be empty"));
        }
        if let Some(c) = s.chars().find(|c| !c.is_ascii()) {
            let _ = c;
            return Err(err(
                "must be ASCII: write internationalised names in their xn-- form",
            ));
        }
        if s.chars()
            .any(|c| c.is_ascii_whitespace() || c.is_ascii_control())
        {
            return Err(err("must not contain whitespace or control characters"));
        }
        if s.contains(['{', '}']) {
            return Err(err("must not contain '{' or '}' (no Caddy placeholders)"));
        }
        if s.contains('/') {
            return Err(err("must not contain '/'"));
        }
        if s.contains("..") {
            return Err(err("must not contain an empty label ('..')"));
        }
        // One canonical form: the root's empty label is not written.
        if s.ends_with('.') {
            return Err(err(
                "must not end with '.' (an empty last label): write example.com, not example.com.",
            ));
        }
        let name = s.to_ascii_lowercase();
        if name.len() > 253 {
            return Err(err("must be at most 253 characters"));
        }
        for (i, label) in name.split('.').enumerate() {
            if label == "*" {
                if i != 0 {
                    return Err(err("'*' may only be the leftmost label"));
                }
                continue;
            }
            if label.is_empty() || label.len() > 63 {
                return Err(err("each label must be 1 to 63 characters"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(err(
                    "may contain only a-z, 0-9, '-' and '.' (and '*' as the leftmost label)",
                ));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(err("a label must not start or end with '-'"));
            }
        }
        if name == "*" {
            return Err(err("a wildcard needs a parent domain, like *.example.com"));
        }
        Ok(Self(name))
    }
}

impl DomainName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether it is a wildcard (`*.example.com`).
    pub fn is_wildcard(&self) -> bool {
        self.0.starts_with("*.")
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of a gatehouse resource on a host (a site, a certificate): 1–63 characters of
/// `[a-z0-9-]`, starting with a letter or digit. Safe in file names and unit names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceName(String);

impl FromStr for ResourceName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |rule| NameError::new("name", s, rule);
        if s.is_empty() || s.len() > 63 {
            return Err(err("must be 1 to 63 characters"));
        }
        if !s.as_bytes()[0].is_ascii_lowercase() && !s.as_bytes()[0].is_ascii_digit() {
            return Err(err("must start with a lowercase letter or a digit"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(err("may contain only a-z, 0-9 and '-'"));
        }
        Ok(Self(s.to_owned()))
    }
}

impl ResourceName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A name derived from a domain: `www.example.com` → `www-example-com`,
    /// `*.example.com` → `wildcard-example-com` (cut to 63 characters).
    pub fn from_domain(domain: &DomainName) -> Self {
        let text = domain.as_str().replace("*.", "wildcard.").replace('.', "-");
        let cut: String = text.chars().take(63).collect();
        Self(cut.trim_end_matches('-').to_owned())
    }
}

impl fmt::Display for ResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The role an API token carries. Each role can do what the ones below it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads everything, changes nothing.
    Viewer,
    /// Manages hosts, sites and certificates.
    Operator,
    /// Also manages API tokens.
    Admin,
}

impl Role {
    /// The role as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl FromStr for Role {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            _ => Err(NameError::new(
                "role",
                s,
                "must be one of admin, operator, viewer",
            )),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids() {
        assert!("abcdefgh01234567".parse::<AgentId>().is_ok());
        for bad in [
            "",
            "short",
            "ABCDEFGH01234567",
            "abcdefgh0123456/",
            "abcdefgh01234567x",
            "../../etc/passwd",
        ] {
            let err = bad.parse::<AgentId>().unwrap_err();
            assert_eq!(err.field, "agent id", "{bad}");
        }
        let id: AgentId = "abcdefgh01234567".parse().unwrap();
        assert_eq!(AgentId::from_uri(&id.uri()).unwrap(), id);
        assert!(AgentId::from_uri("spiffe://other/agent/abcdefgh01234567").is_err());
    }

    #[test]
    fn labels() {
        assert_eq!(
            parse_label_arg("env=prod").unwrap(),
            ("env".into(), "prod".into())
        );
        assert_eq!(
            parse_label_arg("env").unwrap_err().rule,
            "must look like key=value"
        );
        assert!(parse_label_arg("Env=prod").is_err());
        assert!(parse_label_arg("-x=1").is_err());
        assert!(parse_label_arg("k=a\nb").is_err());
        assert!(parse_label_arg("k=").is_ok());
    }

    #[test]
    fn domains() {
        for good in [
            "example.com",
            "WWW.Example.COM",
            "*.example.com",
            "xn--bcher-kva.example",
            "a-b.c1.io",
            "localhost",
        ] {
            let d: DomainName = good.parse().unwrap_or_else(|e| panic!("{good}: {e}"));
            assert_eq!(d.as_str(), d.as_str().to_ascii_lowercase());
        }
        assert_eq!(
            "Example.COM".parse::<DomainName>().unwrap().as_str(),
            "example.com"
        );
        let long_label = format!("{}.com", "a".repeat(64));
        let long_name = format!("{}.com", vec!["a".repeat(60); 5].join("."));
        for (bad, rule) in [
            ("", "must not be empty"),
            ("exa mple.com", "whitespace"),
            ("example.com\nevil", "whitespace"),
            ("{http.request.host}", "placeholders"),
            ("ex}ample.com", "placeholders"),
            ("a/b.com", "'/'"),
            ("a..b.com", "'..'"),
            ("..example.com", "'..'"),
            ("example.com.", "must not end with '.'"),
            (".", "must not end with '.'"),
            (".example.com", "1 to 63"),
            ("www.*.example.com", "leftmost"),
            ("*", "parent domain"),
            ("-a.com", "start or end"),
            ("a_b.com", "may contain only"),
            ("bücher.example", "xn--"),
            (long_label.as_str(), "1 to 63"),
            (long_name.as_str(), "253"),
        ] {
            let err = bad.parse::<DomainName>().unwrap_err();
            assert_eq!(err.field, "domain");
            assert!(err.rule.contains(rule), "{bad:?}: {err}");
        }
    }

    #[test]
    fn resource_names() {
        assert!("www-example-com".parse::<ResourceName>().is_ok());
        for bad in ["", "-x", "Www", "a.b", "a/b", "../x", &"a".repeat(64)] {
            assert!(bad.parse::<ResourceName>().is_err(), "{bad}");
        }
        let d: DomainName = "*.Example.com".parse().unwrap();
        assert_eq!(
            ResourceName::from_domain(&d).as_str(),
            "wildcard-example-com"
        );
    }

    #[test]
    fn roles_order() {
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Viewer);
        assert_eq!("operator".parse::<Role>().unwrap(), Role::Operator);
        assert!("root".parse::<Role>().is_err());
    }
}
