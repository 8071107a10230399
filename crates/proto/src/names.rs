//! Validated names. Each type can only be built through `FromStr`, which checks the rule the
//! error message names.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

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
    fn roles_order() {
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Viewer);
        assert_eq!("operator".parse::<Role>().unwrap(), Role::Operator);
        assert!("root".parse::<Role>().is_err());
    }
}
