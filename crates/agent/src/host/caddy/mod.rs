//! Caddy: gatehouse owns one directory of site snippets (one file per site) that the main
//! Caddyfile imports with a single line it adds once; the user's own blocks are never touched.
//!
//! [`render`] and [`plan`] are pure. [`Caddy::apply`] is one transaction: stage the new set,
//! validate the whole config as Caddy's user, swap the files in, reload through the admin API,
//! and check with a TLS handshake that each site serves the expected certificate. On any
//! failure the previous files come back and Caddy is reloaded with them.

mod render;
mod served;

pub use render::{file_name, import_line, render, with_import};
pub use served::{ServedCheck, served_serial};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{info, warn};

use crate::host::files::{self, FileError};

pub use crate::config::CaddyConfig;

/// One change to the snippet directory.
pub use crate::host::files::FileChange as Change;

/// The transaction failed; the previous configuration was restored.
#[derive(Debug, thiserror::Error)]
pub enum CaddyError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("caddy validate rejected the new configuration: {0}")]
    Invalid(String),
    #[error("cannot run {bin}: {source}")]
    Run {
        bin: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Caddy refused the reload: {0}")]
    Reload(String),
    #[error(
        "site {site}: Caddy serves certificate {served} on {domain}:{port}, expected {expected}"
    )]
    WrongCertificate {
        site: String,
        domain: String,
        port: u16,
        served: String,
        expected: String,
    },
    #[error("site {site}: no TLS handshake with {domain} on port {port}: {detail}")]
    Handshake {
        site: String,
        domain: String,
        port: u16,
        detail: String,
    },
}

/// Caddy on this host.
#[derive(Debug, Clone)]
pub struct Caddy {
    config: CaddyConfig,
    http: reqwest::Client,
}

impl Caddy {
    /// A handle; nothing is touched until [`Caddy::apply`].
    pub fn new(config: CaddyConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("an HTTP client without TLS settings builds");
        Self { config, http }
    }

    /// The config.
    pub fn config(&self) -> &CaddyConfig {
        &self.config
    }

    /// The snippet files there now.
    pub fn observe(&self) -> Result<BTreeMap<String, String>, FileError> {
        super::files::read_set(&self.config.sites_dir, ".caddy")
    }

    /// Applies `changes` as one transaction and checks `checks` afterwards.
    pub async fn apply(
        &self,
        changes: &[Change],
        checks: &[ServedCheck],
    ) -> Result<(), CaddyError> {
        let observed = self.observe()?;
        let original_caddyfile = read_optional(&self.config.caddyfile)?;
        let caddyfile = with_import(original_caddyfile.as_deref(), &self.config.sites_dir);

        // Stage the whole new set and validate it, with the Caddyfile importing the stage.
        let mut staged = observed.clone();
        for change in changes {
            match change {
                Change::Write { file, content } => {
                    staged.insert(file.clone(), content.clone());
                }
                Change::Remove { file } => {
                    staged.remove(file);
                }
            }
        }
        self.validate(&caddyfile, &staged).await?;

        // Swap in, remembering what was there.
        files::ensure_dir(&self.config.sites_dir, 0o755)?;
        if original_caddyfile.as_deref() != Some(caddyfile.as_str()) {
            files::write_atomic(&self.config.caddyfile, caddyfile.as_bytes(), 0o644, None)?;
        }
        let undo: Vec<(String, Option<String>)> = changes
            .iter()
            .map(|c| match c {
                Change::Write { file, .. } | Change::Remove { file } => {
                    (file.clone(), observed.get(file).cloned())
                }
            })
            .collect();
        let swapped = self.write_changes(changes);
        let result = match swapped {
            Ok(()) => match self.reload(&caddyfile).await {
                Ok(()) => self.check(checks).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            warn!("Caddy apply failed, restoring the previous sites: {e}");
            self.restore(&undo, original_caddyfile.as_deref()).await;
            return Err(e);
        }
        info!(changes = changes.len(), "Caddy sites applied");
        Ok(())
    }

    fn write_changes(&self, changes: &[Change]) -> Result<(), CaddyError> {
        for change in changes {
            match change {
                Change::Write { file, content } => {
                    files::write_atomic(
                        &self.config.sites_dir.join(file),
                        content.as_bytes(),
                        0o644,
                        None,
                    )?;
                }
                Change::Remove { file } => {
                    let path = self.config.sites_dir.join(file);
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(source) => {
                            return Err(FileError {
                                action: "cannot remove",
                                path,
                                source,
                            }
                            .into());
                        }
                    }
                }
            }
        }
        files::sync_dir(&self.config.sites_dir)?;
        Ok(())
    }

    async fn restore(&self, undo: &[(String, Option<String>)], caddyfile: Option<&str>) {
        let changes: Vec<Change> = undo
            .iter()
            .map(|(file, old)| match old {
                Some(content) => Change::Write {
                    file: file.clone(),
                    content: content.clone(),
                },
                None => Change::Remove { file: file.clone() },
            })
            .collect();
        if let Err(e) = self.write_changes(&changes) {
            warn!("cannot restore the previous site files: {e}");
        }
        let text = match caddyfile {
            Some(text) => {
                if let Err(e) =
                    files::write_atomic(&self.config.caddyfile, text.as_bytes(), 0o644, None)
                {
                    warn!("cannot restore the Caddyfile: {e}");
                }
                text.to_owned()
            }
            None => {
                let _ = std::fs::remove_file(&self.config.caddyfile);
                return;
            }
        };
        if let Err(e) = self.reload(&text).await {
            warn!("reloading the previous configuration failed too: {e}");
        }
    }

    async fn validate(
        &self,
        caddyfile: &str,
        staged: &BTreeMap<String, String>,
    ) -> Result<(), CaddyError> {
        let parent = self
            .config
            .caddyfile
            .parent()
            .unwrap_or(Path::new("/"))
            .to_owned();
        files::ensure_dir_keep_mode(&parent)?;
        let stage = tempfile::Builder::new()
            .prefix(".gatehouse-stage-")
            .tempdir_in(&parent)
            .map_err(|source| FileError {
                action: "cannot create a staging directory in",
                path: parent.clone(),
                source,
            })?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(stage.path(), std::fs::Permissions::from_mode(0o755));
        }
        for (file, content) in staged {
            files::write_atomic(&stage.path().join(file), content.as_bytes(), 0o644, None)?;
        }
        let staged_caddyfile = caddyfile.replace(
            &import_line(&self.config.sites_dir),
            &import_line(stage.path()),
        );
        let config = stage.path().join("Caddyfile");
        files::write_atomic(&config, staged_caddyfile.as_bytes(), 0o644, None)?;

        let mut cmd = tokio::process::Command::new(&self.config.bin);
        cmd.arg("validate")
            .arg("--config")
            .arg(&config)
            .args(["--adapter", "caddyfile"])
            .current_dir(&parent)
            .kill_on_drop(true);
        if let Some((uid, gid, home)) = self.run_as() {
            cmd.uid(uid).gid(gid).env("HOME", home);
        }
        let out = cmd.output().await.map_err(|source| CaddyError::Run {
            bin: self.config.bin.clone(),
            source,
        })?;
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stderr);
            let stage_path = stage.path().display().to_string();
            let message = last_error(&text)
                .replace(&stage_path, &self.config.sites_dir.display().to_string());
            return Err(CaddyError::Invalid(message));
        }
        Ok(())
    }

    /// The uid, gid and home to validate as, when the agent can switch to Caddy's user.
    fn run_as(&self) -> Option<(u32, u32, PathBuf)> {
        let name = self.config.user.as_deref()?;
        if !nix::unistd::geteuid().is_root() {
            return None;
        }
        let user = nix::unistd::User::from_name(name).ok().flatten()?;
        Some((user.uid.as_raw(), user.gid.as_raw(), user.dir))
    }

    async fn reload(&self, caddyfile: &str) -> Result<(), CaddyError> {
        let url = format!("{}/load", self.config.admin.trim_end_matches('/'));
        let response = self
            .http
            .post(&url)
            .header("Content-Type", "text/caddyfile")
            .header("Cache-Control", "must-revalidate")
            .body(caddyfile.to_owned())
            .send()
            .await
            .map_err(|e| {
                CaddyError::Reload(format!("{url}: {}", gatehouse_common::error_chain(&e)))
            })?;
        if response.status().is_success() {
            return Ok(());
        }
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        Err(CaddyError::Reload(format!("{status}: {}", body.trim())))
    }

    async fn check(&self, checks: &[ServedCheck]) -> Result<(), CaddyError> {
        for check in checks {
            let mut last = None;
            for _ in 0..20 {
                match served_serial(self.config.check_address, check).await {
                    Ok(serial) if serial == check.serial => {
                        last = None;
                        break;
                    }
                    Ok(served) => {
                        last = Some(CaddyError::WrongCertificate {
                            site: check.site.clone(),
                            domain: check.domain.to_string(),
                            port: check.port,
                            served,
                            expected: check.serial.clone(),
                        })
                    }
                    Err(detail) => {
                        last = Some(CaddyError::Handshake {
                            site: check.site.clone(),
                            domain: check.domain.to_string(),
                            port: check.port,
                            detail,
                        })
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if let Some(e) = last {
                return Err(e);
            }
        }
        Ok(())
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, FileError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(FileError {
            action: "cannot read",
            path: path.to_owned(),
            source,
        }),
    }
}

/// The most useful line of caddy's error output.
fn last_error(stderr: &str) -> String {
    stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("Error:") || l.contains("\"error\""))
        .unwrap_or_else(|| stderr.lines().last().unwrap_or("no output"))
        .trim()
        .to_owned()
}
