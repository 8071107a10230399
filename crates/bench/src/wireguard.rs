//! The WireGuard benchmark: address management for N clients in one network (an in-process
//! controller on SQLite, as `wg client add` reaches it), the plan and apply of a hub with M
//! peers on a real wireguard-go interface and of one peer added to it, and the plan of a mesh
//! of H hosts. Needs root and wireguard-go (the interface lives in the root network namespace
//! under a name of its own, and is removed at the end).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use gatehouse_agent::host::wireguard::{Userspace, WireGuard};
use gatehouse_agent::reconcile::wireguard::{Desired, Interfaces};
use gatehouse_agent::reconcile::{Outcome, Resource};
use gatehouse_common::transport::ControllerUrl;
use gatehouse_common::wgkeys::PrivateKey;
use gatehouse_controller::secrets::{JOIN_PREFIX, Token};
use gatehouse_controller::server::{self, Running};
use gatehouse_controller::store::{WgNetworkRow, WgPeerRow};
use gatehouse_controller::wireguard::{desired, networks, peers};
use gatehouse_proto::names::WgKey;
use gatehouse_proto::v1;
use tokio_util::sync::CancellationToken;

use crate::harness::{line, p50_p99};

/// Options of `gatehouse-bench wireguard`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Clients added to one network, one call each.
    #[arg(long, default_value_t = 10_000)]
    pub clients: usize,
    /// Peers of the hub whose interface is planned and applied.
    #[arg(long, default_value_t = 1_000)]
    pub hub_peers: usize,
    /// Hosts of the mesh that is planned.
    #[arg(long, default_value_t = 50)]
    pub mesh_hosts: usize,
    /// The wireguard-go executable.
    #[arg(long, default_value = "/usr/bin/wireguard-go")]
    pub wireguard_go: std::path::PathBuf,
}

pub async fn run(o: Options) -> anyhow::Result<()> {
    ipam(&o).await?;
    mesh(o.mesh_hosts);
    hub(&o).await
}

/// A fake but well-formed public key for peer `n` (making real ones would time X25519).
fn key(n: u32) -> WgKey {
    let mut b = [9u8; 32];
    b[..4].copy_from_slice(&n.to_be_bytes());
    WgKey::from_bytes(&b)
}

async fn controller(dir: &std::path::Path) -> anyhow::Result<Running> {
    let mut config = gatehouse_controller::config::Config::with_data_dir(&dir.join("controller"));
    for addr in [
        &mut config.agent_listen,
        &mut config.admin_listen,
        &mut config.http_listen,
    ] {
        *addr = "127.0.0.1:0".parse()?;
    }
    config.admin_socket = dir.join("admin.sock");
    Ok(server::start(config, CancellationToken::new()).await?)
}

/// Address management: N clients added one by one to a network with a hub, then the time until
/// the hub's desired state holds all of them.
async fn ipam(o: &Options) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("gatehouse-bench-wg-")
        .tempdir()?;
    let running = controller(dir.path()).await?;
    let shared = &running.shared;
    networks::create(
        shared,
        networks::NewNetwork {
            name: "bench".into(),
            ipv4: "10.64.0.0/16".into(),
            ..Default::default()
        },
    )
    .await?;
    // The hub: a real enrolled identity whose key the "host" reports.
    let token = Token::generate(JOIN_PREFIX);
    gatehouse_controller::tokens::create_join_token(
        shared,
        &token,
        Duration::from_secs(60),
        BTreeMap::new(),
    )
    .await?;
    let port = running.agent_addr.port();
    let url =
        ControllerUrl::parse(&format!("https://127.0.0.1:{port}"), port).map_err(|e| anyhow!(e))?;
    let paths = gatehouse_agent::config::Config::with_root(&dir.path().join("hub")).paths;
    let hub = gatehouse_agent::enroll::enroll(
        &paths,
        &url,
        &token.reveal(),
        running.ca_hash(),
        v1::HostFacts::default(),
    )
    .await
    .map_err(|e| anyhow!("{e}"))?
    .agent_id
    .to_string();
    peers::add_host(
        shared,
        peers::NewHost {
            network: "bench".into(),
            agent_id: hub.clone(),
            hub: true,
            endpoint: "hub.example.com:51820".into(),
            ..Default::default()
        },
    )
    .await?;
    shared
        .store
        .wg_host_key_set("bench", &hub, key(0).as_str())
        .await?;
    let started = Instant::now();
    let mut each = Vec::with_capacity(o.clients);
    for i in 0..o.clients {
        let t = Instant::now();
        peers::add_client(
            shared,
            peers::NewClient {
                network: "bench".into(),
                name: format!("c{i}"),
                public_key: key(i as u32 + 1).to_string(),
                ..Default::default()
            },
        )
        .await?;
        each.push(t.elapsed());
    }
    let total = started.elapsed();
    let wanted = o.clients;
    let synced = loop {
        let state = shared
            .store
            .desired_latest(&hub)
            .await?
            .context("the hub's desired state")?;
        if state
            .state
            .wireguard
            .first()
            .is_some_and(|w| w.peers.len() == wanted)
        {
            break started.elapsed();
        }
        if started.elapsed() > total + Duration::from_secs(120) {
            return Err(anyhow!("the hub's desired state never held every client"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    each.sort();
    line("wg_clients", o.clients);
    line(
        "wg_ipam_clients_added_seconds",
        format!("{:.2}", total.as_secs_f64()),
    );
    p50_p99("wg_ipam_client_add", &each);
    line(
        "wg_ipam_hub_state_synced_seconds",
        format!("{:.2}", synced.as_secs_f64()),
    );
    let used = networks::used(shared, "bench").await?;
    if used.0.len() != o.clients + 1 || used.1.len() != o.clients + 1 {
        return Err(anyhow!("addresses handed out twice"));
    }
    Ok(())
}

/// The plan of a mesh of `n` hosts: every host's interface computed.
fn mesh(n: usize) {
    let network = WgNetworkRow {
        name: "mesh".into(),
        interface: "gh-mesh".into(),
        ipv4: "10.65.0.0/24".into(),
        ipv6: "fd65::/64".into(),
        topology: "mesh".into(),
        port: 51820,
        mtu: 1420,
        dns: vec![],
        keepalive_seconds: 25,
        created_at: 0,
    };
    let hosts: Vec<WgPeerRow> = (0..n)
        .map(|i| WgPeerRow {
            network: "mesh".into(),
            name: format!("host{i}"),
            kind: "host".into(),
            agent_id: format!("host{i}"),
            public_key: key(i as u32).to_string(),
            ipv4: format!("10.65.0.{}", i + 1),
            ipv6: format!("fd65::{:x}", i + 1),
            hub: i == 0,
            endpoint: format!("198.51.100.{}:51820", i + 1),
            preshared_key: String::new(),
            expires_at: 0,
            key_revision: 0,
            created_at: 0,
        })
        .collect();
    let t = Instant::now();
    let specs: Vec<v1::WireguardSpec> = hosts
        .iter()
        .map(|h| desired::host_spec(&network, &hosts, h, 0))
        .collect();
    let planned = t.elapsed();
    let links: usize = specs.iter().map(|s| s.peers.len()).sum();
    line("wg_mesh_hosts", n);
    line("wg_mesh_peerings", links);
    line(
        "wg_mesh_plan_ms",
        format!("{:.2}", planned.as_secs_f64() * 1000.0),
    );
}

fn hub_spec(interface: &str, peers: usize) -> v1::WireguardSpec {
    v1::WireguardSpec {
        network: "benchhub".into(),
        interface: interface.into(),
        key_revision: 0,
        addresses: vec!["10.66.0.1/16".into(), "fd66::1/64".into()],
        listen_port: 40000 + (std::process::id() % 20000),
        mtu: 1420,
        forward: false,
        peers: (0..peers)
            .map(|i| v1::WireguardPeer {
                public_key: key(i as u32 + 1).to_string(),
                preshared_key: PrivateKey::random().expose().to_string(),
                endpoint: String::new(),
                allowed_ips: vec![
                    format!("10.66.{}.{}/32", (i + 2) / 256, (i + 2) % 256),
                    format!("fd66::{:x}/128", i + 2),
                ],
                keepalive_seconds: 25,
                comment: String::new(),
            })
            .collect(),
    }
}

/// One pass of the interface resource: observe, plan, apply. Its time and its steps.
async fn pass(wg: &Interfaces, spec: &v1::WireguardSpec) -> anyhow::Result<(Duration, usize)> {
    let desired = Desired {
        interfaces: vec![
            gatehouse_proto::spec::Wireguard::try_from(spec).map_err(|e| anyhow!(e.reason))?,
        ],
    };
    let t = Instant::now();
    let observed = wg.observe().await.map_err(|e| anyhow!(e))?;
    let changes = Interfaces::plan(&desired, &observed);
    let steps = changes.len();
    let mut out = Outcome::default();
    wg.apply(&desired, changes, &mut out).await;
    let took = t.elapsed();
    if let Some(bad) = out.results.iter().find(|r| !r.message.is_empty()) {
        return Err(anyhow!("{}: {}", bad.item(), bad.message));
    }
    Ok((took, steps))
}

/// A hub with M peers planned and applied on a real wireguard-go interface, then one peer added.
async fn hub(o: &Options) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("gatehouse-bench-wg-hub-")
        .tempdir()?;
    let interface = format!("ghb{}", std::process::id() % 100_000);
    let wg = Interfaces::new(WireGuard {
        dir: dir.path().join("wireguard"),
        userspace: Userspace::Direct,
        wireguard_go: o.wireguard_go.clone(),
        systemd: gatehouse_agent::host::systemd::Systemd::host(),
    });
    let full = hub_spec(&interface, o.hub_peers);
    let result = async {
        let (first, steps) = pass(&wg, &full).await?;
        let (again, nothing) = pass(&wg, &full).await?;
        let more = hub_spec(&interface, o.hub_peers + 1);
        let (one, one_steps) = pass(&wg, &more).await?;
        anyhow::Ok((first, steps, again, nothing, one, one_steps))
    }
    .await;
    // Whatever happened: the interface and its key go.
    let empty = Desired::default();
    let observed = wg.observe().await.map_err(|e| anyhow!(e))?;
    let mut out = Outcome::default();
    wg.apply(&empty, Interfaces::plan(&empty, &observed), &mut out)
        .await;
    let (first, steps, again, nothing, one, one_steps) = result?;
    line("wg_hub_peers", o.hub_peers);
    line(
        "wg_hub_create_and_apply_ms",
        format!("{:.1}", first.as_secs_f64() * 1000.0),
    );
    line("wg_hub_create_steps", steps);
    line(
        "wg_hub_unchanged_pass_ms",
        format!("{:.1}", again.as_secs_f64() * 1000.0),
    );
    line("wg_hub_unchanged_steps", nothing);
    line(
        "wg_hub_one_peer_added_ms",
        format!("{:.1}", one.as_secs_f64() * 1000.0),
    );
    line("wg_hub_one_peer_added_steps", one_steps);
    Ok(())
}
