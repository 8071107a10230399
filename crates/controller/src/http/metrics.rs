//! `/metrics`: the fleet, certificates, streams and the store in Prometheus' text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use crate::Shared;
use crate::acme::renewal::in_last_third;

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

    let current = crate::acme::renewal::current(&orders);
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
    hosts(shared, &agents, &mut out);
    acme_failures(&orders, &mut out);
    alerts(shared, &mut out).await?;
    wireguard(shared, &mut out).await?;
    Ok(out)
}

/// Writes one gauge: its help, its type and a sample per `(labels, value)`.
fn gauge(out: &mut String, name: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// Each host: online, last report, CPU, memory, filesystems, certificates, tunnels, and
/// whether its last apply had no failed item.
fn hosts(shared: &Shared, agents: &[crate::store::AgentRow], out: &mut String) {
    let mut g: BTreeMap<&str, Vec<(String, f64)>> = BTreeMap::new();
    for a in agents.iter().filter(|a| a.revoked_at.is_none()) {
        let host = format!(
            "agent=\"{}\",hostname=\"{}\"",
            label(&a.id),
            label(&a.hostname)
        );
        let live = shared.fleet.view(&a.id);
        let online = shared.agent_status(a) == "online";
        g.entry("online")
            .or_default()
            .push((host.clone(), f64::from(u8::from(online))));
        let seen = live.last_seen.or(a.last_seen_at).unwrap_or(0);
        g.entry("seen")
            .or_default()
            .push((host.clone(), seen as f64));
        if let Some(r) = &a.last_apply {
            let ok = r.results.iter().all(|i| i.state != "failed");
            g.entry("apply")
                .or_default()
                .push((host.clone(), f64::from(u8::from(ok))));
        }
        for c in &live.certificates {
            let l = format!("{host},certificate=\"{}\"", label(&c.name));
            g.entry("cert").or_default().push((l, c.not_after as f64));
        }
        for t in &live.tunnels {
            let l = format!("{host},tunnel=\"{}\"", label(&t.name));
            g.entry("tunnel")
                .or_default()
                .push((l, f64::from(u8::from(t.ready))));
        }
        let Some(m) = &live.metrics else { continue };
        g.entry("cpu")
            .or_default()
            .push((host.clone(), f64::from(m.cpu_percent) / 100.0));
        g.entry("mem")
            .or_default()
            .push((host.clone(), m.memory_used_bytes as f64));
        g.entry("memt")
            .or_default()
            .push((host.clone(), m.memory_total_bytes as f64));
        for fs in &m.filesystems {
            let l = format!("{host},mountpoint=\"{}\"", label(&fs.mount_point));
            g.entry("avail")
                .or_default()
                .push((l.clone(), fs.available_bytes as f64));
            g.entry("size")
                .or_default()
                .push((l, fs.total_bytes as f64));
        }
    }
    for (key, name, help) in [
        (
            "online",
            "gatehouse_host_online",
            "1 while the host is connected and reporting.",
        ),
        (
            "seen",
            "gatehouse_host_last_report_timestamp_seconds",
            "When the host last reported.",
        ),
        (
            "apply",
            "gatehouse_host_last_apply_ok",
            "1 when the host's last apply had no failed item.",
        ),
        (
            "cpu",
            "gatehouse_host_cpu_usage_ratio",
            "CPU in use, from 0 to 1, as last reported.",
        ),
        (
            "mem",
            "gatehouse_host_memory_used_bytes",
            "Memory in use, as last reported.",
        ),
        (
            "memt",
            "gatehouse_host_memory_total_bytes",
            "Memory installed.",
        ),
        (
            "avail",
            "gatehouse_host_filesystem_avail_bytes",
            "Free bytes of each filesystem.",
        ),
        (
            "size",
            "gatehouse_host_filesystem_size_bytes",
            "Size of each filesystem.",
        ),
        (
            "cert",
            "gatehouse_host_certificate_expiry_timestamp_seconds",
            "When each certificate installed on the host expires.",
        ),
        (
            "tunnel",
            "gatehouse_tunnel_ready",
            "1 while the tunnel has a ready connection.",
        ),
    ] {
        gauge(out, name, help, g.get(key).map_or(&[][..], Vec::as_slice));
    }
}

/// Failed attempts in a row of each order that is failing now.
fn acme_failures(orders: &[crate::store::AcmeOrderRow], out: &mut String) {
    let samples: Vec<(String, f64)> = orders
        .iter()
        .filter(|o| o.state == crate::store::OrderState::Failed && !o.superseded)
        .map(|o| {
            (
                format!(
                    "agent=\"{}\",certificate=\"{}\",order=\"{}\"",
                    label(&o.agent_id),
                    label(&o.certificate),
                    label(&o.id)
                ),
                f64::from(o.failures),
            )
        })
        .collect();
    gauge(
        out,
        "gatehouse_acme_order_failures",
        "Failed attempts in a row of each ACME order that is failing.",
        &samples,
    );
}

/// The controller's own alerts by state, and notifications not yet delivered.
async fn alerts(shared: &Shared, out: &mut String) -> crate::error::Result<()> {
    let alerts = shared.store.alerts().await?;
    let samples: Vec<(String, f64)> = ["pending", "firing", "resolved"]
        .iter()
        .map(|s| {
            let n = alerts.iter().filter(|a| a.state.as_str() == *s).count();
            (format!("state=\"{s}\""), n as f64)
        })
        .collect();
    gauge(
        out,
        "gatehouse_alerts",
        "The controller's alerts by state.",
        &samples,
    );
    let queued = shared.store.outbox().await?.len();
    gauge(
        out,
        "gatehouse_alert_notifications_queued",
        "Notifications waiting for a receiver (retried until delivered).",
        &[(String::new(), queued as f64)],
    );
    Ok(())
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
