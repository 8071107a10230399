//! `gatehouse-testkit`: test tools as programs. `cloudflare-emulator` runs the Cloudflare API
//! emulator and its DNS server until Ctrl-C, for trying gatehouse without Cloudflare.

use std::net::SocketAddr;

use clap::{Parser, Subcommand};
use gatehouse_testkit::cloudflare::Emulator;

#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the Cloudflare API emulator (an emulator, not Cloudflare).
    CloudflareEmulator {
        /// The API address.
        #[arg(long, default_value = "127.0.0.1:8787")]
        api: SocketAddr,
        /// The authoritative DNS server address (UDP and TCP).
        #[arg(long, default_value = "127.0.0.1:8053")]
        dns: SocketAddr,
        /// An API token to accept (repeatable).
        #[arg(long = "token", required = true)]
        tokens: Vec<String>,
        /// A zone to create (repeatable).
        #[arg(long = "zone")]
        zones: Vec<String>,
    },
}

fn main() {
    let Command::CloudflareEmulator {
        api,
        dns,
        tokens,
        zones,
    } = Cli::parse().command;
    let emulator = Emulator::start_on(api, dns);
    for t in &tokens {
        emulator.add_token(t);
    }
    for z in &zones {
        let id = emulator.add_zone(z);
        println!("zone {z}: {id}");
    }
    println!(
        "Cloudflare API emulator (not Cloudflare) at {}\nauthoritative DNS at {}\n\
         Origin CA root:\n{}Press Ctrl-C to stop.",
        emulator.api_url, emulator.dns_addr, emulator.origin_ca_pem
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = tx.send(());
    });
    let _ = rx.recv();
    drop(emulator);
}
