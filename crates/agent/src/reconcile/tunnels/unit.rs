//! A tunnel's files on the host: the template unit (the packaged one, or the agent's own copy
//! when its paths differ), and each tunnel's directory with its `env` settings and `token`.

use std::path::PathBuf;

use gatehouse_proto::names::TunnelName;

use super::Tunnels;
use crate::config::CLOUDFLARED;

/// The template unit as the packages ship it.
pub const TEMPLATE: &str = include_str!("../../../../../systemd/gatehouse-tunnel@.service");
/// The template's file name.
const TEMPLATE_FILE: &str = "gatehouse-tunnel@.service";
/// Where the packaged template keeps the agent's files.
const PACKAGED_DIR: &str = "/var/lib/gatehouse-agent/tunnels";
/// The first line of the agent's own copy of the template (the file is the agent's then).
pub(super) const OURS: &str =
    "# Written by gatehouse-agent for its configured paths; it rewrites it.\n";
/// A tunnel's settings as its `env` file holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub port: u16,
    pub revision: u64,
}

impl Settings {
    pub(super) fn render(&self, name: &TunnelName) -> String {
        format!(
            "# gatehouse-agent: tunnel {name}; the agent rewrites this file\n\
             METRICS=127.0.0.1:{}\nGATEHOUSE_REVISION={}\n",
            self.port, self.revision
        )
    }

    pub(super) fn parse(text: &str) -> Option<Self> {
        let value = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        };
        let port = value("METRICS")?.strip_prefix("127.0.0.1:")?.parse().ok()?;
        let revision = value("GATEHOUSE_REVISION")?.parse().ok()?;
        Some(Self { port, revision })
    }
}

impl Tunnels {
    /// The template the configured paths need, or `None` when the packaged one fits; an
    /// error when a path cannot be written into a unit file.
    pub(super) fn wanted_template(&self) -> Result<Option<String>, String> {
        let dir = self.dir.display().to_string();
        if dir.contains(|c: char| c.is_whitespace() || c.is_control() || "\"'\\%;".contains(c)) {
            return Err(format!(
                "the state directory {dir:?} cannot go into a unit file (whitespace, quotes, '\\', '%' or ';')"
            ));
        }
        let cloudflared = self.config.cloudflared.display().to_string();
        if dir == PACKAGED_DIR && cloudflared == CLOUDFLARED {
            return Ok(None);
        }
        let text = TEMPLATE
            .replace(PACKAGED_DIR, &dir)
            .replace(CLOUDFLARED, &cloudflared);
        Ok(Some(format!("{OURS}{text}")))
    }

    pub(super) fn template_path(&self) -> PathBuf {
        self.config.unit_dir.join(TEMPLATE_FILE)
    }

    pub(super) fn tunnel_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The directories under the tunnels directory (each a tunnel the agent set up).
    pub(super) fn dirs(&self) -> Result<Vec<String>, String> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("cannot read {}: {e}", self.dir.display())),
        };
        Ok(entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect())
    }

    /// Whether anything of a tunnel is on this host (a directory the agent set up): when not,
    /// and none is desired, there is nothing to look at (and a host without systemd is fine).
    pub fn on_host(&self) -> bool {
        self.dirs().map_or(true, |d| !d.is_empty())
    }

    /// A tunnel's settings as its `env` file holds them.
    pub(super) fn settings(&self, name: &str) -> Option<Settings> {
        let text = std::fs::read_to_string(self.tunnel_dir(name).join("env")).ok()?;
        Settings::parse(&text)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::TunnelsConfig;
    use crate::host::systemd::Systemd;

    #[test]
    fn the_template_is_rewritten_for_other_paths() {
        let t = Tunnels::new(
            TunnelsConfig {
                cloudflared: "/opt/cf/cloudflared".into(),
                unit_dir: "/etc/systemd/system".into(),
                metrics_ports: 20300..=20302,
                check_interval: Duration::from_secs(5),
                restart_unready_after: Duration::from_secs(60),
            },
            "/srv/agent/tunnels".into(),
            Systemd::host(),
        );
        let text = t.wanted_template().unwrap().unwrap();
        assert!(text.contains("ExecStart=/opt/cf/cloudflared tunnel --no-autoupdate"));
        assert!(text.contains("LoadCredential=token:/srv/agent/tunnels/%i/token"));
        assert!(!text.contains(PACKAGED_DIR));
        let packaged = Tunnels::new(
            TunnelsConfig {
                cloudflared: CLOUDFLARED.into(),
                ..t.config.clone()
            },
            PACKAGED_DIR.into(),
            Systemd::host(),
        );
        assert_eq!(packaged.wanted_template().unwrap(), None);
        let bad = Tunnels::new(t.config.clone(), "/srv/my agent".into(), Systemd::host());
        assert!(bad.wanted_template().unwrap_err().contains("unit file"));
    }
}
