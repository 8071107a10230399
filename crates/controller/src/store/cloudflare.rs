//! The `cloudflare_accounts` and `cloudflare_sites` tables.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{QueryContext, Store, StoreError};

/// A Cloudflare account: its token is stored sealed, never in the clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudflareAccountRow {
    pub name: String,
    pub api_url: String,
    pub token_sealed: String,
    pub token_id: String,
    pub created_at: i64,
}

/// What gatehouse created at Cloudflare for one site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudflareSiteRow {
    pub agent_id: String,
    pub site: String,
    pub account: String,
    pub zone_id: String,
    pub zone: String,
    pub fqdn: String,
    pub proxied: bool,
    pub record_ids: Vec<String>,
    pub certificate_ids: Vec<String>,
    pub state: String,
    pub created_at: i64,
}

fn list_from(text: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        what: "id list",
        detail: e.to_string(),
    })
}

impl CloudflareSiteRow {
    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        let op = "read a Cloudflare site";
        let records: String = row.try_get("record_ids").op(op)?;
        let certs: String = row.try_get("certificate_ids").op(op)?;
        let proxied: i64 = row.try_get("proxied").op(op)?;
        Ok(Self {
            agent_id: row.try_get("agent_id").op(op)?,
            site: row.try_get("site").op(op)?,
            account: row.try_get("account").op(op)?,
            zone_id: row.try_get("zone_id").op(op)?,
            zone: row.try_get("zone").op(op)?,
            fqdn: row.try_get("fqdn").op(op)?,
            proxied: proxied != 0,
            record_ids: list_from(&records)?,
            certificate_ids: list_from(&certs)?,
            state: row.try_get("state").op(op)?,
            created_at: row.try_get("created_at").op(op)?,
        })
    }
}

impl Store {
    /// Adds an account; an existing name is an error.
    pub async fn cloudflare_account_insert(
        &self,
        a: &CloudflareAccountRow,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO cloudflare_accounts (name, api_url, token_sealed, token_id, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&a.name)
        .bind(&a.api_url)
        .bind(&a.token_sealed)
        .bind(&a.token_id)
        .bind(a.created_at)
        .execute(self.pool())
        .await
        .op("add a Cloudflare account")?;
        Ok(())
    }

    /// All accounts.
    pub async fn cloudflare_accounts(&self) -> Result<Vec<CloudflareAccountRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, api_url, token_sealed, token_id, created_at FROM cloudflare_accounts \
             ORDER BY name",
        )
        .fetch_all(self.pool())
        .await
        .op("list Cloudflare accounts")?;
        rows.iter()
            .map(|r| {
                let op = "read a Cloudflare account";
                Ok(CloudflareAccountRow {
                    name: r.try_get("name").op(op)?,
                    api_url: r.try_get("api_url").op(op)?,
                    token_sealed: r.try_get("token_sealed").op(op)?,
                    token_id: r.try_get("token_id").op(op)?,
                    created_at: r.try_get("created_at").op(op)?,
                })
            })
            .collect()
    }

    /// Records (or replaces) what was created for a site.
    pub async fn cloudflare_site_put(&self, s: &CloudflareSiteRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO cloudflare_sites (agent_id, site, account, zone_id, zone, fqdn, proxied, \
             record_ids, certificate_ids, state, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (agent_id, site) DO UPDATE SET account = $3, zone_id = $4, zone = $5, \
             fqdn = $6, proxied = $7, record_ids = $8, certificate_ids = $9, state = $10",
        )
        .bind(&s.agent_id)
        .bind(&s.site)
        .bind(&s.account)
        .bind(&s.zone_id)
        .bind(&s.zone)
        .bind(&s.fqdn)
        .bind(i64::from(s.proxied))
        .bind(serde_json::to_string(&s.record_ids).expect("strings"))
        .bind(serde_json::to_string(&s.certificate_ids).expect("strings"))
        .bind(&s.state)
        .bind(s.created_at)
        .execute(self.pool())
        .await
        .op("record a Cloudflare site")?;
        Ok(())
    }

    /// What was created for a site.
    pub async fn cloudflare_site_get(
        &self,
        agent_id: &str,
        site: &str,
    ) -> Result<Option<CloudflareSiteRow>, StoreError> {
        let row = sqlx::query(
            "SELECT agent_id, site, account, zone_id, zone, fqdn, proxied, record_ids, \
             certificate_ids, state, created_at FROM cloudflare_sites WHERE agent_id = $1 AND site = $2",
        )
        .bind(agent_id)
        .bind(site)
        .fetch_optional(self.pool())
        .await
        .op("read a Cloudflare site")?;
        row.as_ref().map(CloudflareSiteRow::from_row).transpose()
    }

    /// Every site on Cloudflare, for name collision checks.
    pub async fn cloudflare_sites(&self) -> Result<Vec<CloudflareSiteRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT agent_id, site, account, zone_id, zone, fqdn, proxied, record_ids, \
             certificate_ids, state, created_at FROM cloudflare_sites ORDER BY created_at",
        )
        .fetch_all(self.pool())
        .await
        .op("list Cloudflare sites")?;
        rows.iter().map(CloudflareSiteRow::from_row).collect()
    }

    /// Forgets a site once everything it had at Cloudflare is gone.
    pub async fn cloudflare_site_delete(
        &self,
        agent_id: &str,
        site: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM cloudflare_sites WHERE agent_id = $1 AND site = $2")
            .bind(agent_id)
            .bind(site)
            .execute(self.pool())
            .await
            .op("forget a Cloudflare site")?;
        Ok(())
    }
}
