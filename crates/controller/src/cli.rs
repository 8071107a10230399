//! `gatehouse-controller`'s command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The gatehouse controller: the fleet's desired state, the agent CA, and the admin API.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The controller's config file.
    #[arg(long, short, global = true, env = "GATEHOUSE_CONTROLLER_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller (the default).
    Run {
        /// The store, overriding the config: sqlite://PATH or postgres://USER@HOST/DB.
        #[arg(long, env = "GATEHOUSE_DATABASE", hide_env_values = true)]
        database: Option<String>,
    },
    /// Print the CA pin that agents enroll with (`gatehouse-agent enroll --ca-hash`).
    CaHash,
    /// Write a consistent backup of the store while the controller runs (SQLite; PostgreSQL
    /// uses pg_dump). The master key is not in it: keep it apart.
    Backup {
        /// The backup file (written whole, mode 0600).
        #[arg(long)]
        to: PathBuf,
    },
    /// Restore a backup into an empty data directory, checked, and say what it holds.
    Restore {
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
        /// The new data directory.
        #[arg(long)]
        data: PathBuf,
        /// Replace the store of a directory that is not empty.
        #[arg(long)]
        force: bool,
    },
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
