//! The hosts: the overview (every host, what is firing) and one host's page with its history.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use gatehouse_proto::v1::{Agent, GetAgentRequest, HostMetrics, ItemState, ListAlertsRequest};
use maud::{Markup, html};

use super::{Viewer, ago, bytes, failed, page, state_class, svg, when};
use crate::Shared;
use crate::fleet::history::fullest;
use crate::store::ItemRecord;

/// CPU, memory and the fullest disk, as table cells.
fn usage(m: Option<&HostMetrics>) -> Markup {
    let Some(m) = m else {
        return html! { td.muted colspan="3" { "no report since the controller started" } };
    };
    let memory = 100.0 * m.memory_used_bytes as f64 / m.memory_total_bytes.max(1) as f64;
    html! {
        td.num { (format!("{:.0}%", m.cpu_percent)) }
        td.num { (format!("{memory:.0}%")) " of " (bytes(m.memory_total_bytes)) }
        @match fullest(m) {
            Some(fs) => {
                @let free = 100.0 * fs.available_bytes as f64 / fs.total_bytes as f64;
                td.num.crit[free < 10.0] { (fs.mount_point) " " (format!("{free:.0}%")) " free" }
            }
            None => td.muted { "—" },
        }
    }
}

/// The failed items of a host's last apply, one line each.
fn failures(items: &[ItemRecord]) -> Markup {
    html! {
        @for i in items.iter().filter(|i| i.state == ItemState::Failed.word()) {
            div.error { (i.kind) " " (i.name) ": " (i.message) }
        }
    }
}

fn host_row(a: &Agent, items: &[ItemRecord], now: i64) -> Markup {
    html! {
        tr {
            td { a href=(format!("/ui/hosts/{}", a.id)) { (a.hostname) } br; span.muted { (a.id) } }
            td { span.badge.(state_class(&a.status)) { (a.status) } }
            td { (ago(now, a.last_seen_at)) }
            td { (a.version) }
            td.num.warn[a.applied_generation < a.desired_generation] {
                (a.applied_generation) " / " (a.desired_generation)
            }
            td { (failures(items)) }
            (usage(a.metrics.as_ref()))
        }
    }
}

pub(super) async fn overview(State(shared): State<Arc<Shared>>, viewer: Viewer) -> Response {
    let agents = match crate::api::agents::all_agents(&shared).await {
        Ok(a) => a,
        Err(e) => return failed(e),
    };
    let alerts = match crate::api::alerts::list_alerts(&shared, ListAlertsRequest::default()).await
    {
        Ok(r) => r.alerts,
        Err(e) => return failed(e),
    };
    let rows = match shared.store.agent_list().await {
        Ok(rows) => rows,
        Err(e) => return failed(e.into()),
    };
    let items: HashMap<String, Vec<ItemRecord>> = rows
        .into_iter()
        .map(|r| (r.id, r.last_apply.map(|a| a.results).unwrap_or_default()))
        .collect();
    let now = shared.now();
    let count = |status: &str| agents.iter().filter(|a| a.status == status).count();
    let firing = alerts.iter().filter(|a| a.state == "firing").count();
    let content = html! {
        div.cards {
            div.card { b.ok { (count("online")) } "online" }
            div.card { b.crit[count("offline") > 0] { (count("offline")) } "offline" }
            div.card { b.crit[firing > 0] { (firing) } "alerts firing" }
            div.card { b { (alerts.len() - firing) } "pending" }
        }
        (super::features::alert_table(&alerts, now, false))
        h2 { "Hosts" }
        table id="hosts" {
            tr { th { "Host" } th { "Status" } th { "Last report" } th { "Agent" } th { "Generation applied / desired" } th { "Last apply errors" } th { "CPU" } th { "Memory" } th { "Fullest disk" } }
            @for a in agents.iter().filter(|a| a.status != "revoked") {
                (host_row(a, items.get(&a.id).map_or(&[][..], Vec::as_slice), now))
            }
            @if agents.is_empty() {
                tr { td colspan="9" .muted { "No hosts yet: gatehousectl token create, then gatehouse-agent enroll on a host." } }
            }
        }
    };
    page("Hosts", "/ui/", &viewer, content)
}

pub(super) async fn host(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    viewer: Viewer,
) -> Response {
    let status =
        match crate::api::agents::get_agent_status(&shared, GetAgentRequest { id: id.clone() })
            .await
        {
            Ok(s) => s,
            Err(e) => return failed(e),
        };
    let Some(agent) = status.agent.clone() else {
        return failed(crate::error::Error::NotFound(format!("no agent {id:?}")));
    };
    let now = shared.now();
    let retention = shared.config().history_retention.as_secs() as i64;
    let (samples, results) = match (
        shared.store.samples(&agent.id, now - retention).await,
        shared.store.apply_history(&agent.id, 50).await,
    ) {
        (Ok(s), Ok(r)) => (s, r),
        (Err(e), _) | (_, Err(e)) => return failed(e.into()),
    };
    let cpu: Vec<(i64, f64)> = samples.iter().map(|s| (s.at, s.cpu_percent)).collect();
    let memory: Vec<(i64, f64)> = samples
        .iter()
        .map(|s| {
            (
                s.at,
                100.0 * s.memory_used as f64 / s.memory_total.max(1) as f64,
            )
        })
        .collect();
    let disk: Vec<(i64, f64)> = samples
        .iter()
        .map(|s| {
            (
                s.at,
                100.0 * (1.0 - s.disk_free as f64 / s.disk_total.max(1) as f64),
            )
        })
        .collect();
    let facts = agent.facts.clone().unwrap_or_default();
    let content = html! {
        table id="host" {
            tr { th { "Status" } td { span.badge.(state_class(&agent.status)) { (agent.status) } " last report " (ago(now, agent.last_seen_at)) } }
            tr { th { "Agent" } td { (agent.id) " · version " (agent.version) " · enrolled " (when(agent.enrolled_at)) } }
            tr { th { "System" } td { (facts.os) " · " (facts.kernel) " · " (facts.arch) } }
            tr { th { "Addresses" } td { (facts.addresses.join(", ")) } }
            @if !agent.domain.is_empty() { tr { th { "Domain" } td { (agent.domain) } } }
            tr { th { "Labels" } td { @for (k, v) in &agent.labels { code { (k) "=" (v) } " " } } }
            tr { th { "Generation" } td { "applied " (agent.applied_generation) " of " (agent.desired_generation) } }
            tr { th { "Identity certificate" } td { "expires " (when(agent.certificate_not_after)) } }
        }
        h2 { "Usage" }
        div.charts {
            (svg::chart("chart-cpu", "CPU", &cpu, 100.0, "%"))
            (svg::chart("chart-memory", "Memory used", &memory, 100.0, "%"))
            (svg::chart("chart-disk", "Fullest disk used", &disk, 100.0, "%"))
        }
        h2 { "Items in the last apply" }
        table id="items" {
            tr { th { "Kind" } th { "Name" } th { "State" } th { "Why" } }
            @for r in &status.results {
                tr {
                    td { (r.kind) } td { (r.name) }
                    td { span.badge.(state_class(r.item_state().word())) { (r.item_state().word()) } }
                    td.error { (r.message) }
                }
            }
        }
        h2 { "Generations" }
        table id="generations" {
            tr { th { "Generation" } th { "Made" } th { "Sites" } th { "Certificates" } th { "Result on the host" } }
            @for g in &status.history {
                @let result = results.iter().find(|r| r.generation == g.generation);
                tr {
                    td.num { (g.generation) }
                    td { (when(g.created_at)) }
                    td.num { (g.sites) }
                    td.num { (g.certificates) }
                    td {
                        @match result {
                            Some(r) => {
                                @let failed_items = r.results.iter().filter(|i| i.state == ItemState::Failed.word()).count();
                                @if failed_items == 0 { span.ok { "applied" } } @else { span.crit { (failed_items) " failed" } }
                                " at " (when(r.at))
                                (failures(&r.results))
                            }
                            None => span.muted { "no result recorded" },
                        }
                    }
                }
            }
        }
    };
    page(&agent.hostname, "/ui/", &viewer, content)
}
