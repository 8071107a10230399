//! `gatehouse-agent enroll`: pin the controller CA by hash, generate a key here, exchange a
//! one-time token and a CSR for an identity certificate.

use gatehouse_proto::v1::EnrollRequest;
use gatehouse_proto::v1::agent_service_client::AgentServiceClient;

use crate::config::Paths;
use crate::host::files;
use crate::identity::{Enrollment, Identity, IdentityError, PendingKey, TLS_DIR_MODE};
use crate::pki;
use crate::transport::{self, CA_HASH_MISMATCH, ControllerUrl};

/// Enrollment failed. Every variant says what to do.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error(
        "this host is already enrolled as agent {agent_id} ({path}); to enroll it again, \
         revoke it (gatehousectl agents revoke {agent_id}) and remove that file"
    )]
    AlreadyEnrolled {
        agent_id: String,
        path: std::path::PathBuf,
    },
    #[error(
        "refused: the certificate authority of {controller} does not match --ca-hash {ca_hash}; \
         the token was not sent. Check the hash (gatehouse-controller prints it) or the address"
    )]
    CaMismatch { controller: String, ca_hash: String },
    #[error("cannot reach the controller at {controller}: {detail}")]
    Unreachable { controller: String, detail: String },
    #[error("the controller refused enrollment: {0}")]
    Refused(String),
    #[error("the controller answered with an unusable certificate: {0}")]
    BadAnswer(String),
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// Enrolls this host. On success the identity, the controller CA and the enrollment record are
/// stored under `paths`.
pub async fn enroll(
    paths: &Paths,
    controller: &ControllerUrl,
    token: &str,
    ca_hash: &str,
    facts: gatehouse_proto::v1::HostFacts,
) -> Result<Enrollment, EnrollError> {
    if let Ok(existing) = Identity::load(paths) {
        return Err(EnrollError::AlreadyEnrolled {
            agent_id: existing.agent_id.to_string(),
            path: paths.identity(),
        });
    }
    let key = PendingKey::generate()?;
    let tls = transport::client_config_pinned(ca_hash);
    let channel = transport::tls_channel(controller, tls).await.map_err(|e| {
        let detail = error_chain(&e);
        if detail.contains(CA_HASH_MISMATCH) {
            EnrollError::CaMismatch {
                controller: controller.to_string(),
                ca_hash: ca_hash.to_owned(),
            }
        } else {
            EnrollError::Unreachable {
                controller: controller.to_string(),
                detail,
            }
        }
    })?;
    let response = AgentServiceClient::new(channel)
        .enroll(EnrollRequest {
            token: token.trim().to_owned(),
            csr_der: key.csr_der.clone(),
            facts: Some(facts),
        })
        .await
        .map_err(|status| EnrollError::Refused(status.message().to_owned()))?
        .into_inner();

    let ca = pki::certs_from_pem(&response.ca_pem)
        .map_err(|e| EnrollError::BadAnswer(format!("CA: {e}")))?;
    if pki::spki_hash(&ca[0]).map_err(|e| EnrollError::BadAnswer(e.to_string()))? != ca_hash {
        return Err(EnrollError::BadAnswer(
            "the CA it sent does not match --ca-hash".into(),
        ));
    }
    let identity = key
        .complete(&response.certificate_pem)
        .map_err(EnrollError::BadAnswer)?;
    if identity.agent_id.as_str() != response.agent_id {
        return Err(EnrollError::BadAnswer(
            "the certificate names another agent than the answer".into(),
        ));
    }
    files::ensure_dir(&paths.tls_dir, TLS_DIR_MODE).map_err(IdentityError::from)?;
    files::write_atomic(
        &paths.controller_ca(),
        response.ca_pem.as_bytes(),
        0o644,
        None,
    )
    .map_err(IdentityError::from)?;
    identity.save(paths)?;
    let enrollment = Enrollment {
        agent_id: response.agent_id,
        controller: controller.to_string(),
        ca_hash: ca_hash.to_owned(),
        enrolled_at: crate::now_unix(),
    };
    enrollment.save(paths)?;
    Ok(enrollment)
}

pub use gatehouse_common::error_chain;
