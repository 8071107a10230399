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

/// A job's leadership as its loop sees it: whether this controller leads now, asking for the
/// lock at most every `follow` while another controller holds it.
#[derive(Debug)]
pub struct Leadership {
    job: LeaderJob,
    follow: std::time::Duration,
    leader: Option<Leader>,
    asked: Option<tokio::time::Instant>,
}

impl Leadership {
    pub fn new(job: LeaderJob, follow: std::time::Duration) -> Self {
        Self {
            job,
            follow,
            leader: None,
            asked: None,
        }
    }

    /// Whether this controller leads `job` now (taking the lock when it is free).
    pub async fn leads(&mut self, store: &Store) -> bool {
        if let Some(l) = &mut self.leader {
            if l.still().await {
                return true;
            }
            tracing::warn!(job = ?self.job, "lost the leader lock");
            self.leader = None;
        }
        if self.asked.is_some_and(|t| t.elapsed() < self.follow) {
            return false;
        }
        self.asked = Some(tokio::time::Instant::now());
        match store.try_lead(self.job).await {
            Ok(Some(l)) => {
                tracing::info!(job = ?self.job, "this controller now leads the job");
                self.leader = Some(l);
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(job = ?self.job, "cannot take the leader lock: {e}");
                false
            }
        }
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
