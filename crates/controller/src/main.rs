//! `gatehouse-controller`: wiring only. Parses arguments, loads config, runs, drains on a signal.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gatehouse_controller::config::{Config, DEFAULT_CONFIG};
use gatehouse_controller::daemon;

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
    let (path, required) = match &cli.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    // Dev mode keeps everything in its own directory and reads no config file.
    let command = cli.command.unwrap_or(Command::Run { database: None });
    let config = match &command {
        Command::Dev { .. } => Config::with_data_dir(Path::new("/")),
        Command::Run { database } => {
            match Config::load(&path, required).and_then(|c| c.with_database(database.clone())) {
                Ok(c) => c,
                Err(e) => return usage(&e),
            }
        }
        _ => match Config::load(&path, required) {
            Ok(c) => c,
            Err(e) => return usage(&e),
        },
    };
    let log = gatehouse_common::logging::init(&config.log);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = match command {
        Command::CaHash => daemon::ca_hash(&config),
        Command::Run { .. } => runtime.block_on(daemon::run(config, &path, required, log)),
        #[cfg(feature = "dev")]
        Command::Dev {
            data,
            agent_listen,
            admin_listen,
            http_listen,
        } => runtime.block_on(daemon::dev(gatehouse_controller::dev::DevOptions {
            data,
            agent_listen,
            admin_listen,
            http_listen,
        })),
        #[cfg(not(feature = "dev"))]
        Command::Dev { .. } => {
            eprintln!("gatehouse-controller: {}", daemon::NO_DEV_MODE);
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

fn usage(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("gatehouse-controller: {e}");
    ExitCode::from(64)
}
