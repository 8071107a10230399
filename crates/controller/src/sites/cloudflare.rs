//! A site's name in a Cloudflare zone: the zone, a name, the A/AAAA records gatehouse creates,
//! and the Origin CA certificates issued for it. Every step that creates something at
//! Cloudflare records it in the store first, so a failure midway leaves a state `site show`
//! explains and a retry completes, and `site delete` removes exactly what was made.

use gatehouse_proto::names::DomainName;
use gatehouse_proto::names::ResourceName;
use gatehouse_proto::v1 as pb;
use tracing::info;

use crate::Shared;
use crate::cloudflare::accounts::client;
use crate::cloudflare::dns::NewRecord;
use crate::error::{Error, Result};
use crate::secrets::random_id;
use crate::store::CloudflareSiteRow;

/// Picks the first candidate that `taken` does not refuse.
pub async fn pick_name<F, Fut>(
    mut candidates: impl Iterator<Item = String>,
    mut taken: F,
) -> Result<String>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    for _ in 0..20 {
        let Some(c) = candidates.next() else { break };
        if !taken(c.clone()).await? {
            return Ok(c);
        }
    }
    Err(Error::Exhausted(
        "could not find a free agent- name in 20 tries".into(),
    ))
}

/// Random `agent-<10 [a-z0-9]>` labels.
pub fn agent_names() -> impl Iterator<Item = String> {
    std::iter::repeat_with(|| format!("agent-{}", random_id(10)))
}

/// Sets up (or completes) a site's name at Cloudflare: the zone, a name, A/AAAA records.
/// The site is named by its label: `cf.name`, or the agent's existing name in that zone, or a
/// free `agent-` name. Running it again changes nothing. Each record created is stored before
/// the next step.
pub async fn set_up(
    shared: &Shared,
    agent_id: &str,
    cf: &pb::CloudflareSite,
    reported_addresses: &[String],
) -> Result<CloudflareSiteRow> {
    let client = client(shared, &cf.account).await?;
    let zone_name: DomainName = cf.zone.parse()?;
    let ours: Vec<CloudflareSiteRow> = shared
        .store
        .cloudflare_sites()
        .await?
        .into_iter()
        .filter(|r| r.agent_id == agent_id && r.zone == zone_name.as_str())
        .collect();
    let existing = if cf.name.is_empty() {
        ours.into_iter().next()
    } else {
        let label: ResourceName = cf.name.parse()?;
        ours.into_iter().find(|r| r.site == label.as_str())
    };
    let zone = client
        .zone_by_name(zone_name.as_str())
        .await?
        .ok_or_else(|| {
            Error::Precondition(format!(
                "the account {} has no zone {zone_name}: see gatehousectl cloudflare zones",
                cf.account
            ))
        })?;
    let v4 = if cf.address.is_empty() {
        reported_addresses
            .iter()
            .filter_map(|a| a.parse::<std::net::Ipv4Addr>().ok())
            .find(|ip| {
                !ip.is_loopback() && !ip.is_private() && !ip.is_link_local() && !ip.is_unspecified()
            })
            .ok_or_else(|| {
                Error::Precondition(
                    "the agent reported no public IPv4 address: pass --address".into(),
                )
            })?
    } else {
        cf.address.parse().map_err(|_| {
            Error::Invalid(format!("address {:?} is not an IPv4 address", cf.address))
        })?
    };
    let v6 = if cf.address_v6.is_empty() {
        reported_addresses
            .iter()
            .filter_map(|a| a.parse::<std::net::Ipv6Addr>().ok())
            .find(|ip| (ip.segments()[0] & 0xe000) == 0x2000)
    } else {
        Some(cf.address_v6.parse().map_err(|_| {
            Error::Invalid(format!(
                "address_v6 {:?} is not an IPv6 address",
                cf.address_v6
            ))
        })?)
    };

    // The name: as before for this site, as asked, or a free agent- name. Names are checked
    // against the zone's live records, not only against what gatehouse knows.
    let fqdn = match (&existing, cf.name.as_str()) {
        (Some(row), "") => row.fqdn.clone(),
        (Some(row), label) if row.fqdn == format!("{label}.{zone_name}") => row.fqdn.clone(),
        (_, "") => {
            let known: Vec<String> = shared
                .store
                .cloudflare_sites()
                .await?
                .into_iter()
                .map(|s| s.fqdn)
                .collect();
            let label = pick_name(agent_names(), |candidate| {
                let fqdn = format!("{candidate}.{zone_name}");
                let known = known.contains(&fqdn);
                let client = client.clone();
                let zone_id = zone.id.clone();
                async move {
                    if known {
                        return Ok(true);
                    }
                    Ok(!client
                        .records_named(&zone_id, &fqdn, None)
                        .await?
                        .is_empty())
                }
            })
            .await?;
            format!("{label}.{zone_name}")
        }
        (_, label) => {
            let fqdn: DomainName = format!("{label}.{zone_name}").parse()?;
            let live = client.records_named(&zone.id, fqdn.as_str(), None).await?;
            let ours = existing
                .as_ref()
                .map(|r| r.record_ids.clone())
                .unwrap_or_default();
            if live.iter().any(|r| !ours.contains(&r.id)) {
                return Err(Error::Exists(format!(
                    "{fqdn} already has records in the zone that gatehouse did not make; choose another --name"
                )));
            }
            fqdn.to_string()
        }
    };
    let label = fqdn
        .strip_suffix(&format!(".{zone_name}"))
        .unwrap_or(&fqdn)
        .to_owned();
    let site = label.as_str();
    let mut row = existing.unwrap_or(CloudflareSiteRow {
        agent_id: agent_id.to_owned(),
        site: site.to_owned(),
        account: cf.account.clone(),
        zone_id: zone.id.clone(),
        zone: zone_name.to_string(),
        fqdn: fqdn.clone(),
        proxied: cf.proxied,
        record_ids: Vec::new(),
        certificate_ids: Vec::new(),
        state: "started".into(),
        created_at: shared.now(),
    });
    row.fqdn = fqdn.clone();
    row.proxied = cf.proxied;
    shared.store.cloudflare_site_put(&row).await?;

    let comment = Some(format!("gatehouse: agent {agent_id}, site {site}"));
    let mut wanted = vec![("A", v4.to_string())];
    if let Some(ip) = v6 {
        wanted.push(("AAAA", ip.to_string()));
    }
    for (kind, content) in wanted {
        let record = NewRecord {
            kind: kind.into(),
            name: fqdn.clone(),
            content,
            proxied: cf.proxied,
            ttl: 1,
            comment: comment.clone(),
        };
        let live = match client
            .records_named(&zone.id, &fqdn, Some(kind))
            .await
            .map_err(Error::from)
        {
            Ok(l) => l,
            Err(e) => return Err(fail(shared, &mut row, "listing records", e).await),
        };
        let result = match live.iter().find(|r| row.record_ids.contains(&r.id)) {
            Some(r) if r.content == record.content && r.proxied == record.proxied => Ok(r.clone()),
            Some(r) => client.update_record(&zone.id, &r.id, &record).await,
            None => client.create_record(&zone.id, &record).await,
        };
        match result {
            Ok(r) => {
                if !row.record_ids.contains(&r.id) {
                    row.record_ids.push(r.id);
                    shared.store.cloudflare_site_put(&row).await?;
                }
            }
            Err(e) => {
                return Err(fail(shared, &mut row, &format!("the {kind} record"), e.into()).await);
            }
        }
    }
    row.state = "ready".into();
    shared.store.cloudflare_site_put(&row).await?;
    info!(agent_id, site, fqdn = %row.fqdn, proxied = row.proxied, "site name ready at Cloudflare");
    Ok(row)
}

/// Records where the set-up (or the removal) stopped, and says how to finish it.
async fn fail(shared: &Shared, row: &mut CloudflareSiteRow, step: &str, e: Error) -> Error {
    row.state = format!("stopped at {step}: {e}");
    let _ = shared.store.cloudflare_site_put(row).await;
    e.reworded(|_| {
        format!(
            "{}; run the same command again to finish (site show explains)",
            row.state
        )
    })
}

/// Removes the site's records and revokes its Origin CA certificates, then forgets it.
pub async fn tear_down(shared: &Shared, agent_id: &str, site: &str) -> Result<()> {
    let Some(mut row) = shared.store.cloudflare_site_get(agent_id, site).await? else {
        return Ok(());
    };
    let client = client(shared, &row.account).await?;
    while let Some(id) = row.record_ids.last().cloned() {
        if let Err(e) = client.delete_record(&row.zone_id, &id).await {
            return Err(fail(shared, &mut row, "deleting records", e.into()).await);
        }
        row.record_ids.pop();
        shared.store.cloudflare_site_put(&row).await?;
    }
    while let Some(id) = row.certificate_ids.last().cloned() {
        if let Err(e) = client.revoke_origin_certificate(&id).await {
            return Err(fail(shared, &mut row, "revoking certificates", e.into()).await);
        }
        row.certificate_ids.pop();
        shared.store.cloudflare_site_put(&row).await?;
    }
    shared.store.cloudflare_site_delete(agent_id, site).await?;
    info!(agent_id, site, "site removed from Cloudflare");
    Ok(())
}

/// Signs a host's CSR with Cloudflare's Origin CA for `hostnames`, recording the certificate
/// so `site delete` revokes it.
pub async fn issue_origin(
    shared: &Shared,
    agent_id: &str,
    account: &str,
    csr_der: &[u8],
    hostnames: &[String],
) -> Result<String> {
    let client = client(shared, account).await?;
    let csr = crate::cloudflare::origin_ca::csr_pem(csr_der);
    let cert = client
        .create_origin_certificate(&csr, hostnames, 90)
        .await?;
    for mut row in shared.store.cloudflare_sites().await? {
        if row.agent_id == agent_id && hostnames.contains(&row.fqdn) {
            row.certificate_ids.push(cert.id.clone());
            shared.store.cloudflare_site_put(&row).await?;
        }
    }
    Ok(cert.certificate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn taken_names_are_skipped() {
        let candidates = ["agent-aaaaaaaaaa", "agent-bbbbbbbbbb", "agent-cccccccccc"]
            .into_iter()
            .map(str::to_owned);
        let picked = pick_name(candidates, |c| async move { Ok(c != "agent-cccccccccc") })
            .await
            .unwrap();
        assert_eq!(picked, "agent-cccccccccc");
        let none = pick_name(std::iter::repeat("agent-x".to_owned()), |_| async {
            Ok(true)
        })
        .await;
        assert!(none.is_err());
        assert!(
            agent_names()
                .take(5)
                .all(|n| n.len() == 16 && n.starts_with("agent-"))
        );
    }
}
