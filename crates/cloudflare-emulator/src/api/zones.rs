//! Zones: list (filtered by name, paginated) and get.

#![allow(clippy::result_large_err)]

use super::*;

fn zone_json(z: &Zone) -> Value {
    json!({
        "id": z.id, "name": z.name, "status": "active", "paused": false, "type": "full",
        "development_mode": 0,
        "name_servers": crate::dns::NAME_SERVERS,
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

pub(super) async fn list_zones(
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

pub(super) fn zone(app: &App, zone_id: &str, path: &str) -> Result<Zone, Response> {
    app.state
        .lock()
        .unwrap()
        .zones
        .iter()
        .find(|z| z.id == zone_id)
        .cloned()
        .ok_or_else(|| not_found(path))
}

pub(super) async fn get_zone(
    AxumState(app): AxumState<App>,
    Path(zone_id): Path<String>,
    req: Request,
) -> Reply {
    ok(zone_json(&zone(&app, &zone_id, req.uri().path())?))
}
