//! `gatehousectl`: the command line for the gatehouse admin API. Wiring only; each command
//! group lives in its own module.

mod args;
mod client;
mod commands;
mod output;
mod qr;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// The help heading of the options that say how to reach the controller.
const CONNECTION: &str = "Connection";

/// Manage a gatehouse fleet: join tokens, agents, API tokens and the audit log.
///
/// Connects to the controller's local admin socket by default (as root on the controller host),
/// or over TLS with --controller, --ca-file and an API token.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// The admin API over TLS, https://HOST[:7444].
    #[arg(long, global = true, help_heading = CONNECTION, env = "GATEHOUSE_CONTROLLER")]
    controller: Option<String>,
    /// The controller CA certificate (PEM), required with --controller.
    #[arg(long, global = true, help_heading = CONNECTION, env = "GATEHOUSE_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// An API token (gha_…), required with --controller.
    #[arg(long, global = true, help_heading = CONNECTION, env = "GATEHOUSE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The controller's local admin socket.
    #[arg(
        long,
        global = true,
        help_heading = CONNECTION,
        env = "GATEHOUSE_SOCKET",
        default_value = "/run/gatehouse-controller/admin.sock"
    )]
    socket: PathBuf,
    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// JSON for scripts.
    Json,
}

// Parsed once per run: the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// One-time join tokens for enrolling agents.
    #[command(subcommand)]
    Token(commands::tokens::TokenCommand),
    /// Enrolled agents.
    #[command(subcommand)]
    Agents(commands::agents::AgentsCommand),
    /// API tokens for the admin API.
    #[command(subcommand)]
    Apitoken(commands::apitokens::ApiTokenCommand),
    /// The audit log of every change.
    #[command(subcommand)]
    Audit(commands::audit::AuditCommand),
    /// Write a consistent backup of the controller's store to a file (admin; the master key is
    /// not in it).
    Backup {
        /// The backup file (written whole, mode 0600).
        #[arg(long)]
        to: PathBuf,
    },
    /// Caddy sites on agents.
    #[command(subcommand)]
    Site(commands::sites::SiteCommand),
    /// Certificates on agents.
    #[command(subcommand)]
    Cert(commands::certs::CertCommand),
    /// Cloudflare accounts and zones.
    #[command(subcommand)]
    Cloudflare(commands::cloudflare::CloudflareCommand),
    /// ACME accounts (Let's Encrypt, Google, ZeroSSL, any directory).
    #[command(subcommand)]
    Acme(commands::acme::AcmeCommand),
    /// Cloudflare Tunnels on agents: create, route, logs, restart, rotate, delete.
    #[command(subcommand)]
    Tunnel(commands::tunnels::TunnelCommand),
    /// Dynamic IP allowlists: devices check in, entries expire.
    #[command(subcommand)]
    Allowlist(commands::allowlists::AllowlistCommand),
    /// WireGuard networks: hosts and clients, addresses, keys made where they are used.
    #[command(subcommand)]
    Wg(commands::wireguard::WgCommand),
    /// Alerts the controller raised, and silences.
    #[command(subcommand)]
    Alert(commands::alerts::AlertCommand),
    /// The status page: `gatehousectl ui login` prints a one-time sign-in link.
    #[command(subcommand)]
    Ui(commands::ui::UiCommand),
    /// Print a shell completion script: `gatehousectl completions bash > /etc/bash_completion.d/gatehousectl`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (gatehousectl.1 and one per command) into DIR; the packages ship them.
    #[command(hide = true)]
    Man { dir: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut command, "gatehousectl", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Command::Man { dir } => {
            let command = <Cli as clap::CommandFactory>::command();
            return match clap_mangen::generate_to(command, dir) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!(
                        "gatehousectl: cannot write man pages to {}: {e}",
                        dir.display()
                    );
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatehousectl: {}", output::escape(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}
