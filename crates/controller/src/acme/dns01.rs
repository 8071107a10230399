//! DNS-01 through Cloudflare: the TXT record for each name is upserted (TTL 60) in the zone
//! that holds the name, recorded in the store before it is created so that cleanup survives a
//! crash, checked against the zone's authoritative DNS every 2 s until it answers, and always
//! deleted afterwards.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use tracing::{info, warn};

use crate::Shared;
use crate::cloudflare::dns::NewRecord;
use crate::cloudflare::{Client, CloudflareError};
use crate::store::{AcmeTxtRow, StoreError};

/// How often the authoritative DNS is asked while waiting for a record.
pub const PROPAGATION_POLL: Duration = Duration::from_secs(2);

/// The record name for `domain` (`*.example.com` is validated at `example.com`).
pub fn challenge_name(domain: &str) -> String {
    format!("_acme-challenge.{}", domain.trim_start_matches("*."))
}

/// Why a DNS-01 step did not work.
#[derive(Debug, thiserror::Error)]
pub enum Dns01Error {
    #[error("DNS-01 needs a Cloudflare account: add one with gatehousectl cloudflare account add")]
    NoAccount,
    #[error("no Cloudflare zone holds {0}: DNS-01 cannot answer for it")]
    NoZone(String),
    #[error("Cloudflare account {account}: {source}")]
    Zones {
        account: String,
        #[source]
        source: CloudflareError,
    },
    #[error("could not delete DNS-01 records: {0}")]
    Cleanup(String),
    #[error("cannot resolve the name servers of {zone} ({servers})")]
    NameServers { zone: String, servers: String },
    #[error("the TXT record {name} did not appear in the zone's DNS within {timeout:?}: {why}")]
    NotVisible {
        name: String,
        timeout: Duration,
        why: String,
    },
    #[error(transparent)]
    Cloudflare(#[from] CloudflareError),
    /// A stored account that cannot be used.
    #[error(transparent)]
    Account(#[from] crate::error::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<Dns01Error> for super::order::StepError {
    fn from(e: Dns01Error) -> Self {
        e.to_string().into()
    }
}

/// The Cloudflare zone that holds a name.
#[derive(Debug, Clone)]
pub struct ZoneRef {
    pub account: String,
    pub client: Client,
    pub zone_id: String,
    pub zone: String,
    pub name_servers: Vec<String>,
}

/// Finds the zone, among every Cloudflare account's zones, that is the longest suffix of
/// `domain`.
pub async fn zone_for(shared: &Shared, domain: &str) -> Result<ZoneRef, Dns01Error> {
    let domain = domain.trim_start_matches("*.");
    let mut best: Option<ZoneRef> = None;
    let accounts = shared.store.cloudflare_accounts().await?;
    if accounts.is_empty() {
        return Err(Dns01Error::NoAccount);
    }
    for account in accounts {
        let client = crate::cloudflare::accounts::client(shared, &account.name).await?;
        let zones = client.zones().await.map_err(|source| Dns01Error::Zones {
            account: account.name.clone(),
            source,
        })?;
        for zone in zones {
            let holds = domain == zone.name || domain.ends_with(&format!(".{}", zone.name));
            if holds && best.as_ref().is_none_or(|b| zone.name.len() > b.zone.len()) {
                best = Some(ZoneRef {
                    account: account.name.clone(),
                    client: client.clone(),
                    zone_id: zone.id,
                    zone: zone.name,
                    name_servers: zone.name_servers,
                });
            }
        }
    }
    best.ok_or_else(|| Dns01Error::NoZone(domain.to_owned()))
}

/// Publishes `content` at `name` for an order: recorded first, then created (or found).
pub async fn present(
    shared: &Shared,
    order_id: &str,
    zone: &ZoneRef,
    name: &str,
    content: &str,
) -> Result<(), Dns01Error> {
    let mut row = AcmeTxtRow {
        order_id: order_id.to_owned(),
        cloudflare_account: zone.account.clone(),
        zone_id: zone.zone_id.clone(),
        name: name.to_owned(),
        content: content.to_owned(),
        record_id: String::new(),
        created_at: shared.now(),
    };
    shared.store.acme_txt_put(&row).await?;
    let existing = zone
        .client
        .records_named(&zone.zone_id, name, Some("TXT"))
        .await?;
    row.record_id = match existing
        .into_iter()
        .find(|r| unquote(&r.content) == content)
    {
        Some(record) => record.id,
        None => {
            zone.client
                .create_record(
                    &zone.zone_id,
                    &NewRecord {
                        kind: "TXT".into(),
                        name: name.to_owned(),
                        content: content.to_owned(),
                        proxied: false,
                        ttl: 60,
                        comment: Some(format!("gatehouse ACME order {order_id}")),
                    },
                )
                .await?
                .id
        }
    };
    shared.store.acme_txt_put(&row).await?;
    info!(order = order_id, record = name, "DNS-01 record presented");
    Ok(())
}

/// Cloudflare may show TXT content quoted.
fn unquote(text: &str) -> &str {
    text.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text)
}

/// Deletes every TXT record an order presented. Records that could not be deleted stay in the
/// store, and a later sweep tries again.
pub async fn clean_up(shared: &Shared, order_id: &str) -> Result<usize, Dns01Error> {
    let rows = shared.store.acme_txt_records(Some(order_id)).await?;
    let mut errors = Vec::new();
    let mut deleted = 0;
    for row in rows {
        match delete(shared, &row).await {
            Ok(()) => {
                shared
                    .store
                    .acme_txt_delete(&row.order_id, &row.name, &row.content)
                    .await?;
                deleted += 1;
            }
            Err(e) => errors.push(format!("{}: {e}", row.name)),
        }
    }
    if errors.is_empty() {
        Ok(deleted)
    } else {
        Err(Dns01Error::Cleanup(errors.join("; ")))
    }
}

async fn delete(shared: &Shared, row: &AcmeTxtRow) -> Result<(), Dns01Error> {
    let client = crate::cloudflare::accounts::client(shared, &row.cloudflare_account).await?;
    let ids: Vec<String> = if row.record_id.is_empty() {
        // Recorded but the creation's answer was lost: find it by name and content.
        client
            .records_named(&row.zone_id, &row.name, Some("TXT"))
            .await?
            .into_iter()
            .filter(|r| unquote(&r.content) == row.content)
            .map(|r| r.id)
            .collect()
    } else {
        vec![row.record_id.clone()]
    };
    for id in ids {
        client.delete_record(&row.zone_id, &id).await?;
    }
    Ok(())
}

/// The servers to ask: the configured ones, else the zone's Cloudflare name servers.
pub async fn authoritative_servers(
    shared: &Shared,
    zone: &ZoneRef,
) -> Result<Vec<SocketAddr>, Dns01Error> {
    if !shared.config().acme_dns_servers.is_empty() {
        return Ok(shared.config().acme_dns_servers.clone());
    }
    let mut servers = Vec::new();
    for ns in &zone.name_servers {
        if let Ok(found) = tokio::net::lookup_host((ns.as_str(), 53)).await {
            servers.extend(found);
        }
    }
    if servers.is_empty() {
        return Err(Dns01Error::NameServers {
            zone: zone.zone.clone(),
            servers: zone.name_servers.join(", "),
        });
    }
    Ok(servers)
}

/// Waits until every server answers `content` at `name`, asking every 2 s, up to `timeout`.
pub async fn wait_visible(
    servers: &[SocketAddr],
    name: &str,
    content: &str,
    timeout: Duration,
) -> Result<(), Dns01Error> {
    let started = tokio::time::Instant::now();
    let deadline = started + timeout;
    info!(record = name, servers = ?servers, "waiting for the DNS-01 record to propagate");
    let mut queries = 0u32;
    loop {
        queries += 1;
        let mut missing = None;
        for server in servers {
            match txt_values(*server, name).await {
                Ok(values) if values.iter().any(|v| v == content) => {}
                Ok(_) => missing = Some(format!("{server} does not answer it yet")),
                Err(e) => missing = Some(format!("{server}: {e}")),
            }
        }
        let Some(why) = missing else {
            info!(
                record = name,
                queries,
                waited_ms = started.elapsed().as_millis() as u64,
                "the DNS-01 record is visible"
            );
            return Ok(());
        };
        if tokio::time::Instant::now() + PROPAGATION_POLL > deadline {
            return Err(Dns01Error::NotVisible {
                name: name.to_owned(),
                timeout,
                why,
            });
        }
        tokio::time::sleep(PROPAGATION_POLL).await;
    }
}

/// The TXT strings `server` answers for `name` (one UDP query, no recursion).
async fn txt_values(server: SocketAddr, name: &str) -> Result<Vec<String>, String> {
    let qname = Name::from_str(&format!("{name}.")).map_err(|e| e.to_string())?;
    let mut message = Message::query();
    message.add_query(Query::query(qname, RecordType::TXT));
    message.metadata.recursion_desired = false;
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("valid")
    } else {
        "[::]:0".parse().expect("valid")
    };
    let socket = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| e.to_string())?;
    let query = message.to_vec().map_err(|e| e.to_string())?;
    socket
        .send_to(&query, server)
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(3), socket.recv(&mut buf))
        .await
        .map_err(|_| "no answer within 3 s".to_owned())?
        .map_err(|e| e.to_string())?;
    let answer = Message::from_vec(&buf[..n]).map_err(|e| e.to_string())?;
    Ok(answer
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(txt) => Some(
                txt.txt_data
                    .iter()
                    .map(|part| String::from_utf8_lossy(part).into_owned())
                    .collect::<String>(),
            ),
            _ => None,
        })
        .collect())
}

/// Deletes what finished orders left behind (a crash between presenting and cleaning up, or a
/// Cloudflare error during cleanup).
pub async fn sweep(shared: &Shared) {
    let rows = match shared.store.acme_txt_records(None).await {
        Ok(rows) => rows,
        Err(e) => {
            warn!("cannot list DNS-01 records: {e}");
            return;
        }
    };
    let mut orders: Vec<String> = rows.into_iter().map(|r| r.order_id).collect();
    orders.dedup();
    for id in orders {
        let active = match shared.store.acme_order(&id).await {
            Ok(Some(order)) => matches!(
                order.state,
                crate::store::OrderState::Presenting | crate::store::OrderState::Validating
            ),
            Ok(None) => false,
            Err(_) => true,
        };
        if !active && let Err(e) = clean_up(shared, &id).await {
            warn!(order = %id, "{e}");
        }
    }
}
