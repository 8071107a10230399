//! A device's check-in: its token says which device and list; the address recorded is the one
//! the controller sees (a forwarded one only from a trusted proxy), kept as its entry (/32, or
//! the list's IPv6 prefix). Bad tokens from one address are slowed down, a device checking in
//! faster than `checkin.min_interval` is told when to come back, and nothing is recorded for
//! a refused check-in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use ipnet::IpNet;

use super::{DEVICE_PREFIX, address};
use crate::Shared;
use crate::secrets::Token;
use crate::store::StoreError;

/// A check-in that was recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub list: String,
    pub device: String,
    pub address: IpNet,
    /// When the entry goes unless the device checks in again.
    pub expires_at: i64,
}

/// Why a check-in was refused; nothing was recorded.
#[derive(Debug, thiserror::Error)]
pub enum CheckinError {
    #[error("a device token is required: Authorization: Bearer {DEVICE_PREFIX}_…")]
    MissingToken,
    #[error("unknown or revoked device token")]
    BadToken,
    #[error("too many bad tokens from this address: try again in {0} s")]
    SlowDown(i64),
    #[error("this device checked in {ago} s ago: check in again in {retry_in} s")]
    TooSoon { ago: i64, retry_in: i64 },
    #[error("{address} is {why}, which the allowlist {list} does not accept")]
    NotPublic {
        address: IpAddr,
        why: &'static str,
        list: String,
    },
    #[error("{0}")]
    BadHeader(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// When each device last checked in (this controller's view), for the minimum interval.
#[derive(Debug, Default)]
pub struct LastCheckins(Mutex<HashMap<String, i64>>);

impl LastCheckins {
    /// Records a check-in at `now` unless the previous one was less than `min` ago.
    fn take(&self, device: &str, now: i64, min: i64) -> Result<(), CheckinError> {
        let mut last = self.0.lock().expect("check-in lock");
        if last.len() > 100_000 {
            last.retain(|_, t| now - *t < min);
        }
        if let Some(t) = last.get(device)
            && now - t < min
        {
            return Err(CheckinError::TooSoon {
                ago: now - t,
                retry_in: min - (now - t),
            });
        }
        last.insert(device.to_owned(), now);
        Ok(())
    }
}

/// Checks a device in from `peer` (the TCP peer), with the request's `Authorization`,
/// `CF-Connecting-IP` and `X-Forwarded-For` headers.
pub async fn checkin(
    shared: &Shared,
    peer: IpAddr,
    authorization: Option<&str>,
    cf_connecting_ip: Option<&str>,
    forwarded_for: Option<&str>,
) -> Result<Accepted, CheckinError> {
    let now = shared.now();
    let config = shared.config();
    let client = address::client(
        peer,
        &config.checkin.trusted_proxies,
        cf_connecting_ip,
        forwarded_for,
    )
    .map_err(CheckinError::BadHeader)?;
    let source = client.to_string();
    let limit = &shared.failed_checkins;
    limit
        .check(&source, now)
        .map_err(|r| CheckinError::SlowDown(r.retry_in))?;
    let bad = || {
        limit.record(&source, now);
        CheckinError::BadToken
    };
    let text = authorization
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or(CheckinError::MissingToken)?;
    let token = Token::parse(DEVICE_PREFIX, text).map_err(|_| bad())?;
    let device = shared
        .store
        .device_get(&token.id)
        .await?
        .filter(|d| d.revoked_at == 0 && token.matches(&d.secret_hash))
        .ok_or_else(bad)?;
    let list = shared
        .store
        .allowlist_get(&device.list)
        .await?
        .ok_or_else(bad)?;
    if !list.allow_private
        && let Some(why) = address::not_public(client)
    {
        return Err(CheckinError::NotPublic {
            address: address::unmapped(client),
            why,
            list: list.name,
        });
    }
    shared.last_checkins.take(
        &device.id,
        now,
        config.checkin.min_interval.as_secs() as i64,
    )?;
    let cidr = address::entry(client, list.ipv6_prefix);
    shared
        .store
        .sighting_record(&device.id, &cidr.to_string(), now)
        .await?;
    // A new address changes the set at once; a device refreshing an address the hosts and
    // Cloudflare already have changes nothing there (expiry is the sync loop's tick).
    let known = shared
        .allowlist_sets
        .borrow()
        .get(&list.name)
        .is_some_and(|set| set.binary_search(&cidr.to_string()).is_ok());
    if !known {
        shared.allowlists_changed.notify_waiters();
    }
    Ok(Accepted {
        list: list.name,
        device: device.name,
        address: cidr,
        expires_at: now + list.ttl_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_checking_in_too_soon_is_told_when_to_come_back() {
        let last = LastCheckins::default();
        last.take("d1", 100, 10).unwrap();
        match last.take("d1", 104, 10) {
            Err(CheckinError::TooSoon { ago, retry_in }) => assert_eq!((ago, retry_in), (4, 6)),
            other => panic!("{other:?}"),
        }
        last.take("d2", 104, 10).unwrap();
        last.take("d1", 110, 10).unwrap();
    }
}
