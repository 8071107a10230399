//! A real Prometheus Alertmanager (Debian `prometheus-alertmanager`), run as the test's own
//! process (never the package's service), gossip off, delivering to a webhook within a second.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::process::{Proc, external};
use crate::{free_port, wait_for};

#[derive(Debug)]
pub struct Alertmanager {
    pub port: u16,
    proc: Proc,
}

impl Alertmanager {
    /// Starts one under `dir` that sends every group (by alert name and labels) to `webhook`,
    /// resolved ones included.
    pub fn start(dir: &Path, webhook: &str) -> Self {
        let bin = external("prometheus-alertmanager", &[], "prometheus-alertmanager");
        std::fs::create_dir_all(dir.join("data")).expect("create the Alertmanager data directory");
        let config = dir.join("alertmanager.yml");
        std::fs::write(
            &config,
            format!(
                "route:\n  receiver: hook\n  group_by: ['...']\n  group_wait: 1s\n  \
                 group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n    \
                 webhook_configs:\n      - url: {webhook:?}\n        send_resolved: true\n"
            ),
        )
        .expect("write alertmanager.yml");
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=");
        let proc = Proc::spawn("alertmanager", cmd, &dir.join("alertmanager.log"));
        let am = Self { port, proc };
        wait_for("Alertmanager to be ready", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .filter(|_| crate::gatehouse::http_get(port, "/-/ready").0 == 200)
        });
        am
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The active alerts, as `amtool alert query` lists them (JSON).
    pub fn query(&self) -> Vec<Value> {
        let amtool = external("amtool", &[], "prometheus-alertmanager");
        let out = Command::new(amtool)
            .arg(format!("--alertmanager.url={}", self.url()))
            .args(["alert", "query", "-o", "json"])
            .output()
            .expect("run amtool");
        assert!(
            out.status.success(),
            "amtool alert query failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str::<Vec<Value>>(text.trim())
            .unwrap_or_else(|e| panic!("amtool did not print a JSON list ({e}): {text}"))
    }

    /// Its log.
    pub fn log(&self) -> String {
        self.proc.output()
    }
}
