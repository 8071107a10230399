//! The feature pages: sites, alerts and silences, tunnels, WireGuard peers, allowlists. Each
//! shows what the admin API's list call answers, nothing more.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use gatehouse_proto::v1::{
    Alert, GetWgStatusRequest, ListAlertsRequest, ListAllowlistsRequest, ListSilencesRequest,
    ListSitesRequest, ListTunnelsRequest,
};
use maud::{Markup, html};

use super::{Viewer, ago, bytes, failed, page, state_class, when};
use crate::Shared;

/// Alerts as a table (the overview shows the active ones).
pub(super) fn alert_table(alerts: &[Alert], now: i64, resolved: bool) -> Markup {
    html! {
        table id="alerts" {
            tr { th { "Alert" } th { "Severity" } th { "State" } th { "Since" } th { "Why" } th { "Labels" } }
            @for a in alerts.iter().filter(|a| resolved || a.state != "resolved") {
                tr {
                    td { (a.name) }
                    td.(match a.severity.as_str() { "critical" => "crit", "warning" => "warn", _ => "muted" }) { (a.severity) }
                    td {
                        span.badge.(match a.state.as_str() { "firing" => "crit", "pending" => "warn", _ => "ok" }) { (a.state) }
                        @if !a.silenced_by.is_empty() { " " span.badge.muted { "silenced" } }
                    }
                    td {
                        @match a.state.as_str() {
                            "firing" => (ago(now, a.fired_at)),
                            "resolved" => (ago(now, a.resolved_at)),
                            _ => (ago(now, a.active_since)),
                        }
                    }
                    td { (a.summary) @if !a.notification_error.is_empty() { div.error { "not delivered: " (a.notification_error) } } }
                    td { @for (k, v) in &a.labels { code { (k) "=" (v) } " " } }
                }
            }
            @if alerts.iter().all(|a| !resolved && a.state == "resolved") {
                tr { td colspan="6" .ok { "Nothing is firing or pending." } }
            }
        }
    }
}

pub(super) async fn sites(State(shared): State<Arc<Shared>>, viewer: Viewer) -> Response {
    let sites = match crate::api::sites::list_sites(&shared, ListSitesRequest::default()).await {
        Ok(r) => r.sites,
        Err(e) => return failed(e),
    };
    let now = shared.now();
    let content = html! {
        table id="sites" {
            tr { th { "Site" } th { "Host" } th { "Names" } th { "Upstreams" } th { "State" } th { "Error" } th { "Certificate" } }
            @for s in &sites {
                @let spec = s.spec.clone().unwrap_or_default();
                tr {
                    td { (spec.name) @if !spec.allow.is_empty() { br; span.muted { "allow: " (spec.allow.join(", ")) } } }
                    td { a href=(format!("/ui/hosts/{}", s.agent_id)) { (s.agent_id) } }
                    td { (spec.domains.join(", ")) @if !s.fqdn.is_empty() { br; span.muted { (s.fqdn) } } }
                    td { (spec.upstreams.join(", ")) }
                    td { span.badge.(state_class(&s.state)) { (s.state) } @if !s.cloudflare_state.is_empty() && s.cloudflare_state != "ready" { br; span.warn { "Cloudflare: " (s.cloudflare_state) } } }
                    td.error { (s.error) }
                    td { @if let Some(c) = &s.certificate { "expires " (ago(now, c.not_after)) } }
                }
            }
            @if sites.is_empty() { tr { td colspan="7" .muted { "No sites yet: gatehousectl site create." } } }
        }
    };
    page("Sites", "/ui/sites", &viewer, content)
}

pub(super) async fn alerts(State(shared): State<Arc<Shared>>, viewer: Viewer) -> Response {
    let request = ListAlertsRequest {
        include_resolved: true,
    };
    let (alerts, silences) = match (
        crate::api::alerts::list_alerts(&shared, request).await,
        crate::api::alerts::list_silences(&shared, ListSilencesRequest::default()).await,
    ) {
        (Ok(a), Ok(s)) => (a.alerts, s.silences),
        (Err(e), _) | (_, Err(e)) => return failed(e),
    };
    let now = shared.now();
    let content = html! {
        (alert_table(&alerts, now, true))
        h2 id="silences" { "Silences" }
        table {
            tr { th { "Id" } th { "Matches" } th { "Ends" } th { "Why" } th { "By" } }
            @for s in &silences {
                tr {
                    td { (s.id) }
                    td { @for (k, v) in &s.matchers { code { (k) "=" (v) } " " } }
                    td { (when(s.ends_at)) br; (ago(now, s.ends_at)) }
                    td { (s.comment) }
                    td.muted { (s.created_by) }
                }
            }
            @if silences.is_empty() { tr { td colspan="5" .muted { "No active silence." } } }
        }
    };
    page("Alerts", "/ui/alerts", &viewer, content)
}

pub(super) async fn tunnels(State(shared): State<Arc<Shared>>, viewer: Viewer) -> Response {
    let tunnels =
        match crate::api::tunnels::list_tunnels(&shared, ListTunnelsRequest::default()).await {
            Ok(r) => r.tunnels,
            Err(e) => return failed(e),
        };
    let content = html! {
        table id="tunnels" {
            tr { th { "Tunnel" } th { "Host" } th { "Routes" } th { "Set-up" } th { "On the host" } th { "Connections" } }
            @for t in &tunnels {
                tr {
                    td { (t.name) br; span.muted { (t.tunnel_id) } }
                    td { a href=(format!("/ui/hosts/{}", t.agent_id)) { (t.agent_id) } }
                    td { @for r in &t.routes { div { (r.hostname) " → " (r.service) } } }
                    td { span.badge.(state_class(&t.state)) { (t.state) } }
                    td {
                        @match &t.host {
                            Some(h) => { span.(if h.ready { "ok" } else { "crit" }) { (h.active_state) "/" (h.sub_state) } }
                            None => span.muted { "not reported" },
                        }
                        @if !t.host_error.is_empty() { div.error { (t.host_error) } }
                    }
                    td.num { (t.host.as_ref().map_or(0, |h| h.ready_connections)) }
                }
            }
            @if tunnels.is_empty() { tr { td colspan="6" .muted { "No tunnels." } } }
        }
    };
    page("Tunnels", "/ui/tunnels", &viewer, content)
}

pub(super) async fn wireguard(State(shared): State<Arc<Shared>>, viewer: Viewer) -> Response {
    let networks =
        match crate::api::wireguard::get_wg_status(&shared, GetWgStatusRequest::default()).await {
            Ok(r) => r.networks,
            Err(e) => return failed(e),
        };
    let now = shared.now();
    let content = html! {
        @for n in &networks {
            h2 { (n.name) " " span.muted { (n.interface) } }
            table.wireguard {
                tr { th { "Peer" } th { "Kind" } th { "Addresses" } th { "Endpoint" } th { "Latest handshake" } th { "Received / sent" } }
                @for p in &n.peers {
                    tr {
                        td { (p.name) @if p.hub { " " span.badge { "hub" } } }
                        td { (p.kind) }
                        td { (p.ipv4) br; (p.ipv6) }
                        td { (p.endpoint) }
                        td.crit[p.latest_handshake == 0] { (ago(now, p.latest_handshake)) @if !p.error.is_empty() { div.error { (p.error) } } }
                        td.num { (bytes(p.rx_bytes)) " / " (bytes(p.tx_bytes)) }
                    }
                }
            }
        }
        @if networks.is_empty() { p.muted { "No WireGuard networks." } }
    };
    page("WireGuard", "/ui/wireguard", &viewer, content)
}

pub(super) async fn allowlists(State(shared): State<Arc<Shared>>, viewer: Viewer) -> Response {
    let lists =
        match crate::api::allowlists::list_allowlists(&shared, ListAllowlistsRequest {}).await {
            Ok(r) => r.allowlists,
            Err(e) => return failed(e),
        };
    let now = shared.now();
    let content = html! {
        @for l in &lists {
            h2 { (l.name) " " span.muted { "entries live " (humantime::format_duration(std::time::Duration::from_secs(l.ttl_seconds))) " after a check-in" } }
            @for s in &l.sync {
                p.(if s.error.is_empty() { "ok" } else { "crit" }) {
                    "Cloudflare " (s.target) " list " (s.name) ": " (s.items) " items, synced " (ago(now, s.synced_at))
                    @if !s.error.is_empty() { " — " (s.error) }
                }
            }
            table.allowlist {
                tr { th { "Address" } th { "Expires" } th { "From" } }
                @for e in &l.entries {
                    tr {
                        td { (e.cidr) }
                        td { @if e.expires_at == 0 { "never" } @else { (ago(now, e.expires_at)) } }
                        td { @if e.fixed { (e.comment) } @for d in &e.devices { (d.device) " " } }
                    }
                }
                @if l.entries.is_empty() { tr { td colspan="3" .muted { "Nothing is allowed right now." } } }
            }
        }
        @if lists.is_empty() { p.muted { "No allowlists." } }
    };
    page("Allowlists", "/ui/allowlists", &viewer, content)
}
