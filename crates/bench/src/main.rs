//! `gatehouse-bench`: starts a real controller as its own process (SQLite store) and N
//! simulated agents in this one process, each a real enrolled identity with its own mTLS
//! `Connect` stream sending real `Report`s, and prints figures as `key: value` lines; then
//! bursts of certificates for one real agent ([`burst`]). `gatehouse-bench allowlist` measures
//! allowlist check-ins instead ([`allowlist`]), `gatehouse-bench wireguard` WireGuard
//! ([`wireguard`]), `gatehouse-bench acme` ACME against lego ([`acme`]).

mod acme;
mod allowlist;
mod burst;
mod fleet;
mod harness;
mod proc_stats;
mod wireguard;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Fleet-scale benchmark of one gatehouse controller.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Options {
    #[command(subcommand)]
    pub bench: Option<Bench>,
    /// How many simulated agents.
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// The report interval the controller asks for.
    #[arg(long, default_value = "30s", value_parser = humantime_duration)]
    pub report_interval: Duration,
    /// How long to measure controller CPU while the agents report.
    #[arg(long, default_value = "60s", value_parser = humantime_duration)]
    pub cpu_window: Duration,
    /// How long to measure one real idle agent.
    #[arg(long, default_value = "20s", value_parser = humantime_duration)]
    pub agent_window: Duration,
    /// Concurrent enrollments and admin calls.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Bursts of certificates requested at once for one real agent (internal CA), one run per
    /// size.
    #[arg(long, value_delimiter = ',', default_value = "100,500")]
    pub bursts: Vec<usize>,
    /// Where the gatehouse binaries are (default: beside this one).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
}

/// A benchmark other than the fleet's.
#[derive(Debug, clap::Subcommand)]
pub enum Bench {
    /// Devices checking in to an allowlist mirrored at Cloudflare and enforced by a host's Caddy.
    Allowlist(allowlist::Options),
    /// ACME: certificates from one Pebble by DNS-01 through the Cloudflare emulator, gatehouse
    /// against lego one after another and several at a time.
    Acme(acme::Options),
    /// WireGuard: address management, a hub's plan and apply on wireguard-go, a mesh's plan
    /// (root; run it in a network namespace of its own: it makes an interface).
    Wireguard(wireguard::Options),
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    gatehouse_agent::config::parse_interval(s)
}

fn main() -> anyhow::Result<()> {
    let mut options = Options::parse();
    raise_fd_limit(options.agents as u64 * 2 + 4096);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match options.bench.take() {
        Some(Bench::Acme(o)) => runtime.block_on(acme::run(o)),
        Some(Bench::Allowlist(o)) => runtime.block_on(allowlist::run(o)),
        Some(Bench::Wireguard(o)) => runtime.block_on(wireguard::run(o)),
        None => runtime.block_on(fleet::run(options)),
    }
}

/// Each stream is a socket on both sides.
fn raise_fd_limit(wanted: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let target = wanted.max(soft);
        let _ = setrlimit(Resource::RLIMIT_NOFILE, target, hard.max(target));
    }
}
