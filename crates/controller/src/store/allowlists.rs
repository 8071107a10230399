//! The allowlist tables: lists, their devices (tokens stored as hashes), where each device
//! checked in from, and the fixed entries an operator added.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{QueryContext, Store, StoreError};

/// An allowlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowlistRow {
    pub name: String,
    pub ttl_seconds: i64,
    /// "", "rules", "gateway" or "both".
    pub cloudflare: String,
    pub account: String,
    pub allow_private: bool,
    pub ipv6_prefix: u8,
    pub created_at: i64,
}

/// A device that checks in to a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRow {
    pub id: String,
    pub list: String,
    pub name: String,
    pub secret_hash: String,
    pub created_at: i64,
    /// 0 while it may check in.
    pub revoked_at: i64,
}

/// An address a device checked in from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SightingRow {
    pub device_id: String,
    pub device: String,
    pub cidr: String,
    pub first_at: i64,
    pub last_at: i64,
}

/// An entry an operator added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRow {
    pub list: String,
    pub cidr: String,
    pub comment: String,
    pub created_at: i64,
    /// 0: until removed.
    pub expires_at: i64,
}

macro_rules! list_columns {
    () => {
        "name, ttl_seconds, cloudflare, account, allow_private, ipv6_prefix, created_at"
    };
}

macro_rules! device_columns {
    () => {
        "id, list, name, secret_hash, created_at, revoked_at"
    };
}

impl AllowlistRow {
    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        let op = "read an allowlist";
        let private: i64 = row.try_get("allow_private").op(op)?;
        let prefix: i64 = row.try_get("ipv6_prefix").op(op)?;
        Ok(Self {
            name: row.try_get("name").op(op)?,
            ttl_seconds: row.try_get("ttl_seconds").op(op)?,
            cloudflare: row.try_get("cloudflare").op(op)?,
            account: row.try_get("account").op(op)?,
            allow_private: private != 0,
            ipv6_prefix: prefix.clamp(0, 128) as u8,
            created_at: row.try_get("created_at").op(op)?,
        })
    }
}

impl DeviceRow {
    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        let op = "read a device";
        Ok(Self {
            id: row.try_get("id").op(op)?,
            list: row.try_get("list").op(op)?,
            name: row.try_get("name").op(op)?,
            secret_hash: row.try_get("secret_hash").op(op)?,
            created_at: row.try_get("created_at").op(op)?,
            revoked_at: row.try_get("revoked_at").op(op)?,
        })
    }
}

impl Store {
    /// Records a new allowlist.
    pub async fn allowlist_insert(&self, l: &AllowlistRow) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "INSERT INTO allowlists (",
            list_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7)"
        ))
        .bind(&l.name)
        .bind(l.ttl_seconds)
        .bind(&l.cloudflare)
        .bind(&l.account)
        .bind(i64::from(l.allow_private))
        .bind(i64::from(l.ipv6_prefix))
        .bind(l.created_at)
        .execute(self.pool())
        .await
        .op("create an allowlist")?;
        Ok(())
    }

    /// One allowlist.
    pub async fn allowlist_get(&self, name: &str) -> Result<Option<AllowlistRow>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            list_columns!(),
            " FROM allowlists WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(self.pool())
        .await
        .op("read an allowlist")?;
        row.as_ref().map(AllowlistRow::from_row).transpose()
    }

    /// Every allowlist, by name.
    pub async fn allowlists(&self) -> Result<Vec<AllowlistRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            list_columns!(),
            " FROM allowlists ORDER BY name"
        ))
        .fetch_all(self.pool())
        .await
        .op("list allowlists")?;
        rows.iter().map(AllowlistRow::from_row).collect()
    }

    /// Forgets a list with its devices, their check-ins and its entries.
    pub async fn allowlist_delete(&self, name: &str) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await.op("delete an allowlist")?;
        for sql in [
            "DELETE FROM allowlist_sightings WHERE device_id IN \
             (SELECT id FROM allowlist_devices WHERE list = $1)",
            "DELETE FROM allowlist_devices WHERE list = $1",
            "DELETE FROM allowlist_entries WHERE list = $1",
            "DELETE FROM allowlists WHERE name = $1",
        ] {
            sqlx::query(sql)
                .bind(name)
                .execute(&mut *tx)
                .await
                .op("delete an allowlist")?;
        }
        tx.commit().await.op("delete an allowlist")?;
        Ok(())
    }

    /// Records a new device.
    pub async fn device_insert(&self, d: &DeviceRow) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "INSERT INTO allowlist_devices (",
            device_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6)"
        ))
        .bind(&d.id)
        .bind(&d.list)
        .bind(&d.name)
        .bind(&d.secret_hash)
        .bind(d.created_at)
        .bind(d.revoked_at)
        .execute(self.pool())
        .await
        .op("add a device")?;
        Ok(())
    }

    /// One device by its token id.
    pub async fn device_get(&self, id: &str) -> Result<Option<DeviceRow>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            device_columns!(),
            " FROM allowlist_devices WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await
        .op("read a device")?;
        row.as_ref().map(DeviceRow::from_row).transpose()
    }

    /// A list's devices, by name.
    pub async fn devices(&self, list: &str) -> Result<Vec<DeviceRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            device_columns!(),
            " FROM allowlist_devices WHERE list = $1 ORDER BY name"
        ))
        .bind(list)
        .fetch_all(self.pool())
        .await
        .op("list devices")?;
        rows.iter().map(DeviceRow::from_row).collect()
    }

    /// Revokes a device: its token stops working and its addresses go at once.
    pub async fn device_revoke(&self, id: &str, at: i64) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await.op("revoke a device")?;
        sqlx::query("UPDATE allowlist_devices SET revoked_at = $2 WHERE id = $1")
            .bind(id)
            .bind(at)
            .execute(&mut *tx)
            .await
            .op("revoke a device")?;
        sqlx::query("DELETE FROM allowlist_sightings WHERE device_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .op("revoke a device")?;
        tx.commit().await.op("revoke a device")?;
        Ok(())
    }

    /// Records a check-in of `device` from `cidr` at `now`.
    pub async fn sighting_record(
        &self,
        device: &str,
        cidr: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO allowlist_sightings (device_id, cidr, first_at, last_at) \
             VALUES ($1, $2, $3, $3) \
             ON CONFLICT (device_id, cidr) DO UPDATE SET last_at = $3",
        )
        .bind(device)
        .bind(cidr)
        .bind(now)
        .execute(self.pool())
        .await
        .op("record a check-in")?;
        Ok(())
    }

    /// Where the list's devices that are not revoked checked in from.
    pub async fn sightings(&self, list: &str) -> Result<Vec<SightingRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.device_id, d.name, s.cidr, s.first_at, s.last_at \
             FROM allowlist_sightings s JOIN allowlist_devices d ON d.id = s.device_id \
             WHERE d.list = $1 AND d.revoked_at = 0 ORDER BY s.cidr, d.name",
        )
        .bind(list)
        .fetch_all(self.pool())
        .await
        .op("list check-ins")?;
        let op = "read a check-in";
        rows.iter()
            .map(|r| {
                Ok(SightingRow {
                    device_id: r.try_get("device_id").op(op)?,
                    device: r.try_get("name").op(op)?,
                    cidr: r.try_get("cidr").op(op)?,
                    first_at: r.try_get("first_at").op(op)?,
                    last_at: r.try_get("last_at").op(op)?,
                })
            })
            .collect()
    }

    /// Adds (or replaces) a fixed entry.
    pub async fn entry_put(&self, e: &EntryRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO allowlist_entries (list, cidr, comment, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (list, cidr) DO UPDATE SET comment = $3, expires_at = $5",
        )
        .bind(&e.list)
        .bind(&e.cidr)
        .bind(&e.comment)
        .bind(e.created_at)
        .bind(e.expires_at)
        .execute(self.pool())
        .await
        .op("add an entry")?;
        Ok(())
    }

    /// Removes a fixed entry; false when there was none.
    pub async fn entry_delete(&self, list: &str, cidr: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM allowlist_entries WHERE list = $1 AND cidr = $2")
            .bind(list)
            .bind(cidr)
            .execute(self.pool())
            .await
            .op("remove an entry")?;
        Ok(done.rows_affected() > 0)
    }

    /// A list's fixed entries.
    pub async fn entries(&self, list: &str) -> Result<Vec<EntryRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT list, cidr, comment, created_at, expires_at FROM allowlist_entries \
             WHERE list = $1 ORDER BY cidr",
        )
        .bind(list)
        .fetch_all(self.pool())
        .await
        .op("list entries")?;
        let op = "read an entry";
        rows.iter()
            .map(|r| {
                Ok(EntryRow {
                    list: r.try_get("list").op(op)?,
                    cidr: r.try_get("cidr").op(op)?,
                    comment: r.try_get("comment").op(op)?,
                    created_at: r.try_get("created_at").op(op)?,
                    expires_at: r.try_get("expires_at").op(op)?,
                })
            })
            .collect()
    }

    /// Deletes what has expired by `now`: check-ins older than their list's TTL and fixed
    /// entries past their expiry. Returns how many rows went.
    pub async fn allowlists_sweep(&self, now: i64) -> Result<u64, StoreError> {
        let sightings = sqlx::query(
            "DELETE FROM allowlist_sightings WHERE last_at + \
             (SELECT l.ttl_seconds FROM allowlist_devices d JOIN allowlists l ON l.name = d.list \
              WHERE d.id = allowlist_sightings.device_id) <= $1",
        )
        .bind(now)
        .execute(self.pool())
        .await
        .op("expire check-ins")?;
        let entries =
            sqlx::query("DELETE FROM allowlist_entries WHERE expires_at <> 0 AND expires_at <= $1")
                .bind(now)
                .execute(self.pool())
                .await
                .op("expire entries")?;
        Ok(sightings.rows_affected() + entries.rows_affected())
    }
}
