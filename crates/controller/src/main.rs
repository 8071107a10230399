//! `gatehouse-controller`: wiring only. Parses arguments, loads config, runs, drains on a signal.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use gatehouse_controller::config::{Config, DEFAULT_CONFIG};
use gatehouse_controller::daemon;

mod cli;
use cli::{Cli, Command};

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
        Command::Dev { .. } | Command::Restore { .. } => Config::with_data_dir(Path::new("/")),
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
        Command::Backup { to } => runtime.block_on(daemon::backup(&config, &to)),
        Command::Restore { from, data, force } => {
            runtime.block_on(daemon::restore(&from, &data, force))
        }
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
