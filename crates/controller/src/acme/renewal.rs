//! When issued ACME certificates renew: at a random point inside the CA's ARI window when the
//! CA offers one (asked again after its Retry-After), else when a third of the lifetime is left
//! (half for lifetimes of 10 days or less). Renewing bumps the certificate's revision in the
//! host's desired state: the host makes a new key and CSR, a new order follows, and the new
//! certificate is pushed to the host, which reloads Caddy on its own.

use std::time::Duration;

use instant_acme::CertificateIdentifier;
use rustls_pki_types::CertificateDer;
use tracing::{info, warn};

use crate::Shared;
use crate::store::AcmeOrderRow;

/// Lifetimes up to this renew at half their life, longer ones with a third left.
const SHORT_LIFETIME: i64 = 10 * 86_400;
/// How long before asking the CA's renewal information again when it gave no Retry-After.
const ARI_RECHECK: i64 = 6 * 3600;
/// Never ask more often than this, whatever Retry-After says.
const ARI_MIN_RECHECK: i64 = 10;

/// When a certificate renews without ARI.
pub fn lifetime_renew_at(not_before: i64, not_after: i64) -> i64 {
    let lifetime = not_after - not_before;
    if lifetime <= SHORT_LIFETIME {
        not_before + lifetime / 2
    } else {
        not_after - lifetime / 3
    }
}

/// Each host's newest issued certificate per certificate name, by `(agent, certificate)`.
pub fn current(orders: &[AcmeOrderRow]) -> std::collections::BTreeMap<(&str, &str), &AcmeOrderRow> {
    let mut current = std::collections::BTreeMap::new();
    for o in orders
        .iter()
        .filter(|o| o.state == crate::store::OrderState::Issued)
    {
        let key = (o.agent_id.as_str(), o.certificate.as_str());
        if current
            .get(&key)
            .is_none_or(|c: &&AcmeOrderRow| o.not_before > c.not_before)
        {
            current.insert(key, o);
        }
    }
    current
}

/// Whether an issued certificate is in the last third of its life.
pub fn in_last_third(not_before: i64, not_after: i64, now: i64) -> bool {
    not_after > not_before && now >= not_after - (not_after - not_before) / 3
}

/// A uniformly random point of `[start, end]`, not earlier than `now`.
fn point_in(start: i64, end: i64, now: i64) -> i64 {
    let start = start.max(now);
    if end <= start {
        return start;
    }
    let mut bytes = [0u8; 8];
    aws_lc_rs::rand::fill(&mut bytes).expect("system randomness");
    start + (u64::from_le_bytes(bytes) % (end - start + 1) as u64) as i64
}

/// The CA's suggested window for a certificate and when to ask again, or `None` when the CA
/// offers no renewal information.
async fn ari_window(
    shared: &Shared,
    order: &AcmeOrderRow,
) -> Result<Option<(i64, i64, Duration)>, String> {
    let account = super::account::load(shared, &order.account)
        .await
        .map_err(|e| e.to_string())?;
    let der = x509_parser::pem::parse_x509_pem(order.chain_pem.as_bytes())
        .map_err(|e| format!("the stored certificate is not PEM: {e}"))?
        .1
        .contents;
    let der = CertificateDer::from(der);
    let id = CertificateIdentifier::try_from(&der)
        .map_err(|e| format!("no ARI identifier for the certificate: {e}"))?;
    match account.renewal_info(&id).await {
        Ok((info, retry_after)) => Ok(Some((
            info.suggested_window.start.unix_timestamp(),
            info.suggested_window.end.unix_timestamp(),
            retry_after,
        ))),
        Err(instant_acme::Error::Unsupported(_)) => Ok(None),
        Err(e) => Err(super::describe(&e)),
    }
}

/// Decides (or revises, after ARI's Retry-After) when `order` renews, and saves it.
async fn schedule(shared: &Shared, order: &mut AcmeOrderRow) {
    let t = shared.now();
    match ari_window(shared, order).await {
        Ok(Some((start, end, retry_after))) => {
            // A window that moved earlier (a revocation, a CA incident) is followed at once.
            if order.renewal != "ari" || order.renew_at < start || order.renew_at > end {
                order.renew_at = point_in(start, end, t);
            }
            order.renewal = "ari".into();
            let wait = if retry_after.is_zero() {
                ARI_RECHECK
            } else {
                retry_after.as_secs() as i64
            };
            order.recheck_at = t + wait.max(ARI_MIN_RECHECK);
        }
        Ok(None) => {
            order.renew_at = lifetime_renew_at(order.not_before, order.not_after);
            order.renewal = "lifetime".into();
            order.recheck_at = i64::MAX;
        }
        Err(e) => {
            // Fall back to the lifetime rule, and ask the CA again later.
            warn!(order = %order.id, "cannot get the CA's renewal information: {e}");
            if order.renew_at == 0 {
                order.renew_at = lifetime_renew_at(order.not_before, order.not_after);
                order.renewal = "lifetime".into();
            }
            order.recheck_at = t + 3600;
        }
    }
    if let Err(e) = shared.store.acme_order_update(order).await {
        warn!(order = %order.id, "cannot save the renewal time: {e}");
    }
}

/// Asks the host for the order's certificate's next revision (a new key, a new order), unless
/// it has moved on already.
pub async fn next_revision(
    shared: &Shared,
    order: &AcmeOrderRow,
) -> crate::error::Result<gatehouse_proto::v1::DesiredState> {
    let (name, revision) = (order.certificate.as_str(), order.revision);
    crate::desired::change(shared, &order.agent_id, |mut state| {
        if let Some(cert) = state
            .certificates
            .iter_mut()
            .find(|c| c.name == name && c.revision == revision)
        {
            cert.revision += 1;
        }
        Ok(state)
    })
    .await
}

/// Starts the renewal: a new revision of the certificate in the host's desired state.
async fn renew(shared: &Shared, order: &mut AcmeOrderRow) {
    match next_revision(shared, order).await {
        Ok(state) => {
            info!(order = %order.id, certificate = %order.certificate, agent_id = %order.agent_id,
                generation = state.generation, how = %order.renewal, "ACME certificate renewal started");
            order.superseded = true;
            order.updated_at = shared.now();
            if let Err(e) = shared.store.acme_order_update(order).await {
                warn!(order = %order.id, "cannot save the renewal: {e}");
            }
        }
        Err(e) => warn!(order = %order.id, "cannot start the renewal: {}", e),
    }
}

/// One pass over the issued certificates. Returns when the next one needs attention.
pub async fn run_due(shared: &Shared) -> Option<i64> {
    let current = match shared.store.acme_current().await {
        Ok(c) => c,
        Err(e) => {
            warn!("cannot list issued ACME certificates: {e}");
            return None;
        }
    };
    let mut next: Option<i64> = None;
    for mut order in current {
        let t = shared.now();
        if order.renew_at == 0 || t >= order.recheck_at {
            schedule(shared, &mut order).await;
        }
        if t >= order.renew_at {
            renew(shared, &mut order).await;
            continue;
        }
        let due = order.renew_at.min(order.recheck_at);
        next = Some(next.map_or(due, |n| n.min(due)));
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_lifetimes_renew_at_half_long_ones_with_a_third_left() {
        let day = 86_400;
        // Let's Encrypt's 90 days: 30 days before expiry.
        assert_eq!(lifetime_renew_at(0, 90 * day), 60 * day);
        // Six-day and ten-minute certificates: half-way.
        assert_eq!(lifetime_renew_at(0, 6 * day), 3 * day);
        assert_eq!(lifetime_renew_at(1000, 1600), 1300);
        assert_eq!(lifetime_renew_at(0, 10 * day), 5 * day);
    }

    #[test]
    fn the_last_third_is_flagged() {
        assert!(!in_last_third(0, 90, 59));
        assert!(in_last_third(0, 90, 60));
        assert!(!in_last_third(0, 0, 10));
    }

    #[test]
    fn ari_points_fall_inside_the_window_and_never_in_the_past() {
        for _ in 0..200 {
            let p = point_in(100, 200, 50);
            assert!((100..=200).contains(&p));
            let p = point_in(100, 200, 150);
            assert!((150..=200).contains(&p));
        }
        assert_eq!(point_in(100, 200, 500), 500);
    }
}
