//! The commands behind `gatehouse-agent`: `run` (the daemon under systemd: ready, watchdog,
//! TERM/INT to stop, HUP to read the config file again), `enroll` and `status`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gatehouse_common::logging::LogFilter;
use gatehouse_common::signals::{Request, Signals};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::config::{Config, DEFAULT_AGENT_PORT};
use crate::status::Status;
use crate::transport::ControllerUrl;
use crate::{enroll, host, pki, runtime, service};

/// Why a command failed: an exit code (64 for usage) and a message.
pub type Failure = (u8, String);

fn usage(message: String) -> Failure {
    (64, message)
}

fn failed(message: String) -> Failure {
    (1, message)
}

/// Runs the agent until TERM or INT; HUP reads `config_path` again (`required`: as at start).
pub async fn run(
    config: Config,
    config_path: &Path,
    required: bool,
    log: LogFilter,
) -> Result<(), Failure> {
    let mut signals = Signals::install().map_err(|e| failed(format!("signal handlers: {e}")))?;
    let agent = runtime::Agent::start(config)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let shutdown = CancellationToken::new();
    let span = tracing::info_span!("agent", agent_id = %agent.agent_id());
    let task = tokio::spawn(tracing::Instrument::instrument(
        agent.clone().run(shutdown.clone()),
        span,
    ));
    service::notify_ready();
    service::spawn_watchdog(shutdown.clone());
    while signals.next().await == Request::Reload {
        match Config::load(config_path, required) {
            Ok(new) => agent.reload(new, &log),
            Err(e) => {
                warn!(error = %e, "the config file was not read again: the running config stays")
            }
        }
    }
    service::notify_stopping();
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    Ok(())
}

/// What `enroll` was given on its command line.
#[derive(Debug)]
pub struct EnrollArgs {
    pub controller: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub ca_hash: Option<String>,
}

/// Enrolls this host once; the controller and the pin default to agent.toml's.
pub async fn enroll(config: Config, args: EnrollArgs) -> Result<(), Failure> {
    let controller = match args.controller {
        Some(url) => ControllerUrl::parse(&url, DEFAULT_AGENT_PORT).map_err(usage)?,
        None => config
            .controller
            .clone()
            .ok_or_else(|| usage("give --controller or set `controller` in agent.toml".into()))?,
    };
    let ca_hash = match args.ca_hash {
        Some(hash) => pki::parse_ca_hash(&hash).map_err(usage)?,
        None => config
            .ca_hash
            .clone()
            .ok_or_else(|| usage("give --ca-hash or set `ca_hash` in agent.toml".into()))?,
    };
    let token = match (args.token, &args.token_file) {
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
    if let Some(f) = args.token_file
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

/// Prints what the running agent is doing (its status file).
pub fn status(config: &Config, json: bool) -> Result<(), Failure> {
    let status = Status::load(&config.paths).map_err(failed)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).expect("serialisable")
        );
        return Ok(());
    }
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
    Ok(())
}
