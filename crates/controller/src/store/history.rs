//! A host's history: `host_samples` (its reported metrics over time, for charts and the
//! disk-fill prediction) and `apply_history` (each generation's latest result).

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{ApplyRecord, QueryContext, Store, StoreError};

/// One sample of a host's metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRow {
    pub agent_id: String,
    pub at: i64,
    pub cpu_percent: f64,
    pub memory_used: u64,
    pub memory_total: u64,
    /// The fullest filesystem (least free share).
    pub disk_mount: String,
    pub disk_free: u64,
    pub disk_total: u64,
}

fn to_db(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn from_db(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl SampleRow {
    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        let op = "read a host sample";
        let cpu: i64 = row.try_get("cpu").op(op)?;
        Ok(Self {
            agent_id: row.try_get("agent_id").op(op)?,
            at: row.try_get("at").op(op)?,
            cpu_percent: cpu as f64 / 100.0,
            memory_used: from_db(row.try_get("memory_used").op(op)?),
            memory_total: from_db(row.try_get("memory_total").op(op)?),
            disk_mount: row.try_get("disk_mount").op(op)?,
            disk_free: from_db(row.try_get("disk_free").op(op)?),
            disk_total: from_db(row.try_get("disk_total").op(op)?),
        })
    }
}

impl Store {
    /// Records a sample (a second one at the same time replaces the first).
    pub async fn sample_insert(&self, s: &SampleRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO host_samples (agent_id, at, cpu, memory_used, memory_total, disk_mount, \
             disk_free, disk_total) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (agent_id, at) DO UPDATE SET cpu = $3, memory_used = $4, \
             memory_total = $5, disk_mount = $6, disk_free = $7, disk_total = $8",
        )
        .bind(&s.agent_id)
        .bind(s.at)
        .bind((s.cpu_percent * 100.0).round() as i64)
        .bind(to_db(s.memory_used))
        .bind(to_db(s.memory_total))
        .bind(&s.disk_mount)
        .bind(to_db(s.disk_free))
        .bind(to_db(s.disk_total))
        .execute(self.pool())
        .await
        .op("record a host sample")?;
        Ok(())
    }

    /// One host's samples since `since`, oldest first.
    pub async fn samples(&self, agent_id: &str, since: i64) -> Result<Vec<SampleRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT agent_id, at, cpu, memory_used, memory_total, disk_mount, disk_free, \
             disk_total FROM host_samples WHERE agent_id = $1 AND at >= $2 ORDER BY at",
        )
        .bind(agent_id)
        .bind(since)
        .fetch_all(self.pool())
        .await
        .op("read host samples")?;
        rows.iter().map(SampleRow::from_row).collect()
    }

    /// Removes samples older than `before`.
    pub async fn samples_prune(&self, before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM host_samples WHERE at < $1")
            .bind(before)
            .execute(self.pool())
            .await
            .op("prune host samples")?;
        Ok(done.rows_affected())
    }

    /// Records the result of `record.generation` (a later one for the same generation wins).
    pub async fn apply_history_put(
        &self,
        agent_id: &str,
        record: &ApplyRecord,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(record).expect("apply records serialise");
        sqlx::query(
            "INSERT INTO apply_history (agent_id, generation, at, record) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (agent_id, generation) DO UPDATE SET at = $3, record = $4",
        )
        .bind(agent_id)
        .bind(i64::try_from(record.generation).unwrap_or(i64::MAX))
        .bind(record.at)
        .bind(json)
        .execute(self.pool())
        .await
        .op("record a generation's result")?;
        Ok(())
    }

    /// A host's newest `limit` generation results, newest first.
    pub async fn apply_history(
        &self,
        agent_id: &str,
        limit: u32,
    ) -> Result<Vec<ApplyRecord>, StoreError> {
        let op = "read generation results";
        let rows = sqlx::query(
            "SELECT record FROM apply_history WHERE agent_id = $1 ORDER BY generation DESC \
             LIMIT $2",
        )
        .bind(agent_id)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .op(op)?;
        rows.iter()
            .map(|r| {
                let text: String = r.try_get("record").op(op)?;
                serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
                    what: "generation result",
                    detail: e.to_string(),
                })
            })
            .collect()
    }

    /// Removes generation results recorded before `before`, except each host's newest.
    pub async fn apply_history_prune(&self, before: i64) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM apply_history WHERE at < $1 AND generation < \
             (SELECT MAX(h.generation) FROM apply_history h WHERE h.agent_id = apply_history.agent_id)",
        )
            .bind(before)
            .execute(self.pool())
            .await
            .op("prune generation results")?;
        Ok(())
    }
}
