//! One agent's `Connect` stream on the controller.
//!
//! Reading never waits on sending: what the controller has to say goes into a bounded,
//! coalescing [`Outbox`] (the newest desired state, one answer per certificate, one identity
//! certificate, one ping and one pong) that the response stream drains on its own, so an agent
//! that stops reading cannot wedge this loop, and memory per agent stays bounded. Certificates
//! are signed or ordered in tasks the session owns, so a slow CA or Cloudflare call never holds
//! up reading either. Application pings ([`Liveness`]) end a stream whose agent stopped
//! answering while the connection looks healthy.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use gatehouse_common::{Liveness, Outbox};
use gatehouse_proto::names::AgentId;
use gatehouse_proto::v1::agent_message::Msg as Up;
use gatehouse_proto::v1::controller_message::Msg as Down;
use gatehouse_proto::v1::{
    Ack, AgentMessage, AllowlistEntries, CertificateError, CertificateRequest, ControllerMessage,
    Goodbye, IdentityCertificate, IssuedCertificate, Ping, Pong,
};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_stream::Stream;
use tonic::{Status, Streaming};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::Shared;
use crate::store::OrderState;

/// How long a new stream may take to say `Hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// Distinct messages that may wait for one agent (one key per certificate); past it the
/// stream is closed.
const OUTBOX_CAPACITY: usize = 4096;
/// Certificate requests of one agent answered at the same time.
const ISSUING: usize = 16;

/// What a message in the outbox stands for: a newer message with the same key replaces it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Desired,
    /// The issued chain or the error for one certificate name.
    Certificate(String),
    Identity,
    Ping,
    Pong,
    /// A log request (false) or its cancellation (true).
    Logs(u64, bool),
    /// The entries of one allowlist.
    Allowlist(String),
    /// The last message: a goodbye or the error that ends the stream.
    End,
}

type Message = Result<ControllerMessage, Status>;

fn down(msg: Down) -> Message {
    Ok(ControllerMessage { msg: Some(msg) })
}

/// Serves one agent's stream: returns the response stream and runs the session beside it.
pub fn open(
    shared: Arc<Shared>,
    id: AgentId,
    inbound: Streaming<AgentMessage>,
) -> impl Stream<Item = Message> + Send + 'static {
    let outbox = Outbox::new(OUTBOX_CAPACITY);
    let counted = {
        let shared = shared.clone();
        outbox
            .stream()
            .inspect(move |m| shared.fleet.messages.sent(m))
    };
    let since = shared.now();
    let span = info_span!("stream", agent_id = %id);
    let liveness = Liveness::new(shared.config().stream_timeout, Instant::now());
    let shared_lists = shared.allowlist_sets.subscribe();
    let session = Session {
        shared,
        id,
        outbox,
        liveness,
        issuing: JoinSet::new(),
        in_flight: HashSet::new(),
        logged: HashMap::new(),
        agent_generation: 0,
        last_sample: 0,
        sent_generation: 0,
        delivered: HashSet::new(),
        since,
        used_lists: BTreeSet::new(),
        sent_lists: HashMap::new(),
        lists: shared_lists,
    };
    let tasks = session.shared.tasks.clone();
    tasks.spawn(session.run(inbound).instrument(span));
    counted
}

/// One agent's stream.
struct Session {
    shared: Arc<Shared>,
    id: AgentId,
    outbox: Outbox<Key, Message>,
    liveness: Liveness,
    /// Certificate requests being answered: (name, revision) → the answer.
    issuing: JoinSet<(
        CertificateRequest,
        Result<Option<String>, crate::certificates::IssueError>,
    )>,
    in_flight: HashSet<(String, u64)>,
    /// Each item's state and message as last logged (`None`: applied).
    logged: HashMap<String, Option<(&'static str, String)>>,
    /// The generation the agent says it has.
    agent_generation: u64,
    /// When this host's metrics were last kept for its history.
    last_sample: i64,
    /// The generation last sent on this stream.
    sent_generation: u64,
    /// ACME orders whose certificate this stream pushed.
    delivered: HashSet<String>,
    /// When the stream opened: orders issued since are pushed.
    since: i64,
    /// The allowlists the agent's sites use, and the entries last sent for each.
    used_lists: BTreeSet<String>,
    sent_lists: HashMap<String, Vec<String>>,
    lists: tokio::sync::watch::Receiver<crate::allowlists::Sets>,
}

/// Why a session ends.
enum End {
    /// The agent closed the stream, or another stream replaced this one.
    Quiet,
    /// The controller is going away, or the agent was revoked.
    Cancelled,
    Failed(Status),
}

impl Session {
    fn push(&self, key: Key, msg: Message) -> Result<(), Status> {
        self.outbox.push(key, msg).map_err(|e| {
            warn!(error = %e, "closing the stream");
            Status::resource_exhausted(e.to_string())
        })
    }

    async fn run(mut self, mut inbound: Streaming<AgentMessage>) {
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(m))) => {
                self.shared.fleet.messages.received(&m);
                match m.msg {
                    Some(Up::Hello(h)) => Some(h),
                    _ => None,
                }
            }
            _ => None,
        };
        let Some(hello) = hello else {
            let refusal = Err(Status::invalid_argument("a stream must start with Hello"));
            let _ = self.outbox.push(Key::End, refusal);
            self.outbox.close();
            return;
        };
        let agent = self.id.to_string();
        let mut facts = hello.facts.unwrap_or_default();
        super::clean::facts(&mut facts);
        let version = super::clean::version(&hello.version);
        let shared = self.shared.clone();
        let store = &shared.store;
        if let Err(e) = store
            .agent_hello(
                &agent,
                &hello.version,
                &facts,
                hello.applied_generation,
                self.shared.now(),
            )
            .await
        {
            let _ = self.outbox.push(Key::End, Err(e.into()));
            self.outbox.close();
            return;
        }
        let mut ticket = self.shared.fleet.open(&agent, self.shared.now());
        info!(version = %version, generation = hello.applied_generation, "agent connected");
        self.agent_generation = hello.applied_generation;
        let end = match self.sync().await {
            Ok(()) => self.serve(&mut inbound, &mut ticket).await,
            Err(status) => End::Failed(status),
        };
        self.shared.fleet.close(&agent, ticket.id);
        self.issuing.abort_all();
        let last = match end {
            End::Quiet => None,
            End::Failed(status) => Some(Err(status)),
            End::Cancelled if self.shared.revoked.contains(&agent) => {
                Some(Err(Status::permission_denied("this agent was revoked")))
            }
            End::Cancelled => Some(down(Down::Goodbye(Goodbye {
                reason: "the controller is going away".into(),
                reconnect: true,
            }))),
        };
        if let Some(last) = last {
            let _ = self.outbox.push(Key::End, last);
        }
        self.outbox.close();
        let _ = store
            .agent_seen(&agent, self.agent_generation, self.shared.now())
            .await;
        info!("agent disconnected");
    }

    async fn serve(
        &mut self,
        inbound: &mut Streaming<AgentMessage>,
        ticket: &mut super::SessionTicket,
    ) -> End {
        loop {
            let wake = self.liveness.next_wake();
            let result = tokio::select! {
                biased;
                _ = ticket.cancel.cancelled() => return End::Cancelled,
                _ = tokio::time::sleep_until(wake) => self.tick(),
                _ = ticket.changed.notified() => self.sync().await,
                Ok(()) = self.lists.changed() => self.send_lists(),
                Some(command) = ticket.commands.recv() => self.command(command),
                Some(done) = self.issuing.join_next(), if !self.issuing.is_empty() => match done {
                    Ok((request, answer)) => self.answer(request, answer),
                    Err(e) => {
                        warn!(error = %e, "a certificate task failed");
                        Ok(())
                    }
                },
                message = inbound.message() => match message {
                    Ok(Some(m)) => {
                        self.shared.fleet.seen(self.id.as_str(), self.shared.now());
                        self.shared.fleet.messages.received(&m);
                        self.handle(m).await
                    }
                    Ok(None) => return End::Quiet,
                    Err(status) => {
                        info!(error = %status.message(), "stream error");
                        return End::Quiet;
                    }
                },
            };
            if let Err(status) = result {
                return End::Failed(status);
            }
        }
    }

    /// Pings when due; ends the stream when the agent stopped answering.
    fn tick(&mut self) -> Result<(), Status> {
        let now = Instant::now();
        if let Err(stalled) = self.liveness.check(now) {
            info!(error = %stalled, "the agent stopped answering; closing its stream");
            return Err(Status::unavailable(format!(
                "the controller closed the stream: {stalled}"
            )));
        }
        if let Some(nonce) = self.liveness.ping_due(now) {
            self.push(Key::Ping, down(Down::Ping(Ping { nonce })))?;
        }
        Ok(())
    }

    /// Queues the newest desired state when the agent has another generation, and the ACME
    /// certificates issued for it during this stream.
    async fn sync(&mut self) -> Result<(), Status> {
        self.sync_state().await?;
        let orders = self
            .shared
            .store
            .acme_orders(Some(self.id.as_str()))
            .await?;
        for order in orders {
            if order.state != OrderState::Issued
                || order.updated_at < self.since
                || !self.delivered.insert(order.id.clone())
            {
                continue;
            }
            self.push(
                Key::Certificate(order.certificate.clone()),
                down(Down::Certificate(IssuedCertificate {
                    name: order.certificate,
                    revision: order.revision,
                    chain_pem: order.chain_pem,
                })),
            )?;
        }
        Ok(())
    }

    async fn sync_state(&mut self) -> Result<(), Status> {
        let Some(latest) = self.shared.store.desired_latest(self.id.as_str()).await? else {
            return Ok(());
        };
        if latest.generation != self.agent_generation && latest.generation != self.sent_generation {
            self.sent_generation = latest.generation;
            self.used_lists = latest
                .state
                .sites
                .iter()
                .flat_map(|s| s.allow.iter().cloned())
                .collect();
            // Tunnel tokens are stored sealed, apart from the desired state: filled in here.
            let state =
                crate::tunnels::with_tokens(&self.shared, self.id.as_str(), latest.state).await?;
            let state = crate::wireguard::desired::with_secrets(&self.shared, state).await?;
            self.push(Key::Desired, down(Down::DesiredState(state)))?;
        }
        self.send_lists()
    }

    /// Sends the entries of each allowlist the agent's sites use, when they differ from what
    /// this stream last sent.
    fn send_lists(&mut self) -> Result<(), Status> {
        let sets = self.lists.borrow_and_update().clone();
        for name in self.used_lists.clone() {
            // A list not computed yet (the controller just started) is not sent as empty.
            let Some(cidrs) = sets.get(&name).cloned() else {
                continue;
            };
            if self.sent_lists.get(&name) == Some(&cidrs) {
                continue;
            }
            self.push(
                Key::Allowlist(name.clone()),
                down(Down::AllowlistEntries(AllowlistEntries {
                    name: name.clone(),
                    cidrs: cidrs.clone(),
                })),
            )?;
            self.sent_lists.insert(name, cidrs);
        }
        Ok(())
    }

    /// Passes a message from elsewhere in the controller to the agent.
    fn command(&mut self, command: ControllerMessage) -> Result<(), Status> {
        let key = match &command.msg {
            Some(Down::LogsRequest(r)) => Key::Logs(r.id, false),
            Some(Down::LogsCancel(c)) => Key::Logs(c.id, true),
            _ => return Ok(()),
        };
        self.push(key, Ok(command))
    }

    async fn handle(&mut self, message: AgentMessage) -> Result<(), Status> {
        let agent = &self.id.to_string();
        match message.msg {
            Some(Up::Ack(mut ack)) => {
                super::clean::ack(&mut ack);
                self.log_changes(&ack);
                self.agent_generation = ack.generation;
                let store = &self.shared.store;
                store
                    .agent_seen(agent, ack.generation, self.shared.now())
                    .await?;
                let previous = store.agent_get(agent).await?.and_then(|a| a.last_apply);
                let record = crate::store::ApplyRecord::new(&ack, self.shared.now())
                    .following(previous.as_ref());
                store.agent_set_last_apply(agent, &record).await?;
                store.apply_history_put(agent, &record).await?;
                // An agent that went back (a rollback elsewhere) gets the newest again.
                self.sync_state().await?;
            }
            Some(Up::Report(mut report)) => {
                super::clean::report(&mut report);
                crate::wireguard::desired::reported(&self.shared, agent, &report.wireguard).await?;
                if let Some(m) = &report.metrics {
                    let now = self.shared.now();
                    super::history::record(&self.shared, agent, m, now, &mut self.last_sample)
                        .await?;
                }
                self.shared.fleet.report(agent, report, self.shared.now());
            }
            Some(Up::CertificateRequest(request)) => self.start_issuing(request).await?,
            Some(Up::IdentityRenewal(renewal)) => {
                let issued = self
                    .shared
                    .ca
                    .issue_agent(
                        &renewal.csr_der,
                        &self.id,
                        self.shared.config().agent_cert_lifetime,
                        self.shared.now(),
                    )
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
                self.shared
                    .store
                    .agent_set_certificate(agent, &issued.info.serial, issued.info.not_after)
                    .await?;
                info!(serial = %issued.info.serial, not_after = issued.info.not_after, "identity certificate renewed");
                self.push(
                    Key::Identity,
                    down(Down::IdentityCertificate(IdentityCertificate {
                        certificate_pem: issued.pem,
                    })),
                )?;
            }
            Some(Up::Ping(ping)) => {
                self.push(Key::Pong, down(Down::Pong(Pong { nonce: ping.nonce })))?
            }
            Some(Up::Pong(pong)) => self.liveness.pong(pong.nonce),
            Some(Up::LogLines(lines)) => self.shared.fleet.log_lines(agent, lines),
            Some(Up::Hello(_)) => warn!("ignoring a second Hello"),
            None => {}
        }
        Ok(())
    }

    /// Answers a certificate request in a task of this session; a request for a revision
    /// already being answered is dropped (its answer is on the way).
    async fn start_issuing(&mut self, request: CertificateRequest) -> Result<(), Status> {
        if !self
            .in_flight
            .insert((request.name.clone(), request.revision))
        {
            debug!(certificate = %request.name, "already answering this request");
            return Ok(());
        }
        while self.issuing.len() >= ISSUING {
            if let Some(Ok((done, answer))) = self.issuing.join_next().await {
                self.answer(done, answer)?;
            }
        }
        let shared = self.shared.clone();
        let agent = self.id.to_string();
        self.issuing.spawn(async move {
            let answer = crate::certificates::issue(&shared, &agent, &request).await;
            (request, answer)
        });
        Ok(())
    }

    fn answer(
        &mut self,
        request: CertificateRequest,
        answer: Result<Option<String>, crate::certificates::IssueError>,
    ) -> Result<(), Status> {
        self.in_flight
            .remove(&(request.name.clone(), request.revision));
        let reply = match answer {
            Ok(None) => return Ok(()),
            Ok(Some(chain_pem)) => Down::Certificate(IssuedCertificate {
                name: request.name.clone(),
                revision: request.revision,
                chain_pem,
            }),
            Err(error) => {
                info!(certificate = %request.name, revision = request.revision, error = %error, "cannot issue");
                Down::CertificateError(CertificateError {
                    name: request.name.clone(),
                    revision: request.revision,
                    error: error.to_string(),
                })
            }
        };
        self.push(Key::Certificate(request.name), down(reply))
    }

    /// Logs each item whose result changed since this stream last logged it.
    fn log_changes(&mut self, ack: &Ack) {
        let mut seen = HashMap::with_capacity(ack.results.len());
        for r in &ack.results {
            let item = r.item();
            let now = (!r.is_applied()).then(|| (r.item_state().word(), r.message.clone()));
            let before = self.logged.get(&item).cloned().flatten();
            if now != before {
                match &now {
                    Some((state, why)) => {
                        info!(generation = ack.generation, item = %item, state, why = %why, "not applied")
                    }
                    None if self.logged.contains_key(&item) => {
                        info!(generation = ack.generation, item = %item, "applied")
                    }
                    None => {}
                }
            }
            seen.insert(item, now);
        }
        self.logged = seen;
    }
}
