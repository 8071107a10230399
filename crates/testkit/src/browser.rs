//! A real headless Chromium (Debian `chromium`, `chromium-driver`) driven over WebDriver by
//! `chromedriver`, with a fresh profile: load pages, read the DOM after scripts ran, the
//! browser's console (where CSP violations are reported) and screenshots.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use crate::process::{Proc, external};
use crate::{free_port, wait_for};

/// The flags every run uses: headless, no sandbox (root), and nothing that reaches out.
const FLAGS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
];

#[derive(Debug)]
pub struct Browser {
    port: u16,
    session: String,
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
    _driver: Proc,
}

impl Browser {
    /// Starts chromedriver and a Chromium session with a profile under `dir`.
    pub fn start(dir: &Path) -> Self {
        let driver = external("chromedriver", &[], "chromium-driver");
        let chromium = external("chromium", &[], "chromium");
        std::fs::create_dir_all(dir).expect("create the browser's directory");
        let port = free_port();
        let mut cmd = Command::new(driver);
        cmd.arg(format!("--port={port}"));
        let proc = Proc::spawn("chromedriver", cmd, &dir.join("chromedriver.log"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("an HTTP client");
        let mut b = Self {
            port,
            session: String::new(),
            runtime,
            client,
            _driver: proc,
        };
        wait_for("chromedriver", Duration::from_secs(20), || {
            b.call("GET", "/status", None)
                .ok()
                .filter(|v| v["value"]["ready"] == true)
        });
        let profile = dir.join("chromium-profile");
        let mut args: Vec<String> = FLAGS.iter().map(|f| (*f).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let created = b
            .call(
                "POST",
                "/session",
                Some(json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {"binary": chromium, "args": args},
                    "goog:loggingPrefs": {"browser": "ALL"},
                }}})),
            )
            .unwrap_or_else(|e| panic!("cannot start Chromium: {e}"));
        b.session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session in {created}"))
            .to_owned();
        b
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        self.runtime.block_on(async {
            let request = match method {
                "GET" => self.client.get(&url),
                "DELETE" => self.client.delete(&url),
                _ => self.client.post(&url).json(&body.unwrap_or(json!({}))),
            };
            let response = request.send().await.map_err(|e| format!("{e:?}"))?;
            let status = response.status();
            let value: Value = response.json().await.map_err(|e| e.to_string())?;
            if status.is_success() {
                Ok(value)
            } else {
                Err(format!("{status}: {value}"))
            }
        })
    }

    fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body)
            .unwrap_or_else(|e| panic!("WebDriver {path}: {e}"))
    }

    /// Loads `url` and waits until it has loaded.
    pub fn open(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({ "url": url })));
    }

    /// The current page's URL.
    pub fn url(&self) -> String {
        self.session_call("GET", "/url", None)["value"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The DOM as it is now (after scripts ran).
    pub fn dom(&self) -> String {
        self.session_call("GET", "/source", None)["value"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The text of the element with `id` (empty when there is none).
    pub fn text_of(&self, id: &str) -> String {
        let script =
            "const e = document.getElementById(arguments[0]); return e ? e.innerText : '';";
        self.session_call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [id] })),
        )["value"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The console messages since the last call (CSP violations are reported there).
    pub fn console(&self) -> Vec<String> {
        self.session_call("POST", "/se/log", Some(json!({ "type": "browser" })))["value"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A PNG of the window, written to `path`.
    pub fn screenshot(&self, path: &Path) {
        let png = self.session_call("GET", "/screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png["value"].as_str().unwrap_or_default())
            .expect("a base64 screenshot");
        assert!(bytes.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create the artifact directory");
        }
        std::fs::write(path, bytes).expect("write the screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
    }
}

/// Where tests keep what they make for people to look at: `target/test-artifacts/`.
pub fn artifacts() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.ancestors()
        .find(|d| d.file_name().is_some_and(|n| n == "target"))
        .map(|t| t.join("test-artifacts"))
        .unwrap_or_else(|| std::env::temp_dir().join("gatehouse-test-artifacts"))
}
