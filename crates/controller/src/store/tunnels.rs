//! The `tunnels` table: each tunnel on a host and what gatehouse made for it at Cloudflare.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{QueryContext, Store, StoreError};

/// One route as it was asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelRouteRow {
    pub hostname: String,
    /// `scheme://host[:port]`, `http_status:NNN` or `site:NAME`.
    pub service: String,
    #[serde(default)]
    pub no_tls_verify: bool,
    #[serde(default)]
    pub http_host_header: String,
    #[serde(default)]
    pub origin_server_name: String,
    /// Seconds; 0 for cloudflared's default.
    #[serde(default)]
    pub connect_timeout: u64,
}

/// A DNS record gatehouse created for a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelRecord {
    pub zone_id: String,
    pub record_id: String,
}

/// A tunnel and what was made for it; recorded before each next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelRow {
    pub agent_id: String,
    pub name: String,
    pub account: String,
    pub cloudflare_account_id: String,
    /// Empty until the tunnel exists at Cloudflare.
    pub tunnel_id: String,
    /// Sealed with the master key; empty until known.
    pub token_sealed: String,
    /// SHA-256 (hex) of the secret gatehouse gave the tunnel: proof that a tunnel of this name
    /// at Cloudflare is the one it made.
    pub secret_sha256: String,
    pub routes: Vec<TunnelRouteRow>,
    /// Hostname → the CNAME gatehouse created for it.
    pub records: BTreeMap<String, TunnelRecord>,
    pub config_version: u64,
    pub state: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The columns, in one order for every query (static SQL: `concat!`).
macro_rules! columns {
    () => {
        "agent_id, name, account, cloudflare_account_id, tunnel_id, token_sealed, routes, \
         records, config_version, state, created_at, updated_at, secret_sha256"
    };
}

fn json<T: serde::de::DeserializeOwned>(text: &str, what: &'static str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        what,
        detail: e.to_string(),
    })
}

impl TunnelRow {
    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        let op = "read a tunnel";
        let routes: String = row.try_get("routes").op(op)?;
        let records: String = row.try_get("records").op(op)?;
        let version: i64 = row.try_get("config_version").op(op)?;
        Ok(Self {
            agent_id: row.try_get("agent_id").op(op)?,
            name: row.try_get("name").op(op)?,
            account: row.try_get("account").op(op)?,
            cloudflare_account_id: row.try_get("cloudflare_account_id").op(op)?,
            tunnel_id: row.try_get("tunnel_id").op(op)?,
            token_sealed: row.try_get("token_sealed").op(op)?,
            secret_sha256: row.try_get("secret_sha256").op(op)?,
            routes: json(&routes, "tunnel routes")?,
            records: json(&records, "tunnel records")?,
            config_version: version.max(0) as u64,
            state: row.try_get("state").op(op)?,
            created_at: row.try_get("created_at").op(op)?,
            updated_at: row.try_get("updated_at").op(op)?,
        })
    }
}

impl Store {
    /// Records (or replaces) a tunnel's row.
    pub async fn tunnel_put(&self, t: &TunnelRow) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "INSERT INTO tunnels (",
            columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             ON CONFLICT (agent_id, name) DO UPDATE SET account = $3, cloudflare_account_id = $4, \
             tunnel_id = $5, token_sealed = $6, routes = $7, records = $8, config_version = $9, \
             state = $10, updated_at = $12, secret_sha256 = $13"
        ))
        .bind(&t.agent_id)
        .bind(&t.name)
        .bind(&t.account)
        .bind(&t.cloudflare_account_id)
        .bind(&t.tunnel_id)
        .bind(&t.token_sealed)
        .bind(serde_json::to_string(&t.routes).expect("routes serialise"))
        .bind(serde_json::to_string(&t.records).expect("records serialise"))
        .bind(t.config_version as i64)
        .bind(&t.state)
        .bind(t.created_at)
        .bind(t.updated_at)
        .bind(&t.secret_sha256)
        .execute(self.pool())
        .await
        .op("record a tunnel")?;
        Ok(())
    }

    /// One tunnel of an agent.
    pub async fn tunnel_get(
        &self,
        agent_id: &str,
        name: &str,
    ) -> Result<Option<TunnelRow>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM tunnels WHERE agent_id = $1 AND name = $2"
        ))
        .bind(agent_id)
        .bind(name)
        .fetch_optional(self.pool())
        .await
        .op("read a tunnel")?;
        row.as_ref().map(TunnelRow::from_row).transpose()
    }

    /// Every tunnel, or one agent's.
    pub async fn tunnels(&self, agent_id: Option<&str>) -> Result<Vec<TunnelRow>, StoreError> {
        let rows = match agent_id {
            Some(id) => {
                sqlx::query(concat!(
                    "SELECT ",
                    columns!(),
                    " FROM tunnels WHERE agent_id = $1 ORDER BY name"
                ))
                .bind(id)
                .fetch_all(self.pool())
                .await
            }
            None => {
                sqlx::query(concat!(
                    "SELECT ",
                    columns!(),
                    " FROM tunnels ORDER BY agent_id, name"
                ))
                .fetch_all(self.pool())
                .await
            }
        }
        .op("list tunnels")?;
        rows.iter().map(TunnelRow::from_row).collect()
    }

    /// Forgets a tunnel once everything it had at Cloudflare and on its host is gone.
    pub async fn tunnel_delete(&self, agent_id: &str, name: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM tunnels WHERE agent_id = $1 AND name = $2")
            .bind(agent_id)
            .bind(name)
            .execute(self.pool())
            .await
            .op("forget a tunnel")?;
        Ok(())
    }
}
