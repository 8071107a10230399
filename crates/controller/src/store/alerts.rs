//! The alert tables: each alert's state, silences, and the outbox of notifications not yet
//! delivered.

use std::collections::BTreeMap;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{QueryContext, Store, StoreError, labels_from_text, labels_to_text};

/// Where an alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertState {
    /// The condition holds, for less than the rule's `for`.
    Pending,
    Firing,
    /// It held and no longer does.
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "pending" => Ok(Self::Pending),
            "firing" => Ok(Self::Firing),
            "resolved" => Ok(Self::Resolved),
            other => Err(StoreError::Corrupt {
                what: "alert state",
                detail: format!("{other:?}"),
            }),
        }
    }
}

/// One alert: a rule and a label set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRow {
    pub fingerprint: String,
    pub rule: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub severity: String,
    pub state: AlertState,
    pub active_since: i64,
    /// 0 while pending.
    pub fired_at: i64,
    /// 0 while the condition holds.
    pub resolved_at: i64,
    /// What the receivers were last told: "", "firing" or "resolved".
    pub notified: String,
}

/// A silence: alerts carrying every matcher's label and value are not sent while it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SilenceRow {
    pub id: String,
    pub matchers: BTreeMap<String, String>,
    pub starts_at: i64,
    pub ends_at: i64,
    pub comment: String,
    pub created_by: String,
}

impl SilenceRow {
    /// Whether it holds at `now` and matches `labels`.
    pub fn silences(&self, labels: &BTreeMap<String, String>, now: i64) -> bool {
        self.starts_at <= now
            && now < self.ends_at
            && self
                .matchers
                .iter()
                .all(|(k, v)| labels.get(k).is_some_and(|l| l == v))
    }
}

/// A notification waiting for its receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub receiver: String,
    pub fingerprint: String,
    pub version: String,
    pub body: String,
    pub attempts: u32,
    pub next_at: i64,
    pub last_error: String,
    pub queued_at: i64,
}

macro_rules! alert_columns {
    () => {
        "fingerprint, rule, labels, annotations, severity, state, active_since, fired_at, \
         resolved_at, notified"
    };
}

macro_rules! silence_columns {
    () => {
        "id, matchers, starts_at, ends_at, comment, created_by"
    };
}

macro_rules! outbox_columns {
    () => {
        "receiver, fingerprint, version, body, attempts, next_at, last_error, queued_at"
    };
}

impl AlertRow {
    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        let op = "read an alert";
        Ok(Self {
            fingerprint: row.try_get("fingerprint").op(op)?,
            rule: row.try_get("rule").op(op)?,
            labels: labels_from_text(&row.try_get::<String, _>("labels").op(op)?)?,
            annotations: labels_from_text(&row.try_get::<String, _>("annotations").op(op)?)?,
            severity: row.try_get("severity").op(op)?,
            state: AlertState::parse(&row.try_get::<String, _>("state").op(op)?)?,
            active_since: row.try_get("active_since").op(op)?,
            fired_at: row.try_get("fired_at").op(op)?,
            resolved_at: row.try_get("resolved_at").op(op)?,
            notified: row.try_get("notified").op(op)?,
        })
    }
}

impl SilenceRow {
    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        let op = "read a silence";
        Ok(Self {
            id: row.try_get("id").op(op)?,
            matchers: labels_from_text(&row.try_get::<String, _>("matchers").op(op)?)?,
            starts_at: row.try_get("starts_at").op(op)?,
            ends_at: row.try_get("ends_at").op(op)?,
            comment: row.try_get("comment").op(op)?,
            created_by: row.try_get("created_by").op(op)?,
        })
    }
}

impl OutboxRow {
    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        let op = "read a queued notification";
        let attempts: i64 = row.try_get("attempts").op(op)?;
        Ok(Self {
            receiver: row.try_get("receiver").op(op)?,
            fingerprint: row.try_get("fingerprint").op(op)?,
            version: row.try_get("version").op(op)?,
            body: row.try_get("body").op(op)?,
            attempts: attempts.clamp(0, u32::MAX.into()) as u32,
            next_at: row.try_get("next_at").op(op)?,
            last_error: row.try_get("last_error").op(op)?,
            queued_at: row.try_get("queued_at").op(op)?,
        })
    }
}

impl Store {
    /// Every alert, oldest first.
    pub async fn alerts(&self) -> Result<Vec<AlertRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            alert_columns!(),
            " FROM alerts ORDER BY active_since, fingerprint"
        ))
        .fetch_all(self.pool())
        .await
        .op("list alerts")?;
        rows.iter().map(AlertRow::from_row).collect()
    }

    /// Writes an alert as it stands now.
    pub async fn alert_put(&self, a: &AlertRow) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "INSERT INTO alerts (",
            alert_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (fingerprint) DO UPDATE SET labels = $3, annotations = $4, \
             severity = $5, state = $6, active_since = $7, fired_at = $8, resolved_at = $9, \
             notified = $10"
        ))
        .bind(&a.fingerprint)
        .bind(&a.rule)
        .bind(labels_to_text(&a.labels))
        .bind(labels_to_text(&a.annotations))
        .bind(&a.severity)
        .bind(a.state.as_str())
        .bind(a.active_since)
        .bind(a.fired_at)
        .bind(a.resolved_at)
        .bind(&a.notified)
        .execute(self.pool())
        .await
        .op("record an alert")?;
        Ok(())
    }

    /// Forgets an alert (a pending one whose condition cleared, an old resolved one).
    pub async fn alert_delete(&self, fingerprint: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM alerts WHERE fingerprint = $1")
            .bind(fingerprint)
            .execute(self.pool())
            .await
            .op("forget an alert")?;
        Ok(())
    }

    /// Records a silence.
    pub async fn silence_insert(&self, s: &SilenceRow) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "INSERT INTO alert_silences (",
            silence_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6)"
        ))
        .bind(&s.id)
        .bind(labels_to_text(&s.matchers))
        .bind(s.starts_at)
        .bind(s.ends_at)
        .bind(&s.comment)
        .bind(&s.created_by)
        .execute(self.pool())
        .await
        .op("record a silence")?;
        Ok(())
    }

    /// Silences that end after `since`, soonest ending first.
    pub async fn silences(&self, since: i64) -> Result<Vec<SilenceRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            silence_columns!(),
            " FROM alert_silences WHERE ends_at > $1 ORDER BY ends_at, id"
        ))
        .bind(since)
        .fetch_all(self.pool())
        .await
        .op("list silences")?;
        rows.iter().map(SilenceRow::from_row).collect()
    }

    /// Ends a silence at `now`; the silence as it was, or `NotFound`.
    pub async fn silence_expire(&self, id: &str, now: i64) -> Result<SilenceRow, StoreError> {
        let row = sqlx::query(concat!(
            "UPDATE alert_silences SET ends_at = $2 WHERE id = $1 AND ends_at > $2 RETURNING ",
            silence_columns!()
        ))
        .bind(id)
        .bind(now)
        .fetch_optional(self.pool())
        .await
        .op("expire a silence")?;
        row.as_ref()
            .map(SilenceRow::from_row)
            .transpose()?
            .ok_or_else(|| StoreError::NotFound(format!("active silence {id}")))
    }

    /// Removes silences that ended before `before`.
    pub async fn silences_prune(&self, before: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM alert_silences WHERE ends_at < $1")
            .bind(before)
            .execute(self.pool())
            .await
            .op("prune silences")?;
        Ok(())
    }

    /// Queues `body` for `receiver`, replacing what was queued for the same alert.
    pub async fn outbox_put(
        &self,
        receiver: &str,
        fingerprint: &str,
        body: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "INSERT INTO alert_outbox (",
            outbox_columns!(),
            ") VALUES ($1, $2, $3, $4, 0, $5, '', $5) \
             ON CONFLICT (receiver, fingerprint) DO UPDATE SET version = $3, body = $4, \
             attempts = 0, next_at = $5, last_error = '', queued_at = $5"
        ))
        .bind(receiver)
        .bind(fingerprint)
        .bind(crate::secrets::random_id(16))
        .bind(body)
        .bind(now)
        .execute(self.pool())
        .await
        .op("queue a notification")?;
        Ok(())
    }

    /// Every queued notification, due first.
    pub async fn outbox(&self) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            outbox_columns!(),
            " FROM alert_outbox ORDER BY next_at, queued_at"
        ))
        .fetch_all(self.pool())
        .await
        .op("list queued notifications")?;
        rows.iter().map(OutboxRow::from_row).collect()
    }

    /// A notification was delivered: removed unless a newer version was queued meanwhile.
    pub async fn outbox_done(&self, n: &OutboxRow) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM alert_outbox WHERE receiver = $1 AND fingerprint = $2 AND version = $3",
        )
        .bind(&n.receiver)
        .bind(&n.fingerprint)
        .bind(&n.version)
        .execute(self.pool())
        .await
        .op("remove a delivered notification")?;
        Ok(())
    }

    /// A delivery failed: tried again at `next_at`.
    pub async fn outbox_failed(
        &self,
        n: &OutboxRow,
        next_at: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE alert_outbox SET attempts = attempts + 1, next_at = $4, last_error = $5 \
             WHERE receiver = $1 AND fingerprint = $2 AND version = $3",
        )
        .bind(&n.receiver)
        .bind(&n.fingerprint)
        .bind(&n.version)
        .bind(next_at)
        .bind(error)
        .execute(self.pool())
        .await
        .op("record a failed notification")?;
        Ok(())
    }
}
