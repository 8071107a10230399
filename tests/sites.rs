//! Certificates and Caddy sites end to end, with a real Caddy: the key is made on the host,
//! the site serves through Caddy with the certificate the agent reports, and every apply is a
//! transaction.

use std::time::Duration;

use gatehouse_testkit::caddy::{CaddyServer, Upstream};
use gatehouse_testkit::gatehouse::{Agent, Controller};
use gatehouse_testkit::wait_for;
use serde_json::Value;

/// A controller, and an enrolled, running agent with its own Caddy.
struct Fleet {
    controller: Controller,
    agent: Agent,
    id: String,
    caddy: CaddyServer,
    user_block: String,
}

fn user_block(port: u16) -> String {
    format!("http://127.0.0.1:{port} {{\n\trespond \"the operator's own block\"\n}}\n")
}

fn fleet(controller_extra: &str) -> Fleet {
    let controller = Controller::start(controller_extra);
    let root = controller.dir.path().join("host");
    std::fs::create_dir_all(&root).unwrap();
    let user_block = user_block(gatehouse_testkit::free_port());
    let caddy = CaddyServer::start(&root, &user_block);
    let mut agent = controller.agent_with("host", &caddy.agent_toml());
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
    fn create_site(&self, domain: &str, upstream: &Upstream, extra: &[&str]) -> Value {
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

    fn wait_site(&self, name: &str, state: &str) -> Value {
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
    fn get(&self, domain: &str) -> Result<String, String> {
        let ca = reqwest::Certificate::from_pem(self.controller.site_ca().as_bytes()).unwrap();
        let addr = format!("127.0.0.1:{}", self.caddy.https_port)
            .parse()
            .unwrap();
        let client = reqwest::blocking_client(ca, domain, addr);
        client(&format!("https://{domain}:{}/", self.caddy.https_port))
    }
}

/// A tiny blocking wrapper: the tests are synchronous.
mod reqwest {
    pub use ::reqwest::Certificate;

    pub fn blocking_client(
        ca: Certificate,
        domain: &str,
        addr: std::net::SocketAddr,
    ) -> impl Fn(&str) -> Result<String, String> {
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
                response.text().await.map_err(|e| e.to_string())
            })
        }
    }
}

/// The serial of the certificate Caddy serves for `domain`.
fn served_serial(caddy: &CaddyServer, domain: &str) -> String {
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
    .unwrap()
}

#[test]
fn a_site_with_an_internal_certificate_serves_through_caddy() {
    let f = fleet("");
    let upstream = Upstream::start("hello from the upstream");
    let created = f.create_site(
        "www.example.test",
        &upstream,
        &["--header", "X-Served-By=gatehouse"],
    );
    assert_eq!(created["name"], "www-example-test");
    f.wait_site("www-example-test", "applied");
    let site = wait_for(
        "the certificate in the inventory",
        Duration::from_secs(10),
        || {
            let v = f
                .controller
                .ctl_json(&["site", "show", "--agent", &f.id, "www-example-test"]);
            (!v["certificate"].is_null()).then_some(v)
        },
    );

    assert_eq!(
        f.get("www.example.test").unwrap(),
        "hello from the upstream"
    );
    // The served certificate is the one the agent reports, made for a key on the host.
    let reported = site["certificate"]["serial"].as_str().unwrap().to_owned();
    assert!(!reported.is_empty(), "{site}");
    assert_eq!(served_serial(&f.caddy, "www.example.test"), reported);
    let key = std::path::PathBuf::from(site["certificate"]["path"].as_str().unwrap())
        .with_extension("key");
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(&key).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    if let Some((uid, _)) = gatehouse_testkit::caddy::caddy_user() {
        assert_eq!(meta.uid(), uid, "the key belongs to Caddy's user");
    }
    let dir = key.parent().unwrap();
    assert_eq!(
        std::fs::metadata(dir).unwrap().permissions().mode() & 0o777,
        0o700
    );

    // The Caddyfile gained one import line and kept the operator's own block.
    let caddyfile = std::fs::read_to_string(&f.caddy.caddyfile).unwrap();
    assert!(caddyfile.contains(&f.user_block), "{caddyfile}");
    assert_eq!(caddyfile.matches("import ").count(), 1, "{caddyfile}");
    let snippet = std::fs::read_to_string(
        f.agent
            .root
            .join("etc/caddy/gatehouse.d/www-example-test.caddy"),
    )
    .unwrap();
    assert!(snippet.contains("X-Served-By \"gatehouse\""), "{snippet}");

    // The status shows every item applied, and the inventory.
    let status = f.controller.ctl_json(&["agents", "status", &f.id]);
    let results = status["results"].as_array().unwrap();
    assert!(results.iter().all(|r| r["ok"] == true), "{status}");
    assert!(results.iter().any(|r| r["item"] == "site/www-example-test"));
    assert_eq!(status["certificates"][0]["serial"], reported.as_str());
}
