//! Rules Lists: item writes are asynchronous bulk operations, one pending per account.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use axum::extract::Query;
use axum::extract::{Path, Request, State as AxumState};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::super::{App, Reply, bad_request, fail, json_body, not_found, ok};
use super::{BulkChange, BulkOp, RulesList, check_account};
use crate::{now_rfc3339, random_hex};

fn rules_json(l: &RulesList) -> Value {
    json!({
        "id": l.id, "name": l.name, "kind": "ip", "description": l.description,
        "num_items": l.items.len(), "num_referencing_filters": 0,
        "created_on": l.created_on, "modified_on": l.modified_on,
    })
}

/// An item address as Rules Lists take it: an IPv4 address or CIDR, or an IPv6 CIDR from /4 to
/// /64 (a single IPv6 address is refused).
fn rules_ip(text: &str) -> Result<String, String> {
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (
            a,
            Some(p.parse::<u8>().map_err(|_| format!("{text}: bad prefix"))?),
        ),
        None => (text, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("{text} is not a valid IP address"))?;
    match (ip, prefix) {
        (IpAddr::V4(_), None) => Ok(text.to_owned()),
        (IpAddr::V4(_), Some(p)) if (8..=32).contains(&p) => Ok(text.to_owned()),
        (IpAddr::V6(_), Some(p)) if (4..=64).contains(&p) => Ok(text.to_owned()),
        (IpAddr::V6(_), _) => Err(format!(
            "{text}: IPv6 is accepted only as a CIDR from /4 to /64"
        )),
        _ => Err(format!("{text}: bad prefix")),
    }
}

fn too_many() -> axum::response::Response {
    fail(
        StatusCode::TOO_MANY_REQUESTS,
        &[(
            10000,
            "a bulk operation is already pending for this account",
        )],
    )
}

pub(in crate::api) async fn create_rules_list(
    AxumState(app): AxumState<App>,
    Path(account): Path<String>,
    req: Request,
) -> Reply {
    check_account(&account, req.uri().path())?;
    let body = json_body(req).await?;
    let name = body["name"].as_str().unwrap_or_default().to_owned();
    if name.is_empty()
        || name.len() > 50
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(bad_request(
            10001,
            "name must match ^[a-z0-9_]+$ (at most 50)",
        ));
    }
    if body["kind"].as_str() != Some("ip") {
        return Err(bad_request(10001, "kind must be ip"));
    }
    let mut s = app.state.lock().expect("emulator lock");
    if s.lists.rules.iter().any(|l| l.name == name) {
        return Err(bad_request(10017, "a list with this name already exists"));
    }
    let now = now_rfc3339();
    let list = RulesList {
        id: random_hex(16),
        name,
        description: body["description"].as_str().unwrap_or_default().to_owned(),
        items: Vec::new(),
        created_on: now.clone(),
        modified_on: now,
    };
    let out = rules_json(&list);
    s.lists.rules.push(list);
    ok(out)
}

pub(in crate::api) async fn list_rules_lists(
    AxumState(app): AxumState<App>,
    Path(account): Path<String>,
    req: Request,
) -> Reply {
    check_account(&account, req.uri().path())?;
    let mut s = app.state.lock().expect("emulator lock");
    s.lists.settle();
    ok(Value::Array(s.lists.rules.iter().map(rules_json).collect()))
}

pub(in crate::api) async fn get_rules_list(
    AxumState(app): AxumState<App>,
    Path((account, id)): Path<(String, String)>,
    req: Request,
) -> Reply {
    check_account(&account, req.uri().path())?;
    let mut s = app.state.lock().expect("emulator lock");
    s.lists.settle();
    let list = s.lists.rules.iter().find(|l| l.id == id);
    list.map(rules_json)
        .map_or_else(|| Err(not_found(req.uri().path())), ok)
}

pub(in crate::api) async fn delete_rules_list(
    AxumState(app): AxumState<App>,
    Path((account, id)): Path<(String, String)>,
    req: Request,
) -> Reply {
    check_account(&account, req.uri().path())?;
    let mut s = app.state.lock().expect("emulator lock");
    let before = s.lists.rules.len();
    s.lists.rules.retain(|l| l.id != id);
    if s.lists.rules.len() == before {
        return Err(not_found(req.uri().path()));
    }
    ok(json!({ "id": id }))
}

pub(in crate::api) async fn list_rules_items(
    AxumState(app): AxumState<App>,
    Path((account, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    req: Request,
) -> Reply {
    check_account(&account, req.uri().path())?;
    let mut s = app.state.lock().expect("emulator lock");
    s.lists.settle();
    let Some(list) = s.lists.rules.iter().find(|l| l.id == id) else {
        return Err(not_found(req.uri().path()));
    };
    let per_page = q
        .get("per_page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(25)
        .clamp(1, 500);
    let start = q
        .get("cursor")
        .and_then(|c| c.parse::<usize>().ok())
        .unwrap_or(0);
    let page: Vec<Value> = list
        .items
        .iter()
        .skip(start)
        .take(per_page)
        .map(|i| {
            json!({"id": i.id, "ip": i.ip, "comment": i.comment,
                   "created_on": i.created_on, "modified_on": i.created_on})
        })
        .collect();
    let mut cursors = json!({});
    if start + page.len() < list.items.len() {
        cursors["after"] = json!((start + page.len()).to_string());
    }
    Ok(super::super::envelope(
        StatusCode::OK,
        Value::Array(page),
        Some(json!({ "cursors": cursors })),
        json!([]),
    ))
}

/// Starts a bulk operation on a list: refused with 429 while another is pending.
fn start_op(app: &App, list_id: &str, path: &str, change: BulkChange) -> Reply {
    let mut s = app.state.lock().expect("emulator lock");
    s.lists.settle();
    if !s.lists.rules.iter().any(|l| l.id == list_id) {
        return Err(not_found(path));
    }
    if s.lists.pending() {
        s.throttled += 1;
        return Err(too_many());
    }
    let id = random_hex(16);
    let ready_at = Instant::now() + s.lists.bulk_delay;
    s.lists.ops.push(BulkOp {
        id: id.clone(),
        list_id: list_id.to_owned(),
        change: Some(change),
        ready_at,
        status: "pending",
        error: None,
        completed: None,
    });
    ok(json!({ "operation_id": id }))
}

fn items_of(body: &Value) -> Result<Vec<(String, String)>, axum::response::Response> {
    let items = body
        .as_array()
        .ok_or_else(|| bad_request(10021, "the body must be an array of items"))?;
    items
        .iter()
        .map(|i| {
            let ip = i["ip"]
                .as_str()
                .ok_or_else(|| bad_request(10021, "an item needs ip"))?;
            let ip = rules_ip(ip).map_err(|e| bad_request(10021, &e))?;
            Ok((ip, i["comment"].as_str().unwrap_or_default().to_owned()))
        })
        .collect()
}

pub(in crate::api) async fn add_rules_items(
    app: AxumState<App>,
    path: Path<(String, String)>,
    req: Request,
) -> Reply {
    write_items(app, path, req, BulkChange::Add).await
}

pub(in crate::api) async fn replace_rules_items(
    app: AxumState<App>,
    path: Path<(String, String)>,
    req: Request,
) -> Reply {
    write_items(app, path, req, BulkChange::Replace).await
}

/// POST (add) or PUT (replace) items: a bulk operation.
async fn write_items(
    AxumState(app): AxumState<App>,
    Path((account, id)): Path<(String, String)>,
    req: Request,
    change: fn(Vec<(String, String)>) -> BulkChange,
) -> Reply {
    let path = req.uri().path().to_owned();
    check_account(&account, &path)?;
    let items = items_of(&json_body(req).await?)?;
    start_op(&app, &id, &path, change(items))
}

pub(in crate::api) async fn delete_rules_items(
    AxumState(app): AxumState<App>,
    Path((account, id)): Path<(String, String)>,
    req: Request,
) -> Reply {
    let path = req.uri().path().to_owned();
    check_account(&account, &path)?;
    let body = json_body(req).await?;
    let ids: Vec<String> = body["items"]
        .as_array()
        .ok_or_else(|| bad_request(10021, "items: an array of {id} is required"))?
        .iter()
        .map(|i| {
            i["id"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| bad_request(10021, "items are deleted by id"))
        })
        .collect::<Result<_, _>>()?;
    start_op(&app, &id, &path, BulkChange::Delete(ids))
}

pub(in crate::api) async fn get_bulk_operation(
    AxumState(app): AxumState<App>,
    Path((account, op)): Path<(String, String)>,
    req: Request,
) -> Reply {
    check_account(&account, req.uri().path())?;
    let mut s = app.state.lock().expect("emulator lock");
    s.lists.settle();
    let Some(o) = s.lists.ops.iter().find(|o| o.id == op) else {
        return Err(not_found(req.uri().path()));
    };
    let mut out = json!({"id": o.id, "status": o.status});
    if let Some(c) = &o.completed {
        out["completed"] = json!(c);
    }
    if let Some(e) = &o.error {
        out["error"] = json!(e);
    }
    ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_lists_take_ipv6_only_as_a_cidr_up_to_64() {
        assert!(rules_ip("203.0.113.7").is_ok());
        assert!(rules_ip("198.51.100.0/24").is_ok());
        assert!(rules_ip("2001:db8::/64").is_ok());
        assert!(rules_ip("2001:db8::1").is_err());
        assert!(rules_ip("2001:db8::/128").is_err());
        assert!(rules_ip("nonsense").is_err());
    }
}
