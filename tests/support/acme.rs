//! The ACME test set-up shared by tests/acme.rs and tests/acme_renewal.rs: a real Pebble that
//! asks the Cloudflare emulator's DNS, a controller with an ACME account, and an agent with a
//! real Caddy.

// Each test file uses the part it needs.
#![allow(dead_code)]

pub use std::net::SocketAddr;
pub use std::time::Duration;

pub use gatehouse_testkit::caddy::{CaddyServer, Upstream};
pub use gatehouse_testkit::cloudflare::Emulator;
pub use gatehouse_testkit::gatehouse::{Agent, Controller, Run};
pub use gatehouse_testkit::pebble::{Pebble, PebbleOptions};
pub use gatehouse_testkit::wait_for;
pub use serde_json::Value;

pub const TOKEN: &str = "cf-acme-token-0123456789";

pub struct Setup {
    pub emulator: Emulator,
    pub zone_id: String,
    pub pebble: Pebble,
    pub controller: Controller,
    pub caddy: CaddyServer,
    pub agent: Agent,
    pub id: String,
    /// The second controller, with `Options::postgres`.
    pub second: Option<Controller>,
}

#[derive(Default)]
pub struct Options {
    pub eab: Vec<(String, String)>,
    /// Pebble asks this DNS server instead of the emulator's (a validation that must fail).
    pub pebble_dns: Option<SocketAddr>,
    /// The controller checks propagation here instead of at the emulator.
    pub check_dns: Option<SocketAddr>,
    /// Pebble's certificate lifetime in seconds.
    pub validity: Option<u64>,
    /// Run the controller on this PostgreSQL, with a second controller beside it on the same
    /// database (checking propagation at the emulator) that the agent also knows.
    pub postgres: Option<String>,
}

pub fn setup(options: Options) -> Setup {
    let emulator = Emulator::start();
    emulator.add_token(TOKEN);
    let zone_id = emulator.add_zone("example.com");
    let dir = tempfile::Builder::new()
        .prefix("gh-acme-")
        .tempdir()
        .unwrap();
    let acme_extra = |dns: SocketAddr| {
        format!("acme_dns_servers = [\"{dns}\"]\nacme_propagation_timeout = \"30s\"\n")
    };
    let database = options.postgres.as_deref();
    let controller = Controller::start_with(
        dir,
        &acme_extra(options.check_dns.unwrap_or(emulator.dns_addr)),
        database,
    );
    // The second shares the store and the key that seals the CA's.
    let second = database.map(|db| {
        let dir = tempfile::Builder::new()
            .prefix("gh-acme-")
            .tempdir()
            .unwrap();
        let extra = format!(
            "{}master_key_file = {:?}\n",
            acme_extra(emulator.dns_addr),
            controller.data_dir.join("master.key")
        );
        Controller::start_with(dir, &extra, Some(db))
    });
    let root = controller.dir.path().join("host");
    std::fs::create_dir_all(&root).unwrap();
    let caddy = CaddyServer::start(&root, "");
    let pebble = Pebble::start(
        &controller.dir.path().join("pebble"),
        0,
        &PebbleOptions {
            http_port: gatehouse_testkit::free_port(),
            tls_port: gatehouse_testkit::free_port(),
            dns: options.pebble_dns.unwrap_or(emulator.dns_addr),
            validity: options.validity,
            reject_nonces: true,
            eab: options.eab,
        },
    );
    let others = second
        .as_ref()
        .map(|b| format!("controllers = [{:?}]\n", b.agent_url()))
        .unwrap_or_default();
    let mut agent = controller.agent_with("host", &format!("{others}{}", caddy.agent_toml()));
    let id = agent.enroll(&controller);
    agent.run();
    let added = controller.add_cloudflare_account("main", TOKEN, &emulator.api_url);
    assert!(added.success, "{}", added.stderr);
    Setup {
        emulator,
        zone_id,
        pebble,
        controller,
        caddy,
        agent,
        id,
        second,
    }
}

impl Setup {
    pub fn create_account(&self, extra: &[&str]) -> Run {
        let mut args = vec![
            "acme",
            "account",
            "create",
            "--name",
            "pebble",
            "--ca",
            &self.pebble.directory_url,
            "--email",
            "ops@example.com",
            "--agree-tos",
            "--ca-roots",
            self.pebble.listener_ca_file.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        self.controller.ctl(&args)
    }

    pub fn site(&self, upstream: &Upstream, domains: &[&str]) -> Value {
        let port = self.caddy.https_port.to_string();
        let up = upstream.address();
        let mut args = vec![
            "site",
            "create",
            "--agent",
            &self.id,
            "--upstream",
            &up,
            "--port",
            &port,
            "--tls",
            "acme:pebble",
            "--output",
            "json",
        ];
        for d in domains {
            args.extend_from_slice(&["--domain", d]);
        }
        let run = self.controller.ctl(&args);
        assert!(run.success, "{}", run.stderr);
        run.json()
    }

    pub fn order_where(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        wait_for(what, Duration::from_secs(60), || {
            self.orders().into_iter().find(|o| check(o))
        })
    }

    /// The controller's /metrics.
    pub fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.controller.http_port);
        block_on(async { reqwest::get(url).await.unwrap().text().await.unwrap() })
    }

    pub fn orders(&self) -> Vec<Value> {
        self.controller
            .ctl_json(&["cert", "list"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Pebble's issuing root, from its management API.
    pub fn issuing_root(&self) -> String {
        let client = trusting(&self.pebble.listener_ca_pem).build().unwrap();
        block_on(async {
            client
                .get(format!("{}/roots/0", self.pebble.management_url))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        })
    }

    pub fn txt_records(&self) -> Vec<String> {
        self.emulator
            .records(&self.zone_id)
            .into_iter()
            .filter(|r| r.kind == "TXT")
            .map(|r| format!("{} {}", r.name, r.content))
            .collect()
    }
}

/// An HTTP client that trusts only `root_pem`.
pub fn trusting(root_pem: &str) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(root_pem.as_bytes()).unwrap()])
        .timeout(Duration::from_secs(10))
}

pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// What Caddy on this host serves for `name` (trusting only `root_pem`): the body, and the
/// serial (lowercase hex) of the certificate it served.
pub fn fetch(root_pem: &str, name: &str, port: u16) -> Result<(String, String), String> {
    let client = trusting(root_pem)
        .tls_info(true)
        .resolve(name, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .build()
        .unwrap();
    block_on(async {
        let r = client
            .get(format!("https://{name}:{port}/"))
            .send()
            .await
            .map_err(|e| format!("{e:?}"))?;
        let der = r
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|t| t.peer_certificate())
            .ok_or("no peer certificate")?
            .to_vec();
        let serial = gatehouse_agent::pki::CertInfo::from_der(&der)
            .map(|c| c.serial)
            .map_err(|e| e.to_string())?;
        Ok((r.text().await.map_err(|e| e.to_string())?, serial))
    })
}

pub fn get(root_pem: &str, name: &str, port: u16) -> Result<String, String> {
    fetch(root_pem, name, port).map(|(body, _)| body)
}

pub fn served_serial(root_pem: &str, name: &str, port: u16) -> Result<String, String> {
    fetch(root_pem, name, port).map(|(_, serial)| serial)
}
