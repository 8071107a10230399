//! `ui_sessions`: the status page's one-time sign-in links and the sessions they became. Only
//! SHA-256 hashes of the secrets are stored.

use sqlx::Row;

use super::{QueryContext, Store, StoreError};

impl Store {
    /// Records an unused one-time link for `role`, valid until `expires_at`.
    pub async fn ui_link_insert(
        &self,
        secret_hash: &str,
        role: &str,
        actor: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO ui_sessions (secret_hash, kind, role, actor, created_at, expires_at) \
             VALUES ($1, 'link', $2, $3, $4, $5)",
        )
        .bind(secret_hash)
        .bind(role)
        .bind(actor)
        .bind(now)
        .bind(expires_at)
        .execute(self.pool())
        .await
        .op("record a sign-in link")?;
        Ok(())
    }

    /// Uses a one-time link: it is gone afterwards, and its role and actor come back when it
    /// was unused and unexpired. The session it becomes is recorded under `session_hash`.
    pub async fn ui_link_redeem(
        &self,
        link_hash: &str,
        session_hash: &str,
        now: i64,
        session_expires_at: i64,
    ) -> Result<Option<(String, String)>, StoreError> {
        let op = "use a sign-in link";
        let row = sqlx::query(
            "DELETE FROM ui_sessions WHERE secret_hash = $1 AND kind = 'link' \
             RETURNING role, actor, expires_at",
        )
        .bind(link_hash)
        .fetch_optional(self.pool())
        .await
        .op(op)?;
        let Some(row) = row else { return Ok(None) };
        let expires_at: i64 = row.try_get("expires_at").op(op)?;
        if expires_at <= now {
            return Ok(None);
        }
        let role: String = row.try_get("role").op(op)?;
        let actor: String = row.try_get("actor").op(op)?;
        sqlx::query(
            "INSERT INTO ui_sessions (secret_hash, kind, role, actor, created_at, expires_at) \
             VALUES ($1, 'session', $2, $3, $4, $5)",
        )
        .bind(session_hash)
        .bind(&role)
        .bind(&actor)
        .bind(now)
        .bind(session_expires_at)
        .execute(self.pool())
        .await
        .op("record a status page session")?;
        Ok(Some((role, actor)))
    }

    /// The role and actor of an unexpired session.
    pub async fn ui_session(
        &self,
        session_hash: &str,
        now: i64,
    ) -> Result<Option<(String, String)>, StoreError> {
        let op = "read a status page session";
        let row = sqlx::query(
            "SELECT role, actor FROM ui_sessions WHERE secret_hash = $1 AND kind = 'session' \
             AND expires_at > $2",
        )
        .bind(session_hash)
        .bind(now)
        .fetch_optional(self.pool())
        .await
        .op(op)?;
        row.map(|r| Ok((r.try_get("role").op(op)?, r.try_get("actor").op(op)?)))
            .transpose()
    }

    /// Removes expired links and sessions.
    pub async fn ui_sessions_prune(&self, now: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM ui_sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(self.pool())
            .await
            .op("prune status page sessions")?;
        Ok(())
    }
}
