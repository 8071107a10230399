//! The agent-facing gRPC service: enrollment, renewal, and the `Connect` stream. The agent's
//! identity comes only from its verified client certificate ([`crate::tls::Peer`]).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_agent::pki::CertInfo;
use gatehouse_proto::names::AgentId;
use gatehouse_proto::spec::{Certificate, Issuer};
use gatehouse_proto::v1::agent_message::Msg as Up;
use gatehouse_proto::v1::agent_service_server::AgentService;
use gatehouse_proto::v1::controller_message::Msg as Down;
use gatehouse_proto::v1::{
    AgentMessage, CertificateError, CertificateRequest, ControllerMessage, DesiredState,
    EnrollRequest, EnrollResponse, Goodbye, IdentityCertificate, IssuedCertificate, RenewRequest,
    RenewResponse, WhoAmIRequest, WhoAmIResponse,
};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, info, info_span, warn};

use crate::secrets::{JOIN_PREFIX, Token, random_id};
use crate::store::{AgentRow, RedeemError};
use crate::tls::Peer;
use crate::{Shared, now};

/// How long a new stream may take to say `Hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);

/// The service.
#[derive(Debug, Clone)]
pub struct AgentApi {
    shared: Arc<Shared>,
}

impl AgentApi {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

impl From<crate::store::StoreError> for Status {
    fn from(e: crate::store::StoreError) -> Self {
        warn!("store error: {e}");
        Status::unavailable("the controller's store is unavailable; try again")
    }
}

impl From<RedeemError> for Status {
    fn from(e: RedeemError) -> Self {
        match e {
            RedeemError::Unknown => Status::unauthenticated(e.to_string()),
            RedeemError::Used | RedeemError::Expired | RedeemError::Revoked => {
                Status::permission_denied(e.to_string())
            }
        }
    }
}

/// The verified agent behind a request.
fn peer_agent<T>(request: &Request<T>, allow_expired: bool) -> Result<(AgentId, CertInfo), Status> {
    let cert = request
        .extensions()
        .get::<Peer>()
        .and_then(|p| p.certificate.clone())
        .ok_or_else(|| {
            Status::unauthenticated("a client certificate is required: enroll this host first")
        })?;
    let id = cert
        .agent_id
        .clone()
        .ok_or_else(|| Status::unauthenticated("the client certificate names no agent"))?;
    if !allow_expired && cert.not_after <= now() {
        return Err(Status::unauthenticated(
            "the identity certificate has expired: renew it (Renew)",
        ));
    }
    Ok((id, cert))
}

/// Hostnames are shown, never used as names: keep them short and printable.
fn display_hostname(name: &str) -> String {
    name.chars().filter(|c| !c.is_control()).take(253).collect()
}

impl AgentApi {
    async fn live_agent(&self, id: &AgentId) -> Result<AgentRow, Status> {
        let row = self
            .shared
            .store
            .agent_get(id.as_str())
            .await?
            .ok_or_else(|| {
                Status::permission_denied("this agent is not known to the controller")
            })?;
        if row.revoked_at.is_some() {
            return Err(Status::permission_denied("this agent was revoked"));
        }
        Ok(row)
    }

    fn issue(&self, csr_der: &[u8], id: &AgentId) -> Result<crate::ca::Issued, Status> {
        self.shared
            .ca
            .issue_agent(csr_der, id, self.shared.config.agent_cert_lifetime, now())
            .map_err(|e| Status::invalid_argument(e.to_string()))
    }
}

type ConnectStream = Pin<Box<dyn Stream<Item = Result<ControllerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for AgentApi {
    async fn enroll(
        &self,
        request: Request<EnrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let req = request.into_inner();
        let token = Token::parse(JOIN_PREFIX, &req.token).map_err(Status::invalid_argument)?;
        let store = &self.shared.store;
        let row = store
            .join_token_get(&token.id)
            .await?
            .filter(|row| token.matches(&row.secret_hash))
            .ok_or(RedeemError::Unknown)?;
        let id: AgentId = random_id(AgentId::LEN)
            .parse()
            .expect("random ids have the agent id shape");
        let issued = self.issue(&req.csr_der, &id)?;
        let now = now();
        let facts = req.facts.unwrap_or_default();
        let agent = AgentRow {
            id: id.to_string(),
            hostname: display_hostname(&facts.hostname),
            labels: row.labels.clone(),
            enrolled_at: now,
            revoked_at: None,
            cert_serial: issued.info.serial.clone(),
            cert_not_after: issued.info.not_after,
            last_seen_at: None,
            applied_generation: 0,
            version: String::new(),
            facts: Some(facts),
            last_apply: String::new(),
            domain: String::new(),
        };
        let first = DesiredState {
            generation: 1,
            labels: row.labels.into_iter().collect(),
            report_interval_seconds: self.shared.config.report_interval.as_secs() as u32,
            ..Default::default()
        };
        store.enroll_agent(&token.id, &agent, &first, now).await??;
        info!(agent_id = %id, token = %token.id, hostname = %agent.hostname, "agent enrolled");
        Ok(Response::new(EnrollResponse {
            agent_id: id.to_string(),
            certificate_pem: issued.pem,
            ca_pem: self.shared.ca.cert_pem().to_owned(),
        }))
    }

    async fn renew(
        &self,
        request: Request<RenewRequest>,
    ) -> Result<Response<RenewResponse>, Status> {
        let (id, _) = peer_agent(&request, true)?;
        self.live_agent(&id).await?;
        let issued = self.issue(&request.get_ref().csr_der, &id)?;
        self.shared
            .store
            .agent_set_certificate(id.as_str(), &issued.info.serial, issued.info.not_after)
            .await?;
        info!(agent_id = %id, serial = %issued.info.serial, "identity renewed after expiry (grace)");
        Ok(Response::new(RenewResponse {
            certificate_pem: issued.pem,
        }))
    }

    async fn who_am_i(
        &self,
        request: Request<WhoAmIRequest>,
    ) -> Result<Response<WhoAmIResponse>, Status> {
        let (id, _) = peer_agent(&request, false)?;
        self.live_agent(&id).await?;
        Ok(Response::new(WhoAmIResponse {
            agent_id: id.to_string(),
        }))
    }

    type ConnectStream = ConnectStream;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let (id, _) = peer_agent(&request, false)?;
        self.live_agent(&id).await?;
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(8);
        let session = Session {
            api: self.clone(),
            id: id.clone(),
            tx,
        };
        let span = info_span!("stream", agent_id = %id);
        tokio::spawn(session.run(inbound).instrument(span));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// One agent's stream.
struct Session {
    api: AgentApi,
    id: AgentId,
    tx: mpsc::Sender<Result<ControllerMessage, Status>>,
}

impl Session {
    async fn send(&self, msg: Down) -> bool {
        self.tx
            .send(Ok(ControllerMessage { msg: Some(msg) }))
            .await
            .is_ok()
    }

    async fn run(self, mut inbound: Streaming<AgentMessage>) {
        let shared = &self.api.shared;
        let agent = self.id.as_str();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(AgentMessage {
                msg: Some(Up::Hello(h)),
            }))) => h,
            _ => {
                let _ = self
                    .tx
                    .send(Err(Status::invalid_argument(
                        "a stream must start with Hello",
                    )))
                    .await;
                return;
            }
        };
        let facts = hello.facts.unwrap_or_default();
        if let Err(e) = shared
            .store
            .agent_hello(
                agent,
                &hello.version,
                &facts,
                hello.applied_generation,
                now(),
            )
            .await
        {
            let _ = self.tx.send(Err(e.into())).await;
            return;
        }
        let ticket = shared.fleet.open(agent, now());
        info!(version = %hello.version, generation = hello.applied_generation, "agent connected");
        let mut agent_generation = hello.applied_generation;
        let mut sent_generation = 0;
        let session_start = now();
        let mut delivered = std::collections::HashSet::new();
        let end = loop {
            if let Err(e) = self
                .sync_state(agent_generation, &mut sent_generation)
                .await
            {
                break Err(e);
            }
            if let Err(e) = self.push_issued(session_start, &mut delivered).await {
                break Err(e);
            }
            tokio::select! {
                _ = ticket.cancel.cancelled() => break Ok(()),
                _ = ticket.changed.notified() => continue,
                message = inbound.message() => match message {
                    Ok(Some(m)) => {
                        shared.fleet.seen(agent, now());
                        match self.handle(m, &mut agent_generation).await {
                            Ok(()) => continue,
                            Err(status) => break Err(status),
                        }
                    }
                    Ok(None) => break Ok(()),
                    Err(status) => {
                        info!("stream error: {}", status.message());
                        break Ok(());
                    }
                },
            }
        };
        shared.fleet.close(agent, ticket.id);
        if let Err(status) = end {
            let _ = self.tx.send(Err(status)).await;
        } else if ticket.cancel.is_cancelled() {
            let revoked = shared.revoked.contains(agent);
            if revoked {
                let _ = self
                    .tx
                    .send(Err(Status::permission_denied("this agent was revoked")))
                    .await;
            } else {
                self.send(Down::Goodbye(Goodbye {
                    reason: "the controller is going away".into(),
                    reconnect: true,
                }))
                .await;
            }
        }
        let _ = shared
            .store
            .agent_seen(agent, agent_generation, now())
            .await;
        info!("agent disconnected");
    }

    /// Sends the newest desired state when the agent has another generation and it was not
    /// already sent.
    async fn sync_state(&self, agent_generation: u64, sent: &mut u64) -> Result<(), Status> {
        let Some(latest) = self
            .api
            .shared
            .store
            .desired_latest(self.id.as_str())
            .await?
        else {
            return Ok(());
        };
        if latest.generation != agent_generation && latest.generation != *sent {
            *sent = latest.generation;
            self.send(Down::DesiredState(latest.state)).await;
        }
        Ok(())
    }

    /// Pushes ACME certificates issued during this session (the host asked for them and is
    /// waiting); what was issued while it was away it gets when it asks again.
    async fn push_issued(
        &self,
        since: i64,
        delivered: &mut std::collections::HashSet<String>,
    ) -> Result<(), Status> {
        let orders = self
            .api
            .shared
            .store
            .acme_orders(Some(self.id.as_str()))
            .await?;
        for order in orders {
            if order.state != crate::store::OrderState::Issued
                || order.updated_at < since
                || !delivered.insert(order.id.clone())
            {
                continue;
            }
            self.send(Down::Certificate(IssuedCertificate {
                name: order.certificate.clone(),
                revision: order.revision,
                chain_pem: order.chain_pem.clone(),
            }))
            .await;
        }
        Ok(())
    }

    /// Signs a certificate request against the agent's newest desired state: the name,
    /// revision and domains come from the controller's own spec, never from the CSR. `None`:
    /// an ACME order is under way, and its certificate is pushed when issued.
    async fn issue_certificate(
        &self,
        request: &CertificateRequest,
    ) -> Result<Option<String>, String> {
        let shared = &self.api.shared;
        let latest = shared
            .store
            .desired_latest(self.id.as_str())
            .await
            .map_err(|e| e.to_string())?
            .ok_or("this host has no desired state")?;
        let spec = latest
            .state
            .certificates
            .iter()
            .find(|c| c.name == request.name)
            .ok_or_else(|| {
                format!(
                    "certificate {} is not in this host's desired state",
                    request.name
                )
            })?;
        if spec.revision != request.revision {
            return Err(format!(
                "certificate {} is at revision {}, the request was for {}",
                request.name, spec.revision, request.revision
            ));
        }
        let spec = Certificate::try_from(spec).map_err(|e| e.to_string())?;
        let domains: Vec<String> = spec.domains.iter().map(ToString::to_string).collect();
        match &spec.issuer {
            Issuer::Internal => {
                let issued = shared
                    .site_ca
                    .issue_site(
                        &request.csr_der,
                        &domains,
                        shared.config.site_cert_lifetime,
                        now(),
                    )
                    .map_err(|e| e.to_string())?;
                info!(certificate = %request.name, serial = %issued.info.serial, "site certificate issued");
                Ok(Some(issued.pem))
            }
            Issuer::OriginCa(account) => {
                let pem = crate::cloudflare_sites::issue_origin(
                    shared,
                    self.id.as_str(),
                    account.as_str(),
                    &request.csr_der,
                    &domains,
                )
                .await?;
                info!(certificate = %request.name, %account, "Origin CA certificate issued");
                Ok(Some(pem))
            }
            Issuer::Acme(account) => {
                match crate::acme::request(
                    shared,
                    self.id.as_str(),
                    &spec,
                    account.as_str(),
                    &request.csr_der,
                )
                .await?
                {
                    crate::acme::Answer::Issued(chain) => Ok(Some(chain)),
                    crate::acme::Answer::Pending(_) => Ok(None),
                    crate::acme::Answer::Failed(error) => Err(error),
                }
            }
        }
    }

    async fn handle(
        &self,
        message: AgentMessage,
        agent_generation: &mut u64,
    ) -> Result<(), Status> {
        let shared = &self.api.shared;
        let agent = self.id.as_str();
        match message.msg {
            Some(Up::Ack(ack)) => {
                for failed in ack.results.iter().filter(|r| !r.ok) {
                    warn!(generation = ack.generation, item = %failed.item, "not applied: {}", failed.error);
                }
                *agent_generation = ack.generation;
                shared
                    .store
                    .agent_seen(agent, ack.generation, now())
                    .await?;
                let results: Vec<serde_json::Value> = ack
                    .results
                    .iter()
                    .map(|r| serde_json::json!({"item": r.item, "ok": r.ok, "error": r.error}))
                    .collect();
                let json = serde_json::json!({
                    "generation": ack.generation,
                    "at": now(),
                    "results": results,
                });
                shared
                    .store
                    .agent_set_last_apply(agent, &json.to_string())
                    .await?;
            }
            Some(Up::Report(report)) => shared.fleet.report(agent, report, now()),
            Some(Up::CertificateRequest(request)) => {
                let reply = match self.issue_certificate(&request).await {
                    Ok(None) => return Ok(()),
                    Ok(Some(chain_pem)) => Down::Certificate(IssuedCertificate {
                        name: request.name.clone(),
                        revision: request.revision,
                        chain_pem,
                    }),
                    Err(error) => {
                        warn!(certificate = %request.name, "cannot issue: {error}");
                        Down::CertificateError(CertificateError {
                            name: request.name.clone(),
                            revision: request.revision,
                            error,
                        })
                    }
                };
                self.send(reply).await;
            }
            Some(Up::IdentityRenewal(renewal)) => {
                let issued = self.api.issue(&renewal.csr_der, &self.id)?;
                shared
                    .store
                    .agent_set_certificate(agent, &issued.info.serial, issued.info.not_after)
                    .await?;
                info!(serial = %issued.info.serial, not_after = issued.info.not_after, "identity certificate renewed");
                self.send(Down::IdentityCertificate(IdentityCertificate {
                    certificate_pem: issued.pem,
                }))
                .await;
            }
            Some(Up::Hello(_)) => warn!("ignoring a second Hello"),
            None => {}
        }
        Ok(())
    }
}
