//! Alerts: the [rules] are evaluated on a schedule by one controller (the leader), each
//! condition becomes an alert that is pending until it held for the rule's `for`, then firing,
//! then resolved once it stops holding; state lives in the store, so it survives a restart.
//! What receivers must hear is queued in the store's outbox and [delivered](notify) with
//! retries; silences hold alerts back from every receiver.

pub mod notify;
pub mod rules;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::Shared;
use crate::error::Result;
use crate::store::{AlertRow, AlertState, LeaderJob, Leadership};

/// An alert's identity: its rule and labels.
pub fn fingerprint(rule: &str, labels: &BTreeMap<String, String>) -> String {
    let mut text = String::from(rule);
    for (k, v) in labels {
        text.push('\0');
        text.push_str(k);
        text.push('=');
        text.push_str(v);
    }
    crate::secrets::sha256_hex(text.as_bytes())[..16].to_owned()
}

/// The labels receivers see: the rule's own plus `alertname` and `severity`.
pub fn labels(a: &AlertRow) -> BTreeMap<String, String> {
    let mut labels = a.labels.clone();
    labels.insert("alertname".into(), a.rule.clone());
    labels.insert("severity".into(), a.severity.clone());
    labels
}

/// One evaluation at `now`: moves every alert on and queues what receivers must hear.
pub async fn evaluate(shared: &Shared, now: i64) -> Result<Vec<AlertRow>> {
    let config = shared.config().alerts.clone();
    let findings = rules::evaluate(shared, &config, now).await?;
    let mut stored: BTreeMap<String, AlertRow> = shared
        .store
        .alerts()
        .await?
        .into_iter()
        .map(|a| (a.fingerprint.clone(), a))
        .collect();
    let mut alerts = Vec::new();
    for c in findings.conditions {
        let fp = fingerprint(c.rule, &c.labels);
        let before = stored.remove(&fp);
        let mut a = match &before {
            Some(a) if a.state != AlertState::Resolved => a.clone(),
            old => AlertRow {
                fingerprint: fp,
                rule: c.rule.to_owned(),
                labels: c.labels.clone(),
                annotations: BTreeMap::new(),
                severity: String::new(),
                state: AlertState::Pending,
                active_since: now,
                fired_at: 0,
                resolved_at: 0,
                notified: old.as_ref().map(|o| o.notified.clone()).unwrap_or_default(),
            },
        };
        a.annotations = c.annotations;
        a.severity = c.severity.to_owned();
        if a.state == AlertState::Pending
            && (c.at_once || now - a.active_since >= c.hold.as_secs() as i64)
        {
            a.state = AlertState::Firing;
            a.fired_at = now;
            info!(alert = %a.rule, labels = ?a.labels, summary = %a.annotations["summary"], "alert firing");
        }
        if before.as_ref() != Some(&a) {
            shared.store.alert_put(&a).await?;
        }
        alerts.push(a);
    }
    let keep = config.keep_resolved.as_secs() as i64;
    for (_, mut a) in stored {
        let unknown = a
            .labels
            .get("agent")
            .is_some_and(|id| findings.unknown_hosts.contains(id));
        if unknown && rules::FROM_REPORTS.contains(&a.rule.as_str()) {
            alerts.push(a);
            continue;
        }
        match a.state {
            AlertState::Pending => shared.store.alert_delete(&a.fingerprint).await?,
            AlertState::Firing => {
                a.state = AlertState::Resolved;
                a.resolved_at = now;
                info!(alert = %a.rule, labels = ?a.labels, "alert resolved");
                shared.store.alert_put(&a).await?;
                alerts.push(a);
            }
            AlertState::Resolved if now - a.resolved_at > keep && a.notified != "firing" => {
                shared.store.alert_delete(&a.fingerprint).await?
            }
            AlertState::Resolved => alerts.push(a),
        }
    }
    notify::queue(shared, &mut alerts, now).await?;
    Ok(alerts)
}

/// How often a controller that does not lead checks whether it may.
const FOLLOW: Duration = Duration::from_secs(15);

/// Evaluates the rules every `alerts.interval` and delivers notifications, while this
/// controller leads the job; until `shutdown`.
pub async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut leadership = Leadership::new(LeaderJob::Alerts, FOLLOW);
    let mut delivery = notify::Delivery::new();
    let mut next_evaluation = tokio::time::Instant::now();
    let mut next_resend = tokio::time::Instant::now();
    loop {
        if !leadership.leads(&shared.store).await {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(FOLLOW) => continue,
            }
        }
        let config = shared.config().alerts.clone();
        let t = tokio::time::Instant::now();
        if t >= next_evaluation {
            next_evaluation = t + config.interval;
            if let Err(e) = evaluate(&shared, shared.now()).await {
                warn!("cannot evaluate the alert rules: {e}");
            }
        }
        if t >= next_resend {
            next_resend = t + config.resend_interval;
            delivery.resend(&shared, &config).await;
        }
        let wait = delivery.deliver(&shared).await;
        let until = next_evaluation.min(next_resend).min(t + wait);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(until) => {}
            _ = shared.alerts_wake.notified() => {}
        }
    }
}
