//! `agent.toml`: the raw file is parsed once into a validated [`Config`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::transport::ControllerUrl;

/// The agent's default config file.
pub const DEFAULT_CONFIG: &str = "/etc/gatehouse/agent.toml";
/// The controller's default agent port.
pub const DEFAULT_AGENT_PORT: u16 = 7443;

/// The config file could not be used. The message names the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: field `{field}`: {message}")]
    Field {
        path: PathBuf,
        field: &'static str,
        message: String,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    controller: Option<String>,
    ca_hash: Option<String>,
    root: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    tls_dir: Option<PathBuf>,
    report_interval: Option<String>,
}

/// The agent's validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the controller is; when absent, the address saved at enrollment is used.
    pub controller: Option<ControllerUrl>,
    /// The controller CA pin, for enrolling as a service (`sha256:…`).
    pub ca_hash: Option<String>,
    /// Where the agent keeps its files.
    pub paths: Paths,
    /// How often to report until the controller says otherwise.
    pub report_interval: Duration,
}

/// Every path the agent writes, below one root so tests and dev mode run without root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// `/var/lib/gatehouse-agent`: desired state, status, enrollment record.
    pub state_dir: PathBuf,
    /// `/etc/gatehouse/tls`: identity and controller CA.
    pub tls_dir: PathBuf,
}

impl Paths {
    /// The default paths under `root` (`/` in production).
    pub fn under(root: &Path) -> Self {
        Self {
            state_dir: join_root(root, Path::new("/var/lib/gatehouse-agent")),
            tls_dir: join_root(root, Path::new("/etc/gatehouse/tls")),
        }
    }

    /// The agent's key and certificate chain, one file (0600), replaced atomically.
    pub fn identity(&self) -> PathBuf {
        self.tls_dir.join("agent.pem")
    }

    /// The controller CA pinned at enrollment.
    pub fn controller_ca(&self) -> PathBuf {
        self.tls_dir.join("controller-ca.crt")
    }

    /// Who the agent is and where its controller is.
    pub fn enrollment(&self) -> PathBuf {
        self.state_dir.join("enrollment.json")
    }

    /// The last desired state the agent accepted.
    pub fn desired_state(&self) -> PathBuf {
        self.state_dir.join("desired-state.pb")
    }

    /// What the agent is doing, for `gatehouse-agent status`.
    pub fn status(&self) -> PathBuf {
        self.state_dir.join("status.json")
    }
}

/// Reads a config file; a missing file reads as empty (all defaults) unless `required`.
pub fn read_config_text(path: &Path, required: bool) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(String::new()),
        other => other,
    }
}

/// `root` + an absolute path.
pub fn join_root(root: &Path, path: &Path) -> PathBuf {
    match path.strip_prefix("/") {
        Ok(rel) => root.join(rel),
        Err(_) => root.join(path),
    }
}

impl Config {
    /// Defaults for everything, with paths under `root`.
    pub fn with_root(root: &Path) -> Self {
        Self {
            controller: None,
            ca_hash: None,
            paths: Paths::under(root),
            report_interval: Duration::from_secs(30),
        }
    }

    /// Reads `path`. A missing file is an error only when `required` (it was named explicitly).
    pub fn load(path: &Path, required: bool) -> Result<Self, ConfigError> {
        let text = read_config_text(path, required).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses config text; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let field = |field, message: String| ConfigError::Field {
            path: path.to_owned(),
            field,
            message,
        };
        let root = raw.root.unwrap_or_else(|| PathBuf::from("/"));
        if !root.is_absolute() {
            return Err(field("root", "must be an absolute path".into()));
        }
        let mut config = Self::with_root(&root);
        if let Some(dir) = raw.state_dir {
            config.paths.state_dir = join_root(&root, &dir);
        }
        if let Some(dir) = raw.tls_dir {
            config.paths.tls_dir = join_root(&root, &dir);
        }
        if let Some(url) = raw.controller {
            config.controller = Some(
                ControllerUrl::parse(&url, DEFAULT_AGENT_PORT)
                    .map_err(|m| field("controller", m))?,
            );
        }
        if let Some(hash) = raw.ca_hash {
            config.ca_hash =
                Some(crate::pki::parse_ca_hash(&hash).map_err(|m| field("ca_hash", m))?);
        }
        if let Some(interval) = raw.report_interval {
            config.report_interval =
                parse_interval(&interval).map_err(|m| field("report_interval", m))?;
        }
        Ok(config)
    }
}

/// Parses a duration such as `30s` or `5m`, at least one second.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration like 30s or 5m: {e}"))?;
    if d < Duration::from_secs(1) {
        return Err(format!("{text:?} is shorter than one second"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_file() {
        let c = Config::parse(
            Path::new("agent.toml"),
            r#"
            controller = "https://ctl.example.com"
            ca_hash = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
            root = "/sandbox"
            report_interval = "10s"
            "#,
        )
        .unwrap();
        assert_eq!(c.controller.unwrap().port(), 7443);
        assert_eq!(
            c.paths.state_dir,
            Path::new("/sandbox/var/lib/gatehouse-agent")
        );
        assert_eq!(
            c.paths.identity(),
            Path::new("/sandbox/etc/gatehouse/tls/agent.pem")
        );
        assert_eq!(c.report_interval, Duration::from_secs(10));
    }

    #[test]
    fn errors_name_the_field() {
        let p = Path::new("/etc/gatehouse/agent.toml");
        let e = Config::parse(p, "controller = \"http://x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`controller`") && e.contains("https://"), "{e}");
        let e = Config::parse(p, "report_interval = \"soon\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`report_interval`"), "{e}");
        let e = Config::parse(p, "colour = 1").unwrap_err().to_string();
        assert!(e.contains("colour"), "{e}");
        let e = Config::parse(p, "root = \"rel\"").unwrap_err().to_string();
        assert!(e.contains("`root`"), "{e}");
    }

    #[test]
    fn a_missing_optional_file_means_defaults() {
        let c = Config::load(Path::new("/nonexistent/agent.toml"), false).unwrap();
        assert_eq!(c.paths, Paths::under(Path::new("/")));
        assert!(Config::load(Path::new("/nonexistent/agent.toml"), true).is_err());
    }
}
