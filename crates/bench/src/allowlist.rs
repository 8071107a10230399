//! The allowlist benchmark: N devices, each with its own token and loopback source address,
//! check in at random moments over a bounded window against a real controller process; a
//! Cloudflare emulator holds the Rules List the controller keeps, and one real agent with a
//! real Caddy serves a site that lets in only the list. Printed: the time from each check-in
//! to its address in the Cloudflare list (every device) and to Caddy letting that address in
//! (a sample), then the check-ins per second the controller sustains when every device checks
//! in again at once, with their latency.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use gatehouse_proto::v1::admin_service_client::AdminServiceClient;
use gatehouse_proto::v1::*;
use gatehouse_testkit::caddy::{CaddyServer, Upstream};
use gatehouse_testkit::cloudflare::Emulator;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tonic::transport::Channel;

use crate::harness::*;

/// Options of `gatehouse-bench allowlist`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// How many devices (each checks in from an address of its own; at most 10,000, what one
    /// Cloudflare Rules List holds).
    #[arg(long, default_value_t = 10_000)]
    pub devices: usize,
    /// The window the devices' first check-ins are spread over, at random.
    #[arg(long, default_value = "60s", value_parser = crate::humantime_duration)]
    pub window: Duration,
    /// Every how many devices one is also followed to Caddy.
    #[arg(long, default_value_t = 25)]
    pub caddy_sample: usize,
    /// Concurrent check-ins when every device checks in again at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Where the gatehouse binaries are (default: beside this one).
    #[arg(long)]
    pub bin_dir: Option<std::path::PathBuf>,
}

const LIST: &str = "bench";
const DOMAIN: &str = "shop.bench.test";

/// Device `i`'s source address: 127.1.0.0 and up.
fn source(i: usize) -> Ipv4Addr {
    let i = i as u32 + (1 << 16);
    Ipv4Addr::new(127, (i >> 16) as u8, (i >> 8) as u8, i as u8)
}

/// One check-in from `from`, over a connection of its own (as a phone makes it): the status.
async fn checkin(http: SocketAddr, from: Ipv4Addr, token: &str) -> anyhow::Result<u16> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0))?;
    let mut stream = socket.connect(http).await?;
    stream
        .write_all(
            format!(
                "POST /v1/allowlist/checkin HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer \
                 {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP answer: {text:?}"))
}

/// What a device saw: when it sent its check-in and when the answer came.
#[derive(Clone, Copy)]
struct Sent {
    at: Instant,
    took: Duration,
}

pub async fn run(o: Options) -> anyhow::Result<()> {
    if o.devices == 0 || o.devices > 10_000 {
        return Err(anyhow!("--devices: from 1 to 10000"));
    }
    let bin_dir = bin_dir(o.bin_dir.as_deref())?;
    let dir = tempfile::Builder::new()
        .prefix("gatehouse-bench-allowlist-")
        .tempdir()?;
    let emulator = Emulator::start();
    let cf_token = "bench-cloudflare-token";
    emulator.add_token(cf_token);
    // The controller finds the account id through a zone the token sees.
    emulator.add_zone("bench.test");
    let setup = Setup::write(
        &bin_dir,
        dir.path(),
        Duration::from_secs(30),
        "[checkin]\nmin_interval = \"1s\"\n",
    )?;
    let http: SocketAddr = ([127, 0, 0, 1], setup.http_port).into();
    let mut controller = setup.controller;
    controller.start()?;
    let (url, _, ca_hash) = agent_url(dir.path(), setup.agent_port)?;
    let mut adm = admin(&setup.socket).await?;
    adm.add_cloudflare_account(AddCloudflareAccountRequest {
        name: "cf".into(),
        token: cf_token.into(),
        api_url: emulator.api_url.clone(),
    })
    .await?;
    adm.create_allowlist(CreateAllowlistRequest {
        name: LIST.into(),
        ttl_seconds: 24 * 3600,
        cloudflare: "rules".into(),
        account: "cf".into(),
        allow_private: true,
        ipv6_prefix: 0,
    })
    .await?;
    line("devices", o.devices);

    // A real host: an agent and its Caddy, serving a site only the list may reach.
    let host_root = dir.path().join("host");
    std::fs::create_dir_all(&host_root)?;
    let caddy = CaddyServer::start(&host_root, "");
    let upstream = Upstream::start("allowed");
    let (mut agent, agent_id) = spawn_agent_with(
        &bin_dir,
        dir.path(),
        "host",
        &caddy.agent_toml(),
        &mut adm,
        &url,
        &ca_hash,
    )
    .await?;
    adm.put_site(PutSiteRequest {
        agent_id: agent_id.clone(),
        site: Some(SiteSpec {
            name: "shop".into(),
            domains: vec![DOMAIN.into()],
            upstreams: vec![upstream.address()],
            tls: Some(SiteTls {
                mode: Some(site_tls::Mode::Certificate("shop".into())),
            }),
            port: u32::from(caddy.https_port),
            allow: vec![LIST.into()],
            ..Default::default()
        }),
        internal_certificate: true,
        ..Default::default()
    })
    .await?;
    let site_ca = std::fs::read_to_string(dir.path().join("controller/site-ca.pem"))?;
    let probe = Probe {
        ca: reqwest::Certificate::from_pem(site_ca.as_bytes())?,
        caddy: ([127, 0, 0, 1], caddy.https_port).into(),
    };
    let tokens = devices(&adm, o.devices, o.concurrency).await?;

    let mut result = measure(&o, http, &tokens, &emulator, &probe).await;
    if let Err(e) = &result {
        // Say what the controller says of the list.
        let sync = adm
            .get_allowlist(GetAllowlistRequest { name: LIST.into() })
            .await
            .map(|r| format!("{:?}", r.into_inner().sync))
            .unwrap_or_else(|e| e.to_string());
        result = Err(anyhow!("{e}; the list's sync: {sync}"));
    }
    let _ = agent.kill();
    let _ = agent.wait();
    controller.stop();
    drop(caddy);
    result
}

/// Makes `n` devices; their tokens, in order.
async fn devices(
    adm: &AdminServiceClient<Channel>,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<String>> {
    let limit = Arc::new(Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (limit, mut adm) = (limit.clone(), adm.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await?;
            let token = adm
                .add_allowlist_device(AllowlistDeviceRequest {
                    list: LIST.into(),
                    name: format!("device-{i}"),
                })
                .await?
                .into_inner()
                .token;
            anyhow::Ok((i, token))
        });
    }
    let mut tokens = vec![String::new(); n];
    while let Some(r) = tasks.join_next().await {
        let (i, token) = r??;
        tokens[i] = token;
    }
    Ok(tokens)
}

/// HTTPS requests to the site from a given source address.
struct Probe {
    ca: reqwest::Certificate,
    caddy: SocketAddr,
}

impl Probe {
    fn client(&self, from: Ipv4Addr) -> anyhow::Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .tls_certs_only([self.ca.clone()])
            .resolve(DOMAIN, self.caddy)
            .local_address(IpAddr::V4(from))
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()?)
    }

    /// Waits until Caddy lets `from` in; the moment it first did.
    async fn until_allowed(&self, from: Ipv4Addr, timeout: Duration) -> anyhow::Result<Instant> {
        let client = self.client(from)?;
        let url = format!("https://{DOMAIN}:{}/", self.caddy.port());
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(r) = client.get(&url).send().await
                && r.status() == 200
            {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                return Err(anyhow!("Caddy never let {from} in"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn measure(
    o: &Options,
    http: SocketAddr,
    tokens: &[String],
    emulator: &Emulator,
    probe: &Probe,
) -> anyhow::Result<()> {
    let n = tokens.len();
    // Caddy is serving the gate (403 to everyone) before anyone checks in.
    let outsider = probe.client(Ipv4Addr::new(127, 0, 0, 9))?;
    let site = format!("https://{DOMAIN}:{}/", probe.caddy.port());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(outsider.get(&site).send().await, Ok(r) if r.status() == 403) {
        if Instant::now() > deadline {
            return Err(anyhow!("the allowlisted site never came up"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Phase 1: every device checks in once, at a random moment of the window.
    let sent: Arc<Mutex<HashMap<usize, Sent>>> = Arc::default();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, token) in tokens.iter().enumerate() {
        let at = started
            + Duration::from_millis(gatehouse_agent::random_below(
                o.window.as_millis().max(1) as u64
            ));
        let (token, sent) = (token.clone(), sent.clone());
        tasks.spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let t0 = Instant::now();
            let status = checkin(http, source(i), &token).await?;
            if status != 200 {
                return Err(anyhow!("device {i}: check-in answered {status}"));
            }
            sent.lock().unwrap().insert(
                i,
                Sent {
                    at: t0,
                    took: t0.elapsed(),
                },
            );
            anyhow::Ok(())
        });
    }
    // Caddy, followed for a sample of the devices (each once it has checked in).
    let mut followed = tokio::task::JoinSet::new();
    for i in (0..n).step_by(o.caddy_sample.max(1)) {
        let sent = sent.clone();
        let probe = Probe {
            ca: probe.ca.clone(),
            caddy: probe.caddy,
        };
        let window = o.window;
        followed.spawn(async move {
            let deadline = Instant::now() + window + Duration::from_secs(60);
            let at = loop {
                if let Some(s) = sent.lock().unwrap().get(&i) {
                    break s.at;
                }
                if Instant::now() > deadline {
                    return Err(anyhow!("device {i} never checked in"));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let allowed = probe
                .until_allowed(source(i), Duration::from_secs(120))
                .await?;
            anyhow::Ok(allowed.saturating_duration_since(at))
        });
    }
    // Cloudflare: when each address first shows in the emulator's Rules List.
    let mut in_list: HashMap<String, Instant> = HashMap::with_capacity(n);
    let cf_deadline = Instant::now() + o.window + Duration::from_secs(180);
    while in_list.len() < n {
        for (ip, comment) in emulator.rules_list_items(&format!("gatehouse_{LIST}")) {
            if comment.contains("gatehouse:") {
                in_list.entry(ip).or_insert_with(Instant::now);
            }
        }
        if Instant::now() > cf_deadline {
            return Err(anyhow!(
                "only {} of {n} addresses reached the Cloudflare list",
                in_list.len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let mut to_caddy = Vec::new();
    while let Some(r) = followed.join_next().await {
        to_caddy.push(r??);
    }
    let sent = sent.lock().unwrap().clone();
    let mut latency: Vec<Duration> = sent.values().map(|s| s.took).collect();
    let mut to_cloudflare: Vec<Duration> = sent
        .iter()
        .map(|(i, s)| in_list[&source(*i).to_string()].saturating_duration_since(s.at))
        .collect();
    latency.sort();
    to_cloudflare.sort();
    to_caddy.sort();
    line(
        "allowlist_window_checkins_per_second",
        format!("{:.1}", n as f64 / o.window.as_secs_f64()),
    );
    p50_p99("allowlist_window_checkin", &latency);
    p50_p99("allowlist_to_cloudflare", &to_cloudflare);
    line("allowlist_caddy_samples", to_caddy.len());
    p50_p99("allowlist_to_caddy", &to_caddy);

    // Phase 2: every device checks in again, as fast as the controller answers (past the
    // minimum interval since its first check-in).
    if let Some(last) = sent.values().map(|s| s.at + s.took).max() {
        tokio::time::sleep_until((last + Duration::from_millis(1100)).into()).await;
    }
    let limit = Arc::new(Semaphore::new(o.concurrency));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, token) in tokens.iter().enumerate() {
        let (limit, token) = (limit.clone(), token.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await?;
            let t0 = Instant::now();
            let status = checkin(http, source(i), &token).await?;
            if status != 200 {
                return Err(anyhow!("device {i}: check-in answered {status}"));
            }
            anyhow::Ok(t0.elapsed())
        });
    }
    let mut latency = Vec::with_capacity(n);
    while let Some(r) = tasks.join_next().await {
        latency.push(r??);
    }
    let elapsed = started.elapsed();
    latency.sort();
    line(
        "allowlist_sustained_checkins_per_second",
        format!("{:.0}", n as f64 / elapsed.as_secs_f64()),
    );
    p50_p99("allowlist_sustained_checkin", &latency);
    Ok(())
}
