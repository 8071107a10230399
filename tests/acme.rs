//! ACME end to end: the controller orders certificates from a real Pebble, answers DNS-01
//! through the Cloudflare emulator (whose DNS server Pebble asks), and a real agent installs
//! them into a real Caddy. The host's key never leaves the host.

use std::net::SocketAddr;
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
    agent: Agent,
    id: String,
}

#[derive(Default)]
struct Options {
    eab: Vec<(String, String)>,
    /// Pebble asks this DNS server instead of the emulator's (a validation that must fail).
    pebble_dns: Option<SocketAddr>,
    /// The controller checks propagation here instead of at the emulator.
    check_dns: Option<SocketAddr>,
    /// Pebble's certificate lifetime in seconds.
    validity: Option<u64>,
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
            options.check_dns.unwrap_or(emulator.dns_addr)
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
            validity: options.validity,
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
        agent,
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

    fn order_where(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        wait_for(what, Duration::from_secs(60), || {
            self.orders().into_iter().find(|o| check(o))
        })
    }

    /// The controller's /metrics.
    fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.controller.http_port);
        block_on(async { reqwest::get(url).await.unwrap().text().await.unwrap() })
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

/// What Caddy on this host serves for `name` (trusting only `root_pem`): the body, and the
/// serial (lowercase hex) of the certificate it served.
fn fetch(root_pem: &str, name: &str, port: u16) -> Result<(String, String), String> {
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

fn get(root_pem: &str, name: &str, port: u16) -> Result<String, String> {
    fetch(root_pem, name, port).map(|(body, _)| body)
}

fn served_serial(root_pem: &str, name: &str, port: u16) -> Result<String, String> {
    fetch(root_pem, name, port).map(|(_, serial)| serial)
}

#[test]
fn single_name_and_wildcard_san_certificates_are_issued_and_served() {
    let s = setup(Options::default());
    let created = s.create_account(&[]);
    assert!(created.success, "{}", created.stderr);
    let listed = s.controller.ctl_json(&["acme", "account", "list"]);
    assert_eq!(listed[0]["name"], "pebble");
    assert_eq!(listed[0]["directory_url"], s.pebble.directory_url.as_str());

    let single = Upstream::start("single name");
    let wildcard = Upstream::start("wildcard and apex");
    let one = s.site(&single, &["app.example.com"]);
    let two = s.site(&wildcard, &["*.apps.example.com", "apps.example.com"]);
    assert_eq!(one["spec"]["tls"]["mode"]["certificate"], "app-example-com");
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

#[test]
fn eab_is_required_and_a_wrong_key_fails_clearly() {
    let hmac = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    let s = setup(Options {
        eab: vec![("kid-1".into(), hmac.into())],
        ..Options::default()
    });
    let without = s.create_account(&[]);
    assert!(!without.success);
    assert!(
        without.stderr.contains("requires External Account Binding"),
        "{}",
        without.stderr
    );

    let wrong_file = s.controller.dir.path().join("wrong-hmac");
    std::fs::write(
        &wrong_file,
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n",
    )
    .unwrap();
    let wrong = s.create_account(&[
        "--eab-kid",
        "kid-1",
        "--eab-hmac-file",
        wrong_file.to_str().unwrap(),
    ]);
    assert!(!wrong.success);
    assert!(
        wrong
            .stderr
            .contains("refused the External Account Binding"),
        "{}",
        wrong.stderr
    );
    let not_base64 = s.controller.dir.path().join("bad-hmac");
    std::fs::write(&not_base64, "not base64!").unwrap();
    let bad = s.create_account(&[
        "--eab-kid",
        "kid-1",
        "--eab-hmac-file",
        not_base64.to_str().unwrap(),
    ]);
    assert!(!bad.success);
    assert!(bad.stderr.contains("base64url"), "{}", bad.stderr);
    assert_eq!(
        s.controller.ctl_json(&["acme", "account", "list"]),
        serde_json::json!([]),
        "failed attempts store nothing"
    );

    let right_file = s.controller.dir.path().join("hmac");
    std::fs::write(&right_file, format!("{hmac}\n")).unwrap();
    let right = s.create_account(&[
        "--eab-kid",
        "kid-1",
        "--eab-hmac-file",
        right_file.to_str().unwrap(),
    ]);
    assert!(right.success, "{}", right.stderr);
    assert!(
        right.stdout.contains("bound to EAB key kid-1"),
        "{}",
        right.stdout
    );
    let db = std::fs::read(s.controller.data_dir.join("gatehouse.db")).unwrap();
    assert!(
        !db.windows(hmac.len()).any(|w| w == hmac.as_bytes()),
        "the EAB HMAC is stored in the clear"
    );

    // The bound account issues.
    let upstream = Upstream::start("bound");
    s.site(&upstream, &["eab.example.com"]);
    let root = s.issuing_root();
    let body = wait_for(
        "the certificate from the EAB account",
        Duration::from_secs(120),
        || get(&root, "eab.example.com", s.caddy.https_port).ok(),
    );
    assert_eq!(body, "bound");
}

#[test]
fn a_validation_that_cannot_succeed_fails_with_the_reason_and_leaves_no_txt_record() {
    // Pebble asks a DNS server that does not hold the zone: its lookups can never succeed.
    let elsewhere = Emulator::start();
    let s = setup(Options {
        pebble_dns: Some(elsewhere.dns_addr),
        ..Options::default()
    });
    assert!(s.create_account(&[]).success);
    let upstream = Upstream::start("never");
    s.site(&upstream, &["nope.example.com"]);
    let failed = s.order_where("the order to fail", |o| o["state"] == "failed");
    let error = failed["last_error"].as_str().unwrap();
    assert!(error.contains("validation failed"), "{error}");
    assert!(error.contains("nope.example.com"), "{error}");
    assert_eq!(failed["failures"], 1);
    assert!(failed["next_attempt_at"].as_i64().unwrap() > failed["updated_at"].as_i64().unwrap());
    assert_eq!(failed["txt_records"], serde_json::json!([]));
    assert_eq!(
        s.txt_records(),
        Vec::<String>::new(),
        "DNS-01 records left behind"
    );

    // The reason reaches the host's status, and cert show explains the backoff.
    let id = failed["id"].as_str().unwrap().to_owned();
    let shown = s.controller.ctl(&["cert", "show", &id]);
    assert!(shown.stdout.contains("last error:"), "{}", shown.stdout);
    assert!(shown.stdout.contains("next attempt:"), "{}", shown.stdout);

    // A retry starts at once (a new TXT record is published and deleted) and fails again.
    let (requests_before, _) = s.emulator.request_counts();
    let retried = s.controller.ctl(&["cert", "retry", &id]);
    assert!(retried.success, "{}", retried.stderr);
    wait_for("the retry's DNS-01 record", Duration::from_secs(60), || {
        // Zones, the record lookup, its creation and its deletion.
        (s.emulator.request_counts().0 >= requests_before + 4).then_some(())
    });
    let again = s.order_where("the retried order to fail again", |o| {
        o["state"] == "failed" && o["failures"] == 1
    });
    assert_eq!(again["id"], id.as_str());
    assert_eq!(s.txt_records(), Vec::<String>::new());
}

#[test]
fn a_controller_killed_mid_order_resumes_and_finishes_leaving_no_txt_records() {
    // The controller checks propagation at a port where nothing answers, so the order waits in
    // `presenting` with its TXT record published; then it is killed.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    drop(silent);
    let mut s = setup(Options {
        check_dns: Some(silent_addr),
        ..Options::default()
    });
    assert!(s.create_account(&[]).success);
    let upstream = Upstream::start("resumed");
    s.site(&upstream, &["resume.example.com"]);
    s.order_where("the order presenting its record", |o| {
        o["state"] == "presenting" && o["txt_records"].as_array().is_some_and(|t| !t.is_empty())
    });
    assert_eq!(s.txt_records().len(), 1, "{:?}", s.txt_records());
    s.controller.kill();

    let config = std::fs::read_to_string(&s.controller.config).unwrap();
    std::fs::write(
        &s.controller.config,
        config.replace(&silent_addr.to_string(), &s.emulator.dns_addr.to_string()),
    )
    .unwrap();
    s.controller.start_again();
    let root = s.issuing_root();
    let body = wait_for(
        "the resumed order's certificate served",
        Duration::from_secs(120),
        || get(&root, "resume.example.com", s.caddy.https_port).ok(),
    );
    assert_eq!(body, "resumed");
    let orders = s.orders();
    assert_eq!(orders.len(), 1, "{orders:#?}");
    assert_eq!(orders[0]["state"], "issued");
    assert_eq!(orders[0]["failures"], 0);
    assert_eq!(
        s.txt_records(),
        Vec::<String>::new(),
        "DNS-01 records left behind"
    );
}

#[test]
fn short_lived_certificates_renew_on_schedule_and_the_new_one_is_served() {
    // 40-second certificates renew half-way through their life, with no manual step.
    let s = setup(Options {
        validity: Some(40),
        ..Options::default()
    });
    assert!(s.create_account(&[]).success);
    let upstream = Upstream::start("renewing");
    s.site(&upstream, &["renew.example.com"]);
    let root = s.issuing_root();
    let first = s.order_where("the first certificate", |o| o["state"] == "issued");
    let first_serial = first["serial"].as_str().unwrap().to_owned();
    wait_for(
        "the first certificate served",
        Duration::from_secs(60),
        || {
            served_serial(&root, "renew.example.com", s.caddy.https_port)
                .ok()
                .filter(|serial| *serial == first_serial)
        },
    );

    let renewed = s.order_where("the renewed certificate", |o| {
        o["state"] == "issued" && o["revision"].as_u64() > first["revision"].as_u64()
    });
    let renewed_serial = renewed["serial"].as_str().unwrap().to_owned();
    assert_ne!(renewed_serial, first_serial);
    let lifetime = first["not_after"].as_i64().unwrap() - first["not_before"].as_i64().unwrap();
    let started = renewed["created_at"].as_i64().unwrap();
    let half_way = first["not_before"].as_i64().unwrap() + lifetime / 2;
    assert!(
        (half_way..half_way + 15).contains(&started),
        "renewal started at {started}, half-way is {half_way}"
    );
    wait_for(
        "the renewed certificate served",
        Duration::from_secs(60),
        || {
            served_serial(&root, "renew.example.com", s.caddy.https_port)
                .ok()
                .filter(|serial| *serial == renewed_serial)
        },
    );
    assert_eq!(s.txt_records(), Vec::<String>::new());
}

#[test]
fn a_certificate_whose_renewal_cannot_happen_is_flagged_then_renews_when_the_host_is_back() {
    let mut s = setup(Options {
        validity: Some(30),
        ..Options::default()
    });
    assert!(s.create_account(&[]).success);
    let upstream = Upstream::start("flagged");
    s.site(&upstream, &["late.example.com"]);
    // Issued, then scheduled by the lifetime rule (no ARI at Pebble).
    let first = s.order_where("the first certificate, scheduled", |o| {
        o["state"] == "issued" && o["renewal"] == "lifetime"
    });
    assert_eq!(first["renewal_overdue"], false);
    let listed = s.controller.ctl(&["cert", "list"]);
    assert!(listed.stdout.contains("renews "), "{}", listed.stdout);

    // The host goes away: the renewal starts at half-way but cannot finish.
    s.agent.kill();
    let overdue = s.order_where("the certificate flagged in its last third", |o| {
        o["id"] == first["id"] && o["renewal_overdue"] == true
    });
    assert_eq!(overdue["superseded"], true, "the renewal was started");
    let listed = s.controller.ctl(&["cert", "list"]);
    assert!(
        listed.stdout.contains("RENEWAL OVERDUE"),
        "{}",
        listed.stdout
    );
    let gauge = format!(
        "gatehouse_certificate_renewal_overdue{{agent=\"{}\",certificate=\"late-example-com\"}}",
        s.id
    );
    let metrics = s.metrics();
    assert!(metrics.contains(&format!("{gauge} 1")), "{metrics}");

    // Back again: it asks for the new revision, gets it, and the flag goes.
    s.agent.run();
    s.order_where("the renewed certificate", |o| {
        o["state"] == "issued" && o["revision"].as_u64() > first["revision"].as_u64()
    });
    let old = s
        .orders()
        .into_iter()
        .find(|o| o["id"] == first["id"])
        .unwrap();
    assert_eq!(old["renewal_overdue"], false);
    let metrics = s.metrics();
    assert!(metrics.contains(&format!("{gauge} 0")), "{metrics}");
}

#[test]
fn a_certificate_bound_to_two_hosts_reaches_each_with_its_own_key_and_can_be_revoked() {
    let s = setup(Options::default());
    assert!(s.create_account(&[]).success);
    let mut second = s
        .controller
        .agent_with("second", "[caddy]\nenabled = false\n");
    let second_id = second.enroll(&s.controller);
    second.run();
    let requested = s.controller.ctl(&[
        "cert",
        "request",
        "--name",
        "shared",
        "--domain",
        "shared.example.com",
        "--domain",
        "*.shared.example.com",
        "--account",
        "pebble",
        "--agent",
        &s.id,
        "--agent",
        &second_id,
    ]);
    assert!(requested.success, "{}", requested.stderr);

    // One order per host: each host's own CSR, so each gets its own certificate.
    let issued_for = |id: &str| {
        let id = id.to_owned();
        s.order_where("the host's certificate", move |o| {
            o["agent_id"] == id.as_str() && o["state"] == "issued"
        })
    };
    let first = issued_for(&s.id);
    let other = issued_for(&second_id);
    assert_ne!(first["serial"], other["serial"]);
    for (agent, order) in [(&s.id, &first), (&second_id, &other)] {
        let installed = wait_for("the certificate installed", Duration::from_secs(30), || {
            let status = s.controller.ctl_json(&["agents", "status", agent]);
            status["certificates"]
                .as_array()?
                .iter()
                .find(|c| c["name"] == "shared" && c["serial"] == order["serial"])
                .cloned()
        });
        assert_eq!(
            installed["domains"],
            serde_json::json!(["shared.example.com", "*.shared.example.com"])
        );
    }

    // Revoked at the CA; the host gets a new revision at once.
    let id = first["id"].as_str().unwrap();
    let revoked = s
        .controller
        .ctl(&["cert", "revoke", id, "--reason", "key-compromise"]);
    assert!(revoked.success, "{}", revoked.stderr);
    let again = s.controller.ctl(&["cert", "revoke", id]);
    assert!(!again.success);
    assert!(
        again.stderr.contains("only an issued certificate"),
        "{}",
        again.stderr
    );
    let shown = s.controller.ctl_json(&["cert", "show", id]);
    assert_eq!(shown["state"], "revoked");
    let replacement = s.order_where("the replacement", |o| {
        o["agent_id"] == s.id.as_str()
            && o["state"] == "issued"
            && o["revision"].as_u64() > first["revision"].as_u64()
    });
    assert_ne!(replacement["serial"], first["serial"]);
    let bad = s.controller.ctl(&[
        "cert",
        "request",
        "--name",
        "x",
        "--domain",
        "x.example.com",
        "--account",
        "nobody",
        "--agent",
        &s.id,
    ]);
    assert!(!bad.success);
    assert!(
        bad.stderr.contains("no ACME account nobody"),
        "{}",
        bad.stderr
    );
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn the_cas_renewal_window_is_followed_when_it_moves() {
    use base64::Engine;
    use gatehouse_testkit::ari::AriResponder;
    let s = setup(Options::default());
    let ari = AriResponder::start(&s.pebble.directory_url, &s.pebble.listener_ca_pem);
    let t = unix_now();
    // A window an hour away; ask again in 3 s (the controller waits at least 10).
    ari.set_window(t + 3600, t + 7200, 3);
    let created = s.controller.ctl(&[
        "acme",
        "account",
        "create",
        "--name",
        "pebble",
        "--ca",
        &ari.directory_url,
        "--agree-tos",
        "--ca-roots",
        s.pebble.listener_ca_file.to_str().unwrap(),
    ]);
    assert!(created.success, "{}", created.stderr);
    let upstream = Upstream::start("ari");
    s.site(&upstream, &["ari.example.com"]);
    let first = s.order_where("the certificate, scheduled by ARI", |o| {
        o["state"] == "issued" && o["renewal"] == "ari"
    });
    let renew_at = first["renew_at"].as_i64().unwrap();
    assert!(
        (t + 3600..=t + 7200).contains(&renew_at),
        "renew_at {renew_at} is outside the CA's window"
    );
    // The query named this certificate: <AKI>.<serial>, base64url.
    let asked = ari.asked();
    let id = asked
        .last()
        .expect("the controller asked for renewal information");
    let (_, serial) = id.split_once('.').expect("AKI.serial");
    let serial = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(serial)
        .unwrap();
    assert_eq!(hex::encode(serial), first["serial"].as_str().unwrap());

    // The CA moves the window to now (as after a mass revocation): the controller sees it at
    // its next check and renews inside the new window.
    let moved = unix_now();
    ari.set_window(moved, moved + 20, 3600);
    let renewed = s.order_where("the renewal in the moved window", |o| {
        o["state"] == "issued" && o["revision"].as_u64() > first["revision"].as_u64()
    });
    let started = renewed["created_at"].as_i64().unwrap();
    assert!(
        (moved..=moved + 30).contains(&started),
        "renewal started at {started}, the window moved at {moved}"
    );
    assert!(ari.asked().len() >= 2, "Retry-After was not followed");
}

#[test]
fn a_host_named_in_a_cloudflare_zone_gets_its_certificate_by_the_controllers_acme() {
    let s = setup(Options::default());
    assert!(s.create_account(&[]).success);
    let upstream = Upstream::start("named and certified");
    let port = s.caddy.https_port.to_string();
    let up = upstream.address();
    let run = s.controller.ctl(&[
        "site",
        "create",
        "--agent",
        &s.id,
        "--zone",
        "example.com",
        "--dns-only",
        "--address",
        "127.0.0.1",
        "--upstream",
        &up,
        "--port",
        &port,
        "--tls",
        "acme:pebble",
        "--output",
        "json",
    ]);
    assert!(run.success, "{}", run.stderr);
    let created = run.json();
    let fqdn = created["fqdn"].as_str().unwrap().to_owned();
    let name = created["spec"]["name"].as_str().unwrap();
    assert!(
        fqdn.starts_with("agent-") && fqdn.ends_with(".example.com"),
        "{fqdn}"
    );
    assert_eq!(created["spec"]["tls"]["mode"]["certificate"], name);
    let root = s.issuing_root();
    let body = wait_for("the zone name served", Duration::from_secs(120), || {
        get(&root, &fqdn, s.caddy.https_port).ok()
    });
    assert_eq!(body, "named and certified");
    let records = s.emulator.records(&s.zone_id);
    assert!(
        records
            .iter()
            .any(|r| r.name == fqdn && r.kind == "A" && r.content == "127.0.0.1"),
        "{records:?}"
    );
    let order = s.order_where("the order", |o| o["state"] == "issued");
    assert_eq!(order["domains"], serde_json::json!([fqdn]));
    assert_eq!(s.txt_records(), Vec::<String>::new());
}

#[test]
fn an_agent_restarted_mid_order_keeps_its_key_and_the_order_goes_on() {
    use std::os::unix::fs::PermissionsExt;
    // The order waits in `presenting` (propagation is checked where nothing answers) while the
    // host restarts.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    drop(silent);
    let mut s = setup(Options {
        check_dns: Some(silent_addr),
        ..Options::default()
    });
    assert!(s.create_account(&[]).success);
    let upstream = Upstream::start("same key");
    s.site(&upstream, &["samekey.example.com"]);
    let waiting = s.order_where("the order presenting", |o| o["state"] == "presenting");
    let pending = s.agent.paths().state_dir.join("pending-keys.json");
    let mode = std::fs::metadata(&pending).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "pending keys must be private");
    s.agent.kill();
    s.agent.run();
    s.agent
        .wait_status("reconnected", Duration::from_secs(30), |st| {
            st["connected"] == true
        });

    // Let the order finish: the host installs it with the key it made before the restart.
    s.controller.kill();
    let config = std::fs::read_to_string(&s.controller.config).unwrap();
    std::fs::write(
        &s.controller.config,
        config.replace(&silent_addr.to_string(), &s.emulator.dns_addr.to_string()),
    )
    .unwrap();
    s.controller.start_again();
    let root = s.issuing_root();
    let body = wait_for("the certificate served", Duration::from_secs(120), || {
        get(&root, "samekey.example.com", s.caddy.https_port).ok()
    });
    assert_eq!(body, "same key");
    let orders = s.orders();
    assert_eq!(orders.len(), 1, "{orders:#?}");
    assert_eq!(
        orders[0]["id"], waiting["id"],
        "the restart started a new order"
    );
    assert!(
        !pending.exists(),
        "the pending key stays after its certificate came"
    );
}

#[test]
fn a_hundred_certificates_requested_at_once_all_reach_the_host_and_a_later_change_applies() {
    let s = setup(Options::default());
    assert!(s.create_account(&[]).success);
    let started = std::time::Instant::now();
    let names: Vec<String> = (0..100).map(|i| format!("b{i}")).collect();
    // 100 `cert request` calls in about the time the CLI takes, 10 at a time.
    std::thread::scope(|scope| {
        for chunk in names.chunks(10) {
            let s = &s;
            scope.spawn(move || {
                for name in chunk {
                    let domain = format!("{name}.example.com");
                    let run = s.controller.ctl(&[
                        "cert",
                        "request",
                        "--name",
                        name,
                        "--domain",
                        &domain,
                        "--account",
                        "pebble",
                        "--agent",
                        &s.id,
                    ]);
                    assert!(run.success, "cert request {name}: {}", run.stderr);
                }
            });
        }
    });
    wait_for(
        "100 certificates on the host",
        Duration::from_secs(240),
        || {
            let status = s.controller.ctl_json(&["agents", "status", &s.id]);
            let installed = status["certificates"].as_array().map_or(0, Vec::len);
            (installed == 100).then_some(())
        },
    );
    eprintln!("100 ACME certificates installed in {:?}", started.elapsed());
    let labelled = s
        .controller
        .ctl_json(&["agents", "label", &s.id, "after=burst"]);
    let generation = labelled["desired_generation"].clone();
    s.agent
        .wait_status("the label change applied", Duration::from_secs(30), |st| {
            st["applied_generation"] == generation && st["connected"] == true
        });
    // Every order issued once; no TXT record left behind.
    let issued = s.orders().iter().filter(|o| o["state"] == "issued").count();
    assert_eq!(issued, 100);
    wait_for(
        "the TXT records cleaned up",
        Duration::from_secs(30),
        || s.txt_records().is_empty().then_some(()),
    );
}
