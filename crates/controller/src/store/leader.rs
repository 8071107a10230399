//! What controllers sharing one database coordinate with: leadership of a background job (the
//! ACME worker, the alert rules) and announcements of changes.
//! On PostgreSQL a session advisory lock, held on a connection of its own for as long as the
//! leader lives; on SQLite there is one controller per file, so it always leads.

use sqlx::{AnyConnection, Connection, Row};

use super::{QueryContext, Store, StoreError};

/// Held while this controller leads a job; dropping it (or losing its connection) ends it.
#[derive(Debug)]
pub struct Leader {
    /// Detached from the pool: when it goes, the server ends the session and the lock.
    conn: Option<AnyConnection>,
}

/// A job's advisory-lock key: "gh" + the job's own number.
fn key(job: LeaderJob) -> i64 {
    0x6768_0000_0000_0000 + job as i64
}

/// The jobs that need one leader.
#[derive(Debug, Clone, Copy)]
pub enum LeaderJob {
    Acme = 1,
    Alerts = 2,
    AllowlistSync = 3,
}

impl Store {
    /// `NOTIFY channel, payload` (PostgreSQL), delivered to every listener once committed.
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
            .execute(self.pool())
            .await
            .op("announce a change")?;
        Ok(())
    }

    /// Becomes the leader of `job` unless another controller is.
    pub async fn try_lead(&self, job: LeaderJob) -> Result<Option<Leader>, StoreError> {
        if !self.postgres {
            return Ok(Some(Leader { conn: None }));
        }
        let mut conn = self
            .pool()
            .acquire()
            .await
            .op("take a connection for leadership")?
            .detach();
        let row = sqlx::query("SELECT pg_try_advisory_lock($1) AS led")
            .bind(key(job))
            .fetch_one(&mut conn)
            .await
            .op("try the leader lock")?;
        let led: bool = row.try_get("led").op("try the leader lock")?;
        Ok(led.then_some(Leader { conn: Some(conn) }))
    }
}

impl Leader {
    /// Whether this controller still leads (its lock's connection is alive).
    pub async fn still(&mut self) -> bool {
        match &mut self.conn {
            None => true,
            Some(conn) => conn.ping().await.is_ok(),
        }
    }
}
