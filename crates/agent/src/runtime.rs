//! The agent daemon: reapply the persisted state at start, then keep one stream to the
//! controller open for ever (full-jitter backoff 1 s → 60 s; the stream itself is
//! [`crate::session`]), apply what it sends, report metrics ([`crate::reports`]), and rotate
//! the identity certificate before it expires ([`crate::rotation`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub use gatehouse_common::Backoff;
use gatehouse_proto::v1::{
    Ack, CertificateRequest, DesiredState, HostFacts, ItemResult, TunnelStatus,
};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Config, Paths};
use crate::host::caddy::Caddy;
use crate::host::certs::CertStore;
use crate::host::files::Owner;
use crate::host::systemd::Systemd;
use crate::host::{files, metrics};
use crate::identity::{self, Enrollment, Identity, IdentityError};
use crate::reconcile::Host;
use crate::reconcile::tunnels::Tunnels;
use crate::reports::ReportBuffer;
use crate::session;
use crate::state;
use crate::status::Status;
use crate::transport::ControllerUrl;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("invalid controller address in {path}: {message}")]
    Controller {
        path: std::path::PathBuf,
        message: String,
    },
}

/// Why one session with the controller ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("the controller refused the stream: {0}")]
    Refused(String),
    #[error("the stream closed: {0}")]
    Closed(String),
    #[error("the stream stalled: {0}")]
    Stalled(String),
}

/// What one pass over the host gives the stream.
#[derive(Debug)]
pub(crate) struct Pass {
    /// The acknowledgement, when the results changed since the last one sent.
    pub ack: Option<Ack>,
    /// What the host is waiting for.
    pub requests: Vec<CertificateRequest>,
    /// When the host should be looked at again on its own.
    pub recheck_in: Option<Duration>,
}

/// A running agent.
#[derive(Debug)]
pub struct Agent {
    /// Where the agent keeps its files (fixed until a restart).
    pub(crate) paths: Paths,
    /// The running config; a reload replaces what can change while running.
    config: RwLock<Arc<Config>>,
    /// Wakes the stream (or the wait between two) after a reload: a pass runs with the new
    /// settings.
    pub(crate) reloaded: Notify,
    /// Wall-clock time wherever it decides something (a manual one in tests).
    pub(crate) clock: gatehouse_common::Clock,
    /// The controllers it may stream to (the first from `controller` or enrollment, then
    /// `controllers`), and which one it uses now.
    controllers: Vec<ControllerUrl>,
    current: std::sync::atomic::AtomicUsize,
    status: Mutex<Status>,
    applied: Mutex<Option<DesiredState>>,
    pub(crate) interval: watch::Sender<Duration>,
    pub(crate) reports: ReportBuffer,
    pub(crate) facts: Mutex<HostFacts>,
    pub(crate) host: Host,
    /// Each tunnel as the last health check saw it.
    pub(crate) tunnel_status: Mutex<Vec<TunnelStatus>>,
    /// The results last sent in an Ack, to send again only when they change.
    last_results: Mutex<(u64, Vec<ItemResult>)>,
    /// Each item's state and message as last logged (`None`: applied), so a change is logged
    /// once.
    logged: Mutex<HashMap<String, Option<(&'static str, String)>>>,
    /// Why the applied state could not be saved for the next start (a full disk): it is
    /// applied all the same, and saved again at every pass until that works.
    unsaved: Mutex<Option<String>>,
}

/// The host's tunnels as `config` runs them.
fn tunnels(config: &Config) -> Tunnels {
    Tunnels::new(
        config.tunnels.clone(),
        config.paths.tunnels(),
        Systemd::host(),
    )
}

/// The owner of site certificate files: Caddy's user, when the agent can chown to it.
fn cert_owner(config: &Config) -> Option<Owner> {
    let name = config.caddy.as_ref()?.user.as_deref()?;
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    match nix::unistd::User::from_name(name) {
        Ok(Some(user)) => Some(Owner {
            uid: user.uid,
            gid: user.gid,
        }),
        _ => {
            warn!(
                user = name,
                "Caddy's user does not exist; certificate files stay owned by root"
            );
            None
        }
    }
}

impl Agent {
    /// Loads the identity and the persisted state; reapplies that state right away, without
    /// the controller.
    pub async fn start(config: Config) -> Result<Arc<Self>, StartError> {
        Self::start_with_clock(config, gatehouse_common::Clock::system()).await
    }

    /// The same, with renewals and rotation following `clock` (a manual one in tests).
    pub async fn start_with_clock(
        config: Config,
        clock: gatehouse_common::Clock,
    ) -> Result<Arc<Self>, StartError> {
        let paths = &config.paths;
        let enrollment = Enrollment::load(paths)?;
        let identity = Identity::load(paths)?;
        identity::load_controller_ca(paths)?;
        let controller = match &config.controller {
            Some(url) => url.clone(),
            None => enrollment
                .controller_url()
                .map_err(|message| StartError::Controller {
                    path: paths.enrollment(),
                    message,
                })?,
        };
        for dir in [&paths.state_dir, &paths.tls_dir] {
            match files::remove_stale_temps(dir) {
                Ok(0) => {}
                Ok(n) => {
                    info!(dir = %dir.display(), removed = n, "removed temporary files left by an interrupted write")
                }
                Err(e) => warn!("{e}"),
            }
        }
        let status = Status {
            agent_id: identity.agent_id.to_string(),
            controller: controller.to_string(),
            identity_serial: identity.info.serial.clone(),
            identity_not_after: identity.info.not_after,
            ..Status::default()
        };
        let (interval, _) = watch::channel(config.report_interval);
        let host = Host::new(
            config.caddy.clone().map(Caddy::new),
            CertStore::new(
                &paths.site_certs(),
                &paths.certificates_index(),
                cert_owner(&config),
            ),
            tunnels(&config),
        )
        .with_pending_file(paths.pending_keys())
        .with_allowlists_file(paths.allowlists())
        .with_wireguard(crate::host::wireguard::WireGuard {
            dir: paths.wireguard(),
            userspace: config.wireguard.userspace,
            wireguard_go: config.wireguard.wireguard_go.clone(),
            systemd: Systemd::host(),
        });
        let agent = Arc::new(Self {
            host,
            tunnel_status: Mutex::default(),
            last_results: Mutex::default(),
            logged: Mutex::default(),
            unsaved: Mutex::default(),
            controllers: std::iter::once(controller)
                .chain(config.other_controllers.iter().cloned())
                .collect(),
            current: std::sync::atomic::AtomicUsize::new(0),
            status: Mutex::new(status),
            applied: Mutex::new(None),
            interval,
            reloaded: Notify::new(),
            clock,
            reports: ReportBuffer::default(),
            facts: Mutex::new(
                metrics::Sampler::new()
                    .map(|s| s.facts())
                    .unwrap_or_default(),
            ),
            paths: config.paths.clone(),
            config: RwLock::new(Arc::new(config)),
        });
        match state::load(&agent.paths) {
            Ok(Some(persisted)) => {
                info!(
                    generation = persisted.generation,
                    "reapplying the persisted desired state"
                );
                agent.set_applied(persisted, "persisted");
                agent.reconcile_applied().await;
            }
            Ok(None) => info!("no persisted desired state yet"),
            Err(e) => warn!("{e}"),
        }
        agent.save_status();
        Ok(agent)
    }

    /// The running config.
    pub fn config(&self) -> Arc<Config> {
        self.config.read().expect("config lock").clone()
    }

    /// Applies the config file read again: the log filter, the report and recheck intervals,
    /// the stream timeout (from the next stream) and Caddy take effect now; the controller,
    /// the CA pin and the paths wait for a restart (logged). A pass runs with the new settings.
    pub fn reload(&self, new: Config, log: &gatehouse_common::logging::LogFilter) {
        let old = self.config();
        let (config, restart) = old.reloaded(new);
        if let Err(e) = log.set(&config.log) {
            warn!(error = %e, "cannot change the log filter");
        }
        if config.report_interval != old.report_interval {
            // Until the controller's next desired state says otherwise.
            self.interval.send_replace(config.report_interval);
        }
        if config.caddy != old.caddy {
            self.host.set_caddy(config.caddy.clone().map(Caddy::new));
        }
        if config.tunnels != old.tunnels {
            self.host.set_tunnels(tunnels(&config));
        }
        let changed: Vec<&str> = [
            ("log", config.log != old.log),
            (
                "report_interval",
                config.report_interval != old.report_interval,
            ),
            (
                "recheck_interval",
                config.recheck_interval != old.recheck_interval,
            ),
            (
                "stream_timeout",
                config.stream_timeout != old.stream_timeout,
            ),
            ("caddy", config.caddy != old.caddy),
            ("tunnels", config.tunnels != old.tunnels),
        ]
        .into_iter()
        .filter_map(|(name, differs)| differs.then_some(name))
        .collect();
        *self.config.write().expect("config lock") = Arc::new(config);
        if !restart.is_empty() {
            warn!(settings = ?restart, "these settings changed in the config file and take effect at the next restart");
        }
        info!(changed = ?changed, "config file read again");
        self.reloaded.notify_one();
    }

    /// The agent's id.
    pub fn agent_id(&self) -> String {
        self.status.lock().expect("status lock").agent_id.clone()
    }

    /// A copy of the current status.
    pub fn status(&self) -> Status {
        self.status.lock().expect("status lock").clone()
    }

    pub(crate) fn update_status(&self, change: impl FnOnce(&mut Status)) {
        change(&mut self.status.lock().expect("status lock"));
        self.save_status();
    }

    fn save_status(&self) {
        let status = self.status();
        if let Err(e) = status.save(&self.paths) {
            warn!("cannot write the status file: {e}");
        }
    }

    pub(crate) fn applied_generation(&self) -> u64 {
        self.applied
            .lock()
            .expect("applied lock")
            .as_ref()
            .map_or(0, |s| s.generation)
    }

    /// The controller the agent streams to (or tries next).
    pub(crate) fn controller(&self) -> ControllerUrl {
        let i = self.current.load(std::sync::atomic::Ordering::Relaxed);
        self.controllers[i % self.controllers.len()].clone()
    }

    /// Moves to the next controller (the same one when there is only one); it.
    fn next_controller(&self) -> ControllerUrl {
        self.current
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let c = self.controller();
        self.update_status(|s| s.controller = c.to_string());
        c
    }

    /// Runs until `shutdown`: the metrics sampler and the connection loop.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let sampler = tokio::spawn(self.clone().sample_metrics(shutdown.clone()));
        let watchdog = tokio::spawn(self.clone().watch_tunnels(shutdown.clone()));
        self.connection_loop(&shutdown).await;
        let _ = sampler.await;
        let _ = watchdog.await;
        self.update_status(|s| {
            s.connected = false;
            s.connected_since = None;
        });
        info!("agent stopped");
    }

    async fn connection_loop(&self, shutdown: &CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mut next_pass = Instant::now() + self.config().recheck_interval;
        loop {
            let mut established = false;
            let result = tokio::select! {
                r = session::run(self, shutdown, &mut established) => r,
                _ = shutdown.cancelled() => return,
            };
            if shutdown.is_cancelled() {
                return;
            }
            if established {
                backoff.reset();
            }
            let error = match result {
                Ok(()) => return,
                Err(e) => e.to_string(),
            };
            let delay = backoff.next_delay();
            let ended = self.controller();
            let next = self.next_controller();
            warn!(controller = %ended, next = %next, retry_in = ?delay, error = %error, "the stream ended");
            self.update_status(|s| {
                s.connected = false;
                s.connected_since = None;
                s.failed_attempts += u64::from(!established);
                s.last_error = Some(error);
            });
            if self.wait_offline(delay, &mut next_pass, shutdown).await {
                return;
            }
        }
    }

    /// Waits `delay` before the next attempt, looking at the host whenever a pass is due: the
    /// host is repaired while the controller is away. True when shutting down.
    async fn wait_offline(
        &self,
        delay: Duration,
        next_pass: &mut Instant,
        shutdown: &CancellationToken,
    ) -> bool {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until.min(*next_pass)) => {}
                _ = self.reloaded.notified() => *next_pass = Instant::now(),
                _ = shutdown.cancelled() => return true,
            }
            if Instant::now() >= *next_pass {
                self.reconcile_applied().await;
                *next_pass = Instant::now() + self.config().recheck_interval;
            }
            if Instant::now() >= until {
                return false;
            }
        }
    }

    /// The tunnels of the applied state, validated.
    pub(crate) fn applied_tunnels(&self) -> Vec<gatehouse_proto::spec::Tunnel> {
        self.applied
            .lock()
            .expect("applied lock")
            .as_ref()
            .map(|d| gatehouse_proto::spec::ValidState::from_state(d).tunnels)
            .unwrap_or_default()
    }

    /// Each WireGuard interface of the applied state as it is now.
    pub(crate) fn wireguard_status(&self) -> Vec<gatehouse_proto::v1::WireguardStatus> {
        let applied = self.applied.lock().expect("applied lock").clone();
        applied.map_or_else(Vec::new, |state| self.host.wireguard_status(&state))
    }

    /// The key each WireGuard interface of the applied state has: (network, public key).
    pub(crate) fn wireguard_keys(&self) -> Vec<(String, String)> {
        let applied = self.applied.lock().expect("applied lock").clone();
        applied.map_or_else(Vec::new, |state| self.host.wireguard_keys(&state))
    }

    /// Each tunnel as the last health check saw it.
    pub(crate) fn tunnel_status(&self) -> Vec<TunnelStatus> {
        self.tunnel_status
            .lock()
            .expect("tunnel status lock")
            .clone()
    }

    /// A stream was accepted: the status says so, and its first pass acknowledges again.
    pub(crate) fn connected(&self) {
        *self.last_results.lock().expect("results lock") = (0, Vec::new());
        self.update_status(|s| {
            s.connected = true;
            s.connected_since = Some(self.clock.now());
            s.failed_attempts = 0;
            s.last_error = None;
        });
    }

    /// The host facts of the last sample.
    pub(crate) fn facts(&self) -> HostFacts {
        self.facts.lock().expect("facts lock").clone()
    }

    /// Records `desired` as the state to apply (the next pass applies it).
    pub(crate) fn set_applied(&self, desired: DesiredState, from: &str) {
        if desired.report_interval_seconds > 0 {
            self.interval.send_replace(Duration::from_secs(u64::from(
                desired.report_interval_seconds,
            )));
        }
        let generation = desired.generation;
        *self.applied.lock().expect("applied lock") = Some(desired);
        self.update_status(|s| {
            s.applied_generation = generation;
            s.applied_from = Some(from.to_owned());
        });
    }

    /// Saves the applied state for the next start; a failure is kept and shows as an item.
    pub(crate) fn persist_applied(&self) {
        let Some(desired) = self.applied.lock().expect("applied lock").clone() else {
            return;
        };
        let result = state::save(&self.paths, &desired).map_err(|e| e.to_string());
        let mut unsaved = self.unsaved.lock().expect("unsaved lock");
        match result {
            Ok(()) => *unsaved = None,
            Err(e) => {
                if unsaved.as_ref() != Some(&e) {
                    warn!(generation = desired.generation, error = %e, "cannot save the desired state; it is applied all the same");
                }
                *unsaved = Some(e);
            }
        }
    }

    /// One pass over the host for the applied state. The ack is there when the results
    /// differ from the last one sent; item changes are logged once each.
    pub(crate) async fn reconcile_applied(&self) -> Option<Pass> {
        let desired = self.applied.lock().expect("applied lock").clone()?;
        if self.unsaved.lock().expect("unsaved lock").is_some() {
            self.persist_applied();
        }
        let generation = desired.generation;
        let span = tracing::info_span!("pass", generation);
        let outcome =
            tracing::Instrument::instrument(self.host.reconcile(&desired, self.clock.now()), span)
                .await;
        let unsaved = self.unsaved.lock().expect("unsaved lock").clone();
        let mut results = vec![match unsaved {
            None => ItemResult::applied("settings", "agent"),
            Some(e) => ItemResult::failed(
                "settings",
                "agent",
                format!("applied, but not saved for the next start: {e}"),
            ),
        }];
        results.extend(outcome.results);
        self.log_changes(generation, &results);
        let ack = {
            let mut last = self.last_results.lock().expect("results lock");
            (last.0 != generation || last.1 != results).then(|| {
                *last = (generation, results.clone());
                Ack {
                    generation,
                    results,
                }
            })
        };
        Some(Pass {
            ack,
            requests: outcome.requests,
            recheck_in: outcome.recheck_in,
        })
    }

    /// Logs each item whose result changed since it was last logged: once, not every pass.
    fn log_changes(&self, generation: u64, results: &[ItemResult]) {
        let mut logged = self.logged.lock().expect("logged lock");
        let mut seen = HashMap::new();
        for r in results {
            let item = r.item();
            let now = (!r.is_applied()).then(|| (r.item_state().word(), r.message.clone()));
            let before = logged.get(&item).cloned().flatten();
            if now != before {
                match &now {
                    Some((state, why)) => {
                        info!(generation, item = %item, state, why = %why, "not applied")
                    }
                    None if logged.contains_key(&item) => {
                        info!(generation, item = %item, "applied")
                    }
                    None => {}
                }
            }
            seen.insert(item, now);
        }
        *logged = seen;
    }
}
