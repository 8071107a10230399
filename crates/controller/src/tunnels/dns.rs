//! A tunnel's DNS: one proxied CNAME per routed hostname to `<tunnel-id>.cfargotunnel.com`,
//! marked as gatehouse's own in its comment. A record is deleted only when it carries that mark
//! and still points at this tunnel; records gatehouse did not make are never touched, and a
//! hostname that already has one is refused rather than taken over.

use crate::Shared;
use crate::cloudflare::Client;
use crate::cloudflare::dns::{DnsRecord, NewRecord};
use crate::error::{Error, Result};
use crate::store::{TunnelRecord, TunnelRow};

/// The start of every comment gatehouse writes on a tunnel's record.
const MARK: &str = "gatehouse: tunnel ";

/// Where a tunnel's CNAMEs point.
pub fn target(tunnel_id: &str) -> String {
    format!("{tunnel_id}.cfargotunnel.com")
}

fn comment(row: &TunnelRow) -> String {
    format!("{MARK}{} (agent {})", row.name, row.agent_id)
}

/// Whether `record` is this tunnel's own CNAME: marked by gatehouse and pointing at it.
pub fn owned(record: &DnsRecord, tunnel_id: &str) -> bool {
    record.kind == "CNAME"
        && record.content == target(tunnel_id)
        && record
            .comment
            .as_deref()
            .is_some_and(|c| c.starts_with(MARK))
}

/// Makes the zone hold exactly the row's routes: a CNAME created (and recorded) for each new
/// hostname, gatehouse's own record removed for each hostname no longer routed.
pub async fn sync(shared: &Shared, cf: &Client, row: &mut TunnelRow) -> Result<()> {
    let wanted: Vec<String> = row.routes.iter().map(|r| r.hostname.clone()).collect();
    let gone: Vec<String> = row
        .records
        .keys()
        .filter(|h| !wanted.contains(h))
        .cloned()
        .collect();
    for hostname in gone {
        let made = row.records[&hostname].clone();
        let live = cf
            .records_named(&made.zone_id, &hostname, Some("CNAME"))
            .await?;
        for r in live.iter().filter(|r| owned(r, &row.tunnel_id)) {
            cf.delete_record(&made.zone_id, &r.id).await?;
        }
        row.records.remove(&hostname);
        row.updated_at = shared.now();
        shared.store.tunnel_put(row).await?;
    }
    let missing: Vec<String> = wanted
        .into_iter()
        .filter(|h| !row.records.contains_key(h))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let zones = cf.zones().await?;
    for hostname in missing {
        let zone = super::zone_of(&hostname, zones.iter().map(|z| z.name.as_str()))
            .and_then(|name| zones.iter().find(|z| z.name == name))
            .ok_or_else(|| {
                Error::Precondition(format!(
                    "the account {} has no zone for {hostname}",
                    row.account
                ))
            })?;
        let live = cf.records_named(&zone.id, &hostname, None).await?;
        let record = match live.iter().find(|r| owned(r, &row.tunnel_id)) {
            Some(ours) => ours.clone(),
            None if !live.is_empty() => {
                return Err(Error::Exists(format!(
                    "{hostname} already has DNS records that are not this tunnel's ({}): \
                     remove them or route another hostname",
                    live.iter()
                        .map(|r| format!("{} {}", r.kind, r.content))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            None => {
                cf.create_record(
                    &zone.id,
                    &NewRecord {
                        kind: "CNAME".into(),
                        name: hostname.clone(),
                        content: target(&row.tunnel_id),
                        proxied: true,
                        ttl: 1,
                        comment: Some(comment(row)),
                    },
                )
                .await?
            }
        };
        row.records.insert(
            hostname,
            TunnelRecord {
                zone_id: zone.id.clone(),
                record_id: record.id,
            },
        );
        row.updated_at = shared.now();
        shared.store.tunnel_put(row).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: &str, content: &str, comment: Option<&str>) -> DnsRecord {
        DnsRecord {
            id: "r".into(),
            name: "shop.example.com".into(),
            kind: kind.into(),
            content: content.into(),
            proxied: true,
            ttl: 1,
            comment: comment.map(str::to_owned),
        }
    }

    #[test]
    fn only_marked_records_pointing_at_the_tunnel_are_ours() {
        let mark = Some("gatehouse: tunnel shop (agent x)");
        assert!(owned(&record("CNAME", "t1.cfargotunnel.com", mark), "t1"));
        assert!(!owned(&record("CNAME", "t2.cfargotunnel.com", mark), "t1"));
        assert!(!owned(&record("CNAME", "t1.cfargotunnel.com", None), "t1"));
        assert!(!owned(
            &record("CNAME", "t1.cfargotunnel.com", Some("mine")),
            "t1"
        ));
        assert!(!owned(&record("A", "t1.cfargotunnel.com", mark), "t1"));
    }
}
