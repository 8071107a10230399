//! The emulator's HTTP API: envelope `{success, errors, messages, result, result_info}`, the
//! error codes Cloudflare uses, pagination, and the faults injected through [`super::Faults`].
//! One file per part of the API: zones, DNS records, Origin CA certificates.

// Handlers answer errors as ready HTTP responses; boxing them would only add noise here.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, Request, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::{OriginCertificate, Record, Shared, Zone, now_rfc3339, random_hex};

mod lists;
mod origin_ca;
mod records;
mod tunnels;
mod zones;

use lists::*;
pub(crate) use lists::{GatewayItem, Lists, RulesItem};
pub(crate) use origin_ca::OriginCa;
use origin_ca::*;
pub(crate) use records::new_record;
use records::*;
use tunnels::*;
pub(crate) use tunnels::{ACCOUNT, token_of, uuid};
use zones::*;

type Reply = Result<Response, Response>;

fn envelope(status: StatusCode, result: Value, info: Option<Value>, messages: Value) -> Response {
    let mut body = json!({"success": status.is_success(), "errors": [], "messages": messages, "result": result});
    if let Some(info) = info {
        body["result_info"] = info;
    }
    (status, axum::Json(body)).into_response()
}

fn ok(result: Value) -> Reply {
    Ok(envelope(StatusCode::OK, result, None, json!([])))
}

/// A failure: `result` is null and `errors` carries Cloudflare's codes.
fn fail(status: StatusCode, errors: &[(u32, &str)]) -> Response {
    let errors: Vec<Value> = errors
        .iter()
        .map(|(c, m)| json!({"code": c, "message": m}))
        .collect();
    (
        status,
        axum::Json(json!({"success": false, "errors": errors, "messages": [], "result": null})),
    )
        .into_response()
}

fn not_found(path: &str) -> Response {
    fail(
        StatusCode::NOT_FOUND,
        &[
            (
                7003,
                &format!("Could not route to {path}, perhaps your object identifier is invalid?"),
            ),
            (7000, "No route for that URI"),
        ],
    )
}

fn bad_request(code: u32, message: &str) -> Response {
    fail(StatusCode::BAD_REQUEST, &[(code, message)])
}

/// Page `items`: `page` from 1, `per_page` clamped to `[min, max]`.
fn paginate(
    items: Vec<Value>,
    q: &HashMap<String, String>,
    default: usize,
    min: usize,
    max: usize,
) -> Reply {
    let page = q
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let per_page = q
        .get("per_page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(default)
        .clamp(min, max);
    let total = items.len();
    let pages = total.div_ceil(per_page).max(1);
    let slice: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let info = json!({
        "page": page, "per_page": per_page, "count": slice.len(),
        "total_count": total, "total_pages": pages,
    });
    Ok(envelope(
        StatusCode::OK,
        Value::Array(slice),
        Some(info),
        json!([]),
    ))
}

#[derive(Clone)]
struct App {
    state: Shared,
    ca: Arc<OriginCa>,
}

pub(crate) fn router(state: Shared, ca: Arc<OriginCa>) -> Router {
    let app = App { state, ca };
    let app_for_edge = app.clone();
    let api = Router::new()
        .route("/user/tokens/verify", get(verify_token))
        .route("/zones", get(list_zones))
        .route("/zones/{zone_id}", get(get_zone))
        .route(
            "/zones/{zone_id}/dns_records",
            get(list_records).post(create_record),
        )
        .route(
            "/zones/{zone_id}/dns_records/{record_id}",
            get(get_record)
                .put(put_record)
                .patch(patch_record)
                .delete(delete_record),
        )
        .route(
            "/certificates",
            get(list_certificates).post(create_certificate),
        )
        .route(
            "/certificates/{id}",
            get(get_certificate).delete(revoke_certificate),
        )
        .route(
            "/accounts/{account_id}/cfd_tunnel",
            get(list_tunnels).post(create_tunnel),
        )
        .route(
            "/accounts/{account_id}/cfd_tunnel/{tunnel_id}",
            get(get_tunnel).patch(patch_tunnel).delete(delete_tunnel),
        )
        .route(
            "/accounts/{account_id}/cfd_tunnel/{tunnel_id}/token",
            get(get_token),
        )
        .route(
            "/accounts/{account_id}/cfd_tunnel/{tunnel_id}/configurations",
            get(get_configuration).put(put_configuration),
        )
        .route(
            "/accounts/{account_id}/cfd_tunnel/{tunnel_id}/connections",
            get(list_connections).delete(delete_connections),
        )
        .route(
            "/accounts/{account_id}/rules/lists",
            get(list_rules_lists).post(create_rules_list),
        )
        .route(
            "/accounts/{account_id}/rules/lists/bulk_operations/{operation_id}",
            get(get_bulk_operation),
        )
        .route(
            "/accounts/{account_id}/rules/lists/{list_id}",
            get(get_rules_list).delete(delete_rules_list),
        )
        .route(
            "/accounts/{account_id}/rules/lists/{list_id}/items",
            get(list_rules_items)
                .post(add_rules_items)
                .put(replace_rules_items)
                .delete(delete_rules_items),
        )
        .route(
            "/accounts/{account_id}/gateway/lists",
            get(list_gateway_lists).post(create_gateway_list),
        )
        .route(
            "/accounts/{account_id}/gateway/lists/{list_id}",
            get(get_gateway_list)
                .patch(patch_gateway_list)
                .delete(delete_gateway_list),
        )
        .route(
            "/accounts/{account_id}/gateway/lists/{list_id}/items",
            get(list_gateway_items),
        )
        .fallback(|req: Request| async move { not_found(req.uri().path()) })
        .layer(middleware::from_fn_with_state(app.clone(), faults_and_auth))
        .with_state(app);
    // The edge is what connectors reach; it has no API token.
    let edge = Router::new()
        .route("/connect", axum::routing::post(edge_connect))
        .route("/disconnect", axum::routing::post(edge_disconnect))
        .with_state(app_for_edge);
    Router::new().nest("/client/v4", api).nest("/edge", edge)
}

/// Faults first (as a real rate limiter answers before anything else), then the bearer token.
async fn faults_and_auth(AxumState(app): AxumState<App>, request: Request, next: Next) -> Response {
    let (delay, fault, token_ok) = {
        let mut s = app.state.lock().expect("emulator lock");
        s.requests += 1;
        let delay = s.faults.delay;
        let fault = if s.faults.rate_limited > 0 {
            s.faults.rate_limited -= 1;
            s.throttled += 1;
            Some((429u16, s.faults.retry_after))
        } else if s.faults.server_errors > 0 {
            s.faults.server_errors -= 1;
            Some((s.faults.server_status, 0))
        } else if s.faults.write_errors > 0 && request.method() != axum::http::Method::GET {
            if s.faults.writes_before_errors > 0 {
                s.faults.writes_before_errors -= 1;
                None
            } else {
                s.faults.write_errors -= 1;
                Some((403, 0))
            }
        } else {
            None
        };
        let token = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        let token_ok = token.and_then(|t| s.tokens.get(&t).map(|t| t.active));
        (delay, fault, token_ok)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match fault {
        Some((429, retry_after)) => {
            let mut r = fail(
                StatusCode::TOO_MANY_REQUESTS,
                &[(
                    971,
                    "Please wait and consider throttling your request speed",
                )],
            );
            let h = r.headers_mut();
            h.insert("Retry-After", retry_after.to_string().parse().unwrap());
            h.insert(
                "Ratelimit",
                format!("\"default\";r=0;t={retry_after}").parse().unwrap(),
            );
            h.insert(
                "Ratelimit-Policy",
                "\"default\";q=1200;w=300".parse().unwrap(),
            );
            return r;
        }
        Some((403, _)) => {
            // A token that may read but not edit.
            return fail(StatusCode::FORBIDDEN, &[(10000, "Authentication error")]);
        }
        Some((status, _)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            return fail(status, &[(10000, "Internal server error")]);
        }
        None => {}
    }
    let verify = request.uri().path().ends_with("/user/tokens/verify");
    match token_ok {
        Some(true) => {
            let write = request.method() != axum::http::Method::GET;
            let done = next.run(request).await;
            let lost = write && {
                let mut s = app.state.lock().expect("emulator lock");
                let lost = s.faults.lost_responses > 0;
                s.faults.lost_responses = s.faults.lost_responses.saturating_sub(1);
                lost
            };
            if lost {
                // The write happened; its answer never reached the caller.
                return fail(StatusCode::BAD_GATEWAY, &[(10000, "Bad gateway")]);
            }
            done
        }
        _ if verify => fail(StatusCode::UNAUTHORIZED, &[(1000, "Invalid API Token")]),
        Some(false) => fail(StatusCode::FORBIDDEN, &[(9109, "Invalid access token")]),
        None => fail(StatusCode::FORBIDDEN, &[(10000, "Authentication error")]),
    }
}

async fn verify_token(AxumState(app): AxumState<App>, headers: HeaderMap) -> Reply {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    let id = app
        .state
        .lock()
        .unwrap()
        .tokens
        .get(&token)
        .map(|t| t.id.clone())
        .unwrap_or_default();
    Ok(envelope(
        StatusCode::OK,
        json!({"id": id, "status": "active"}),
        None,
        json!([{"code": 10000, "message": "This API Token is valid and active", "type": null}]),
    ))
}

async fn json_body(req: Request) -> Result<Value, Response> {
    let bytes = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .map_err(|_| bad_request(6007, "Malformed request body"))?;
    serde_json::from_slice(&bytes).map_err(|_| bad_request(9207, "Request body is invalid."))
}
