//! The benchmark: the controller process, the simulated fleet, and the measurements.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use gatehouse_agent::identity::{Identity, PendingKey};
use gatehouse_agent::runtime::Backoff;
use gatehouse_agent::transport::{self, ControllerUrl};
use gatehouse_proto::v1::agent_message::Msg as Up;
use gatehouse_proto::v1::agent_service_client::AgentServiceClient;
use gatehouse_proto::v1::controller_message::Msg as Down;
use gatehouse_proto::v1::*;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::Options;
use crate::harness::*;
use crate::proc_stats::{cpu_seconds, rss};

/// What the simulated agents count.
#[derive(Default)]
struct Stats {
    /// Streams open right now.
    connected: AtomicUsize,
    /// When each agent received generation 2 (the fan-out).
    fanout: Mutex<HashMap<String, Instant>>,
}

/// A report of realistic size: a few filesystems and interfaces.
fn report() -> Report {
    let fs = |m: &str| FilesystemUsage {
        mount_point: m.into(),
        file_system: "ext4".into(),
        total_bytes: 100 << 30,
        available_bytes: 60 << 30,
    };
    let nic = |n: &str| InterfaceTraffic {
        name: n.into(),
        rx_bytes: 123_456_789,
        tx_bytes: 98_765_432,
    };
    Report {
        sampled_at: gatehouse_agent::now_unix(),
        metrics: Some(HostMetrics {
            cpu_percent: 3.5,
            memory_total_bytes: 8 << 30,
            memory_used_bytes: 3 << 30,
            swap_total_bytes: 0,
            swap_used_bytes: 0,
            load_1: 0.2,
            load_5: 0.15,
            load_15: 0.1,
            uptime_seconds: 86_400,
            filesystems: vec![fs("/"), fs("/var"), fs("/boot")],
            interfaces: vec![nic("eth0"), nic("lo"), nic("wg0")],
        }),
        applied_generation: 0,
        certificates: vec![],
        tunnels: vec![],
        wireguard: vec![],
    }
}

/// One simulated agent: connect, say hello, ack what arrives, report on the interval,
/// reconnect with the agent's own backoff. Never gives up.
async fn simulated_agent(
    url: ControllerUrl,
    tls: Arc<rustls::ClientConfig>,
    id: String,
    interval: Duration,
    stats: Arc<Stats>,
) {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    let mut applied = 0u64;
    loop {
        let mut counted = false;
        let result: anyhow::Result<()> = async {
            let channel = transport::tls_channel(&url, tls.clone()).await?;
            let (tx, rx) = mpsc::channel(8);
            tx.send(AgentMessage {
                msg: Some(Up::Hello(Hello {
                    version: "bench".into(),
                    facts: Some(HostFacts {
                        hostname: format!("sim-{id}"),
                        ..Default::default()
                    }),
                    capabilities: vec![],
                    applied_generation: applied,
                })),
            })
            .await?;
            let mut inbound = AgentServiceClient::new(channel)
                .connect(ReceiverStream::new(rx))
                .await?
                .into_inner();
            stats.connected.fetch_add(1, Ordering::SeqCst);
            counted = true;
            backoff.reset();
            let first = gatehouse_agent::random_below(interval.as_millis() as u64);
            let mut next_report = tokio::time::Instant::now() + Duration::from_millis(first);
            loop {
                tokio::select! {
                    m = inbound.message() => match m? {
                        Some(ControllerMessage { msg: Some(Down::DesiredState(d)) }) => {
                            if d.generation == 2 {
                                stats.fanout.lock().unwrap().entry(id.clone()).or_insert_with(Instant::now);
                            }
                            applied = d.generation;
                            tx.send(AgentMessage { msg: Some(Up::Ack(Ack { generation: d.generation, results: vec![] })) }).await?;
                        }
                        Some(_) => {}
                        None => return Ok(()),
                    },
                    _ = tokio::time::sleep_until(next_report) => {
                        let mut r = report();
                        r.applied_generation = applied;
                        tx.send(AgentMessage { msg: Some(Up::Report(r)) }).await?;
                        let spread = interval.as_millis() as u64 / 5;
                        next_report += interval - Duration::from_millis(spread / 2) + Duration::from_millis(gatehouse_agent::random_below(spread));
                    }
                }
            }
        }
        .await;
        if counted {
            stats.connected.fetch_sub(1, Ordering::SeqCst);
        }
        let _ = result;
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

pub async fn run(o: Options) -> anyhow::Result<()> {
    let bin_dir = bin_dir(o.bin_dir.as_deref())?;
    let dir = tempfile::Builder::new()
        .prefix("gatehouse-bench-")
        .tempdir()?;
    let setup = Setup::write(&bin_dir, dir.path(), o.report_interval, "")?;
    let (http_port, socket) = (setup.http_port, setup.socket.clone());
    let mut controller = setup.controller;
    controller.start()?;
    let pid = controller.pid();
    let (url, ca_pem, ca_hash) = agent_url(dir.path(), setup.agent_port)?;
    let mut adm = admin(&socket).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = rss(pid);
    line("agents", o.agents);
    line("controller_rss_before_kib", rss_before / 1024);

    // Enroll: tokens through the admin API, then real CSRs over the pinned TLS port.
    let started = Instant::now();
    let limit = Arc::new(Semaphore::new(o.concurrency));
    let pinned = transport::client_config_pinned(&ca_hash);
    let enroll_channels: Vec<Channel> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(transport::tls_channel(&url, pinned.clone()).await?);
        }
        v
    };
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..o.agents {
        let limit = limit.clone();
        let mut adm = adm.clone();
        let channel = enroll_channels[i % enroll_channels.len()].clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await?;
            let token = adm
                .create_join_token(CreateJoinTokenRequest {
                    ttl_seconds: 3600,
                    labels: Default::default(),
                })
                .await?
                .into_inner()
                .token;
            let key = PendingKey::generate()?;
            let answer = AgentServiceClient::new(channel)
                .enroll(EnrollRequest {
                    token,
                    csr_der: key.csr_der.clone(),
                    facts: None,
                })
                .await?
                .into_inner();
            key.complete(&answer.certificate_pem)
                .map_err(|e| anyhow!(e))
        });
    }
    let mut identities: Vec<Identity> = Vec::with_capacity(o.agents);
    while let Some(r) = tasks.join_next().await {
        identities.push(r??);
    }
    let enrolled = started.elapsed();

    let stats = Arc::new(Stats::default());
    for identity in &identities {
        let tls = identity.client_config(&ca_pem)?;
        tokio::spawn(simulated_agent(
            url.clone(),
            tls,
            identity.agent_id.to_string(),
            o.report_interval,
            stats.clone(),
        ));
    }
    let n = o.agents;
    wait_until("every agent connected", Duration::from_secs(600), || {
        stats.connected.load(Ordering::SeqCst) == n
    })
    .await?;
    let all_connected = started.elapsed();
    line("enroll_seconds", format!("{:.2}", enrolled.as_secs_f64()));
    line(
        "enroll_and_connect_seconds",
        format!("{:.2}", all_connected.as_secs_f64()),
    );

    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_after = rss(pid);
    line("controller_rss_after_kib", rss_after / 1024);
    line(
        "controller_rss_per_agent_kib",
        format!(
            "{:.1}",
            rss_after.saturating_sub(rss_before) as f64 / n as f64 / 1024.0
        ),
    );

    // CPU while everybody reports at the interval.
    let cpu0 = cpu_seconds(pid);
    tokio::time::sleep(o.cpu_window).await;
    let cpu1 = cpu_seconds(pid);
    line(
        "controller_cpu_percent_of_one_core",
        format!("{:.1}", (cpu1 - cpu0) / o.cpu_window.as_secs_f64() * 100.0),
    );
    line("controller_rss_while_reporting_kib", rss(pid) / 1024);

    // Fan-out: a new generation for every host, timed from its change to its receipt.
    let issued: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let fan_started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for identity in &identities {
        let limit = limit.clone();
        let mut adm = adm.clone();
        let issued = issued.clone();
        let id = identity.agent_id.to_string();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await?;
            let mut labels = HashMap::new();
            labels.insert("bench".to_owned(), "fanout".to_owned());
            let at = Instant::now();
            adm.set_agent_labels(SetAgentLabelsRequest {
                id: id.clone(),
                labels,
            })
            .await?;
            issued.lock().unwrap().insert(id, at);
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let issue_time = fan_started.elapsed();
    wait_until(
        "every agent acking the new generation",
        Duration::from_secs(300),
        || stats.fanout.lock().unwrap().len() == n,
    )
    .await?;
    let fan_total = fan_started.elapsed();
    let mut latencies: Vec<Duration> = {
        let got = stats.fanout.lock().unwrap();
        let issued = issued.lock().unwrap();
        got.iter()
            .map(|(id, at)| at.saturating_duration_since(issued[id]))
            .collect()
    };
    latencies.sort();
    line(
        "fanout_issue_seconds",
        format!("{:.2}", issue_time.as_secs_f64()),
    );
    line(
        "fanout_all_received_seconds",
        format!("{:.2}", fan_total.as_secs_f64()),
    );
    p50_p99("fanout_latency", &latencies);
    line(
        "fanout_latency_max_ms",
        latencies.last().copied().unwrap_or_default().as_millis(),
    );

    // Reconnect storm: restart the controller with every agent connected.
    controller.stop();
    wait_until("every stream closed", Duration::from_secs(60), || {
        stats.connected.load(Ordering::SeqCst) == 0
    })
    .await?;
    let restart = Instant::now();
    controller.start()?;
    wait_until("every agent back", Duration::from_secs(600), || {
        stats.connected.load(Ordering::SeqCst) == n
    })
    .await?;
    line(
        "reconnect_all_seconds",
        format!("{:.2}", restart.elapsed().as_secs_f64()),
    );
    adm = admin(&socket).await?;

    // One real agent, idle with a small desired state.
    let (agent_rss, agent_cpu) = real_agent(
        &bin_dir,
        dir.path(),
        &mut adm,
        &url,
        &ca_hash,
        o.agent_window,
    )
    .await?;
    line("agent_idle_rss_kib", agent_rss / 1024);
    line("agent_idle_cpu_percent", format!("{agent_cpu:.2}"));

    let burst = crate::burst::Burst {
        bin_dir: &bin_dir,
        dir: dir.path(),
        url: &url,
        ca_hash: &ca_hash,
        http_port,
        concurrency: o.concurrency,
    };
    for &n in &o.bursts {
        burst.run(&mut adm, n).await?;
    }
    controller.stop();
    Ok(())
}
