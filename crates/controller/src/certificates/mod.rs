//! Certificates for keys made on hosts: answering an agent's CSR from the controller's own
//! spec of that certificate (never from the CSR), through the internal CA, Cloudflare's
//! Origin CA or an ACME order, and at most `issuance_limit` per agent and name per minute.

use gatehouse_proto::spec::{Certificate, Issuer};
use gatehouse_proto::v1::CertificateRequest;
use tracing::{info, warn};

use crate::Shared;
use crate::audit::{self, Actor};
use crate::store::StoreError;

/// Why a certificate request was not answered with a certificate; the agent is told the
/// message, and asks again later.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error(
        "refused: {limit} certificates of this name were already issued to this agent in the \
         last minute (issuance_limit); try again in {retry_in} s"
    )]
    Limited { limit: u32, retry_in: i64 },
    #[error("this host has no desired state")]
    NoDesiredState,
    #[error("certificate {0} is not in this host's desired state")]
    NotDesired(String),
    #[error("certificate {name} is at revision {desired}, the request was for {asked}")]
    Revision {
        name: String,
        desired: u64,
        asked: u64,
    },
    /// The spec, the CSR or the signing was refused.
    #[error("{0}")]
    Refused(String),
    /// The issuer (Cloudflare's Origin CA, an ACME CA) did not issue.
    #[error("{0}")]
    Issuer(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<crate::error::Error> for IssueError {
    fn from(e: crate::error::Error) -> Self {
        match e {
            crate::error::Error::Store(e) => IssueError::Store(e),
            other => IssueError::Issuer(other.to_string()),
        }
    }
}

/// Counts one issuance for `agent` and certificate `name`, or refuses it (audited once per
/// refused minute).
pub async fn admit(shared: &Shared, agent: &str, name: &str) -> Result<(), IssueError> {
    match shared
        .issuance
        .take(&format!("{agent}/{name}"), shared.now())
    {
        Ok(()) => Ok(()),
        Err(refused) => {
            let error = IssueError::Limited {
                limit: refused.limit,
                retry_in: refused.retry_in,
            };
            if refused.first {
                warn!(
                    agent_id = agent,
                    certificate = name,
                    limit = refused.limit,
                    "issuance limit reached"
                );
                let actor = Actor::Agent {
                    id: agent.to_owned(),
                };
                let target = format!("certificate:{name}");
                let message = error.to_string();
                audit::record(shared, &actor, "cert.issue", &target, Some(&message)).await;
            }
            Err(error)
        }
    }
}

/// Answers a certificate request against the agent's newest desired state: the name,
/// revision and domains come from the controller's own spec. `Ok(None)`: an ACME order is
/// under way, and its certificate is pushed when issued.
pub async fn issue(
    shared: &Shared,
    agent: &str,
    request: &CertificateRequest,
) -> Result<Option<String>, IssueError> {
    let latest = shared
        .store
        .desired_latest(agent)
        .await?
        .ok_or(IssueError::NoDesiredState)?;
    let spec = latest
        .state
        .certificates
        .iter()
        .find(|c| c.name == request.name)
        .ok_or_else(|| IssueError::NotDesired(request.name.clone()))?;
    if spec.revision != request.revision {
        return Err(IssueError::Revision {
            name: request.name.clone(),
            desired: spec.revision,
            asked: request.revision,
        });
    }
    let spec = Certificate::try_from(spec).map_err(|e| IssueError::Refused(e.to_string()))?;
    let domains: Vec<String> = spec.domains.iter().map(ToString::to_string).collect();
    match &spec.issuer {
        Issuer::Internal => {
            admit(shared, agent, &request.name).await?;
            let issued = shared
                .site_ca
                .issue_site(
                    &request.csr_der,
                    &domains,
                    shared.config().site_cert_lifetime,
                    shared.now(),
                )
                .map_err(|e| IssueError::Refused(e.to_string()))?;
            info!(agent_id = agent, certificate = %request.name, serial = %issued.info.serial, "site certificate issued");
            Ok(Some(issued.pem))
        }
        Issuer::OriginCa(account) => {
            admit(shared, agent, &request.name).await?;
            let pem = crate::sites::cloudflare::issue_origin(
                shared,
                agent,
                account.as_str(),
                &request.csr_der,
                &domains,
            )
            .await?;
            info!(agent_id = agent, certificate = %request.name, %account, "Origin CA certificate issued");
            Ok(Some(pem))
        }
        Issuer::Acme(account) => {
            match crate::acme::request(shared, agent, &spec, account.as_str(), &request.csr_der)
                .await?
            {
                crate::acme::Answer::Issued(chain) => Ok(Some(chain)),
                crate::acme::Answer::Pending(_) => Ok(None),
                crate::acme::Answer::Failed(error) => Err(IssueError::Issuer(error)),
            }
        }
    }
}
