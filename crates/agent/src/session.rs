//! One stream with the controller, from `Hello` until it ends.
//!
//! Reading never waits on sending: everything the agent has to say goes into a bounded,
//! coalescing [`Outbox`] that the stream's writer (tonic's request stream) drains on its own;
//! one slot per key (the newest ack, the newest report, one request per certificate), so a
//! controller that stops reading cannot wedge this loop. Both sides ping at the application
//! level ([`Liveness`]), and a peer that stops answering ends the stream: the connection loop
//! then reconnects with backoff and resyncs by generation.
//!
//! A certificate request goes out once per revision and again only after a timeout (doubling,
//! from [`REASK`] up to [`REASK_CAP`]) or on a new stream.

use std::collections::HashMap;
use std::time::Duration;

use gatehouse_common::{Liveness, Outbox};
use gatehouse_proto::v1::agent_message::Msg as Up;
use gatehouse_proto::v1::agent_service_client::AgentServiceClient;
use gatehouse_proto::v1::controller_message::Msg as Down;
use gatehouse_proto::v1::{
    AgentMessage, CertificateInventory, CertificateRequest, ControllerMessage, DesiredState, Hello,
    IdentityRenewal, LogsRequest, Ping, Pong, Report,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;
use tracing::{debug, info, warn};

use crate::identity::{self, Identity, PendingKey};
use crate::runtime::{Agent, SessionError};
use crate::{random_below, transport};
use gatehouse_common::error_chain;

/// The first wait before a certificate request is sent again without an answer.
pub const REASK: Duration = Duration::from_secs(60);
/// The longest such wait.
pub const REASK_CAP: Duration = Duration::from_secs(15 * 60);
/// Distinct messages that may wait to be sent (there is one key per certificate, so this is
/// far above any desired state); past it the stream is torn down.
const OUTBOX_CAPACITY: usize = 4096;

/// What a message in the outbox stands for: a newer message with the same key replaces it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Hello,
    Ack,
    Report,
    /// A report kept while the controller was away.
    Backlog(usize),
    Certificate(String),
    IdentityRenewal,
    Ping,
    Pong,
    /// One batch of journal lines: (request, batch number).
    Logs(u64, u64),
}

/// When a certificate request was last sent on this stream.
#[derive(Debug, Clone)]
struct Asked {
    revision: u64,
    attempts: u32,
    again_at: Instant,
}

impl Asked {
    fn wait(attempts: u32) -> Duration {
        REASK
            .saturating_mul(1 << attempts.saturating_sub(1).min(10))
            .min(REASK_CAP)
    }
}

/// Whether to send `request` now, recording it when so.
fn should_ask(
    asked: &mut HashMap<String, Asked>,
    request: &CertificateRequest,
    now: Instant,
) -> bool {
    let attempts = match asked.get(&request.name) {
        Some(a) if a.revision == request.revision && now < a.again_at => return false,
        Some(a) if a.revision == request.revision => a.attempts + 1,
        _ => 1,
    };
    asked.insert(
        request.name.clone(),
        Asked {
            revision: request.revision,
            attempts,
            again_at: now + Asked::wait(attempts),
        },
    );
    true
}

fn up(msg: Up) -> AgentMessage {
    AgentMessage { msg: Some(msg) }
}

/// One open stream.
struct Session<'a> {
    agent: &'a Agent,
    ca: String,
    identity: Identity,
    outbox: Outbox<Key, AgentMessage>,
    liveness: Liveness,
    asked: HashMap<String, Asked>,
    /// The identity key waiting for its certificate.
    renewing: Option<PendingKey>,
    rotate_at: Instant,
    /// A pass over the host is due once nothing else is waiting.
    dirty: bool,
    /// When a pass should run again on its own (an install to retry).
    retry_at: Option<Instant>,
    /// The certificate inventory the controller was last told.
    told: Option<Vec<CertificateInventory>>,
    /// The WireGuard keys (network, public key) the controller was last told.
    told_keys: Vec<(String, String)>,
    /// Journal readers by request id; all stop with the session.
    logs: HashMap<u64, CancellationToken>,
    logs_stop: CancellationToken,
}

/// Connects, says hello, and runs the stream until it ends. `established` tells the caller
/// whether the controller accepted it (the backoff starts over then).
pub(crate) async fn run(
    agent: &Agent,
    shutdown: &CancellationToken,
    established: &mut bool,
) -> Result<(), SessionError> {
    let paths = &agent.paths;
    let ca = identity::load_controller_ca(paths)?;
    let mut identity = Identity::load(paths)?;
    if identity.info.not_after <= agent.clock.now() + 5 {
        identity = agent.renew_expired(&identity, &ca).await?;
    }
    let controller = agent.controller();
    let channel = transport::tls_channel(&controller, identity.client_config(&ca)?)
        .await
        .map_err(|e| SessionError::Connect(error_chain(&e)))?;
    let outbox = Outbox::new(OUTBOX_CAPACITY);
    let hello = Hello {
        version: gatehouse_proto::VERSION.to_owned(),
        facts: Some(agent.facts()),
        capabilities: vec!["settings".into()],
        applied_generation: agent.applied_generation(),
    };
    outbox
        .push(Key::Hello, up(Up::Hello(hello)))
        .map_err(stalled)?;
    let mut inbound = AgentServiceClient::new(channel)
        .connect(outbox.stream())
        .await
        .map_err(|s| SessionError::Refused(s.message().to_owned()))?
        .into_inner();
    *established = true;
    info!(agent_id = %identity.agent_id, controller = %controller, "connected");
    agent.connected();
    let mut session = Session {
        agent,
        ca,
        rotate_at: rotation_time(&identity, agent.clock.now()),
        identity,
        outbox,
        liveness: Liveness::new(agent.config().stream_timeout, Instant::now()),
        asked: HashMap::new(),
        renewing: None,
        dirty: true,
        retry_at: None,
        told: None,
        told_keys: Vec::new(),
        logs: HashMap::new(),
        logs_stop: CancellationToken::new(),
    };
    let result = session.serve(&mut inbound, shutdown).await;
    session.logs_stop.cancel();
    session.outbox.close();
    result
}

fn stalled(e: gatehouse_common::Full) -> SessionError {
    SessionError::Stalled(e.to_string())
}

impl Session<'_> {
    fn push(&self, key: Key, msg: Up) -> Result<(), SessionError> {
        self.outbox.push(key, up(msg)).map_err(stalled)
    }

    async fn serve(
        &mut self,
        inbound: &mut Streaming<ControllerMessage>,
        shutdown: &CancellationToken,
    ) -> Result<(), SessionError> {
        for (i, report) in self.agent.reports.drain().into_iter().enumerate() {
            self.push(Key::Backlog(i), Up::Report(report))?;
        }
        let every = self.agent.config().recheck_interval;
        let mut recheck = tokio::time::interval_at(Instant::now() + every, every);
        loop {
            let wake = self.liveness.next_wake();
            let retry_at = self.retry_at;
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep_until(wake) => {
                    let now = Instant::now();
                    self.liveness
                        .check(now)
                        .map_err(|e| SessionError::Stalled(format!("the controller stopped answering: {e}")))?;
                    if let Some(nonce) = self.liveness.ping_due(now) {
                        self.push(Key::Ping, Up::Ping(Ping { nonce }))?;
                    }
                }
                _ = tokio::time::sleep_until(self.rotate_at) => self.start_rotation()?,
                _ = self.agent.reports.ready.notified() => {
                    // Online, only the newest report matters.
                    if let Some(report) = self.agent.reports.drain().pop() {
                        self.push(Key::Report, Up::Report(report))?;
                    }
                }
                _ = recheck.tick() => self.dirty = true,
                _ = self.agent.reloaded.notified() => {
                    let every = self.agent.config().recheck_interval;
                    recheck = tokio::time::interval_at(Instant::now() + every, every);
                    self.dirty = true;
                }
                _ = sleep_until_some(retry_at) => {
                    self.retry_at = None;
                    self.dirty = true;
                }
                message = inbound.message() => {
                    let message = match message {
                        Ok(Some(m)) => m,
                        Ok(None) => return Err(SessionError::Closed("the controller ended it".into())),
                        Err(status) => return Err(SessionError::Closed(status.message().to_owned())),
                    };
                    self.on_message(message).await?;
                }
                // Last: a pass runs once the messages that arrived together are handled.
                _ = std::future::ready(()), if self.dirty => self.pass().await?,
            }
        }
    }

    async fn on_message(&mut self, message: ControllerMessage) -> Result<(), SessionError> {
        match message.msg {
            Some(Down::DesiredState(desired)) => self.on_desired(desired).await?,
            Some(Down::IdentityCertificate(cert)) => {
                let Some(key) = self.renewing.take() else {
                    warn!("ignoring an identity certificate that was not asked for");
                    return Ok(());
                };
                match self
                    .agent
                    .promote(key, &cert.certificate_pem, &self.ca)
                    .await
                {
                    Ok(new) => {
                        self.identity = new;
                        self.rotate_at = rotation_time(&self.identity, self.agent.clock.now());
                    }
                    Err(e) => {
                        warn!(error = %e, "the renewed identity did not work, keeping the current one");
                        self.rotate_at = Instant::now() + Duration::from_secs(30);
                    }
                }
            }
            Some(Down::Certificate(issued)) => {
                match self.agent.host.install(&issued, self.agent.clock.now()) {
                    Ok(_) => {
                        self.asked.remove(&issued.name);
                    }
                    // The item shows it; the pass retries it.
                    Err(e) if e.retrying => {}
                    Err(e) => {
                        debug!(certificate = %issued.name, revision = issued.revision, error = %e.message, "ignoring an issued certificate")
                    }
                }
                self.dirty = true;
            }
            Some(Down::CertificateError(e)) => {
                self.agent.host.issuance_failed(&e.name, &e.error);
                self.dirty = true;
            }
            Some(Down::AllowlistEntries(entries)) => {
                match self.agent.host.set_allowlist(&entries) {
                    Ok(true) => {
                        info!(allowlist = %entries.name, entries = entries.cidrs.len(), "allowlist entries changed");
                        self.dirty = true;
                    }
                    Ok(false) => {}
                    Err(e) => warn!(error = %e, "ignoring allowlist entries"),
                }
            }
            Some(Down::LogsRequest(request)) => self.start_logs(request),
            Some(Down::LogsCancel(c)) => {
                if let Some(reader) = self.logs.remove(&c.id) {
                    reader.cancel();
                }
            }
            Some(Down::Ping(ping)) => self.push(Key::Pong, Up::Pong(Pong { nonce: ping.nonce }))?,
            Some(Down::Pong(pong)) => self.liveness.pong(pong.nonce),
            Some(Down::Goodbye(bye)) => {
                return Err(SessionError::Closed(format!(
                    "the controller said goodbye: {}",
                    bye.reason
                )));
            }
            None => debug!("ignoring an empty message"),
        }
        Ok(())
    }

    async fn on_desired(&mut self, desired: DesiredState) -> Result<(), SessionError> {
        let generation = desired.generation;
        if generation == self.agent.applied_generation() {
            debug!(generation, "desired state up to date");
            return Ok(());
        }
        info!(generation, "applying desired state");
        self.agent.set_applied(desired, "controller");
        self.agent.persist_applied();
        self.dirty = true;
        Ok(())
    }

    /// One pass over the host for the applied state: acknowledge what changed, ask for what
    /// is missing (once per revision), and tell the controller what is installed.
    async fn pass(&mut self) -> Result<(), SessionError> {
        self.dirty = false;
        let Some(pass) = self.agent.reconcile_applied().await else {
            return Ok(());
        };
        if let Some(ack) = pass.ack {
            self.push(Key::Ack, Up::Ack(ack))?;
        }
        let now = Instant::now();
        for request in pass.requests {
            if should_ask(&mut self.asked, &request, now) {
                debug!(certificate = %request.name, revision = request.revision, "asking for the certificate");
                self.push(
                    Key::Certificate(request.name.clone()),
                    Up::CertificateRequest(request),
                )?;
            }
        }
        // Ask again once the oldest unanswered request times out.
        let again = self.asked.values().map(|a| a.again_at).min();
        self.retry_at = [pass.recheck_in.map(|d| now + d), again]
            .into_iter()
            .flatten()
            .min();
        let inventory = self.agent.host.certs().inventory();
        // The keys alone (their files) tell whether to report; the interfaces are read only then.
        let keys = self.agent.wireguard_keys();
        if self.told.as_ref() != Some(&inventory) || self.told_keys != keys {
            let wireguard = self.agent.wireguard_status();
            self.push(
                Key::Report,
                Up::Report(Report {
                    sampled_at: self.agent.clock.now(),
                    metrics: None,
                    applied_generation: self.agent.applied_generation(),
                    certificates: inventory.clone(),
                    tunnels: self.agent.tunnel_status(),
                    wireguard,
                }),
            )?;
            self.told = Some(inventory);
            self.told_keys = keys;
        }
        Ok(())
    }

    /// Reads a tunnel's journal in a task of its own: the stream keeps being read meanwhile.
    fn start_logs(&mut self, request: LogsRequest) {
        self.logs.retain(|_, reader| !reader.is_cancelled());
        let reader = self.logs_stop.child_token();
        if let Some(old) = self.logs.insert(request.id, reader.clone()) {
            old.cancel();
        }
        let outbox = self.outbox.clone();
        let tunnels = self.agent.host.tunnels();
        let id = request.id;
        let batches = std::sync::atomic::AtomicU64::new(0);
        let done = reader.clone();
        tokio::spawn(async move {
            crate::logs::serve(tunnels, request, reader, |lines| {
                let n = batches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let last = lines.done;
                let sent = outbox
                    .push(Key::Logs(id, n), up(Up::LogLines(lines)))
                    .is_ok();
                if last {
                    done.cancel();
                }
                sent
            })
            .await;
        });
    }

    fn start_rotation(&mut self) -> Result<(), SessionError> {
        let key = PendingKey::generate()?;
        info!(
            not_after = self.identity.info.not_after,
            "renewing the identity certificate"
        );
        self.push(
            Key::IdentityRenewal,
            Up::IdentityRenewal(IdentityRenewal {
                csr_der: key.csr_der.clone(),
            }),
        )?;
        self.renewing = Some(key);
        // Ask again if no certificate comes back.
        self.rotate_at = Instant::now() + retry_after(&self.identity);
        Ok(())
    }
}

/// Sleeps until `at`, or for ever when there is nothing to wait for.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A random point between 70 % and 90 % of the certificate's lifetime.
fn rotation_time(identity: &Identity, now: i64) -> Instant {
    let lifetime = (identity.info.not_after - identity.info.not_before).max(1) as u64 * 1000;
    let at_ms =
        identity.info.not_before * 1000 + (lifetime * 7 / 10 + random_below(lifetime / 5)) as i64;
    Instant::now() + Duration::from_millis((at_ms - now * 1000).max(0) as u64)
}

/// How long to wait for an answer to a renewal before asking again.
fn retry_after(identity: &Identity) -> Duration {
    let lifetime = (identity.info.not_after - identity.info.not_before).max(1) as u64;
    Duration::from_secs((lifetime / 20).clamp(1, 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(name: &str, revision: u64) -> CertificateRequest {
        CertificateRequest {
            name: name.into(),
            revision,
            csr_der: vec![],
        }
    }

    #[test]
    fn a_request_goes_out_once_per_revision_until_it_times_out() {
        let mut asked = HashMap::new();
        let t0 = Instant::now();
        assert!(should_ask(&mut asked, &request("www", 1), t0));
        // Every pass until the timeout asks nothing more.
        for s in 1..60 {
            assert!(!should_ask(
                &mut asked,
                &request("www", 1),
                t0 + Duration::from_secs(s)
            ));
        }
        assert!(should_ask(&mut asked, &request("www", 1), t0 + REASK));
        // The wait doubles.
        assert!(!should_ask(&mut asked, &request("www", 1), t0 + REASK * 2));
        assert!(should_ask(&mut asked, &request("www", 1), t0 + REASK * 3));
        // A new revision goes out at once.
        assert!(should_ask(&mut asked, &request("www", 2), t0 + REASK * 3));
        assert!(should_ask(&mut asked, &request("api", 1), t0));
    }

    #[test]
    fn the_wait_between_asks_is_capped() {
        assert_eq!(Asked::wait(1), REASK);
        assert_eq!(Asked::wait(2), REASK * 2);
        assert_eq!(Asked::wait(40), REASK_CAP);
    }
}
