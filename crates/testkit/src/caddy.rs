//! A real Caddy (Debian's 2.6.2) for tests, running as the `caddy` user when the test runs as
//! root, with its admin endpoint and ports on free loopback ports, and a tiny HTTP upstream.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{Proc, external};
use crate::{free_port, wait_for};

/// A running Caddy whose Caddyfile lives at `<root>/etc/caddy/Caddyfile`, where an agent with
/// `root = <root>` looks for it.
#[derive(Debug)]
pub struct CaddyServer {
    pub caddyfile: PathBuf,
    pub admin_port: u16,
    pub https_port: u16,
    pub http_port: u16,
    proc: Option<Proc>,
    log: PathBuf,
    data: PathBuf,
}

/// The uid and gid of Debian's `caddy` user, when tests run as root.
pub fn caddy_user() -> Option<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let user = nix::unistd::User::from_name("caddy")
        .ok()
        .flatten()
        .expect("no caddy user: apt-get install caddy");
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

/// Makes every directory from `path` up to `/` traversable, as Caddy's user must read files
/// below a test's private temporary directory.
pub fn open_path(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut p = Some(path);
    while let Some(dir) = p {
        if dir.as_os_str().is_empty() || dir == Path::new("/") {
            break;
        }
        if let Ok(meta) = std::fs::metadata(dir) {
            let mode = meta.permissions().mode();
            if mode & 0o001 == 0 {
                let _ =
                    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o711));
            }
        }
        p = dir.parent();
    }
}

impl CaddyServer {
    /// Starts Caddy with a Caddyfile at `<root>/etc/caddy/Caddyfile` holding the global options
    /// and `user_blocks` (the operator's own sites, which gatehouse must leave alone).
    pub fn start(root: &Path, user_blocks: &str) -> Self {
        let dir = root.join("etc/caddy");
        let data = root.join("var/lib/caddy");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&data).unwrap();
        open_path(&dir);
        if let Some((uid, gid)) = caddy_user() {
            nix::unistd::chown(&data, Some(uid.into()), Some(gid.into())).unwrap();
        }
        let (admin_port, http_port, https_port) = (free_port(), free_port(), free_port());
        let caddyfile = dir.join("Caddyfile");
        std::fs::write(
            &caddyfile,
            format!(
                "{{\n\tadmin 127.0.0.1:{admin_port}\n\thttp_port {http_port}\n\thttps_port {https_port}\n\
                 \tstorage file_system {data}\n\tskip_install_trust\n\tlocal_certs\n}}\n\n{user_blocks}\n",
                data = data.display()
            ),
        )
        .unwrap();
        let log = root.join("caddy.log");
        let mut server = Self {
            caddyfile,
            admin_port,
            https_port,
            http_port,
            proc: None,
            log,
            data,
        };
        server.launch();
        server
    }

    /// Starts Caddy again after [`CaddyServer::stop`], with the Caddyfile as it is now.
    pub fn launch(&mut self) {
        let bin = external("caddy", &[], "caddy");
        let (caddyfile, data, admin_port) = (&self.caddyfile, &self.data, self.admin_port);
        let mut cmd = Command::new(bin);
        cmd.args(["run", "--config"])
            .arg(caddyfile)
            .args(["--adapter", "caddyfile"])
            .env("HOME", data)
            .env("XDG_DATA_HOME", data)
            .env("XDG_CONFIG_HOME", data);
        if let Some((uid, gid)) = caddy_user() {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
        }
        self.proc = Some(Proc::spawn("caddy", cmd, &self.log));
        wait_for("Caddy's admin endpoint", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", admin_port)).ok()
        });
    }

    /// The agent config lines that point at this Caddy.
    pub fn agent_toml(&self) -> String {
        format!(
            "[caddy]\nadmin = \"http://127.0.0.1:{}\"\n",
            self.admin_port
        )
    }

    /// Caddy's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops Caddy.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop(Duration::from_secs(10));
        }
    }
}

impl Drop for CaddyServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- caddy log ---\n{}", self.log());
        }
    }
}

/// A tiny HTTP/1.1 upstream that answers every request with `body`.
#[derive(Debug)]
pub struct Upstream {
    pub port: u16,
}

impl Upstream {
    /// Starts answering on a free loopback port; it lives as long as the test process.
    pub fn start(body: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let body = body.to_owned();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let body = body.clone();
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        Self { port }
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}
