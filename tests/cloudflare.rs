//! Sites on Cloudflare end to end: the controller against the Cloudflare emulator, a real agent
//! and a real Caddy. A host gets a name `agent-<10 characters>.<zone>`, a DNS record, a
//! certificate from the (emulated) Origin CA, and a Caddy site.

use std::time::Duration;

use gatehouse_testkit::caddy::{CaddyServer, Upstream};
use gatehouse_testkit::cloudflare::Emulator;
use gatehouse_testkit::gatehouse::{Agent, Controller};
use gatehouse_testkit::wait_for;
use serde_json::Value;

const TOKEN: &str = "cf-e2e-token-0123456789";

struct Setup {
    agent: Agent,
    caddy: CaddyServer,
    controller: Controller,
    emulator: Emulator,
    zone_id: String,
    id: String,
}

fn setup() -> Setup {
    let emulator = Emulator::start();
    emulator.add_token(TOKEN);
    let zone_id = emulator.add_zone("example.com");
    let controller = Controller::start("");
    let root = controller.dir.path().join("host");
    std::fs::create_dir_all(&root).unwrap();
    let caddy = CaddyServer::start(&root, "");
    let mut agent = controller.agent_with("host", &caddy.agent_toml());
    let id = agent.enroll(&controller);
    agent.run();
    agent.wait_status("connected", Duration::from_secs(20), |s| {
        s["connected"] == true
    });
    Setup {
        agent,
        caddy,
        controller,
        emulator,
        zone_id,
        id,
    }
}

impl Setup {
    /// The id of the zone example.com.
    fn controller_zone(&self) -> String {
        if !self.zone_id.is_empty() {
            return self.zone_id.clone();
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = reqwest::Client::new();
        let v: Value = rt.block_on(async {
            client
                .get(format!("{}/zones?name=example.com", self.emulator.api_url))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        });
        v["result"][0]["id"].as_str().unwrap().to_owned()
    }

    fn add_account(&self, token: &str) -> gatehouse_testkit::gatehouse::Run {
        self.controller
            .add_cloudflare_account("main", token, &self.emulator.api_url)
    }

    fn create(&self, upstream: &Upstream, extra: &[&str]) -> gatehouse_testkit::gatehouse::Run {
        let port = self.caddy.https_port.to_string();
        let up = upstream.address();
        let mut args = vec![
            "site",
            "create",
            "--agent",
            &self.id,
            "--zone",
            "example.com",
            "--address",
            "127.0.0.1",
            "--upstream",
            &up,
            "--port",
            &port,
            "--output",
            "json",
        ];
        args.extend(extra);
        self.controller.ctl(&args)
    }

    fn wait_applied(&self, name: &str) -> Value {
        wait_for("the site applied", Duration::from_secs(30), || {
            let v = self
                .controller
                .ctl_json(&["site", "show", "--agent", &self.id, name]);
            (v["state"] == "applied").then_some(v)
        })
    }
}

/// Resolves `name` through the emulator's authoritative DNS.
fn resolve(emulator: &Emulator, name: &str) -> Option<std::net::Ipv4Addr> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RData, RecordType};
    use std::str::FromStr;
    let mut m = Message::query();
    m.add_query(Query::query(
        Name::from_str(&format!("{name}.")).unwrap(),
        RecordType::A,
    ));
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket
        .send_to(&m.to_vec().unwrap(), emulator.dns_addr)
        .unwrap();
    let mut buf = [0u8; 2048];
    let n = socket.recv(&mut buf).ok()?;
    let answer = Message::from_vec(&buf[..n]).ok()?;
    answer.answers.iter().find_map(|r| match &r.data {
        RData::A(a) => Some(a.0),
        _ => None,
    })
}

/// An HTTPS GET to `name` (resolved through the emulator's DNS), trusting only `root_pem`.
fn get(emulator: &Emulator, root_pem: &str, name: &str, port: u16) -> Result<String, String> {
    let ip = resolve(emulator, name).ok_or("the name does not resolve")?;
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(root_pem.as_bytes()).unwrap()])
        .resolve(name, std::net::SocketAddr::new(ip.into(), port))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = client
            .get(format!("https://{name}:{port}/"))
            .send()
            .await
            .map_err(|e| format!("{e:?}"))?;
        r.text().await.map_err(|e| e.to_string())
    })
}

#[test]
fn a_proxied_site_gets_a_name_a_record_an_origin_certificate_and_serves() {
    let s = setup();
    assert!(s.add_account(TOKEN).success);
    let zones = s.controller.ctl_json(&["cloudflare", "zones"]);
    assert_eq!(zones[0]["name"], "example.com");
    let upstream = Upstream::start("behind cloudflare");

    let run = s.create(&upstream, &["--proxied"]);
    let created = run.json();
    let name = created["spec"]["name"].as_str().unwrap().to_owned();
    let fqdn = created["fqdn"].as_str().unwrap().to_owned();
    assert!(name.starts_with("agent-") && name.len() == 16, "{name}");
    assert!(
        name[6..]
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    );
    assert_eq!(fqdn, format!("{name}.example.com"));
    assert_eq!(created["cloudflare_state"], "ready");

    s.wait_applied(&name);
    let records = s.emulator.records(&s.zone_id);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(
        (
            records[0].kind.as_str(),
            records[0].name.as_str(),
            records[0].content.as_str()
        ),
        ("A", fqdn.as_str(), "127.0.0.1")
    );
    assert!(records[0].proxied);
    assert!(records[0].comment.as_deref().unwrap().contains(&s.id));
    // A client that trusts the Origin CA gets the page on the new name.
    assert_eq!(
        get(
            &s.emulator,
            &s.emulator.origin_ca_pem,
            &fqdn,
            s.caddy.https_port
        )
        .unwrap(),
        "behind cloudflare"
    );
    let certs = s.emulator.certificates();
    assert_eq!(certs.len(), 1);
    assert_eq!(certs[0].hostnames, vec![fqdn.clone()]);
    assert_eq!(certs[0].request_type, "origin-ecc");
    // The host is known by its new name.
    assert_eq!(s.controller.agent_view(&s.id)["domain"], fqdn.as_str());

    // Running it again changes nothing.
    let generation = s.controller.agent_view(&s.id)["desired_generation"].clone();
    let again = s.create(&upstream, &["--proxied"]).json();
    assert_eq!(again["spec"]["name"], name.as_str());
    assert_eq!(
        s.controller.agent_view(&s.id)["desired_generation"],
        generation
    );
    assert_eq!(s.emulator.records(&s.zone_id).len(), 1);
    assert_eq!(s.emulator.certificates().len(), 1);

    // Deleting it leaves nothing of it at Cloudflare or on the host.
    s.controller
        .ctl_json(&["site", "delete", "--agent", &s.id, &name, "--yes"]);
    assert!(s.emulator.records(&s.zone_id).is_empty());
    assert!(
        s.emulator
            .certificates()
            .iter()
            .all(|c| c.revoked_at.is_some())
    );
    let snippet = s
        .agent
        .root
        .join(format!("etc/caddy/gatehouse.d/{name}.caddy"));
    wait_for("the site gone from Caddy", Duration::from_secs(20), || {
        (!snippet.exists()).then_some(())
    });
    assert!(
        s.controller
            .ctl_json(&["site", "list", "--agent", &s.id])
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn names_that_exist_in_the_zone_are_never_taken() {
    let s = setup();
    assert!(s.add_account(TOKEN).success);
    s.emulator
        .add_record(&s.zone_id, "A", "agent-taken00000.example.com", "192.0.2.1");
    let upstream = Upstream::start("x");
    let run = s.create(&upstream, &["--name", "agent-taken00000"]);
    assert!(!run.success);
    assert!(
        run.stderr.contains("already has records in the zone"),
        "{}",
        run.stderr
    );
    assert_eq!(
        s.emulator.records(&s.zone_id).len(),
        1,
        "nothing was created"
    );
    assert_eq!(s.controller.agent_view(&s.id)["desired_generation"], 1);

    for i in 0..30 {
        s.emulator.add_record(
            &s.zone_id,
            "A",
            &format!("agent-{i:010}.example.com"),
            "192.0.2.1",
        );
    }
    let created = s.create(&upstream, &["--dns-only"]).json();
    let fqdn = created["fqdn"].as_str().unwrap();
    let before: Vec<_> = s
        .emulator
        .records(&s.zone_id)
        .into_iter()
        .filter(|r| r.name == fqdn)
        .collect();
    assert_eq!(before.len(), 1, "exactly the new record at the new name");
    assert!(!before[0].proxied, "DNS only");
}

#[test]
fn a_429_storm_and_5xx_bursts_are_ridden_out() {
    let s = setup();
    assert!(s.add_account(TOKEN).success);
    s.emulator.rate_limit_next(4, 1);
    s.emulator.fail_next(3, 502);
    let upstream = Upstream::start("patient");
    let created = s
        .create(&upstream, &["--proxied", "--address-v6", "2001:db8::5"])
        .json();
    assert_eq!(created["cloudflare_state"], "ready");
    let name = created["spec"]["name"].as_str().unwrap().to_owned();
    s.emulator.rate_limit_next(3, 1);
    s.wait_applied(&name);
    let mut kinds: Vec<(String, String)> = s
        .emulator
        .records(&s.zone_id)
        .into_iter()
        .map(|r| (r.kind, r.content))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ("A".to_owned(), "127.0.0.1".to_owned()),
            ("AAAA".to_owned(), "2001:db8::5".to_owned())
        ]
    );
    assert!(s.emulator.request_counts().1 >= 7, "the storms happened");
    let fqdn = created["fqdn"].as_str().unwrap();
    assert_eq!(
        get(
            &s.emulator,
            &s.emulator.origin_ca_pem,
            fqdn,
            s.caddy.https_port
        )
        .unwrap(),
        "patient"
    );
}

#[test]
fn a_bad_or_revoked_token_gives_a_clear_error_and_changes_nothing() {
    let s = setup();
    let run = s.add_account("not-the-token");
    assert!(!run.success);
    assert!(
        run.stderr.contains("Cloudflare refused the token")
            && run.stderr.contains("Invalid API Token"),
        "{}",
        run.stderr
    );
    assert!(
        s.controller
            .ctl_json(&["cloudflare", "account", "list"])
            .as_array()
            .unwrap()
            .is_empty()
    );

    assert!(s.add_account(TOKEN).success);
    let listed = s
        .controller
        .ctl_json(&["cloudflare", "account", "list"])
        .to_string();
    assert!(!listed.contains(TOKEN), "the token is never shown");
    let audit = s.controller.ctl_json(&["audit", "list"]).to_string();
    assert!(
        !audit.contains(TOKEN),
        "the token never reaches the audit log"
    );
    assert!(
        !s.controller.log().contains(TOKEN),
        "the token never reaches the log"
    );
    let db = std::fs::read(s.controller.data_dir.join("gatehouse.db")).unwrap();
    assert!(
        !String::from_utf8_lossy(&db).contains(TOKEN),
        "the token is sealed at rest"
    );

    s.emulator.revoke_token(TOKEN);
    let upstream = Upstream::start("x");
    let run = s.create(&upstream, &["--proxied"]);
    assert!(!run.success);
    assert!(
        run.stderr.contains("check the account's token"),
        "{}",
        run.stderr
    );
    assert!(s.emulator.records(&s.zone_id).is_empty());
    assert_eq!(s.controller.agent_view(&s.id)["desired_generation"], 1);
}

#[test]
fn a_dns_only_site_gets_its_certificate_from_pebble_through_caddy() {
    use gatehouse_testkit::pebble::{Pebble, PebbleOptions};
    let emulator = Emulator::start();
    emulator.add_token(TOKEN);
    emulator.add_zone("example.com");
    let pebble_port = gatehouse_testkit::free_port();
    let dir = tempfile::Builder::new()
        .prefix("gh-e2e-")
        .tempdir()
        .unwrap();
    let pebble_dir = dir.path().join("pebble");
    let ca_root = pebble_dir.join("listener-ca.pem");
    let controller = Controller::start_with(
        dir,
        &format!(
            "caddy_acme_ca = \"https://127.0.0.1:{pebble_port}/dir\"\ncaddy_acme_ca_root = {:?}\n",
            ca_root.display().to_string()
        ),
        None,
    );
    let root = controller.dir.path().join("host");
    std::fs::create_dir_all(&root).unwrap();
    let caddy = CaddyServer::start(&root, "");
    let pebble = Pebble::start(
        &pebble_dir,
        pebble_port,
        &PebbleOptions {
            http_port: caddy.http_port,
            tls_port: caddy.https_port,
            dns: emulator.dns_addr,
            validity: None,
            reject_nonces: false,
            eab: Vec::new(),
        },
    );
    let mut agent = controller.agent_with("host", &caddy.agent_toml());
    let id = agent.enroll(&controller);
    agent.run();
    let s = Setup {
        agent,
        caddy,
        controller,
        emulator,
        zone_id: String::new(),
        id,
    };
    assert!(s.add_account(TOKEN).success);
    let upstream = Upstream::start("validated by pebble");
    let created = s.create(&upstream, &["--dns-only"]).json();
    let name = created["spec"]["name"].as_str().unwrap().to_owned();
    let fqdn = created["fqdn"].as_str().unwrap().to_owned();
    assert_eq!(
        created["spec"]["tls"]["mode"]["caddy_managed"]["acme_ca"],
        format!("https://127.0.0.1:{pebble_port}/dir")
    );
    s.wait_applied(&name);

    // Pebble's issuing root, from its management API.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let management = reqwest::Client::builder()
        .tls_certs_only([
            reqwest::Certificate::from_pem(pebble.listener_ca_pem.as_bytes()).unwrap(),
        ])
        .build()
        .unwrap();
    let issuing_root = rt.block_on(async {
        management
            .get(format!("{}/roots/0", pebble.management_url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    let body = wait_for(
        "Caddy's certificate from Pebble",
        Duration::from_secs(90),
        || get(&s.emulator, &issuing_root, &fqdn, s.caddy.https_port).ok(),
    );
    assert_eq!(body, "validated by pebble");
    let record = s
        .emulator
        .records(&s.controller_zone())
        .into_iter()
        .find(|r| r.name == fqdn)
        .unwrap();
    assert!(!record.proxied, "DNS only");
}

#[test]
fn a_failure_midway_is_explained_and_a_retry_completes_it() {
    let s = setup();
    assert!(s.add_account(TOKEN).success);
    let upstream = Upstream::start("finished");
    s.emulator.fail_writes(1000);
    let run = s.create(&upstream, &["--name", "agent-midway0000", "--proxied"]);
    assert!(!run.success);
    assert!(
        run.stderr.contains("stopped at the A record")
            && run.stderr.contains("run the same command again"),
        "{}",
        run.stderr
    );
    let shown = s
        .controller
        .ctl_json(&["site", "show", "--agent", &s.id, "agent-midway0000"]);
    assert_eq!(shown["state"], "setting-up");
    assert!(
        shown["cloudflare_state"]
            .as_str()
            .unwrap()
            .starts_with("stopped at the A record"),
        "{shown}"
    );
    assert!(s.emulator.records(&s.zone_id).is_empty());

    s.emulator.fail_writes(0);
    let done = s
        .create(&upstream, &["--name", "agent-midway0000", "--proxied"])
        .json();
    assert_eq!(done["cloudflare_state"], "ready");
    s.wait_applied("agent-midway0000");
    assert_eq!(
        s.emulator.records(&s.zone_id).len(),
        1,
        "no duplicate record"
    );
    let fqdn = done["fqdn"].as_str().unwrap();
    assert_eq!(
        get(
            &s.emulator,
            &s.emulator.origin_ca_pem,
            fqdn,
            s.caddy.https_port
        )
        .unwrap(),
        "finished"
    );
}
