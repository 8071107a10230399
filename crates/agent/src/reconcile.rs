//! Turns a desired state into the host: certificates first (keys generated here, CSRs sent to
//! the controller), then Caddy sites. Each pass rebuilds the whole picture, diffs it against
//! what is on disk and applies only the difference; running it twice changes nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use gatehouse_common::Backoff;
use serde::{Deserialize, Serialize};

use gatehouse_proto::spec::{self, SiteTls, ValidState};
use gatehouse_proto::v1::{CertificateRequest, DesiredState, IssuedCertificate, ItemResult};
use tracing::{info, warn};

use crate::host::caddy::{self, Caddy, ServedCheck};
use crate::host::certs::{CertStore, Installed};
use crate::host::files;
use crate::identity::PendingKey;

/// What a pass did, and what it needs from the controller.
#[derive(Debug, Default)]
pub struct Outcome {
    pub results: Vec<ItemResult>,
    pub requests: Vec<CertificateRequest>,
    /// When to look again without being asked (an install to retry).
    pub recheck_in: Option<Duration>,
}

impl Outcome {
    fn recheck(&mut self, after: Duration) {
        self.recheck_in = Some(self.recheck_in.map_or(after, |d| d.min(after)));
    }
}

/// Why an issued certificate is not installed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct InstallError {
    pub message: String,
    /// The host could not write it (a full disk, say): the agent keeps the chain and tries
    /// again with backoff, without asking the controller for another certificate.
    pub retrying: bool,
}

/// The first and the longest wait before an install that failed on the host is tried again.
const INSTALL_RETRY: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));

/// A pending key as kept on disk.
#[derive(Serialize, Deserialize)]
struct SavedPending {
    revision: u64,
    domains: Vec<String>,
    key_type: i32,
    key_pem: String,
    /// Base64.
    csr_der: String,
}

#[derive(Debug)]
struct Pending {
    revision: u64,
    domains: Vec<String>,
    key_type: i32,
    key: PendingKey,
    /// The chain the controller issued, kept while installing it fails on the host.
    issued: Option<String>,
    retry: Backoff,
    /// When to try installing `issued` again (Unix seconds).
    retry_at: i64,
}

impl Pending {
    fn new(revision: u64, domains: Vec<String>, key_type: i32, key: PendingKey) -> Self {
        Self {
            revision,
            domains,
            key_type,
            key,
            issued: None,
            retry: Backoff::new(INSTALL_RETRY.0, INSTALL_RETRY.1),
            retry_at: 0,
        }
    }
}

/// The host resources the agent manages.
#[derive(Debug)]
pub struct Host {
    caddy: Option<Caddy>,
    certs: CertStore,
    pending: Mutex<HashMap<String, Pending>>,
    /// Where pending keys are kept (0600) so a restart asks for the same certificate again
    /// instead of starting a new order with a new key.
    pending_file: Option<PathBuf>,
    failures: Mutex<HashMap<String, String>>,
}

/// An item of the desired state: its kind and name.
type Item = (&'static str, String);

fn ok(item: Item) -> ItemResult {
    ItemResult::applied(item.0, &item.1)
}

fn pending(item: Item, why: impl ToString) -> ItemResult {
    ItemResult::pending(item.0, &item.1, why)
}

fn failed(item: Item, error: impl ToString) -> ItemResult {
    ItemResult::failed(item.0, &item.1, error)
}

/// Whether an installed certificate is the one `spec` asks for.
fn fits(installed: &Installed, spec: &spec::Certificate) -> bool {
    let domains: Vec<String> = spec.domains.iter().map(ToString::to_string).collect();
    installed.revision == spec.revision
        && installed.domains == domains
        && installed.key_type == spec.key_type as i32
}

/// Whether two thirds of a certificate's life have passed.
fn renewal_due(installed: &Installed, now: i64) -> bool {
    let lifetime = installed.not_after - installed.not_before;
    now >= installed.not_before + lifetime * 2 / 3
}

impl Host {
    /// `caddy` is `None` when Caddy is not managed on this host.
    pub fn new(caddy: Option<Caddy>, certs: CertStore) -> Self {
        Self {
            caddy,
            certs,
            pending: Mutex::default(),
            pending_file: None,
            failures: Mutex::default(),
        }
    }

    /// Keeps pending keys in `path` (0600), loading those a previous run left.
    pub fn with_pending_file(mut self, path: PathBuf) -> Self {
        match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<BTreeMap<String, SavedPending>>(&bytes) {
                Ok(saved) => {
                    let mut pending = self.pending.lock().expect("pending lock");
                    for (name, s) in saved {
                        let csr = base64::engine::general_purpose::STANDARD.decode(&s.csr_der);
                        match csr.map_err(|e| e.to_string()).and_then(|csr| {
                            PendingKey::restore(&s.key_pem, csr).map_err(|e| e.to_string())
                        }) {
                            Ok(key) => {
                                pending.insert(
                                    name,
                                    Pending::new(s.revision, s.domains, s.key_type, key),
                                );
                            }
                            Err(e) => {
                                warn!(certificate = %name, "dropping a damaged pending key: {e}")
                            }
                        }
                    }
                }
                Err(e) => warn!(path = %path.display(), "ignoring damaged pending keys: {e}"),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!(path = %path.display(), "cannot read pending keys: {e}"),
        }
        self.pending_file = Some(path);
        self
    }

    /// Writes the pending keys (or removes the file when there are none).
    fn save_pending(&self, pending: &HashMap<String, Pending>) {
        let Some(path) = &self.pending_file else {
            return;
        };
        let result = if pending.is_empty() {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
                _ => Ok(()),
            }
        } else {
            let saved: BTreeMap<&String, SavedPending> = pending
                .iter()
                .map(|(name, p)| {
                    (
                        name,
                        SavedPending {
                            revision: p.revision,
                            domains: p.domains.clone(),
                            key_type: p.key_type,
                            key_pem: p.key.key_pem().to_owned(),
                            csr_der: base64::engine::general_purpose::STANDARD
                                .encode(&p.key.csr_der),
                        },
                    )
                })
                .collect();
            let json = serde_json::to_vec(&saved).expect("serialisable");
            files::write_atomic(path, &json, 0o600, None).map_err(|e| e.to_string())
        };
        if let Err(e) = result {
            warn!(path = %path.display(), "cannot save pending keys: {e}");
        }
    }

    /// The certificate store.
    pub fn certs(&self) -> &CertStore {
        &self.certs
    }

    /// Installs a certificate the controller issued for a pending key. When the host cannot
    /// write it, the chain is kept and [`Host::reconcile`] tries again with backoff.
    pub fn install(&self, issued: &IssuedCertificate, now: i64) -> Result<Installed, InstallError> {
        let mut pending = self.pending.lock().expect("pending lock");
        let refused = |message: String| InstallError {
            message,
            retrying: false,
        };
        let p = pending
            .get_mut(&issued.name)
            .filter(|p| p.revision == issued.revision)
            .ok_or_else(|| {
                refused(format!(
                    "certificate {} was not asked for (or was asked again since)",
                    issued.name
                ))
            })?;
        p.key.matches(&issued.chain_pem).map_err(refused)?;
        let result = self.certs.install(
            &issued.name,
            p.revision,
            &p.domains,
            p.key_type,
            p.key.key_pem(),
            &issued.chain_pem,
        );
        let installed = match result {
            Ok(installed) => installed,
            Err(e) => {
                let wait = p.retry.next_delay().max(INSTALL_RETRY.0);
                p.issued = Some(issued.chain_pem.clone());
                p.retry_at = now + wait.as_secs() as i64;
                let message = format!(
                    "cannot install the issued certificate (attempt {}): {e}",
                    p.retry.attempts()
                );
                self.failures
                    .lock()
                    .expect("failures lock")
                    .insert(issued.name.clone(), message.clone());
                return Err(InstallError {
                    message,
                    retrying: true,
                });
            }
        };
        pending.remove(&issued.name);
        self.save_pending(&pending);
        self.failures
            .lock()
            .expect("failures lock")
            .remove(&issued.name);
        info!(certificate = %issued.name, serial = %installed.serial, "certificate installed");
        Ok(installed)
    }

    /// For a certificate whose issued chain could not be installed: installs it when the
    /// retry is due. `None`: no such chain; `Err`: how long until the next try.
    fn retry_install(
        &self,
        cert: &spec::Certificate,
        now: i64,
    ) -> Option<Result<Installed, Duration>> {
        let due = |pending: &HashMap<String, Pending>| {
            let p = pending.get(cert.name.as_str())?;
            let chain = p.issued.clone().filter(|_| p.revision == cert.revision)?;
            Some((chain, p.retry_at))
        };
        let (chain_pem, at) = due(&self.pending.lock().expect("pending lock"))?;
        let wait = |at: i64| Duration::from_secs((at - now).max(1) as u64);
        if now < at {
            return Some(Err(wait(at)));
        }
        let issued = IssuedCertificate {
            name: cert.name.to_string(),
            revision: cert.revision,
            chain_pem,
        };
        Some(self.install(&issued, now).map_err(|_| {
            let pending = self.pending.lock().expect("pending lock");
            wait(due(&pending).map_or(now + 1, |(_, at)| at))
        }))
    }

    /// Records that the controller could not issue a certificate.
    pub fn issuance_failed(&self, name: &str, error: &str) {
        warn!(
            certificate = name,
            "the controller could not issue the certificate: {error}"
        );
        self.failures
            .lock()
            .expect("failures lock")
            .insert(name.to_owned(), error.to_owned());
    }

    /// One pass over `state`.
    pub async fn reconcile(&self, state: &DesiredState, now: i64) -> Outcome {
        let valid = ValidState::from_state(state);
        let mut out = Outcome::default();
        for e in &valid.errors {
            let (kind, name) = e.item.split_once('/').unwrap_or((&e.item, ""));
            out.results.push(ItemResult::failed(kind, name, &e.reason));
        }
        let current = match self.certs.current() {
            Ok(c) => c,
            Err(e) => {
                out.results.push(failed(("certificates", String::new()), e));
                BTreeMap::new()
            }
        };

        // Certificates: use what fits, ask for what is missing or due.
        let mut usable: BTreeMap<String, Installed> = BTreeMap::new();
        let wanted: BTreeSet<String> = valid
            .certificates
            .iter()
            .map(|c| c.name.to_string())
            .collect();
        {
            let mut pending = self.pending.lock().expect("pending lock");
            let before = pending.len();
            pending.retain(|name, _| wanted.contains(name));
            if pending.len() != before {
                self.save_pending(&pending);
            }
        }
        for cert in &valid.certificates {
            let item: Item = ("certificate", cert.name.to_string());
            match self.retry_install(cert, now) {
                Some(Ok(c)) => {
                    usable.insert(cert.name.to_string(), c);
                    out.results.push(ok(item));
                    continue;
                }
                Some(Err(wait)) => {
                    out.recheck(wait);
                    let error = self.failure(cert.name.as_str()).unwrap_or_default();
                    out.results.push(failed(item, error));
                    continue;
                }
                None => {}
            }
            let installed = current.get(cert.name.as_str()).filter(|c| fits(c, cert));
            if let Some(c) = installed {
                usable.insert(cert.name.to_string(), c.clone());
                // ACME certificates renew when the controller says (ARI, CA limits): it sends a
                // new revision.
                let controller_renews = matches!(cert.issuer, spec::Issuer::Acme(_));
                if controller_renews || !renewal_due(c, now) {
                    out.results.push(ok(item));
                    continue;
                }
            }
            match self.request(cert) {
                Ok(request) => out.requests.push(request),
                Err(e) => {
                    out.results.push(failed(item, e));
                    continue;
                }
            }
            let failure = self.failure(cert.name.as_str());
            out.results.push(match (installed, failure) {
                (Some(_), _) => ok(item),
                (None, Some(e)) => failed(item, format!("issuance failed: {e}")),
                (None, None) => pending(item, "waiting for the certificate from the controller"),
            });
        }

        self.sites(&valid, &usable, &mut out).await;
        // Whatever the sites did: the index keeps the versions a restored site may use.
        if let Err(e) = self.certs.clean(&wanted) {
            warn!(error = %e, "cannot clean up old certificate files");
        }
        out
    }

    /// The error a certificate item shows: the controller's or the host's.
    fn failure(&self, name: &str) -> Option<String> {
        self.failures
            .lock()
            .expect("failures lock")
            .get(name)
            .cloned()
    }

    /// Caddy sites: one snippet per site, applied as one transaction.
    async fn sites(
        &self,
        valid: &ValidState,
        usable: &BTreeMap<String, Installed>,
        out: &mut Outcome,
    ) {
        let Some(caddy) = &self.caddy else {
            for site in &valid.sites {
                out.results.push(failed(
                    ("site", site.name.to_string()),
                    "Caddy is not managed on this host (caddy.enabled = false)",
                ));
            }
            return;
        };
        let observed = match caddy.observe() {
            Ok(o) => o,
            Err(e) => {
                out.results.push(failed(("caddy", String::new()), e));
                return;
            }
        };
        let mut desired = BTreeMap::new();
        let mut checks = Vec::new();
        let mut site_items = Vec::new();
        for site in &valid.sites {
            let file = caddy::file_name(site.name.as_str());
            let item: Item = ("site", site.name.to_string());
            let cert = match &site.tls {
                SiteTls::Certificate(name) => match usable.get(name.as_str()) {
                    Some(c) => Some(c),
                    None => {
                        // Keep serving the old version of the site until its certificate comes.
                        if let Some(old) = observed.get(&file) {
                            desired.insert(file, old.clone());
                        }
                        out.results
                            .push(pending(item, format!("waiting for certificate {name}")));
                        continue;
                    }
                },
                _ => None,
            };
            if let Some(c) = cert {
                let domain = site.domains[0].clone();
                checks.push(ServedCheck {
                    site: site.name.to_string(),
                    domain,
                    port: site.port,
                    serial: c.serial.clone(),
                });
            }
            desired.insert(file.clone(), caddy::render(site, cert));
            site_items.push((item, file));
        }
        let changes = caddy::plan(&desired, &observed);
        if changes.is_empty() {
            tracing::debug!("Caddy sites up to date");
            out.results
                .extend(site_items.into_iter().map(|(item, _)| ok(item)));
        } else {
            match caddy.apply(&changes, &checks).await {
                Ok(()) => out
                    .results
                    .extend(site_items.into_iter().map(|(item, _)| ok(item))),
                Err(e) => {
                    let changed: BTreeSet<&str> = changes
                        .iter()
                        .map(|c| match c {
                            caddy::Change::Write { file, .. } | caddy::Change::Remove { file } => {
                                file.as_str()
                            }
                        })
                        .collect();
                    for (item, file) in site_items {
                        out.results.push(if changed.contains(file.as_str()) {
                            failed(item, &e)
                        } else {
                            ok(item)
                        });
                    }
                }
            }
        }
    }

    /// The CSR for `cert`, reusing the pending key while the same revision is outstanding.
    fn request(&self, cert: &spec::Certificate) -> Result<CertificateRequest, String> {
        let domains: Vec<String> = cert.domains.iter().map(ToString::to_string).collect();
        let mut pending = self.pending.lock().expect("pending lock");
        let reuse = pending.get(cert.name.as_str()).is_some_and(|p| {
            p.revision == cert.revision
                && p.domains == domains
                && p.key_type == cert.key_type as i32
        });
        if !reuse {
            let key =
                PendingKey::generate_for(cert.key_type, &domains).map_err(|e| e.to_string())?;
            pending.insert(
                cert.name.to_string(),
                Pending::new(cert.revision, domains, cert.key_type as i32, key),
            );
            self.save_pending(&pending);
        }
        let p = &pending[cert.name.as_str()];
        Ok(CertificateRequest {
            name: cert.name.to_string(),
            revision: p.revision,
            csr_der: p.key.csr_der.clone(),
        })
    }
}
