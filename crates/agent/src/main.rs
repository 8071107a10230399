//! `gatehouse-agent`: wiring only. Parses arguments, loads config, runs.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gatehouse_agent::config::{Config, DEFAULT_CONFIG};
use gatehouse_agent::daemon;

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
    let log = gatehouse_agent::logging::init(&config.log);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = match cli.command {
        Command::Enroll {
            controller,
            token,
            token_file,
            ca_hash,
        } => {
            let args = daemon::EnrollArgs {
                controller,
                token,
                token_file,
                ca_hash,
            };
            runtime.block_on(daemon::enroll(config, args))
        }
        Command::Run => runtime.block_on(daemon::run(config, &path, required, log)),
        Command::Status { json } => daemon::status(&config, json),
        Command::Man { .. } => unreachable!("answered before the config is read"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("gatehouse-agent: {message}");
            ExitCode::from(code)
        }
    }
}
