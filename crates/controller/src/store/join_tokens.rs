//! The `join_tokens` table: one-time enrollment tokens, stored as hashes.

use std::collections::BTreeMap;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{QueryContext, Store, StoreError, labels_from_text, labels_to_text};

/// A join token as stored (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinTokenRow {
    pub id: String,
    pub secret_hash: String,
    pub labels: BTreeMap<String, String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    pub used_by: Option<String>,
    pub revoked_at: Option<i64>,
}

impl JoinTokenRow {
    /// "valid", "used", "expired" or "revoked" at time `now`.
    pub fn state(&self, now: i64) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.used_at.is_some() {
            "used"
        } else if self.expires_at <= now {
            "expired"
        } else {
            "valid"
        }
    }

    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        let labels: String = row.try_get("labels").op("read a join token")?;
        Ok(Self {
            id: row.try_get("id").op("read a join token")?,
            secret_hash: row.try_get("secret_hash").op("read a join token")?,
            labels: labels_from_text(&labels)?,
            created_at: row.try_get("created_at").op("read a join token")?,
            expires_at: row.try_get("expires_at").op("read a join token")?,
            used_at: row.try_get("used_at").op("read a join token")?,
            used_by: row.try_get("used_by").op("read a join token")?,
            revoked_at: row.try_get("revoked_at").op("read a join token")?,
        })
    }
}

/// Why a join token was not accepted. The messages are shown to the enrolling agent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RedeemError {
    #[error("unknown join token: ask an operator for a new one (gatehousectl token create)")]
    Unknown,
    #[error("this join token was already used: tokens work once; create a new one")]
    Used,
    #[error("this join token has expired: create a new one (gatehousectl token create)")]
    Expired,
    #[error("this join token was revoked: create a new one (gatehousectl token create)")]
    Revoked,
}

const COLUMNS: &str =
    "id, secret_hash, labels, created_at, expires_at, used_at, used_by, revoked_at";

impl Store {
    /// Stores a new join token.
    pub async fn join_token_insert(&self, token: &JoinTokenRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO join_tokens (id, secret_hash, labels, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&token.id)
        .bind(&token.secret_hash)
        .bind(labels_to_text(&token.labels))
        .bind(token.created_at)
        .bind(token.expires_at)
        .execute(self.pool())
        .await
        .op("create a join token")?;
        Ok(())
    }

    /// Reads one join token.
    pub async fn join_token_get(&self, id: &str) -> Result<Option<JoinTokenRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM join_tokens WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .op("read a join token")?;
        row.as_ref().map(JoinTokenRow::from_row).transpose()
    }

    /// All join tokens, newest first.
    pub async fn join_token_list(&self) -> Result<Vec<JoinTokenRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM join_tokens ORDER BY created_at DESC, id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(self.pool())
            .await
            .op("list join tokens")?;
        rows.iter().map(JoinTokenRow::from_row).collect()
    }

    /// Revokes a join token; revoking twice keeps the first time.
    pub async fn join_token_revoke(&self, id: &str, now: i64) -> Result<JoinTokenRow, StoreError> {
        sqlx::query("UPDATE join_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .bind(now)
            .execute(self.pool())
            .await
            .op("revoke a join token")?;
        self.join_token_get(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("join token {id}")))
    }
}

/// Marks a token used inside an enrollment transaction. Only one caller can win: the update
/// only matches an unused, unrevoked, unexpired token.
pub(super) async fn redeem(
    tx: &mut sqlx::AnyConnection,
    id: &str,
    agent_id: &str,
    now: i64,
) -> Result<Result<(), RedeemError>, StoreError> {
    let done = sqlx::query(
        "UPDATE join_tokens SET used_at = $2, used_by = $3 \
         WHERE id = $1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $2",
    )
    .bind(id)
    .bind(now)
    .bind(agent_id)
    .execute(&mut *tx)
    .await
    .op("redeem a join token")?;
    if done.rows_affected() == 1 {
        return Ok(Ok(()));
    }
    let sql = format!("SELECT {COLUMNS} FROM join_tokens WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .op("read a join token")?;
    let Some(row) = row.as_ref().map(JoinTokenRow::from_row).transpose()? else {
        return Ok(Err(RedeemError::Unknown));
    };
    Ok(Err(match row.state(now) {
        "revoked" => RedeemError::Revoked,
        "used" => RedeemError::Used,
        _ => RedeemError::Expired,
    }))
}
