//! ACME renewals end to end: on schedule, inside the CA's ARI window as it moves, and a renewal
//! that cannot happen while the host is away, flagged and then done.

#[path = "support/acme.rs"]
mod support;

use support::*;

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
