//! Join tokens (one-time, expiring, for enrolling a host) and API tokens (a name and a role,
//! for people and automation). Both are stored hashed; the secret is shown once.

use std::collections::BTreeMap;
use std::time::Duration;

use gatehouse_proto::names::Role;

use crate::Shared;
use crate::error::{Error, Result};
use crate::secrets::{API_PREFIX, Token};
use crate::store::{ApiTokenRow, JoinTokenRow};

/// The default join token lifetime.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// The longest join token lifetime.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Stores a join token for `token` (made by the caller, so its id can be audited).
pub async fn create_join_token(
    shared: &Shared,
    token: &Token,
    ttl: Duration,
    labels: BTreeMap<String, String>,
) -> Result<JoinTokenRow> {
    if ttl > MAX_TOKEN_TTL {
        return Err(Error::Invalid("ttl: at most 30 days".into()));
    }
    let now = shared.now();
    let row = JoinTokenRow {
        id: token.id.clone(),
        secret_hash: token.secret_hash(),
        labels,
        created_at: now,
        expires_at: now + ttl.as_secs() as i64,
        used_at: None,
        used_by: None,
        revoked_at: None,
    };
    shared.store.join_token_insert(&row).await?;
    Ok(row)
}

/// Revokes a join token.
pub async fn revoke_join_token(shared: &Shared, id: &str) -> Result<JoinTokenRow> {
    if shared.store.join_token_get(id).await?.is_none() {
        return Err(Error::NotFound(format!(
            "no join token {id:?}: see gatehousectl token list"
        )));
    }
    Ok(shared.store.join_token_revoke(id, shared.now()).await?)
}

/// Creates an API token.
pub async fn create_api_token(
    shared: &Shared,
    name: &str,
    role: Role,
) -> Result<(Token, ApiTokenRow)> {
    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err(Error::Invalid("name: 1 to 64 printable characters".into()));
    }
    let token = Token::generate(API_PREFIX);
    let row = ApiTokenRow {
        id: token.id.clone(),
        name: name.to_owned(),
        role: role.as_str().to_owned(),
        secret_hash: token.secret_hash(),
        created_at: shared.now(),
        revoked_at: None,
        last_used_at: None,
    };
    shared.store.api_token_insert(&row).await?;
    Ok((token, row))
}

/// Revokes an API token.
pub async fn revoke_api_token(shared: &Shared, id: &str) -> Result<ApiTokenRow> {
    if shared.store.api_token_get(id).await?.is_none() {
        return Err(Error::NotFound(format!(
            "no API token {id:?}: see gatehousectl apitoken list"
        )));
    }
    Ok(shared.store.api_token_revoke(id, shared.now()).await?)
}
