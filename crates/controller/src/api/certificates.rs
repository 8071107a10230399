//! Certificates: named certificates on hosts, and the ACME orders behind them.

use gatehouse_proto::names::ResourceName;
use gatehouse_proto::spec::Issuer;
use gatehouse_proto::v1::*;

use super::agents::{agent_by_id, change_state};
use super::{Audited, agent_id_arg};
use crate::Shared;
use crate::error::{Error, Result};
use crate::sites::{self, CertificateSource};

/// A certificate issuer named by a request (`internal`, `acme:ACCOUNT`), checked.
pub(super) async fn certificate_source(
    shared: &Shared,
    issuer: &str,
    key_type: KeyType,
) -> Result<CertificateSource> {
    let issuer = Issuer::parse(issuer).map_err(Error::Invalid)?;
    match &issuer {
        Issuer::Acme(account) => {
            if shared.store.acme_account(account.as_str()).await?.is_none() {
                return Err(Error::Precondition(format!(
                    "no ACME account {account}: create it with gatehousectl acme account create"
                )));
            }
        }
        Issuer::Internal => {}
        Issuer::OriginCa(_) => {
            return Err(Error::Invalid(
                "issuer: Origin CA certificates come with proxied Cloudflare sites".into(),
            ));
        }
    }
    Ok(CertificateSource {
        issuer: issuer.to_string(),
        key_type,
    })
}

async fn order(shared: &Shared, id: &str) -> Result<CertificateOrder> {
    let row = shared
        .store
        .acme_order(id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no certificate order {id:?}")))?;
    let all = shared.store.acme_orders(Some(&row.agent_id)).await?;
    let mut views = crate::acme::order_views(shared, &[row], &all).await?;
    Ok(views.remove(0))
}

impl Audited for ReissueCertificateRequest {
    type Response = Agent;
    fn target(&self) -> String {
        format!("agent:{}/certificate:{}", self.agent_id, self.name)
    }
}

pub(super) async fn reissue_certificate(
    shared: &Shared,
    req: ReissueCertificateRequest,
) -> Result<Agent> {
    let id = agent_id_arg(&req.agent_id)?;
    change_state(shared, &id, |state| sites::reissue(state, &req.name)).await?;
    agent_by_id(shared, &id).await
}

impl Audited for RequestCertificateRequest {
    type Response = RequestCertificateResponse;
    fn target(&self) -> String {
        format!("certificate:{}", self.name)
    }
}

pub(super) async fn request_certificate(
    shared: &Shared,
    req: RequestCertificateRequest,
) -> Result<RequestCertificateResponse> {
    let name: ResourceName = req
        .name
        .parse()
        .map_err(|e| Error::Invalid(format!("name: {e}")))?;
    if req.agent_ids.is_empty() {
        return Err(Error::Invalid(
            "agent_ids: bind the certificate to at least one host".into(),
        ));
    }
    let key_type = KeyType::try_from(req.key_type)
        .map_err(|_| Error::Invalid("key_type: unknown key type".into()))?;
    let source = certificate_source(shared, &req.issuer, key_type).await?;
    let mut ids = Vec::new();
    for agent in &req.agent_ids {
        let id = agent_id_arg(agent)?;
        agent_by_id(shared, &id).await?;
        ids.push(id);
    }
    let mut agents = Vec::new();
    for id in &ids {
        change_state(shared, id, |state| {
            sites::put_certificate(state, name.as_str(), req.domains.clone(), source.clone())
        })
        .await?;
        agents.push(agent_by_id(shared, id).await?);
    }
    Ok(RequestCertificateResponse { agents })
}

pub(crate) async fn list_certificate_orders(
    shared: &Shared,
    req: ListCertificateOrdersRequest,
) -> Result<ListCertificateOrdersResponse> {
    let agent = req.agent_id.as_str();
    let rows = shared
        .store
        .acme_orders((!agent.is_empty()).then_some(agent))
        .await?;
    let orders = crate::acme::order_views(shared, &rows, &rows).await?;
    Ok(ListCertificateOrdersResponse { orders })
}

pub(super) async fn get_certificate_order(
    shared: &Shared,
    req: GetCertificateOrderRequest,
) -> Result<CertificateOrder> {
    order(shared, &req.id).await
}

impl Audited for GetCertificateOrderRequest {
    type Response = CertificateOrder;
    fn target(&self) -> String {
        format!("certificate-order:{}", self.id)
    }
}

pub(super) async fn retry_certificate_order(
    shared: &Shared,
    req: GetCertificateOrderRequest,
) -> Result<CertificateOrder> {
    let id = req.id;
    let current = order(shared, &id).await?;
    if current.state == "issued" {
        return Err(Error::Precondition(format!(
            "order {id} is issued; to replace the certificate, use cert reissue"
        )));
    }
    shared.store.acme_order_retry_now(&id, shared.now()).await?;
    shared.acme_wake.notify_one();
    order(shared, &id).await
}

impl Audited for RevokeCertificateOrderRequest {
    type Response = CertificateOrder;
    fn target(&self) -> String {
        format!("certificate-order:{}", self.id)
    }
}

pub(super) async fn revoke_certificate_order(
    shared: &Shared,
    req: RevokeCertificateOrderRequest,
) -> Result<CertificateOrder> {
    let reason = crate::acme::revocation_reason(&req.reason)?;
    crate::acme::revoke(shared, &req.id, reason).await?;
    order(shared, &req.id).await
}
