//! The controller's store: one module over sqlx's `Any` driver, so the same queries and the same
//! migrations serve SQLite (the embedded default) and PostgreSQL (several controllers).
//!
//! One file per table. Queries use `$N` placeholders, which both backends accept; columns are
//! `TEXT` and `BIGINT` only.

mod acme;
mod agents;
mod alerts;
mod allowlists;
mod api_tokens;
mod audit;
mod cloudflare;
mod history;
mod join_tokens;
mod kv;
mod leader;
mod tunnels;
mod ui_sessions;
mod wireguard;

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Executor, SqlSafeStr};

pub use acme::{AcmeAccountRow, AcmeOrderRow, AcmeTxtRow, OrderState};
pub use agents::{AgentRow, ApplyRecord, DesiredStateRow, ItemRecord};
pub use alerts::{AlertRow, AlertState, OutboxRow, SilenceRow};
pub use allowlists::{AllowlistRow, DeviceRow, EntryRow, SightingRow};
pub use api_tokens::ApiTokenRow;
pub use audit::AuditRow;
pub use cloudflare::{CloudflareAccountRow, CloudflareSiteRow};
pub use history::SampleRow;
pub use join_tokens::{JoinTokenRow, RedeemError};
pub use leader::{Leader, LeaderJob, Leadership};
pub use tunnels::{TunnelRecord, TunnelRouteRow, TunnelRow};
pub use wireguard::{WgNetworkRow, WgPeerRow};

/// A store failure. Messages name the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {url}: {source}")]
    Open {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error while trying to {op}: {source}")]
    Query {
        op: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("stored data is corrupt ({what}): {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("{0} not found")]
    NotFound(String),
}

/// Makes the SQLite database and its `-wal` and `-shm` files 0600 whatever the umask: the file
/// is created 0600 before SQLite opens it (SQLite gives its side files the database's mode),
/// and files an earlier run left wider are narrowed.
fn sqlite_files_private(url: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:")
        .split('?')
        .next()
        .unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    let path = std::path::Path::new(path);
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    for suffix in ["", "-wal", "-shm"] {
        let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        match std::fs::metadata(&file) {
            Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Attaches the operation's name to a sqlx error.
pub(crate) trait QueryContext<T> {
    fn op(self, op: &'static str) -> Result<T, StoreError>;
}

impl<T> QueryContext<T> for Result<T, sqlx::Error> {
    fn op(self, op: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Query { op, source })
    }
}

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../migrations/0001_initial.sql"),
    ),
    (
        2,
        "apply results",
        include_str!("../../migrations/0002_apply_results.sql"),
    ),
    (
        3,
        "cloudflare",
        include_str!("../../migrations/0003_cloudflare.sql"),
    ),
    (4, "acme", include_str!("../../migrations/0004_acme.sql")),
    (
        5,
        "tunnels",
        include_str!("../../migrations/0005_tunnels.sql"),
    ),
    (
        6,
        "tunnel secret",
        include_str!("../../migrations/0006_tunnel_secret.sql"),
    ),
    (
        7,
        "allowlists",
        include_str!("../../migrations/0007_allowlists.sql"),
    ),
    (
        8,
        "wireguard",
        include_str!("../../migrations/0008_wireguard.sql"),
    ),
    (
        9,
        "alerts",
        include_str!("../../migrations/0009_alerts.sql"),
    ),
];

/// A handle to the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    /// PostgreSQL (several controllers may share it) rather than SQLite.
    postgres: bool,
}

impl Store {
    /// Opens (creating when needed) the database at `url` and applies pending migrations.
    ///
    /// `url` is `sqlite://PATH` or `postgres://…`.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let open_err = |source| StoreError::Open {
            url: redact_url(url),
            source,
        };
        let is_sqlite = url.starts_with("sqlite:");
        if is_sqlite {
            sqlite_files_private(url).map_err(|e| open_err(sqlx::Error::Io(e)))?;
        }
        let url = if is_sqlite && !url.contains('?') {
            format!("{url}?mode=rwc")
        } else {
            url.to_owned()
        };
        let options = AnyConnectOptions::from_str(&url).map_err(open_err)?;
        let pool = AnyPoolOptions::new()
            // SQLite serialises writers anyway; a small pool avoids lock contention.
            .max_connections(if is_sqlite { 4 } else { 16 })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if is_sqlite {
                        conn.execute("PRAGMA busy_timeout = 5000").await?;
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(open_err)?;
        migrator().run(&pool).await?;
        Ok(Self {
            pool,
            postgres: !is_sqlite,
        })
    }

    /// The pool, for the table modules.
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Whether this is PostgreSQL (backed up with `pg_dump`) rather than SQLite.
    pub fn is_postgres(&self) -> bool {
        self.postgres
    }

    /// Writes a consistent copy of a SQLite store to `path` (which must not exist), while it
    /// runs: SQLite's `VACUUM INTO`.
    pub async fn snapshot_into(&self, path: &std::path::Path) -> Result<(), StoreError> {
        sqlx::query("VACUUM INTO $1")
            .bind(path.display().to_string())
            .execute(&self.pool)
            .await
            .op("snapshot")?;
        Ok(())
    }

    /// SQLite's own check of every page and index: `None` when the database is sound, else
    /// what it found.
    pub async fn integrity_problems(&self) -> Result<Option<String>, StoreError> {
        use sqlx::Row;
        let rows = sqlx::query("PRAGMA integrity_check")
            .fetch_all(&self.pool)
            .await
            .op("integrity check")?;
        let found: Vec<String> = rows
            .iter()
            .filter_map(|r| r.try_get::<String, _>(0).ok())
            .collect();
        Ok((found != ["ok"]).then(|| found.join("; ")))
    }

    /// Closes every connection; pending writes are finished first.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn migrator() -> Migrator {
    let migrations = MIGRATIONS
        .iter()
        .map(|(version, description, sql)| {
            Migration::new(
                *version,
                Cow::Borrowed(*description),
                MigrationType::Simple,
                sql.into_sql_str(),
                false,
            )
        })
        .collect::<Vec<_>>();
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

/// Hides a password in a database URL so it can be shown in an error.
/// `url` with the password of its user info replaced by `***`.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Labels are stored as a JSON object.
pub(crate) fn labels_to_text(labels: &std::collections::BTreeMap<String, String>) -> String {
    serde_json::to_string(labels).expect("a map of strings always serialises")
}

pub(crate) fn labels_from_text(
    text: &str,
) -> Result<std::collections::BTreeMap<String, String>, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        what: "labels",
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://gh:secret@db:5432/gh"),
            "postgres://gh:***@db:5432/gh"
        );
        assert_eq!(
            redact_url("sqlite:///var/lib/x.db"),
            "sqlite:///var/lib/x.db"
        );
    }
}
