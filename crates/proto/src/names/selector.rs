//! Label selectors: which hosts a call means, written as Kubernetes writes them:
//! `role=edge,region=fra` (each label equal), `region!=fra`, `gpu` (has the label), `!gpu`
//! (has not). Every requirement must hold; the empty selector matches every host.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use super::{LabelKey, LabelValue, NameError};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Absent(String),
}

/// A parsed selector.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct Selector(Vec<Requirement>);

impl FromStr for Selector {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > 4096 {
            return Err(NameError::new("selector", s, "must be at most 4096 bytes"));
        }
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let key = |k: &str| k.trim().parse::<LabelKey>().map(|k| k.0);
            let value = |v: &str| v.trim().parse::<LabelValue>().map(|v| v.0);
            let r = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(key(k)?, value(v)?)
            } else if let Some((k, v)) = part.split_once('=') {
                Requirement::Equals(key(k)?, value(v.strip_prefix('=').unwrap_or(v))?)
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::Absent(key(k)?)
            } else {
                Requirement::Exists(key(part)?)
            };
            out.push(r);
        }
        out.sort();
        out.dedup();
        Ok(Self(out))
    }
}

impl Selector {
    /// Whether every requirement holds for `labels`.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::Absent(k) => !labels.contains_key(k),
        })
    }

    /// The selector that matches every host.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|r| match r {
                Requirement::Equals(k, v) => format!("{k}={v}"),
                Requirement::NotEquals(k, v) => format!("{k}!={v}"),
                Requirement::Exists(k) => k.clone(),
                Requirement::Absent(k) => format!("!{k}"),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn every_requirement_must_hold() {
        let s: Selector = "role=edge, region!=fra,gpu,!retired".parse().unwrap();
        assert!(s.matches(&labels(&[("role", "edge"), ("region", "ams"), ("gpu", "")])));
        assert!(!s.matches(&labels(&[
            ("role", "edge"),
            ("region", "fra"),
            ("gpu", "1")
        ])));
        assert!(!s.matches(&labels(&[("role", "edge"), ("gpu", "1"), ("retired", "y")])));
        assert!(!s.matches(&labels(&[("role", "db"), ("gpu", "1")])));
        assert_eq!(s.to_string(), "role=edge,region!=fra,gpu,!retired");
        assert!("".parse::<Selector>().unwrap().matches(&labels(&[])));
        assert!(
            "role==edge"
                .parse::<Selector>()
                .unwrap()
                .matches(&labels(&[("role", "edge")]))
        );
    }

    #[test]
    fn bad_keys_are_refused_naming_the_rule() {
        let e = "Role=edge".parse::<Selector>().unwrap_err();
        assert_eq!(e.field, "label key");
        assert!("=edge".parse::<Selector>().is_err());
        assert!("a=\u{7}".parse::<Selector>().is_err());
    }
}
