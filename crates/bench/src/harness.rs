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
    let root = dir.join(name);
    std::fs::create_dir_all(&root)?;
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "root = {:?}\n[caddy]\nenabled = false\n",
            root.display().to_string()
        ),
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
