//! `agent.toml`: the raw file is parsed once into a validated [`Config`].

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::transport::ControllerUrl;

/// The agent's default config file.
pub const DEFAULT_CONFIG: &str = "/etc/gatehouse/agent.toml";
/// The controller's default agent port.
pub const DEFAULT_AGENT_PORT: u16 = 7443;

pub use gatehouse_common::config::ConfigError;
use gatehouse_common::config::{field_error, parse_toml, read_text};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    controller: Option<String>,
    controllers: Option<Vec<String>>,
    ca_hash: Option<String>,
    root: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    tls_dir: Option<PathBuf>,
    report_interval: Option<String>,
    stream_timeout: Option<String>,
    recheck_interval: Option<String>,
    log: Option<String>,
    caddy: Option<RawCaddy>,
    tunnels: Option<RawTunnels>,
    wireguard: Option<RawWireguard>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWireguard {
    userspace: Option<String>,
    wireguard_go: Option<PathBuf>,
}

/// How WireGuard interfaces run on this host when the kernel has no WireGuard module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireguardConfig {
    /// `gatehouse-wg@IFACE.service`, or wireguard-go started by the agent itself (it detaches).
    pub userspace: crate::host::wireguard::Userspace,
    /// The wireguard-go executable.
    pub wireguard_go: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTunnels {
    cloudflared: Option<PathBuf>,
    unit_dir: Option<PathBuf>,
    metrics_ports: Option<String>,
    check_interval: Option<String>,
    restart_unready_after: Option<String>,
}

/// How tunnels run on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelsConfig {
    /// The cloudflared executable.
    pub cloudflared: PathBuf,
    /// Where the agent writes its version of the tunnel template unit when its paths differ
    /// from the packaged one's (`/etc/systemd/system`).
    pub unit_dir: PathBuf,
    /// The ports the agent hands out for cloudflared's metrics and `/ready` (127.0.0.1).
    pub metrics_ports: std::ops::RangeInclusive<u16>,
    /// How often each tunnel's `/ready` is read.
    pub check_interval: Duration,
    /// A tunnel whose `/ready` has failed this long is restarted.
    pub restart_unready_after: Duration,
}

/// The packaged cloudflared path.
pub const CLOUDFLARED: &str = "/usr/bin/cloudflared";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCaddy {
    enabled: Option<bool>,
    caddyfile: Option<PathBuf>,
    sites_dir: Option<PathBuf>,
    admin: Option<String>,
    bin: Option<PathBuf>,
    user: Option<String>,
    check_address: Option<String>,
}

/// Where Caddy is and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaddyConfig {
    /// The main Caddyfile (created with just the import line when missing).
    pub caddyfile: PathBuf,
    /// The directory of gatehouse's site snippets.
    pub sites_dir: PathBuf,
    /// Caddy's admin endpoint, `http://HOST:PORT`.
    pub admin: String,
    /// The caddy executable.
    pub bin: PathBuf,
    /// The user Caddy runs as: validation runs as this user, certificate files belong to it.
    pub user: Option<String>,
    /// Where to connect to check what a site serves.
    pub check_address: IpAddr,
}

/// The agent's validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the controller is; when absent, the address saved at enrollment is used.
    pub controller: Option<ControllerUrl>,
    /// More controllers of the same fleet (one PostgreSQL), tried in turn after `controller`
    /// when the one the agent streams to goes away; identity and generation stay.
    pub other_controllers: Vec<ControllerUrl>,
    /// The controller CA pin, for enrolling as a service (`sha256:…`).
    pub ca_hash: Option<String>,
    /// Where the agent keeps its files.
    pub paths: Paths,
    /// How often to report until the controller says otherwise.
    pub report_interval: Duration,
    /// How long the controller may leave a ping unanswered before the stream is torn down
    /// and opened again.
    pub stream_timeout: Duration,
    /// How often the agent looks at its host again on its own (renewals, retries, drift),
    /// whether or not the controller is reachable.
    pub recheck_interval: Duration,
    /// Caddy, when this host's sites are managed (`caddy.enabled`, the default).
    pub caddy: Option<CaddyConfig>,
    /// The log filter (`GATEHOUSE_LOG` wins when set).
    pub log: String,
    pub tunnels: TunnelsConfig,
    pub wireguard: WireguardConfig,
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

    /// Site certificates and keys (0700, owned by Caddy's user).
    pub fn site_certs(&self) -> PathBuf {
        self.tls_dir.join("sites")
    }

    /// Which site certificate files are current.
    pub fn certificates_index(&self) -> PathBuf {
        self.state_dir.join("certificates.json")
    }

    /// Keys made on this host whose certificates are still awaited (0600).
    pub fn pending_keys(&self) -> PathBuf {
        self.state_dir.join("pending-keys.json")
    }

    /// The entries of the allowlists this host's sites use, as last received (0600).
    pub fn allowlists(&self) -> PathBuf {
        self.state_dir.join("allowlists.json")
    }

    /// One directory per tunnel (0700) with its token file (0600) and its unit's settings.
    pub fn wireguard(&self) -> PathBuf {
        self.state_dir.join("wireguard")
    }

    /// Where the tunnels' token files are.
    pub fn tunnels(&self) -> PathBuf {
        self.state_dir.join("tunnels")
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
            other_controllers: Vec::new(),
            ca_hash: None,
            paths: Paths::under(root),
            report_interval: Duration::from_secs(30),
            stream_timeout: Duration::from_secs(60),
            recheck_interval: Duration::from_secs(60),
            caddy: Some(default_caddy(root)),
            log: "info".into(),
            tunnels: TunnelsConfig {
                cloudflared: PathBuf::from(CLOUDFLARED),
                unit_dir: join_root(root, Path::new("/etc/systemd/system")),
                metrics_ports: 20300..=20999,
                check_interval: Duration::from_secs(5),
                restart_unready_after: Duration::from_secs(60),
            },
            wireguard: WireguardConfig {
                // Without systemd running (a container, a test), wireguard-go runs on its own.
                userspace: if Path::new("/run/systemd/system").exists() {
                    crate::host::wireguard::Userspace::Systemd
                } else {
                    crate::host::wireguard::Userspace::Direct
                },
                wireguard_go: PathBuf::from("/usr/bin/wireguard-go"),
            },
        }
    }

    /// Reads `path`. A missing file is an error only when `required` (it was named explicitly).
    pub fn load(path: &Path, required: bool) -> Result<Self, ConfigError> {
        Self::parse(path, &read_text(path, required)?)
    }

    /// Parses config text; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = parse_toml(path, text)?;
        let field = field_error(path);
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
        for url in raw.controllers.unwrap_or_default() {
            config.other_controllers.push(
                ControllerUrl::parse(&url, DEFAULT_AGENT_PORT)
                    .map_err(|m| field("controllers", m))?,
            );
        }
        if let Some(hash) = raw.ca_hash {
            config.ca_hash =
                Some(crate::pki::parse_ca_hash(&hash).map_err(|m| field("ca_hash", m))?);
        }
        if let Some(raw_caddy) = raw.caddy {
            config.caddy = caddy_config(&root, raw_caddy).map_err(|(f, m)| field(f, m))?;
        }
        if let Some(w) = raw.wireguard {
            if let Some(u) = w.userspace {
                config.wireguard.userspace = match u.as_str() {
                    "systemd" => crate::host::wireguard::Userspace::Systemd,
                    "direct" => crate::host::wireguard::Userspace::Direct,
                    other => {
                        return Err(field(
                            "wireguard.userspace",
                            format!("{other:?} is neither systemd nor direct"),
                        ));
                    }
                };
            }
            if let Some(bin) = w.wireguard_go {
                if !bin.is_absolute() {
                    return Err(field(
                        "wireguard.wireguard_go",
                        "must be an absolute path".into(),
                    ));
                }
                config.wireguard.wireguard_go = bin;
            }
        }
        if let Some(raw_tunnels) = raw.tunnels {
            tunnels_config(&root, &mut config.tunnels, raw_tunnels)
                .map_err(|(f, m)| field(f, m))?;
        }
        if let Some(interval) = raw.report_interval {
            config.report_interval =
                parse_interval(&interval).map_err(|m| field("report_interval", m))?;
        }
        if let Some(interval) = raw.recheck_interval {
            config.recheck_interval =
                parse_interval(&interval).map_err(|m| field("recheck_interval", m))?;
        }
        if let Some(timeout) = raw.stream_timeout {
            config.stream_timeout =
                parse_interval(&timeout).map_err(|m| field("stream_timeout", m))?;
        }
        if let Some(log) = raw.log {
            gatehouse_common::logging::check_filter(&log).map_err(|m| field("log", m))?;
            config.log = log;
        }
        Ok(config)
    }

    /// The config to run with after the file was read again: what can change while running
    /// (log, report and recheck intervals, stream timeout, Caddy) from `new`, the rest kept.
    /// Also the settings that changed but wait for a restart.
    pub fn reloaded(&self, new: Config) -> (Config, Vec<&'static str>) {
        let restart = gatehouse_common::config::restart_needed([
            ("controller", self.controller != new.controller),
            (
                "controllers",
                self.other_controllers != new.other_controllers,
            ),
            ("ca_hash", self.ca_hash != new.ca_hash),
            ("root, state_dir, tls_dir", self.paths != new.paths),
        ]);
        let config = Config {
            controller: self.controller.clone(),
            other_controllers: self.other_controllers.clone(),
            ca_hash: self.ca_hash.clone(),
            paths: self.paths.clone(),
            ..new
        };
        (config, restart)
    }
}

fn default_caddy(root: &Path) -> CaddyConfig {
    CaddyConfig {
        caddyfile: join_root(root, Path::new("/etc/caddy/Caddyfile")),
        sites_dir: join_root(root, Path::new("/etc/caddy/gatehouse.d")),
        admin: "http://localhost:2019".into(),
        bin: PathBuf::from("caddy"),
        user: Some("caddy".into()),
        check_address: "127.0.0.1".parse().expect("valid"),
    }
}

fn caddy_config(root: &Path, raw: RawCaddy) -> Result<Option<CaddyConfig>, (&'static str, String)> {
    if raw.enabled == Some(false) {
        return Ok(None);
    }
    let mut c = default_caddy(root);
    if let Some(p) = raw.caddyfile {
        c.caddyfile = join_root(root, &p);
    }
    if let Some(p) = raw.sites_dir {
        let text = p.display().to_string();
        if text.contains(|ch: char| ch.is_whitespace() || ch == '"' || ch == '{' || ch == '}') {
            return Err((
                "caddy.sites_dir",
                "must not contain whitespace, quotes or braces".into(),
            ));
        }
        c.sites_dir = join_root(root, &p);
    }
    if let Some(admin) = raw.admin {
        if !admin.starts_with("http://") && !admin.starts_with("https://") {
            return Err((
                "caddy.admin",
                format!("{admin:?} must be a URL like http://localhost:2019"),
            ));
        }
        c.admin = admin;
    }
    if let Some(bin) = raw.bin {
        c.bin = bin;
    }
    if let Some(user) = raw.user {
        c.user = (!user.is_empty()).then_some(user);
    }
    if let Some(addr) = raw.check_address {
        c.check_address = addr.parse().map_err(|_| {
            (
                "caddy.check_address",
                format!("{addr:?} is not an IP address"),
            )
        })?;
    }
    Ok(Some(c))
}

/// Text that goes into a unit file as a path: absolute, without whitespace, quotes,
/// backslashes or `%` (systemd's specifier character).
fn unit_path(field: &'static str, path: &Path) -> Result<(), (&'static str, String)> {
    let text = path.display().to_string();
    if !path.is_absolute()
        || text.contains(|c: char| c.is_whitespace() || c.is_control() || "\"'\\%;".contains(c))
    {
        return Err((
            field,
            format!(
                "{text:?} must be an absolute path without whitespace, quotes, '\\', '%' or ';'"
            ),
        ));
    }
    Ok(())
}

fn tunnels_config(
    root: &Path,
    c: &mut TunnelsConfig,
    raw: RawTunnels,
) -> Result<(), (&'static str, String)> {
    if let Some(bin) = raw.cloudflared {
        unit_path("tunnels.cloudflared", &bin)?;
        c.cloudflared = bin;
    }
    if let Some(dir) = raw.unit_dir {
        c.unit_dir = join_root(root, &dir);
    }
    if let Some(ports) = raw.metrics_ports {
        let bad = || {
            (
                "tunnels.metrics_ports",
                format!("{ports:?} must be a port range like 20300-20999"),
            )
        };
        let (a, b) = ports.split_once('-').ok_or_else(bad)?;
        let (a, b): (u16, u16) = (
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
        );
        if a == 0 || a > b {
            return Err(bad());
        }
        c.metrics_ports = a..=b;
    }
    if let Some(d) = raw.check_interval {
        c.check_interval = parse_interval(&d).map_err(|m| ("tunnels.check_interval", m))?;
    }
    if let Some(d) = raw.restart_unready_after {
        c.restart_unready_after =
            parse_interval(&d).map_err(|m| ("tunnels.restart_unready_after", m))?;
    }
    Ok(())
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
        let caddy = c.caddy.unwrap();
        assert_eq!(caddy.sites_dir, Path::new("/sandbox/etc/caddy/gatehouse.d"));
        assert_eq!(caddy.user.as_deref(), Some("caddy"));
        let off = Config::parse(Path::new("a.toml"), "[caddy]\nenabled = false").unwrap();
        assert!(off.caddy.is_none());
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
        let e = Config::parse(p, "log = \"agent=loud\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`log`"), "{e}");
        let old = Config::parse(p, "").unwrap();
        let (running, restart) = old.reloaded(
            Config::parse(p, "recheck_interval = \"5s\"\nstate_dir = \"/srv/x\"").unwrap(),
        );
        assert_eq!(running.recheck_interval, Duration::from_secs(5));
        assert_eq!(running.paths, old.paths);
        assert_eq!(restart, ["root, state_dir, tls_dir"]);
        let e = Config::parse(p, "colour = 1").unwrap_err().to_string();
        assert!(e.contains("colour"), "{e}");
        let e = Config::parse(p, "root = \"rel\"").unwrap_err().to_string();
        assert!(e.contains("`root`"), "{e}");
        let e = Config::parse(p, "[caddy]\nadmin = \"localhost:2019\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`caddy.admin`"), "{e}");
        let e = Config::parse(p, "[caddy]\nsites_dir = \"/etc/caddy/my sites\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`caddy.sites_dir`"), "{e}");
        for (text, field) in [
            ("cloudflared = \"bin/cloudflared\"", "`tunnels.cloudflared`"),
            (
                "cloudflared = \"/opt/cf 1/cloudflared\"",
                "`tunnels.cloudflared`",
            ),
            ("metrics_ports = \"30000-20000\"", "`tunnels.metrics_ports`"),
            ("metrics_ports = \"many\"", "`tunnels.metrics_ports`"),
            (
                "restart_unready_after = \"0s\"",
                "`tunnels.restart_unready_after`",
            ),
        ] {
            let e = Config::parse(p, &format!("[tunnels]\n{text}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(field), "{e}");
        }
        let c = Config::parse(p, "[tunnels]\nmetrics_ports = \"21000-21009\"").unwrap();
        assert_eq!(c.tunnels.metrics_ports, 21000..=21009);
    }

    #[test]
    fn a_missing_optional_file_means_defaults() {
        let c = Config::load(Path::new("/nonexistent/agent.toml"), false).unwrap();
        assert_eq!(c.paths, Paths::under(Path::new("/")));
        assert!(Config::load(Path::new("/nonexistent/agent.toml"), true).is_err());
    }
}
