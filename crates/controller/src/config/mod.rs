//! `controller.toml`: parsed once into a validated [`Config`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod alerts;
mod database;
pub use alerts::AlertsConfig;
pub use database::DatabaseUrl;
use database::check_database;

/// The controller's default config file.
pub const DEFAULT_CONFIG: &str = "/etc/gatehouse/controller.toml";

pub use gatehouse_common::config::ConfigError;
use gatehouse_common::config::{field_error, parse_toml, read_text};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    data_dir: Option<PathBuf>,
    database: Option<String>,
    agent_listen: Option<String>,
    admin_listen: Option<String>,
    http_listen: Option<String>,
    admin_socket: Option<PathBuf>,
    server_names: Option<Vec<String>>,
    master_key_file: Option<PathBuf>,
    agent_cert_lifetime: Option<String>,
    agent_cert_grace: Option<String>,
    site_cert_lifetime: Option<String>,
    report_interval: Option<String>,
    caddy_acme_ca: Option<String>,
    caddy_acme_ca_root: Option<String>,
    acme_dns_servers: Option<Vec<String>>,
    acme_propagation_timeout: Option<String>,
    stream_timeout: Option<String>,
    issuance_limit: Option<u32>,
    first_request_timeout: Option<String>,
    idle_connection_timeout: Option<String>,
    enroll_failure_limit: Option<u32>,
    log: Option<String>,
    cloudflare_ranges: Option<Vec<String>>,
    checkin: Option<RawCheckin>,
    ui_enabled: Option<bool>,
    ui_url: Option<String>,
    ui_session: Option<String>,
    history_interval: Option<String>,
    history_retention: Option<String>,
    alerts: Option<alerts::RawAlerts>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheckin {
    trusted_proxies: Option<Vec<String>>,
    min_interval: Option<String>,
    failure_limit: Option<u32>,
}

/// Allowlist check-ins (`POST /v1/allowlist/checkin` on the HTTP port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckinConfig {
    /// Peers whose `CF-Connecting-IP` / `X-Forwarded-For` are believed (a reverse proxy, a
    /// tunnel, Cloudflare); from anyone else they are ignored.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// A device checking in again sooner is answered 429 with `Retry-After`.
    pub min_interval: Duration,
    /// Bad tokens one source address may send in any minute before it is slowed down.
    pub failure_limit: u32,
}

/// The controller's validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`.
    pub database: DatabaseUrl,
    pub agent_listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Plain HTTP: `/healthz` and `/metrics` (Prometheus).
    pub http_listen: SocketAddr,
    pub admin_socket: PathBuf,
    /// Names (DNS or IP) in the controller's server certificate: what agents dial.
    pub server_names: Vec<String>,
    pub master_key_file: PathBuf,
    pub agent_cert_lifetime: Duration,
    pub agent_cert_grace: Duration,
    /// Lifetime of certificates from the `internal` site issuer.
    pub site_cert_lifetime: Duration,
    pub report_interval: Duration,
    /// The ACME directory Caddy uses for DNS-only Cloudflare sites (empty: Caddy's defaults).
    pub caddy_acme_ca: String,
    /// A PEM file on the hosts with that CA's root (for private CAs).
    pub caddy_acme_ca_root: String,
    /// Where DNS-01 records are checked before the CA is asked to validate (IP:port); empty
    /// means each zone's Cloudflare name servers.
    pub acme_dns_servers: Vec<SocketAddr>,
    /// How long a DNS-01 record may take to appear there.
    pub acme_propagation_timeout: Duration,
    /// How long an agent may leave the controller's application-level ping unanswered before
    /// its stream is closed (the controller pings every third of this).
    pub stream_timeout: Duration,
    /// How many certificates the controller signs (or orders) per agent and certificate name
    /// in any minute, whatever the agent asks.
    pub issuance_limit: u32,
    /// A TLS connection (agent or admin port) that sends no request this long after its
    /// handshake is closed.
    pub first_request_timeout: Duration,
    /// A connection with no request open and nothing read for this long is closed.
    pub idle_connection_timeout: Duration,
    /// Failed enrollments one source address may make in any minute before it is refused
    /// without looking at its token.
    pub enroll_failure_limit: u32,
    /// The log filter (`GATEHOUSE_LOG` wins when set).
    pub log: String,
    /// The addresses Cloudflare's proxy connects from: a proxied site with an allowlist believes
    /// `CF-Connecting-IP` from these peers only.
    pub cloudflare_ranges: Vec<ipnet::IpNet>,
    pub checkin: CheckinConfig,
    /// The status page under `/ui/` on the HTTP port.
    pub ui_enabled: bool,
    /// The status page's address as people reach it (sign-in links, links in notifications);
    /// empty: `http://` and the HTTP port's address.
    pub ui_url: String,
    /// How long a status page sign-in lasts.
    pub ui_session: Duration,
    /// How often a host's reported metrics are kept for its history.
    pub history_interval: Duration,
    /// How long they are kept.
    pub history_retention: Duration,
    pub alerts: AlertsConfig,
}

/// Cloudflare's published proxy ranges (<https://www.cloudflare.com/ips/>, also `GET /ips`),
/// the default of `cloudflare_ranges`.
pub const CLOUDFLARE_RANGES: [&str; 22] = [
    "173.245.48.0/20",
    "103.21.244.0/22",
    "103.22.200.0/22",
    "103.31.4.0/22",
    "141.101.64.0/18",
    "108.162.192.0/18",
    "190.93.240.0/20",
    "188.114.96.0/20",
    "197.234.240.0/22",
    "198.41.128.0/17",
    "162.158.0.0/15",
    "104.16.0.0/13",
    "104.24.0.0/14",
    "172.64.0.0/13",
    "131.0.72.0/22",
    "2400:cb00::/32",
    "2606:4700::/32",
    "2803:f800::/32",
    "2405:b500::/32",
    "2405:8100::/32",
    "2a06:98c0::/29",
    "2c0f:f248::/32",
];

impl Config {
    /// Defaults with all state under `data_dir`.
    pub fn with_data_dir(data_dir: &Path) -> Self {
        Self {
            database: DatabaseUrl(format!(
                "sqlite://{}",
                data_dir.join("gatehouse.db").display()
            )),
            agent_listen: "0.0.0.0:7443".parse().expect("valid"),
            admin_listen: "0.0.0.0:7444".parse().expect("valid"),
            http_listen: "0.0.0.0:7480".parse().expect("valid"),
            admin_socket: PathBuf::from("/run/gatehouse-controller/admin.sock"),
            server_names: vec!["localhost".into(), "127.0.0.1".into()],
            master_key_file: data_dir.join("master.key"),
            agent_cert_lifetime: Duration::from_secs(7 * 24 * 3600),
            agent_cert_grace: Duration::from_secs(30 * 24 * 3600),
            site_cert_lifetime: Duration::from_secs(90 * 24 * 3600),
            report_interval: Duration::from_secs(30),
            caddy_acme_ca: String::new(),
            caddy_acme_ca_root: String::new(),
            acme_dns_servers: Vec::new(),
            acme_propagation_timeout: Duration::from_secs(300),
            stream_timeout: Duration::from_secs(60),
            issuance_limit: 10,
            first_request_timeout: Duration::from_secs(10),
            idle_connection_timeout: Duration::from_secs(300),
            enroll_failure_limit: 20,
            log: "info".into(),
            cloudflare_ranges: CLOUDFLARE_RANGES
                .iter()
                .map(|r| r.parse().expect("valid ranges"))
                .collect(),
            checkin: CheckinConfig {
                trusted_proxies: Vec::new(),
                min_interval: Duration::from_secs(10),
                failure_limit: 10,
            },
            ui_enabled: true,
            ui_url: String::new(),
            ui_session: Duration::from_secs(12 * 3600),
            history_interval: Duration::from_secs(60),
            history_retention: Duration::from_secs(7 * 24 * 3600),
            alerts: AlertsConfig::default(),
            data_dir: data_dir.to_owned(),
        }
    }

    /// Replaces the database URL (from `--database`), checking it like the config field.
    pub fn with_database(mut self, database: Option<String>) -> Result<Self, ConfigError> {
        if let Some(db) = database {
            check_database(&db).map_err(|message| ConfigError::Field {
                path: PathBuf::from("--database"),
                field: "database",
                message,
            })?;
            self.database = DatabaseUrl(db);
        }
        Ok(self)
    }

    /// Reads `path`; a missing file is an error only when `required`.
    pub fn load(path: &Path, required: bool) -> Result<Self, ConfigError> {
        Self::parse(path, &read_text(path, required)?)
    }

    /// Parses config text; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = parse_toml(path, text)?;
        let field = field_error(path);
        let data_dir = raw
            .data_dir
            .unwrap_or_else(|| PathBuf::from("/var/lib/gatehouse-controller"));
        if !data_dir.is_absolute() {
            return Err(field("data_dir", "must be an absolute path".into()));
        }
        let mut c = Self::with_data_dir(&data_dir);
        if let Some(db) = raw.database {
            if !(db.starts_with("sqlite:")
                || db.starts_with("postgres://")
                || db.starts_with("postgresql://"))
            {
                return Err(field(
                    "database",
                    "must start with sqlite:// or postgres://".into(),
                ));
            }
            c.database = DatabaseUrl(db);
        }
        let addr = |name, text: String| {
            text.parse::<SocketAddr>().map_err(|e| {
                field(
                    name,
                    format!("{text:?} is not an address like 0.0.0.0:7443: {e}"),
                )
            })
        };
        if let Some(a) = raw.agent_listen {
            c.agent_listen = addr("agent_listen", a)?;
        }
        if let Some(a) = raw.admin_listen {
            c.admin_listen = addr("admin_listen", a)?;
        }
        if let Some(a) = raw.http_listen {
            c.http_listen = addr("http_listen", a)?;
        }
        if let Some(p) = raw.admin_socket {
            c.admin_socket = p;
        }
        if let Some(names) = raw.server_names {
            if names.is_empty() {
                return Err(field(
                    "server_names",
                    "name at least one DNS name or address agents dial".into(),
                ));
            }
            c.server_names = names;
        }
        if let Some(p) = raw.master_key_file {
            c.master_key_file = p;
        }
        let networks = |name, list: &[String]| -> Result<Vec<ipnet::IpNet>, ConfigError> {
            list.iter()
                .map(|p| {
                    p.parse::<ipnet::IpNet>()
                        .map(|n| n.trunc())
                        .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                        .map_err(|_| {
                            field(
                                name,
                                format!("{p:?} is not an address or a CIDR like 10.0.0.0/8"),
                            )
                        })
                })
                .collect()
        };
        let duration = |name, text: String| {
            humantime::parse_duration(&text).map_err(|e| {
                field(
                    name,
                    format!("{text:?} is not a duration like 7d or 30s: {e}"),
                )
            })
        };
        if let Some(d) = raw.agent_cert_lifetime {
            c.agent_cert_lifetime = duration("agent_cert_lifetime", d)?;
            if c.agent_cert_lifetime < Duration::from_secs(10) {
                return Err(field("agent_cert_lifetime", "must be at least 10s".into()));
            }
        }
        if let Some(d) = raw.agent_cert_grace {
            c.agent_cert_grace = duration("agent_cert_grace", d)?;
        }
        if let Some(d) = raw.site_cert_lifetime {
            c.site_cert_lifetime = duration("site_cert_lifetime", d)?;
            if c.site_cert_lifetime < Duration::from_secs(60) {
                return Err(field("site_cert_lifetime", "must be at least 60s".into()));
            }
        }
        if let Some(url) = raw.caddy_acme_ca {
            if !url.starts_with("https://") {
                return Err(field(
                    "caddy_acme_ca",
                    "must be an https:// ACME directory URL".into(),
                ));
            }
            c.caddy_acme_ca = url;
        }
        if let Some(path) = raw.caddy_acme_ca_root {
            c.caddy_acme_ca_root = path;
        }
        if let Some(servers) = raw.acme_dns_servers {
            c.acme_dns_servers = servers
                .iter()
                .map(|s| {
                    s.parse().map_err(|_| {
                        field(
                            "acme_dns_servers",
                            format!("{s:?} is not an IP:port like 192.0.2.53:53"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(d) = raw.acme_propagation_timeout {
            c.acme_propagation_timeout = duration("acme_propagation_timeout", d)?;
        }
        if let Some(d) = raw.stream_timeout {
            c.stream_timeout = duration("stream_timeout", d)?;
            if c.stream_timeout < Duration::from_secs(1) {
                return Err(field("stream_timeout", "must be at least 1s".into()));
            }
        }
        if let Some(d) = raw.first_request_timeout {
            c.first_request_timeout = duration("first_request_timeout", d)?;
        }
        if let Some(d) = raw.idle_connection_timeout {
            c.idle_connection_timeout = duration("idle_connection_timeout", d)?;
        }
        // A limit of 0 would refuse everything: say so rather than lock the fleet out.
        let per_minute = |name: &'static str, n: u32, what: &str| {
            if n == 0 {
                Err(field(
                    name,
                    format!("must be at least 1 ({what} per minute)"),
                ))
            } else {
                Ok(n)
            }
        };
        if let Some(n) = raw.enroll_failure_limit {
            c.enroll_failure_limit =
                per_minute("enroll_failure_limit", n, "failed enrollments per address")?;
        }
        if let Some(n) = raw.issuance_limit {
            c.issuance_limit = per_minute("issuance_limit", n, "certificates per agent and name")?;
        }
        if let Some(d) = raw.report_interval {
            c.report_interval = duration("report_interval", d)?;
            if c.report_interval < Duration::from_secs(1) {
                return Err(field("report_interval", "must be at least 1s".into()));
            }
        }
        if let Some(log) = raw.log {
            gatehouse_common::logging::check_filter(&log).map_err(|m| field("log", m))?;
            c.log = log;
        }
        if let Some(ranges) = raw.cloudflare_ranges {
            c.cloudflare_ranges = networks("cloudflare_ranges", &ranges)?;
        }
        if let Some(checkin) = raw.checkin {
            if let Some(proxies) = checkin.trusted_proxies {
                c.checkin.trusted_proxies = networks("checkin.trusted_proxies", &proxies)?;
            }
            if let Some(d) = checkin.min_interval {
                c.checkin.min_interval = duration("checkin.min_interval", d)?;
            }
            if let Some(n) = checkin.failure_limit {
                c.checkin.failure_limit = per_minute(
                    "checkin.failure_limit",
                    n,
                    "bad check-in tokens per address",
                )?;
            }
        }
        if let Some(enabled) = raw.ui_enabled {
            c.ui_enabled = enabled;
        }
        if let Some(url) = raw.ui_url.filter(|u| !u.is_empty()) {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(field(
                    "ui_url",
                    format!("{url:?} is not an http:// or https:// URL"),
                ));
            }
            c.ui_url = url.trim_end_matches('/').to_owned();
        }
        if let Some(d) = raw.ui_session {
            c.ui_session = duration("ui_session", d)?;
            if c.ui_session < Duration::from_secs(60) {
                return Err(field("ui_session", "must be at least 1m".into()));
            }
        }
        if let Some(d) = raw.history_interval {
            c.history_interval = duration("history_interval", d)?;
            if c.history_interval < Duration::from_secs(1) {
                return Err(field("history_interval", "must be at least 1s".into()));
            }
        }
        if let Some(d) = raw.history_retention {
            c.history_retention = duration("history_retention", d)?;
        }
        if let Some(alerts) = raw.alerts {
            c.alerts = AlertsConfig::parse(alerts, path)?;
        }
        Ok(c)
    }

    /// Where people reach the status page: `ui_url`, else the HTTP port (a wildcard address as
    /// the first server name).
    pub fn ui_base(&self) -> String {
        if !self.ui_url.is_empty() {
            return self.ui_url.clone();
        }
        let port = self.http_listen.port();
        match self.http_listen.ip() {
            ip if ip.is_unspecified() => {
                let host = self
                    .server_names
                    .first()
                    .map_or("localhost", String::as_str);
                match host.parse::<std::net::Ipv6Addr>() {
                    Ok(_) => format!("http://[{host}]:{port}"),
                    Err(_) => format!("http://{host}:{port}"),
                }
            }
            _ => format!("http://{}", self.http_listen),
        }
    }

    /// The config to run with after the file was read again: `new`, except the settings that
    /// only a restart applies (addresses, paths, the store, the TLS set-up, the ACME worker's
    /// timings), which are kept. Also the names of those that changed in the file.
    pub fn reloaded(&self, new: Config) -> (Config, Vec<&'static str>) {
        let restart = gatehouse_common::config::restart_needed([
            ("data_dir", self.data_dir != new.data_dir),
            ("database", self.database != new.database),
            ("agent_listen", self.agent_listen != new.agent_listen),
            ("admin_listen", self.admin_listen != new.admin_listen),
            ("http_listen", self.http_listen != new.http_listen),
            ("admin_socket", self.admin_socket != new.admin_socket),
            ("server_names", self.server_names != new.server_names),
            (
                "master_key_file",
                self.master_key_file != new.master_key_file,
            ),
            (
                "agent_cert_grace",
                self.agent_cert_grace != new.agent_cert_grace,
            ),
            (
                "acme_propagation_timeout",
                self.acme_propagation_timeout != new.acme_propagation_timeout,
            ),
            (
                "first_request_timeout",
                self.first_request_timeout != new.first_request_timeout,
            ),
            (
                "idle_connection_timeout",
                self.idle_connection_timeout != new.idle_connection_timeout,
            ),
        ]);
        let config = Config {
            data_dir: self.data_dir.clone(),
            database: self.database.clone(),
            agent_listen: self.agent_listen,
            admin_listen: self.admin_listen,
            http_listen: self.http_listen,
            admin_socket: self.admin_socket.clone(),
            server_names: self.server_names.clone(),
            master_key_file: self.master_key_file.clone(),
            agent_cert_grace: self.agent_cert_grace,
            acme_propagation_timeout: self.acme_propagation_timeout,
            first_request_timeout: self.first_request_timeout,
            idle_connection_timeout: self.idle_connection_timeout,
            ..new
        };
        (config, restart)
    }
}

#[cfg(test)]
mod tests;
