//! Gateway lists: edited by value with PATCH `{append, remove}`.

use std::net::IpAddr;

use axum::extract::{Path, Request, State as AxumState};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::super::{App, Reply, bad_request, json_body, not_found, ok};
use super::{GatewayItem, GatewayList, check_account};
use crate::now_rfc3339;

fn gateway_json(l: &GatewayList) -> Value {
    json!({
        "id": l.id, "name": l.name, "type": "IP", "description": l.description,
        "count": l.items.len(), "created_at": l.created_at, "updated_at": l.updated_at,
    })
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

pub(in crate::api) async fn create_gateway_list(
    AxumState(app): AxumState<App>,
    Path(account): Path<String>,
    req: Request,
) -> Reply {
    check_account(&account, req.uri().path())?;
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
        id: crate::api::uuid(),
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

pub(in crate::api) async fn list_gateway_lists(
    AxumState(app): AxumState<App>,
    Path(account): Path<String>,
    req: Request,
) -> Reply {
    check_account(&account, req.uri().path())?;
    let s = app.state.lock().expect("emulator lock");
    ok(Value::Array(
        s.lists.gateway.iter().map(gateway_json).collect(),
    ))
}

pub(in crate::api) async fn get_gateway_list(
    AxumState(app): AxumState<App>,
    Path((account, id)): Path<(String, String)>,
    req: Request,
) -> Reply {
    check_account(&account, req.uri().path())?;
    let s = app.state.lock().expect("emulator lock");
    s.lists
        .gateway
        .iter()
        .find(|l| l.id == id)
        .map(gateway_json)
        .map_or_else(|| Err(not_found(req.uri().path())), ok)
}

pub(in crate::api) async fn list_gateway_items(
    AxumState(app): AxumState<App>,
    Path((account, id)): Path<(String, String)>,
    req: Request,
) -> Reply {
    check_account(&account, req.uri().path())?;
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
    Ok(super::super::envelope(
        StatusCode::OK,
        json!([items]),
        Some(json!({"page": 1, "per_page": n.max(1), "count": n, "total_count": n})),
        json!([]),
    ))
}

pub(in crate::api) async fn patch_gateway_list(
    AxumState(app): AxumState<App>,
    Path((account, id)): Path<(String, String)>,
    req: Request,
) -> Reply {
    let path = req.uri().path().to_owned();
    check_account(&account, &path)?;
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

pub(in crate::api) async fn delete_gateway_list(
    AxumState(app): AxumState<App>,
    Path((account, id)): Path<(String, String)>,
    req: Request,
) -> Reply {
    check_account(&account, req.uri().path())?;
    let mut s = app.state.lock().expect("emulator lock");
    let before = s.lists.gateway.len();
    s.lists.gateway.retain(|l| l.id != id);
    if s.lists.gateway.len() == before {
        return Err(not_found(req.uri().path()));
    }
    ok(json!({}))
}
