//! `gatehouse-agent`: wiring only. Parses arguments, loads config, runs.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gatehouse_agent::config::{Config, DEFAULT_AGENT_PORT, DEFAULT_CONFIG};
use gatehouse_agent::status::Status;
use gatehouse_agent::transport::ControllerUrl;
use gatehouse_agent::{enroll, host, pki, runtime};
use tokio_util::sync::CancellationToken;

/// The gatehouse agent: keeps this host's certificates, Caddy sites, tunnels and WireGuard
/// interfaces as the controller describes them.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The agent's config file.
    #[arg(long, short, global = true, env = "GATEHOUSE_AGENT_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enroll this host with a controller, once, using a join token.
    ///
    /// The token comes from --token, --token-file, or else the systemd credential `join-token`
    /// (what `gatehouse-agent-enroll.service` passes). The controller and the CA pin default to
    /// `controller` and `ca_hash` in agent.toml.
    Enroll {
        /// The controller's agent endpoint, https://HOST[:7443] (default: agent.toml).
        #[arg(long)]
        controller: Option<String>,
        /// The one-time join token (prefer --token-file: a command line is visible to others).
        #[arg(long, conflicts_with = "token_file")]
        token: Option<String>,
        /// A file holding the join token; it is deleted after a successful enrollment.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// The controller CA pin printed by the controller: sha256:<hex> (default: agent.toml).
        #[arg(long)]
        ca_hash: Option<String>,
    },
    /// Run the agent (what the systemd unit starts).
    Run,
    /// Show what the running agent is doing.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write the man pages into DIR; the packages ship them.
    #[command(hide = true)]
    Man { dir: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Man { dir } = &cli.command {
        let written = clap_mangen::generate_to(<Cli as clap::CommandFactory>::command(), dir);
        return written.map_or(ExitCode::FAILURE, |()| ExitCode::SUCCESS);
    }
    gatehouse_agent::logging::init();
    let (path, required) = match &cli.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    let config = match Config::load(&path, required) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gatehouse-agent: {e}");
            return ExitCode::from(64);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("gatehouse-agent: {message}");
            ExitCode::from(code)
        }
    }
}

/// The join token from the systemd credential `join-token` (`LoadCredential=`).
fn credential_token() -> Result<String, String> {
    let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") else {
        return Err(
            "give --token or --token-file (no systemd credential `join-token` either)".into(),
        );
    };
    let path = PathBuf::from(dir).join("join-token");
    std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read the credential {}: {e}", path.display()))
}

async fn run(command: Command, config: Config) -> Result<(), (u8, String)> {
    let usage = |m: String| (64u8, m);
    let failed = |m: String| (1u8, m);
    match command {
        Command::Enroll {
            controller,
            token,
            token_file,
            ca_hash,
        } => {
            let controller = match controller {
                Some(url) => ControllerUrl::parse(&url, DEFAULT_AGENT_PORT).map_err(usage)?,
                None => config.controller.clone().ok_or_else(|| {
                    usage("give --controller or set `controller` in agent.toml".into())
                })?,
            };
            let ca_hash = match ca_hash {
                Some(hash) => pki::parse_ca_hash(&hash).map_err(usage)?,
                None => config
                    .ca_hash
                    .clone()
                    .ok_or_else(|| usage("give --ca-hash or set `ca_hash` in agent.toml".into()))?,
            };
            let token = match (token, &token_file) {
                (Some(t), _) => t,
                (None, Some(f)) => std::fs::read_to_string(f)
                    .map_err(|e| usage(format!("cannot read --token-file {}: {e}", f.display())))?,
                (None, None) => credential_token().map_err(usage)?,
            };
            let facts = host::metrics::Sampler::new()
                .map(|s| s.facts())
                .unwrap_or_default();
            let enrolled = enroll::enroll(&config.paths, &controller, &token, &ca_hash, facts)
                .await
                .map_err(|e| failed(e.to_string()))?;
            if let Some(f) = token_file
                && let Err(e) = std::fs::remove_file(&f)
            {
                eprintln!(
                    "warning: cannot delete the used token file {}: {e}",
                    f.display()
                );
            }
            println!(
                "enrolled as agent {} with {}",
                enrolled.agent_id, enrolled.controller
            );
            Ok(())
        }
        Command::Run => {
            let agent = runtime::Agent::start(config)
                .await
                .map_err(|e| failed(e.to_string()))?;
            let shutdown = CancellationToken::new();
            let task = tokio::spawn(agent.run(shutdown.clone()));
            gatehouse_agent::service::notify_ready();
            gatehouse_agent::service::spawn_watchdog(shutdown.clone());
            wait_for_signal().await;
            gatehouse_agent::service::notify_stopping();
            shutdown.cancel();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), task).await;
            Ok(())
        }
        Command::Man { .. } => unreachable!("answered before the config is read"),
        Command::Status { json } => {
            let status = Status::load(&config.paths).map_err(failed)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status).expect("serialisable")
                );
            } else {
                println!("agent:       {}", status.agent_id);
                println!("controller:  {}", status.controller);
                println!(
                    "connected:   {}",
                    if status.connected { "yes" } else { "no" }
                );
                println!("generation:  {}", status.applied_generation);
                if let Some(e) = &status.last_error {
                    println!("last error:  {e}");
                }
            }
            Ok(())
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
