//! The burst figure: N certificates requested at once for one real `gatehouse-agent` (from the
//! controller's internal CA), the time until the host has installed them all, and the stream
//! messages they cost, read from the controller's `/metrics`.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use gatehouse_agent::transport::ControllerUrl;
use gatehouse_proto::v1::admin_service_client::AdminServiceClient;
use gatehouse_proto::v1::{GetAgentRequest, RequestCertificateRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tonic::transport::Channel;

use crate::harness::{line, spawn_real_agent};

/// The message kinds a burst causes (periodic reports and pings are left out).
const KINDS: [(&str, &str); 5] = [
    ("received", "certificate_request"),
    ("sent", "certificate"),
    ("sent", "certificate_error"),
    ("sent", "desired_state"),
    ("received", "ack"),
];

/// Where and how to run bursts.
pub(crate) struct Burst<'a> {
    pub bin_dir: &'a Path,
    pub dir: &'a Path,
    pub url: &'a ControllerUrl,
    pub ca_hash: &'a str,
    pub http_port: u16,
    pub concurrency: usize,
}

impl Burst<'_> {
    /// One burst of `n` for a fresh agent; prints `burst_<n>_…` figures.
    pub async fn run(&self, adm: &mut AdminServiceClient<Channel>, n: usize) -> anyhow::Result<()> {
        let name = format!("burst-{n}");
        let (mut child, id) =
            spawn_real_agent(self.bin_dir, self.dir, &name, adm, self.url, self.ca_hash).await?;
        let result = self.measure(adm, &id, n).await;
        let _ = child.kill();
        let _ = child.wait();
        result
    }

    async fn measure(
        &self,
        adm: &mut AdminServiceClient<Channel>,
        id: &str,
        n: usize,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !adm
            .get_agent(GetAgentRequest { id: id.to_owned() })
            .await?
            .into_inner()
            .status
            .eq("online")
        {
            if Instant::now() > deadline {
                return Err(anyhow!("the burst agent did not come online"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let before = self.messages().await?;
        let started = Instant::now();
        let limit = std::sync::Arc::new(Semaphore::new(self.concurrency));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..n {
            let mut adm = adm.clone();
            let limit = limit.clone();
            let id = id.to_owned();
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await?;
                adm.request_certificate(RequestCertificateRequest {
                    name: format!("b{i}"),
                    domains: vec![format!("b{i}.example.com")],
                    issuer: "internal".into(),
                    key_type: 0,
                    agent_ids: vec![id],
                })
                .await?;
                anyhow::Ok(())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        let requested = started.elapsed();
        let timeout = Duration::from_secs(60 + n as u64);
        loop {
            let status = adm
                .get_agent_status(GetAgentRequest { id: id.to_owned() })
                .await?
                .into_inner();
            if status.certificates.len() == n {
                break;
            }
            if started.elapsed() > timeout {
                return Err(anyhow!(
                    "only {} of {n} certificates installed after {timeout:?}",
                    status.certificates.len()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let installed = started.elapsed();
        let after = self.messages().await?;
        let count = |kinds: &[(&str, &str)]| -> f64 {
            kinds
                .iter()
                .map(|k| {
                    after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0)
                })
                .sum()
        };
        let key = |figure: &str| format!("burst_{n}_{figure}");
        line(
            &key("requested_seconds"),
            format!("{:.2}", requested.as_secs_f64()),
        );
        line(
            &key("installed_seconds"),
            format!("{:.2}", installed.as_secs_f64()),
        );
        line(
            &key("messages_per_certificate"),
            format!("{:.2}", count(&KINDS) / n as f64),
        );
        line(
            &key("requests_per_certificate"),
            format!("{:.2}", count(&KINDS[..1]) / n as f64),
        );
        Ok(())
    }

    /// The controller's stream message counters, by (direction, kind).
    async fn messages(&self) -> anyhow::Result<HashMap<(&'static str, &'static str), f64>> {
        let body = http_get(self.http_port, "/metrics").await?;
        let mut counts = HashMap::new();
        for (direction, kind) in KINDS {
            let series = format!(
                "gatehouse_stream_messages_total{{direction=\"{direction}\",kind=\"{kind}\"}}"
            );
            let value = body
                .lines()
                .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
                .with_context(|| format!("{series} is not in /metrics"))?;
            counts.insert((direction, kind), value);
        }
        Ok(counts)
    }
}

/// A plain HTTP/1.1 GET on loopback; the body.
async fn http_get(port: u16, path: &str) -> anyhow::Result<String> {
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut response = String::new();
    tcp.read_to_string(&mut response).await?;
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .context("not an HTTP response")
}
