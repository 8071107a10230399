//! Join tokens and API tokens.

use std::time::Duration;

use gatehouse_proto::names::{Role, validate_labels};
use gatehouse_proto::v1::*;

use super::Audited;
use crate::Shared;
use crate::error::{Error, Result};
use crate::secrets::{JOIN_PREFIX, Token};
use crate::store::{ApiTokenRow, JoinTokenRow};
use crate::tokens::DEFAULT_TOKEN_TTL;

fn join_token_view(row: &JoinTokenRow, now: i64) -> JoinToken {
    JoinToken {
        id: row.id.clone(),
        labels: row.labels.clone().into_iter().collect(),
        created_at: row.created_at,
        expires_at: row.expires_at,
        used_at: row.used_at.unwrap_or(0),
        used_by_agent: row.used_by.clone().unwrap_or_default(),
        revoked_at: row.revoked_at.unwrap_or(0),
        state: row.state(now).to_owned(),
    }
}

fn api_token_view(row: &ApiTokenRow) -> ApiToken {
    ApiToken {
        id: row.id.clone(),
        name: row.name.clone(),
        role: row.role.clone(),
        created_at: row.created_at,
        revoked_at: row.revoked_at.unwrap_or(0),
        last_used_at: row.last_used_at.unwrap_or(0),
    }
}

impl Audited for CreateJoinTokenRequest {
    type Response = CreateJoinTokenResponse;
    fn target(&self) -> String {
        "join-token".into()
    }
    fn made(response: &CreateJoinTokenResponse) -> Option<String> {
        response
            .info
            .as_ref()
            .map(|t| format!("join-token:{}", t.id))
    }
}

pub(super) async fn create_join_token(
    shared: &Shared,
    req: CreateJoinTokenRequest,
) -> Result<CreateJoinTokenResponse> {
    let ttl = match req.ttl_seconds {
        0 => DEFAULT_TOKEN_TTL,
        s => Duration::from_secs(s),
    };
    let labels = validate_labels(&req.labels)?;
    let token = Token::generate(JOIN_PREFIX);
    let row = crate::tokens::create_join_token(shared, &token, ttl, labels).await?;
    Ok(CreateJoinTokenResponse {
        token: token.reveal(),
        info: Some(join_token_view(&row, shared.now())),
    })
}

pub(super) async fn list_join_tokens(
    shared: &Shared,
    _: ListJoinTokensRequest,
) -> Result<ListJoinTokensResponse> {
    let now = shared.now();
    let tokens = shared.store.join_token_list().await?;
    Ok(ListJoinTokensResponse {
        tokens: tokens.iter().map(|t| join_token_view(t, now)).collect(),
    })
}

impl Audited for RevokeJoinTokenRequest {
    type Response = RevokeJoinTokenResponse;
    fn target(&self) -> String {
        format!("join-token:{}", self.id)
    }
}

pub(super) async fn revoke_join_token(
    shared: &Shared,
    req: RevokeJoinTokenRequest,
) -> Result<RevokeJoinTokenResponse> {
    let row = crate::tokens::revoke_join_token(shared, &req.id).await?;
    Ok(RevokeJoinTokenResponse {
        token: Some(join_token_view(&row, shared.now())),
    })
}

impl Audited for CreateApiTokenRequest {
    type Response = CreateApiTokenResponse;
    fn target(&self) -> String {
        format!("api-token:{}", self.name)
    }
}

pub(super) async fn create_api_token(
    shared: &Shared,
    req: CreateApiTokenRequest,
) -> Result<CreateApiTokenResponse> {
    let role: Role = req.role.parse().map_err(Error::invalid)?;
    let (token, row) = crate::tokens::create_api_token(shared, &req.name, role).await?;
    Ok(CreateApiTokenResponse {
        token: token.reveal(),
        info: Some(api_token_view(&row)),
    })
}

pub(super) async fn list_api_tokens(
    shared: &Shared,
    _: ListApiTokensRequest,
) -> Result<ListApiTokensResponse> {
    let tokens = shared.store.api_token_list().await?;
    Ok(ListApiTokensResponse {
        tokens: tokens.iter().map(api_token_view).collect(),
    })
}

impl Audited for RevokeApiTokenRequest {
    type Response = RevokeApiTokenResponse;
    fn target(&self) -> String {
        format!("api-token:{}", self.id)
    }
}

pub(super) async fn revoke_api_token(
    shared: &Shared,
    req: RevokeApiTokenRequest,
) -> Result<RevokeApiTokenResponse> {
    let row = crate::tokens::revoke_api_token(shared, &req.id).await?;
    Ok(RevokeApiTokenResponse {
        token: Some(api_token_view(&row)),
    })
}
