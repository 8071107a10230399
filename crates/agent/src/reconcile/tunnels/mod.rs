//! Cloudflare Tunnels in the one resource shape. Each tunnel is the unit
//! `gatehouse-tunnel@NAME.service` (a template shipped in the package) and a directory under
//! the agent's state: `token` (0600, the connector token, read by systemd as a credential) and
//! `env` (0600: `METRICS=127.0.0.1:PORT` and the revision the unit was started for). Observe
//! reads those files and the units, the pure plan says which files to write, which units to
//! start, restart or remove, and apply does it through [`Systemd`]. The token never appears in
//! an argv, an environment or a log.
//!
//! Health is watched beside the passes ([`Tunnels::check`]): systemd's view of each unit and
//! cloudflared's `/ready`; a tunnel whose `/ready` stays failed while its unit looks active (the
//! hang cloudflared is known for) is restarted.

mod health;
mod unit;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use gatehouse_proto::names::TunnelName;
use gatehouse_proto::spec;
use tracing::{info, warn};

use super::{Item, Outcome, Resource, failed, ok, pending};
use crate::config::TunnelsConfig;
use crate::host::files;
use crate::host::systemd::{Systemd, UnitName, UnitState, Wait};
use unit::OURS;
pub use unit::{Settings, TEMPLATE};

/// How long a tunnel may take to connect before its item says so.
const RECHECK_STARTING: Duration = Duration::from_secs(5);

/// What the desired state asks.
#[derive(Debug, Clone)]
pub struct Desired {
    pub tunnels: Vec<spec::Tunnel>,
}

/// One tunnel's files and unit on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OnHost {
    pub token: Option<String>,
    pub settings: Option<Settings>,
    pub unit: UnitState,
}

impl OnHost {
    fn running(&self) -> bool {
        matches!(
            self.unit.active_state.as_str(),
            "active" | "activating" | "reloading"
        )
    }
}

/// What is on the host now.
#[derive(Debug, Clone)]
pub struct Observed {
    /// By name: every tunnel with a directory or a loaded unit.
    pub tunnels: BTreeMap<String, OnHost>,
    /// The agent's copy of the template, when there is one.
    pub template: Option<String>,
    /// The template the agent's paths need (`None`: the packaged one fits).
    pub wanted_template: Option<String>,
    pub ports: std::ops::RangeInclusive<u16>,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Write (or, with `None`, remove) the agent's copy of the template, then reload systemd.
    Template(Option<String>),
    /// Write the tunnel's token and settings.
    Files {
        name: TunnelName,
        token: String,
        settings: Settings,
    },
    /// Start the unit (enabled, so it comes back at boot), or restart it for new files.
    Start { name: TunnelName, restart: bool },
    /// Stop and disable the unit, then remove its files.
    Remove { name: String },
}

/// The tunnels on this host.
#[derive(Debug)]
pub struct Tunnels {
    config: TunnelsConfig,
    dir: PathBuf,
    systemd: Systemd,
    /// Watchdog bookkeeping by name.
    health: Mutex<HashMap<String, Health>>,
}

#[derive(Debug, Clone, Default)]
struct Health {
    unready_since: Option<i64>,
    watchdog_restarts: u32,
}

impl Tunnels {
    pub fn new(config: TunnelsConfig, dir: PathBuf, systemd: Systemd) -> Self {
        Self {
            config,
            dir,
            systemd,
            health: Mutex::default(),
        }
    }

    /// The last `lines` journal lines of a tunnel's unit.
    pub async fn logs(&self, name: &TunnelName, lines: u32) -> Result<Vec<String>, String> {
        self.systemd
            .logs(&UnitName::tunnel(name), lines)
            .await
            .map_err(|e| e.to_string())
    }

    /// `journalctl --follow` for a tunnel's unit.
    pub fn follow(&self, name: &TunnelName, lines: u32) -> Result<tokio::process::Child, String> {
        self.systemd
            .follow(&UnitName::tunnel(name), lines)
            .map_err(|e| e.to_string())
    }

    async fn apply_one(&self, change: &Change) -> Result<(), String> {
        match change {
            Change::Template(text) => {
                let path = self.template_path();
                match text {
                    Some(text) => {
                        files::ensure_dir_keep_mode(&self.config.unit_dir)
                            .map_err(|e| e.to_string())?;
                        files::write_atomic(&path, text.as_bytes(), 0o644, None)
                            .map_err(|e| e.to_string())?;
                    }
                    None => match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(format!("cannot remove {}: {e}", path.display())),
                    },
                }
                self.systemd
                    .daemon_reload()
                    .await
                    .map_err(|e| e.to_string())
            }
            Change::Files {
                name,
                token,
                settings,
            } => {
                files::ensure_dir(&self.dir, 0o700).map_err(|e| e.to_string())?;
                let dir = self.tunnel_dir(name.as_str());
                files::ensure_dir(&dir, 0o700).map_err(|e| e.to_string())?;
                files::write_atomic(&dir.join("token"), token.as_bytes(), 0o600, None)
                    .map_err(|e| e.to_string())?;
                files::write_atomic(
                    &dir.join("env"),
                    settings.render(name).as_bytes(),
                    0o600,
                    None,
                )
                .map_err(|e| e.to_string())
            }
            Change::Start { name, restart } => {
                let unit = UnitName::tunnel(name);
                let result = if *restart {
                    info!(tunnel = %name, "restarting the tunnel");
                    self.systemd.restart(&unit, Wait::No).await
                } else {
                    info!(tunnel = %name, "starting the tunnel");
                    self.systemd.enable_now(&unit, Wait::No).await
                };
                result.map_err(|e| e.to_string())
            }
            Change::Remove { name } => {
                info!(tunnel = %name, "removing the tunnel");
                // The unit is stopped before its token goes (the controller then deletes the
                // connections at Cloudflare, then the tunnel).
                if let Ok(unit) = format!("gatehouse-tunnel@{name}.service").parse::<UnitName>() {
                    self.systemd
                        .disable_now(&unit)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                let dir = self.tunnel_dir(name);
                match std::fs::remove_dir_all(&dir) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(format!("cannot remove {}: {e}", dir.display())),
                }
            }
        }
    }
}

/// The lowest port of `range` that no tunnel holds.
fn free_port(range: &std::ops::RangeInclusive<u16>, taken: &BTreeSet<u16>) -> Option<u16> {
    range.clone().find(|p| !taken.contains(p))
}

impl Resource for Tunnels {
    type Desired = Desired;
    type Observed = Observed;
    type Change = Change;

    async fn observe(&self) -> Result<Observed, String> {
        let mut names: BTreeSet<String> = self.dirs()?.into_iter().collect();
        let units = self
            .systemd
            .units("gatehouse-tunnel@*.service")
            .await
            .map_err(|e| e.to_string())?;
        for unit in units {
            if let Some(name) = unit
                .as_str()
                .strip_prefix("gatehouse-tunnel@")
                .and_then(|n| n.strip_suffix(".service"))
                .filter(|n| !n.is_empty())
            {
                names.insert(name.to_owned());
            }
        }
        let mut tunnels = BTreeMap::new();
        for name in names {
            let dir = self.tunnel_dir(&name);
            let unit = match format!("gatehouse-tunnel@{name}.service").parse::<UnitName>() {
                Ok(u) => self.systemd.state(&u).await.map_err(|e| e.to_string())?,
                Err(_) => UnitState::default(),
            };
            tunnels.insert(
                name.clone(),
                OnHost {
                    token: std::fs::read_to_string(dir.join("token")).ok(),
                    settings: self.settings(&name),
                    unit,
                },
            );
        }
        let template = std::fs::read_to_string(self.template_path())
            .ok()
            .filter(|t| t.starts_with(OURS));
        Ok(Observed {
            tunnels,
            template,
            wanted_template: self.wanted_template()?,
            ports: self.config.metrics_ports.clone(),
        })
    }

    fn plan(desired: &Desired, observed: &Observed) -> Vec<Change> {
        let mut changes = Vec::new();
        let template_changed = observed.template != observed.wanted_template;
        if template_changed {
            changes.push(Change::Template(observed.wanted_template.clone()));
        }
        let wanted: BTreeSet<&str> = desired.tunnels.iter().map(|t| t.name.as_str()).collect();
        // Ports stay with their tunnels; a new one gets the lowest free port.
        let mut taken: BTreeSet<u16> = observed
            .tunnels
            .iter()
            .filter(|(n, _)| wanted.contains(n.as_str()))
            .filter_map(|(_, t)| t.settings.map(|s| s.port))
            .filter(|p| observed.ports.contains(p))
            .collect();
        for t in &desired.tunnels {
            let on = observed.tunnels.get(t.name.as_str());
            let port = on
                .and_then(|o| o.settings)
                .map(|s| s.port)
                .filter(|p| observed.ports.contains(p))
                .or_else(|| {
                    let p = free_port(&observed.ports, &taken)?;
                    taken.insert(p);
                    Some(p)
                });
            let Some(port) = port else {
                // Apply reports it: no port is left in the range.
                continue;
            };
            let settings = Settings {
                port,
                revision: t.revision,
            };
            let files_changed = on.is_none_or(|o| {
                o.token.as_deref() != Some(t.token.expose()) || o.settings != Some(settings)
            });
            if files_changed {
                changes.push(Change::Files {
                    name: t.name.clone(),
                    token: t.token.expose().to_owned(),
                    settings,
                });
            }
            let running = on.is_some_and(OnHost::running);
            if running && (files_changed || template_changed) {
                changes.push(Change::Start {
                    name: t.name.clone(),
                    restart: true,
                });
            } else if !running {
                changes.push(Change::Start {
                    name: t.name.clone(),
                    restart: false,
                });
            }
        }
        for name in observed.tunnels.keys() {
            if !wanted.contains(name.as_str()) {
                changes.push(Change::Remove { name: name.clone() });
            }
        }
        changes
    }

    async fn apply(&self, desired: &Desired, changes: Vec<Change>, out: &mut Outcome) {
        let item = |name: &TunnelName| -> Item { ("tunnel", name.to_string()) };
        let installed = Path::new(&self.config.cloudflared).is_file();
        let mut errors: HashMap<String, String> = HashMap::new();
        let mut host_error = None;
        for change in &changes {
            let name = match change {
                Change::Template(_) => None,
                Change::Files { name, .. } | Change::Start { name, .. } => Some(name.to_string()),
                Change::Remove { name } => Some(name.clone()),
            };
            if matches!(change, Change::Start { .. }) && !installed {
                continue;
            }
            if let Some(n) = &name
                && errors.contains_key(n)
            {
                continue;
            }
            if host_error.is_some() && !matches!(change, Change::Remove { .. }) {
                continue;
            }
            if let Err(e) = self.apply_one(change).await {
                warn!(change = ?redacted(change), error = %e, "a tunnel change failed");
                match name {
                    Some(n) => {
                        errors.insert(n, e);
                    }
                    None => host_error = Some(e),
                }
            }
        }
        let mut starting = false;
        for t in &desired.tunnels {
            let name = t.name.to_string();
            if !installed {
                out.results.push(failed(
                    item(&t.name),
                    format!(
                        "cloudflared is not installed at {}: install the cloudflared package \
                         (from Cloudflare's package repository) or set tunnels.cloudflared in agent.toml",
                        self.config.cloudflared.display()
                    ),
                ));
                continue;
            }
            if let Some(e) = host_error.as_ref().or(errors.get(&name)) {
                out.results.push(failed(item(&t.name), e));
                continue;
            }
            let has_files = changes
                .iter()
                .any(|c| matches!(c, Change::Files { name: n, .. } if n == &t.name))
                || self.settings(&name).is_some();
            if !has_files {
                out.results.push(failed(
                    item(&t.name),
                    format!(
                        "no free metrics port is left in tunnels.metrics_ports ({}-{})",
                        self.config.metrics_ports.start(),
                        self.config.metrics_ports.end()
                    ),
                ));
                continue;
            }
            let state = self
                .systemd
                .state(&UnitName::tunnel(&t.name))
                .await
                .unwrap_or_default();
            match state.active_state.as_str() {
                "active" => out.results.push(ok(item(&t.name))),
                "failed" => out.results.push(failed(
                    item(&t.name),
                    format!(
                        "{} failed ({}): see gatehousectl tunnel logs {}",
                        t.name.unit(),
                        state.sub_state,
                        t.name
                    ),
                )),
                other => {
                    starting = true;
                    out.results.push(pending(
                        item(&t.name),
                        format!(
                            "{} is {other}: waiting for cloudflared to connect",
                            t.name.unit()
                        ),
                    ));
                }
            }
        }
        // A tunnel that could not be removed stays an item until it is gone.
        for change in &changes {
            if let Change::Remove { name } = change
                && let Some(e) = errors.get(name)
            {
                out.results.push(failed(
                    ("tunnel", name.clone()),
                    format!("cannot remove it: {e}"),
                ));
            }
        }
        if starting {
            out.recheck(RECHECK_STARTING);
        }
    }
}

/// A change as it may be logged: without the token.
fn redacted(change: &Change) -> String {
    match change {
        Change::Files { name, settings, .. } => format!("files for {name} ({settings:?})"),
        Change::Template(_) => "the template unit".into(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tunnel(name: &str, token: &str, revision: u64) -> spec::Tunnel {
        spec::Tunnel {
            name: name.parse().unwrap(),
            token: token.parse().unwrap(),
            revision,
        }
    }

    fn running(token: &str, port: u16, revision: u64) -> OnHost {
        OnHost {
            token: Some(token.into()),
            settings: Some(Settings { port, revision }),
            unit: UnitState {
                active_state: "active".into(),
                ..UnitState::default()
            },
        }
    }

    fn observed(tunnels: Vec<(&str, OnHost)>) -> Observed {
        Observed {
            tunnels: tunnels
                .into_iter()
                .map(|(n, t)| (n.to_owned(), t))
                .collect(),
            template: None,
            wanted_template: None,
            ports: 20300..=20302,
        }
    }

    #[test]
    fn new_tunnels_get_files_and_free_ports_and_are_started() {
        let desired = Desired {
            tunnels: vec![tunnel("a", "tokA", 0), tunnel("b", "tokB", 0)],
        };
        let changes = Tunnels::plan(&desired, &observed(vec![("a", running("tokA", 20300, 0))]));
        assert_eq!(
            changes,
            [
                Change::Files {
                    name: "b".parse().unwrap(),
                    token: "tokB".into(),
                    settings: Settings {
                        port: 20301,
                        revision: 0
                    }
                },
                Change::Start {
                    name: "b".parse().unwrap(),
                    restart: false
                },
            ]
        );
    }

    #[test]
    fn a_new_token_or_revision_restarts_and_the_rest_is_left_alone() {
        let desired = Desired {
            tunnels: vec![tunnel("a", "tokA2", 0), tunnel("b", "tokB", 4)],
        };
        let on_host = observed(vec![
            ("a", running("tokA", 20300, 0)),
            ("b", running("tokB", 20301, 3)),
            ("old", running("tokO", 20302, 0)),
        ]);
        let changes = Tunnels::plan(&desired, &on_host);
        let starts: Vec<_> = changes
            .iter()
            .filter(|c| matches!(c, Change::Start { restart: true, .. }))
            .collect();
        assert_eq!(starts.len(), 2, "{changes:?}");
        assert!(changes.contains(&Change::Remove { name: "old".into() }));
        let same = Desired {
            tunnels: vec![tunnel("a", "tokA", 0)],
        };
        assert!(
            Tunnels::plan(&same, &observed(vec![("a", running("tokA", 20300, 0))])).is_empty(),
            "up to date: nothing to do"
        );
    }

    #[test]
    fn a_stopped_unit_is_started_again_and_settings_round_trip() {
        let mut stopped = running("tok", 20300, 1);
        stopped.unit.active_state = "inactive".into();
        let desired = Desired {
            tunnels: vec![tunnel("a", "tok", 1)],
        };
        assert_eq!(
            Tunnels::plan(&desired, &observed(vec![("a", stopped)])),
            [Change::Start {
                name: "a".parse().unwrap(),
                restart: false
            }]
        );
        let s = Settings {
            port: 20301,
            revision: 7,
        };
        assert_eq!(Settings::parse(&s.render(&"a".parse().unwrap())), Some(s));
        let shown = redacted(&Change::Files {
            name: "a".parse().unwrap(),
            token: "SECRET".into(),
            settings: s,
        });
        assert!(!shown.contains("SECRET"), "{shown}");
    }
}
