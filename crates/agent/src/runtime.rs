//! The agent daemon: reapply the persisted state at start, then keep one stream to the
//! controller open for ever (full-jitter backoff 1 s → 60 s), apply what it sends, report
//! metrics, and rotate the identity certificate before it expires.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse_proto::v1::agent_message::Msg as Up;
use gatehouse_proto::v1::agent_service_client::AgentServiceClient;
use gatehouse_proto::v1::controller_message::Msg as Down;
use gatehouse_proto::v1::{
    Ack, AgentMessage, CertificateRequest, DesiredState, Hello, HostFacts, IdentityRenewal,
    ItemResult, RenewRequest, Report, WhoAmIRequest,
};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::enroll::error_chain;
use crate::host::caddy::Caddy;
use crate::host::certs::CertStore;
use crate::host::files::Owner;
use crate::host::{files, metrics};
use crate::identity::{self, Enrollment, Identity, IdentityError, PendingKey};
use crate::reconcile::Host;
use crate::status::Status;
use crate::transport::{self, ControllerUrl};
use crate::{now_unix, random_below, state};

/// How many reports the agent keeps while the controller is away.
pub const REPORT_BUFFER: usize = 16;

/// How often the agent looks at its host again without being asked (renewals, retries).
pub const RECHECK: Duration = Duration::from_secs(60);

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
enum SessionError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("the controller refused the stream: {0}")]
    Refused(String),
    #[error("the stream closed: {0}")]
    Closed(String),
    #[error("cannot persist the desired state: {0}")]
    State(#[from] state::StateError),
}

/// Full-jitter exponential backoff: each delay is uniform in `0..=min(cap, base·2^attempt)`.
#[derive(Debug, Clone)]
pub struct Backoff {
    attempt: u32,
    base: Duration,
    cap: Duration,
}

impl Backoff {
    /// Backoff from `base` doubling up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            attempt: 0,
            base,
            cap,
        }
    }

    /// The upper bound of the next delay.
    pub fn ceiling(&self) -> Duration {
        self.base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.cap)
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        Duration::from_millis(random_below(ceiling.as_millis() as u64))
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Reports waiting to be sent, at most [`REPORT_BUFFER`]; the oldest go first when full.
#[derive(Debug, Default)]
struct ReportBuffer {
    queue: Mutex<VecDeque<Report>>,
    ready: Notify,
}

impl ReportBuffer {
    fn push(&self, report: Report) {
        let mut q = self.queue.lock().expect("report buffer lock");
        if q.len() == REPORT_BUFFER {
            q.pop_front();
        }
        q.push_back(report);
        drop(q);
        self.ready.notify_one();
    }

    fn drain(&self) -> Vec<Report> {
        self.queue
            .lock()
            .expect("report buffer lock")
            .drain(..)
            .collect()
    }
}

/// A running agent.
#[derive(Debug)]
pub struct Agent {
    config: Config,
    controller: ControllerUrl,
    status: Mutex<Status>,
    applied: Mutex<Option<DesiredState>>,
    interval: watch::Sender<Duration>,
    reports: ReportBuffer,
    facts: Mutex<HostFacts>,
    host: Host,
    /// Certificate requests to send when connected.
    outbox: Mutex<Vec<CertificateRequest>>,
    /// The results last sent in an Ack, to send again only when they change.
    last_results: Mutex<(u64, Vec<ItemResult>)>,
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
        )
        .with_pending_file(paths.pending_keys());
        let agent = Arc::new(Self {
            host,
            outbox: Mutex::default(),
            last_results: Mutex::default(),
            controller,
            status: Mutex::new(status),
            applied: Mutex::new(None),
            interval,
            reports: ReportBuffer::default(),
            facts: Mutex::new(
                metrics::Sampler::new()
                    .map(|s| s.facts())
                    .unwrap_or_default(),
            ),
            config,
        });
        match state::load(&agent.config.paths) {
            Ok(Some(persisted)) => {
                info!(
                    generation = persisted.generation,
                    "reapplying the persisted desired state"
                );
                let results = agent.accept(persisted, "persisted").await;
                for failed in results.iter().filter(|r| !r.ok) {
                    warn!(item = %failed.item, "{}", failed.error);
                }
            }
            Ok(None) => info!("no persisted desired state yet"),
            Err(e) => warn!("{e}"),
        }
        agent.save_status();
        Ok(agent)
    }

    /// The agent's id.
    pub fn agent_id(&self) -> String {
        self.status.lock().expect("status lock").agent_id.clone()
    }

    /// A copy of the current status.
    pub fn status(&self) -> Status {
        self.status.lock().expect("status lock").clone()
    }

    fn update_status(&self, change: impl FnOnce(&mut Status)) {
        change(&mut self.status.lock().expect("status lock"));
        self.save_status();
    }

    fn save_status(&self) {
        let status = self.status();
        if let Err(e) = status.save(&self.config.paths) {
            warn!("cannot write the status file: {e}");
        }
    }

    fn applied_generation(&self) -> u64 {
        self.applied
            .lock()
            .expect("applied lock")
            .as_ref()
            .map_or(0, |s| s.generation)
    }

    /// Applies `desired` and records it as applied; returns the per-item results.
    async fn accept(&self, desired: DesiredState, from: &str) -> Vec<ItemResult> {
        let outcome = self.host.reconcile(&desired, now_unix()).await;
        self.outbox
            .lock()
            .expect("outbox lock")
            .extend(outcome.requests);
        let mut results = vec![ItemResult {
            item: "settings/agent".into(),
            ok: true,
            error: String::new(),
        }];
        results.extend(outcome.results);
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
        results
    }

    /// Runs until `shutdown`: the metrics sampler and the connection loop.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let sampler = tokio::spawn(self.clone().sample_metrics(shutdown.clone()));
        self.connection_loop(&shutdown).await;
        let _ = sampler.await;
        self.update_status(|s| {
            s.connected = false;
            s.connected_since = None;
        });
        info!("agent stopped");
    }

    async fn sample_metrics(self: Arc<Self>, shutdown: CancellationToken) {
        let mut sampler = match tokio::task::spawn_blocking(metrics::Sampler::new).await {
            Ok(Ok(sampler)) => sampler,
            Ok(Err(e)) => {
                warn!("host metrics are unavailable, reports will carry none: {e}");
                return;
            }
            Err(e) => {
                warn!("host metrics are unavailable: {e}");
                return;
            }
        };
        let mut interval = self.interval.subscribe();
        // The first report goes out a second after start (CPU usage needs two readings).
        let mut next = Instant::now() + Duration::from_secs(1);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = interval.changed() => {
                    // A shorter interval takes effect now; a longer one after the next report.
                    next = next.min(Instant::now() + jitter(*interval.borrow_and_update()));
                    continue;
                }
                _ = tokio::time::sleep_until(next) => {}
            }
            let (report, facts, s) = tokio::task::spawn_blocking(move || {
                let m = sampler.sample();
                let facts = sampler.facts();
                (m, facts, sampler)
            })
            .await
            .expect("metrics sampling");
            sampler = s;
            *self.facts.lock().expect("facts lock") = facts;
            self.reports.push(Report {
                sampled_at: now_unix(),
                metrics: Some(report),
                applied_generation: self.applied_generation(),
                certificates: self.host.certs().inventory(),
            });
            next = Instant::now() + jitter(*interval.borrow());
        }
    }

    async fn connection_loop(&self, shutdown: &CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            let mut established = false;
            let result = tokio::select! {
                r = self.session(shutdown, &mut established) => r,
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
            warn!(controller = %self.controller, retry_in = ?delay, "{error}");
            self.update_status(|s| {
                s.connected = false;
                s.connected_since = None;
                s.failed_attempts += u64::from(!established);
                s.last_error = Some(error);
            });
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    async fn session(
        &self,
        shutdown: &CancellationToken,
        established: &mut bool,
    ) -> Result<(), SessionError> {
        let paths = &self.config.paths;
        let ca = identity::load_controller_ca(paths)?;
        let mut identity = Identity::load(paths)?;
        if identity.info.not_after <= now_unix() + 5 {
            identity = self.renew_expired(&identity, &ca).await?;
        }
        let channel = transport::tls_channel(&self.controller, identity.client_config(&ca)?)
            .await
            .map_err(|e| SessionError::Connect(error_chain(&e)))?;
        let mut client = AgentServiceClient::new(channel);
        let (tx, rx) = mpsc::channel::<AgentMessage>(32);
        let facts = self.facts.lock().expect("facts lock").clone();
        let hello = Hello {
            version: gatehouse_proto::VERSION.to_owned(),
            facts: Some(facts),
            capabilities: vec!["settings".into()],
            applied_generation: self.applied_generation(),
        };
        send(&tx, Up::Hello(hello)).await?;
        let mut inbound = client
            .connect(ReceiverStream::new(rx))
            .await
            .map_err(|s| SessionError::Refused(s.message().to_owned()))?
            .into_inner();
        *established = true;
        info!(agent_id = %identity.agent_id, controller = %self.controller, "connected");
        self.update_status(|s| {
            s.connected = true;
            s.connected_since = Some(now_unix());
            s.failed_attempts = 0;
            s.last_error = None;
        });
        for report in self.reports.drain() {
            send(&tx, Up::Report(report)).await?;
        }
        // Ask again for what is still outstanding.
        {
            let mut outbox = self.outbox.lock().expect("outbox lock");
            for request in self.host.outstanding() {
                if !outbox.iter().any(|r| r.name == request.name) {
                    outbox.push(request);
                }
            }
        }
        self.refresh(&tx, false).await?;

        let mut recheck = tokio::time::interval_at(Instant::now() + RECHECK, RECHECK);
        let mut rotate_at = rotation_time(&identity);
        let mut pending: Option<PendingKey> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                message = inbound.message() => {
                    let message = match message {
                        Ok(Some(m)) => m,
                        Ok(None) => return Err(SessionError::Closed("the controller ended it".into())),
                        Err(status) => return Err(SessionError::Closed(status.message().to_owned())),
                    };
                    match message.msg {
                        Some(Down::DesiredState(desired)) => self.on_desired(desired, &tx).await?,
                        Some(Down::IdentityCertificate(cert)) => {
                            let Some(key) = pending.take() else {
                                warn!("ignoring an identity certificate that was not asked for");
                                continue;
                            };
                            match self.promote(key, &cert.certificate_pem, &ca).await {
                                Ok(new) => {
                                    identity = new;
                                    rotate_at = rotation_time(&identity);
                                }
                                Err(e) => {
                                    warn!("the renewed identity did not work, keeping the current one: {e}");
                                    rotate_at = Instant::now() + Duration::from_secs(30);
                                }
                            }
                        }
                        Some(Down::Certificate(issued)) => {
                            if let Err(e) = self.host.install(&issued) {
                                warn!(certificate = %issued.name, "cannot install the issued certificate: {e}");
                            }
                            self.refresh(&tx, true).await?;
                            // Tell the controller what is installed now, not at the next report.
                            send(&tx, Up::Report(Report {
                                sampled_at: now_unix(),
                                metrics: None,
                                applied_generation: self.applied_generation(),
                                certificates: self.host.certs().inventory(),
                            })).await?;
                        }
                        Some(Down::CertificateError(e)) => {
                            self.host.issuance_failed(&e.name, &e.error);
                            self.refresh(&tx, true).await?;
                        }
                        Some(Down::Goodbye(bye)) => {
                            return Err(SessionError::Closed(format!("the controller said goodbye: {}", bye.reason)));
                        }
                        None => debug!("ignoring an empty message"),
                    }
                }
                _ = recheck.tick() => self.refresh(&tx, true).await?,
                _ = self.reports.ready.notified() => {
                    for report in self.reports.drain() {
                        send(&tx, Up::Report(report)).await?;
                    }
                }
                _ = tokio::time::sleep_until(rotate_at) => {
                    let key = PendingKey::generate()?;
                    info!(not_after = identity.info.not_after, "renewing the identity certificate");
                    send(&tx, Up::IdentityRenewal(IdentityRenewal { csr_der: key.csr_der.clone() })).await?;
                    pending = Some(key);
                    // Ask again if no certificate comes back.
                    rotate_at = Instant::now() + retry_after(&identity);
                }
            }
        }
    }

    async fn on_desired(
        &self,
        desired: DesiredState,
        tx: &mpsc::Sender<AgentMessage>,
    ) -> Result<(), SessionError> {
        let generation = desired.generation;
        if generation == self.applied_generation() {
            debug!(generation, "desired state up to date");
            return self.refresh(tx, false).await;
        }
        info!(generation, "applying desired state");
        state::save(&self.config.paths, &desired)?;
        let results = self.accept(desired, "controller").await;
        self.send_ack(tx, generation, results, false).await?;
        self.flush_outbox(tx).await
    }

    /// Looks at the host again for the applied state. With `reconcile`, a full pass (a
    /// certificate arrived, a renewal may be due, a retry) acknowledged again only when the
    /// results changed; without, only what was never acknowledged is.
    async fn refresh(
        &self,
        tx: &mpsc::Sender<AgentMessage>,
        reconcile: bool,
    ) -> Result<(), SessionError> {
        let Some(desired) = self.applied.lock().expect("applied lock").clone() else {
            return Ok(());
        };
        let generation = desired.generation;
        let from = self
            .status()
            .applied_from
            .unwrap_or_else(|| "controller".into());
        if !reconcile && self.last_results.lock().expect("results lock").0 == generation {
            return self.flush_outbox(tx).await;
        }
        let results = self.accept(desired, &from).await;
        self.send_ack(tx, generation, results, true).await?;
        self.flush_outbox(tx).await
    }

    async fn send_ack(
        &self,
        tx: &mpsc::Sender<AgentMessage>,
        generation: u64,
        results: Vec<ItemResult>,
        only_if_changed: bool,
    ) -> Result<(), SessionError> {
        {
            let mut last = self.last_results.lock().expect("results lock");
            if only_if_changed && last.0 == generation && last.1 == results {
                return Ok(());
            }
            *last = (generation, results.clone());
        }
        for failed in results.iter().filter(|r| !r.ok) {
            info!(generation, item = %failed.item, "not applied: {}", failed.error);
        }
        send(
            tx,
            Up::Ack(Ack {
                generation,
                results,
            }),
        )
        .await
    }

    async fn flush_outbox(&self, tx: &mpsc::Sender<AgentMessage>) -> Result<(), SessionError> {
        let requests: Vec<CertificateRequest> =
            self.outbox.lock().expect("outbox lock").drain(..).collect();
        for request in requests {
            send(tx, Up::CertificateRequest(request)).await?;
        }
        Ok(())
    }

    /// Checks a renewed certificate with a fresh connection before replacing the current one.
    async fn promote(
        &self,
        key: PendingKey,
        chain_pem: &str,
        ca: &str,
    ) -> Result<Identity, String> {
        let new = key.complete(chain_pem)?;
        let config = new.client_config(ca).map_err(|e| e.to_string())?;
        let channel = transport::tls_channel(&self.controller, config)
            .await
            .map_err(|e| error_chain(&e))?;
        let seen = AgentServiceClient::new(channel)
            .who_am_i(WhoAmIRequest {})
            .await
            .map_err(|s| s.message().to_owned())?
            .into_inner();
        if seen.agent_id != new.agent_id.as_str() {
            return Err(format!("the controller sees {} instead", seen.agent_id));
        }
        new.save(&self.config.paths).map_err(|e| e.to_string())?;
        info!(serial = %new.info.serial, not_after = new.info.not_after, "identity certificate renewed");
        self.update_status(|s| {
            s.identity_serial = new.info.serial.clone();
            s.identity_not_after = new.info.not_after;
            s.identity_renewals += 1;
        });
        Ok(new)
    }

    /// Renews a certificate that expired while the controller was away (grace renewal).
    async fn renew_expired(&self, current: &Identity, ca: &str) -> Result<Identity, SessionError> {
        info!("the identity certificate has expired; asking for a grace renewal");
        let channel = transport::tls_channel(&self.controller, current.client_config(ca)?)
            .await
            .map_err(|e| SessionError::Connect(error_chain(&e)))?;
        let key = PendingKey::generate()?;
        let answer = AgentServiceClient::new(channel)
            .renew(RenewRequest {
                csr_der: key.csr_der.clone(),
            })
            .await
            .map_err(|s| SessionError::Refused(s.message().to_owned()))?
            .into_inner();
        let new = key
            .complete(&answer.certificate_pem)
            .map_err(SessionError::Refused)?;
        new.save(&self.config.paths)?;
        self.update_status(|s| {
            s.identity_serial = new.info.serial.clone();
            s.identity_not_after = new.info.not_after;
            s.identity_renewals += 1;
        });
        Ok(new)
    }
}

async fn send(tx: &mpsc::Sender<AgentMessage>, msg: Up) -> Result<(), SessionError> {
    tx.send(AgentMessage { msg: Some(msg) })
        .await
        .map_err(|_| SessionError::Closed("the outgoing stream closed".into()))
}

/// `d` ± 10 %.
fn jitter(d: Duration) -> Duration {
    let spread = d.as_millis() as u64 / 5;
    Duration::from_millis(d.as_millis() as u64 - spread / 2 + random_below(spread))
}

/// A random point between 70 % and 90 % of the certificate's lifetime.
fn rotation_time(identity: &Identity) -> Instant {
    let lifetime = (identity.info.not_after - identity.info.not_before).max(1) as u64 * 1000;
    let at_ms =
        identity.info.not_before * 1000 + (lifetime * 7 / 10 + random_below(lifetime / 5)) as i64;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    Instant::now() + Duration::from_millis((at_ms - now_ms).max(0) as u64)
}

/// How long to wait for an answer to a renewal before asking again.
fn retry_after(identity: &Identity) -> Duration {
    let lifetime = (identity.info.not_after - identity.info.not_before).max(1) as u64;
    Duration::from_secs((lifetime / 20).clamp(1, 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let ceilings: Vec<u64> = (0..8)
            .map(|_| {
                let c = b.ceiling().as_secs();
                let d = b.next_delay();
                assert!(d <= Duration::from_secs(c));
                c
            })
            .collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 60, 60]);
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(b.ceiling(), Duration::from_secs(60));
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_secs(1));
    }

    #[test]
    fn report_buffer_is_bounded() {
        let buffer = ReportBuffer::default();
        for i in 0..100 {
            buffer.push(Report {
                sampled_at: i,
                ..Default::default()
            });
        }
        let drained = buffer.drain();
        assert_eq!(drained.len(), REPORT_BUFFER);
        assert_eq!(drained.last().unwrap().sampled_at, 99);
        assert!(buffer.drain().is_empty());
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(30)).as_millis();
            assert!((27_000..=33_000).contains(&d), "{d}");
        }
    }
}
