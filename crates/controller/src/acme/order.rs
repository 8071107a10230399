//! One ACME order, driven through its states: pending → presenting → validating → finalizing →
//! issued | failed. Every state is saved before its work starts, and every step reads the
//! order's real status at the CA first, so a controller that restarts mid-order simply drives
//! it again from where the CA says it is.

use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, Order, OrderStatus,
    RetryPolicy,
};
use tracing::{info, warn};

use super::dns01;
use crate::Shared;
use crate::store::{AcmeOrderRow, OrderState};

/// Timings an order runs with; tests shorten them.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// How long the zone's DNS may take to answer a new TXT record.
    pub propagation: Duration,
    /// How long the CA may take to validate, then to issue.
    pub validation: Duration,
    /// Issuance-level backoff after the 1st, 2nd, 3rd and later failures in a row.
    pub backoff: [Duration; 4],
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            propagation: Duration::from_secs(300),
            validation: Duration::from_secs(120),
            backoff: [
                Duration::from_secs(60),
                Duration::from_secs(600),
                Duration::from_secs(6000),
                Duration::from_secs(86400),
            ],
        }
    }
}

impl Timings {
    /// The wait before the next attempt after `failures` failures in a row.
    pub fn backoff_after(&self, failures: u32) -> Duration {
        let i = (failures.max(1) as usize - 1).min(self.backoff.len() - 1);
        self.backoff[i]
    }
}

/// A step failed; `transient` errors (network, 5xx, rate limits) are retried in-process before
/// they count as a failed attempt.
#[derive(Debug)]
pub struct StepError {
    pub message: String,
    pub transient: bool,
}

impl StepError {
    fn fatal(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            transient: false,
        }
    }
}

impl From<instant_acme::Error> for StepError {
    fn from(e: instant_acme::Error) -> Self {
        let transient = match &e {
            instant_acme::Error::Api(p) => {
                p.status.is_some_and(|s| s >= 500 || s == 429)
                    || p.r#type
                        .as_deref()
                        .is_some_and(|t| t.ends_with(":rateLimited") || t.ends_with(":badNonce"))
            }
            instant_acme::Error::Other(_)
            | instant_acme::Error::Http(_)
            | instant_acme::Error::Timeout(_) => true,
            _ => false,
        };
        Self {
            message: super::describe(&e),
            transient,
        }
    }
}

impl From<String> for StepError {
    fn from(message: String) -> Self {
        Self::fatal(message)
    }
}

async fn save(
    shared: &Shared,
    order: &mut AcmeOrderRow,
    state: OrderState,
) -> Result<(), StepError> {
    order.state = state;
    order.updated_at = shared.now();
    shared
        .store
        .acme_order_update(order)
        .await
        .map_err(|e| StepError::fatal(e.to_string()))
}

/// Runs an order as far as it can go now and saves the outcome: issued, or failed with the
/// reason and the time of the next attempt. DNS-01 records are always cleaned up, and on
/// failure the order's authorizations are deactivated.
pub async fn drive(shared: &Shared, timings: &Timings, mut order: AcmeOrderRow) -> AcmeOrderRow {
    let account = match super::account::load(shared, &order.account).await {
        Ok(a) => Some(a),
        Err(e) => {
            fail(shared, timings, &mut order, e.to_string()).await;
            None
        }
    };
    let Some(account) = account else {
        return order;
    };
    let mut transient_tries = 0u32;
    let result = loop {
        match attempt(shared, timings, &account, &mut order).await {
            Err(e) if e.transient && transient_tries < 3 => {
                transient_tries += 1;
                let wait = Duration::from_secs(1 << transient_tries);
                warn!(order = %order.id, retry_in = ?wait, "ACME step failed, retrying: {}", e.message);
                tokio::time::sleep(wait).await;
            }
            other => break other,
        }
    };
    // The records go before the outcome is saved: whoever sees "issued" or "failed" sees
    // the zone clean (or the reason it is not).
    let cleanup = dns01::clean_up(shared, &order.id).await;
    let result = match result {
        Ok(chain) => issued(shared, &mut order, chain).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => {
            if let Err(e) = cleanup {
                warn!(order = %order.id, "{e}");
            }
            info!(order = %order.id, certificate = %order.certificate, agent_id = %order.agent_id,
                serial = %order.serial, "ACME certificate issued");
        }
        Err(e) => {
            deactivate(&account, &order).await;
            let mut message = e.message;
            if let Err(c) = cleanup {
                message.push_str(&format!(" (and {c})"));
            }
            fail(shared, timings, &mut order, message).await;
        }
    }
    order
}

async fn fail(shared: &Shared, timings: &Timings, order: &mut AcmeOrderRow, message: String) {
    order.failures += 1;
    order.last_error = message;
    order.order_url.clear();
    order.next_attempt_at = shared.now() + timings.backoff_after(order.failures).as_secs() as i64;
    warn!(order = %order.id, certificate = %order.certificate, failures = order.failures,
        "ACME order failed: {}", order.last_error);
    if let Err(e) = save(shared, order, OrderState::Failed).await {
        warn!(order = %order.id, "cannot save the failed order: {}", e.message);
    }
}

/// Deactivates what is left of a failed order's authorizations, so none stays usable.
async fn deactivate(account: &Account, order: &AcmeOrderRow) {
    if order.order_url.is_empty() {
        return;
    }
    let Ok(mut acme) = account.order(order.order_url.clone()).await else {
        return;
    };
    let mut authorizations = acme.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        if matches!(
            authz.status,
            AuthorizationStatus::Pending | AuthorizationStatus::Valid
        ) && let Err(e) = authz.deactivate().await
        {
            warn!(order = %order.id, "cannot deactivate an authorization: {e}");
        }
    }
}

/// One pass: place or load the order, then act on its status at the CA until the certificate
/// chain is there.
async fn attempt(
    shared: &Shared,
    timings: &Timings,
    account: &Account,
    order: &mut AcmeOrderRow,
) -> Result<String, StepError> {
    let mut acme = if order.order_url.is_empty() {
        let identifiers: Vec<Identifier> = order
            .domains
            .iter()
            .map(|d| Identifier::Dns(d.clone()))
            .collect();
        let placed = account.new_order(&NewOrder::new(&identifiers)).await?;
        order.order_url = placed.url().to_owned();
        order.last_error.clear();
        save(shared, order, OrderState::Presenting).await?;
        placed
    } else {
        account.order(order.order_url.clone()).await?
    };
    loop {
        let status = acme.state().status;
        match status {
            OrderStatus::Pending => {
                present_and_validate(shared, timings, &mut acme, order).await?;
            }
            OrderStatus::Ready => {
                save(shared, order, OrderState::Finalizing).await?;
                acme.finalize_csr(&order.csr).await?;
            }
            OrderStatus::Processing | OrderStatus::Valid => {
                save(shared, order, OrderState::Finalizing).await?;
                let chain = acme
                    .poll_certificate(&RetryPolicy::new().timeout(timings.validation))
                    .await?;
                return Ok(chain);
            }
            OrderStatus::Invalid => return Err(StepError::fatal(why_invalid(&mut acme).await)),
        }
    }
}

/// Presents a TXT record for every pending authorization, waits until the zone's DNS answers
/// them all, then tells the CA to validate and waits for its verdict.
async fn present_and_validate(
    shared: &Shared,
    timings: &Timings,
    acme: &mut Order,
    order: &mut AcmeOrderRow,
) -> Result<(), StepError> {
    save(shared, order, OrderState::Presenting).await?;
    let mut presented = Vec::new();
    {
        let mut authorizations = acme.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(StepError::fatal(format!(
                        "authorization for {} is {other:?}",
                        authz.identifier()
                    )));
                }
            }
            let challenge = authz.challenge(ChallengeType::Dns01).ok_or_else(|| {
                StepError::fatal("the CA offers no dns-01 challenge for this name")
            })?;
            let domain = challenge.identifier().to_string();
            let value = challenge.key_authorization().dns_value();
            let zone = dns01::zone_for(shared, &domain).await?;
            let name = dns01::challenge_name(&domain);
            dns01::present(shared, &order.id, &zone, &name, &value).await?;
            presented.push((zone, name, value));
        }
    }
    for (zone, name, value) in &presented {
        let servers = dns01::authoritative_servers(shared, zone).await?;
        dns01::wait_visible(&servers, name, value, timings.propagation).await?;
    }
    save(shared, order, OrderState::Validating).await?;
    {
        let mut authorizations = acme.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz?;
            if authz.status != AuthorizationStatus::Pending {
                continue;
            }
            if let Some(mut challenge) = authz.challenge(ChallengeType::Dns01) {
                challenge.set_ready().await?;
            }
        }
    }
    let polled = acme
        .poll_ready(
            &RetryPolicy::new()
                .initial_delay(Duration::from_millis(500))
                .timeout(timings.validation),
        )
        .await;
    match polled {
        Ok(OrderStatus::Invalid) | Err(instant_acme::Error::Api(_)) => {
            Err(StepError::fatal(why_invalid(acme).await))
        }
        Ok(_) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The reasons the CA gives for an invalid order, from its authorizations' challenges.
async fn why_invalid(acme: &mut Order) -> String {
    let mut reasons = Vec::new();
    let order_error = acme.state().error.as_ref().map(describe_problem);
    let mut authorizations = acme.authorizations();
    while let Some(Ok(authz)) = authorizations.next().await {
        let name = authz.identifier().to_string();
        for challenge in &authz.challenges {
            if let Some(problem) = &challenge.error {
                reasons.push(format!("{name}: {}", describe_problem(problem)));
            }
        }
    }
    if reasons.is_empty()
        && let Some(e) = order_error
    {
        reasons.push(e);
    }
    if reasons.is_empty() {
        "the CA marked the order invalid without a reason".into()
    } else {
        format!("validation failed: {}", reasons.join("; "))
    }
}

fn describe_problem(p: &instant_acme::Problem) -> String {
    let kind = p
        .r#type
        .as_deref()
        .and_then(|t| t.rsplit(':').next())
        .unwrap_or("error");
    format!("{kind}: {}", p.detail.as_deref().unwrap_or("no detail"))
}

/// Stores the chain after checking that it is for the host's key and names.
async fn issued(shared: &Shared, order: &mut AcmeOrderRow, chain: String) -> Result<(), StepError> {
    let info = gatehouse_common::pki::CertInfo::from_pem(&chain)
        .map_err(|e| StepError::fatal(format!("the CA sent an unreadable certificate: {e}")))?;
    order.chain_pem = chain;
    order.serial = info.serial;
    order.not_before = info.not_before;
    order.not_after = info.not_after;
    order.failures = 0;
    order.last_error.clear();
    save(shared, order, OrderState::Issued).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_attempts_back_off_one_ten_hundred_minutes_then_daily() {
        let t = Timings::default();
        let minutes = |n: u32| t.backoff_after(n).as_secs() / 60;
        assert_eq!(
            [1, 2, 3, 4, 5, 30].map(minutes),
            [1, 10, 100, 1440, 1440, 1440]
        );
    }

    #[test]
    fn network_errors_and_server_trouble_are_transient_refusals_are_not() {
        let problem = |kind: &str, status: u16| {
            StepError::from(instant_acme::Error::Api(
                serde_json::from_value::<instant_acme::Problem>(serde_json::json!({
                    "type": format!("urn:ietf:params:acme:error:{kind}"),
                    "detail": "x",
                    "status": status,
                }))
                .unwrap(),
            ))
        };
        assert!(problem("serverInternal", 500).transient);
        assert!(problem("rateLimited", 429).transient);
        assert!(problem("badNonce", 400).transient);
        assert!(!problem("unauthorized", 403).transient);
        assert!(!problem("rejectedIdentifier", 400).transient);
        assert!(StepError::from(instant_acme::Error::Other("connection reset".into())).transient);
    }
}
