//! The WireGuard tables: networks and their peers (hosts and clients), with the addresses each
//! peer holds. The unique keys on (network, address) are what makes an address never handed
//! out twice, even by two controllers at once.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{QueryContext, Store, StoreError};

/// A network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgNetworkRow {
    pub name: String,
    pub interface: String,
    pub ipv4: String,
    pub ipv6: String,
    /// "hub" or "mesh".
    pub topology: String,
    pub port: u16,
    pub mtu: u32,
    pub dns: Vec<String>,
    pub keepalive_seconds: u32,
    pub created_at: i64,
}

/// A peer of a network: a host or a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgPeerRow {
    pub network: String,
    /// A host's agent id or a client's name.
    pub name: String,
    /// "host" or "client".
    pub kind: String,
    pub agent_id: String,
    /// "" until the host reported the key it made.
    pub public_key: String,
    pub ipv4: String,
    pub ipv6: String,
    pub hub: bool,
    pub endpoint: String,
    /// Sealed ("" without one).
    pub preshared_key: String,
    /// 0: no expiry.
    pub expires_at: i64,
    pub key_revision: i64,
    pub created_at: i64,
}

macro_rules! network_columns {
    () => {
        "name, interface, ipv4, ipv6, topology, port, mtu, dns, keepalive_seconds, created_at"
    };
}

macro_rules! peer_columns {
    () => {
        "network, name, kind, agent_id, public_key, ipv4, ipv6, hub, endpoint, preshared_key, \
         expires_at, key_revision, created_at"
    };
}

impl WgNetworkRow {
    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        let op = "read a WireGuard network";
        let port: i64 = row.try_get("port").op(op)?;
        let mtu: i64 = row.try_get("mtu").op(op)?;
        let keepalive: i64 = row.try_get("keepalive_seconds").op(op)?;
        let dns: String = row.try_get("dns").op(op)?;
        Ok(Self {
            name: row.try_get("name").op(op)?,
            interface: row.try_get("interface").op(op)?,
            ipv4: row.try_get("ipv4").op(op)?,
            ipv6: row.try_get("ipv6").op(op)?,
            topology: row.try_get("topology").op(op)?,
            port: port.clamp(0, 65535) as u16,
            mtu: mtu.clamp(0, 65535) as u32,
            dns: dns.split_whitespace().map(str::to_owned).collect(),
            keepalive_seconds: keepalive.clamp(0, 65535) as u32,
            created_at: row.try_get("created_at").op(op)?,
        })
    }
}

impl WgPeerRow {
    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        let op = "read a WireGuard peer";
        let hub: i64 = row.try_get("hub").op(op)?;
        Ok(Self {
            network: row.try_get("network").op(op)?,
            name: row.try_get("name").op(op)?,
            kind: row.try_get("kind").op(op)?,
            agent_id: row.try_get("agent_id").op(op)?,
            public_key: row.try_get("public_key").op(op)?,
            ipv4: row.try_get("ipv4").op(op)?,
            ipv6: row.try_get("ipv6").op(op)?,
            hub: hub != 0,
            endpoint: row.try_get("endpoint").op(op)?,
            preshared_key: row.try_get("preshared_key").op(op)?,
            expires_at: row.try_get("expires_at").op(op)?,
            key_revision: row.try_get("key_revision").op(op)?,
            created_at: row.try_get("created_at").op(op)?,
        })
    }
}

impl Store {
    /// Records a new network; false when the name is taken.
    pub async fn wg_network_insert(&self, n: &WgNetworkRow) -> Result<bool, StoreError> {
        let done = sqlx::query(concat!(
            "INSERT INTO wg_networks (",
            network_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING"
        ))
        .bind(&n.name)
        .bind(&n.interface)
        .bind(&n.ipv4)
        .bind(&n.ipv6)
        .bind(&n.topology)
        .bind(i64::from(n.port))
        .bind(i64::from(n.mtu))
        .bind(n.dns.join(" "))
        .bind(i64::from(n.keepalive_seconds))
        .bind(n.created_at)
        .execute(self.pool())
        .await
        .op("create a WireGuard network")?;
        Ok(done.rows_affected() == 1)
    }

    /// One network.
    pub async fn wg_network_get(&self, name: &str) -> Result<Option<WgNetworkRow>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            network_columns!(),
            " FROM wg_networks WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(self.pool())
        .await
        .op("read a WireGuard network")?;
        row.as_ref().map(WgNetworkRow::from_row).transpose()
    }

    /// Every network, by name.
    pub async fn wg_networks(&self) -> Result<Vec<WgNetworkRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            network_columns!(),
            " FROM wg_networks ORDER BY name"
        ))
        .fetch_all(self.pool())
        .await
        .op("list WireGuard networks")?;
        rows.iter().map(WgNetworkRow::from_row).collect()
    }

    /// Forgets a network with no peers; false when it still has some (or is gone).
    pub async fn wg_network_delete(&self, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "DELETE FROM wg_networks WHERE name = $1 \
             AND NOT EXISTS (SELECT 1 FROM wg_peers WHERE network = $1)",
        )
        .bind(name)
        .execute(self.pool())
        .await
        .op("delete a WireGuard network")?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a new peer with its addresses; false when the name or an address is taken
    /// (another allocation got there first: pick again).
    pub async fn wg_peer_insert(&self, p: &WgPeerRow) -> Result<bool, StoreError> {
        let done = sqlx::query(concat!(
            "INSERT INTO wg_peers (",
            peer_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             ON CONFLICT DO NOTHING"
        ))
        .bind(&p.network)
        .bind(&p.name)
        .bind(&p.kind)
        .bind(&p.agent_id)
        .bind(&p.public_key)
        .bind(&p.ipv4)
        .bind(&p.ipv6)
        .bind(i64::from(p.hub))
        .bind(&p.endpoint)
        .bind(&p.preshared_key)
        .bind(p.expires_at)
        .bind(p.key_revision)
        .bind(p.created_at)
        .execute(self.pool())
        .await
        .op("add a WireGuard peer")?;
        Ok(done.rows_affected() == 1)
    }

    /// A network's peers: hubs first, then hosts, then clients, each by name.
    pub async fn wg_peers(&self, network: &str) -> Result<Vec<WgPeerRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            peer_columns!(),
            " FROM wg_peers WHERE network = $1 ORDER BY hub DESC, kind DESC, name"
        ))
        .bind(network)
        .fetch_all(self.pool())
        .await
        .op("list WireGuard peers")?;
        rows.iter().map(WgPeerRow::from_row).collect()
    }

    /// A network's hubs, by name.
    pub async fn wg_hubs(&self, network: &str) -> Result<Vec<WgPeerRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            peer_columns!(),
            " FROM wg_peers WHERE network = $1 AND hub = 1 ORDER BY name"
        ))
        .bind(network)
        .fetch_all(self.pool())
        .await
        .op("list WireGuard hubs")?;
        rows.iter().map(WgPeerRow::from_row).collect()
    }

    /// Whether a peer of the network has this public key.
    pub async fn wg_key_taken(&self, network: &str, key: &str) -> Result<bool, StoreError> {
        let row =
            sqlx::query("SELECT 1 AS one FROM wg_peers WHERE network = $1 AND public_key = $2")
                .bind(network)
                .bind(key)
                .fetch_optional(self.pool())
                .await
                .op("look up a WireGuard key")?;
        Ok(row.is_some())
    }

    /// The addresses a network's peers hold (IPv4, IPv6).
    pub async fn wg_addresses(&self, network: &str) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query("SELECT ipv4, ipv6 FROM wg_peers WHERE network = $1")
            .bind(network)
            .fetch_all(self.pool())
            .await
            .op("list WireGuard addresses")?;
        let op = "read a WireGuard address";
        rows.iter()
            .map(|r| Ok((r.try_get("ipv4").op(op)?, r.try_get("ipv6").op(op)?)))
            .collect()
    }

    /// Removes a peer, freeing its addresses; the row it was, if any.
    pub async fn wg_peer_delete(
        &self,
        network: &str,
        name: &str,
    ) -> Result<Option<WgPeerRow>, StoreError> {
        let row = sqlx::query(concat!(
            "DELETE FROM wg_peers WHERE network = $1 AND name = $2 RETURNING ",
            peer_columns!()
        ))
        .bind(network)
        .bind(name)
        .fetch_optional(self.pool())
        .await
        .op("remove a WireGuard peer")?;
        row.as_ref().map(WgPeerRow::from_row).transpose()
    }

    /// Asks a host for a new key: its key revision goes up. False when it is not in the network.
    pub async fn wg_host_rotate(&self, network: &str, agent_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE wg_peers SET key_revision = key_revision + 1 \
             WHERE network = $1 AND name = $2 AND kind = 'host'",
        )
        .bind(network)
        .bind(agent_id)
        .execute(self.pool())
        .await
        .op("rotate a WireGuard host key")?;
        Ok(done.rows_affected() == 1)
    }

    /// Records the public key a host made for a network.
    pub async fn wg_host_key_set(
        &self,
        network: &str,
        agent_id: &str,
        public_key: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE wg_peers SET public_key = $3 \
             WHERE network = $1 AND name = $2 AND kind = 'host' AND public_key <> $3",
        )
        .bind(network)
        .bind(agent_id)
        .bind(public_key)
        .execute(self.pool())
        .await
        .op("record a WireGuard host key")?;
        Ok(done.rows_affected() == 1)
    }
}
