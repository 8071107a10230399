//! The `api_tokens` table: bearer tokens for the admin API, stored as hashes with a role.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{QueryContext, Store, StoreError};

/// An API token as stored (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTokenRow {
    pub id: String,
    pub name: String,
    pub role: String,
    pub secret_hash: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

const COLUMNS: &str = "id, name, role, secret_hash, created_at, revoked_at, last_used_at";

impl ApiTokenRow {
    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        let op = "read an API token";
        Ok(Self {
            id: row.try_get("id").op(op)?,
            name: row.try_get("name").op(op)?,
            role: row.try_get("role").op(op)?,
            secret_hash: row.try_get("secret_hash").op(op)?,
            created_at: row.try_get("created_at").op(op)?,
            revoked_at: row.try_get("revoked_at").op(op)?,
            last_used_at: row.try_get("last_used_at").op(op)?,
        })
    }
}

impl Store {
    /// Stores a new API token.
    pub async fn api_token_insert(&self, token: &ApiTokenRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_tokens (id, name, role, secret_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&token.id)
        .bind(&token.name)
        .bind(&token.role)
        .bind(&token.secret_hash)
        .bind(token.created_at)
        .execute(self.pool())
        .await
        .op("create an API token")?;
        Ok(())
    }

    /// Reads one API token.
    pub async fn api_token_get(&self, id: &str) -> Result<Option<ApiTokenRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM api_tokens WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .op("read an API token")?;
        row.as_ref().map(ApiTokenRow::from_row).transpose()
    }

    /// All API tokens, oldest first.
    pub async fn api_token_list(&self) -> Result<Vec<ApiTokenRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM api_tokens ORDER BY created_at, id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(self.pool())
            .await
            .op("list API tokens")?;
        rows.iter().map(ApiTokenRow::from_row).collect()
    }

    /// Revokes an API token; revoking twice keeps the first time.
    pub async fn api_token_revoke(&self, id: &str, now: i64) -> Result<ApiTokenRow, StoreError> {
        sqlx::query("UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .bind(now)
            .execute(self.pool())
            .await
            .op("revoke an API token")?;
        self.api_token_get(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("API token {id}")))
    }

    /// Records that a token was used (at most once a minute, to spare the database).
    pub async fn api_token_touch(&self, id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE api_tokens SET last_used_at = $2 WHERE id = $1 \
             AND (last_used_at IS NULL OR last_used_at < $2 - 60)",
        )
        .bind(id)
        .bind(now)
        .execute(self.pool())
        .await
        .op("record API token use")?;
        Ok(())
    }
}
