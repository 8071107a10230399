//! WireGuard networks and address management against an in-process controller: addresses are
//! never handed out twice (also under concurrent adds), exhaustion is a clear error, a released
//! address comes back only after its release, and hostile names and keys are refused.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use gatehouse_controller::error::Error;
use gatehouse_controller::server::{self, Running};
use gatehouse_controller::wireguard::networks::{self, NewNetwork};
use gatehouse_controller::wireguard::peers::{self, NewClient, NewHost};
use gatehouse_proto::names::WgKey;
use tokio_util::sync::CancellationToken;

async fn controller(dir: &std::path::Path) -> Running {
    let config = support::config(dir);
    server::start(config, CancellationToken::new())
        .await
        .unwrap()
}

/// Enrolls an agent (its identity only; it does not run); its id.
async fn agent(running: &Running, root: &std::path::Path) -> String {
    support::enroll(running, root, BTreeMap::new()).await
}

/// A key that parses as one (its bytes from `n`).
fn key(n: u32) -> String {
    let mut b = [7u8; 32];
    b[..4].copy_from_slice(&n.to_be_bytes());
    WgKey::from_bytes(&b).to_string()
}

fn network(name: &str, ipv4: &str) -> NewNetwork {
    NewNetwork {
        name: name.into(),
        ipv4: ipv4.into(),
        ..Default::default()
    }
}

fn client(network: &str, name: &str, n: u32) -> NewClient {
    NewClient {
        network: network.into(),
        name: name.into(),
        public_key: key(n),
        ..Default::default()
    }
}

/// A network with a hub whose key is known, so clients can attach.
async fn with_hub(running: &Running, dir: &std::path::Path, name: &str, ipv4: &str) -> String {
    networks::create(&running.shared, network(name, ipv4))
        .await
        .unwrap();
    let id = agent(running, &dir.join(format!("hub-{name}"))).await;
    let hub = peers::add_host(
        &running.shared,
        NewHost {
            network: name.into(),
            agent_id: id.clone(),
            hub: true,
            endpoint: "hub.example.com:51820".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(hub.public_key, "", "no key until the host reports one");
    assert!(
        running
            .shared
            .store
            .wg_host_key_set(name, &id, &key(0))
            .await
            .unwrap()
    );
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_adds_never_share_an_address_and_exhaustion_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let running = controller(dir.path()).await;
    // A /27: 30 usable IPv4 addresses, the hub takes the first.
    with_hub(&running, dir.path(), "office", "10.70.0.0/27").await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..29u32 {
        let shared = running.shared.clone();
        tasks.spawn(async move {
            peers::add_client(&shared, client("office", &format!("c{i}"), i + 1))
                .await
                .map(|(c, _)| (c.ipv4, c.ipv6))
        });
    }
    let mut v4 = BTreeSet::new();
    let mut v6 = BTreeSet::new();
    while let Some(r) = tasks.join_next().await {
        let (a, b) = r.unwrap().unwrap();
        assert!(v4.insert(a.clone()), "{a} handed out twice");
        assert!(v6.insert(b.clone()), "{b} handed out twice");
    }
    assert_eq!(v4.len(), 29);
    assert!(!v4.contains("10.70.0.1"), "the hub's address");
    assert!(!v4.contains("10.70.0.31"), "the broadcast address");

    let full = peers::add_client(&running.shared, client("office", "late", 99))
        .await
        .unwrap_err();
    assert!(matches!(full, Error::Exhausted(_)), "{full}");
    assert!(full.to_string().contains("no free address"), "{full}");

    // A released address is free again, and only then.
    let gone = peers::remove(&running.shared, "office", "c3")
        .await
        .unwrap();
    let (back, _) = peers::add_client(&running.shared, client("office", "late", 99))
        .await
        .unwrap();
    assert_eq!(back.ipv4, gone.ipv4);
    assert_ne!(back.ipv6, "", "an IPv6 address too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requested_addresses_are_checked_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let running = controller(dir.path()).await;
    with_hub(&running, dir.path(), "lab", "10.71.0.0/24").await;
    let row = networks::get(&running.shared, "lab").await.unwrap();
    assert!(row.ipv6.starts_with("fd"), "a ULA by default: {}", row.ipv6);
    assert!(row.ipv6.ends_with("::/64"), "{}", row.ipv6);
    assert_eq!(row.interface, "gh-lab");

    let mut asked = client("lab", "printer", 1);
    asked.ipv4 = "10.71.0.50".into();
    let (c, _) = peers::add_client(&running.shared, asked.clone())
        .await
        .unwrap();
    assert_eq!(c.ipv4, "10.71.0.50");
    asked.name = "scanner".into();
    asked.public_key = key(2);
    let taken = peers::add_client(&running.shared, asked.clone())
        .await
        .unwrap_err();
    assert!(matches!(taken, Error::Exists(_)), "{taken}");
    for bad in ["10.72.0.1", "10.71.0.0", "10.71.0.255", "fd00::1", "nope"] {
        asked.ipv4 = bad.into();
        let e = peers::add_client(&running.shared, asked.clone())
            .await
            .unwrap_err();
        assert!(e.to_string().starts_with("ipv4:"), "{bad}: {e}");
    }
    // The same key twice, or a name twice, is refused.
    let mut twice = client("lab", "printer-2", 1);
    let e = peers::add_client(&running.shared, twice.clone())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("public_key"), "{e}");
    twice.name = "printer".into();
    twice.public_key = key(3);
    let e = peers::add_client(&running.shared, twice).await.unwrap_err();
    assert!(matches!(e, Error::Exists(_)), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_ranges_and_keys_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let running = controller(dir.path()).await;
    let shared = &running.shared;
    for (new, field) in [
        (network("Bad Name", ""), "name"),
        (network("../x", ""), "name"),
        (network("averyveryverylongname", ""), "interface"),
        (
            NewNetwork {
                interface: "wg0;reboot".into(),
                ..network("a", "")
            },
            "interface",
        ),
        (
            NewNetwork {
                interface: "a234567890123456".into(),
                ..network("b", "")
            },
            "interface",
        ),
        (network("c", "10.0.0.1/24"), "ipv4"),
        (network("d", "fd00::/64"), "ipv4"),
        (
            NewNetwork {
                ipv6: "10.0.0.0/24".into(),
                ..network("e", "")
            },
            "ipv6",
        ),
        (
            NewNetwork {
                topology: "star".into(),
                ..network("f", "")
            },
            "topology",
        ),
        (
            NewNetwork {
                mtu: 100,
                ..network("g", "")
            },
            "mtu",
        ),
        (
            NewNetwork {
                dns: vec!["1.1.1.1; rm".into()],
                ..network("h", "")
            },
            "dns",
        ),
    ] {
        let e = networks::create(shared, new).await.unwrap_err().to_string();
        assert!(e.contains(field), "{e} should name {field}");
    }
    assert!(shared.store.wg_networks().await.unwrap().is_empty());

    networks::create(shared, network("home", "10.80.0.0/24"))
        .await
        .unwrap();
    let overlap = networks::create(shared, network("home2", "10.80.0.0/16"))
        .await
        .unwrap_err();
    assert!(overlap.to_string().contains("overlaps"), "{overlap}");
    let e = peers::add_client(shared, client("home", "phone", 1))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no hub"), "{e}");
    let mut bad = client("home", "phone", 1);
    bad.public_key = "not-a-key".into();
    let e = peers::add_client(shared, bad)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("public_key"), "{e}");
    let e = peers::add_host(
        shared,
        NewHost {
            network: "home".into(),
            agent_id: "nosuchagent00000".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e}");
    let id = agent(&running, &dir.path().join("h")).await;
    for endpoint in ["hub:0", "a b:1", "x;y:1"] {
        let e = peers::add_host(
            shared,
            NewHost {
                network: "home".into(),
                agent_id: id.clone(),
                hub: true,
                endpoint: endpoint.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("endpoint"), "{endpoint}: {e}");
    }
    let e = networks::delete(shared, "nope").await.unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e}");
    peers::add_host(
        shared,
        NewHost {
            network: "home".into(),
            agent_id: id.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let busy = networks::delete(shared, "home").await.unwrap_err();
    assert!(busy.to_string().contains("still has 1 peer"), "{busy}");
    peers::remove(shared, "home", &id).await.unwrap();
    networks::delete(shared, "home").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_client_leaves_the_network_and_frees_its_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let clock = gatehouse_common::Clock::manual(gatehouse_common::now_unix());
    let running = server::start_with_clock(
        support::config(dir.path()),
        clock.clone(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    with_hub(&running, dir.path(), "road", "10.90.0.0/24").await;
    let mut laptop = client("road", "laptop", 1);
    laptop.expires_at = running.shared.now() + 3600;
    let (added, _) = peers::add_client(&running.shared, laptop).await.unwrap();
    peers::add_client(&running.shared, client("road", "desk", 2))
        .await
        .unwrap();
    assert_eq!(
        gatehouse_controller::wireguard::desired::expire(&running.shared)
            .await
            .unwrap(),
        0,
        "not yet"
    );
    clock.advance(Duration::from_secs(3601));
    assert_eq!(
        gatehouse_controller::wireguard::desired::expire(&running.shared)
            .await
            .unwrap(),
        1
    );
    let left: Vec<String> = running
        .shared
        .store
        .wg_peers("road")
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert!(!left.contains(&"laptop".to_owned()), "{left:?}");
    assert!(left.contains(&"desk".to_owned()), "{left:?}");
    // Its address is the next one handed out.
    let (next, _) = peers::add_client(&running.shared, client("road", "tablet", 3))
        .await
        .unwrap();
    assert_eq!(next.ipv4, added.ipv4);
}
