//! `gatehouse-controller`: wiring only. Parses arguments, loads config, runs, drains on a signal.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use gatehouse_controller::config::{Config, DEFAULT_CONFIG};
use gatehouse_controller::server;
use tokio_util::sync::CancellationToken;

/// The gatehouse controller: the fleet's desired state, the agent CA, and the admin API.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The controller's config file.
    #[arg(long, short, global = true, env = "GATEHOUSE_CONTROLLER_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller (the default).
    Run {
        /// The store, overriding the config: sqlite://PATH or postgres://USER@HOST/DB.
        #[arg(long, env = "GATEHOUSE_DATABASE", hide_env_values = true)]
        database: Option<String>,
    },
    /// Print the CA pin that agents enroll with (`gatehouse-agent enroll --ca-hash`).
    CaHash,
    /// Run a controller and one local agent for trying gatehouse out; no root needed.
    Dev {
        /// Keep state in this directory (default: a temporary one, removed on exit).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Agent port address.
        #[arg(long, default_value = "127.0.0.1:7443")]
        agent_listen: SocketAddr,
        /// Admin API address.
        #[arg(long, default_value = "127.0.0.1:7444")]
        admin_listen: SocketAddr,
        /// /healthz and /metrics address.
        #[arg(long, default_value = "127.0.0.1:7480")]
        http_listen: SocketAddr,
    },
    /// Write the man pages into DIR; the packages ship them.
    #[command(hide = true)]
    Man { dir: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Man { dir }) = &cli.command {
        let written = clap_mangen::generate_to(<Cli as clap::CommandFactory>::command(), dir);
        return written.map_or(ExitCode::FAILURE, |()| ExitCode::SUCCESS);
    }
    gatehouse_common::logging::init();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let shutdown = CancellationToken::new();
    let (path, required) = match &cli.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    let load = || Config::load(&path, required);
    let result = match cli.command.unwrap_or(Command::Run { database: None }) {
        Command::CaHash => {
            let config = match load() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("gatehouse-controller: {e}");
                    return ExitCode::from(64);
                }
            };
            ca_hash(&config)
        }
        Command::Run { database } => {
            let config = match load().and_then(|c| c.with_database(database)) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("gatehouse-controller: {e}");
                    return ExitCode::from(64);
                }
            };
            runtime.block_on(async {
                let running = server::start(config, shutdown.clone()).await?;
                tokio::spawn(on_signal(shutdown.clone()));
                gatehouse_common::service::notify_ready();
                gatehouse_common::service::spawn_watchdog(shutdown.clone());
                shutdown.cancelled().await;
                gatehouse_common::service::notify_stopping();
                // Drain with a grace period.
                tokio::time::timeout(Duration::from_secs(15), running.wait())
                    .await
                    .map_err(|_| anyhow::anyhow!("streams did not close within 15 s"))
            })
        }
        #[cfg(feature = "dev")]
        Command::Dev {
            data,
            agent_listen,
            admin_listen,
            http_listen,
        } => runtime.block_on(async {
            use gatehouse_controller::dev;
            tokio::spawn(on_signal(shutdown.clone()));
            let options = dev::DevOptions {
                data,
                agent_listen,
                admin_listen,
                http_listen,
            };
            dev::run(options, shutdown).await
        }),
        #[cfg(not(feature = "dev"))]
        Command::Dev { .. } => {
            eprintln!(
                "gatehouse-controller: this build has no dev mode (the packages leave it out). \
                 From a checkout of gatehouse, run: cargo run --bin gatehouse-controller -- dev"
            );
            return ExitCode::from(64);
        }
        Command::Man { .. } => unreachable!("answered before the config is read"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatehouse-controller: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn ca_hash(config: &Config) -> anyhow::Result<()> {
    let path = config.data_dir.join("ca.pem");
    let pem = std::fs::read_to_string(&path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read {}: {e} (has the controller started once?)",
            path.display()
        )
    })?;
    let info = gatehouse_common::pki::CertInfo::from_pem(&pem)?;
    println!("{}", info.spki_hash);
    Ok(())
}

async fn on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    shutdown.cancel();
}
