//! Notifications: what receivers must hear is queued in the store's outbox (one entry per
//! receiver and alert, the newest state winning) and delivered with retries, so a receiver that
//! is down, or a controller restarted meanwhile, loses nothing. Two kinds of receiver:
//! Prometheus Alertmanager through its API (`POST /api/v2/alerts`; firing alerts are also sent
//! again every `resend_interval`, as Prometheus does, with an `endsAt` a few intervals ahead),
//! and webhooks, which get Alertmanager's webhook JSON (version 4).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::{info, warn};

use super::labels;
use crate::Shared;
use crate::config::AlertsConfig;
use crate::error::Result;
use crate::store::{AlertRow, AlertState, OutboxRow};

/// An alert as queued: what it was when its state changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    /// "firing" or "resolved".
    pub status: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: i64,
    /// 0 while firing.
    pub ends_at: i64,
    pub generator_url: String,
    pub fingerprint: String,
}

impl Notice {
    fn of(a: &AlertRow, status: &str, ui: &str) -> Self {
        Self {
            status: status.to_owned(),
            labels: labels(a),
            annotations: a.annotations.clone(),
            starts_at: a.fired_at.max(a.active_since),
            ends_at: if status == "resolved" {
                a.resolved_at
            } else {
                0
            },
            generator_url: format!("{ui}/ui/alerts"),
            fingerprint: a.fingerprint.clone(),
        }
    }

    /// The alert as Alertmanager's API takes it; a firing one ends at `ends` unless sent again.
    fn for_alertmanager(&self, ends: i64) -> serde_json::Value {
        json!({
            "labels": self.labels,
            "annotations": self.annotations,
            "startsAt": rfc3339(self.starts_at),
            "endsAt": rfc3339(if self.ends_at == 0 { ends } else { self.ends_at }),
            "generatorURL": self.generator_url,
        })
    }

    /// Alertmanager's webhook body for this one alert.
    fn for_webhook(&self, external_url: &str) -> serde_json::Value {
        let alertname = self.labels.get("alertname").cloned().unwrap_or_default();
        json!({
            "version": "4",
            "groupKey": format!("{{}}:{{alertname=\"{alertname}\"}}"),
            "truncatedAlerts": 0,
            "status": self.status,
            "receiver": "gatehouse",
            "groupLabels": {"alertname": alertname},
            "commonLabels": self.labels,
            "commonAnnotations": self.annotations,
            "externalURL": external_url,
            "alerts": [{
                "status": self.status,
                "labels": self.labels,
                "annotations": self.annotations,
                "startsAt": rfc3339(self.starts_at),
                "endsAt": if self.ends_at == 0 {
                    "0001-01-01T00:00:00Z".to_owned()
                } else {
                    rfc3339(self.ends_at)
                },
                "generatorURL": self.generator_url,
                "fingerprint": self.fingerprint,
            }],
        })
    }
}

use gatehouse_common::rfc3339;

/// The configured receivers, as the outbox names them.
pub fn receivers(c: &AlertsConfig) -> Vec<String> {
    let am = c.alertmanager.iter().map(|u| format!("alertmanager {u}"));
    am.chain(c.webhook.iter().map(|u| format!("webhook {u}")))
        .collect()
}

/// Queues for every receiver what changed since it was last told: an alert that fires (unless
/// silenced; it is sent when the silence ends), and one that resolved after it was sent.
pub async fn queue(shared: &Shared, alerts: &mut [AlertRow], now: i64) -> Result<()> {
    let config = shared.config();
    let receivers = receivers(&config.alerts);
    let silences = shared.store.silences(now).await?;
    let mut queued = false;
    for a in alerts.iter_mut() {
        let silenced = silences.iter().any(|s| s.silences(&labels(a), now));
        let want = match a.state {
            AlertState::Firing if !silenced => "firing",
            AlertState::Resolved if a.notified == "firing" => "resolved",
            _ => continue,
        };
        if a.notified == want {
            continue;
        }
        let body = serde_json::to_string(&Notice::of(a, want, &config.ui_base()))
            .expect("notices serialise");
        for r in &receivers {
            shared
                .store
                .outbox_put(r, &a.fingerprint, &body, now)
                .await?;
        }
        a.notified = want.to_owned();
        shared.store.alert_put(a).await?;
        queued |= !receivers.is_empty();
    }
    if queued {
        shared.alerts_wake.notify_one();
    }
    Ok(())
}

/// The first retry waits this long, doubling up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: i64 = 2;
const MAX_BACKOFF: i64 = 300;

/// Delivers the outbox.
#[derive(Debug)]
pub struct Delivery {
    client: reqwest::Client,
    /// Alertmanagers whose last re-send failed (logged once until one works).
    resend_failing: HashSet<String>,
}

impl Default for Delivery {
    fn default() -> Self {
        Self::new()
    }
}

impl Delivery {
    pub fn new() -> Self {
        Self {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client"),
            resend_failing: HashSet::new(),
        }
    }

    /// Sends every due notification; how long until the next one is due.
    pub async fn deliver(&mut self, shared: &Shared) -> Duration {
        let now = shared.now();
        let config = shared.config();
        let configured = receivers(&config.alerts);
        let mut next = Duration::from_secs(60);
        let rows = match shared.store.outbox().await {
            Ok(rows) => rows,
            Err(e) => {
                warn!("cannot read the notification outbox: {e}");
                return Duration::from_secs(5);
            }
        };
        for n in rows {
            let result = if !configured.contains(&n.receiver) {
                warn!(receiver = %n.receiver, "dropping a notification: the receiver is no longer configured");
                shared.store.outbox_done(&n).await
            } else if n.next_at > now {
                next = next.min(Duration::from_secs((n.next_at - now) as u64));
                continue;
            } else {
                match self.send(&n, &config, now).await {
                    Ok(()) => {
                        info!(receiver = %n.receiver, alert = %n.fingerprint, attempts = n.attempts + 1, "notification delivered");
                        shared.store.outbox_done(&n).await
                    }
                    Err(e) => {
                        let backoff = (FIRST_BACKOFF << n.attempts.min(10)).min(MAX_BACKOFF);
                        warn!(receiver = %n.receiver, alert = %n.fingerprint, attempts = n.attempts + 1, retry_in = backoff, "notification failed: {e}");
                        next = next.min(Duration::from_secs(backoff as u64));
                        shared.store.outbox_failed(&n, now + backoff, &e).await
                    }
                }
            };
            if let Err(e) = result {
                warn!("cannot update the notification outbox: {e}");
            }
        }
        next
    }

    async fn send(
        &self,
        n: &OutboxRow,
        config: &crate::config::Config,
        now: i64,
    ) -> std::result::Result<(), String> {
        let notice: Notice = serde_json::from_str(&n.body)
            .map_err(|e| format!("the queued notification is damaged: {e}"))?;
        let (kind, url) = n.receiver.split_once(' ').unwrap_or(("", ""));
        let body = match kind {
            "alertmanager" => {
                json!([notice.for_alertmanager(now + firing_window(&config.alerts))])
            }
            _ => notice.for_webhook(&config.ui_base()),
        };
        let url = match kind {
            "alertmanager" => format!("{url}/api/v2/alerts"),
            _ => url.to_owned(),
        };
        self.post(&url, &body).await
    }

    async fn post(&self, url: &str, body: &serde_json::Value) -> std::result::Result<(), String> {
        let response = self
            .client
            .post(url)
            .json(body)
            .send()
            .await
            .map_err(|e| gatehouse_common::error_chain(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        let text: String = text.chars().take(200).collect();
        Err(format!("HTTP {status}: {}", text.trim()))
    }

    /// Sends every firing, unsilenced alert to each Alertmanager again, so it keeps them active
    /// (it resolves an alert whose `endsAt` passes without a re-send).
    pub async fn resend(&mut self, shared: &Shared, c: &AlertsConfig) {
        if c.alertmanager.is_empty() {
            return;
        }
        let now = shared.now();
        let (alerts, silences) = match (
            shared.store.alerts().await,
            shared.store.silences(now).await,
        ) {
            (Ok(a), Ok(s)) => (a, s),
            (Err(e), _) | (_, Err(e)) => {
                warn!("cannot read alerts to send again: {e}");
                return;
            }
        };
        let ui = shared.config().ui_base();
        let ends = now + firing_window(c);
        let firing: Vec<serde_json::Value> = alerts
            .iter()
            .filter(|a| a.state == AlertState::Firing)
            .filter(|a| !silences.iter().any(|s| s.silences(&labels(a), now)))
            .map(|a| Notice::of(a, "firing", &ui).for_alertmanager(ends))
            .collect();
        if firing.is_empty() {
            return;
        }
        for url in &c.alertmanager {
            match self
                .post(&format!("{url}/api/v2/alerts"), &json!(firing))
                .await
            {
                Ok(()) => {
                    if self.resend_failing.remove(url) {
                        info!(alertmanager = %url, "firing alerts reach Alertmanager again");
                    }
                }
                Err(e) => {
                    if self.resend_failing.insert(url.clone()) {
                        warn!(alertmanager = %url, "cannot send firing alerts again: {e}");
                    }
                }
            }
        }
    }
}

/// How far ahead a firing alert's `endsAt` is put: four evaluations or re-sends, as Prometheus
/// does, so one missed re-send does not resolve it.
fn firing_window(c: &AlertsConfig) -> i64 {
    4 * c.interval.max(c.resend_interval).as_secs() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_webhook_body_is_alertmanagers_format() {
        let n = Notice {
            status: "firing".into(),
            labels: [("alertname".to_owned(), "HostOffline".to_owned())].into(),
            annotations: [("summary".to_owned(), "gone".to_owned())].into(),
            starts_at: 0,
            ends_at: 0,
            generator_url: "http://c/ui/alerts".into(),
            fingerprint: "f".into(),
        };
        let body = n.for_webhook("http://c");
        assert_eq!(body["version"], "4");
        assert_eq!(body["status"], "firing");
        assert_eq!(body["groupLabels"]["alertname"], "HostOffline");
        assert_eq!(body["alerts"][0]["startsAt"], "1970-01-01T00:00:00Z");
        assert_eq!(body["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(body["alerts"][0]["fingerprint"], "f");
        let am = n.for_alertmanager(60);
        assert_eq!(am["endsAt"], "1970-01-01T00:01:00Z");
        assert_eq!(am["labels"]["alertname"], "HostOffline");
    }
}
