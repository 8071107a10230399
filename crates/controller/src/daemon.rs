//! The commands behind `gatehouse-controller`: `run` (the daemon under systemd: ready,
//! watchdog, TERM/INT to drain and stop, HUP to read the config file again), `ca-hash` and
//! `dev`.

use std::path::Path;
use std::time::Duration;

use gatehouse_common::logging::LogFilter;
use gatehouse_common::service;
use gatehouse_common::signals::{Request, Signals};
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Runs the controller until TERM or INT, then drains its streams (15 s at most). HUP reads
/// `config_path` again (`required`: as at start).
pub async fn run(
    config: Config,
    config_path: &Path,
    required: bool,
    log: LogFilter,
) -> anyhow::Result<()> {
    let mut signals = Signals::install()?;
    let shutdown = CancellationToken::new();
    let running = crate::server::start(config, shutdown.clone()).await?;
    service::notify_ready();
    service::spawn_watchdog(shutdown.clone());
    while signals.next().await == Request::Reload {
        crate::reload::from_file(&running.shared, config_path, required, &log).await;
    }
    service::notify_stopping();
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), running.wait())
        .await
        .map_err(|_| anyhow::anyhow!("streams did not close within 15 s"))
}

/// Prints the CA pin agents enroll with.
pub fn ca_hash(config: &Config) -> anyhow::Result<()> {
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

/// Writes a backup of the controller's store (it may be running) to `to`.
pub async fn backup(config: &Config, to: &Path) -> anyhow::Result<()> {
    let store = crate::store::Store::open(config.database.expose()).await?;
    let saved = crate::backup::save(&store, to, gatehouse_common::now_unix()).await;
    store.close().await;
    let header = saved?;
    println!(
        "backup written to {} ({} bytes of store, CA {}).\n\
         It holds the secrets sealed under the master key ({}), which it does not contain: \
         keep that key apart from the backups; without it a restore brings back no secret.",
        to.display(),
        header.payload_bytes,
        header.ca_hash,
        config.master_key_file.display()
    );
    Ok(())
}

/// Restores a backup into `data` (empty unless `force`) and says what came back.
pub async fn restore(from: &Path, data: &Path, force: bool) -> anyhow::Result<()> {
    let restored = crate::backup::restore(from, data, force).await?;
    let h = &restored.header;
    println!(
        "restored into {}: {} agents, {} sites, {} certificates, written by gatehouse {} at {}.\n\
         Agents pin CA {}: they reconnect with their identities once the controller runs on \
         their address.\n\
         Before starting, put the master key in place ({}/master.key, or master_key_file): \
         without it the CA key and the secrets cannot be opened.",
        data.display(),
        restored.agents,
        restored.sites,
        restored.certificates,
        h.version,
        h.created_at,
        h.ca_hash,
        data.display()
    );
    Ok(())
}

/// Runs dev mode until TERM or INT.
#[cfg(feature = "dev")]
pub async fn dev(options: crate::dev::DevOptions) -> anyhow::Result<()> {
    let mut signals = Signals::install()?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        while signals.next().await == Request::Reload {}
        stop.cancel();
    });
    crate::dev::run(options, shutdown).await
}

/// What a build without dev mode says to `dev`.
pub const NO_DEV_MODE: &str = "this build has no dev mode (the packages leave it out). From a \
     checkout of gatehouse, run: cargo run --bin gatehouse-controller -- dev";
