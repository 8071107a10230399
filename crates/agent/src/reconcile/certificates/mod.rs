//! Certificates whose keys live on this host, in the one resource shape: observe what is
//! installed and what is waiting, a pure plan (ask, install again, forget), then apply, where
//! keys are made. A key is generated here and only its CSR leaves the host; a pending key is
//! kept (0600) so a restarted agent asks again with the same key and an ACME order goes on.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;

use gatehouse_proto::spec;
use gatehouse_proto::v1::{CertificateRequest, IssuedCertificate};
use tracing::{info, warn};

mod pending;

use super::{INSTALL_RETRY, InstallError, Item, Outcome, Resource, failed, ok, pending};
use crate::host::certs::{CertStore, Installed};
use crate::identity::PendingKey;
use pending::Pending;

/// What the desired state asks: the certificates, and the time the decisions are made at.
#[derive(Debug, Clone)]
pub struct Desired {
    pub certs: Vec<spec::Certificate>,
    /// Unix seconds.
    pub now: i64,
}

/// A key waiting for its certificate, as planning sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub revision: u64,
    pub domains: Vec<String>,
    pub key_type: i32,
    /// An issued chain is kept because installing it failed; retried at `retry_at`.
    pub chain: bool,
    pub retry_at: i64,
}

/// What is on the host.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub installed: BTreeMap<String, Installed>,
    pub waiting: BTreeMap<String, Waiting>,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Ask the controller for the certificate; with a fresh key unless the waiting one fits.
    Ask { name: String, new_key: bool },
    /// Install the kept chain again (the last try failed on the host).
    Install { name: String },
    /// Drop a waiting key the desired state no longer names.
    Forget { name: String },
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

/// The certificates the agent manages.
#[derive(Debug)]
pub struct Certificates {
    store: CertStore,
    pending: Mutex<HashMap<String, Pending>>,
    /// Where pending keys are kept (0600) so a restart asks for the same certificate again
    /// instead of starting a new order with a new key.
    pending_file: Option<PathBuf>,
    failures: Mutex<HashMap<String, String>>,
}

impl Certificates {
    /// Certificates in `store`.
    pub fn new(store: CertStore) -> Self {
        Self {
            store,
            pending: Mutex::default(),
            pending_file: None,
            failures: Mutex::default(),
        }
    }

    /// The certificate store.
    pub fn store(&self) -> &CertStore {
        &self.store
    }

    /// Keeps pending keys in `path` (0600), loading those a previous run left.
    pub fn with_pending_file(mut self, path: PathBuf) -> Self {
        *self.pending.get_mut().expect("pending lock") = pending::load(&path);
        self.pending_file = Some(path);
        self
    }

    /// Writes the pending keys (or removes the file when there are none).
    fn save_pending(&self, pending: &HashMap<String, Pending>) {
        if let Some(path) = &self.pending_file {
            pending::save(path, pending);
        }
    }

    /// Installs a certificate the controller issued for a pending key. When the host cannot
    /// write it, the chain is kept and the next pass tries again with backoff.
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
        let result = self.store.install(
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

    /// Records that the controller could not issue a certificate.
    pub fn issuance_failed(&self, name: &str, error: &str) {
        warn!(
            certificate = name,
            error, "the controller could not issue the certificate"
        );
        self.failures
            .lock()
            .expect("failures lock")
            .insert(name.to_owned(), error.to_owned());
    }

    fn failure(&self, name: &str) -> Option<String> {
        self.failures
            .lock()
            .expect("failures lock")
            .get(name)
            .cloned()
    }

    /// The installed certificates that are the ones `certs` ask for, by name.
    pub fn usable(&self, certs: &[spec::Certificate]) -> BTreeMap<String, Installed> {
        let current = self.store.current().unwrap_or_default();
        certs
            .iter()
            .filter_map(|c| {
                let installed = current.get(c.name.as_str()).filter(|i| fits(i, c))?;
                Some((c.name.to_string(), installed.clone()))
            })
            .collect()
    }

    /// The CSR for `cert`: a fresh key when `new_key`, else the waiting one.
    fn request(
        &self,
        cert: &spec::Certificate,
        new_key: bool,
    ) -> Result<CertificateRequest, String> {
        let mut pending = self.pending.lock().expect("pending lock");
        if new_key || !pending.contains_key(cert.name.as_str()) {
            let domains: Vec<String> = cert.domains.iter().map(ToString::to_string).collect();
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

    /// Installs the kept chain of `name` again.
    fn install_kept(&self, name: &str, now: i64) {
        let kept = {
            let pending = self.pending.lock().expect("pending lock");
            pending
                .get(name)
                .and_then(|p| Some((p.revision, p.issued.clone()?)))
        };
        if let Some((revision, chain_pem)) = kept {
            let issued = IssuedCertificate {
                name: name.to_owned(),
                revision,
                chain_pem,
            };
            // A failure is kept as the item's error, with the next try's time.
            let _ = self.install(&issued, now);
        }
    }
}

impl Certificates {
    /// What is installed and what waits for a certificate (no I/O beyond the index).
    fn read_host(&self) -> Result<Observed, String> {
        let installed = self.store.current().map_err(|e| e.to_string())?;
        let waiting = self
            .pending
            .lock()
            .expect("pending lock")
            .iter()
            .map(|(name, p)| {
                let w = Waiting {
                    revision: p.revision,
                    domains: p.domains.clone(),
                    key_type: p.key_type,
                    chain: p.issued.is_some(),
                    retry_at: p.retry_at,
                };
                (name.clone(), w)
            })
            .collect();
        Ok(Observed { installed, waiting })
    }
}

impl Resource for Certificates {
    type Desired = Desired;
    type Observed = Observed;
    type Change = Change;

    async fn observe(&self) -> Result<Observed, String> {
        self.read_host()
    }

    fn plan(desired: &Desired, observed: &Observed) -> Vec<Change> {
        let wanted: BTreeSet<&str> = desired.certs.iter().map(|c| c.name.as_str()).collect();
        let mut changes: Vec<Change> = observed
            .waiting
            .keys()
            .filter(|name| !wanted.contains(name.as_str()))
            .map(|name| Change::Forget { name: name.clone() })
            .collect();
        for cert in &desired.certs {
            let name = cert.name.to_string();
            let waiting = observed.waiting.get(&name);
            if let Some(w) = waiting.filter(|w| w.chain && w.revision == cert.revision) {
                if desired.now >= w.retry_at {
                    changes.push(Change::Install { name });
                }
                continue;
            }
            if let Some(installed) = observed.installed.get(&name).filter(|i| fits(i, cert)) {
                // ACME certificates renew when the controller says (ARI, CA limits): it sends
                // a new revision.
                let controller_renews = matches!(cert.issuer, spec::Issuer::Acme(_));
                if controller_renews || !renewal_due(installed, desired.now) {
                    continue;
                }
            }
            let domains: Vec<String> = cert.domains.iter().map(ToString::to_string).collect();
            let reuse = waiting.is_some_and(|w| {
                w.revision == cert.revision
                    && w.domains == domains
                    && w.key_type == cert.key_type as i32
            });
            changes.push(Change::Ask {
                name,
                new_key: !reuse,
            });
        }
        changes
    }

    async fn apply(&self, desired: &Desired, changes: Vec<Change>, out: &mut Outcome) {
        let mut refused = BTreeMap::new();
        for change in changes {
            match change {
                Change::Forget { name } => {
                    let mut pending = self.pending.lock().expect("pending lock");
                    pending.remove(&name);
                    self.save_pending(&pending);
                }
                Change::Install { name } => self.install_kept(&name, desired.now),
                Change::Ask { name, new_key } => {
                    let Some(cert) = desired.certs.iter().find(|c| c.name.as_str() == name) else {
                        continue;
                    };
                    match self.request(cert, new_key) {
                        Ok(request) => out.requests.push(request),
                        Err(e) => {
                            refused.insert(name, e);
                        }
                    }
                }
            }
        }
        let usable = self.usable(&desired.certs);
        let waiting = self.read_host().map(|o| o.waiting).unwrap_or_default();
        for cert in &desired.certs {
            let name = cert.name.to_string();
            let item: Item = ("certificate", name.clone());
            let kept = waiting
                .get(&name)
                .filter(|w| w.chain && w.revision == cert.revision);
            let result = if let Some(e) = refused.get(&name) {
                failed(item, e)
            } else if let Some(w) = kept {
                out.recheck(std::time::Duration::from_secs(
                    (w.retry_at - desired.now).max(1) as u64,
                ));
                failed(item, self.failure(&name).unwrap_or_default())
            } else if usable.contains_key(&name) {
                ok(item)
            } else if let Some(e) = self.failure(&name) {
                failed(item, format!("issuance failed: {e}"))
            } else {
                pending(item, "waiting for the certificate from the controller")
            };
            out.results.push(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(name: &str, revision: u64, issuer: &str) -> spec::Certificate {
        spec::Certificate::try_from(&gatehouse_proto::v1::CertificateSpec {
            name: name.into(),
            domains: vec![format!("{name}.example.com")],
            key_type: 0,
            issuer: issuer.into(),
            revision,
        })
        .unwrap()
    }

    fn installed(name: &str, revision: u64, not_before: i64, not_after: i64) -> Installed {
        Installed {
            name: name.into(),
            revision,
            domains: vec![format!("{name}.example.com")],
            key_type: 0,
            not_before,
            not_after,
            ..Installed::default()
        }
    }

    fn waiting(revision: u64, chain: bool, retry_at: i64) -> Waiting {
        Waiting {
            revision,
            domains: vec!["www.example.com".into()],
            key_type: 0,
            chain,
            retry_at,
        }
    }

    fn ask(name: &str, new_key: bool) -> Change {
        Change::Ask {
            name: name.into(),
            new_key,
        }
    }

    #[test]
    fn plans() {
        let now = 1_000;
        let www = || cert("www", 1, "internal");
        let fresh = installed("www", 1, 900, 2_000);
        let cases: Vec<(&str, Vec<spec::Certificate>, Observed, Vec<Change>)> = vec![
            (
                "nothing yet: a new key",
                vec![www()],
                Observed::default(),
                vec![ask("www", true)],
            ),
            (
                "waiting with a key that fits: the same key",
                vec![www()],
                Observed {
                    waiting: [("www".into(), waiting(1, false, 0))].into(),
                    ..Default::default()
                },
                vec![ask("www", false)],
            ),
            (
                "waiting for an older revision: a new key",
                vec![cert("www", 2, "internal")],
                Observed {
                    waiting: [("www".into(), waiting(1, false, 0))].into(),
                    ..Default::default()
                },
                vec![ask("www", true)],
            ),
            (
                "installed and fresh: up to date",
                vec![www()],
                Observed {
                    installed: [("www".into(), fresh.clone())].into(),
                    ..Default::default()
                },
                vec![],
            ),
            (
                "installed, two thirds gone, internal: renew",
                vec![www()],
                Observed {
                    installed: [("www".into(), installed("www", 1, 0, 1_200))].into(),
                    ..Default::default()
                },
                vec![ask("www", true)],
            ),
            (
                "installed, two thirds gone, ACME: the controller renews",
                vec![cert("www", 1, "acme:le")],
                Observed {
                    installed: [("www".into(), installed("www", 1, 0, 1_200))].into(),
                    ..Default::default()
                },
                vec![],
            ),
            (
                "installed at an older revision: ask",
                vec![cert("www", 2, "internal")],
                Observed {
                    installed: [("www".into(), fresh.clone())].into(),
                    ..Default::default()
                },
                vec![ask("www", true)],
            ),
            (
                "a kept chain, retry due: install it, ask nothing",
                vec![www()],
                Observed {
                    waiting: [("www".into(), waiting(1, true, now))].into(),
                    ..Default::default()
                },
                vec![Change::Install { name: "www".into() }],
            ),
            (
                "a kept chain, retry later: wait",
                vec![www()],
                Observed {
                    waiting: [("www".into(), waiting(1, true, now + 5))].into(),
                    ..Default::default()
                },
                vec![],
            ),
            (
                "a key no longer wanted: forget it",
                vec![],
                Observed {
                    waiting: [("old".into(), waiting(1, false, 0))].into(),
                    ..Default::default()
                },
                vec![Change::Forget { name: "old".into() }],
            ),
        ];
        for (what, certs, observed, expected) in cases {
            let desired = Desired { certs, now };
            assert_eq!(Certificates::plan(&desired, &observed), expected, "{what}");
        }
    }
}
