//! Caddy: gatehouse owns one directory of site snippets (one file per site) that the main
//! Caddyfile imports with a single line it adds once; the user's own blocks are never touched.
//!
//! [`render`] and [`plan`] are pure. [`Caddy::apply`] is one transaction: stage the new set,
//! validate the whole config as Caddy's user, swap the files in, reload through the admin API,
//! and check with a TLS handshake that each site serves the expected certificate. On any
//! failure the previous files come back and Caddy is reloaded with them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gatehouse_proto::names::DomainName;
use gatehouse_proto::spec::{Site, SiteTls};
use tracing::{info, warn};

use crate::host::certs::Installed;
use crate::host::files::{self, FileError};

pub use crate::config::CaddyConfig;

/// One change to the snippet directory.
pub use super::files::FileChange as Change;

/// A certificate a site must serve after the reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedCheck {
    pub site: String,
    pub domain: DomainName,
    pub port: u16,
    pub serial: String,
}

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

/// The snippet file name of a site.
pub fn file_name(site: &str) -> String {
    format!("{site}.caddy")
}

fn quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

fn path_token(path: &Path) -> String {
    quote(&path.display().to_string())
}

/// Renders a site's snippet. `cert` is the installed certificate when the site uses files.
pub fn render(site: &Site, cert: Option<&Installed>) -> String {
    let mut out = format!(
        "# Managed by gatehouse: site {}. Edits here are overwritten.\n",
        site.name
    );
    let addresses: Vec<String> = site
        .domains
        .iter()
        .map(|d| format!("https://{d}:{}", site.port))
        .collect();
    let _ = writeln!(out, "{} {{", addresses.join(", "));
    match (&site.tls, cert) {
        (SiteTls::Certificate(_), Some(c)) => {
            let _ = writeln!(
                out,
                "\ttls {} {}",
                path_token(&c.cert_path),
                path_token(&c.key_path)
            );
        }
        (SiteTls::Certificate(_), None) => {}
        (SiteTls::CaddyInternal, _) => out.push_str("\ttls internal\n"),
        (
            SiteTls::CaddyManaged {
                acme_ca,
                acme_ca_root,
            },
            _,
        ) => {
            if acme_ca.is_some() || acme_ca_root.is_some() {
                out.push_str("\ttls {\n");
                if let Some(ca) = acme_ca {
                    let _ = writeln!(out, "\t\tca {ca}");
                }
                if let Some(root) = acme_ca_root {
                    let _ = writeln!(out, "\t\tca_root {}", quote(root));
                }
                out.push_str("\t}\n");
            }
        }
    }
    if !site.headers.is_empty() {
        out.push_str("\theader {\n");
        for (name, value) in &site.headers {
            let _ = writeln!(out, "\t\t{} {}", name.as_str(), quote(value.as_str()));
        }
        out.push_str("\t}\n");
    }
    let upstreams: Vec<String> = site.upstreams.iter().map(ToString::to_string).collect();
    let _ = writeln!(out, "\treverse_proxy {}", upstreams.join(" "));
    out.push_str("}\n");
    out
}

/// The line that makes the main Caddyfile read gatehouse's snippets.
pub fn import_line(sites_dir: &Path) -> String {
    format!("import {}/*.caddy", sites_dir.display())
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

/// The serial of the certificate served for `check.domain` (SNI) on `address:check.port`.
/// The chain is only observed, not trusted.
pub async fn served_serial(address: IpAddr, check: &ServedCheck) -> Result<String, String> {
    let sni = match check.domain.as_str().strip_prefix("*.") {
        Some(parent) => format!("gatehouse-check.{parent}"),
        None => check.domain.to_string(),
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ObserveOnly(provider)))
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(sni).map_err(|e| e.to_string())?;
    let tcp = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect((address, check.port)),
    )
    .await
    .map_err(|_| "connect timed out".to_owned())?
    .map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no certificate served")?;
    crate::pki::CertInfo::from_der(leaf)
        .map(|i| i.serial)
        .map_err(|e| e.to_string())
}

/// Accepts any server certificate: used only to see which certificate is served.
#[derive(Debug)]
struct ObserveOnly(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for ObserveOnly {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
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

/// The Caddyfile with gatehouse's import line, added once at the end; a missing Caddyfile
/// becomes one that only imports the snippets.
pub fn with_import(caddyfile: Option<&str>, sites_dir: &Path) -> String {
    let line = import_line(sites_dir);
    match caddyfile {
        Some(text) if text.lines().any(|l| l.trim() == line) => text.to_owned(),
        Some(text) => {
            let mut out = text.to_owned();
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&format!(
                "\n# Added by gatehouse: its sites live in {}, one file per site.\n{line}\n",
                sites_dir.display()
            ));
            out
        }
        None => format!(
            "# Created by gatehouse. Add your own sites below; gatehouse only manages the files\n\
             # in {}.\n{line}\n",
            sites_dir.display()
        ),
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

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_proto::v1;

    fn site(tls: v1::site_tls::Mode, port: u32) -> Site {
        let mut spec = v1::SiteSpec {
            name: "www".into(),
            domains: vec!["www.example.com".into(), "example.com".into()],
            upstreams: vec!["127.0.0.1:8080".into(), "[::1]:8081".into()],
            tls: Some(v1::SiteTls { mode: Some(tls) }),
            port,
            ..Default::default()
        };
        spec.response_headers.insert(
            "Strict-Transport-Security".into(),
            "max-age=63072000".into(),
        );
        spec.response_headers
            .insert("X-Frame-Options".into(), "DENY".into());
        Site::try_from(&spec).unwrap()
    }

    fn installed() -> Installed {
        Installed {
            name: "www".into(),
            revision: 0,
            domains: vec![],
            key_type: 0,
            serial: "01".into(),
            not_before: 0,
            not_after: 0,
            sha256: "0123456789abcdef".into(),
            cert_path: "/etc/gatehouse/tls/sites/www-0123456789ab.crt".into(),
            key_path: "/etc/gatehouse/tls/sites/www-0123456789ab.key".into(),
        }
    }

    #[test]
    fn golden_site_with_certificate_files() {
        let s = site(v1::site_tls::Mode::Certificate("www".into()), 0);
        assert_eq!(
            render(&s, Some(&installed())),
            include_str!("../../tests/golden/site-files.caddy")
        );
    }

    #[test]
    fn golden_site_managed_by_caddy() {
        let s = site(
            v1::site_tls::Mode::CaddyManaged(v1::CaddyManaged {
                acme_ca: "https://127.0.0.1:14000/dir".into(),
                acme_ca_root: "/etc/gatehouse/pebble.pem".into(),
            }),
            8443,
        );
        assert_eq!(
            render(&s, None),
            include_str!("../../tests/golden/site-caddy-managed.caddy")
        );
        let s = site(v1::site_tls::Mode::CaddyInternal(true), 8443);
        assert_eq!(
            render(&s, None),
            include_str!("../../tests/golden/site-caddy-internal.caddy")
        );
    }

    #[test]
    fn the_import_line_is_added_once_and_the_users_blocks_stay() {
        let dir = Path::new("/etc/caddy/gatehouse.d");
        let user = "{\n\temail me@example.com\n}\nmine.example.com {\n\trespond \"hi\"\n}";
        let once = with_import(Some(user), dir);
        assert!(once.starts_with(user));
        assert_eq!(
            once.matches("import /etc/caddy/gatehouse.d/*.caddy")
                .count(),
            1
        );
        assert_eq!(with_import(Some(&once), dir), once);
        let fresh = with_import(None, dir);
        assert!(fresh.contains("import /etc/caddy/gatehouse.d/*.caddy"));
    }
}
