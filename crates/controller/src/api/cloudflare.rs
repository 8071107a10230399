//! Cloudflare accounts and their zones.

use gatehouse_proto::v1::*;

use super::Audited;
use crate::Shared;
use crate::cloudflare::accounts::{self, NewAccount};
use crate::error::Result;

impl Audited for AddCloudflareAccountRequest {
    type Response = CloudflareAccount;
    fn target(&self) -> String {
        format!("cloudflare-account:{}", self.name)
    }
}

pub(super) async fn add_cloudflare_account(
    shared: &Shared,
    req: AddCloudflareAccountRequest,
) -> Result<CloudflareAccount> {
    let new = NewAccount {
        name: &req.name,
        api_url: &req.api_url,
        token: &req.token,
    };
    Ok(accounts::view(&accounts::add(shared, new).await?))
}

pub(super) async fn list_cloudflare_accounts(
    shared: &Shared,
    _: ListCloudflareAccountsRequest,
) -> Result<ListCloudflareAccountsResponse> {
    let accounts = shared.store.cloudflare_accounts().await?;
    Ok(ListCloudflareAccountsResponse {
        accounts: accounts.iter().map(accounts::view).collect(),
    })
}

pub(super) async fn list_zones(
    shared: &Shared,
    req: ListZonesRequest,
) -> Result<ListZonesResponse> {
    let zones = accounts::zones(shared, &req.account).await?;
    Ok(ListZonesResponse { zones })
}
