//! The built-in rules: what holds right now, read from the store and the hosts' latest
//! reports. The [engine](super) turns these conditions into pending, firing and resolved
//! alerts. Thresholds come from `[alerts]` (defaults from `ALERTS.md`); the shipped Prometheus
//! rules file states the same rules over `/metrics`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::Shared;
use crate::config::AlertsConfig;
use crate::error::Result;
use crate::store::{OrderState, SampleRow};

/// One condition that holds now.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub rule: &'static str,
    pub severity: &'static str,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// How long it must hold before it fires (Prometheus' `for`).
    pub hold: Duration,
    /// Fires at once whatever `hold` says (an item that failed N acks in a row).
    pub at_once: bool,
}

/// What the rules found, and the hosts they could not judge yet: a controller that has not had a
/// report from a host since it started knows nothing of its disks or tunnels, so alerts from
/// reports stay as they are for those hosts rather than resolving.
#[derive(Debug, Default)]
pub struct Findings {
    pub conditions: Vec<Condition>,
    pub unknown_hosts: BTreeSet<String>,
}

/// The rules that read the hosts' reports (kept as they are for a host not reported yet).
pub const FROM_REPORTS: [&str; 5] = [
    "CertificateExpiringSoon",
    "CertificateExpiryCritical",
    "DiskAlmostFull",
    "DiskFillingUp",
    "TunnelNotReady",
];

fn condition(
    rule: &'static str,
    severity: &'static str,
    labels: &[(&str, &str)],
    summary: String,
    hold: Duration,
) -> Condition {
    Condition {
        rule,
        severity,
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        annotations: [("summary".to_owned(), summary)].into(),
        hold,
        at_once: false,
    }
}

use gatehouse_common::rfc3339 as when;

/// Evaluates every rule at `now`.
pub async fn evaluate(shared: &Shared, c: &AlertsConfig, now: i64) -> Result<Findings> {
    let mut f = Findings::default();
    if c.watchdog {
        f.conditions.push(condition(
            "Watchdog",
            "none",
            &[],
            "Always firing: the controller's alerting path works. Alert when it stops.".into(),
            Duration::ZERO,
        ));
    }
    let agents = shared.store.agent_list().await?;
    for a in agents.iter().filter(|a| a.revoked_at.is_none()) {
        let host = [("agent", a.id.as_str()), ("hostname", a.hostname.as_str())];
        if shared.agent_status(a) == "offline" {
            let seen = shared.fleet.view(&a.id).last_seen.or(a.last_seen_at);
            let since = seen.map_or("never connected".to_owned(), |t| {
                format!("last seen {}", when(t))
            });
            f.conditions.push(condition(
                "HostOffline",
                "critical",
                &host,
                format!("host {} has not reported ({since})", a.hostname),
                c.host_offline_for,
            ));
        }
        for item in a.last_apply.iter().flat_map(|r| &r.results) {
            if item.state != "failed" {
                continue;
            }
            let mut cond = condition(
                "ItemApplyFailing",
                "warning",
                &[
                    host[0],
                    host[1],
                    ("kind", item.kind.as_str()),
                    ("item", item.name.as_str()),
                ],
                format!(
                    "{} {:?} does not apply on {}: {}",
                    item.kind, item.name, a.hostname, item.message
                ),
                c.apply_failing_for,
            );
            cond.at_once = item.failures >= c.apply_failures;
            f.conditions.push(cond);
        }
        let live = shared.fleet.view(&a.id);
        if live.metrics.is_none() {
            f.unknown_hosts.insert(a.id.clone());
            continue;
        }
        reported(shared, c, a, &live, now, &mut f).await?;
    }
    acme(shared, c, now, &mut f).await?;
    wireguard(shared, c, now, &mut f).await?;
    Ok(f)
}

/// The rules over one host's latest report.
async fn reported(
    shared: &Shared,
    c: &AlertsConfig,
    a: &crate::store::AgentRow,
    live: &crate::fleet::LiveView,
    now: i64,
    f: &mut Findings,
) -> Result<()> {
    let (id, hostname) = (a.id.as_str(), a.hostname.as_str());
    for cert in &live.certificates {
        let left = cert.not_after - now;
        let (rule, severity) = if left < c.certificate_critical.as_secs() as i64 {
            ("CertificateExpiryCritical", "critical")
        } else if left < c.certificate_warning.as_secs() as i64 {
            ("CertificateExpiringSoon", "warning")
        } else {
            continue;
        };
        let state = if left <= 0 { "expired" } else { "expires" };
        f.conditions.push(condition(
            rule,
            severity,
            &[
                ("agent", id),
                ("hostname", hostname),
                ("certificate", &cert.name),
            ],
            format!(
                "certificate {:?} on {hostname} {state} {} ({})",
                cert.name,
                when(cert.not_after),
                cert.domains.join(", ")
            ),
            Duration::ZERO,
        ));
    }
    if let Some(m) = &live.metrics {
        for fs in m.filesystems.iter().filter(|fs| fs.total_bytes > 0) {
            let free = 100.0 * fs.available_bytes as f64 / fs.total_bytes as f64;
            if free < c.disk_free_percent {
                f.conditions.push(condition(
                    "DiskAlmostFull",
                    "warning",
                    &[
                        ("agent", id),
                        ("hostname", hostname),
                        ("mountpoint", &fs.mount_point),
                    ],
                    format!(
                        "{} on {hostname} is under {}% free",
                        fs.mount_point, c.disk_free_percent
                    ),
                    c.disk_for,
                ));
            }
        }
    }
    // A prediction only for a disk under 40 % free, as node-mixin pairs them: a roomy disk
    // that fills in bursts does not page anyone (and its history is not read).
    let roomy = live
        .metrics
        .as_ref()
        .and_then(crate::fleet::history::fullest)
        .is_none_or(|fs| fs.available_bytes as f64 / fs.total_bytes as f64 >= 0.40);
    let window = c.disk_fill_window.as_secs() as i64;
    let samples = match roomy {
        true => Vec::new(),
        false => shared.store.samples(id, now - window).await?,
    };
    if let Some((mount, fills_at)) = fills_at(&samples, window)
        && fills_at - now <= c.disk_fill_horizon.as_secs() as i64
    {
        f.conditions.push(condition(
            "DiskFillingUp",
            "warning",
            &[
                ("agent", id),
                ("hostname", hostname),
                ("mountpoint", &mount),
            ],
            format!(
                "{mount} on {hostname} is predicted to fill within {}",
                humantime::format_duration(c.disk_fill_horizon)
            ),
            c.disk_for,
        ));
    }
    for t in live.tunnels.iter().filter(|t| !t.ready) {
        f.conditions.push(condition(
            "TunnelNotReady",
            "critical",
            &[("agent", id), ("hostname", hostname), ("tunnel", &t.name)],
            format!(
                "tunnel {:?} on {hostname} has no ready connection ({}/{})",
                t.name, t.active_state, t.sub_state
            ),
            c.tunnel_not_ready_for,
        ));
    }
    Ok(())
}

/// When the fullest disk is predicted to fill, by a least-squares line through its free bytes
/// over the samples: only with samples spanning at least a quarter of `window` (shorter ones
/// flap), all of the same filesystem, and free space falling.
pub fn fills_at(samples: &[SampleRow], window: i64) -> Option<(String, i64)> {
    let last = samples.last()?;
    let same: Vec<&SampleRow> = samples
        .iter()
        .filter(|s| s.disk_mount == last.disk_mount && s.disk_total > 0)
        .collect();
    let first = same.first()?;
    if same.len() < 3 || last.at - first.at < window / 4 {
        return None;
    }
    let n = same.len() as f64;
    let t0 = first.at as f64;
    let mean_t = same.iter().map(|s| s.at as f64 - t0).sum::<f64>() / n;
    let mean_y = same.iter().map(|s| s.disk_free as f64).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for s in &same {
        let dt = s.at as f64 - t0 - mean_t;
        num += dt * (s.disk_free as f64 - mean_y);
        den += dt * dt;
    }
    let slope = num / den;
    if !slope.is_finite() || slope >= 0.0 {
        return None;
    }
    // free(t) = mean_y + slope·(t − t0 − mean_t) reaches 0 at:
    let zero = t0 + mean_t - mean_y / slope;
    Some((last.disk_mount.clone(), zero.round() as i64))
}

/// ACME: orders failing again and again, and certificates whose renewal is overdue.
async fn acme(shared: &Shared, c: &AlertsConfig, now: i64, f: &mut Findings) -> Result<()> {
    let orders = shared.store.acme_orders(None).await?;
    let current = crate::acme::renewal::current(&orders);
    let renewing: BTreeSet<(&str, &str)> = orders
        .iter()
        .filter(|o| !matches!(o.state, OrderState::Issued | OrderState::Revoked) && !o.superseded)
        .map(|o| (o.agent_id.as_str(), o.certificate.as_str()))
        .collect();
    for o in orders
        .iter()
        .filter(|o| o.state == OrderState::Failed && !o.superseded && o.failures >= c.acme_failures)
    {
        f.conditions.push(condition(
            "AcmeOrderFailing",
            "warning",
            &[("agent", &o.agent_id), ("certificate", &o.certificate)],
            format!(
                "the ACME order for {} failed {} times in a row: {}",
                o.domains.join(", "),
                o.failures,
                o.last_error
            ),
            Duration::ZERO,
        ));
    }
    for ((agent, cert), o) in current {
        if crate::acme::renewal::in_last_third(o.not_before, o.not_after, now) {
            let why = if renewing.contains(&(agent, cert)) {
                "its renewal has not completed"
            } else {
                "no renewal is under way"
            };
            f.conditions.push(condition(
                "CertificateRenewalOverdue",
                "warning",
                &[("agent", agent), ("certificate", cert)],
                format!(
                    "certificate {cert:?} expires {} and {why}",
                    when(o.not_after)
                ),
                c.renewal_overdue_for,
            ));
        }
    }
    Ok(())
}

/// WireGuard host peers the network's other hosts have not shaken hands with lately.
async fn wireguard(shared: &Shared, c: &AlertsConfig, now: i64, f: &mut Findings) -> Result<()> {
    let age = c.wireguard_handshake_age;
    for n in crate::wireguard::status::show(shared, None).await? {
        for p in n
            .peers
            .iter()
            .filter(|p| p.kind == "host" && !p.seen_by.is_empty())
        {
            let (summary, hold) = if p.latest_handshake == 0 {
                (
                    format!("{} has never completed a handshake in {}", p.name, n.name),
                    age,
                )
            } else if now - p.latest_handshake > age.as_secs() as i64 {
                (
                    format!(
                        "{}'s latest handshake in {} was at {}",
                        p.name,
                        n.name,
                        when(p.latest_handshake)
                    ),
                    Duration::ZERO,
                )
            } else {
                continue;
            };
            f.conditions.push(condition(
                "WireguardPeerNoHandshake",
                "warning",
                &[("network", &n.name), ("peer", &p.name)],
                summary,
                hold,
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: i64, free: u64) -> SampleRow {
        SampleRow {
            agent_id: "a".into(),
            at,
            cpu_percent: 0.0,
            memory_used: 0,
            memory_total: 1,
            disk_mount: "/".into(),
            disk_free: free,
            disk_total: 1000,
        }
    }

    #[test]
    fn a_disk_losing_space_steadily_is_predicted_to_fill_when_the_line_reaches_zero() {
        // 10 bytes an hour less, 500 left at t = 3 h: empty at 3 h + 50 h.
        let samples: Vec<_> = (0..=6)
            .map(|i| sample(i * 1800, 530 - 5 * i as u64))
            .collect();
        let (mount, at) = fills_at(&samples, 3 * 3600).unwrap();
        assert_eq!(mount, "/");
        assert!((at - (3 * 3600 + 50 * 3600)).abs() < 60, "{at}");
    }

    #[test]
    fn short_histories_growing_space_and_a_new_mount_predict_nothing() {
        let short: Vec<_> = (0..5).map(|i| sample(i * 60, 500 - i as u64)).collect();
        assert_eq!(fills_at(&short, 3 * 3600), None);
        let growing: Vec<_> = (0..7).map(|i| sample(i * 1800, 500 + i as u64)).collect();
        assert_eq!(fills_at(&growing, 3 * 3600), None);
        let mut moved: Vec<_> = (0..7).map(|i| sample(i * 1800, 500 - i as u64)).collect();
        moved.last_mut().unwrap().disk_mount = "/srv".into();
        assert_eq!(fills_at(&moved, 3 * 3600), None);
    }
}
