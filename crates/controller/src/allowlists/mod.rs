//! Dynamic IP allowlists. Devices (a phone, a cron job) check in with their own token
//! ([`checkin`]); the address the controller sees is allowed until that device's last check-in
//! from it plus the list's TTL. Fixed entries (an office) stay until they expire or are
//! removed. Several devices behind one address share one entry that lives as long as the
//! longest of them; a revoked device's entries go at once.
//!
//! The set is computed from the store at the time asked ([`effective`]), so expiry follows the
//! injected clock exactly; a sweeper deletes expired rows as housekeeping.

pub mod address;
pub mod checkin;
pub mod sync;

use std::collections::BTreeMap;
use std::time::Duration;

use gatehouse_proto::names::ResourceName;
use ipnet::IpNet;

use crate::Shared;
use crate::error::{Error, Result};
use crate::secrets::Token;
use crate::store::{AllowlistRow, DeviceRow, EntryRow, SightingRow};

/// What every allowlist allows now: name → its entries as CIDR text, sorted.
pub type Sets = std::sync::Arc<BTreeMap<String, Vec<String>>>;

/// The prefix of device check-in tokens.
pub const DEVICE_PREFIX: &str = "ghd";
/// The longest TTL a list may have.
const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

/// Where a list is mirrored at Cloudflare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mirror {
    None,
    /// A Rules List (WAF custom rules: `ip.src in $name`).
    Rules,
    /// A Gateway list (Access policies' IP list selector).
    Gateway,
    Both,
}

impl Mirror {
    pub fn parse(text: &str) -> Result<Self> {
        Ok(match text {
            "" | "none" => Mirror::None,
            "rules" => Mirror::Rules,
            "gateway" => Mirror::Gateway,
            "both" => Mirror::Both,
            other => {
                return Err(Error::Invalid(format!(
                    "cloudflare: {other:?} must be rules, gateway or both"
                )));
            }
        })
    }

    pub fn word(self) -> &'static str {
        match self {
            Mirror::None => "",
            Mirror::Rules => "rules",
            Mirror::Gateway => "gateway",
            Mirror::Both => "both",
        }
    }
}

/// What `allowlist create` asks for.
#[derive(Debug, Clone)]
pub struct NewList {
    pub name: String,
    pub ttl: Duration,
    pub cloudflare: Mirror,
    pub account: String,
    pub allow_private: bool,
    pub ipv6_prefix: u8,
}

/// Creates a list.
pub async fn create(shared: &Shared, new: NewList) -> Result<AllowlistRow> {
    let name: ResourceName = new.name.parse()?;
    if new.ttl < Duration::from_secs(60) || new.ttl > MAX_TTL {
        return Err(Error::Invalid("ttl: must be from 1m to 366d".into()));
    }
    if !(1..=128).contains(&new.ipv6_prefix) {
        return Err(Error::Invalid("ipv6_prefix: must be from 1 to 128".into()));
    }
    if new.cloudflare != Mirror::None && new.ipv6_prefix > address::IPV6_PREFIX {
        return Err(Error::Invalid(format!(
            "ipv6_prefix: Cloudflare lists take IPv6 only up to /{} (got /{})",
            address::IPV6_PREFIX,
            new.ipv6_prefix
        )));
    }
    let account = match (new.cloudflare, new.account.as_str()) {
        (Mirror::None, "") => String::new(),
        (Mirror::None, _) => {
            return Err(Error::Invalid(
                "account: only with --cloudflare rules|gateway|both".into(),
            ));
        }
        (_, "") => {
            return Err(Error::Invalid(
                "account: a list mirrored at Cloudflare needs --account".into(),
            ));
        }
        (_, a) => {
            let a: ResourceName = a.parse()?;
            crate::cloudflare::accounts::client(shared, a.as_str()).await?;
            a.to_string()
        }
    };
    if shared.store.allowlist_get(name.as_str()).await?.is_some() {
        return Err(Error::Exists(format!(
            "there is an allowlist {name} already"
        )));
    }
    let row = AllowlistRow {
        name: name.to_string(),
        ttl_seconds: new.ttl.as_secs() as i64,
        cloudflare: new.cloudflare.word().into(),
        account,
        allow_private: new.allow_private,
        ipv6_prefix: new.ipv6_prefix,
        created_at: shared.now(),
    };
    shared.store.allowlist_insert(&row).await?;
    Ok(row)
}

/// A list by name.
pub async fn get(shared: &Shared, name: &str) -> Result<AllowlistRow> {
    let name: ResourceName = name.parse()?;
    shared
        .store
        .allowlist_get(name.as_str())
        .await?
        .ok_or_else(|| {
            Error::NotFound(format!(
                "no allowlist {name}: see gatehousectl allowlist list"
            ))
        })
}

/// Adds a device to a list; the token is returned once and only its hash is kept.
pub async fn add_device(shared: &Shared, list: &str, name: &str) -> Result<(DeviceRow, Token)> {
    let list = get(shared, list).await?;
    let name: ResourceName = name
        .parse()
        .map_err(|e| Error::invalid(format!("device {e}")))?;
    if shared
        .store
        .devices(&list.name)
        .await?
        .iter()
        .any(|d| d.name == name.as_str())
    {
        return Err(Error::Exists(format!(
            "the allowlist {} has a device {name} already (revoke it, or choose another --name)",
            list.name
        )));
    }
    let token = Token::generate(DEVICE_PREFIX);
    let row = DeviceRow {
        id: token.id.clone(),
        list: list.name.clone(),
        name: name.to_string(),
        secret_hash: token.secret_hash(),
        created_at: shared.now(),
        revoked_at: 0,
    };
    shared.store.device_insert(&row).await?;
    Ok((row, token))
}

/// Revokes a device by name: its token stops working and its entries go now.
pub async fn revoke_device(shared: &Shared, list: &str, name: &str) -> Result<DeviceRow> {
    let list = get(shared, list).await?;
    let mut device = shared
        .store
        .devices(&list.name)
        .await?
        .into_iter()
        .find(|d| d.name == name)
        .ok_or_else(|| {
            Error::NotFound(format!(
                "the allowlist {} has no device {}",
                list.name,
                gatehouse_proto::text::escape(name)
            ))
        })?;
    if device.revoked_at == 0 {
        device.revoked_at = shared.now();
        shared
            .store
            .device_revoke(&device.id, device.revoked_at)
            .await?;
    }
    Ok(device)
}

/// The sites (`agent/site`) whose desired state lets in only `list`.
pub async fn sites_using(shared: &Shared, list: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for agent in shared.store.agent_list().await? {
        if let Some(d) = shared.store.desired_latest(&agent.id).await? {
            for site in d
                .state
                .sites
                .iter()
                .filter(|s| s.allow.iter().any(|a| a == list))
            {
                out.push(format!("{}/{}", agent.id, site.name));
            }
        }
    }
    Ok(out)
}

/// A CIDR (or a single address) as an entry, normalised: host bits cleared.
pub fn parse_cidr(text: &str) -> Result<IpNet> {
    let net = text
        .parse::<IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| {
            Error::Invalid(format!(
                "cidr: {:?} is not an address or a CIDR like 198.51.100.0/24",
                gatehouse_proto::text::escape(text)
            ))
        })?;
    Ok(net.trunc())
}

/// Adds (or replaces) a fixed entry; `expires_in` `None` keeps it until removed.
pub async fn add_entry(
    shared: &Shared,
    list: &str,
    cidr: &str,
    comment: &str,
    expires_in: Option<Duration>,
) -> Result<EntryRow> {
    let list = get(shared, list).await?;
    let net = parse_cidr(cidr)?;
    if list.cloudflare != Mirror::None.word()
        && let IpNet::V6(v6) = net
        && v6.prefix_len() > address::IPV6_PREFIX
    {
        return Err(Error::Invalid(format!(
            "cidr: Cloudflare lists take IPv6 only up to /{}; use {}",
            address::IPV6_PREFIX,
            address::entry(net.addr(), address::IPV6_PREFIX)
        )));
    }
    if comment.chars().count() > 200 || comment.chars().any(gatehouse_proto::text::is_unsafe) {
        return Err(Error::Invalid(
            "comment: at most 200 visible characters on one line".into(),
        ));
    }
    let now = shared.now();
    let row = EntryRow {
        list: list.name,
        cidr: net.to_string(),
        comment: comment.to_owned(),
        created_at: now,
        expires_at: expires_in.map_or(0, |d| now + d.as_secs() as i64),
    };
    shared.store.entry_put(&row).await?;
    Ok(row)
}

/// Removes a fixed entry.
pub async fn remove_entry(shared: &Shared, list: &str, cidr: &str) -> Result<()> {
    let list = get(shared, list).await?;
    let net = parse_cidr(cidr)?;
    if !shared
        .store
        .entry_delete(&list.name, &net.to_string())
        .await?
    {
        return Err(Error::NotFound(format!(
            "the allowlist {} has no fixed entry {net}",
            list.name
        )));
    }
    Ok(())
}

/// One address the list allows now, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub cidr: IpNet,
    /// When it goes (`None`: a fixed entry without expiry).
    pub expires_at: Option<i64>,
    /// The devices that checked in from it, with their first and last check-in.
    pub devices: Vec<(String, i64, i64)>,
    /// A fixed entry's comment.
    pub comment: String,
    pub fixed: bool,
}

/// How often expired check-ins and entries are deleted (they stop counting at once anyway).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Deletes expired rows every [`SWEEP_EVERY`] until `shutdown`.
pub async fn sweep(shared: std::sync::Arc<Shared>, shutdown: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
        }
        match shared.store.allowlists_sweep(shared.now()).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "expired allowlist entries removed"),
            Err(e) => tracing::warn!("cannot remove expired allowlist entries: {e}"),
        }
    }
}

/// What a list allows at `now`.
pub async fn effective(shared: &Shared, list: &AllowlistRow, now: i64) -> Result<Vec<Entry>> {
    let sightings = shared.store.sightings(&list.name).await?;
    let entries = shared.store.entries(&list.name).await?;
    Ok(merge(list.ttl_seconds, &sightings, &entries, now))
}

/// The entries alive at `now`: fixed ones not expired, and each address a device checked in
/// from within the TTL; an address shared by devices lives as long as the latest of them.
pub fn merge(
    ttl_seconds: i64,
    sightings: &[SightingRow],
    fixed: &[EntryRow],
    now: i64,
) -> Vec<Entry> {
    let mut out: BTreeMap<IpNet, Entry> = BTreeMap::new();
    for s in sightings {
        let until = s.last_at + ttl_seconds;
        let Ok(cidr) = s.cidr.parse::<IpNet>() else {
            continue;
        };
        if until <= now {
            continue;
        }
        let e = out.entry(cidr).or_insert_with(|| Entry {
            cidr,
            expires_at: Some(until),
            devices: Vec::new(),
            comment: String::new(),
            fixed: false,
        });
        e.expires_at = e.expires_at.map(|t| t.max(until));
        e.devices.push((s.device.clone(), s.first_at, s.last_at));
    }
    for f in fixed {
        let Ok(cidr) = f.cidr.parse::<IpNet>() else {
            continue;
        };
        if f.expires_at != 0 && f.expires_at <= now {
            continue;
        }
        let until = (f.expires_at != 0).then_some(f.expires_at);
        let e = out.entry(cidr).or_insert_with(|| Entry {
            cidr,
            expires_at: until,
            devices: Vec::new(),
            comment: String::new(),
            fixed: true,
        });
        e.fixed = true;
        e.comment = f.comment.clone();
        e.expires_at = match (e.expires_at, until) {
            (None, _) | (_, None) => None,
            (Some(a), Some(b)) => Some(a.max(b)),
        };
    }
    out.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(device: &str, cidr: &str, last: i64) -> SightingRow {
        SightingRow {
            device_id: device.into(),
            device: device.into(),
            cidr: cidr.into(),
            first_at: last - 10,
            last_at: last,
        }
    }

    #[test]
    fn entries_live_until_the_latest_check_in_plus_the_ttl() {
        let sightings = [
            seen("phone", "203.0.113.7/32", 1000),
            seen("laptop", "203.0.113.7/32", 1500),
            seen("phone", "2001:db8::/64", 1200),
        ];
        let fixed = [EntryRow {
            list: "home".into(),
            cidr: "198.51.100.0/24".into(),
            comment: "office".into(),
            created_at: 0,
            expires_at: 0,
        }];
        let at = |now| merge(600, &sightings, &fixed, now);
        let early = at(1100);
        assert_eq!(early.len(), 3);
        let shared = early
            .iter()
            .find(|e| e.cidr.to_string() == "203.0.113.7/32")
            .unwrap();
        assert_eq!(shared.expires_at, Some(2100), "the later device decides");
        assert_eq!(shared.devices.len(), 2);
        let later: Vec<String> = at(1900).iter().map(|e| e.cidr.to_string()).collect();
        assert_eq!(later, ["198.51.100.0/24", "203.0.113.7/32"]);
        let last: Vec<String> = at(2100).iter().map(|e| e.cidr.to_string()).collect();
        assert_eq!(last, ["198.51.100.0/24"], "gone at exactly last + ttl");
    }

    #[test]
    fn cidrs_are_normalised_and_checked() {
        assert_eq!(
            parse_cidr("198.51.100.7/24").unwrap().to_string(),
            "198.51.100.0/24"
        );
        assert_eq!(
            parse_cidr("203.0.113.7").unwrap().to_string(),
            "203.0.113.7/32"
        );
        assert_eq!(
            parse_cidr("2001:db8::1/64").unwrap().to_string(),
            "2001:db8::/64"
        );
        for bad in ["", "10.0.0.0/33", "example.com", "1.2.3.4/x", "1.2.3.4\n"] {
            assert!(
                parse_cidr(bad).unwrap_err().to_string().contains("cidr"),
                "{bad:?}"
            );
        }
    }
}
