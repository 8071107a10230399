//! Account lists: Rules Lists (WAF `ip.src in $name`), whose item writes are asynchronous bulk
//! operations (one pending per account; another write meanwhile gets HTTP 429; deletes by item
//! id; IPv6 only as a CIDR from /4 to /64), and Gateway lists (Access), edited by value with
//! PATCH `{append, remove}`. Shapes as in `shared/cloudflare/` (README, lists section).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, Request, State as AxumState};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{App, Reply, bad_request, fail, json_body, not_found, ok};
use crate::{now_rfc3339, random_hex};

/// A Rules List.
#[derive(Debug, Clone)]
pub struct RulesList {
    pub id: String,
    pub name: String,
    pub description: String,
    pub items: Vec<RulesItem>,
    pub created_on: String,
    pub modified_on: String,
}

/// One item of a Rules List.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesItem {
    pub id: String,
    pub ip: String,
    pub comment: String,
    pub created_on: String,
}

/// A Gateway list.
#[derive(Debug, Clone)]
pub struct GatewayList {
    pub id: String,
    pub name: String,
    pub description: String,
    pub items: Vec<GatewayItem>,
    pub created_at: String,
    pub updated_at: String,
}

/// One item of a Gateway list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayItem {
    pub value: String,
    pub description: String,
    pub created_at: String,
}

/// What a bulk operation does once it runs.
#[derive(Debug, Clone)]
pub(crate) enum BulkChange {
    Add(Vec<(String, String)>),
    Replace(Vec<(String, String)>),
    Delete(Vec<String>),
}

/// An asynchronous Rules List write.
#[derive(Debug, Clone)]
pub(crate) struct BulkOp {
    pub id: String,
    pub list_id: String,
    pub change: Option<BulkChange>,
    pub ready_at: Instant,
    pub status: &'static str,
    pub error: Option<String>,
    pub completed: Option<String>,
}

/// Lists state and limits.
#[derive(Debug)]
pub(crate) struct Lists {
    pub rules: Vec<RulesList>,
    pub gateway: Vec<GatewayList>,
    pub ops: Vec<BulkOp>,
    /// How long a bulk operation stays pending.
    pub bulk_delay: Duration,
    /// Rules List items across all lists of the account (Enterprise: 500,000).
    pub rules_item_limit: usize,
    /// Gateway list entries per list.
    pub gateway_item_limit: usize,
}

impl Default for Lists {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            gateway: Vec::new(),
            ops: Vec::new(),
            bulk_delay: Duration::from_millis(100),
            rules_item_limit: 10_000,
            gateway_item_limit: 1_000,
        }
    }
}

impl Lists {
    /// Runs the bulk operations whose time has come.
    pub(crate) fn settle(&mut self) {
        let now = Instant::now();
        for i in 0..self.ops.len() {
            if self.ops[i].status != "pending" || self.ops[i].ready_at > now {
                continue;
            }
            let change = self.ops[i].change.take();
            let list_id = self.ops[i].list_id.clone();
            let result = match change {
                Some(c) => self.run(&list_id, c),
                None => Ok(()),
            };
            let op = &mut self.ops[i];
            op.completed = Some(now_rfc3339());
            match result {
                Ok(()) => op.status = "completed",
                Err(e) => {
                    op.status = "failed";
                    op.error = Some(e);
                }
            }
        }
    }

    fn run(&mut self, list_id: &str, change: BulkChange) -> Result<(), String> {
        let total: usize = self.rules.iter().map(|l| l.items.len()).sum();
        let limit = self.rules_item_limit;
        let list = self
            .rules
            .iter_mut()
            .find(|l| l.id == list_id)
            .ok_or("the list was deleted")?;
        let item = |ip: String, comment: String| RulesItem {
            id: random_hex(16),
            ip,
            comment,
            created_on: now_rfc3339(),
        };
        match change {
            BulkChange::Add(items) => {
                let new: Vec<_> = items
                    .into_iter()
                    .filter(|(ip, _)| !list.items.iter().any(|i| &i.ip == ip))
                    .collect();
                if total + new.len() > limit {
                    return Err("This list is at the maximum number of items".into());
                }
                list.items
                    .extend(new.into_iter().map(|(ip, c)| item(ip, c)));
            }
            BulkChange::Replace(items) => {
                if total - list.items.len() + items.len() > limit {
                    return Err("This list is at the maximum number of items".into());
                }
                list.items = items.into_iter().map(|(ip, c)| item(ip, c)).collect();
            }
            BulkChange::Delete(ids) => list.items.retain(|i| !ids.contains(&i.id)),
        }
        list.modified_on = now_rfc3339();
        Ok(())
    }

    fn pending(&self) -> bool {
        self.ops.iter().any(|o| o.status == "pending")
    }
}

fn check_account(_: &App, account: &str, path: &str) -> Result<(), axum::response::Response> {
    super::tunnels::account(account, path)
}

fn rules_json(l: &RulesList) -> Value {
    json!({
        "id": l.id, "name": l.name, "kind": "ip", "description": l.description,
        "num_items": l.items.len(), "num_referencing_filters": 0,
        "created_on": l.created_on, "modified_on": l.modified_on,
    })
}

fn gateway_json(l: &GatewayList) -> Value {
    json!({
        "id": l.id, "name": l.name, "type": "IP", "description": l.description,
        "count": l.items.len(), "created_at": l.created_at, "updated_at": l.updated_at,
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

pub(super) async fn create_rules_list(
    AxumState(app): AxumState<App>,
    Path(account): Path<String>,
    req: Request,
) -> Reply {
    check_account(&app, &account, req.uri().path())?;
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

pub(super) async fn list_rules_lists(
    AxumState(app): AxumState<App>,
    Path(account): Path<String>,
    req: Request,
) -> Reply {
    check_account(&app, &account, req.uri().path())?;
    let mut s = app.state.lock().expect("emulator lock");
    s.lists.settle();
    ok(Value::Array(s.lists.rules.iter().map(rules_json).collect()))
}

pub(super) async fn get_rules_list(
    AxumState(app): AxumState<App>,
    Path((account, id)): Path<(String, String)>,
    req: Request,
) -> Reply {
    check_account(&app, &account, req.uri().path())?;
    let mut s = app.state.lock().expect("emulator lock");
    s.lists.settle();
    let list = s.lists.rules.iter().find(|l| l.id == id);
    list.map(rules_json)
        .map_or_else(|| Err(not_found(req.uri().path())), ok)
}

pub(super) async fn delete_rules_list(
    AxumState(app): AxumState<App>,
    Path((account, id)): Path<(String, String)>,
    req: Request,
) -> Reply {
    check_account(&app, &account, req.uri().path())?;
    let mut s = app.state.lock().expect("emulator lock");
    let before = s.lists.rules.len();
    s.lists.rules.retain(|l| l.id != id);
    if s.lists.rules.len() == before {
        return Err(not_found(req.uri().path()));
    }
    ok(json!({ "id": id }))
}

pub(super) async fn list_rules_items(
    AxumState(app): AxumState<App>,
    Path((account, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    req: Request,
) -> Reply {
    check_account(&app, &account, req.uri().path())?;
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
    Ok(super::envelope(
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

pub(super) async fn add_rules_items(
    app: AxumState<App>,
    path: Path<(String, String)>,
    req: Request,
) -> Reply {
    write_items(app, path, req, BulkChange::Add).await
}

pub(super) async fn replace_rules_items(
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
    check_account(&app, &account, &path)?;
    let items = items_of(&json_body(req).await?)?;
    start_op(&app, &id, &path, change(items))
}

pub(super) async fn delete_rules_items(
    AxumState(app): AxumState<App>,
    Path((account, id)): Path<(String, String)>,
    req: Request,
) -> Reply {
    let path = req.uri().path().to_owned();
    check_account(&app, &account, &path)?;
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

pub(super) async fn get_bulk_operation(
    AxumState(app): AxumState<App>,
    Path((account, op)): Path<(String, String)>,
    req: Request,
) -> Reply {
    check_account(&app, &account, req.uri().path())?;
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

fn gateway_items(
    items: &Value,
    field_value: &str,
) -> Result<Vec<GatewayItem>, axum::response::Response> {
    let Some(items) = items.as_array() else {
        return Ok(Vec::new());
    };
    items
        .iter()
        .map(|i| {
            let value = i[field_value]
                .as_str()
                .ok_or_else(|| bad_request(2001, "an item needs value"))?;
            let ok_value = value
                .split_once('/')
                .map_or(value, |(a, _)| a)
                .parse::<IpAddr>()
                .is_ok();
            if !ok_value {
                return Err(bad_request(2001, &format!("{value} is not an IP or CIDR")));
            }
            Ok(GatewayItem {
                value: value.to_owned(),
                description: i["description"].as_str().unwrap_or_default().to_owned(),
                created_at: now_rfc3339(),
            })
        })
        .collect()
}

pub(super) async fn create_gateway_list(
    AxumState(app): AxumState<App>,
    Path(account): Path<String>,
    req: Request,
) -> Reply {
    check_account(&app, &account, req.uri().path())?;
    let body = json_body(req).await?;
    let name = body["name"].as_str().unwrap_or_default().to_owned();
    if name.is_empty() || body["type"].as_str() != Some("IP") {
        return Err(bad_request(2001, "name and type IP are required"));
    }
    let items = gateway_items(&body["items"], "value")?;
    let mut s = app.state.lock().expect("emulator lock");
    if items.len() > s.lists.gateway_item_limit {
        return Err(bad_request(2001, "too many items for one list"));
    }
    let now = now_rfc3339();
    let list = GatewayList {
        id: super::tunnels::uuid(),
        name,
        description: body["description"].as_str().unwrap_or_default().to_owned(),
        items,
        created_at: now.clone(),
        updated_at: now,
    };
    let out = gateway_json(&list);
    s.lists.gateway.push(list);
    ok(out)
}

pub(super) async fn list_gateway_lists(
    AxumState(app): AxumState<App>,
    Path(account): Path<String>,
    req: Request,
) -> Reply {
    check_account(&app, &account, req.uri().path())?;
    let s = app.state.lock().expect("emulator lock");
    ok(Value::Array(
        s.lists.gateway.iter().map(gateway_json).collect(),
    ))
}

pub(super) async fn get_gateway_list(
    AxumState(app): AxumState<App>,
    Path((account, id)): Path<(String, String)>,
    req: Request,
) -> Reply {
    check_account(&app, &account, req.uri().path())?;
    let s = app.state.lock().expect("emulator lock");
    s.lists
        .gateway
        .iter()
        .find(|l| l.id == id)
        .map(gateway_json)
        .map_or_else(|| Err(not_found(req.uri().path())), ok)
}

pub(super) async fn list_gateway_items(
    AxumState(app): AxumState<App>,
    Path((account, id)): Path<(String, String)>,
    req: Request,
) -> Reply {
    check_account(&app, &account, req.uri().path())?;
    let s = app.state.lock().expect("emulator lock");
    let Some(list) = s.lists.gateway.iter().find(|l| l.id == id) else {
        return Err(not_found(req.uri().path()));
    };
    let items: Vec<Value> = list
        .items
        .iter()
        .map(
            |i| json!({"value": i.value, "description": i.description, "created_at": i.created_at}),
        )
        .collect();
    let n = items.len();
    // The result is an array of arrays of items.
    Ok(super::envelope(
        StatusCode::OK,
        json!([items]),
        Some(json!({"page": 1, "per_page": n.max(1), "count": n, "total_count": n})),
        json!([]),
    ))
}

pub(super) async fn patch_gateway_list(
    AxumState(app): AxumState<App>,
    Path((account, id)): Path<(String, String)>,
    req: Request,
) -> Reply {
    let path = req.uri().path().to_owned();
    check_account(&app, &account, &path)?;
    let body = json_body(req).await?;
    let append = gateway_items(&body["append"], "value")?;
    let remove: Vec<String> = body["remove"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut s = app.state.lock().expect("emulator lock");
    let limit = s.lists.gateway_item_limit;
    let Some(list) = s.lists.gateway.iter_mut().find(|l| l.id == id) else {
        return Err(not_found(&path));
    };
    list.items.retain(|i| !remove.contains(&i.value));
    for item in append {
        if !list.items.iter().any(|i| i.value == item.value) {
            list.items.push(item);
        }
    }
    if list.items.len() > limit {
        return Err(bad_request(2001, "too many items for one list"));
    }
    list.updated_at = now_rfc3339();
    ok(gateway_json(list))
}

pub(super) async fn delete_gateway_list(
    AxumState(app): AxumState<App>,
    Path((account, id)): Path<(String, String)>,
    req: Request,
) -> Reply {
    check_account(&app, &account, req.uri().path())?;
    let mut s = app.state.lock().expect("emulator lock");
    let before = s.lists.gateway.len();
    s.lists.gateway.retain(|l| l.id != id);
    if s.lists.gateway.len() == before {
        return Err(not_found(req.uri().path()));
    }
    ok(json!({}))
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
