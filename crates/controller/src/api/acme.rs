//! ACME accounts.

use gatehouse_proto::v1::*;

use super::Audited;
use crate::Shared;
use crate::acme::account::{self, Eab, NewAccountInput};
use crate::error::Result;

impl Audited for CreateAcmeAccountRequest {
    type Response = AcmeAccount;
    fn target(&self) -> String {
        format!("acme-account:{}", self.name)
    }
}

pub(super) async fn create_acme_account(
    shared: &Shared,
    req: CreateAcmeAccountRequest,
) -> Result<AcmeAccount> {
    let eab = (!req.eab_kid.is_empty() || !req.eab_hmac.is_empty()).then(|| Eab {
        kid: req.eab_kid.clone(),
        hmac: req.eab_hmac.clone(),
    });
    let input = NewAccountInput {
        name: req.name,
        ca: req.ca,
        email: req.email,
        agree_tos: req.agree_tos,
        eab,
        ca_roots: req.ca_roots_pem,
    };
    let row = account::create(shared, input).await?;
    Ok(crate::acme::account_view(&row))
}

pub(super) async fn list_acme_accounts(
    shared: &Shared,
    _: ListAcmeAccountsRequest,
) -> Result<ListAcmeAccountsResponse> {
    let accounts = shared.store.acme_accounts().await?;
    Ok(ListAcmeAccountsResponse {
        accounts: accounts.iter().map(crate::acme::account_view).collect(),
    })
}
