//! `/metrics`: the fleet, certificates, streams and the store in Prometheus' text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use crate::Shared;
use crate::acme::renewal::in_last_third;
use crate::store::OrderState;

pub(super) async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    match render(&shared).await {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

/// A label value, escaped as the Prometheus text format wants.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The metrics, in Prometheus' text format.
pub async fn render(shared: &Shared) -> crate::error::Result<String> {
    let mut out = String::new();
    let agents = shared.store.agent_list().await?;
    let mut by_status: BTreeMap<&str, u64> = [("online", 0), ("offline", 0), ("revoked", 0)].into();
    for row in &agents {
        *by_status.entry(shared.agent_status(row)).or_default() += 1;
    }
    out.push_str("# HELP gatehouse_agents Enrolled agents by status.\n");
    out.push_str("# TYPE gatehouse_agents gauge\n");
    for (status, n) in &by_status {
        let _ = writeln!(out, "gatehouse_agents{{status=\"{status}\"}} {n}");
    }

    out.push_str(
        "# HELP gatehouse_stream_messages_total Messages on agent streams, by direction and kind.\n",
    );
    out.push_str("# TYPE gatehouse_stream_messages_total counter\n");
    for (direction, kind, n) in shared.fleet.messages.snapshot() {
        let _ = writeln!(
            out,
            "gatehouse_stream_messages_total{{direction=\"{direction}\",kind=\"{kind}\"}} {n}"
        );
    }

    let orders = shared.store.acme_orders(None).await?;
    let mut by_state: BTreeMap<&str, u64> = BTreeMap::new();
    for o in &orders {
        *by_state.entry(o.state.as_str()).or_default() += 1;
    }
    out.push_str("# HELP gatehouse_acme_orders ACME orders by state.\n");
    out.push_str("# TYPE gatehouse_acme_orders gauge\n");
    for (state, n) in &by_state {
        let _ = writeln!(out, "gatehouse_acme_orders{{state=\"{state}\"}} {n}");
    }

    // Each host's newest issued certificate per name.
    let mut current: BTreeMap<(&str, &str), &crate::store::AcmeOrderRow> = BTreeMap::new();
    for o in orders.iter().filter(|o| o.state == OrderState::Issued) {
        let key = (o.agent_id.as_str(), o.certificate.as_str());
        if current
            .get(&key)
            .is_none_or(|c| o.not_before > c.not_before)
        {
            current.insert(key, o);
        }
    }
    let t = shared.now();
    out.push_str(
        "# HELP gatehouse_certificate_expiry_timestamp_seconds When each host's ACME \
         certificate expires.\n",
    );
    out.push_str("# TYPE gatehouse_certificate_expiry_timestamp_seconds gauge\n");
    for ((agent, cert), o) in &current {
        let _ = writeln!(
            out,
            "gatehouse_certificate_expiry_timestamp_seconds{{agent=\"{}\",certificate=\"{}\"}} {}",
            label(agent),
            label(cert),
            o.not_after
        );
    }
    out.push_str(
        "# HELP gatehouse_certificate_renewal_overdue 1 when a certificate is in the last third \
         of its life and has not renewed.\n",
    );
    out.push_str("# TYPE gatehouse_certificate_renewal_overdue gauge\n");
    for ((agent, cert), o) in &current {
        let overdue = in_last_third(o.not_before, o.not_after, t);
        let _ = writeln!(
            out,
            "gatehouse_certificate_renewal_overdue{{agent=\"{}\",certificate=\"{}\"}} {}",
            label(agent),
            label(cert),
            u8::from(overdue)
        );
    }
    wireguard(shared, &mut out).await?;
    Ok(out)
}

/// Each WireGuard peer's latest handshake and traffic, as its network's hosts report them.
async fn wireguard(shared: &Shared, out: &mut String) -> crate::error::Result<()> {
    let networks = crate::wireguard::status::show(shared, None).await?;
    for (name, kind, help) in [
        (
            "gatehouse_wireguard_peer_last_handshake_seconds",
            "gauge",
            "Unix time of the latest handshake any host had with the peer (0: never).",
        ),
        (
            "gatehouse_wireguard_peer_rx_bytes",
            "gauge",
            "Bytes the network's hosts received from the peer.",
        ),
        (
            "gatehouse_wireguard_peer_tx_bytes",
            "gauge",
            "Bytes the network's hosts sent to the peer.",
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for n in &networks {
            for p in &n.peers {
                let value = match name {
                    "gatehouse_wireguard_peer_last_handshake_seconds" => {
                        p.latest_handshake.max(0) as u64
                    }
                    "gatehouse_wireguard_peer_rx_bytes" => p.rx_bytes,
                    _ => p.tx_bytes,
                };
                let _ = writeln!(
                    out,
                    "{name}{{network=\"{}\",peer=\"{}\",kind=\"{}\"}} {value}",
                    label(&n.name),
                    label(&p.name),
                    label(&p.kind)
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(label("x\ny"), "x\\ny");
    }
}
