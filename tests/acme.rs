//! ACME end to end: the controller orders certificates from a real Pebble, answers DNS-01
//! through the Cloudflare emulator (whose DNS server Pebble asks), and a real agent installs
//! them into a real Caddy. The host's key never leaves the host. Renewals: tests/acme_renewal.rs.

#[path = "support/acme.rs"]
mod support;

use support::*;

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
