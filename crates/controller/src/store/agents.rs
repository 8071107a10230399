//! The `agents` and `desired_states` tables: enrolled hosts and every generation of their
//! desired state.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use gatehouse_proto::v1::{Ack, DesiredState, HostFacts, ItemResult, ItemState};
use prost::Message;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::join_tokens::redeem;
use super::{QueryContext, RedeemError, Store, StoreError, labels_from_text, labels_to_text};

/// An enrolled agent as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRow {
    pub id: String,
    pub hostname: String,
    pub labels: BTreeMap<String, String>,
    pub enrolled_at: i64,
    pub revoked_at: Option<i64>,
    pub cert_serial: String,
    pub cert_not_after: i64,
    pub last_seen_at: Option<i64>,
    pub applied_generation: u64,
    pub version: String,
    pub facts: Option<HostFacts>,
    /// The last apply result the agent reported (none before the first).
    pub last_apply: Option<ApplyRecord>,
    /// The host's name in a Cloudflare zone (empty when it has none).
    pub domain: String,
}

/// An agent's last acknowledgement, as stored (JSON in `agents.last_apply`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ApplyRecord {
    pub generation: u64,
    /// When it arrived (Unix seconds).
    pub at: i64,
    pub results: Vec<ItemRecord>,
}

/// One item of an [`ApplyRecord`].
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ItemRecord {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    /// `applied`, `pending` or `failed`.
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub message: String,
    /// Acks in a row, this one included, in which the item failed.
    #[serde(default)]
    pub failures: u32,
    // Rows written by 0.1: `kind/name`, ok and error.
    #[serde(default, skip_serializing)]
    item: String,
    #[serde(default, skip_serializing)]
    ok: bool,
    #[serde(default, skip_serializing)]
    error: String,
}

impl ApplyRecord {
    /// The record of `ack`, received at `at`.
    pub fn new(ack: &Ack, at: i64) -> Self {
        let results = ack
            .results
            .iter()
            .map(|r| ItemRecord {
                kind: r.kind.clone(),
                name: r.name.clone(),
                state: r.item_state().word().to_owned(),
                message: r.message.clone(),
                ..Default::default()
            })
            .collect();
        Self {
            generation: ack.generation,
            at,
            results,
        }
    }

    /// Counts each failed item's failures in a row from the record before this one.
    pub fn following(mut self, previous: Option<&ApplyRecord>) -> Self {
        for item in &mut self.results {
            if item.state != ItemState::Failed.word() {
                continue;
            }
            let before = previous
                .and_then(|p| {
                    p.results
                        .iter()
                        .find(|r| r.kind == item.kind && r.name == item.name)
                })
                .filter(|r| r.state == ItemState::Failed.word())
                .map_or(0, |r| r.failures.max(1));
            item.failures = before.saturating_add(1);
        }
        self
    }

    /// The items as the API shows them.
    pub fn items(&self) -> Vec<ItemResult> {
        self.results.iter().map(ItemRecord::result).collect()
    }
}

impl ItemRecord {
    fn result(&self) -> ItemResult {
        if self.kind.is_empty() && !self.item.is_empty() {
            let (kind, name) = self.item.split_once('/').unwrap_or((&self.item, ""));
            return if self.ok {
                ItemResult::applied(kind, name)
            } else if self.error.starts_with("waiting for") {
                ItemResult::pending(kind, name, &self.error)
            } else {
                ItemResult::failed(kind, name, &self.error)
            };
        }
        ItemResult {
            kind: self.kind.clone(),
            name: self.name.clone(),
            state: ItemState::from_word(&self.state).unwrap_or(ItemState::Failed) as i32,
            message: self.message.clone(),
        }
    }
}

/// One stored generation of a host's desired state.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredStateRow {
    pub generation: u64,
    pub state: DesiredState,
    pub created_at: i64,
}

const COLUMNS: &str = "id, hostname, labels, enrolled_at, revoked_at, cert_serial, \
                       cert_not_after, last_seen_at, applied_generation, version, facts, last_apply, domain";

impl AgentRow {
    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        let op = "read an agent";
        let labels: String = row.try_get("labels").op(op)?;
        let facts: String = row.try_get("facts").op(op)?;
        let applied: i64 = row.try_get("applied_generation").op(op)?;
        Ok(Self {
            id: row.try_get("id").op(op)?,
            hostname: row.try_get("hostname").op(op)?,
            labels: labels_from_text(&labels)?,
            enrolled_at: row.try_get("enrolled_at").op(op)?,
            revoked_at: row.try_get("revoked_at").op(op)?,
            cert_serial: row.try_get("cert_serial").op(op)?,
            cert_not_after: row.try_get("cert_not_after").op(op)?,
            last_seen_at: row.try_get("last_seen_at").op(op)?,
            applied_generation: applied.max(0) as u64,
            version: row.try_get("version").op(op)?,
            facts: if facts.is_empty() {
                None
            } else {
                Some(decode(&facts, "host facts")?)
            },
            last_apply: {
                let text: String = row.try_get("last_apply").op(op)?;
                if text.is_empty() {
                    None
                } else {
                    Some(
                        serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
                            what: "apply result",
                            detail: e.to_string(),
                        })?,
                    )
                }
            },
            domain: row.try_get("domain").op(op)?,
        })
    }
}

fn encode(message: &impl Message) -> String {
    B64.encode(message.encode_to_vec())
}

fn decode<M: Message + Default>(text: &str, what: &'static str) -> Result<M, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt { what, detail };
    let bytes = B64.decode(text).map_err(|e| corrupt(e.to_string()))?;
    M::decode(bytes.as_slice()).map_err(|e| corrupt(e.to_string()))
}

fn generation_to_db(generation: u64) -> i64 {
    i64::try_from(generation).unwrap_or(i64::MAX)
}

impl Store {
    /// Enrolls an agent in one transaction: redeems the join token (once, and only while it is
    /// valid), stores the agent and its first desired state.
    ///
    /// Returns the token's verdict separately from database errors.
    pub async fn enroll_agent(
        &self,
        token_id: &str,
        agent: &AgentRow,
        first_state: &DesiredState,
        now: i64,
    ) -> Result<Result<(), RedeemError>, StoreError> {
        let mut tx = self.pool().begin().await.op("begin enrollment")?;
        if let Err(refused) = redeem(&mut tx, token_id, &agent.id, now).await? {
            tx.rollback().await.op("roll back enrollment")?;
            return Ok(Err(refused));
        }
        sqlx::query(
            "INSERT INTO agents (id, hostname, labels, enrolled_at, cert_serial, cert_not_after, \
             version, facts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&agent.id)
        .bind(&agent.hostname)
        .bind(labels_to_text(&agent.labels))
        .bind(agent.enrolled_at)
        .bind(&agent.cert_serial)
        .bind(agent.cert_not_after)
        .bind(&agent.version)
        .bind(agent.facts.as_ref().map(encode).unwrap_or_default())
        .execute(&mut *tx)
        .await
        .op("store a new agent")?;
        insert_state(&mut tx, &agent.id, first_state, now).await?;
        tx.commit().await.op("commit enrollment")?;
        Ok(Ok(()))
    }

    /// Up to `limit` agents whose id sorts after `after`, in id order (keyset paging: an agent
    /// enrolled during a walk never shifts the others, so none is seen twice).
    pub async fn agent_page(&self, after: &str, limit: u32) -> Result<Vec<AgentRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM agents WHERE id > $1 ORDER BY id LIMIT $2");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await
            .op("list agents")?;
        rows.iter().map(AgentRow::from_row).collect()
    }

    /// Reads one agent.
    pub async fn agent_get(&self, id: &str) -> Result<Option<AgentRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM agents WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .op("read an agent")?;
        row.as_ref().map(AgentRow::from_row).transpose()
    }

    /// All agents, in enrollment order.
    pub async fn agent_list(&self) -> Result<Vec<AgentRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM agents ORDER BY enrolled_at, id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(self.pool())
            .await
            .op("list agents")?;
        rows.iter().map(AgentRow::from_row).collect()
    }

    /// Ids of every revoked agent.
    pub async fn agent_revoked_ids(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT id FROM agents WHERE revoked_at IS NOT NULL")
            .fetch_all(self.pool())
            .await
            .op("list revoked agents")?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).op("list revoked agents"))
            .collect()
    }

    /// Marks an agent revoked (the first time counts).
    pub async fn agent_revoke(&self, id: &str, now: i64) -> Result<AgentRow, StoreError> {
        sqlx::query("UPDATE agents SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .bind(now)
            .execute(self.pool())
            .await
            .op("revoke an agent")?;
        self.agent_get(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("agent {id}")))
    }

    /// Records what an agent said in its `Hello`.
    pub async fn agent_hello(
        &self,
        id: &str,
        version: &str,
        facts: &HostFacts,
        applied_generation: u64,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE agents SET version = $2, facts = $3, hostname = $4, \
             applied_generation = $5, last_seen_at = $6 WHERE id = $1",
        )
        .bind(id)
        .bind(version)
        .bind(encode(facts))
        .bind(&facts.hostname)
        .bind(generation_to_db(applied_generation))
        .bind(now)
        .execute(self.pool())
        .await
        .op("record an agent's hello")?;
        Ok(())
    }

    /// Records the generation an agent acknowledged, and when it was last heard from.
    pub async fn agent_seen(
        &self,
        id: &str,
        applied_generation: u64,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE agents SET applied_generation = $2, last_seen_at = $3 WHERE id = $1")
            .bind(id)
            .bind(generation_to_db(applied_generation))
            .bind(now)
            .execute(self.pool())
            .await
            .op("record an agent's progress")?;
        Ok(())
    }

    /// Records the host's name in a Cloudflare zone.
    pub async fn agent_set_domain(&self, id: &str, domain: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE agents SET domain = $2 WHERE id = $1")
            .bind(id)
            .bind(domain)
            .execute(self.pool())
            .await
            .op("record an agent's domain")?;
        Ok(())
    }

    /// Records the result of an apply.
    pub async fn agent_set_last_apply(
        &self,
        id: &str,
        record: &ApplyRecord,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(record).expect("apply records serialise");
        sqlx::query("UPDATE agents SET last_apply = $2 WHERE id = $1")
            .bind(id)
            .bind(json)
            .execute(self.pool())
            .await
            .op("record an apply result")?;
        Ok(())
    }

    /// One generation of an agent's desired state.
    pub async fn desired_get(
        &self,
        agent_id: &str,
        generation: u64,
    ) -> Result<Option<DesiredStateRow>, StoreError> {
        let row = sqlx::query(
            "SELECT generation, body, created_at FROM desired_states \
             WHERE agent_id = $1 AND generation = $2",
        )
        .bind(agent_id)
        .bind(generation_to_db(generation))
        .fetch_optional(self.pool())
        .await
        .op("read a desired state")?;
        row.as_ref().map(state_from_row).transpose()
    }

    /// The newest `limit` generations of an agent's desired state, newest first.
    pub async fn desired_history(
        &self,
        agent_id: &str,
        limit: u32,
    ) -> Result<Vec<DesiredStateRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT generation, body, created_at FROM desired_states WHERE agent_id = $1 \
             ORDER BY generation DESC LIMIT $2",
        )
        .bind(agent_id)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .op("read desired-state history")?;
        rows.iter().map(state_from_row).collect()
    }

    /// Records a newly issued identity certificate.
    pub async fn agent_set_certificate(
        &self,
        id: &str,
        serial: &str,
        not_after: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE agents SET cert_serial = $2, cert_not_after = $3 WHERE id = $1")
            .bind(id)
            .bind(serial)
            .bind(not_after)
            .execute(self.pool())
            .await
            .op("record an agent certificate")?;
        Ok(())
    }

    /// Sets an agent's labels.
    pub async fn agent_set_labels(
        &self,
        id: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE agents SET labels = $2 WHERE id = $1")
            .bind(id)
            .bind(labels_to_text(labels))
            .execute(self.pool())
            .await
            .op("set agent labels")?;
        Ok(())
    }

    /// The newest generation of an agent's desired state.
    pub async fn desired_latest(
        &self,
        agent_id: &str,
    ) -> Result<Option<DesiredStateRow>, StoreError> {
        let row = sqlx::query(
            "SELECT generation, body, created_at FROM desired_states WHERE agent_id = $1 \
             ORDER BY generation DESC LIMIT 1",
        )
        .bind(agent_id)
        .fetch_optional(self.pool())
        .await
        .op("read a desired state")?;
        row.as_ref().map(state_from_row).transpose()
    }

    /// Stores `state` as the next generation of an agent's desired state and returns it with its
    /// generation filled in. Generations only grow; concurrent writers each get their own.
    ///
    /// The next number is computed inside the INSERT (one statement, so SQLite never has to
    /// upgrade a read snapshot to a write); if two controllers race on PostgreSQL, the loser's
    /// primary key conflicts and it takes the next number.
    pub async fn desired_push(
        &self,
        agent_id: &str,
        mut state: DesiredState,
        now: i64,
    ) -> Result<DesiredState, StoreError> {
        state.generation = 0;
        let body = encode(&state);
        let mut attempts = 0;
        loop {
            let inserted = sqlx::query(
                "INSERT INTO desired_states (agent_id, generation, body, created_at) \
                 SELECT $1, COALESCE(MAX(generation), 0) + 1, $2, $3 FROM desired_states \
                 WHERE agent_id = $1 RETURNING generation",
            )
            .bind(agent_id)
            .bind(&body)
            .bind(now)
            .fetch_one(self.pool())
            .await;
            match inserted {
                Ok(row) => {
                    let generation: i64 = row.try_get(0).op("store a desired state")?;
                    state.generation = generation.max(0) as u64;
                    return Ok(state);
                }
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() && attempts < 5 => {
                    attempts += 1;
                }
                Err(e) => return Err(e).op("store a desired state"),
            }
        }
    }
}

/// The generation lives in its column; the stored body carries 0.
fn state_from_row(row: &AnyRow) -> Result<DesiredStateRow, StoreError> {
    let op = "read a desired state";
    let generation: i64 = row.try_get("generation").op(op)?;
    let body: String = row.try_get("body").op(op)?;
    let mut state: DesiredState = decode(&body, "desired state")?;
    state.generation = generation.max(0) as u64;
    Ok(DesiredStateRow {
        generation: state.generation,
        state,
        created_at: row.try_get("created_at").op(op)?,
    })
}

async fn insert_state(
    tx: &mut sqlx::AnyConnection,
    agent_id: &str,
    state: &DesiredState,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO desired_states (agent_id, generation, body, created_at) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(agent_id)
    .bind(generation_to_db(state.generation))
    .bind(encode(state))
    .bind(now)
    .execute(&mut *tx)
    .await
    .op("store a desired state")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_from_0_1_read_as_typed_items() {
        let old = r#"{"generation":3,"at":10,"results":[
            {"item":"site/www","ok":true,"error":""},
            {"item":"certificate/www","ok":false,"error":"waiting for the certificate"},
            {"item":"caddy","ok":false,"error":"cannot read"}]}"#;
        let record: ApplyRecord = serde_json::from_str(old).unwrap();
        let items = record.items();
        assert_eq!(items[0], ItemResult::applied("site", "www"));
        assert_eq!(items[1].item_state(), ItemState::Pending);
        assert_eq!(
            (items[2].item(), items[2].item_state()),
            ("caddy".into(), ItemState::Failed)
        );
        // Written again, it is the typed form.
        let ack = Ack {
            generation: 3,
            results: items,
        };
        let again: ApplyRecord =
            serde_json::from_str(&serde_json::to_string(&ApplyRecord::new(&ack, 10)).unwrap())
                .unwrap();
        assert_eq!(again.items(), ack.results);
    }
}
