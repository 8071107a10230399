//! ACME end to end: the controller orders certificates from a real Pebble, answers DNS-01
//! through the Cloudflare emulator (whose DNS server Pebble asks), and a real agent installs
//! them into a real Caddy. The host's key never leaves the host.

use std::time::Duration;

use gatehouse_testkit::caddy::{CaddyServer, Upstream};
use gatehouse_testkit::cloudflare::Emulator;
use gatehouse_testkit::gatehouse::{Agent, Controller, Run};
use gatehouse_testkit::pebble::{Pebble, PebbleOptions};
use gatehouse_testkit::wait_for;
use serde_json::Value;

const TOKEN: &str = "cf-acme-token-0123456789";

struct Setup {
    emulator: Emulator,
    zone_id: String,
    pebble: Pebble,
    controller: Controller,
    caddy: CaddyServer,
    _agent: Agent,
    id: String,
}

struct Options {
    eab: Vec<(String, String)>,
    /// Pebble asks this DNS server instead of the emulator's (a validation that must fail).
    pebble_dns: Option<std::net::SocketAddr>,
}

fn setup(options: Options) -> Setup {
    let emulator = Emulator::start();
    emulator.add_token(TOKEN);
    let zone_id = emulator.add_zone("example.com");
    let dir = tempfile::Builder::new()
        .prefix("gh-acme-")
        .tempdir()
        .unwrap();
    let controller = Controller::start_with(
        dir,
        &format!(
            "acme_dns_servers = [\"{}\"]\nacme_propagation_timeout = \"30s\"\n",
            emulator.dns_addr
        ),
        None,
    );
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
            validity: None,
            reject_nonces: true,
            eab: options.eab,
        },
    );
    let mut agent = controller.agent_with("host", &caddy.agent_toml());
    let id = agent.enroll(&controller);
    agent.run();
    let token_file = controller.dir.path().join("cf-token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let added = controller.ctl(&[
        "cloudflare",
        "account",
        "add",
        "--name",
        "main",
        "--token-file",
        token_file.to_str().unwrap(),
        "--api-url",
        &emulator.api_url,
    ]);
    assert!(added.success, "{}", added.stderr);
    Setup {
        emulator,
        zone_id,
        pebble,
        controller,
        caddy,
        _agent: agent,
        id,
    }
}

impl Setup {
    fn create_account(&self, extra: &[&str]) -> Run {
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

    fn site(&self, upstream: &Upstream, domains: &[&str]) -> Value {
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

    fn orders(&self) -> Vec<Value> {
        self.controller
            .ctl_json(&["cert", "list"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Pebble's issuing root, from its management API.
    fn issuing_root(&self) -> String {
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

    fn txt_records(&self) -> Vec<String> {
        self.emulator
            .records(&self.zone_id)
            .into_iter()
            .filter(|r| r.kind == "TXT")
            .map(|r| format!("{} {}", r.name, r.content))
            .collect()
    }
}

/// An HTTP client that trusts only `root_pem`.
fn trusting(root_pem: &str) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(root_pem.as_bytes()).unwrap()])
        .timeout(Duration::from_secs(10))
}

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// What Caddy serves for `name` on this host, trusting only `root_pem`.
fn get(root_pem: &str, name: &str, port: u16) -> Result<String, String> {
    let client = trusting(root_pem)
        .resolve(name, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .build()
        .unwrap();
    block_on(async {
        let r = client
            .get(format!("https://{name}:{port}/"))
            .send()
            .await
            .map_err(|e| format!("{e:?}"))?;
        r.text().await.map_err(|e| e.to_string())
    })
}

#[test]
fn single_name_and_wildcard_san_certificates_are_issued_and_served() {
    let s = setup(Options {
        eab: Vec::new(),
        pebble_dns: None,
    });
    let created = s.create_account(&[]);
    assert!(created.success, "{}", created.stderr);
    let listed = s.controller.ctl_json(&["acme", "account", "list"]);
    assert_eq!(listed[0]["name"], "pebble");
    assert_eq!(listed[0]["directory_url"], s.pebble.directory_url.as_str());

    let single = Upstream::start("single name");
    let wildcard = Upstream::start("wildcard and apex");
    let one = s.site(&single, &["app.example.com"]);
    let two = s.site(&wildcard, &["*.apps.example.com", "apps.example.com"]);
    assert_eq!(one["tls"], "files:app-example-com");
    let _ = two;

    let root = s.issuing_root();
    let body = wait_for(
        "Caddy serving the ACME certificate",
        Duration::from_secs(120),
        || get(&root, "app.example.com", s.caddy.https_port).ok(),
    );
    assert_eq!(body, "single name");
    for name in ["apps.example.com", "x.apps.example.com"] {
        let body = wait_for(name, Duration::from_secs(120), || {
            get(&root, name, s.caddy.https_port).ok()
        });
        assert_eq!(body, "wildcard and apex");
    }

    let orders = s.orders();
    assert_eq!(orders.len(), 2, "{orders:#?}");
    for o in &orders {
        assert_eq!(o["state"], "issued", "{o:#}");
        assert_eq!(o["agent_id"], s.id.as_str());
        assert_eq!(o["txt_records"], serde_json::json!([]));
        assert!(o["not_after"].as_i64().unwrap() > o["not_before"].as_i64().unwrap());
    }
    assert_eq!(
        s.txt_records(),
        Vec::<String>::new(),
        "DNS-01 records left behind"
    );
}
