//! WireGuard between real hosts: two network namespaces, each with its own agent running
//! wireguard-go, joined by a veth pair; the controller on the test's side of two more links.
//! A mesh network: the hosts make their keys, handshake, and UDP crosses the tunnel over IPv4
//! and IPv6.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use gatehouse_testkit::gatehouse::{Agent, Controller};
use gatehouse_testkit::netns::{Netns, veth};
use gatehouse_testkit::process::external;
use gatehouse_testkit::wait_for;
use serde_json::Value;

/// A short tag unique to this test process, for interface and namespace names.
fn tag() -> u32 {
    std::process::id() % 10_000
}

struct Hosts {
    controller: Controller,
    ns: [Netns; 2],
    agents: [Agent; 2],
    ids: [String; 2],
    /// The underlay addresses the hosts reach each other at.
    underlay: [String; 2],
}

/// Three /30 links from a base of 198.18.0.0/15 picked by this process's id.
fn hosts() -> Hosts {
    let wireguard_go = external("wireguard-go", &[], "wireguard-go");
    let base = 4 + (std::process::id() % 8000) * 16;
    let at = |off: u32| {
        std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(198, 18, 0, 0)) + base + off)
    };
    let ns = [Netns::new("ghwa"), Netns::new("ghwb")];
    let t = tag();
    // The test's side to each host, and the hosts to each other.
    veth(
        &format!("gw{t}x"),
        (None, &format!("{}/30", at(1))),
        (Some(&ns[0]), &format!("{}/30", at(2))),
    );
    veth(
        &format!("gw{t}y"),
        (None, &format!("{}/30", at(5))),
        (Some(&ns[1]), &format!("{}/30", at(6))),
    );
    veth(
        &format!("gw{t}z"),
        (Some(&ns[0]), &format!("{}/30", at(9))),
        (Some(&ns[1]), &format!("{}/30", at(10))),
    );
    // Host b reaches the controller (on the first link) through its own link.
    ns[1].ip(&[
        "route",
        "add",
        &format!("{}/32", at(1)),
        "dev",
        &format!("gw{t}yb"),
    ]);
    let controller = Controller::start_on(at(1).into(), "");
    let config = format!(
        "[caddy]\nenabled = false\n[wireguard]\nuserspace = \"direct\"\nwireguard_go = {:?}\n",
        wireguard_go.display().to_string()
    );
    let agents = [
        controller.agent_with("a", &config),
        controller.agent_with("b", &config),
    ];
    let ids = [agents[0].enroll(&controller), agents[1].enroll(&controller)];
    let [a, b] = agents;
    let mut agents = [a.in_netns(&ns[0]), b.in_netns(&ns[1])];
    for agent in &mut agents {
        agent.run();
    }
    for agent in &agents {
        agent.wait_status("connected", Duration::from_secs(30), |s| {
            s["connected"] == true
        });
    }
    Hosts {
        controller,
        ns,
        agents,
        ids,
        underlay: [at(9).to_string(), at(10).to_string()],
    }
}

impl Hosts {
    fn network(&self, name: &str) -> Value {
        self.controller.ctl_json(&["wg", "network", "show", name])
    }

    fn peer<'a>(network: &'a Value, name: &str) -> &'a Value {
        network["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no peer {name} in {network}"))
    }
}

/// Sends a datagram from `from` to `addr` in `to` (inside the namespaces) until one arrives.
fn datagram_crosses(from: &Netns, to: &Netns, addr: &str) {
    let target: SocketAddr = if addr.contains(':') {
        format!("[{addr}]:9999")
    } else {
        format!("{addr}:9999")
    }
    .parse()
    .unwrap();
    let receiver = wait_for(
        &format!("{target} bound on the tunnel's address"),
        Duration::from_secs(20),
        || to.run(move || UdpSocket::bind(target).ok()),
    );
    receiver
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let sender = from.run(move || {
        let any: SocketAddr = if target.is_ipv6() {
            "[::]:0".parse().unwrap()
        } else {
            "0.0.0.0:0".parse().unwrap()
        };
        UdpSocket::bind(any).unwrap()
    });
    let mut buf = [0u8; 64];
    wait_for(
        &format!("a datagram to {target} through the tunnel"),
        Duration::from_secs(30),
        || {
            sender.send_to(b"through the tunnel", target).ok()?;
            let (n, _) = receiver.recv_from(&mut buf).ok()?;
            (&buf[..n] == b"through the tunnel").then_some(())
        },
    );
}

#[test]
fn a_mesh_of_two_hosts_handshakes_and_carries_ipv4_and_ipv6() {
    let hosts = hosts();
    let net = format!("m{}", tag());
    let made = hosts
        .controller
        .ctl_json(&["wg", "network", "create", &net, "--topology", "mesh"]);
    let iface = made["interface"].as_str().unwrap().to_owned();
    for (i, id) in hosts.ids.iter().enumerate() {
        let endpoint = format!("{}:51820", hosts.underlay[i]);
        let run = hosts.controller.ctl(&[
            "wg",
            "host",
            "add",
            &net,
            "--agent",
            id,
            "--endpoint",
            &endpoint,
        ]);
        assert!(run.success, "{}", run.stderr);
    }
    // Each host makes its key and reports it.
    let network = wait_for("both hosts' keys", Duration::from_secs(30), || {
        let n = hosts.network(&net);
        hosts
            .ids
            .iter()
            .all(|id| Hosts::peer(&n, id)["public_key"] != "")
            .then_some(n)
    });
    let a = Hosts::peer(&network, &hosts.ids[0]).clone();
    let b = Hosts::peer(&network, &hosts.ids[1]).clone();
    assert_ne!(a["public_key"], b["public_key"]);
    // The private key stays on the host, 0600.
    let key = hosts.agents[0]
        .root
        .join(format!("var/lib/gatehouse-agent/wireguard/{iface}.key"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    datagram_crosses(&hosts.ns[0], &hosts.ns[1], b["ipv4"].as_str().unwrap());
    datagram_crosses(&hosts.ns[1], &hosts.ns[0], a["ipv6"].as_str().unwrap());

    // `wg show` has both peers' handshakes and traffic; so has /metrics.
    let shown = wait_for("handshakes in wg show", Duration::from_secs(30), || {
        let s = hosts.controller.ctl_json(&["wg", "show", &net]);
        s[0]["peers"]
            .as_array()?
            .iter()
            .all(|p| p["latest_handshake"].as_i64() > Some(0) && p["rx_bytes"].as_u64() > Some(0))
            .then_some(s)
    });
    assert_eq!(shown[0]["peers"].as_array().unwrap().len(), 2);
    let text = hosts.controller.ctl(&["wg", "show", &net]);
    assert!(text.stdout.contains("HANDSHAKE"), "{}", text.stdout);
    assert!(!text.stdout.contains("never completed"), "{}", text.stdout);
    let (_, metrics) = hosts.controller.http_get("/metrics");
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("gatehouse_wireguard_peer_last_handshake_seconds")
                && l.contains(&format!("peer=\"{}\"", hosts.ids[0]))
        })
        .unwrap_or_else(|| panic!("no handshake metric:\n{metrics}"));
    let at: i64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(at > 0, "{line}");
}
