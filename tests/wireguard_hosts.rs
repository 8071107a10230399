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

    // A host leaving the network loses the interface and its key; the other drops it as a peer.
    let run = hosts
        .controller
        .ctl(&["wg", "host", "remove", &net, "--agent", &hosts.ids[1]]);
    assert!(run.success, "{}", run.stderr);
    let gone = hosts.agents[1]
        .root
        .join(format!("var/lib/gatehouse-agent/wireguard/{iface}.key"));
    wait_for("b's interface removed", Duration::from_secs(20), || {
        let link = std::process::Command::new("ip")
            .args(["-n", &hosts.ns[1].name, "link", "show", &iface])
            .output()
            .unwrap();
        (!link.status.success() && !gone.exists()).then_some(())
    });
    wait_for("a without b", Duration::from_secs(20), || {
        let s = hosts.controller.ctl_json(&["wg", "show", &net]);
        (s[0]["peers"].as_array()?.len() == 1).then_some(())
    });
}

/// A third namespace, the "phone", linked to host a (the hub) only; the address it reaches the
/// hub at is a's address on the hosts' link.
fn phone(hosts: &Hosts) -> Netns {
    let phone = Netns::new("ghwp");
    let t = tag();
    let base = 4 + (std::process::id() % 8000) * 16;
    let at = |off: u32| {
        std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(198, 18, 0, 0)) + base + off)
    };
    veth(
        &format!("gw{t}p"),
        (Some(&hosts.ns[0]), &format!("{}/30", at(13))),
        (Some(&phone), &format!("{}/30", at(14))),
    );
    phone.ip(&[
        "route",
        "add",
        &format!("{}/32", hosts.underlay[0]),
        "dev",
        &format!("gw{t}pb"),
    ]);
    phone
}

/// Runs `ARGS` inside `ns`, which must succeed; its stdout.
fn inside(ns: &Netns, args: &[&str]) -> String {
    let mut prefix = ns.prefix();
    let program = prefix.remove(0);
    let out = std::process::Command::new(program)
        .args(prefix)
        .args(args)
        .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The latest handshake any host of `net` reports with the peer `key` (0: none).
fn handshake(hosts: &Hosts, net: &str, key: &str) -> i64 {
    let shown = hosts.controller.ctl_json(&["wg", "show", net]);
    shown[0]["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["public_key"] == key)
        .and_then(|p| p["latest_handshake"].as_i64())
        .unwrap_or(0)
}

#[test]
fn a_hub_carries_a_phone_to_the_other_host_and_keeps_working_through_changes() {
    let mut hosts = hosts();
    let net = format!("h{}", tag());
    hosts
        .controller
        .ctl_json(&["wg", "network", "create", &net, "--dns", "10.60.0.1"]);
    let hub_endpoint = format!("{}:51820", hosts.underlay[0]);
    for args in [
        vec![
            "--agent",
            &hosts.ids[0],
            "--hub",
            "--endpoint",
            &hub_endpoint,
        ],
        vec!["--agent", &hosts.ids[1]],
    ] {
        let mut all = vec!["wg", "host", "add", &net];
        all.extend(args);
        let run = hosts.controller.ctl(&all);
        assert!(run.success, "{}", run.stderr);
    }
    let network = wait_for("both hosts' keys", Duration::from_secs(30), || {
        let n = hosts.network(&net);
        hosts
            .ids
            .iter()
            .all(|id| Hosts::peer(&n, id)["public_key"] != "")
            .then_some(n)
    });
    let b = Hosts::peer(&network, &hosts.ids[1]).clone();
    let b_key = b["public_key"].as_str().unwrap().to_owned();
    datagram_crosses(&hosts.ns[0], &hosts.ns[1], b["ipv4"].as_str().unwrap());
    let b_handshake = wait_for("b's handshake reported", Duration::from_secs(20), || {
        Some(handshake(&hosts, &net, &b_key)).filter(|t| *t > 0)
    });

    // Only the hub forwards, and wg show says so.
    let shown = hosts.controller.ctl_json(&["wg", "show", &net]);
    let forwarding = |id: &str| {
        shown[0]["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == id)
            .map(|p| p["forwarding"] == true)
    };
    assert_eq!(forwarding(&hosts.ids[0]), Some(true), "{shown}");
    assert_eq!(forwarding(&hosts.ids[1]), Some(false), "{shown}");
    let text = hosts.controller.ctl(&["wg", "show", &net]).stdout;
    assert!(text.contains("host (hub, forwarding)"), "{text}");

    // A phone: its keys made by gatehousectl, its config printed once with a QR code.
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("phone.png");
    let added = hosts.controller.ctl(&[
        "wg",
        "client",
        "add",
        &net,
        "--name",
        "phone",
        "--qr-png",
        png.to_str().unwrap(),
    ]);
    assert!(added.success, "{}", added.stderr);
    let config = added.stdout.clone();
    assert!(config.contains("DNS = 10.60.0.1"), "{config}");
    let decoded = std::process::Command::new(external("zbarimg", &[], "zbar-tools"))
        .args(["--quiet", "--raw", "-Sbinary"])
        .arg(&png)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&decoded.stdout), config);

    // The config goes through wg-quick strip and wg setconf onto a wireguard-go interface.
    let phone = phone(&hosts);
    let iface = format!("ghp{}", tag());
    let conf = dir.path().join(format!("{iface}.conf"));
    std::fs::write(&conf, &config).unwrap();
    let stripped = std::process::Command::new(external("wg-quick", &[], "wireguard-tools"))
        .args(["strip"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        stripped.status.success(),
        "{}",
        String::from_utf8_lossy(&stripped.stderr)
    );
    let stripped_file = dir.path().join("stripped.conf");
    std::fs::write(&stripped_file, &stripped.stdout).unwrap();
    inside(&phone, &["wireguard-go", &iface]);
    inside(
        &phone,
        &["wg", "setconf", &iface, stripped_file.to_str().unwrap()],
    );
    let address = |family: &str| {
        config
            .lines()
            .find_map(|l| l.strip_prefix("Address = "))
            .unwrap()
            .split(", ")
            .find(|a| a.contains(family))
            .unwrap()
            .to_owned()
    };
    phone.ip(&["addr", "add", &address("."), "dev", &iface]);
    phone.ip(&["addr", "add", &address(":"), "dev", &iface]);
    phone.ip(&["link", "set", &iface, "up"]);
    for range in network["ipv4"]
        .as_str()
        .into_iter()
        .chain(network["ipv6"].as_str())
    {
        phone.ip(&["route", "add", range, "dev", &iface]);
    }
    // The phone reaches host b through the hub, over IPv4 and IPv6.
    datagram_crosses(&phone, &hosts.ns[1], b["ipv4"].as_str().unwrap());
    datagram_crosses(&phone, &hosts.ns[1], b["ipv6"].as_str().unwrap());
    // Adding the phone did not touch the hub's session with b.
    assert_eq!(handshake(&hosts, &net, &b_key), b_handshake);

    // No private key is anywhere in the controller's store.
    let private = config
        .lines()
        .find_map(|l| l.strip_prefix("PrivateKey = "))
        .unwrap()
        .to_owned();
    let psk = config
        .lines()
        .find_map(|l| l.strip_prefix("PresharedKey = "))
        .unwrap()
        .to_owned();
    let mut secrets = vec![private, psk];
    for agent in &hosts.agents {
        let dir = agent.root.join("var/lib/gatehouse-agent/wireguard");
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            if e.file_name().to_string_lossy().ends_with(".key") {
                secrets.push(std::fs::read_to_string(e.path()).unwrap().trim().to_owned());
            }
        }
    }
    assert_eq!(secrets.len(), 4);
    for e in std::fs::read_dir(&hosts.controller.data_dir)
        .unwrap()
        .flatten()
    {
        let bytes = std::fs::read(e.path()).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        for s in &secrets {
            assert!(
                !text.contains(s.as_str()),
                "{} holds a secret",
                e.path().display()
            );
        }
    }

    // Removing the phone takes it off the hub's interface.
    let phone_key = Hosts::peer(&hosts.network(&net), "phone")["public_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let run = hosts
        .controller
        .ctl(&["wg", "client", "remove", &net, "--name", "phone"]);
    assert!(run.success, "{}", run.stderr);
    wait_for("the phone off the hub", Duration::from_secs(20), || {
        let shown = hosts.controller.ctl_json(&["wg", "show", &net]);
        shown[0]["peers"]
            .as_array()?
            .iter()
            .all(|p| p["public_key"] != phone_key.as_str())
            .then_some(())
    });

    // b makes a new key: the hub learns it and they handshake again.
    let run = hosts
        .controller
        .ctl(&["wg", "host", "rotate-key", &net, "--agent", &hosts.ids[1]]);
    assert!(run.success, "{}", run.stderr);
    let new_key = wait_for("b's new key", Duration::from_secs(30), || {
        let k = Hosts::peer(&hosts.network(&net), &hosts.ids[1])["public_key"]
            .as_str()?
            .to_owned();
        (k != b_key).then_some(k)
    });
    let a = Hosts::peer(&hosts.network(&net), &hosts.ids[0]).clone();
    datagram_crosses(&hosts.ns[1], &hosts.ns[0], a["ipv4"].as_str().unwrap());
    wait_for(
        "a handshake with b's new key",
        Duration::from_secs(20),
        || (handshake(&hosts, &net, &new_key) > 0).then_some(()),
    );

    // The hub's agent gone: the interface stays up and traffic flows; back, the same key.
    let hub_key = a["public_key"].as_str().unwrap().to_owned();
    hosts.agents[0].kill();
    datagram_crosses(&hosts.ns[1], &hosts.ns[0], a["ipv6"].as_str().unwrap());
    hosts.agents[0].run();
    hosts.agents[0].wait_status("connected again", Duration::from_secs(30), |s| {
        s["connected"] == true
    });
    assert_eq!(
        Hosts::peer(&hosts.network(&net), &hosts.ids[0])["public_key"],
        hub_key.as_str()
    );
    // The controller gone: traffic still flows.
    hosts.controller.stop();
    datagram_crosses(&hosts.ns[0], &hosts.ns[1], b["ipv6"].as_str().unwrap());
}
