//! Turns a desired state into the host. Every host resource follows one shape ([`Resource`]):
//! observe the host, a pure `plan(desired, observed)` with no I/O, `apply` the changes, and an
//! outcome with a typed result per item and when to look again. A pass rebuilds the whole
//! picture each time, so running it twice changes nothing and drift is repaired: certificates
//! first (keys made here, CSRs to the controller), then Caddy sites, then tunnels, then old
//! certificate versions are pruned.

pub mod certificates;
pub mod sites;
pub mod tunnels;
pub mod wireguard;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use gatehouse_proto::spec::ValidState;
use gatehouse_proto::v1::{
    AllowlistEntries, CertificateRequest, DesiredState, IssuedCertificate, ItemResult,
};
use tracing::warn;

use crate::host::caddy::Caddy;
use crate::host::certs::{CertStore, Installed};
use certificates::Certificates;
use sites::Sites;
use tunnels::Tunnels;

/// One kind of host resource.
pub trait Resource {
    /// What the desired state asks of it, validated.
    type Desired;
    /// What is on the host now.
    type Observed;
    /// One step of a plan.
    type Change;

    /// Reads the host.
    fn observe(&self) -> impl Future<Output = Result<Self::Observed, String>> + Send;

    /// The steps that turn `observed` into `desired`: pure, and empty when up to date.
    fn plan(desired: &Self::Desired, observed: &Self::Observed) -> Vec<Self::Change>;

    /// Carries the steps out and records a result for every item of `desired`.
    fn apply(
        &self,
        desired: &Self::Desired,
        changes: Vec<Self::Change>,
        out: &mut Outcome,
    ) -> impl Future<Output = ()> + Send;
}

/// Observe, plan, apply: one pass over one resource. A host that cannot be read is the
/// resource's error; nothing is changed then.
async fn pass<R: Resource + Sync>(
    resource: &R,
    kind: &'static str,
    desired: &R::Desired,
    out: &mut Outcome,
) where
    R::Desired: Sync,
    R::Change: Send,
{
    let span = tracing::debug_span!("resource", resource = kind);
    match tracing::Instrument::instrument(resource.observe(), span.clone()).await {
        Ok(observed) => {
            let changes = span.in_scope(|| R::plan(desired, &observed));
            tracing::Instrument::instrument(resource.apply(desired, changes, out), span).await;
        }
        Err(e) => out.results.push(failed((kind, String::new()), e)),
    }
}

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

/// The host resources the agent manages.
#[derive(Debug)]
pub struct Host {
    certificates: Certificates,
    /// `None` when Caddy is not managed on this host; a config reload may replace it.
    sites: RwLock<Option<Arc<Sites>>>,
    /// A config reload may replace it.
    tunnels: RwLock<Arc<Tunnels>>,
    /// The entries of the allowlists the sites use, as last received (kept in a 0600 file, so
    /// a restart without the controller enforces the same set).
    allowlists: RwLock<BTreeMap<String, Vec<String>>>,
    allowlists_file: Option<PathBuf>,
    /// `None` until set up (hosts that run no WireGuard can leave it).
    wireguard: Option<wireguard::Interfaces>,
}

impl Host {
    /// `caddy` is `None` when Caddy is not managed on this host.
    pub fn new(caddy: Option<Caddy>, certs: CertStore, tunnels: Tunnels) -> Self {
        Self {
            certificates: Certificates::new(certs),
            sites: RwLock::new(caddy.map(|c| Arc::new(Sites::new(c)))),
            tunnels: RwLock::new(Arc::new(tunnels)),
            allowlists: RwLock::default(),
            allowlists_file: None,
            wireguard: None,
        }
    }

    /// Runs WireGuard interfaces with `wg`.
    pub fn with_wireguard(mut self, wg: crate::host::wireguard::WireGuard) -> Self {
        self.wireguard = Some(wireguard::Interfaces::new(wg));
        self
    }

    /// The key each WireGuard interface of `state` has: (network, public key, "" for none).
    pub fn wireguard_keys(&self, state: &DesiredState) -> Vec<(String, String)> {
        let Some(wg) = &self.wireguard else {
            return Vec::new();
        };
        wg.keys(&ValidState::from_state(state).wireguard)
    }

    /// Each WireGuard interface of `state` as it is now.
    pub fn wireguard_status(
        &self,
        state: &DesiredState,
    ) -> Vec<gatehouse_proto::v1::WireguardStatus> {
        let Some(wg) = &self.wireguard else {
            return Vec::new();
        };
        let valid = ValidState::from_state(state);
        wg.status(&valid.wireguard)
    }

    /// Keeps allowlist entries in `path` (0600), loading those a previous run left.
    pub fn with_allowlists_file(mut self, path: PathBuf) -> Self {
        if let Some(lists) = crate::host::files::read_json(&path, "allowlist entries") {
            *self.allowlists.get_mut().expect("allowlists lock") = lists;
        }
        self.allowlists_file = Some(path);
        self
    }

    /// Takes an allowlist's entries as the controller sent them: only CIDRs are kept (anything
    /// else is refused whole). True when they changed.
    pub fn set_allowlist(&self, entries: &AllowlistEntries) -> Result<bool, String> {
        let name: gatehouse_proto::names::ResourceName =
            entries.name.parse().map_err(|e| format!("allowlist {e}"))?;
        let mut cidrs = Vec::with_capacity(entries.cidrs.len());
        for c in &entries.cidrs {
            let net: ipnet::IpNet = c.parse().map_err(|_| {
                format!(
                    "allowlist {name}: {:?} is not a CIDR",
                    gatehouse_proto::text::escape(c)
                )
            })?;
            cidrs.push(net.trunc().to_string());
        }
        cidrs.sort();
        cidrs.dedup();
        let mut lists = self.allowlists.write().expect("allowlists lock");
        if lists.get(name.as_str()) == Some(&cidrs) {
            return Ok(false);
        }
        lists.insert(name.to_string(), cidrs);
        if let Some(path) = &self.allowlists_file {
            let bytes = serde_json::to_vec(&*lists).expect("lists serialise");
            if let Err(e) = gatehouse_common::files::write_private(path, &bytes) {
                warn!(path = %path.display(), error = %e, "cannot save the allowlists; they apply all the same");
            }
        }
        Ok(true)
    }

    /// Runs tunnels as given from the next pass on.
    pub fn set_tunnels(&self, tunnels: Tunnels) {
        *self.tunnels.write().expect("tunnels lock") = Arc::new(tunnels);
    }

    /// The tunnels on this host.
    pub fn tunnels(&self) -> Arc<Tunnels> {
        self.tunnels.read().expect("tunnels lock").clone()
    }

    /// Manages Caddy as given from the next pass on (`None`: not at all).
    pub fn set_caddy(&self, caddy: Option<Caddy>) {
        *self.sites.write().expect("sites lock") = caddy.map(|c| Arc::new(Sites::new(c)));
    }

    /// Keeps pending keys in `path` (0600), loading those a previous run left.
    pub fn with_pending_file(mut self, path: PathBuf) -> Self {
        self.certificates = self.certificates.with_pending_file(path);
        self
    }

    /// The certificate store.
    pub fn certs(&self) -> &CertStore {
        self.certificates.store()
    }

    /// Installs a certificate the controller issued for a pending key.
    pub fn install(&self, issued: &IssuedCertificate, now: i64) -> Result<Installed, InstallError> {
        self.certificates.install(issued, now)
    }

    /// Records that the controller could not issue a certificate.
    pub fn issuance_failed(&self, name: &str, error: &str) {
        self.certificates.issuance_failed(name, error);
    }

    /// One pass over `state`.
    pub async fn reconcile(&self, state: &DesiredState, now: i64) -> Outcome {
        let valid = ValidState::from_state(state);
        let mut out = Outcome::default();
        for e in &valid.errors {
            let (kind, name) = e.item.split_once('/').unwrap_or((&e.item, ""));
            out.results.push(ItemResult::failed(kind, name, &e.reason));
        }
        let certs = certificates::Desired {
            certs: valid.certificates.clone(),
            now,
        };
        pass(&self.certificates, "certificates", &certs, &mut out).await;
        let sites = self.sites.read().expect("sites lock").clone();
        match sites {
            Some(sites) => {
                let desired = sites::Desired {
                    usable: self.certificates.usable(&valid.certificates),
                    sites: valid.sites.clone(),
                    allowlists: self.allowlists.read().expect("allowlists lock").clone(),
                };
                pass(sites.as_ref(), "caddy", &desired, &mut out).await;
            }
            None => {
                for site in &valid.sites {
                    out.results.push(failed(
                        ("site", site.name.to_string()),
                        "Caddy is not managed on this host (caddy.enabled = false)",
                    ));
                }
            }
        }
        let tunnels = self.tunnels();
        if !valid.tunnels.is_empty() || tunnels.on_host() {
            let desired = tunnels::Desired {
                tunnels: valid.tunnels.clone(),
            };
            pass(tunnels.as_ref(), "tunnels", &desired, &mut out).await;
        }
        match &self.wireguard {
            Some(wg) if !valid.wireguard.is_empty() || wg.on_host() => {
                let desired = wireguard::Desired {
                    interfaces: valid.wireguard.clone(),
                };
                pass(wg, "wireguard", &desired, &mut out).await;
            }
            Some(_) => {}
            None => {
                for w in &valid.wireguard {
                    out.results.push(failed(
                        ("wireguard", w.network.to_string()),
                        "WireGuard is not set up on this host",
                    ));
                }
            }
        }
        // Whatever the other items did: the index keeps the versions a restored site may use.
        let wanted: BTreeSet<String> = valid
            .certificates
            .iter()
            .map(|c| c.name.to_string())
            .collect();
        if let Err(e) = self.certs().clean(&wanted) {
            warn!(error = %e, "cannot clean up old certificate files");
        }
        out
    }
}
