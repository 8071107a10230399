//! Allowlists through `gatehousectl` and the real controller: a list, its devices and a fixed
//! entry; check-ins over HTTP as a cron job's `curl` would send them; every change audited.

use std::time::Duration;

use gatehouse_testkit::gatehouse::Controller;

fn checkin(controller: &Controller, source: &str, token: &str) -> (u16, serde_json::Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::Client::builder()
            .local_address(source.parse::<std::net::IpAddr>().unwrap())
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
            .post(format!(
                "http://127.0.0.1:{}/v1/allowlist/checkin",
                controller.http_port
            ))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    })
}

#[test]
fn devices_check_in_and_the_list_shows_who_from_where_until_when() {
    let controller = Controller::start("");
    let ok = |args: &[&str]| {
        let run = controller.ctl(args);
        assert!(run.success, "{args:?}: {}{}", run.stdout, run.stderr);
        run
    };
    ok(&[
        "allowlist",
        "create",
        "home",
        "--ttl",
        "2h",
        "--allow-private",
    ]);
    let phone = ok(&["allowlist", "device", "add", "home", "--name", "phone"]);
    let token = phone.stdout.trim().to_owned();
    assert!(token.starts_with("ghd_"), "{token}");
    assert!(phone.stderr.contains("curl"), "the check-in is explained");
    let desk = controller.ctl_json(&["allowlist", "device", "add", "home", "--name", "desk"]);
    let desk_token = desk["token"].as_str().unwrap().to_owned();
    ok(&[
        "allowlist",
        "entry",
        "add",
        "home",
        "198.51.100.7/24",
        "--comment",
        "office",
    ]);

    let (status, body) = checkin(&controller, "127.0.0.2", &token);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["address"], "127.0.0.2/32");
    assert_eq!(checkin(&controller, "127.0.0.3", &desk_token).0, 200);
    assert_eq!(checkin(&controller, "127.0.0.3", "ghd_nope").0, 401);

    let shown = controller.ctl_json(&["allowlist", "show", "home"]);
    let entries: Vec<&str> = shown["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["cidr"].as_str().unwrap())
        .collect();
    assert_eq!(entries, ["127.0.0.2/32", "127.0.0.3/32", "198.51.100.0/24"]);
    let phone_entry = &shown["entries"][0];
    assert_eq!(phone_entry["devices"][0]["device"], "phone");
    assert!(phone_entry["expires_at"].as_i64().unwrap() > gatehouse_agent::now_unix());
    let text = ok(&["allowlist", "show", "home"]).stdout;
    assert!(
        text.contains("127.0.0.2/32") && text.contains("phone") && text.contains("fixed: office"),
        "{text}"
    );
    assert!(!text.contains(&token), "the token is shown once only");

    // A revoked device goes at once; the token no longer works.
    ok(&["allowlist", "device", "revoke", "home", "--name", "phone"]);
    let after = controller.ctl_json(&["allowlist", "show", "home"]);
    assert!(!after.to_string().contains("127.0.0.2/32"), "{after}");
    assert_eq!(checkin(&controller, "127.0.0.2", &token).0, 401);
    ok(&["allowlist", "entry", "remove", "home", "198.51.100.0/24"]);

    // Names are checked before anything is sent, and every change is audited.
    let bad = controller.ctl(&["allowlist", "create", "Bad;Name"]);
    assert!(
        !bad.success && bad.stderr.contains("name"),
        "{}",
        bad.stderr
    );
    let audit = controller.ctl_json(&["audit", "list"]).to_string();
    for action in [
        "allowlist.create",
        "allowlist.device.add",
        "allowlist.entry.add",
        "allowlist.device.revoke",
        "allowlist.entry.remove",
    ] {
        assert!(audit.contains(action), "{action} not audited");
    }
    assert!(!audit.contains(&token), "no token in the audit log");
}

#[test]
fn a_controller_killed_in_the_middle_of_a_sync_converges_without_duplicates() {
    let emulator = gatehouse_testkit::cloudflare::Emulator::start();
    emulator.add_token("cf-restart");
    emulator.add_zone("example.test");
    let mut controller = Controller::start("");
    let added = controller.add_cloudflare_account("main", "cf-restart", &emulator.api_url);
    assert!(added.success, "{}", added.stderr);
    let created = controller.ctl(&[
        "allowlist",
        "create",
        "home",
        "--cloudflare",
        "rules",
        "--account",
        "main",
        "--allow-private",
    ]);
    assert!(created.success, "{}", created.stderr);
    let token =
        controller.ctl_json(&["allowlist", "device", "add", "home", "--name", "phone"])["token"]
            .as_str()
            .unwrap()
            .to_owned();
    let other =
        controller.ctl_json(&["allowlist", "device", "add", "home", "--name", "desk"])["token"]
            .as_str()
            .unwrap()
            .to_owned();

    // The bulk operation stays pending while the controller is killed.
    emulator.set_bulk_delay(Duration::from_secs(3));
    assert_eq!(checkin(&controller, "127.0.0.2", &token).0, 200);
    gatehouse_testkit::wait_for("a bulk operation started", Duration::from_secs(20), || {
        (emulator.bulk_operations() >= 1).then_some(())
    });
    controller.kill();
    emulator.set_bulk_delay(Duration::from_millis(50));
    controller.start_again();
    assert_eq!(checkin(&controller, "127.0.0.3", &other).0, 200);
    let want = vec![
        ("127.0.0.2".to_owned(), "gatehouse:home".to_owned()),
        ("127.0.0.3".to_owned(), "gatehouse:home".to_owned()),
    ];
    gatehouse_testkit::wait_for("the list converged", Duration::from_secs(30), || {
        let mut items = emulator.rules_list_items("gatehouse_home");
        items.sort();
        (items == want).then_some(())
    });
    let shown = gatehouse_testkit::wait_for("the sync reported", Duration::from_secs(30), || {
        let v = controller.ctl_json(&["allowlist", "show", "home"]);
        (v["sync"][0]["items"] == 2 && v["sync"][0]["error"] == "").then_some(v)
    });
    assert_eq!(shown["sync"][0]["name"], "gatehouse_home");
    // One list, each address once.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let lists: serde_json::Value = rt.block_on(async {
        reqwest::Client::new()
            .get(format!(
                "{}/accounts/{}/rules/lists",
                emulator.api_url,
                emulator.account_id()
            ))
            .bearer_auth("cf-restart")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let named = lists["result"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["name"] == "gatehouse_home")
        .count();
    assert_eq!(named, 1, "{lists}");
    let text = controller.ctl(&["allowlist", "show", "home"]).stdout;
    assert!(
        text.contains("Cloudflare rules list gatehouse_home: 2 items"),
        "{text}"
    );
}
