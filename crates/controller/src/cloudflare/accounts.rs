//! Cloudflare accounts: a name, an API URL and a token sealed at rest. Adding one checks the
//! token with Cloudflare first.

use gatehouse_proto::names::ResourceName;
use gatehouse_proto::v1 as pb;
use tracing::info;

use super::{ApiToken, Client, DEFAULT_API_URL};
use crate::Shared;
use crate::error::{Error, Result};
use crate::store::CloudflareAccountRow;

fn sealed_name(account: &str) -> String {
    format!("cloudflare.account.{account}")
}

/// What `cloudflare account add` asks for.
#[derive(Debug)]
pub struct NewAccount<'a> {
    pub name: &'a str,
    /// Empty for Cloudflare's public API.
    pub api_url: &'a str,
    pub token: &'a str,
}

/// Verifies the token with Cloudflare, then stores the account with the token sealed.
pub async fn add(shared: &Shared, new: NewAccount<'_>) -> Result<CloudflareAccountRow> {
    let name: ResourceName = new.name.parse()?;
    let api_url = match new.api_url {
        "" => DEFAULT_API_URL.to_owned(),
        url => url.to_owned(),
    };
    if !api_url.starts_with("https://") && !api_url.starts_with("http://") {
        return Err(Error::Invalid("api_url: must be an http(s) URL".into()));
    }
    if new.token.trim().is_empty() {
        return Err(Error::Invalid(
            "token: empty (is the token file empty?)".into(),
        ));
    }
    let token = ApiToken::new(new.token);
    let token_id = Client::new(&api_url, token.clone())
        .verify_token()
        .await
        .map_err(|e| Error::Precondition(format!("Cloudflare refused the token: {e}")))?;
    if shared
        .store
        .cloudflare_accounts()
        .await?
        .iter()
        .any(|a| a.name == name.as_str())
    {
        return Err(Error::Exists(format!("an account named {name} exists")));
    }
    let row = CloudflareAccountRow {
        name: name.to_string(),
        api_url,
        token_sealed: shared
            .master_key
            .seal(&sealed_name(name.as_str()), token.expose().as_bytes()),
        token_id,
        created_at: shared.now(),
    };
    shared.store.cloudflare_account_insert(&row).await?;
    info!(account = %row.name, "Cloudflare account added");
    Ok(row)
}

/// The API view of an account (never the token).
pub fn view(row: &CloudflareAccountRow) -> pb::CloudflareAccount {
    pb::CloudflareAccount {
        name: row.name.clone(),
        api_url: row.api_url.clone(),
        token_id: row.token_id.clone(),
        created_at: row.created_at,
    }
}

/// A client for a stored account.
pub async fn client(shared: &Shared, account: &str) -> Result<Client> {
    let row = shared
        .store
        .cloudflare_accounts()
        .await?
        .into_iter()
        .find(|a| a.name == account)
        .ok_or_else(|| {
            Error::NotFound(format!(
                "no Cloudflare account {account:?}: add it with gatehousectl cloudflare account add"
            ))
        })?;
    let token = shared
        .master_key
        .open(&sealed_name(&row.name), &row.token_sealed)
        .map_err(|e| Error::Internal(e.to_string()))?;
    let token =
        String::from_utf8(token).map_err(|_| Error::Internal("stored token is damaged".into()))?;
    Ok(Client::new(&row.api_url, ApiToken::new(&token)))
}

/// Zones of one account, or of all when `account` is empty.
pub async fn zones(shared: &Shared, account: &str) -> Result<Vec<pb::Zone>> {
    let accounts: Vec<String> = shared
        .store
        .cloudflare_accounts()
        .await?
        .into_iter()
        .map(|a| a.name)
        .filter(|a| account.is_empty() || a == account)
        .collect();
    if !account.is_empty() && accounts.is_empty() {
        return Err(Error::NotFound(format!(
            "no Cloudflare account {account:?}"
        )));
    }
    let mut out = Vec::new();
    for a in accounts {
        for z in client(shared, &a).await?.zones().await? {
            out.push(pb::Zone {
                id: z.id,
                name: z.name,
                status: z.status,
                account: a.clone(),
            });
        }
    }
    Ok(out)
}
