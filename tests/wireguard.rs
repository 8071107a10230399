//! `gatehousectl wg` against the controller process: networks with their defaults, hosts
//! joining with their addresses, clients refused until a hub has a key, JSON output, and
//! hostile names refused at the CLI before anything is sent and by the admin API.

use gatehouse_testkit::gatehouse::Controller;

#[test]
fn networks_and_hosts_through_the_cli() {
    let controller = Controller::start("");
    let made = controller.ctl_json(&[
        "wg",
        "network",
        "create",
        "office",
        "--topology",
        "mesh",
        "--dns",
        "10.60.0.1",
    ]);
    assert_eq!(made["interface"], "gh-office");
    assert_eq!(made["ipv4"], "10.60.0.0/24");
    assert_eq!(made["topology"], "mesh");
    assert_eq!(made["port"], 51820);
    let v6 = made["ipv6"].as_str().unwrap();
    assert!(v6.starts_with("fd") && v6.ends_with("::/64"), "{v6}");
    assert_eq!(made["ipv4_free"], 254);

    let agent = controller.agent("host-a");
    let id = agent.enroll(&controller);
    let host = controller.ctl_json(&[
        "wg",
        "host",
        "add",
        "office",
        "--agent",
        &id,
        "--hub",
        "--endpoint",
        "hub.example.com:51820",
    ]);
    assert_eq!(host["ipv4"], "10.60.0.1");
    assert_eq!(host["hub"], true);
    assert_eq!(host["public_key"], "");
    let shown = controller.ctl(&["wg", "network", "show", "office"]);
    assert!(shown.success, "{}", shown.stderr);
    assert!(
        shown.stdout.contains("(not reported yet)"),
        "{}",
        shown.stdout
    );
    assert!(
        shown.stdout.contains("253 IPv4 addresses free"),
        "{}",
        shown.stdout
    );

    // No client before the hub has made and reported its key; nothing is kept of the try.
    let early = controller.ctl(&["wg", "client", "add", "office", "--name", "phone"]);
    assert!(!early.success);
    assert!(
        early.stderr.contains("not reported its key"),
        "{}",
        early.stderr
    );
    let list = controller.ctl_json(&["wg", "client", "list", "office"]);
    assert_eq!(list.as_array().unwrap().len(), 0);

    let busy = controller.ctl(&["wg", "network", "delete", "office", "--yes"]);
    assert!(
        !busy.success && busy.stderr.contains("still has 1 peer"),
        "{}",
        busy.stderr
    );
    let removed = controller.ctl(&["wg", "host", "remove", "office", "--agent", &id]);
    assert!(removed.success, "{}", removed.stderr);
    assert!(removed.stdout.contains("10.60.0.1"), "{}", removed.stdout);
    let gone = controller.ctl(&["wg", "network", "delete", "office", "--yes"]);
    assert!(gone.success, "{}", gone.stderr);
    assert_eq!(
        controller.ctl_json(&["wg", "network", "list"]),
        serde_json::json!([])
    );
}

#[test]
fn hostile_names_are_refused_at_the_cli_and_the_admin_api() {
    let controller = Controller::start("");
    for (args, says) in [
        (vec!["wg", "network", "create", "../x"], "invalid"),
        (
            vec!["wg", "network", "create", "a", "--interface", "wg0;reboot"],
            "interface name",
        ),
        (
            vec![
                "wg",
                "network",
                "create",
                "a",
                "--interface",
                "a234567890123456",
            ],
            "interface name",
        ),
        (
            vec![
                "wg",
                "client",
                "add",
                "a",
                "--name",
                "x",
                "--public-key",
                "k",
            ],
            "WireGuard key",
        ),
        (
            vec!["wg", "network", "create", "a", "--ipv4", "10.0.0.1/24"],
            "host bits",
        ),
        (
            vec!["wg", "network", "create", "a", "--ipv6", "10.0.0.0/24"],
            "ipv6",
        ),
        (
            vec!["wg", "network", "create", "verylongnetworkname"],
            "--interface",
        ),
    ] {
        let run = controller.ctl(&args);
        assert!(!run.success, "{args:?} was accepted");
        assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
    }
    assert_eq!(
        controller.ctl_json(&["wg", "network", "list"]),
        serde_json::json!([])
    );
}
