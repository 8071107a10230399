//! `gatehouse-controller dev`: a controller, one local agent and the Cloudflare emulator in one
//! process, no root needed, everything under one data directory (a temporary one unless
//! `--data` is given). Built with the `dev` feature only (the workspace default): the packaged
//! controller has neither the agent nor the emulator in it.

mod caddy;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use gatehouse_agent::config::Config as AgentConfig;
use gatehouse_common::transport::ControllerUrl;
use gatehouse_proto::names::Role;
use tokio_util::sync::CancellationToken;

use crate::audit::{self, Actor};
use crate::config::Config;
use crate::secrets::{JOIN_PREFIX, Token};
use crate::tokens;

/// Dev mode's options.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// Keep state here (kept after exit); `None`: a temporary directory, removed on exit.
    pub data: Option<PathBuf>,
    pub agent_listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub http_listen: SocketAddr,
}

/// Runs dev mode until `shutdown`.
pub async fn run(options: DevOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    let temp;
    let data = match &options.data {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir.canonicalize()?
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("gatehouse-dev-")
                .tempdir()?;
            temp.path().to_owned()
        }
    };
    let mut config = Config::with_data_dir(&data.join("controller"));
    config.agent_listen = options.agent_listen;
    config.admin_listen = options.admin_listen;
    config.http_listen = options.http_listen;
    config.admin_socket = data.join("admin.sock");
    config.report_interval = Duration::from_secs(10);
    let controller_stop = CancellationToken::new();
    let running = crate::server::start(config, controller_stop.clone()).await?;
    let shared = running.shared.clone();

    // The local agent: every host path under the sandbox.
    let agent_root = data.join("agent-root");
    let mut agent_config = AgentConfig::with_root(&agent_root);
    // Dev mode never touches a Caddy it did not start: its own, when caddy is on PATH.
    let caddy = caddy::start(&data.join("caddy")).await?;
    agent_config.caddy = caddy.as_ref().map(|c| c.config.clone());
    let url = ControllerUrl::parse(
        &format!("https://127.0.0.1:{}", running.agent_addr.port()),
        running.agent_addr.port(),
    )
    .map_err(anyhow::Error::msg)?;
    agent_config.controller = Some(url.clone());
    if gatehouse_agent::identity::Identity::load(&agent_config.paths).is_err() {
        let token = Token::generate(JOIN_PREFIX);
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("dev".to_owned(), "true".to_owned());
        tokens::create_join_token(&shared, &token, Duration::from_secs(300), labels).await?;
        audit::record(
            &shared,
            &Actor::Controller,
            "token.create",
            &format!("join-token:{}", token.id),
            None,
        )
        .await;
        let facts = gatehouse_agent::host::metrics::Sampler::new()
            .map(|s| s.facts())
            .unwrap_or_default();
        gatehouse_agent::enroll::enroll(
            &agent_config.paths,
            &url,
            &token.reveal(),
            running.ca_hash(),
            facts,
        )
        .await?;
    }
    let agent = gatehouse_agent::runtime::Agent::start(agent_config).await?;
    let agent_id = agent.agent_id();
    let agent_stop = CancellationToken::new();
    let agent_task = tokio::spawn(agent.run(agent_stop.clone()));

    let cloudflare = dev_cloudflare(&shared).await?;

    let (api_token, _) = tokens::create_api_token(&shared, "dev", Role::Admin).await?;
    let (ui_link, _) = crate::http::ui::login_link(&shared, &Actor::Controller).await?;
    audit::record(
        &shared,
        &Actor::Controller,
        "apitoken.create",
        "api-token:dev",
        None,
    )
    .await;

    println!(
        "\ngatehouse dev mode: a controller and one local agent, nothing needs root.\n\n\
         \x20 data:         {data}{kept}\n\
         \x20 agent port:   https://{agent_addr}   CA pin {hash}\n\
         \x20 admin API:    https://{admin_addr}   (TLS, API token below)\n\
         \x20 admin socket: {socket}\n\
         \x20 metrics:      http://{http_addr}/metrics   (and /healthz)\n\
         \x20 status page:  {ui_link}   (one-time sign-in link)\n\
         \x20 local agent:  {agent_id}, host files under {root}\n\
         {caddy_line}\n\
         {site}\
         Try, in another terminal:\n\n\
         \x20 gatehousectl --socket {socket} agents list\n\n\
         or over TLS with the dev admin token:\n\n\
         \x20 gatehousectl --controller https://{admin_addr} --ca-file {ca} --token {token} agents list\n\n\
         Enroll another agent on this machine:\n\n\
         \x20 gatehousectl --socket {socket} token create\n\
         \x20 gatehouse-agent enroll --controller https://{agent_addr} --ca-hash {hash} --token <token>\n\n\
         {cloudflare}\
         Press Ctrl-C to stop.\n",
        data = data.display(),
        kept = if options.data.is_some() {
            " (kept)"
        } else {
            " (temporary, removed on exit)"
        },
        agent_addr = running.agent_addr,
        admin_addr = running.admin_addr,
        http_addr = running.http_addr,
        hash = running.ca_hash(),
        socket = running.admin_socket.display(),
        root = agent_root.display(),
        ca = running.ca_file.display(),
        token = api_token.reveal(),
        cloudflare = cloudflare.banner(&running.admin_socket),
        caddy_line = match &caddy {
            Some(c) => format!(
                "  caddy:        dev Caddy on https 127.0.0.1:{} and http 127.0.0.1:{}, log {}\n",
                c.https_port,
                c.http_port,
                c.log.display()
            ),
            None => "  caddy:        none (no caddy on PATH): sites need an agent whose host runs Caddy\n"
                .into(),
        },
        site = match &caddy {
            Some(c) => format!(
                "A site through the dev Caddy, proxying to the controller's own /healthz, with a\n\
                 certificate from gatehouse's internal CA:\n\n\
                 \x20 gatehousectl --socket {socket} site create --agent {agent_id} --name hello --domain hello.localhost --upstream {http_addr} --port {port}\n\
                 \x20 curl --cacert {site_ca} --resolve hello.localhost:{port}:127.0.0.1 https://hello.localhost:{port}/healthz\n\n",
                socket = running.admin_socket.display(),
                http_addr = running.http_addr,
                port = c.https_port,
                site_ca = data.join("controller/site-ca.pem").display(),
            ),
            None => String::new(),
        },
    );

    shutdown.cancelled().await;
    drop(cloudflare);
    agent_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), agent_task).await;
    if let Some(c) = caddy {
        c.stop().await;
    }
    controller_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), running.wait()).await;
    println!("gatehouse dev mode stopped.");
    Ok(())
}

/// Cloudflare in dev mode: the emulator, said plainly on screen.
struct DevCloudflare(Option<gatehouse_cloudflare_emulator::Emulator>);

impl DevCloudflare {
    fn banner(&self, socket: &std::path::Path) -> String {
        match &self.0 {
            Some(e) => format!(
                "Cloudflare in dev mode is an EMULATOR (not Cloudflare): API {}, DNS {},\n\
                 account `emulator` with the zone dev.gatehouse.test:\n\n\
                 \x20 gatehousectl --socket {socket} cloudflare zones\n\n\
                 (Sites on it need an agent whose host runs Caddy; the local agent does not.)\n\n",
                e.api_url,
                e.dns_addr,
                socket = socket.display()
            ),
            None => String::new(),
        }
    }
}

async fn dev_cloudflare(shared: &crate::Shared) -> anyhow::Result<DevCloudflare> {
    let emulator =
        tokio::task::spawn_blocking(gatehouse_cloudflare_emulator::Emulator::start).await?;
    let token = crate::secrets::random_id(40);
    emulator.add_token(&token);
    emulator.add_zone("dev.gatehouse.test");
    let known = shared.store.cloudflare_accounts().await?;
    if known.iter().all(|a| a.name != "emulator") {
        crate::cloudflare::accounts::add(
            shared,
            crate::cloudflare::accounts::NewAccount {
                name: "emulator",
                api_url: &emulator.api_url,
                token: &token,
            },
        )
        .await?;
    }
    Ok(DevCloudflare(Some(emulator)))
}
