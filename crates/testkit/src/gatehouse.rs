//! Harnesses for the real gatehouse binaries: a controller with its own ports and data
//! directory, agents each under their own root, and `gatehousectl` against them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use gatehouse_agent::config::Paths;
use serde_json::Value;

use crate::process::{Proc, bin};
use crate::{free_port, wait_for};

/// What a finished command printed.
#[derive(Debug)]
pub struct Run {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Self {
            success: o.status.success(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Parses stdout as JSON, panicking with the output when the command failed.
    pub fn json(&self) -> Value {
        assert!(
            self.success,
            "command failed:\n{}{}",
            self.stdout, self.stderr
        );
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.stdout))
    }
}

fn send_signal(pid: u32, signal: nix::sys::signal::Signal) {
    assert!(pid != 0, "the process is not running");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).expect("kill");
}

/// A plain HTTP/1.1 `GET` on loopback: the status code and the body.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response)
        .expect("read the response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

/// A `gatehouse-controller run` process.
#[derive(Debug)]
pub struct Controller {
    /// The test's temporary directory; agents made with [`Controller::agent`] live in it too.
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    pub agent_port: u16,
    /// The address agents reach it at (127.0.0.1 unless started for a box).
    pub agent_host: std::net::IpAddr,
    pub admin_port: u16,
    /// `/healthz` and `/metrics`.
    pub http_port: u16,
    proc: Option<Proc>,
    restarts: u32,
}

impl Controller {
    /// Starts a controller; `extra` is appended to its config (for example
    /// `agent_cert_lifetime = "12s"`). Reports every second so tests see changes quickly.
    pub fn start(extra: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("gh-e2e-")
            .tempdir()
            .expect("tempdir");
        Self::start_with(dir, extra, None)
    }

    /// Starts a controller whose agent port listens on `ip` (the host end of a box's link)
    /// and whose certificate names it.
    pub fn start_on(ip: std::net::IpAddr, extra: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("gh-e2e-")
            .tempdir()
            .expect("tempdir");
        Self::start_full(dir, extra, None, ip)
    }

    /// Starts a controller on the given database URL.
    pub fn start_with(dir: tempfile::TempDir, extra: &str, database: Option<&str>) -> Self {
        Self::start_full(dir, extra, database, [127, 0, 0, 1].into())
    }

    fn start_full(
        dir: tempfile::TempDir,
        extra: &str,
        database: Option<&str>,
        agent_host: std::net::IpAddr,
    ) -> Self {
        let data_dir = dir.path().join("controller");
        let socket = dir.path().join("admin.sock");
        let (agent_port, admin_port, http_port) = (free_port(), free_port(), free_port());
        let mut text = format!(
            "data_dir = {data:?}\nagent_listen = \"{agent_host}:{agent_port}\"\n\
             admin_listen = \"127.0.0.1:{admin_port}\"\nadmin_socket = {socket:?}\n\
             http_listen = \"127.0.0.1:{http_port}\"\n",
            data = data_dir.display().to_string(),
            socket = socket.display().to_string(),
        );
        if let Some(db) = database {
            text.push_str(&format!("database = {db:?}\n"));
        }
        if !agent_host.is_loopback() {
            text.push_str(&format!(
                "server_names = [\"localhost\", \"127.0.0.1\", \"{agent_host}\"]\n"
            ));
        }
        // Fast reports, unless the test sets its own interval.
        if !extra.contains("report_interval") {
            text.push_str("report_interval = \"1s\"\n");
        }
        text.push_str(extra);
        let config = dir.path().join("controller.toml");
        std::fs::write(&config, text).expect("write controller.toml");
        let mut c = Self {
            dir,
            config,
            data_dir,
            socket,
            agent_port,
            agent_host,
            admin_port,
            http_port,
            proc: None,
            restarts: 0,
        };
        c.launch();
        c
    }

    fn launch(&mut self) {
        let log = self
            .dir
            .path()
            .join(format!("controller-{}.log", self.restarts));
        self.restarts += 1;
        let mut cmd = Command::new(bin("gatehouse-controller"));
        cmd.args(["run", "--config"]).arg(&self.config);
        cmd.env("GATEHOUSE_LOG", "info,gatehouse_controller=debug");
        self.proc = Some(Proc::spawn("gatehouse-controller", cmd, &log));
        wait_for(
            "the controller's admin socket",
            Duration::from_secs(30),
            || (self.socket.exists() && self.ctl(&["agents", "list"]).success).then_some(()),
        );
    }

    /// Stops it with SIGTERM (graceful); panics if it does not exit within 15 s.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            assert!(
                p.stop(Duration::from_secs(15)),
                "the controller did not stop on SIGTERM:\n{}",
                p.output()
            );
        }
    }

    /// Kills it with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Rewrites the config file (a reload test sends SIGHUP next).
    pub fn edit_config(&self, edit: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(&self.config).expect("read controller.toml");
        std::fs::write(&self.config, edit(text)).expect("write controller.toml");
    }

    /// Starts it again with the same config, ports and data.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Starts it again after [`Controller::stop`].
    pub fn start_again(&mut self) {
        self.launch();
    }

    /// Everything it logged since its last start.
    pub fn log(&self) -> String {
        self.proc.as_ref().map(Proc::output).unwrap_or_default()
    }

    /// Sends `signal` to the running process (SIGSTOP freezes it as a wedged peer would be).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = self
            .proc
            .as_ref()
            .map(Proc::pid)
            .expect("the controller runs");
        send_signal(pid, signal);
    }

    /// `GET path` on the HTTP port: the status code and the body.
    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.http_port, path)
    }

    /// A counter or gauge from `/metrics`, by its full series name as printed (for example
    /// `gatehouse_stream_messages_total{direction="sent",kind="certificate"}`); 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        let (_, body) = self.http_get("/metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Runs `gatehousectl --socket … ARGS`.
    pub fn ctl(&self, args: &[&str]) -> Run {
        Command::new(bin("gatehousectl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .env_remove("GATEHOUSE_CONTROLLER")
            .output()
            .expect("run gatehousectl")
            .into()
    }

    /// Runs `gatehousectl` over TLS with an API token.
    pub fn ctl_tls(&self, token: &str, args: &[&str]) -> Run {
        Command::new(bin("gatehousectl"))
            .args([
                "--controller",
                &format!("https://127.0.0.1:{}", self.admin_port),
            ])
            .arg("--ca-file")
            .arg(self.data_dir.join("ca.pem"))
            .args(["--token", token])
            .args(args)
            .output()
            .expect("run gatehousectl")
            .into()
    }

    /// `gatehousectl … --output json`, which must succeed.
    pub fn ctl_json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        self.ctl(&all).json()
    }

    /// `gatehousectl cloudflare account add --name NAME` with `token` (through a file, as an
    /// operator would) against the API at `api_url` (an emulator's).
    pub fn add_cloudflare_account(&self, name: &str, token: &str, api_url: &str) -> Run {
        let file = self.dir.path().join(format!("cf-token-{name}"));
        std::fs::write(&file, format!("{token}\n")).expect("write the token file");
        self.ctl(&[
            "cloudflare",
            "account",
            "add",
            "--name",
            name,
            "--token-file",
            file.to_str().expect("utf-8 path"),
            "--api-url",
            api_url,
        ])
    }

    /// A new join token.
    pub fn join_token(&self, ttl: &str) -> String {
        self.ctl_json(&["token", "create", "--ttl", ttl])["token"]
            .as_str()
            .expect("token")
            .to_owned()
    }

    /// Runs `gatehouse-controller --config CONFIG ARGS…` (backup, restore, ca-hash…).
    pub fn command(&self, args: &[&str]) -> Run {
        Command::new(bin("gatehouse-controller"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("run gatehouse-controller")
            .into()
    }

    /// The CA pin agents enroll with, as `gatehouse-controller ca-hash` prints it.
    pub fn ca_hash(&self) -> String {
        let run: Run = Command::new(bin("gatehouse-controller"))
            .arg("--config")
            .arg(&self.config)
            .arg("ca-hash")
            .output()
            .expect("run gatehouse-controller ca-hash")
            .into();
        assert!(run.success, "ca-hash failed: {}", run.stderr);
        run.stdout.trim().to_owned()
    }

    /// The agent endpoint.
    pub fn agent_url(&self) -> String {
        format!("https://{}:{}", self.agent_host, self.agent_port)
    }

    /// `agents list` as JSON.
    pub fn agents(&self) -> Vec<Value> {
        self.ctl_json(&["agents", "list"])
            .as_array()
            .cloned()
            .expect("agent list")
    }

    /// One agent from `agents show`.
    pub fn agent_view(&self, id: &str) -> Value {
        self.ctl_json(&["agents", "show", id])
    }

    /// A new agent whose host paths live under this test's directory.
    pub fn agent(&self, name: &str) -> Agent {
        Agent::new(self.dir.path(), name, "")
    }

    /// A new agent with extra config (for example a `[caddy]` table).
    pub fn agent_with(&self, name: &str, extra: &str) -> Agent {
        Agent::new(self.dir.path(), name, extra)
    }

    /// The internal site CA, PEM.
    pub fn site_ca(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("site-ca.pem")).expect("site-ca.pem")
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(p) = &self.proc
        {
            eprintln!("--- controller log ---\n{}", p.output());
        }
    }
}

/// A `gatehouse-agent` with every host path under its own root.
#[derive(Debug)]
pub struct Agent {
    pub root: PathBuf,
    pub config: PathBuf,
    proc: Option<Proc>,
    runs: u32,
    /// Runs it through this first (`ip netns exec NS`).
    prefix: Vec<String>,
}

impl Agent {
    /// An agent under `base/name`; `extra` is appended to its config.
    pub fn new(base: &Path, name: &str, extra: &str) -> Self {
        let root = base.join(name);
        std::fs::create_dir_all(&root).expect("agent root");
        crate::caddy::open_path(&root);
        let config = base.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!("root = {:?}\n{extra}", root.display().to_string()),
        )
        .expect("write agent.toml");
        Self {
            root,
            config,
            proc: None,
            runs: 0,
            prefix: Vec::new(),
        }
    }

    /// Runs the agent inside `ns` from now on, as a host of its own.
    pub fn in_netns(mut self, ns: &crate::netns::Netns) -> Self {
        self.prefix = ns.host_prefix();
        self
    }

    /// Rewrites the config file (a reload test sends SIGHUP next).
    pub fn edit_config(&self, edit: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(&self.config).expect("read agent.toml");
        std::fs::write(&self.config, edit(text)).expect("write agent.toml");
    }

    /// The agent's paths.
    pub fn paths(&self) -> Paths {
        Paths::under(&self.root)
    }

    /// `gatehouse-agent enroll` with explicit arguments.
    pub fn enroll_with(&self, url: &str, ca_hash: &str, token: &str) -> Run {
        Command::new(bin("gatehouse-agent"))
            .arg("--config")
            .arg(&self.config)
            .args([
                "enroll",
                "--controller",
                url,
                "--ca-hash",
                ca_hash,
                "--token",
                token,
            ])
            .output()
            .expect("run gatehouse-agent enroll")
            .into()
    }

    /// Enrolls with `controller` using a fresh token; panics on failure. Returns the agent id.
    pub fn enroll(&self, controller: &Controller) -> String {
        let token = controller.join_token("10m");
        let run = self.enroll_with(&controller.agent_url(), &controller.ca_hash(), &token);
        assert!(run.success, "enroll failed:\n{}{}", run.stdout, run.stderr);
        run.stdout
            .split_whitespace()
            .nth(3)
            .expect("enrolled as agent ID")
            .to_owned()
    }

    /// Starts `gatehouse-agent run`.
    pub fn run(&mut self) {
        let log = self.root.with_extension(format!("run-{}.log", self.runs));
        self.runs += 1;
        let mut cmd = match self.prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin("gatehouse-agent"));
                c
            }
            None => Command::new(bin("gatehouse-agent")),
        };
        cmd.arg("--config").arg(&self.config).arg("run");
        // Debug logs, unless the test sets the config file's own filter.
        let text = std::fs::read_to_string(&self.config).unwrap_or_default();
        if text.lines().any(|l| l.starts_with("log =")) {
            cmd.env_remove("GATEHOUSE_LOG");
        } else {
            cmd.env("GATEHOUSE_LOG", "info,gatehouse_agent=debug");
        }
        self.proc = Some(Proc::spawn("gatehouse-agent", cmd, &log));
    }

    /// The running process's id (0 when not running).
    pub fn pid(&self) -> u32 {
        self.proc.as_ref().map_or(0, Proc::pid)
    }

    /// Sends `signal` to the running process.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        send_signal(self.pid(), signal);
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            assert!(
                p.stop(Duration::from_secs(10)),
                "the agent did not stop on SIGTERM:\n{}",
                p.output()
            );
        }
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Everything it logged in its current run.
    pub fn log(&self) -> String {
        self.proc.as_ref().map(Proc::output).unwrap_or_default()
    }

    /// `status.json`, once the agent has written it.
    pub fn status(&self) -> Option<Value> {
        let text = std::fs::read_to_string(self.paths().status()).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Waits until the status file says `pred`.
    pub fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_for(what, timeout, || self.status().filter(|s| pred(s)))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(p) = &self.proc
        {
            eprintln!("--- agent {} log ---\n{}", self.root.display(), p.output());
        }
    }
}

/// Enrolls and starts the packaged agent unit in a booted box, the packaged way (a join token
/// dropped for `gatehouse-agent-enroll.service`), with `extra` after the controller lines of
/// its config; the agent's id once it is online.
pub fn packaged_agent(
    vm: &crate::systembox::SystemBox,
    controller: &Controller,
    extra: &str,
) -> String {
    vm.ok(&["mkdir", "-p", "/etc/gatehouse"]);
    vm.write(
        "/etc/gatehouse/agent.toml",
        &format!(
            "controller = {:?}\nca_hash = {:?}\n{extra}",
            controller.agent_url(),
            controller.ca_hash()
        ),
        0o600,
    );
    vm.write(
        "/etc/gatehouse/join-token",
        &controller.join_token("10m"),
        0o600,
    );
    vm.ok(&["systemctl", "start", "gatehouse-agent.service"]);
    wait_for("the agent to connect", Duration::from_secs(60), || {
        controller
            .agents()
            .into_iter()
            .find(|a| a["status"] == "online")
            .and_then(|a| a["id"].as_str().map(str::to_owned))
    })
}
