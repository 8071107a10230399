//! Dev mode's own Caddy: when a `caddy` binary is on PATH, one runs under the dev directory on
//! free high ports (its own admin endpoint and storage, never the machine's Caddy), for the
//! local agent's sites. It stops with dev mode.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use gatehouse_agent::config::CaddyConfig;

/// The running Caddy.
#[derive(Debug)]
pub struct DevCaddy {
    child: tokio::process::Child,
    pub https_port: u16,
    pub http_port: u16,
    pub config: CaddyConfig,
    pub log: PathBuf,
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A port nothing listens on now (the kernel's pick).
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts Caddy under `dir` when there is one on PATH; `None` when there is not.
pub async fn start(dir: &Path) -> anyhow::Result<Option<DevCaddy>> {
    let Some(bin) = on_path("caddy") else {
        return Ok(None);
    };
    let data = dir.join("data");
    std::fs::create_dir_all(&data)?;
    let (admin, http_port, https_port) = (free_port()?, free_port()?, free_port()?);
    let caddyfile = dir.join("Caddyfile");
    // The global options only; the agent adds its one import line.
    std::fs::write(
        &caddyfile,
        format!(
            "{{\n\tadmin 127.0.0.1:{admin}\n\thttp_port {http_port}\n\thttps_port {https_port}\n\
             \tstorage file_system {data}\n\tskip_install_trust\n\tlocal_certs\n}}\n",
            data = data.display()
        ),
    )?;
    let log = dir.join("caddy.log");
    let out = std::fs::File::create(&log)?;
    let child = tokio::process::Command::new(&bin)
        .args(["run", "--config"])
        .arg(&caddyfile)
        .args(["--adapter", "caddyfile"])
        .env("HOME", &data)
        .env("XDG_DATA_HOME", &data)
        .env("XDG_CONFIG_HOME", &data)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", bin.display()))?;
    let mut caddy = DevCaddy {
        child,
        https_port,
        http_port,
        config: CaddyConfig {
            caddyfile,
            sites_dir: dir.join("gatehouse.d"),
            admin: format!("http://127.0.0.1:{admin}"),
            bin,
            user: None,
            check_address: "127.0.0.1".parse().expect("valid"),
        },
        log,
    };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", admin))
            .await
            .is_ok()
        {
            return Ok(Some(caddy));
        }
        if let Some(status) = caddy.child.try_wait()? {
            anyhow::bail!(
                "Caddy exited ({status}) right after starting; see {}",
                caddy.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!(
        "Caddy's admin endpoint did not come up within 10 s; see {}",
        caddy.log.display()
    )
}

impl DevCaddy {
    /// Stops it (SIGTERM, then a kill after 5 s).
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
