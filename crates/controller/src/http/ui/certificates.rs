//! Every certificate on every host, soonest expiry first, with a timeline; ACME orders with
//! their last error.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use gatehouse_proto::v1::ListCertificateOrdersRequest;
use maud::html;

use super::{Viewer, ago, failed, page, state_class, svg, when};
use crate::Shared;

pub(super) async fn list(State(shared): State<Arc<Shared>>, viewer: Viewer) -> Response {
    let shared = &*shared;
    let agents = match shared.store.agent_list().await {
        Ok(a) => a,
        Err(e) => return failed(e.into()),
    };
    let orders = match crate::api::certificates::list_certificate_orders(
        shared,
        ListCertificateOrdersRequest::default(),
    )
    .await
    {
        Ok(r) => r.orders,
        Err(e) => return failed(e),
    };
    let now = shared.now();
    let mut certs: Vec<_> = agents
        .iter()
        .filter(|a| a.revoked_at.is_none())
        .flat_map(|a| {
            shared
                .fleet
                .view(&a.id)
                .certificates
                .into_iter()
                .map(move |c| (a.hostname.clone(), a.id.clone(), c))
        })
        .collect();
    certs.sort_by_key(|(_, _, c)| c.not_after);
    let alerts = shared.config().alerts.clone();
    let (warning, critical) = (
        alerts.certificate_warning.as_secs() as i64,
        alerts.certificate_critical.as_secs() as i64,
    );
    let spans: Vec<svg::Span> = certs
        .iter()
        .map(|(host, _, c)| svg::Span {
            label: format!("{host} · {}", c.name),
            ends: c.not_after,
        })
        .collect();
    let content = html! {
        @if certs.is_empty() {
            p.muted { "No host has reported a certificate since the controller started." }
        } @else {
            (svg::timeline(&spans, now, warning, critical))
        }
        table id="certificates" {
            tr { th { "Expires" } th { "Host" } th { "Certificate" } th { "Names" } th { "Serial" } }
            @for (host, id, c) in &certs {
                @let left = c.not_after - now;
                @let class = if left < critical { "crit" } else if left < warning { "warn" } else { "ok" };
                tr {
                    td.(class) { (when(c.not_after)) br; (ago(now, c.not_after)) }
                    td { a href=(format!("/ui/hosts/{id}")) { (host) } }
                    td { (c.name) " r" (c.revision) }
                    td { (c.domains.join(", ")) }
                    td.muted { (c.serial) }
                }
            }
        }
        h2 { "ACME orders" }
        table id="orders" {
            tr { th { "Order" } th { "Host" } th { "Names" } th { "State" } th { "Failures" } th { "Last error" } th { "Renews" } }
            @for o in &orders {
                tr {
                    td { (o.id) br; span.muted { (o.account) } }
                    td { (o.agent_id) }
                    td { (o.domains.join(", ")) }
                    td { span.badge.(state_class(&o.state)) { (o.state) } }
                    td.num { (o.failures) }
                    td.error { (o.last_error) }
                    td { @if o.renew_at > 0 { (when(o.renew_at)) " (" (o.renewal) ")" } }
                }
            }
            @if orders.is_empty() { tr { td colspan="7" .muted { "No ACME orders." } } }
        }
    };
    page("Certificates", "/ui/certificates", &viewer, content)
}
