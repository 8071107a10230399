//! Dynamic IP allowlists over the admin API (the work is in `crate::allowlists`).

use std::time::Duration;

use gatehouse_proto::v1::*;

use super::Audited;
use crate::Shared;
use crate::allowlists::{self, Mirror, NewList};
use crate::error::Result;
use crate::store::{AllowlistRow, DeviceRow};

/// A list's TTL when the request gives none.
const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

impl Audited for CreateAllowlistRequest {
    type Response = Allowlist;
    fn target(&self) -> String {
        format!("allowlist:{}", self.name)
    }
    fn detail(&self) -> Option<String> {
        (!self.cloudflare.is_empty()).then(|| format!("cloudflare={}", self.cloudflare))
    }
}

impl Audited for GetAllowlistRequest {
    type Response = Allowlist;
    fn target(&self) -> String {
        format!("allowlist:{}", self.name)
    }
}

impl Audited for AllowlistDeviceRequest {
    type Response = AddAllowlistDeviceResponse;
    fn target(&self) -> String {
        format!("allowlist:{}/device:{}", self.list, self.name)
    }
    fn made(response: &Self::Response) -> Option<String> {
        response.device.as_ref().map(|d| format!("device:{}", d.id))
    }
}

impl Audited for AddAllowlistEntryRequest {
    type Response = Allowlist;
    fn target(&self) -> String {
        format!("allowlist:{}/entry:{}", self.list, self.cidr)
    }
}

impl Audited for RemoveAllowlistEntryRequest {
    type Response = Allowlist;
    fn target(&self) -> String {
        format!("allowlist:{}/entry:{}", self.list, self.cidr)
    }
}

fn device_view(d: &DeviceRow) -> AllowlistDevice {
    AllowlistDevice {
        id: d.id.clone(),
        name: d.name.clone(),
        created_at: d.created_at,
        revoked_at: d.revoked_at,
        ..AllowlistDevice::default()
    }
}

/// A list with what it allows now and its devices.
async fn view(shared: &Shared, list: &AllowlistRow) -> Result<Allowlist> {
    let now = shared.now();
    let entries = allowlists::effective(shared, list, now).await?;
    let mut devices: Vec<AllowlistDevice> = shared
        .store
        .devices(&list.name)
        .await?
        .iter()
        .map(device_view)
        .collect();
    for e in &entries {
        for (name, _, last) in &e.devices {
            if let Some(d) = devices.iter_mut().find(|d| &d.name == name)
                && *last >= d.last_checkin_at
            {
                d.last_checkin_at = *last;
                d.last_address = e.cidr.to_string();
            }
        }
    }
    let sync = [
        crate::allowlists::sync::Target::Rules,
        crate::allowlists::sync::Target::Gateway,
    ]
    .into_iter()
    .filter(|t| list.cloudflare == "both" || list.cloudflare == t.word())
    .map(|t| {
        let status = shared.list_sync.get(&list.name, t).unwrap_or_default();
        AllowlistSync {
            target: t.word().into(),
            name: t.list_name(&list.name),
            list_id: status.list_id,
            synced_at: status.synced_at,
            items: status.items as u64,
            error: status.error,
        }
    })
    .collect();
    Ok(Allowlist {
        sync,
        name: list.name.clone(),
        ttl_seconds: list.ttl_seconds.max(0) as u64,
        cloudflare: list.cloudflare.clone(),
        account: list.account.clone(),
        allow_private: list.allow_private,
        ipv6_prefix: u32::from(list.ipv6_prefix),
        created_at: list.created_at,
        devices,
        entries: entries
            .into_iter()
            .map(|e| AllowlistEntry {
                cidr: e.cidr.to_string(),
                expires_at: e.expires_at.unwrap_or(0),
                devices: e
                    .devices
                    .into_iter()
                    .map(|(device, first, last)| AllowlistSighting {
                        device,
                        first_checkin_at: first,
                        last_checkin_at: last,
                    })
                    .collect(),
                comment: e.comment,
                fixed: e.fixed,
            })
            .collect(),
    })
}

pub(super) async fn create_allowlist(
    shared: &Shared,
    r: CreateAllowlistRequest,
) -> Result<Allowlist> {
    let prefix = match r.ipv6_prefix {
        0 => allowlists::address::IPV6_PREFIX,
        n => u8::try_from(n).unwrap_or(u8::MAX),
    };
    let list = allowlists::create(
        shared,
        NewList {
            name: r.name,
            ttl: match r.ttl_seconds {
                0 => DEFAULT_TTL,
                s => Duration::from_secs(s),
            },
            cloudflare: Mirror::parse(&r.cloudflare)?,
            account: r.account,
            allow_private: r.allow_private,
            ipv6_prefix: prefix,
        },
    )
    .await?;
    view(shared, &list).await
}

pub(crate) async fn list_allowlists(
    shared: &Shared,
    _: ListAllowlistsRequest,
) -> Result<ListAllowlistsResponse> {
    let mut out = Vec::new();
    for list in shared.store.allowlists().await? {
        out.push(view(shared, &list).await?);
    }
    Ok(ListAllowlistsResponse { allowlists: out })
}

pub(super) async fn get_allowlist(shared: &Shared, r: GetAllowlistRequest) -> Result<Allowlist> {
    let list = allowlists::get(shared, &r.name).await?;
    view(shared, &list).await
}

pub(super) async fn delete_allowlist(shared: &Shared, r: GetAllowlistRequest) -> Result<Allowlist> {
    let list = allowlists::get(shared, &r.name).await?;
    let users = allowlists::sites_using(shared, &list.name).await?;
    if !users.is_empty() {
        return Err(crate::error::Error::Precondition(format!(
            "sites use the allowlist {}: {}; remove it from them first (site create … without --allow)",
            list.name,
            users.join(", ")
        )));
    }
    let shown = view(shared, &list).await?;
    shared.store.allowlist_delete(&list.name).await?;
    shared.allowlists_changed.notify_waiters();
    Ok(shown)
}

pub(super) async fn add_allowlist_device(
    shared: &Shared,
    r: AllowlistDeviceRequest,
) -> Result<AddAllowlistDeviceResponse> {
    let (device, token) = allowlists::add_device(shared, &r.list, &r.name).await?;
    Ok(AddAllowlistDeviceResponse {
        device: Some(device_view(&device)),
        token: token.reveal(),
    })
}

impl Audited for RevokeAllowlistDeviceRequest {
    type Response = AllowlistDevice;
    fn target(&self) -> String {
        format!("allowlist:{}/device:{}", self.list, self.name)
    }
}

pub(super) async fn revoke_allowlist_device(
    shared: &Shared,
    r: RevokeAllowlistDeviceRequest,
) -> Result<AllowlistDevice> {
    let device = allowlists::revoke_device(shared, &r.list, &r.name).await?;
    shared.allowlists_changed.notify_waiters();
    Ok(device_view(&device))
}

pub(super) async fn add_allowlist_entry(
    shared: &Shared,
    r: AddAllowlistEntryRequest,
) -> Result<Allowlist> {
    let expires = (r.expires_in_seconds > 0).then(|| Duration::from_secs(r.expires_in_seconds));
    allowlists::add_entry(shared, &r.list, &r.cidr, &r.comment, expires).await?;
    shared.allowlists_changed.notify_waiters();
    get_allowlist(shared, GetAllowlistRequest { name: r.list }).await
}

pub(super) async fn remove_allowlist_entry(
    shared: &Shared,
    r: RemoveAllowlistEntryRequest,
) -> Result<Allowlist> {
    allowlists::remove_entry(shared, &r.list, &r.cidr).await?;
    shared.allowlists_changed.notify_waiters();
    get_allowlist(shared, GetAllowlistRequest { name: r.list }).await
}
