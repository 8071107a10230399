//! Cloudflare Tunnels (`cfd_tunnel`): create (names unique per account, 409 / 1013), list, get
//! with connections and status, PATCH (a new secret makes a new token), the token, the remotely
//! managed configuration (ingress validated as cloudflared validates it), connections listed
//! and dropped, and delete (refused with active connections, 1022). The edge side
//! (`/edge/connect`, outside the API) is what a connector reaches: it checks the token as
//! Cloudflare does, so a rotated-away token opens nothing.

#![allow(clippy::result_large_err)]

use base64::Engine;

use super::*;
use crate::{Connection, Tunnel};

/// The account every emulated zone and tunnel belongs to.
pub(crate) const ACCOUNT: &str = "01a7362d577a6c3019a474fd6f485823";

/// Connections one connector holds to the edge.
const CONNECTIONS_PER_CONNECTOR: usize = 4;

pub(crate) fn uuid() -> String {
    let h = random_hex(16);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// The token cloudflared runs with: base64 of JSON `{a, t, s}`.
pub(crate) fn token_of(t: &Tunnel) -> String {
    b64().encode(json!({"a": t.account_tag, "t": t.id, "s": t.secret}).to_string())
}

fn status_of(t: &Tunnel) -> &'static str {
    let connectors: std::collections::BTreeSet<&str> =
        t.connections.iter().map(|c| c.client_id.as_str()).collect();
    match (t.connections.len(), t.conns_active_at.is_some()) {
        (0, false) => "inactive",
        (0, true) => "down",
        (n, _) if n >= CONNECTIONS_PER_CONNECTOR * connectors.len() => "healthy",
        _ => "degraded",
    }
}

fn connection_json(c: &Connection) -> Value {
    json!({
        "id": c.id, "uuid": c.id, "client_id": c.client_id, "client_version": c.client_version,
        "colo_name": c.colo_name, "origin_ip": c.origin_ip, "opened_at": c.opened_at,
        "is_pending_reconnect": false,
    })
}

fn tunnel_json(t: &Tunnel) -> Value {
    let mut v = json!({
        "id": t.id, "account_tag": t.account_tag, "name": t.name, "created_at": t.created_at,
        "connections": t.connections.iter().map(connection_json).collect::<Vec<_>>(),
        "tun_type": "cfd_tunnel", "status": status_of(t),
        "remote_config": t.config_src == "cloudflare", "config_src": t.config_src,
        "metadata": {},
    });
    // The schema has these as date-time strings: absent until they happen.
    for (field, at) in [
        ("deleted_at", &t.deleted_at),
        ("conns_active_at", &t.conns_active_at),
        ("conns_inactive_at", &t.conns_inactive_at),
    ] {
        if let Some(at) = at {
            v[field] = json!(at);
        }
    }
    v
}

pub(super) fn account(account_id: &str, path: &str) -> Result<(), Response> {
    if account_id == ACCOUNT {
        Ok(())
    } else {
        Err(not_found(path))
    }
}

/// Runs `f` on the live tunnel `id` of `account_id`, under the lock; either unknown is a 404
/// as Cloudflare answers it.
fn on_tunnel(
    app: &App,
    account_id: &str,
    id: &str,
    path: &str,
    f: impl FnOnce(&mut Tunnel) -> Reply,
) -> Reply {
    account(account_id, path)?;
    let mut s = app.state.lock().expect("emulator lock");
    f(find(&mut s.tunnels, id, path)?)
}

/// A live (not deleted) tunnel of the account, by id.
fn find<'a>(tunnels: &'a mut [Tunnel], id: &str, path: &str) -> Result<&'a mut Tunnel, Response> {
    tunnels
        .iter_mut()
        .find(|t| t.id == id && t.deleted_at.is_none())
        .ok_or_else(|| not_found(path))
}

/// A tunnel secret: base64 of at least 32 bytes.
fn secret(body: &Value) -> Result<Option<String>, Response> {
    match body.get("tunnel_secret").and_then(Value::as_str) {
        None => Ok(None),
        Some(s) => match b64().decode(s) {
            Ok(bytes) if bytes.len() >= 32 => Ok(Some(s.to_owned())),
            _ => Err(bad_request(
                1003,
                "tunnel_secret must be base64 of at least 32 bytes",
            )),
        },
    }
}

pub(super) async fn list_tunnels(
    AxumState(app): AxumState<App>,
    Path(account_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    req: Request,
) -> Reply {
    account(&account_id, req.uri().path())?;
    let s = app.state.lock().expect("emulator lock");
    let deleted = q.get("is_deleted").map(String::as_str);
    let items: Vec<Value> = s
        .tunnels
        .iter()
        .filter(|t| q.get("name").is_none_or(|n| *n == t.name))
        .filter(|t| q.get("uuid").is_none_or(|u| *u == t.id))
        .filter(|t| match deleted {
            Some("true") => t.deleted_at.is_some(),
            Some("false") => t.deleted_at.is_none(),
            _ => true,
        })
        .map(tunnel_json)
        .collect();
    paginate(items, &q, 20, 1, 1000)
}

pub(super) async fn create_tunnel(
    AxumState(app): AxumState<App>,
    Path(account_id): Path<String>,
    req: Request,
) -> Reply {
    account(&account_id, req.uri().path())?;
    let body = json_body(req).await?;
    let name = body
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad_request(1003, "name is required"))?
        .to_owned();
    let config_src = match body.get("config_src").and_then(Value::as_str) {
        None => "local",
        Some(src @ ("local" | "cloudflare")) => src,
        Some(_) => return Err(bad_request(1003, "config_src must be local or cloudflare")),
    };
    let secret = match secret(&body)? {
        Some(s) => s,
        None => {
            let mut bytes = [0u8; 32];
            aws_lc_rs::rand::fill(&mut bytes).expect("RNG");
            b64().encode(bytes)
        }
    };
    let mut s = app.state.lock().expect("emulator lock");
    if s.tunnels
        .iter()
        .any(|t| t.name == name && t.deleted_at.is_none())
    {
        return Err(fail(
            StatusCode::CONFLICT,
            &[(1013, "You already have a tunnel with this name")],
        ));
    }
    let tunnel = Tunnel {
        id: uuid(),
        account_tag: ACCOUNT.into(),
        name,
        created_at: now_rfc3339(),
        deleted_at: None,
        secret,
        config_src: config_src.into(),
        config: None,
        config_version: 0,
        connections: Vec::new(),
        conns_active_at: None,
        conns_inactive_at: None,
    };
    let mut view = tunnel_json(&tunnel);
    view["token"] = json!(token_of(&tunnel));
    view["credentials_file"] = json!({
        "AccountTag": tunnel.account_tag, "TunnelID": tunnel.id,
        "TunnelName": tunnel.name, "TunnelSecret": tunnel.secret,
    });
    s.tunnels.push(tunnel);
    ok(view)
}

pub(super) async fn get_tunnel(
    AxumState(app): AxumState<App>,
    Path((account_id, id)): Path<(String, String)>,
    req: Request,
) -> Reply {
    on_tunnel(&app, &account_id, &id, req.uri().path(), |t| {
        ok(tunnel_json(t))
    })
}

pub(super) async fn patch_tunnel(
    AxumState(app): AxumState<App>,
    Path((account_id, id)): Path<(String, String)>,
    req: Request,
) -> Reply {
    let path = req.uri().path().to_owned();
    account(&account_id, &path)?;
    let body = json_body(req).await?;
    let new_secret = secret(&body)?;
    let mut s = app.state.lock().expect("emulator lock");
    let new_name = body.get("name").and_then(Value::as_str).map(str::to_owned);
    if let Some(name) = &new_name
        && s.tunnels
            .iter()
            .any(|t| &t.name == name && t.id != id && t.deleted_at.is_none())
    {
        return Err(fail(
            StatusCode::CONFLICT,
            &[(1013, "You already have a tunnel with this name")],
        ));
    }
    let tunnel = find(&mut s.tunnels, &id, &path)?;
    if let Some(secret) = new_secret {
        // The old token opens no new connections; the open ones stay until dropped.
        tunnel.secret = secret;
    }
    if let Some(name) = new_name {
        tunnel.name = name;
    }
    let mut view = tunnel_json(tunnel);
    view["token"] = json!(token_of(tunnel));
    ok(view)
}

pub(super) async fn delete_tunnel(
    AxumState(app): AxumState<App>,
    Path((account_id, id)): Path<(String, String)>,
    req: Request,
) -> Reply {
    on_tunnel(&app, &account_id, &id, req.uri().path(), |tunnel| {
        if !tunnel.connections.is_empty() {
            return Err(bad_request(
                1022,
                "Cannot delete tunnel because it has active connections. Stop the connector and \
             delete its connections first.",
            ));
        }
        tunnel.deleted_at = Some(now_rfc3339());
        ok(tunnel_json(tunnel))
    })
}

pub(super) async fn get_token(
    AxumState(app): AxumState<App>,
    Path((account_id, id)): Path<(String, String)>,
    req: Request,
) -> Reply {
    on_tunnel(&app, &account_id, &id, req.uri().path(), |t| {
        ok(json!(token_of(t)))
    })
}

fn configuration_json(t: &Tunnel) -> Value {
    json!({
        "account_id": t.account_tag, "tunnel_id": t.id, "version": t.config_version,
        "source": t.config_src, "created_at": t.created_at,
        "config": t.config.clone().unwrap_or_else(|| json!({"ingress": [], "originRequest": {}})),
    })
}

pub(super) async fn get_configuration(
    AxumState(app): AxumState<App>,
    Path((account_id, id)): Path<(String, String)>,
    req: Request,
) -> Reply {
    on_tunnel(&app, &account_id, &id, req.uri().path(), |t| {
        ok(configuration_json(t))
    })
}

/// Checks an ingress list as cloudflared does: the last rule is the catch-all (no hostname,
/// no path), hostnames carry no port and `*` only first, services are `scheme://host[:port]`
/// without a path, `http_status:NNN`, `hello_world` or `unix:PATH`.
pub(crate) fn check_ingress(ingress: &[Value]) -> Result<(), String> {
    let Some((last, rules)) = ingress.split_last() else {
        return Err("ingress must have at least the catch-all rule".into());
    };
    if last
        .get("hostname")
        .and_then(Value::as_str)
        .is_some_and(|h| !h.is_empty())
        || last.get("path").is_some()
    {
        return Err("the last ingress rule must match everything (no hostname, no path)".into());
    }
    for (i, rule) in ingress.iter().enumerate() {
        let service = rule
            .get("service")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("ingress rule {i}: service is required"))?;
        check_service(service).map_err(|e| format!("ingress rule {i}: {e}"))?;
    }
    for (i, rule) in rules.iter().enumerate() {
        let host = rule
            .get("hostname")
            .and_then(Value::as_str)
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("ingress rule {i}: only the last rule may omit hostname"))?;
        if host.contains(':') {
            return Err(format!(
                "ingress rule {i}: hostname {host:?} must not have a port"
            ));
        }
        if host.rfind('*').is_some_and(|at| at != 0) {
            return Err(format!(
                "ingress rule {i}: hostname {host:?}: * may only be the first character"
            ));
        }
    }
    Ok(())
}

fn check_service(service: &str) -> Result<(), String> {
    if service == "hello_world" || service.starts_with("unix:") {
        return Ok(());
    }
    if let Some(code) = service.strip_prefix("http_status:") {
        return match code.parse::<u16>() {
            Ok(100..=599) => Ok(()),
            _ => Err(format!("service {service:?}: not an HTTP status")),
        };
    }
    let Some((scheme, rest)) = service.split_once("://") else {
        return Err(format!("service {service:?} must be scheme://host[:port]"));
    };
    if scheme.is_empty() || rest.is_empty() || rest.split(':').next().unwrap_or("").is_empty() {
        return Err(format!("service {service:?} must be scheme://host[:port]"));
    }
    if rest.contains('/') {
        return Err(format!("service {service:?} must not have a path"));
    }
    Ok(())
}

pub(super) async fn put_configuration(
    AxumState(app): AxumState<App>,
    Path((account_id, id)): Path<(String, String)>,
    req: Request,
) -> Reply {
    let path = req.uri().path().to_owned();
    account(&account_id, &path)?;
    let body = json_body(req).await?;
    let config = body
        .get("config")
        .filter(|c| c.is_object())
        .ok_or_else(|| bad_request(1003, "config is required"))?
        .clone();
    let ingress = config
        .get("ingress")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    check_ingress(&ingress).map_err(|e| bad_request(1055, &format!("Validation failed: {e}")))?;
    on_tunnel(&app, &account_id, &id, &path, |tunnel| {
        tunnel.config = Some(config);
        tunnel.config_version += 1;
        ok(configuration_json(tunnel))
    })
}

pub(super) async fn list_connections(
    AxumState(app): AxumState<App>,
    Path((account_id, id)): Path<(String, String)>,
    req: Request,
) -> Reply {
    on_tunnel(&app, &account_id, &id, req.uri().path(), |tunnel| {
        // One entry per connector, its connections inside (the `/connections` shape).
        let mut by_client: Vec<(String, Vec<&Connection>)> = Vec::new();
        for c in &tunnel.connections {
            match by_client.iter_mut().find(|(id, _)| *id == c.client_id) {
                Some((_, list)) => list.push(c),
                None => by_client.push((c.client_id.clone(), vec![c])),
            }
        }
        let result: Vec<Value> = by_client
            .into_iter()
            .map(|(client, conns)| {
                json!({
                    "id": client, "arch": "linux_amd64", "version": conns[0].client_version,
                    "run_at": conns[0].opened_at,
                    "conns": conns.iter().map(|c| connection_json(c)).collect::<Vec<_>>(),
                    "features": [],
                })
            })
            .collect();
        ok(Value::Array(result))
    })
}

pub(super) async fn delete_connections(
    AxumState(app): AxumState<App>,
    Path((account_id, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    req: Request,
) -> Reply {
    on_tunnel(&app, &account_id, &id, req.uri().path(), |tunnel| {
        match q.get("client_id") {
            Some(client) => tunnel.connections.retain(|c| &c.client_id != client),
            None => tunnel.connections.clear(),
        }
        if tunnel.connections.is_empty() {
            tunnel.conns_inactive_at = Some(now_rfc3339());
        }
        ok(json!({}))
    })
}

/// What a connector sends the edge: its token and who it is.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct EdgeHello {
    pub token: String,
    pub client_id: String,
    #[serde(default)]
    pub client_version: String,
    #[serde(default)]
    pub origin_ip: String,
}

/// The edge: a connector with a valid token opens its connections; a token whose secret was
/// rotated away, or of a deleted tunnel, is refused (HTTP 401).
pub(super) async fn edge_connect(AxumState(app): AxumState<App>, req: Request) -> Response {
    let hello: EdgeHello = match json_body(req)
        .await
        .and_then(|b| serde_json::from_value(b).map_err(|_| bad_request(1003, "bad hello")))
    {
        Ok(h) => h,
        Err(e) => return e,
    };
    let decoded: Option<Value> = b64()
        .decode(hello.token.trim())
        .ok()
        .and_then(|b: Vec<u8>| serde_json::from_slice(&b).ok());
    let Some(decoded) = decoded else {
        return fail(
            StatusCode::UNAUTHORIZED,
            &[(1001, "the token is not a tunnel token")],
        );
    };
    let mut s = app.state.lock().expect("emulator lock");
    let tunnel = s.tunnels.iter_mut().find(|t| {
        t.deleted_at.is_none()
            && decoded["a"] == t.account_tag.as_str()
            && decoded["t"] == t.id.as_str()
            && decoded["s"] == t.secret.as_str()
    });
    let Some(tunnel) = tunnel else {
        return fail(
            StatusCode::UNAUTHORIZED,
            &[(1001, "the tunnel refused this token")],
        );
    };
    tunnel
        .connections
        .retain(|c| c.client_id != hello.client_id);
    let colos = ["fra01", "ams01", "fra02", "ams02"];
    for colo in colos.iter().take(CONNECTIONS_PER_CONNECTOR) {
        tunnel.connections.push(Connection {
            id: uuid(),
            client_id: hello.client_id.clone(),
            client_version: hello.client_version.clone(),
            colo_name: (*colo).into(),
            origin_ip: hello.origin_ip.clone(),
            opened_at: now_rfc3339(),
        });
    }
    tunnel.conns_active_at = Some(now_rfc3339());
    (
        StatusCode::OK,
        axum::Json(json!({"connections": CONNECTIONS_PER_CONNECTOR, "tunnel_id": tunnel.id})),
    )
        .into_response()
}

/// The edge: a connector that stops drops its connections.
pub(super) async fn edge_disconnect(AxumState(app): AxumState<App>, req: Request) -> Response {
    let body = json_body(req).await.unwrap_or_default();
    let client = body["client_id"].as_str().unwrap_or_default().to_owned();
    let mut s = app.state.lock().expect("emulator lock");
    for t in s.tunnels.iter_mut() {
        let before = t.connections.len();
        t.connections.retain(|c| c.client_id != client);
        if before > 0 && t.connections.is_empty() {
            t.conns_inactive_at = Some(now_rfc3339());
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingress_is_checked_as_cloudflared_checks_it() {
        let ok_rules = [
            json!({"hostname": "app.example.com", "service": "http://10.0.0.5:8069"}),
            json!({"hostname": "*.example.com", "service": "https://localhost"}),
            json!({"service": "http_status:404"}),
        ];
        assert_eq!(check_ingress(&ok_rules), Ok(()));
        let bad = |rules: &[Value]| check_ingress(rules).unwrap_err();
        assert!(bad(&[]).contains("catch-all"));
        assert!(
            bad(&[json!({"hostname": "a.example.com", "service": "http://x"})]).contains("last")
        );
        let catch_all = json!({"service": "http_status:404"});
        for (rule, why) in [
            (
                json!({"hostname": "a.example.com:8080", "service": "http://x"}),
                "port",
            ),
            (
                json!({"hostname": "a.*.example.com", "service": "http://x"}),
                "first",
            ),
            (
                json!({"hostname": "a.example.com", "service": "http://x/path"}),
                "path",
            ),
            (
                json!({"hostname": "a.example.com", "service": "x"}),
                "scheme",
            ),
            (json!({"service": "http://x"}), "only the last"),
        ] {
            let e = bad(&[rule, catch_all.clone()]);
            assert!(e.contains(why), "{why}: {e}");
        }
    }
}
