//! Alerts and silences.

use std::collections::BTreeMap;

use gatehouse_proto::v1::*;

use super::Audited;
use crate::Shared;
use crate::audit::Actor;
use crate::error::{Error, Result};
use crate::store::{AlertState, SilenceRow};

impl Audited for CreateSilenceRequest {
    type Response = Silence;
    fn target(&self) -> String {
        let matchers: Vec<String> = self
            .matchers
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!("silence:{}", matchers.join(","))
    }
    fn made(response: &Self::Response) -> Option<String> {
        Some(format!("silence:{}", response.id))
    }
}

impl Audited for ExpireSilenceRequest {
    type Response = Silence;
    fn target(&self) -> String {
        format!("silence:{}", self.id)
    }
}

fn silence(s: SilenceRow) -> Silence {
    Silence {
        id: s.id,
        matchers: s.matchers.into_iter().collect(),
        starts_at: s.starts_at,
        ends_at: s.ends_at,
        comment: s.comment,
        created_by: s.created_by,
    }
}

pub(crate) async fn list_alerts(
    shared: &Shared,
    req: ListAlertsRequest,
) -> Result<ListAlertsResponse> {
    let now = shared.now();
    let silences = shared.store.silences(now).await?;
    let outbox = shared.store.outbox().await?;
    let alerts = shared
        .store
        .alerts()
        .await?
        .into_iter()
        .filter(|a| req.include_resolved || a.state != AlertState::Resolved)
        .map(|a| {
            let labels = crate::alerts::labels(&a);
            let queued: Vec<_> = outbox
                .iter()
                .filter(|n| n.fingerprint == a.fingerprint)
                .collect();
            Alert {
                silenced_by: silences
                    .iter()
                    .filter(|s| s.silences(&labels, now))
                    .map(|s| s.id.clone())
                    .collect(),
                queued_notifications: queued.len() as u32,
                notification_error: queued
                    .iter()
                    .find(|n| !n.last_error.is_empty())
                    .map(|n| format!("{}: {}", n.receiver, n.last_error))
                    .unwrap_or_default(),
                fingerprint: a.fingerprint,
                name: a.rule,
                severity: a.severity,
                labels: a.labels.into_iter().collect(),
                summary: a.annotations.get("summary").cloned().unwrap_or_default(),
                state: a.state.as_str().to_owned(),
                active_since: a.active_since,
                fired_at: a.fired_at,
                resolved_at: a.resolved_at,
            }
        })
        .collect();
    Ok(ListAlertsResponse { alerts })
}

/// The longest silence: a year (an alert not wanted at all is a config change).
const MAX_SILENCE: u64 = 366 * 86_400;

pub(super) async fn create_silence(
    shared: &Shared,
    actor: &Actor,
    req: CreateSilenceRequest,
) -> Result<Silence> {
    if req.matchers.is_empty() {
        return Err(Error::Invalid(
            "a silence needs at least one matcher, like agent=ID or alertname=HostOffline".into(),
        ));
    }
    let mut matchers = BTreeMap::new();
    for (k, v) in req.matchers {
        let name_ok = !k.is_empty()
            && k.len() <= 64
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !name_ok {
            return Err(Error::Invalid(format!(
                "{k:?} is not a label name (letters, digits and _)"
            )));
        }
        if v.is_empty() || v.len() > 256 || v.chars().any(char::is_control) {
            return Err(Error::Invalid(format!(
                "the value of {k} must be 1 to 256 printable characters"
            )));
        }
        matchers.insert(k, v);
    }
    if req.duration_seconds == 0 || req.duration_seconds > MAX_SILENCE {
        return Err(Error::Invalid(
            "a silence lasts from 1 second to 366 days (--for 2h)".into(),
        ));
    }
    if req.comment.trim().is_empty() || req.comment.len() > 1000 {
        return Err(Error::Invalid(
            "say why in --comment (up to 1000 characters)".into(),
        ));
    }
    let now = shared.now();
    let row = SilenceRow {
        id: crate::secrets::random_id(10),
        matchers,
        starts_at: now,
        ends_at: now + req.duration_seconds as i64,
        comment: req.comment,
        created_by: actor.label(),
    };
    shared.store.silence_insert(&row).await?;
    Ok(silence(row))
}

pub(crate) async fn list_silences(
    shared: &Shared,
    req: ListSilencesRequest,
) -> Result<ListSilencesResponse> {
    let since = if req.include_expired { 0 } else { shared.now() };
    let silences = shared.store.silences(since).await?;
    Ok(ListSilencesResponse {
        silences: silences.into_iter().map(silence).collect(),
    })
}

pub(super) async fn expire_silence(shared: &Shared, req: ExpireSilenceRequest) -> Result<Silence> {
    let row = shared.store.silence_expire(&req.id, shared.now()).await?;
    // Alerts it held back are sent at the next evaluation.
    Ok(silence(SilenceRow {
        ends_at: shared.now(),
        ..row
    }))
}
