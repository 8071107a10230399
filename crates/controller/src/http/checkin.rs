//! `POST /v1/allowlist/checkin` with `Authorization: Bearer ghd_…`: the HTTP side of
//! [`crate::allowlists::checkin`]. It answers JSON: the address recorded and when it expires,
//! or `{"error": …}` with a status that says what to do (401, 403, 413, 429 with
//! `Retry-After`, 400, 503).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::Shared;
use crate::allowlists::checkin::{CheckinError, checkin as check_in};

/// The largest body a check-in may carry (it needs none; `{}` is fine).
pub const BODY_LIMIT: usize = 1024;

pub(super) async fn checkin(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !body.iter().all(u8::is_ascii_whitespace)
        && serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&body).is_err()
    {
        return error(
            StatusCode::BAD_REQUEST,
            "the body must be empty or a JSON object",
            None,
        );
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let result = check_in(
        &shared,
        peer.ip(),
        header(header::AUTHORIZATION.as_str()),
        header("cf-connecting-ip"),
        header("x-forwarded-for"),
    )
    .await;
    match result {
        Ok(ok) => {
            let expires =
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(ok.expires_at.max(0) as u64);
            (
                StatusCode::OK,
                axum::Json(json!({
                    "list": ok.list,
                    "device": ok.device,
                    "address": ok.address.to_string(),
                    "expires_at": humantime::format_rfc3339_seconds(expires).to_string(),
                    "expires_in": ok.expires_at - shared.now(),
                })),
            )
                .into_response()
        }
        Err(e) => {
            let (status, retry) = match &e {
                CheckinError::MissingToken | CheckinError::BadToken => {
                    (StatusCode::UNAUTHORIZED, None)
                }
                CheckinError::SlowDown(s) => (StatusCode::TOO_MANY_REQUESTS, Some(*s)),
                CheckinError::TooSoon { retry_in, .. } => {
                    (StatusCode::TOO_MANY_REQUESTS, Some(*retry_in))
                }
                CheckinError::NotPublic { .. } => (StatusCode::FORBIDDEN, None),
                CheckinError::BadHeader(_) => (StatusCode::BAD_REQUEST, None),
                CheckinError::Store(e) => {
                    tracing::warn!("store error: {e}");
                    return error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the controller's store is unavailable; try again",
                        Some(5),
                    );
                }
            };
            error(status, &e.to_string(), retry)
        }
    }
}

fn error(status: StatusCode, message: &str, retry_after: Option<i64>) -> Response {
    let mut r = (status, axum::Json(json!({ "error": message }))).into_response();
    if let Some(s) = retry_after {
        r.headers_mut().insert(
            header::RETRY_AFTER,
            s.max(1).to_string().parse().expect("a number"),
        );
    }
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("ascii"));
    }
    r
}
