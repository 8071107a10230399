//! DNS records: list with filters, create, get, update (PUT and PATCH), delete, with the
//! validation and conflict codes Cloudflare answers.

#![allow(clippy::result_large_err)]

use super::*;

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

pub(super) fn record_json(r: &Record) -> Value {
    let mut v = serde_json::to_value(r).unwrap();
    v["settings"] = json!({});
    v["meta"] = json!({});
    if r.comment.is_some() {
        v["comment_modified_on"] = json!(r.modified_on);
    }
    v["tags_modified_on"] = json!(r.modified_on);
    v
}

pub(super) async fn list_records(
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
pub(super) struct Fields {
    kind: String,
    name: String,
    content: String,
    proxied: bool,
    ttl: u32,
    comment: Option<String>,
}

/// Checks a record body.
pub(super) fn parse_record(
    zone: &Zone,
    body: &Value,
    partial: Option<&Record>,
) -> Result<Fields, Response> {
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
pub(super) fn conflict(
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

pub(super) async fn create_record(
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

pub(super) fn find_record(
    app: &App,
    zone_id: &str,
    id: &str,
    path: &str,
) -> Result<(Zone, Record), Response> {
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

pub(super) async fn get_record(
    AxumState(app): AxumState<App>,
    Path((zone_id, id)): Path<(String, String)>,
    req: Request,
) -> Reply {
    ok(record_json(
        &find_record(&app, &zone_id, &id, req.uri().path())?.1,
    ))
}

pub(super) async fn update_record(
    app: App,
    zone_id: String,
    id: String,
    req: Request,
    patch: bool,
) -> Reply {
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

pub(super) async fn put_record(
    AxumState(app): AxumState<App>,
    Path((zone_id, id)): Path<(String, String)>,
    req: Request,
) -> Reply {
    update_record(app, zone_id, id, req, false).await
}

pub(super) async fn patch_record(
    AxumState(app): AxumState<App>,
    Path((zone_id, id)): Path<(String, String)>,
    req: Request,
) -> Reply {
    update_record(app, zone_id, id, req, true).await
}

pub(super) async fn delete_record(
    AxumState(app): AxumState<App>,
    Path((zone_id, id)): Path<(String, String)>,
    req: Request,
) -> Reply {
    find_record(&app, &zone_id, &id, req.uri().path())?;
    app.state.lock().unwrap().records.retain(|r| r.id != id);
    ok(json!({"id": id}))
}
