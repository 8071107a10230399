//! ACME in the controller: accounts ([`account`]), orders driven through DNS-01 via Cloudflare
//! ([`order`], [`dns01`]) by a background [`worker`], for certificate requests whose key was
//! made on the host. The controller never sees a host's private key: it sends the host's CSR.

pub mod account;
pub mod dns01;
pub mod http;
pub mod order;
pub mod renewal;
pub mod worker;

use gatehouse_proto::spec::Certificate;
use tracing::info;

use crate::Shared;
use crate::certificates::IssueError;
use crate::error::Error;
use crate::secrets::{random_id, sha256_hex};
use crate::store::{AcmeOrderRow, OrderState};

/// An instant-acme error on one line, with the CA's problem type and detail when it sent one.
pub fn describe(e: &instant_acme::Error) -> String {
    match e {
        instant_acme::Error::Api(p) => {
            let kind = p
                .r#type
                .as_deref()
                .and_then(|t| t.rsplit(':').next())
                .unwrap_or("error");
            let mut text = format!("{kind}: {}", p.detail.as_deref().unwrap_or("no detail"));
            for sub in &p.subproblems {
                text.push_str(&format!("; {sub}"));
            }
            text
        }
        other => crate::error_chain(other),
    }
}

/// What a host's certificate request gets now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The chain, leaf first.
    Issued(String),
    /// The order is under way (its state); the certificate is pushed when it is issued.
    Pending(OrderState),
    /// The last attempt failed; another follows after the backoff.
    Failed(String),
}

/// Answers a host's CSR for an ACME certificate: the order for this exact CSR, or a new one.
/// A new CSR for the same certificate replaces unfinished orders and keeps their backoff, so a
/// host that restarts (and makes a new key) cannot make the controller hammer the CA.
pub async fn request(
    shared: &Shared,
    agent_id: &str,
    spec: &Certificate,
    account: &str,
    csr_der: &[u8],
) -> Result<Answer, IssueError> {
    let csr_sha256 = sha256_hex(csr_der);
    let store = &shared.store;
    let name = spec.name.as_str();
    if let Some(order) = store
        .acme_order_for_csr(agent_id, name, &csr_sha256)
        .await?
    {
        return Ok(match order.state {
            OrderState::Issued => Answer::Issued(order.chain_pem),
            OrderState::Revoked => Answer::Failed(format!(
                "the certificate of order {} was revoked; a new revision is on its way",
                order.id
            )),
            OrderState::Failed => Answer::Failed(format!(
                "{} (attempt {} failed; the next starts in {} s, or now with gatehousectl cert \
                 retry {})",
                order.last_error,
                order.failures,
                (order.next_attempt_at - shared.now()).max(0),
                order.id
            )),
            state => Answer::Pending(state),
        });
    }
    if store.acme_account(account).await?.is_none() {
        return Err(IssueError::Issuer(format!(
            "no ACME account {account:?}: create it with gatehousectl acme account create"
        )));
    }
    crate::certificates::admit(shared, agent_id, name).await?;
    let t = shared.now();
    let superseded: Vec<AcmeOrderRow> = store
        .acme_orders(Some(agent_id))
        .await?
        .into_iter()
        .filter(|o| o.certificate == name && o.state.is_active())
        .collect();
    let (failures, next_attempt_at) = superseded
        .iter()
        .filter(|o| o.revision == spec.revision)
        .map(|o| (o.failures, o.next_attempt_at))
        .max()
        .unwrap_or((0, t));
    for old in &superseded {
        store.acme_order_delete(&old.id).await?;
    }
    let order = AcmeOrderRow {
        id: format!("ord_{}", random_id(16)),
        agent_id: agent_id.to_owned(),
        certificate: name.to_owned(),
        revision: spec.revision,
        account: account.to_owned(),
        domains: spec.domains.iter().map(ToString::to_string).collect(),
        csr: csr_der.to_vec(),
        csr_sha256,
        state: OrderState::Pending,
        order_url: String::new(),
        last_error: String::new(),
        failures,
        next_attempt_at,
        chain_pem: String::new(),
        serial: String::new(),
        not_before: 0,
        not_after: 0,
        renew_at: 0,
        renewal: String::new(),
        recheck_at: 0,
        superseded: false,
        created_at: t,
        updated_at: t,
    };
    store.acme_order_insert(&order).await?;
    info!(order = %order.id, certificate = name, agent_id, "ACME order queued");
    shared.acme_wake.notify_one();
    Ok(Answer::Pending(OrderState::Pending))
}

/// The API view of an account (never its key or EAB secret).
pub fn account_view(row: &crate::store::AcmeAccountRow) -> gatehouse_proto::v1::AcmeAccount {
    gatehouse_proto::v1::AcmeAccount {
        name: row.name.clone(),
        directory_url: row.directory_url.clone(),
        email: row.email.clone(),
        eab_kid: row.eab_kid.clone(),
        created_at: row.created_at,
    }
}

/// The API views of orders, each with the TXT records it has not cleaned up yet and whether
/// its renewal is overdue (judged against `all`: the same hosts' orders).
pub async fn order_views(
    shared: &Shared,
    rows: &[AcmeOrderRow],
    all: &[AcmeOrderRow],
) -> Result<Vec<gatehouse_proto::v1::CertificateOrder>, crate::store::StoreError> {
    let t = shared.now();
    let mut views = Vec::with_capacity(rows.len());
    for row in rows {
        let newer_issued = all.iter().any(|o| {
            o.agent_id == row.agent_id
                && o.certificate == row.certificate
                && o.state == OrderState::Issued
                && o.not_before > row.not_before
        });
        let overdue = row.state == OrderState::Issued
            && !newer_issued
            && renewal::in_last_third(row.not_before, row.not_after, t);
        views.push(order_view(shared, row, overdue).await?);
    }
    Ok(views)
}

async fn order_view(
    shared: &Shared,
    row: &AcmeOrderRow,
    renewal_overdue: bool,
) -> Result<gatehouse_proto::v1::CertificateOrder, crate::store::StoreError> {
    let txt = shared.store.acme_txt_records(Some(&row.id)).await?;
    Ok(gatehouse_proto::v1::CertificateOrder {
        id: row.id.clone(),
        agent_id: row.agent_id.clone(),
        certificate: row.certificate.clone(),
        revision: row.revision,
        account: row.account.clone(),
        domains: row.domains.clone(),
        state: row.state.to_string(),
        last_error: row.last_error.clone(),
        failures: row.failures,
        next_attempt_at: row.next_attempt_at,
        serial: row.serial.clone(),
        not_before: row.not_before,
        not_after: row.not_after,
        created_at: row.created_at,
        updated_at: row.updated_at,
        txt_records: txt
            .into_iter()
            .map(|t| format!("{} {}", t.name, t.content))
            .collect(),
        renew_at: row.renew_at,
        renewal: row.renewal.clone(),
        superseded: row.superseded,
        renewal_overdue,
    })
}

/// Parses a revocation reason as `cert revoke --reason` takes it.
pub fn revocation_reason(text: &str) -> Result<instant_acme::RevocationReason, Error> {
    use instant_acme::RevocationReason as R;
    Ok(match text {
        "" | "unspecified" => R::Unspecified,
        "key-compromise" => R::KeyCompromise,
        "superseded" => R::Superseded,
        "cessation-of-operation" => R::CessationOfOperation,
        "affiliation-changed" => R::AffiliationChanged,
        other => {
            return Err(Error::Invalid(format!(
                "reason {other:?}: use unspecified, key-compromise, superseded, \
                 cessation-of-operation or affiliation-changed"
            )));
        }
    })
}

/// Revokes an issued order's certificate at its CA and marks it revoked. When the host still
/// uses that revision, the certificate's next revision is requested, so the host gets a new
/// key and certificate.
pub async fn revoke(
    shared: &Shared,
    id: &str,
    reason: instant_acme::RevocationReason,
) -> Result<AcmeOrderRow, Error> {
    let mut order = shared
        .store
        .acme_order(id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no certificate order {id:?}")))?;
    if order.state != OrderState::Issued {
        return Err(Error::Precondition(format!(
            "order {id} is {}: only an issued certificate can be revoked",
            order.state
        )));
    }
    let account = account::load(shared, &order.account).await?;
    let der = x509_parser::pem::parse_x509_pem(order.chain_pem.as_bytes())
        .map_err(|e| Error::Internal(format!("the stored certificate is not PEM: {e}")))?
        .1
        .contents;
    let der = rustls_pki_types::CertificateDer::from(der);
    account
        .revoke(&instant_acme::RevocationRequest {
            certificate: &der,
            reason: Some(reason),
        })
        .await
        .map_err(|e| Error::Precondition(format!("the CA refused: {}", describe(&e))))?;
    order.state = OrderState::Revoked;
    order.updated_at = shared.now();
    shared.store.acme_order_update(&order).await?;
    info!(order = %order.id, certificate = %order.certificate, agent_id = %order.agent_id,
        serial = %order.serial, "ACME certificate revoked");
    if !order.superseded {
        renewal::next_revision(shared, &order).await?;
    }
    Ok(order)
}
