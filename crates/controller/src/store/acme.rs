//! The `acme_accounts`, `acme_orders` and `acme_txt_records` tables.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{QueryContext, Store, StoreError};

/// An ACME account; its key and EAB secret are stored sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeAccountRow {
    pub name: String,
    pub directory_url: String,
    pub email: String,
    pub credentials_sealed: String,
    pub eab_kid: String,
    pub eab_hmac_sealed: String,
    pub ca_roots: String,
    pub created_at: i64,
}

/// Where an order is. Each state is persisted before the work of the next one starts, so a
/// restarted controller picks the order up where it stood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderState {
    /// Waiting to be placed at the CA (or to be tried again after a failure's backoff).
    Pending,
    /// Publishing the DNS-01 TXT records and waiting until the zone's DNS answers them.
    Presenting,
    /// The CA is validating the challenges.
    Validating,
    /// The CSR is sent; waiting for the certificate.
    Finalizing,
    Issued,
    /// The last attempt failed; `next_attempt_at` says when the next one starts.
    Failed,
    /// Issued, then revoked at the CA.
    Revoked,
}

impl OrderState {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::Pending => "pending",
            OrderState::Presenting => "presenting",
            OrderState::Validating => "validating",
            OrderState::Finalizing => "finalizing",
            OrderState::Issued => "issued",
            OrderState::Failed => "failed",
            OrderState::Revoked => "revoked",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        Ok(match text {
            "pending" => OrderState::Pending,
            "presenting" => OrderState::Presenting,
            "validating" => OrderState::Validating,
            "finalizing" => OrderState::Finalizing,
            "issued" => OrderState::Issued,
            "failed" => OrderState::Failed,
            "revoked" => OrderState::Revoked,
            other => {
                return Err(StoreError::Corrupt {
                    what: "ACME order state",
                    detail: other.to_owned(),
                });
            }
        })
    }

    /// Whether the worker still has something to do.
    pub fn is_active(self) -> bool {
        !matches!(self, OrderState::Issued | OrderState::Revoked)
    }
}

impl std::fmt::Display for OrderState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One order: a host's CSR for one revision of one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeOrderRow {
    pub id: String,
    pub agent_id: String,
    pub certificate: String,
    pub revision: u64,
    pub account: String,
    pub domains: Vec<String>,
    /// The CSR, DER.
    pub csr: Vec<u8>,
    pub csr_sha256: String,
    pub state: OrderState,
    pub order_url: String,
    pub last_error: String,
    pub failures: u32,
    pub next_attempt_at: i64,
    pub chain_pem: String,
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
    /// When an issued certificate is renewed (0: not decided yet).
    pub renew_at: i64,
    /// How `renew_at` was decided: "ari" or "lifetime".
    pub renewal: String,
    /// When the CA's renewal information is asked again (ARI's Retry-After).
    pub recheck_at: i64,
    /// A renewal replaced it.
    pub superseded: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A DNS-01 TXT record gatehouse published (or was about to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeTxtRow {
    pub order_id: String,
    pub cloudflare_account: String,
    pub zone_id: String,
    pub name: String,
    pub content: String,
    pub record_id: String,
    pub created_at: i64,
}

const ORDER_COLUMNS: &str = "id, agent_id, certificate, revision, account, domains, csr, \
     csr_sha256, state, order_url, last_error, failures, next_attempt_at, chain_pem, serial, \
     not_before, not_after, renew_at, renewal, recheck_at, superseded, created_at, updated_at";

/// Binds an order's progress columns, in the order both writes list them.
fn bind_progress<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    o: &'q AcmeOrderRow,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    query
        .bind(o.state.as_str())
        .bind(&o.order_url)
        .bind(&o.last_error)
        .bind(i64::from(o.failures))
        .bind(o.next_attempt_at)
        .bind(&o.chain_pem)
        .bind(&o.serial)
        .bind(o.not_before)
        .bind(o.not_after)
        .bind(o.renew_at)
        .bind(&o.renewal)
        .bind(o.recheck_at)
        .bind(i64::from(o.superseded))
        .bind(o.updated_at)
}

impl AcmeOrderRow {
    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        use base64::Engine;
        let op = "read an ACME order";
        let domains: String = row.try_get("domains").op(op)?;
        let csr: String = row.try_get("csr").op(op)?;
        let state: String = row.try_get("state").op(op)?;
        let revision: i64 = row.try_get("revision").op(op)?;
        let failures: i64 = row.try_get("failures").op(op)?;
        Ok(Self {
            id: row.try_get("id").op(op)?,
            agent_id: row.try_get("agent_id").op(op)?,
            certificate: row.try_get("certificate").op(op)?,
            revision: revision as u64,
            account: row.try_get("account").op(op)?,
            domains: serde_json::from_str(&domains).map_err(|e| StoreError::Corrupt {
                what: "ACME order domains",
                detail: e.to_string(),
            })?,
            csr: base64::engine::general_purpose::STANDARD
                .decode(csr)
                .map_err(|e| StoreError::Corrupt {
                    what: "ACME order CSR",
                    detail: e.to_string(),
                })?,
            csr_sha256: row.try_get("csr_sha256").op(op)?,
            state: OrderState::parse(&state)?,
            order_url: row.try_get("order_url").op(op)?,
            last_error: row.try_get("last_error").op(op)?,
            failures: failures as u32,
            next_attempt_at: row.try_get("next_attempt_at").op(op)?,
            chain_pem: row.try_get("chain_pem").op(op)?,
            serial: row.try_get("serial").op(op)?,
            not_before: row.try_get("not_before").op(op)?,
            not_after: row.try_get("not_after").op(op)?,
            renew_at: row.try_get("renew_at").op(op)?,
            renewal: row.try_get("renewal").op(op)?,
            recheck_at: row.try_get("recheck_at").op(op)?,
            superseded: row.try_get::<i64, _>("superseded").op(op)? != 0,
            created_at: row.try_get("created_at").op(op)?,
            updated_at: row.try_get("updated_at").op(op)?,
        })
    }
}

fn account_from(r: &AnyRow) -> Result<AcmeAccountRow, StoreError> {
    let op = "read an ACME account";
    Ok(AcmeAccountRow {
        name: r.try_get("name").op(op)?,
        directory_url: r.try_get("directory_url").op(op)?,
        email: r.try_get("email").op(op)?,
        credentials_sealed: r.try_get("credentials_sealed").op(op)?,
        eab_kid: r.try_get("eab_kid").op(op)?,
        eab_hmac_sealed: r.try_get("eab_hmac_sealed").op(op)?,
        ca_roots: r.try_get("ca_roots").op(op)?,
        created_at: r.try_get("created_at").op(op)?,
    })
}

impl Store {
    /// Adds an account; an existing name is an error.
    pub async fn acme_account_insert(&self, a: &AcmeAccountRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO acme_accounts (name, directory_url, email, credentials_sealed, eab_kid, \
             eab_hmac_sealed, ca_roots, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&a.name)
        .bind(&a.directory_url)
        .bind(&a.email)
        .bind(&a.credentials_sealed)
        .bind(&a.eab_kid)
        .bind(&a.eab_hmac_sealed)
        .bind(&a.ca_roots)
        .bind(a.created_at)
        .execute(self.pool())
        .await
        .op("add an ACME account")?;
        Ok(())
    }

    /// All accounts, by name.
    pub async fn acme_accounts(&self) -> Result<Vec<AcmeAccountRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, directory_url, email, credentials_sealed, eab_kid, eab_hmac_sealed, \
             ca_roots, created_at FROM acme_accounts ORDER BY name",
        )
        .fetch_all(self.pool())
        .await
        .op("list ACME accounts")?;
        rows.iter().map(account_from).collect()
    }

    /// One account.
    pub async fn acme_account(&self, name: &str) -> Result<Option<AcmeAccountRow>, StoreError> {
        let row = sqlx::query(
            "SELECT name, directory_url, email, credentials_sealed, eab_kid, eab_hmac_sealed, \
             ca_roots, created_at FROM acme_accounts WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(self.pool())
        .await
        .op("read an ACME account")?;
        row.as_ref().map(account_from).transpose()
    }

    /// Adds an order.
    pub async fn acme_order_insert(&self, o: &AcmeOrderRow) -> Result<(), StoreError> {
        use base64::Engine;
        let query = sqlx::query(
            "INSERT INTO acme_orders (id, agent_id, certificate, revision, account, domains, \
             csr, csr_sha256, created_at, state, order_url, last_error, failures, \
             next_attempt_at, chain_pem, serial, not_before, not_after, renew_at, renewal, \
             recheck_at, superseded, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
             $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23)",
        )
        .bind(&o.id)
        .bind(&o.agent_id)
        .bind(&o.certificate)
        .bind(o.revision as i64)
        .bind(&o.account)
        .bind(serde_json::to_string(&o.domains).expect("serialisable"))
        .bind(base64::engine::general_purpose::STANDARD.encode(&o.csr))
        .bind(&o.csr_sha256)
        .bind(o.created_at);
        bind_progress(query, o)
            .execute(self.pool())
            .await
            .op("add an ACME order")?;
        Ok(())
    }

    /// Saves an order's progress (everything but its identity and CSR). An order deleted
    /// meanwhile (replaced by a newer CSR) stays deleted.
    pub async fn acme_order_update(&self, o: &AcmeOrderRow) -> Result<(), StoreError> {
        let query = sqlx::query(
            "UPDATE acme_orders SET state = $2, order_url = $3, last_error = $4, failures = $5, \
             next_attempt_at = $6, chain_pem = $7, serial = $8, not_before = $9, \
             not_after = $10, renew_at = $11, renewal = $12, recheck_at = $13, \
             superseded = $14, updated_at = $15 WHERE id = $1",
        )
        .bind(&o.id);
        bind_progress(query, o)
            .execute(self.pool())
            .await
            .op("save an ACME order")?;
        Ok(())
    }

    /// One order.
    pub async fn acme_order(&self, id: &str) -> Result<Option<AcmeOrderRow>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ORDER_COLUMNS} FROM acme_orders WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.pool())
        .await
        .op("read an ACME order")?;
        row.as_ref().map(AcmeOrderRow::from_row).transpose()
    }

    /// The order for this exact CSR, if one was made.
    pub async fn acme_order_for_csr(
        &self,
        agent_id: &str,
        certificate: &str,
        csr_sha256: &str,
    ) -> Result<Option<AcmeOrderRow>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ORDER_COLUMNS} FROM acme_orders WHERE agent_id = $1 AND certificate = $2 \
             AND csr_sha256 = $3"
        )))
        .bind(agent_id)
        .bind(certificate)
        .bind(csr_sha256)
        .fetch_optional(self.pool())
        .await
        .op("find an ACME order")?;
        row.as_ref().map(AcmeOrderRow::from_row).transpose()
    }

    /// Orders, newest first; `agent_id` narrows to one host.
    pub async fn acme_orders(
        &self,
        agent_id: Option<&str>,
    ) -> Result<Vec<AcmeOrderRow>, StoreError> {
        let rows = match agent_id {
            Some(agent) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {ORDER_COLUMNS} FROM acme_orders WHERE agent_id = $1 \
                     ORDER BY created_at DESC, id"
                )))
                .bind(agent)
                .fetch_all(self.pool())
                .await
            }
            None => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {ORDER_COLUMNS} FROM acme_orders ORDER BY created_at DESC, id"
                )))
                .fetch_all(self.pool())
                .await
            }
        }
        .op("list ACME orders")?;
        rows.iter().map(AcmeOrderRow::from_row).collect()
    }

    /// Orders the worker should drive now: not issued, and due.
    pub async fn acme_orders_due(&self, now: i64) -> Result<Vec<AcmeOrderRow>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ORDER_COLUMNS} FROM acme_orders WHERE state NOT IN ('issued', 'revoked') \
             AND next_attempt_at <= $1 ORDER BY next_attempt_at, id"
        )))
        .bind(now)
        .fetch_all(self.pool())
        .await
        .op("list due ACME orders")?;
        rows.iter().map(AcmeOrderRow::from_row).collect()
    }

    /// When the next unfinished order is due, if any.
    pub async fn acme_next_due(&self) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(
            "SELECT MIN(next_attempt_at) AS due FROM acme_orders \
             WHERE state NOT IN ('issued', 'revoked')",
        )
        .fetch_one(self.pool())
        .await
        .op("find the next ACME order")?;
        row.try_get::<Option<i64>, _>("due")
            .op("find the next ACME order")
    }

    /// Records a TXT record before it is created (`record_id` empty) or after.
    pub async fn acme_txt_put(&self, t: &AcmeTxtRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO acme_txt_records (order_id, cloudflare_account, zone_id, name, content, \
             record_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (order_id, name, content) DO UPDATE SET record_id = $6",
        )
        .bind(&t.order_id)
        .bind(&t.cloudflare_account)
        .bind(&t.zone_id)
        .bind(&t.name)
        .bind(&t.content)
        .bind(&t.record_id)
        .bind(t.created_at)
        .execute(self.pool())
        .await
        .op("record a TXT record")?;
        Ok(())
    }

    /// The TXT records an order presented (every order's when `order_id` is `None`).
    pub async fn acme_txt_records(
        &self,
        order_id: Option<&str>,
    ) -> Result<Vec<AcmeTxtRow>, StoreError> {
        let query = "SELECT order_id, cloudflare_account, zone_id, name, content, record_id, \
                     created_at FROM acme_txt_records";
        let rows = match order_id {
            Some(id) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "{query} WHERE order_id = $1 ORDER BY name"
                )))
                .bind(id)
                .fetch_all(self.pool())
                .await
            }
            None => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "{query} ORDER BY order_id, name"
                )))
                .fetch_all(self.pool())
                .await
            }
        }
        .op("list TXT records")?;
        rows.iter()
            .map(|r| {
                let op = "read a TXT record";
                Ok(AcmeTxtRow {
                    order_id: r.try_get("order_id").op(op)?,
                    cloudflare_account: r.try_get("cloudflare_account").op(op)?,
                    zone_id: r.try_get("zone_id").op(op)?,
                    name: r.try_get("name").op(op)?,
                    content: r.try_get("content").op(op)?,
                    record_id: r.try_get("record_id").op(op)?,
                    created_at: r.try_get("created_at").op(op)?,
                })
            })
            .collect()
    }

    /// Forgets a TXT record once it is deleted at Cloudflare.
    pub async fn acme_txt_delete(
        &self,
        order_id: &str,
        name: &str,
        content: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM acme_txt_records WHERE order_id = $1 AND name = $2 AND content = $3",
        )
        .bind(order_id)
        .bind(name)
        .bind(content)
        .execute(self.pool())
        .await
        .op("forget a TXT record")?;
        Ok(())
    }
}

impl Store {
    /// Deletes an order (its TXT records are swept separately).
    pub async fn acme_order_delete(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM acme_orders WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await
            .op("delete an ACME order")?;
        Ok(())
    }

    /// Makes an order due now and forgets its failures (`gatehousectl cert retry`).
    pub async fn acme_order_retry_now(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE acme_orders SET failures = 0, next_attempt_at = $2, updated_at = $2 \
             WHERE id = $1 AND state NOT IN ('issued', 'revoked')",
        )
        .bind(id)
        .bind(now)
        .execute(self.pool())
        .await
        .op("retry an ACME order")?;
        Ok(done.rows_affected() == 1)
    }
}

impl Store {
    /// Issued certificates that no renewal replaced yet: the renewal scheduler's work.
    pub async fn acme_current(&self) -> Result<Vec<AcmeOrderRow>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ORDER_COLUMNS} FROM acme_orders WHERE state = 'issued' AND superseded = 0 \
             ORDER BY renew_at, id"
        )))
        .fetch_all(self.pool())
        .await
        .op("list current ACME certificates")?;
        rows.iter().map(AcmeOrderRow::from_row).collect()
    }
}
