//! The status page under `/ui/` on the HTTP port: read-only, server-rendered HTML that works
//! without JavaScript (one small script reloads it), under a strict Content-Security-Policy (no
//! inline script or style at all), and nothing secret on any page: it shows what the admin
//! API's read calls show. Sign-in: `gatehousectl ui login` makes a one-time link; opening it
//! turns it into a session cookie with the caller's role.

mod certificates;
mod features;
mod fleet;
mod svg;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use maud::{DOCTYPE, Markup, html};

use crate::Shared;
use crate::audit::Actor;
use crate::secrets::{random_id, sha256_hex};

/// The session cookie.
const COOKIE: &str = "gh_ui";
/// How long a sign-in link may wait to be opened.
const LINK_LIFETIME: i64 = 600;

/// What every page is served with: only the page's own stylesheet and script, no inline
/// anything, no frames, no forms, no referrer.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The routes (each checks `ui_enabled` and the session itself).
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(fleet::overview))
        .route("/ui/hosts/{id}", get(fleet::host))
        .route("/ui/sites", get(features::sites))
        .route("/ui/certificates", get(certificates::list))
        .route("/ui/alerts", get(features::alerts))
        .route("/ui/tunnels", get(features::tunnels))
        .route("/ui/wireguard", get(features::wireguard))
        .route("/ui/allowlists", get(features::allowlists))
        .route("/ui/login/{secret}", get(login))
        .route("/ui/assets/style.css", get(style))
        .route("/ui/assets/refresh.js", get(script))
        .layer(axum::middleware::map_response(secure_headers))
}

async fn secure_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("assets/style.css"),
    )
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("assets/refresh.js"),
    )
}

/// Makes a one-time sign-in link for `actor` (with its role): the URL and when it expires.
pub async fn login_link(shared: &Shared, actor: &Actor) -> crate::error::Result<(String, i64)> {
    let secret = random_id(32);
    let now = shared.now();
    let expires_at = now + LINK_LIFETIME;
    shared
        .store
        .ui_link_insert(
            &sha256_hex(secret.as_bytes()),
            &actor.role().to_string(),
            &actor.label(),
            now,
            expires_at,
        )
        .await?;
    Ok((
        format!("{}/ui/login/{secret}", shared.config().ui_base()),
        expires_at,
    ))
}

async fn login(State(shared): State<Arc<Shared>>, Path(secret): Path<String>) -> Response {
    let config = shared.config();
    if !config.ui_enabled {
        return StatusCode::NOT_FOUND.into_response();
    }
    let session = random_id(32);
    let now = shared.now();
    let lifetime = config.ui_session.as_secs() as i64;
    let redeemed = shared
        .store
        .ui_link_redeem(
            &sha256_hex(secret.as_bytes()),
            &sha256_hex(session.as_bytes()),
            now,
            now + lifetime,
        )
        .await;
    match redeemed {
        Ok(Some(_)) => {
            let secure = if config.ui_base().starts_with("https://") {
                "; Secure"
            } else {
                ""
            };
            let cookie = format!(
                "{COOKIE}={session}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={lifetime}{secure}"
            );
            (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, "/ui/".to_owned()),
                    (header::SET_COOKIE, cookie),
                ],
            )
                .into_response()
        }
        Ok(None) => notice(
            StatusCode::UNAUTHORIZED,
            "This sign-in link was used already or has expired",
        ),
        Err(e) => notice(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// A signed-in viewer of the page. Without a session the page is the sign-in notice.
#[derive(Debug)]
pub struct Viewer {
    pub role: String,
    pub actor: String,
}

impl FromRequestParts<Arc<Shared>> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        shared: &Arc<Shared>,
    ) -> Result<Self, Self::Rejection> {
        if !shared.config().ui_enabled {
            return Err(StatusCode::NOT_FOUND.into_response());
        }
        let Some(secret) = cookie(&parts.headers, COOKIE) else {
            return Err(notice(StatusCode::UNAUTHORIZED, "Sign in to see the fleet"));
        };
        match shared
            .store
            .ui_session(&sha256_hex(secret.as_bytes()), shared.now())
            .await
        {
            Ok(Some((role, actor))) => Ok(Viewer { role, actor }),
            Ok(None) => Err(notice(
                StatusCode::UNAUTHORIZED,
                "Your session has ended: sign in again",
            )),
            Err(e) => Err(notice(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())),
        }
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The page for someone not signed in (or a link that no longer works): how to sign in, and
/// no data.
fn notice(status: StatusCode, title: &str) -> Response {
    let body = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "gatehouse: sign in" }
                link rel="stylesheet" href="/ui/assets/style.css";
            }
            body {
                header { span.brand { "gatehouse" } }
                main {
                    div.notice id="sign-in" {
                        h1 { (title) }
                        p { "The status page is for signed-in operators. On a machine with access to the controller, run" }
                        p { code { "gatehousectl ui login" } }
                        p { "and open the link it prints once; it signs you in with your own role for a while." }
                    }
                }
            }
        }
    };
    (status, axum::response::Html(body.into_string())).into_response()
}

/// A page: the navigation, who is signed in, and `content`.
fn page(title: &str, here: &str, viewer: &Viewer, content: Markup) -> Response {
    const NAV: [(&str, &str); 7] = [
        ("/ui/", "Hosts"),
        ("/ui/sites", "Sites"),
        ("/ui/certificates", "Certificates"),
        ("/ui/alerts", "Alerts"),
        ("/ui/tunnels", "Tunnels"),
        ("/ui/wireguard", "WireGuard"),
        ("/ui/allowlists", "Allowlists"),
    ];
    let body = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · gatehouse" }
                link rel="stylesheet" href="/ui/assets/style.css";
                script src="/ui/assets/refresh.js" defer {}
            }
            body {
                header {
                    span.brand { "gatehouse" }
                    @for (href, name) in &NAV {
                        a.here[*href == here] href=(href) { (name) }
                    }
                    span.who { (viewer.actor) " · " (viewer.role) }
                }
                main { h1 { (title) } (content) }
            }
        }
    };
    axum::response::Html(body.into_string()).into_response()
}

/// A read that failed, as a page.
fn failed(e: crate::error::Error) -> Response {
    let status = match e {
        crate::error::Error::NotFound(_) => StatusCode::NOT_FOUND,
        crate::error::Error::Invalid(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    let body = html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "gatehouse" } link rel="stylesheet" href="/ui/assets/style.css"; }
            body { main { div.notice { h1 { "Cannot show this page" } p.error { (e) } } } }
        }
    };
    (status, axum::response::Html(body.into_string())).into_response()
}

/// A Unix time as people read it (UTC), or a dash for 0.
fn when(unix: i64) -> String {
    if unix <= 0 {
        return "—".into();
    }
    gatehouse_common::rfc3339(unix)
        .replace('T', " ")
        .replace('Z', " UTC")
}

/// How long ago (or from now) `unix` is, roughly.
fn ago(now: i64, unix: i64) -> String {
    if unix <= 0 {
        return "never".into();
    }
    let d = std::time::Duration::from_secs(now.abs_diff(unix));
    let rough = std::time::Duration::from_secs(match d.as_secs() {
        s if s < 120 => s,
        s if s < 7200 => s / 60 * 60,
        s if s < 172_800 => s / 3600 * 3600,
        s => s / 86_400 * 86_400,
    });
    let text = humantime::format_duration(rough).to_string();
    // The two largest units say enough: "2months 28days", "3h 5m".
    let text = text.split(' ').take(2).collect::<Vec<_>>().join(" ");
    if unix <= now {
        format!("{text} ago")
    } else {
        format!("in {text}")
    }
}

/// Bytes in binary units.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// The class a state word is shown with.
fn state_class(state: &str) -> &'static str {
    match state {
        "online" | "applied" | "issued" | "ready" | "resolved" | "ok" => "ok",
        "pending" | "presenting" | "validating" | "finalizing" | "warning" | "setting-up" => "warn",
        _ => "crit",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("x_gh_ui=1; gh_ui=abc; other=2"),
        );
        assert_eq!(cookie(&h, "gh_ui"), Some("abc"));
        assert_eq!(cookie(&h, "gh"), None);
    }

    #[test]
    fn times_and_sizes_read_as_people_write_them() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
        assert_eq!(ago(1000, 0), "never");
        assert_eq!(ago(10_000, 10_000 - 90), "1m 30s ago");
        assert_eq!(ago(0, 3 * 86_400 + 5), "in 3days");
        assert_eq!(when(0), "—");
        assert_eq!(when(86_400), "1970-01-02 00:00:00 UTC");
    }
}
