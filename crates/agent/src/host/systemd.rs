//! The one place the agent talks to systemd: units started, stopped, restarted, enabled and
//! read back through `systemctl`, their logs through `journalctl`. Every argument is a
//! validated unit name or a fixed flag, given as its own argv entry: no shell, ever.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::str::FromStr;

use gatehouse_proto::names::TunnelName;

/// A systemd unit name: `[A-Za-z0-9:_.@-]`, at most 255 characters, with a unit type suffix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UnitName(String);

const SUFFIXES: [&str; 4] = [".service", ".timer", ".socket", ".target"];

impl FromStr for UnitName {
    type Err = SystemdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = !s.is_empty()
            && s.len() <= 255
            && !s.starts_with('-')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b":_.@-\\".contains(&b))
            && SUFFIXES.iter().any(|x| s.ends_with(x) && s.len() > x.len());
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(SystemdError::BadUnit(s.chars().take(80).collect()))
        }
    }
}

impl UnitName {
    /// The unit that runs a tunnel: `gatehouse-tunnel@NAME.service`.
    pub fn tunnel(name: &TunnelName) -> Self {
        Self(name.unit())
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UnitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A systemd call failed.
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error("invalid unit name {0:?}")]
    BadUnit(String),
    #[error("cannot run {program}: {source} (is systemd installed?)")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed: {stderr}")]
    Failed { command: String, stderr: String },
}

/// Where a unit stands, as `systemctl show` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitState {
    /// `loaded`, `not-found`, …
    pub load_state: String,
    /// `active`, `inactive`, `failed`, `activating`, …
    pub active_state: String,
    pub sub_state: String,
    /// 0 when not running.
    pub main_pid: u32,
    /// How often systemd restarted it.
    pub restarts: u32,
}

/// systemd on this host (or, in tests, inside a booted box).
#[derive(Debug, Clone, Default)]
pub struct Systemd {
    /// Run before each command (tests: `nsenter` into a box); empty on a host.
    prefix: Vec<OsString>,
}

impl Systemd {
    /// The host's systemd.
    pub fn host() -> Self {
        Self::default()
    }

    /// systemd reached by running every command after `prefix` (tests enter a box this way).
    pub fn through(prefix: Vec<OsString>) -> Self {
        Self { prefix }
    }

    /// The program to start and its first arguments: `program` itself, or the prefix then it.
    fn argv(&self, program: &str) -> (OsString, Vec<OsString>) {
        match self.prefix.split_first() {
            Some((first, more)) => (
                first.clone(),
                more.iter()
                    .cloned()
                    .chain(std::iter::once(program.into()))
                    .collect(),
            ),
            None => (program.into(), Vec::new()),
        }
    }

    async fn run(&self, program: &str, args: &[&str]) -> Result<String, SystemdError> {
        let (bin, rest) = self.argv(program);
        let out = tokio::process::Command::new(&bin)
            .args(rest)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|source| SystemdError::Spawn {
                program: program.to_owned(),
                source,
            })?;
        if !out.status.success() {
            return Err(SystemdError::Failed {
                command: format!("{program} {}", args.join(" ")),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    async fn systemctl(&self, args: &[&str]) -> Result<String, SystemdError> {
        self.run("systemctl", args).await
    }

    /// Reads unit files again (after one was written or removed).
    pub async fn daemon_reload(&self) -> Result<(), SystemdError> {
        self.systemctl(&["daemon-reload"]).await.map(drop)
    }

    /// Enables the unit and starts it now.
    pub async fn enable_now(&self, unit: &UnitName, wait: Wait) -> Result<(), SystemdError> {
        self.systemctl(&wait.with(&["enable", "--now", unit.as_str()]))
            .await
            .map(drop)
    }

    /// Stops the unit and disables it.
    pub async fn disable_now(&self, unit: &UnitName) -> Result<(), SystemdError> {
        self.systemctl(&["disable", "--now", unit.as_str()])
            .await
            .map(drop)
    }

    /// Restarts the unit (starts it when stopped).
    pub async fn restart(&self, unit: &UnitName, wait: Wait) -> Result<(), SystemdError> {
        self.systemctl(&wait.with(&["restart", unit.as_str()]))
            .await
            .map(drop)
    }

    /// The loaded units whose names match `pattern` (a systemctl glob such as
    /// `gatehouse-tunnel@*.service`), whatever their state.
    pub async fn units(&self, pattern: &str) -> Result<Vec<UnitName>, SystemdError> {
        let text = self
            .systemctl(&[
                "list-units",
                "--all",
                "--plain",
                "--no-legend",
                "--full",
                pattern,
            ])
            .await?;
        Ok(text
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter_map(|n| n.parse().ok())
            .collect())
    }

    /// Where the unit stands; a unit systemd does not know is `not-found`, not an error.
    pub async fn state(&self, unit: &UnitName) -> Result<UnitState, SystemdError> {
        let text = self
            .systemctl(&[
                "show",
                "-p",
                "LoadState,ActiveState,SubState,MainPID,NRestarts",
                unit.as_str(),
            ])
            .await?;
        Ok(parse_show(&text))
    }

    /// The unit's last `lines` log lines (messages only).
    pub async fn logs(&self, unit: &UnitName, lines: u32) -> Result<Vec<String>, SystemdError> {
        let n = lines.to_string();
        let text = self
            .run(
                "journalctl",
                &["-u", unit.as_str(), "-n", &n, "-o", "cat", "--no-pager"],
            )
            .await?;
        Ok(text.lines().map(str::to_owned).collect())
    }

    /// The unit's last `lines` log lines, then every new one as it is written: `journalctl
    /// --follow` with its output piped. Dropping the child stops it.
    pub fn follow(
        &self,
        unit: &UnitName,
        lines: u32,
    ) -> Result<tokio::process::Child, SystemdError> {
        let n = lines.to_string();
        let args = [
            "-u",
            unit.as_str(),
            "-n",
            &n,
            "-o",
            "cat",
            "--no-pager",
            "--follow",
        ];
        let (bin, rest) = self.argv("journalctl");
        tokio::process::Command::new(bin)
            .args(rest)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| SystemdError::Spawn {
                program: "journalctl".into(),
                source,
            })
    }
}

/// Whether a start or restart waits for the unit to be up (`Type=notify`: its READY=1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    Yes,
    /// `--no-block`: the job is queued and the call returns.
    No,
}

impl Wait {
    fn with<'a>(self, args: &[&'a str]) -> Vec<&'a str> {
        let mut v = args.to_vec();
        if self == Wait::No {
            v.insert(0, "--no-block");
        }
        v
    }
}

/// `systemctl show` output (`Key=value` lines).
fn parse_show(text: &str) -> UnitState {
    let fields: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    let get = |k: &str| fields.get(k).copied().unwrap_or_default().to_owned();
    UnitState {
        load_state: get("LoadState"),
        active_state: get("ActiveState"),
        sub_state: get("SubState"),
        main_pid: get("MainPID").parse().unwrap_or(0),
        restarts: get("NRestarts").parse().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_are_checked_and_show_output_is_read() {
        let tunnel: TunnelName = "odoo-acme".parse().unwrap();
        assert_eq!(
            UnitName::tunnel(&tunnel).as_str(),
            "gatehouse-tunnel@odoo-acme.service"
        );
        for bad in [
            "",
            "x",
            ".service",
            "a b.service",
            "a;b.service",
            "--now.service",
            "a/b.service",
        ] {
            assert!(bad.parse::<UnitName>().is_err(), "{bad:?}");
        }
        let state = parse_show(
            "LoadState=loaded\nActiveState=active\nSubState=running\nMainPID=42\nNRestarts=3\n",
        );
        assert_eq!(
            (state.active_state.as_str(), state.main_pid, state.restarts),
            ("active", 42, 3)
        );
    }
}
