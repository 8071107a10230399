//! The `kv` table: small named values such as the CA certificate and its sealed key.

use super::{QueryContext, Store, StoreError};
use sqlx::Row;

impl Store {
    /// Reads a value by name.
    pub async fn kv_get(&self, name: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT value FROM kv WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await
            .op("read a stored value")?;
        row.map(|r| r.try_get::<String, _>(0))
            .transpose()
            .op("read a stored value")
    }

    /// Stores `value` under `name` unless a value is there already, and returns the value that is
    /// stored afterwards (so two controllers starting at once agree on one).
    pub async fn kv_insert_if_absent(
        &self,
        name: &str,
        value: &str,
        now: i64,
    ) -> Result<String, StoreError> {
        sqlx::query(
            "INSERT INTO kv (name, value, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(value)
        .bind(now)
        .execute(self.pool())
        .await
        .op("store a value")?;
        self.kv_get(name)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("stored value {name}")))
    }

    /// Writes one small row: whether the store takes writes (for `/healthz` and gRPC health).
    pub async fn probe_write(&self, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO kv (name, value, updated_at) VALUES ('health-probe', '', $1) \
             ON CONFLICT (name) DO UPDATE SET updated_at = $1",
        )
        .bind(now)
        .execute(self.pool())
        .await
        .op("write to the store")?;
        Ok(())
    }
}
