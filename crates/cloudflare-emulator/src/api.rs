//! The emulator's HTTP API: envelope `{success, errors, messages, result, result_info}`, the
//! error codes Cloudflare uses, pagination, and the faults injected through [`super::Faults`].

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

/// The Origin CA: signs CSRs for hostnames.
pub(crate) struct OriginCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub cert_pem: String,
}

impl OriginCa {
    pub fn new() -> Self {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Emulated Cloudflare Origin CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        let cert = params.self_signed(&key).expect("self-signed");
        Self {
            cert_pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }
}

impl std::fmt::Debug for OriginCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OriginCa")
    }
}

#[derive(Clone)]
struct App {
    state: Shared,
    ca: Arc<OriginCa>,
}

pub(crate) fn router(state: Shared, ca: Arc<OriginCa>) -> Router {
    let app = App { state, ca };
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
        .fallback(|req: Request| async move { not_found(req.uri().path()) })
        .layer(middleware::from_fn_with_state(app.clone(), faults_and_auth))
        .with_state(app);
    Router::new().nest("/client/v4", api)
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
            s.faults.write_errors -= 1;
            Some((403, 0))
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
        Some(true) => next.run(request).await,
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

fn zone_json(z: &Zone) -> Value {
    json!({
        "id": z.id, "name": z.name, "status": "active", "paused": false, "type": "full",
        "development_mode": 0,
        "name_servers": ["ada.ns.cloudflare.com", "bob.ns.cloudflare.com"],
        "original_name_servers": null, "original_registrar": null, "original_dnshost": null,
        "created_on": "2024-01-01T00:00:00Z", "modified_on": "2024-01-01T00:00:00Z",
        "activated_on": "2024-01-01T00:00:00Z",
        "account": {"id": z.account_id, "name": "Gatehouse test account"},
        "meta": {"cdn_only": false, "custom_certificate_quota": 0, "dns_only": false,
                  "foundation_dns": false, "page_rule_quota": 3, "phishing_detected": false, "step": 2},
        "owner": {"id": "7c5dae5552338874e5053f2534d2767a", "name": "Gatehouse test owner", "type": "user"},
        "permissions": ["#zone:read", "#dns_records:edit"],
        "plan": {"id": "0feeeeeeeeeeeeeeeeeeeeeeeeeeeeee", "name": "Free Website", "price": 0,
                  "currency": "USD", "frequency": "", "is_subscribed": true, "can_subscribe": false,
                  "legacy_id": "free", "legacy_discount": false, "externally_managed": false},
    })
}

async fn list_zones(
    AxumState(app): AxumState<App>,
    Query(q): Query<HashMap<String, String>>,
) -> Reply {
    let zones: Vec<Value> = app
        .state
        .lock()
        .unwrap()
        .zones
        .iter()
        .filter(|z| q.get("name").is_none_or(|n| *n == z.name))
        .map(zone_json)
        .collect();
    paginate(zones, &q, 20, 5, 50)
}

fn zone(app: &App, zone_id: &str, path: &str) -> Result<Zone, Response> {
    app.state
        .lock()
        .unwrap()
        .zones
        .iter()
        .find(|z| z.id == zone_id)
        .cloned()
        .ok_or_else(|| not_found(path))
}

async fn get_zone(
    AxumState(app): AxumState<App>,
    Path(zone_id): Path<String>,
    req: Request,
) -> Reply {
    ok(zone_json(&zone(&app, &zone_id, req.uri().path())?))
}

pub(crate) fn new_record(
    zone: &Zone,
    kind: &str,
    name: &str,
    content: &str,
    proxied: bool,
    ttl: u32,
    comment: Option<String>,
) -> Record {
    let now = now_rfc3339();
    Record {
        id: random_hex(16),
        zone_id: zone.id.clone(),
        zone_name: zone.name.clone(),
        name: name.to_owned(),
        kind: kind.to_owned(),
        content: content.to_owned(),
        proxiable: matches!(kind, "A" | "AAAA" | "CNAME"),
        proxied,
        ttl,
        comment,
        tags: vec![],
        created_on: now.clone(),
        modified_on: now,
    }
}

fn record_json(r: &Record) -> Value {
    let mut v = serde_json::to_value(r).unwrap();
    v["settings"] = json!({});
    v["meta"] = json!({});
    if r.comment.is_some() {
        v["comment_modified_on"] = json!(r.modified_on);
    }
    v["tags_modified_on"] = json!(r.modified_on);
    v
}

async fn list_records(
    AxumState(app): AxumState<App>,
    Path(zone_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    req: Request,
) -> Reply {
    let zone = zone(&app, &zone_id, req.uri().path())?;
    let any = q.get("match").is_some_and(|m| m == "any");
    let records: Vec<Value> = app
        .state
        .lock()
        .unwrap()
        .records
        .iter()
        .filter(|r| r.zone_id == zone.id)
        .filter(|r| {
            let checks = [
                q.get("name").map(|n| r.name == *n),
                q.get("type").map(|t| r.kind == *t),
                q.get("content").map(|c| r.content == *c),
                q.get("proxied").map(|p| r.proxied.to_string() == *p),
            ];
            let mut present = checks.iter().flatten().peekable();
            if present.peek().is_none() {
                return true;
            }
            if any {
                present.any(|c| *c)
            } else {
                present.all(|c| *c)
            }
        })
        .map(record_json)
        .collect();
    paginate(records, &q, 100, 1, 5_000_000)
}

/// The fields of a record body, checked.
struct Fields {
    kind: String,
    name: String,
    content: String,
    proxied: bool,
    ttl: u32,
    comment: Option<String>,
}

/// Checks a record body.
fn parse_record(zone: &Zone, body: &Value, partial: Option<&Record>) -> Result<Fields, Response> {
    let field = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
    let kind = field("type")
        .or_else(|| partial.map(|r| r.kind.clone()))
        .ok_or_else(|| bad_request(9005, "DNS record type is required"))?;
    let mut name = field("name")
        .or_else(|| partial.map(|r| r.name.clone()))
        .ok_or_else(|| bad_request(9007, "DNS record name is required"))?;
    let content = field("content")
        .or_else(|| partial.map(|r| r.content.clone()))
        .ok_or_else(|| bad_request(9008, "DNS record content is required"))?;
    let proxied = body
        .get("proxied")
        .and_then(Value::as_bool)
        .or(partial.map(|r| r.proxied))
        .unwrap_or(false);
    let ttl = body
        .get("ttl")
        .and_then(Value::as_u64)
        .map(|t| t as u32)
        .or(partial.map(|r| r.ttl))
        .unwrap_or(1);
    let comment = field("comment").or_else(|| partial.and_then(|r| r.comment.clone()));
    if name == "@" {
        name = zone.name.clone();
    } else if !name.ends_with(&zone.name) {
        name = format!("{name}.{}", zone.name);
    }
    name = name.to_ascii_lowercase();
    if name != zone.name && !name.ends_with(&format!(".{}", zone.name)) {
        return Err(bad_request(
            1004,
            "DNS Validation Error: the name is not in this zone",
        ));
    }
    match kind.as_str() {
        "A" if content.parse::<std::net::Ipv4Addr>().is_err() => {
            return Err(bad_request(
                9005,
                "Content for A record must be a valid IPv4 address.",
            ));
        }
        "AAAA" if content.parse::<std::net::Ipv6Addr>().is_err() => {
            return Err(bad_request(
                9006,
                "Content for AAAA record must be a valid IPv6 address.",
            ));
        }
        "A" | "AAAA" | "CNAME" | "TXT" => {}
        other => {
            return Err(bad_request(
                9000,
                &format!("DNS record type {other} is not supported by this emulator"),
            ));
        }
    }
    if proxied && kind == "TXT" {
        return Err(bad_request(9004, "This record type cannot be proxied."));
    }
    if ttl != 1 && !(60..=86400).contains(&ttl) {
        return Err(bad_request(
            9009,
            "TTL must be between 60 and 86400 seconds, or 1 for Automatic.",
        ));
    }
    Ok(Fields {
        kind,
        name,
        content,
        proxied,
        ttl,
        comment,
    })
}

/// Cloudflare's conflicts: identical records, and CNAME beside A/AAAA/CNAME at one name.
fn conflict(
    records: &[Record],
    zone_id: &str,
    kind: &str,
    name: &str,
    content: &str,
    except: Option<&str>,
) -> Option<Response> {
    let same_name = records
        .iter()
        .filter(|r| r.zone_id == zone_id && r.name == name && Some(r.id.as_str()) != except);
    for r in same_name {
        if r.kind == kind && r.content == content {
            return Some(bad_request(81058, "An identical record already exists."));
        }
        let address = |k: &str| matches!(k, "A" | "AAAA" | "CNAME");
        if address(kind) && address(&r.kind) && (kind == "CNAME" || r.kind == "CNAME") {
            return Some(bad_request(
                81053,
                "An A, AAAA, or CNAME record with that host already exists.",
            ));
        }
    }
    None
}

async fn create_record(
    AxumState(app): AxumState<App>,
    Path(zone_id): Path<String>,
    req: Request,
) -> Reply {
    let path = req.uri().path().to_owned();
    let zone = zone(&app, &zone_id, &path)?;
    let body = json_body(req).await?;
    let Fields {
        kind,
        name,
        content,
        proxied,
        ttl,
        comment,
    } = parse_record(&zone, &body, None)?;
    let mut s = app.state.lock().unwrap();
    if let Some(e) = conflict(&s.records, &zone.id, &kind, &name, &content, None) {
        return Err(e);
    }
    let record = new_record(&zone, &kind, &name, &content, proxied, ttl, comment);
    s.records.push(record.clone());
    ok(record_json(&record))
}

async fn json_body(req: Request) -> Result<Value, Response> {
    let bytes = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .map_err(|_| bad_request(6007, "Malformed request body"))?;
    serde_json::from_slice(&bytes).map_err(|_| bad_request(9207, "Request body is invalid."))
}

fn find_record(app: &App, zone_id: &str, id: &str, path: &str) -> Result<(Zone, Record), Response> {
    let zone = zone(app, zone_id, path)?;
    let record = app
        .state
        .lock()
        .unwrap()
        .records
        .iter()
        .find(|r| r.zone_id == zone_id && r.id == id)
        .cloned()
        .ok_or_else(|| fail(StatusCode::NOT_FOUND, &[(81044, "Record does not exist.")]))?;
    Ok((zone, record))
}

async fn get_record(
    AxumState(app): AxumState<App>,
    Path((zone_id, id)): Path<(String, String)>,
    req: Request,
) -> Reply {
    ok(record_json(
        &find_record(&app, &zone_id, &id, req.uri().path())?.1,
    ))
}

async fn update_record(app: App, zone_id: String, id: String, req: Request, patch: bool) -> Reply {
    let path = req.uri().path().to_owned();
    let (zone, old) = find_record(&app, &zone_id, &id, &path)?;
    let body = json_body(req).await?;
    let Fields {
        kind,
        name,
        content,
        proxied,
        ttl,
        comment,
    } = parse_record(&zone, &body, patch.then_some(&old))?;
    let mut s = app.state.lock().unwrap();
    if let Some(e) = conflict(&s.records, &zone.id, &kind, &name, &content, Some(&id)) {
        return Err(e);
    }
    let record = s
        .records
        .iter_mut()
        .find(|r| r.id == id)
        .ok_or_else(|| not_found(&path))?;
    record.kind = kind;
    record.name = name;
    record.content = content;
    record.proxied = proxied;
    record.ttl = ttl;
    record.comment = comment;
    record.proxiable = matches!(record.kind.as_str(), "A" | "AAAA" | "CNAME");
    record.modified_on = now_rfc3339();
    ok(record_json(record))
}

async fn put_record(
    AxumState(app): AxumState<App>,
    Path((zone_id, id)): Path<(String, String)>,
    req: Request,
) -> Reply {
    update_record(app, zone_id, id, req, false).await
}

async fn patch_record(
    AxumState(app): AxumState<App>,
    Path((zone_id, id)): Path<(String, String)>,
    req: Request,
) -> Reply {
    update_record(app, zone_id, id, req, true).await
}

async fn delete_record(
    AxumState(app): AxumState<App>,
    Path((zone_id, id)): Path<(String, String)>,
    req: Request,
) -> Reply {
    find_record(&app, &zone_id, &id, req.uri().path())?;
    app.state.lock().unwrap().records.retain(|r| r.id != id);
    ok(json!({"id": id}))
}

const VALIDITIES: [u32; 7] = [7, 30, 90, 365, 730, 1095, 5475];

fn certificate_json(c: &OriginCertificate) -> Value {
    serde_json::to_value(c).unwrap()
}

async fn create_certificate(AxumState(app): AxumState<App>, req: Request) -> Reply {
    let body = json_body(req).await?;
    let csr = body
        .get("csr")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_request(1010, "csr is required"))?;
    let hostnames: Vec<String> = body
        .get("hostnames")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if hostnames.is_empty() {
        return Err(bad_request(1012, "hostnames are required"));
    }
    let request_type = body
        .get("request_type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if request_type != "origin-rsa" && request_type != "origin-ecc" {
        return Err(bad_request(
            1013,
            "request_type must be origin-rsa or origin-ecc",
        ));
    }
    let validity = body
        .get("requested_validity")
        .and_then(Value::as_u64)
        .map(|v| v as u32)
        .unwrap_or(5475);
    if !VALIDITIES.contains(&validity) {
        return Err(bad_request(
            1014,
            "requested_validity must be one of 7, 30, 90, 365, 730, 1095, 5475",
        ));
    }
    let parsed = rcgen::CertificateSigningRequestParams::from_pem(csr)
        .map_err(|e| bad_request(1010, &format!("Failed to validate the CSR: {e}")))?;
    let alg = parsed.public_key.algorithm();
    let ecc = alg == &rcgen::PKCS_ECDSA_P256_SHA256 || alg == &rcgen::PKCS_ECDSA_P384_SHA384;
    if ecc != (request_type == "origin-ecc") {
        return Err(bad_request(
            1010,
            "The CSR key type does not match request_type",
        ));
    }
    let mut params = rcgen::CertificateParams::new(hostnames.clone())
        .map_err(|e| bad_request(1012, &format!("Invalid hostname: {e}")))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "CloudFlare Origin Certificate");
    let now = std::time::SystemTime::now();
    let not_after = now + std::time::Duration::from_secs(u64::from(validity) * 86400);
    params.not_before = time::OffsetDateTime::from(now - std::time::Duration::from_secs(3600));
    params.not_after = time::OffsetDateTime::from(not_after);
    let mut serial = [0u8; 20];
    aws_lc_rs::rand::fill(&mut serial).unwrap();
    serial[0] &= 0x7f;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let cert = params
        .signed_by(&parsed.public_key, &app.ca.issuer)
        .map_err(|e| bad_request(1010, &format!("Failed to sign: {e}")))?;
    let id = num_id(&serial);
    let record = OriginCertificate {
        id,
        certificate: cert.pem(),
        csr: csr.to_owned(),
        hostnames,
        expires_on: humantime::format_rfc3339_seconds(not_after).to_string(),
        request_type,
        requested_validity: validity,
        revoked_at: None,
    };
    app.state.lock().unwrap().certificates.push(record.clone());
    ok(certificate_json(&record))
}

fn num_id(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut acc, b| {
        acc.push_str(&format!("{b:03}"));
        acc
    })
}

async fn list_certificates(
    AxumState(app): AxumState<App>,
    Query(q): Query<HashMap<String, String>>,
) -> Reply {
    let Some(zone_id) = q.get("zone_id") else {
        return Err(bad_request(1001, "zone_id is required"));
    };
    let s = app.state.lock().unwrap();
    let Some(zone) = s.zones.iter().find(|z| &z.id == zone_id) else {
        return Err(bad_request(1001, "Invalid zone_id"));
    };
    let certs: Vec<Value> = s
        .certificates
        .iter()
        .filter(|c| c.revoked_at.is_none())
        .filter(|c| {
            c.hostnames
                .iter()
                .any(|h| h == &zone.name || h.ends_with(&format!(".{}", zone.name)))
        })
        .map(certificate_json)
        .collect();
    drop(s);
    paginate(certs, &q, 20, 5, 50)
}

async fn get_certificate(
    AxumState(app): AxumState<App>,
    Path(id): Path<String>,
    req: Request,
) -> Reply {
    let s = app.state.lock().unwrap();
    let c = s
        .certificates
        .iter()
        .find(|c| c.id == id)
        .ok_or_else(|| not_found(req.uri().path()))?;
    ok(certificate_json(c))
}

async fn revoke_certificate(
    AxumState(app): AxumState<App>,
    Path(id): Path<String>,
    req: Request,
) -> Reply {
    let mut s = app.state.lock().unwrap();
    let c = s
        .certificates
        .iter_mut()
        .find(|c| c.id == id)
        .ok_or_else(|| not_found(req.uri().path()))?;
    let at = c.revoked_at.get_or_insert_with(now_rfc3339).clone();
    ok(json!({"id": id, "revoked_at": at}))
}
