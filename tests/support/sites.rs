//! The sites test set-up shared by tests/sites.rs and tests/sites_resilience.rs: a controller,
//! an enrolled agent and a real Caddy with a block of the user's own.

// Each test file uses the part it needs.
#![allow(dead_code)]

pub use std::time::Duration;

pub use gatehouse_testkit::caddy::{CaddyServer, Upstream};
pub use gatehouse_testkit::gatehouse::{Agent, Controller};
pub use gatehouse_testkit::wait_for;
pub use serde_json::Value;

/// A controller, and an enrolled, running agent with its own Caddy. (Fields drop in order:
/// the controller, which owns the temporary directory, goes last.)
pub struct Fleet {
    pub agent: Agent,
    pub caddy: CaddyServer,
    pub controller: Controller,
    pub id: String,
    pub user_block: String,
}

pub fn user_block(port: u16) -> String {
    format!("http://127.0.0.1:{port} {{\n\trespond \"the operator's own block\"\n}}\n")
}

pub fn fleet(controller_extra: &str) -> Fleet {
    fleet_with(controller_extra, "")
}

/// A fleet whose agent config starts with `agent_extra` (top-level fields).
pub fn fleet_with(controller_extra: &str, agent_extra: &str) -> Fleet {
    let controller = Controller::start(controller_extra);
    let root = controller.dir.path().join("host");
    std::fs::create_dir_all(&root).unwrap();
    let user_block = user_block(gatehouse_testkit::free_port());
    let caddy = CaddyServer::start(&root, &user_block);
    let mut agent = controller.agent_with("host", &format!("{agent_extra}{}", caddy.agent_toml()));
    let id = agent.enroll(&controller);
    agent.run();
    agent.wait_status("connected", Duration::from_secs(20), |s| {
        s["connected"] == true
    });
    Fleet {
        controller,
        agent,
        id,
        caddy,
        user_block,
    }
}

impl Fleet {
    pub fn create_site(&self, domain: &str, upstream: &Upstream, extra: &[&str]) -> Value {
        let port = self.caddy.https_port.to_string();
        let mut args = vec![
            "site",
            "create",
            "--agent",
            &self.id,
            "--domain",
            domain,
            "--upstream",
        ];
        let up = upstream.address();
        args.push(&up);
        args.extend(["--port", &port]);
        args.extend(extra);
        self.controller.ctl_json(&args)
    }

    /// A site Caddy's validation refuses: its ACME CA root file does not exist.
    pub fn create_failing_site(&self, name: &str, domain: &str, upstream: &Upstream) -> Value {
        self.create_site(
            domain,
            upstream,
            &[
                "--name",
                name,
                "--tls",
                "caddy-managed",
                "--acme-ca",
                "https://127.0.0.1:9/dir",
                "--acme-ca-root",
                "/nonexistent/root.pem",
            ],
        )
    }

    pub fn wait_site(&self, name: &str, state: &str) -> Value {
        wait_for(
            &format!("site {name} {state}"),
            Duration::from_secs(30),
            || {
                let v = self
                    .controller
                    .ctl_json(&["site", "show", "--agent", &self.id, name]);
                (v["state"] == state).then_some(v)
            },
        )
    }

    /// An HTTPS GET through Caddy that trusts only the internal site CA.
    pub fn get(&self, domain: &str) -> Result<String, String> {
        let ca = reqwest::Certificate::from_pem(self.controller.site_ca().as_bytes()).unwrap();
        let addr = format!("127.0.0.1:{}", self.caddy.https_port)
            .parse()
            .unwrap();
        let client = reqwest::blocking_client(ca, domain, addr);
        client(&format!("https://{domain}:{}/", self.caddy.https_port)).map(|(body, _)| body)
    }

    /// An HTTPS GET through Caddy from `source` (a loopback address the client binds to), with
    /// extra request headers: the status and body.
    pub fn get_from(
        &self,
        domain: &str,
        source: &str,
        headers: &[(&str, &str)],
    ) -> Result<(u16, String), String> {
        let ca = ::reqwest::Certificate::from_pem(self.controller.site_ca().as_bytes()).unwrap();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", self.caddy.https_port)
            .parse()
            .unwrap();
        let client = ::reqwest::Client::builder()
            .tls_certs_only([ca])
            .resolve(domain, addr)
            .local_address(source.parse::<std::net::IpAddr>().unwrap())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut req = client.get(format!("https://{domain}:{}/", self.caddy.https_port));
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let r = req.send().await.map_err(|e| format!("{e:?}"))?;
            let status = r.status().as_u16();
            Ok((status, r.text().await.map_err(|e| e.to_string())?))
        })
    }

    /// A response header of an HTTPS GET through Caddy.
    pub fn header(&self, domain: &str, name: &str) -> Option<String> {
        let ca = reqwest::Certificate::from_pem(self.controller.site_ca().as_bytes()).unwrap();
        let addr = format!("127.0.0.1:{}", self.caddy.https_port)
            .parse()
            .unwrap();
        let client = reqwest::blocking_client(ca, domain, addr);
        let (_, headers) = client(&format!("https://{domain}:{}/", self.caddy.https_port)).ok()?;
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

/// A tiny blocking wrapper: the tests are synchronous.
mod reqwest {
    pub use ::reqwest::Certificate;

    pub fn blocking_client(
        ca: Certificate,
        domain: &str,
        addr: std::net::SocketAddr,
    ) -> impl Fn(&str) -> Result<(String, ::reqwest::header::HeaderMap), String> {
        let client = ::reqwest::Client::builder()
            .tls_certs_only([ca])
            .resolve(domain, addr)
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap();
        move |url: &str| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let response = client.get(url).send().await.map_err(|e| format!("{e:?}"))?;
                let headers = response.headers().clone();
                let body = response.text().await.map_err(|e| e.to_string())?;
                Ok((body, headers))
            })
        }
    }
}

/// The serial of the certificate Caddy serves for `domain`.
pub fn served_serial(caddy: &CaddyServer, domain: &str) -> String {
    try_served_serial(caddy, domain).unwrap()
}

/// The same, or why no handshake completed (Caddy resets connections while it reloads).
pub fn try_served_serial(caddy: &CaddyServer, domain: &str) -> Result<String, String> {
    let check = gatehouse_agent::host::caddy::ServedCheck {
        site: "test".into(),
        domain: domain.parse().unwrap(),
        port: caddy.https_port,
        serial: String::new(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(gatehouse_agent::host::caddy::served_serial(
        "127.0.0.1".parse().unwrap(),
        &check,
    ))
}
