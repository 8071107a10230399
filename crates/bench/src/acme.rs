//! The ACME benchmark: N certificates from one Pebble by DNS-01 through the Cloudflare
//! emulator, gatehouse against lego. Gatehouse: a real controller process and one real agent
//! (which makes every key and CSR); all N requested at once, each timed from its request to its
//! order issued. lego (Debian `lego`): its `exec` DNS provider writes the TXT records to the
//! same emulator's API; run one after another as a cron job would (one account), then
//! `--parallel` at a time (one account each). lego's propagation check is off: it asks each
//! zone's name servers, found by name through the system resolver, which cannot reach the
//! emulator (the comparison favours lego; gatehouse does check). Printed: each side's total
//! and per-certificate p50/p99, and the ratios.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use gatehouse_proto::v1::*;
use gatehouse_testkit::cloudflare::Emulator;
use gatehouse_testkit::pebble::{Pebble, PebbleOptions};

use crate::harness::*;

/// Options of `gatehouse-bench acme`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// How many certificates each side gets.
    #[arg(long, default_value_t = 50)]
    pub certificates: usize,
    /// How many lego runs at a time in the parallel round.
    #[arg(long, default_value_t = 8)]
    pub parallel: usize,
    /// Where the gatehouse binaries are (default: beside this one).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
}

const ZONE: &str = "bench.test";
const CF_TOKEN: &str = "bench-cloudflare-token";

/// lego's `exec` provider: `present|cleanup FQDN VALUE`, against the emulator's API.
const EXEC: &str = r#"#!/usr/bin/env python3
import json, os, sys, urllib.request
action, fqdn, value = sys.argv[1], sys.argv[2].rstrip("."), sys.argv[3]
api, zone, token = os.environ["BENCH_API"], os.environ["BENCH_ZONE"], os.environ["BENCH_TOKEN"]
def call(method, path, body=None):
    req = urllib.request.Request(api + path, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)
if action == "present":
    call("POST", f"/zones/{zone}/dns_records", {"type": "TXT", "name": fqdn, "content": value, "ttl": 60})
elif action == "cleanup":
    found = call("GET", f"/zones/{zone}/dns_records?type=TXT&name={fqdn}")
    for r in found["result"]:
        if r["content"].strip('"') == value:
            call("DELETE", f"/zones/{zone}/dns_records/{r['id']}")
"#;

pub async fn run(o: Options) -> anyhow::Result<()> {
    if o.certificates == 0 || o.parallel == 0 {
        return Err(anyhow!("--certificates and --parallel: at least 1"));
    }
    let lego = which("lego").context("lego is not installed: apt-get install lego")?;
    let bin_dir = bin_dir(o.bin_dir.as_deref())?;
    let dir = tempfile::Builder::new()
        .prefix("gatehouse-bench-acme-")
        .tempdir()?;
    let emulator = Emulator::start();
    emulator.add_token(CF_TOKEN);
    let zone_id = emulator.add_zone(ZONE);
    let pebble = Pebble::start(
        &dir.path().join("pebble"),
        0,
        &PebbleOptions {
            http_port: free_port(),
            tls_port: free_port(),
            dns: emulator.dns_addr,
            validity: None,
            reject_nonces: false,
            eab: Vec::new(),
        },
    );
    line("certificates", o.certificates);
    let gatehouse = gatehouse(&o, &bin_dir, dir.path(), &emulator, &pebble).await?;
    let lego = Lego {
        bin: lego,
        dir: dir.path().join("lego"),
        exec: write_exec(dir.path())?,
        pebble: &pebble,
        dns: emulator.dns_addr,
        api: emulator.api_url.clone(),
        zone_id,
    };
    let sequential = lego.one_after_another(o.certificates).await?;
    let parallel = lego.at_a_time(o.certificates, o.parallel).await?;
    line("lego_parallel", o.parallel);
    // Off: lego looks its name servers up through the system resolver, which cannot reach
    // the emulator.
    line("lego_propagation_checked", 0);
    for (key, (total, mut each)) in [
        ("gatehouse", gatehouse.clone()),
        ("lego_sequential", sequential.clone()),
        ("lego_parallel", parallel.clone()),
    ] {
        each.sort();
        line(&format!("{key}_total_ms"), total.as_millis());
        p50_p99(&format!("{key}_per_certificate"), &each);
    }
    let ratio = |a: Duration, b: Duration| format!("{:.1}", a.as_secs_f64() / b.as_secs_f64());
    line(
        "lego_sequential_over_gatehouse",
        ratio(sequential.0, gatehouse.0),
    );
    line(
        "lego_parallel_over_gatehouse",
        ratio(parallel.0, gatehouse.0),
    );
    Ok(())
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn write_exec(dir: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("lego-exec.py");
    std::fs::write(&path, EXEC)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// Gatehouse: every certificate requested at once for one host; the total, and each one's time
/// from its request to its order issued.
async fn gatehouse(
    o: &Options,
    bin_dir: &Path,
    dir: &Path,
    emulator: &Emulator,
    pebble: &Pebble,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    std::fs::create_dir_all(dir.join("gatehouse"))?;
    let setup = Setup::write(
        bin_dir,
        &dir.join("gatehouse"),
        Duration::from_secs(30),
        &format!(
            "acme_dns_servers = [\"{}\"]\nacme_propagation_timeout = \"60s\"\nissuance_limit = 1000\n",
            emulator.dns_addr
        ),
    )?;
    let mut controller = setup.controller;
    controller.start()?;
    let (url, _, ca_hash) = agent_url(&dir.join("gatehouse"), setup.agent_port)?;
    let mut adm = admin(&setup.socket).await?;
    adm.add_cloudflare_account(AddCloudflareAccountRequest {
        name: "cf".into(),
        token: CF_TOKEN.into(),
        api_url: emulator.api_url.clone(),
    })
    .await?;
    adm.create_acme_account(CreateAcmeAccountRequest {
        name: "pebble".into(),
        ca: pebble.directory_url.clone(),
        email: "ops@bench.test".into(),
        agree_tos: true,
        ca_roots_pem: pebble.listener_ca_pem.clone(),
        ..Default::default()
    })
    .await?;
    let (mut agent, agent_id) = spawn_real_agent(
        bin_dir,
        &dir.join("gatehouse"),
        "host",
        &mut adm,
        &url,
        &ca_hash,
    )
    .await?;
    let started = Instant::now();
    let mut requested = Vec::with_capacity(o.certificates);
    for i in 0..o.certificates {
        requested.push(Instant::now());
        adm.request_certificate(RequestCertificateRequest {
            name: format!("gh-{i}"),
            domains: vec![format!("gh-{i}.{ZONE}")],
            issuer: "acme:pebble".into(),
            agent_ids: vec![agent_id.clone()],
            ..Default::default()
        })
        .await?;
    }
    let mut issued: Vec<Option<Duration>> = vec![None; o.certificates];
    let deadline = Instant::now() + Duration::from_secs(600);
    while issued.iter().any(Option::is_none) {
        if Instant::now() > deadline {
            let _ = agent.kill();
            return Err(anyhow!(
                "gatehouse: not every order was issued within 10 minutes"
            ));
        }
        let orders = adm
            .list_certificate_orders(ListCertificateOrdersRequest::default())
            .await?
            .into_inner()
            .orders;
        for order in orders.iter().filter(|o| o.state == "issued") {
            if let Some(i) = order
                .certificate
                .strip_prefix("gh-")
                .and_then(|i| i.parse::<usize>().ok())
                .filter(|i| *i < issued.len())
                && issued[i].is_none()
            {
                issued[i] = Some(requested[i].elapsed());
            }
        }
        if let Some(failed) = orders.iter().find(|o| o.state == "failed") {
            let _ = agent.kill();
            return Err(anyhow!("gatehouse: an order failed: {}", failed.last_error));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let total = started.elapsed();
    let _ = agent.kill();
    let _ = agent.wait();
    controller.stop();
    Ok((total, issued.into_iter().flatten().collect()))
}

struct Lego<'a> {
    bin: PathBuf,
    dir: PathBuf,
    exec: PathBuf,
    pebble: &'a Pebble,
    dns: SocketAddr,
    api: String,
    zone_id: String,
}

impl Lego<'_> {
    /// One `lego run` for `domain` with its state under `path`: how long it took.
    fn once(&self, path: &Path, domain: &str) -> anyhow::Result<Duration> {
        let roots = self.dir.join("pebble-listener-ca.pem");
        if !roots.exists() {
            std::fs::create_dir_all(&self.dir)?;
            std::fs::write(&roots, &self.pebble.listener_ca_pem)?;
        }
        let started = Instant::now();
        let out = Command::new(&self.bin)
            .env("LEGO_CA_CERTIFICATES", &roots)
            .env("EXEC_PATH", &self.exec)
            .env("EXEC_POLLING_INTERVAL", "0")
            .env("EXEC_PROPAGATION_TIMEOUT", "10")
            .env("BENCH_API", &self.api)
            .env("BENCH_ZONE", &self.zone_id)
            .env("BENCH_TOKEN", CF_TOKEN)
            .args(["--server", &self.pebble.directory_url])
            .args(["--email", "ops@bench.test", "--accept-tos"])
            .args(["--dns", "exec", "--dns.resolvers", &self.dns.to_string()])
            // lego checks propagation at each zone's name servers, found by name through the
            // system resolver, which cannot reach the emulator: it asks the CA at once instead
            // (gatehouse checks; the comparison is in lego's favour).
            .arg("--dns.disable-cp")
            .args(["--cert.timeout", "6", "--domains", domain])
            .arg("--path")
            .arg(path)
            .arg("run")
            .output()?;
        if !out.status.success() {
            return Err(anyhow!(
                "lego for {domain} failed: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or_default()
            ));
        }
        Ok(started.elapsed())
    }

    /// As a cron job: one after another, one account.
    async fn one_after_another(&self, n: usize) -> anyhow::Result<(Duration, Vec<Duration>)> {
        let started = Instant::now();
        let path = self.dir.join("sequential");
        let mut each = Vec::with_capacity(n);
        for i in 0..n {
            each.push(self.once(&path, &format!("lego-s-{i}.{ZONE}"))?);
        }
        Ok((started.elapsed(), each))
    }

    /// `parallel` runs at a time, one account per worker.
    async fn at_a_time(
        &self,
        n: usize,
        parallel: usize,
    ) -> anyhow::Result<(Duration, Vec<Duration>)> {
        let started = Instant::now();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let results = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..parallel)
                .map(|w| {
                    let next = next.clone();
                    scope.spawn(move || {
                        let path = self.dir.join(format!("parallel-{w}"));
                        let mut each = Vec::new();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            if i >= n {
                                return anyhow::Ok(each);
                            }
                            each.push(self.once(&path, &format!("lego-p-{i}.{ZONE}"))?);
                        }
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().map_err(|_| anyhow!("a lego worker panicked"))?)
                .collect::<anyhow::Result<Vec<_>>>()
        })?;
        Ok((started.elapsed(), results.into_iter().flatten().collect()))
    }
}
