//! The agent-facing gRPC service: enrollment, renewal, and the `Connect` stream. The agent's
//! identity comes only from its verified client certificate ([`crate::tls::Peer`]).

use std::pin::Pin;
use std::sync::Arc;

use gatehouse_common::pki::CertInfo;
use gatehouse_proto::names::AgentId;
use gatehouse_proto::v1::agent_service_server::AgentService;
use gatehouse_proto::v1::{
    AgentMessage, ControllerMessage, DesiredState, EnrollRequest, EnrollResponse, RenewRequest,
    RenewResponse, WhoAmIRequest, WhoAmIResponse,
};
use tokio_stream::Stream;
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::{info, warn};

use crate::Shared;
use crate::secrets::{JOIN_PREFIX, Token, random_id};
use crate::store::{AgentRow, RedeemError};
use crate::tls::Peer;

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
fn peer_agent<T>(
    request: &Request<T>,
    allow_expired: bool,
    now: i64,
) -> Result<(AgentId, CertInfo), Status> {
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
    if !allow_expired && cert.not_after <= now {
        return Err(Status::unauthenticated(
            "the identity certificate has expired: renew it (Renew)",
        ));
    }
    Ok((id, cert))
}

impl AgentApi {
    /// One enrollment: the token redeemed, the CSR signed, the agent stored.
    async fn enroll_one(&self, req: EnrollRequest) -> Result<EnrollResponse, Status> {
        let token = Token::parse(JOIN_PREFIX, &req.token)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
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
        let now = self.shared.now();
        let mut facts = req.facts.unwrap_or_default();
        crate::fleet::clean::facts(&mut facts);
        let agent = AgentRow {
            id: id.to_string(),
            hostname: facts.hostname.clone(),
            labels: row.labels.clone(),
            enrolled_at: now,
            revoked_at: None,
            cert_serial: issued.info.serial.clone(),
            cert_not_after: issued.info.not_after,
            last_seen_at: None,
            applied_generation: 0,
            version: String::new(),
            facts: Some(facts),
            last_apply: None,
            domain: String::new(),
        };
        let first = DesiredState {
            generation: 1,
            labels: row.labels.into_iter().collect(),
            report_interval_seconds: self.shared.config().report_interval.as_secs() as u32,
            ..Default::default()
        };
        store.enroll_agent(&token.id, &agent, &first, now).await??;
        info!(agent_id = %id, token = %token.id, hostname = %agent.hostname, "agent enrolled");
        Ok(EnrollResponse {
            agent_id: id.to_string(),
            certificate_pem: issued.pem,
            ca_pem: self.shared.ca.cert_pem().to_owned(),
        })
    }

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
            .issue_agent(
                csr_der,
                id,
                self.shared.config().agent_cert_lifetime,
                self.shared.now(),
            )
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
        // Failed attempts are counted per source address; past the limit an address is
        // refused before its token is looked at, and other addresses are not held back.
        let source = request
            .extensions()
            .get::<Peer>()
            .and_then(|p| p.remote)
            .map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string());
        let limit = &self.shared.failed_enrollments;
        if let Err(refused) = limit.check(&source, self.shared.now()) {
            if refused.first {
                warn!(source = %source, limit = refused.limit, "failed enrollments throttled");
            }
            return Err(Status::resource_exhausted(format!(
                "too many failed enrollments from {source} in the last minute; try again in {} s",
                refused.retry_in
            )));
        }
        let result = self.enroll_one(request.into_inner()).await;
        if let Err(status) = &result
            && matches!(
                status.code(),
                Code::InvalidArgument | Code::Unauthenticated | Code::PermissionDenied
            )
        {
            limit.record(&source, self.shared.now());
        }
        result.map(Response::new)
    }

    async fn renew(
        &self,
        request: Request<RenewRequest>,
    ) -> Result<Response<RenewResponse>, Status> {
        let (id, _) = peer_agent(&request, true, self.shared.now())?;
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
        let (id, _) = peer_agent(&request, false, self.shared.now())?;
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
        let (id, _) = peer_agent(&request, false, self.shared.now())?;
        self.live_agent(&id).await?;
        let stream = crate::fleet::session::open(self.shared.clone(), id, request.into_inner());
        Ok(Response::new(Box::pin(stream)))
    }
}
