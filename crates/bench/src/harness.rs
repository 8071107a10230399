//! What the benchmarks share: the controller process, admin calls, real agents, waits and
//! printed figures.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use gatehouse_agent::transport::{self, ControllerUrl};
use gatehouse_proto::v1::admin_service_client::AdminServiceClient;
use gatehouse_proto::v1::*;
use tonic::transport::Channel;

use crate::proc_stats::{cpu_seconds, rss};

pub(crate) struct Controller {
    pub(crate) child: Option<Child>,
    pub(crate) bin: PathBuf,
    pub(crate) config: PathBuf,
    pub(crate) socket: PathBuf,
    pub(crate) log: PathBuf,
}

/// A controller's ports and files under `dir`, not started yet.
pub(crate) struct Setup {
    pub(crate) controller: Controller,
    pub(crate) agent_port: u16,
    pub(crate) http_port: u16,
    pub(crate) socket: PathBuf,
}

impl Setup {
    /// Writes `dir/controller.toml` (free loopback ports, `report_interval`, then `extra`).
    pub(crate) fn write(
        bin_dir: &Path,
        dir: &Path,
        report_interval: Duration,
        extra: &str,
    ) -> anyhow::Result<Self> {
        let agent_port = free_port();
        let http_port = free_port();
        let config = dir.join("controller.toml");
        let socket = dir.join("admin.sock");
        std::fs::write(
            &config,
            format!(
                "data_dir = {:?}\nagent_listen = \"127.0.0.1:{agent_port}\"\nadmin_listen = \"127.0.0.1:{}\"\n\
                 http_listen = \"127.0.0.1:{http_port}\"\nadmin_socket = {:?}\nreport_interval = \"{}s\"\n{extra}",
                dir.join("controller").display().to_string(),
                free_port(),
                socket.display().to_string(),
                report_interval.as_secs(),
            ),
        )?;
        Ok(Self {
            controller: Controller {
                child: None,
                bin: bin_dir.join("gatehouse-controller"),
                config,
                socket: socket.clone(),
                log: dir.join("controller.log"),
            },
            agent_port,
            http_port,
            socket,
        })
    }
}

/// The agent URL of a controller started under `dir` on `agent_port`, its CA (PEM) and pin.
pub(crate) fn agent_url(
    dir: &Path,
    agent_port: u16,
) -> anyhow::Result<(ControllerUrl, String, String)> {
    let ca_pem = std::fs::read_to_string(dir.join("controller/ca.pem"))?;
    let ca_hash = gatehouse_agent::pki::CertInfo::from_pem(&ca_pem)?.spki_hash;
    let url = ControllerUrl::parse(&format!("https://127.0.0.1:{agent_port}"), agent_port)
        .map_err(|e| anyhow!(e))?;
    Ok((url, ca_pem, ca_hash))
}

/// Where the gatehouse binaries are: `given`, or beside this one.
pub(crate) fn bin_dir(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    Ok(match given {
        Some(d) => d.to_owned(),
        None => std::env::current_exe()?
            .parent()
            .context("binary directory")?
            .to_owned(),
    })
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Prints `<key>_p50_ms` and `<key>_p99_ms` of `sorted`.
pub(crate) fn p50_p99(key: &str, sorted: &[Duration]) {
    for (name, p) in [("p50", 0.5), ("p99", 0.99)] {
        line(
            &format!("{key}_{name}_ms"),
            percentile(sorted, p).as_millis(),
        );
    }
}

impl Controller {
    pub(crate) fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.bin)
            .args(["run", "--config"])
            .arg(&self.config)
            .env("GATEHOUSE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.socket.exists() {
            if Instant::now() > deadline {
                return Err(anyhow!(
                    "the controller did not start; see {}",
                    self.log.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub(crate) fn line(key: &str, value: impl std::fmt::Display) {
    println!("{key}: {value}");
}

pub(crate) async fn admin(socket: &Path) -> anyhow::Result<AdminServiceClient<Channel>> {
    Ok(AdminServiceClient::new(
        transport::unix_channel(socket.to_owned()).await?,
    ))
}

pub(crate) async fn wait_until(
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > timeout {
            return Err(anyhow!("timed out after {timeout:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(started.elapsed())
}

/// Enrolls and starts one real `gatehouse-agent` (Caddy off) under `dir/name`; returns the
/// process and the agent's id.
pub(crate) async fn spawn_real_agent(
    bin_dir: &Path,
    dir: &Path,
    name: &str,
    adm: &mut AdminServiceClient<Channel>,
    url: &ControllerUrl,
    ca_hash: &str,
) -> anyhow::Result<(Child, String)> {
    spawn_agent_with(
        bin_dir,
        dir,
        name,
        "[caddy]\nenabled = false\n",
        adm,
        url,
        ca_hash,
    )
    .await
}

/// [`spawn_real_agent`] with `extra` as the config after `root`.
pub(crate) async fn spawn_agent_with(
    bin_dir: &Path,
    dir: &Path,
    name: &str,
    extra: &str,
    adm: &mut AdminServiceClient<Channel>,
    url: &ControllerUrl,
    ca_hash: &str,
) -> anyhow::Result<(Child, String)> {
    let root = dir.join(name);
    std::fs::create_dir_all(&root)?;
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!("root = {:?}\n{extra}", root.display().to_string()),
    )?;
    let token = adm
        .create_join_token(CreateJoinTokenRequest {
            ttl_seconds: 600,
            labels: Default::default(),
        })
        .await?
        .into_inner()
        .token;
    let agent = bin_dir.join("gatehouse-agent");
    let out = Command::new(&agent)
        .arg("--config")
        .arg(&config)
        .args([
            "enroll",
            "--controller",
            &url.to_string(),
            "--ca-hash",
            ca_hash,
            "--token",
            &token,
        ])
        .output()?;
    if !out.status.success() {
        return Err(anyhow!(
            "enroll failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let id = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(3)
        .context("enroll names the agent")?
        .to_owned();
    let child = Command::new(&agent)
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env("GATEHOUSE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok((child, id))
}

pub(crate) async fn real_agent(
    bin_dir: &Path,
    dir: &Path,
    adm: &mut AdminServiceClient<Channel>,
    url: &ControllerUrl,
    ca_hash: &str,
    window: Duration,
) -> anyhow::Result<(u64, f64)> {
    let (mut child, _) = spawn_real_agent(bin_dir, dir, "agent-root", adm, url, ca_hash).await?;
    let pid = child.id();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cpu0 = cpu_seconds(pid);
    tokio::time::sleep(window).await;
    let cpu1 = cpu_seconds(pid);
    let rss = rss(pid);
    let _ = child.kill();
    let _ = child.wait();
    Ok((rss, (cpu1 - cpu0) / window.as_secs_f64() * 100.0))
}
