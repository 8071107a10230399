//! What a host reports is a stranger's text until checked: every field of an `Ack`, a
//! `Report` or `HostFacts` is escaped and bounded before the controller keeps it, and fields
//! with a documented shape (resource names, hex serials, absolute paths, interface names) are
//! dropped when they do not have it. A compromised host can then put nothing into a table, a
//! log line or the audit trail that rewrites what an operator sees.

use gatehouse_proto::names::{DomainName, InterfaceName, ResourceName, TunnelName, WgKey};
use gatehouse_proto::text::escape;
use gatehouse_proto::v1::{
    Ack, CertificateInventory, HostFacts, Report, TunnelStatus, WireguardStatus,
};

/// The longest item error kept.
const ERROR_MAX: usize = 2000;

/// `text` escaped and cut to `max` characters.
fn bounded(text: &str, max: usize) -> String {
    let escaped = escape(text);
    if escaped.chars().count() <= max {
        return escaped.into_owned();
    }
    let mut cut: String = escaped.chars().take(max).collect();
    cut.push('…');
    cut
}

/// An item's kind is a lowercase word, its name a resource name or nothing.
fn item_shaped(kind: &str, name: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= 32
        && kind.bytes().all(|b| b.is_ascii_lowercase())
        && (name.is_empty() || name.parse::<ResourceName>().is_ok())
}

fn hex_shaped(text: &str) -> bool {
    text.len() <= 128 && text.bytes().all(|b| b.is_ascii_hexdigit() || b == b':')
}

fn path_shaped(text: &str) -> bool {
    text.starts_with('/')
        && text.len() <= 4096
        && !text.chars().any(gatehouse_proto::text::is_unsafe)
}

/// A Linux interface name: 1–15 bytes, no '/', no whitespace or control characters.
fn interface_shaped(text: &str) -> bool {
    (1..=15).contains(&text.len())
        && !text
            .chars()
            .any(|c| c == '/' || c.is_whitespace() || gatehouse_proto::text::is_unsafe(c))
}

/// Cleans an acknowledgement in place.
pub fn ack(ack: &mut Ack) {
    for r in &mut ack.results {
        if !item_shaped(&r.kind, &r.name) {
            r.name = bounded(&r.item(), 80);
            r.kind = "invalid".into();
        }
        r.message = bounded(&r.message, ERROR_MAX);
    }
}

/// The most tunnels a report may carry.
const TUNNELS_MAX: usize = 1000;

/// Cleans a report in place: entries without their shape are dropped.
pub fn report(report: &mut Report) {
    report.certificates.retain(certificate_shaped);
    report
        .tunnels
        .retain(|t| t.name.parse::<TunnelName>().is_ok());
    report.tunnels.truncate(TUNNELS_MAX);
    for t in &mut report.tunnels {
        tunnel(t);
    }
    report.wireguard.retain(wireguard_shaped);
    report.wireguard.truncate(TUNNELS_MAX);
    for w in &mut report.wireguard {
        w.error = bounded(&w.error, ERROR_MAX);
        w.peers.retain(|p| p.public_key.parse::<WgKey>().is_ok());
        for p in &mut w.peers {
            if p.endpoint.parse::<std::net::SocketAddr>().is_err() {
                p.endpoint.clear();
            }
        }
    }
    if let Some(m) = &mut report.metrics {
        m.filesystems.retain(|f| path_shaped(&f.mount_point));
        for f in &mut m.filesystems {
            f.file_system = bounded(&f.file_system, 64);
        }
        m.interfaces.retain(|i| interface_shaped(&i.name));
    }
}

/// A WireGuard status names a network and an interface, with a key when it has one.
fn wireguard_shaped(w: &WireguardStatus) -> bool {
    w.network.parse::<ResourceName>().is_ok()
        && w.interface.parse::<InterfaceName>().is_ok()
        && (w.public_key.is_empty() || w.public_key.parse::<WgKey>().is_ok())
}

fn tunnel(t: &mut TunnelStatus) {
    t.active_state = bounded(&t.active_state, 32);
    t.sub_state = bounded(&t.sub_state, 32);
    t.connector_id = bounded(&t.connector_id, 64);
    t.error = bounded(&t.error, ERROR_MAX);
}

fn certificate_shaped(c: &CertificateInventory) -> bool {
    c.name.parse::<ResourceName>().is_ok()
        && hex_shaped(&c.serial)
        && hex_shaped(&c.sha256)
        && path_shaped(&c.path)
        && c.domains.iter().all(|d| d.parse::<DomainName>().is_ok())
}

/// An agent's version as it says it: visible text on one line.
pub fn version(text: &str) -> String {
    bounded(text, 64)
}

/// Cleans host facts in place: each one visible text on one line.
pub fn facts(facts: &mut HostFacts) {
    facts.hostname = bounded(&facts.hostname, 253);
    facts.os = bounded(&facts.os, 128);
    facts.kernel = bounded(&facts.kernel, 128);
    facts.arch = bounded(&facts.arch, 32);
    facts
        .addresses
        .retain(|a| a.parse::<std::net::IpAddr>().is_ok());
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_proto::v1::{FilesystemUsage, HostMetrics, InterfaceTraffic, ItemResult};

    const HOSTILE: [&str; 5] = [
        "a\nfake: line",
        "\x1b[2J\x1b[Hcleared",
        "bell\x07",
        "cr\rover",
        "\x1b]0;title\x07",
    ];

    #[test]
    fn item_names_and_errors_are_escaped_and_bounded() {
        for bad in HOSTILE {
            let mut a = Ack {
                generation: 1,
                results: vec![
                    ItemResult::failed("site", bad, bad.repeat(1000)),
                    ItemResult::failed(bad, "www", "x"),
                ],
            };
            ack(&mut a);
            for r in &a.results {
                assert_eq!(r.kind, "invalid", "{r:?}");
                for text in [&r.name, &r.message] {
                    assert!(
                        !text.chars().any(gatehouse_proto::text::is_unsafe),
                        "{text:?}"
                    );
                }
                assert!(r.message.chars().count() <= ERROR_MAX + 1);
            }
        }
        let mut fine = Ack {
            generation: 1,
            results: vec![ItemResult::pending("certificate", "www", "waiting")],
        };
        ack(&mut fine);
        assert_eq!(fine.results[0].item(), "certificate/www");
        assert!(item_shaped("settings", "agent") && item_shaped("caddy", ""));
    }

    #[test]
    fn tunnel_statuses_need_a_tunnel_name_and_their_text_is_escaped() {
        let mut r = Report::default();
        for bad in HOSTILE {
            r.tunnels.push(TunnelStatus {
                name: bad.into(),
                ..Default::default()
            });
            r.tunnels.push(TunnelStatus {
                name: "odoo".into(),
                active_state: bad.into(),
                error: bad.repeat(1000),
                connector_id: bad.into(),
                ..Default::default()
            });
        }
        report(&mut r);
        assert_eq!(r.tunnels.len(), HOSTILE.len());
        for t in &r.tunnels {
            for text in [&t.active_state, &t.error, &t.connector_id] {
                assert!(
                    !text.chars().any(gatehouse_proto::text::is_unsafe),
                    "{text:?}"
                );
            }
            assert!(t.error.chars().count() <= ERROR_MAX + 1);
        }
    }

    #[test]
    fn report_fields_without_their_shape_are_dropped() {
        let cert = |name: &str, serial: &str, path: &str| CertificateInventory {
            name: name.into(),
            serial: serial.into(),
            not_after: 1,
            sha256: "ab".into(),
            path: path.into(),
            revision: 1,
            domains: vec!["www.example.com".into()],
        };
        let mut r = Report {
            certificates: vec![
                cert("www", "0a:1b", "/etc/gatehouse/tls/sites/www.crt"),
                cert("www\x1b[1m", "0a", "/x"),
                cert("api", "0a\n", "/x"),
                cert("api", "0a", "relative/path"),
            ],
            metrics: Some(HostMetrics {
                filesystems: vec![
                    FilesystemUsage {
                        mount_point: "/".into(),
                        file_system: "ext4\x1b".into(),
                        ..Default::default()
                    },
                    FilesystemUsage {
                        mount_point: "/mnt\nfake".into(),
                        ..Default::default()
                    },
                ],
                interfaces: vec![
                    InterfaceTraffic {
                        name: "eth0".into(),
                        ..Default::default()
                    },
                    InterfaceTraffic {
                        name: "wg\x1b[0m".into(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        report(&mut r);
        assert_eq!(r.certificates.len(), 1);
        let m = r.metrics.unwrap();
        assert_eq!(m.filesystems.len(), 1);
        assert_eq!(m.filesystems[0].file_system, "ext4\\u{1b}");
        assert_eq!(m.interfaces.len(), 1);
    }

    #[test]
    fn facts_are_one_visible_line_each() {
        let mut f = HostFacts {
            hostname: "host\x1b]0;pwned\x07".into(),
            os: "Debian\n12".into(),
            kernel: "6.1".into(),
            arch: "x86_64".into(),
            addresses: vec!["10.0.0.1".into(), "not\nan address".into()],
        };
        facts(&mut f);
        assert_eq!(f.hostname, "host\\u{1b}]0;pwned\\u{7}");
        assert_eq!(f.os, "Debian\\n12");
        assert_eq!(f.addresses, ["10.0.0.1"]);
    }
}
