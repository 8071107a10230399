//! The `audit_log` table: every mutating admin call, who made it and how it ended.

use sqlx::Row;

use super::{QueryContext, Store, StoreError};

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub result: String,
}

impl Store {
    /// Appends an entry. `id` must be unique (a random id).
    pub async fn audit_insert(&self, id: &str, entry: &AuditRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_log (id, at_ms, actor, action, target, result) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(entry.at_ms)
        .bind(&entry.actor)
        .bind(&entry.action)
        .bind(&entry.target)
        .bind(&entry.result)
        .execute(self.pool())
        .await
        .op("write the audit log")?;
        Ok(())
    }

    /// The newest `limit` entries, oldest first.
    pub async fn audit_list(&self, limit: u32) -> Result<Vec<AuditRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT at_ms, actor, action, target, result FROM audit_log \
             ORDER BY at_ms DESC, id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .op("read the audit log")?;
        let mut entries = rows
            .iter()
            .map(|r| {
                Ok(AuditRow {
                    at_ms: r.try_get("at_ms").op("read the audit log")?,
                    actor: r.try_get("actor").op("read the audit log")?,
                    action: r.try_get("action").op("read the audit log")?,
                    target: r.try_get("target").op("read the audit log")?,
                    result: r.try_get("result").op("read the audit log")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        entries.reverse();
        Ok(entries)
    }
}
