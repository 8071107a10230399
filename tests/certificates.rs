//! Certificates on a host that misbehaves: a full disk is an item error, the issued chain is
//! installed once space is back, and the controller never signs more than its limit; old
//! versions are pruned after every pass, also with Caddy off.

use std::time::Duration;

use gatehouse_testkit::gatehouse::{Agent, Controller};
use gatehouse_testkit::tmpfs::Tmpfs;
use gatehouse_testkit::wait_for;
use serde_json::Value;

const NO_CADDY: &str = "[caddy]\nenabled = false\n";

fn item(status: &Value, item: &str) -> Option<Value> {
    status["results"]
        .as_array()?
        .iter()
        .find(|r| {
            let (kind, name) = item.split_once('/').unwrap_or((item, ""));
            r["kind"] == kind && r["name"] == name
        })
        .cloned()
}

fn signed(controller: &Controller) -> f64 {
    controller.metric("gatehouse_stream_messages_total{direction=\"sent\",kind=\"certificate\"}")
}

fn request(controller: &Controller, id: &str, name: &str) {
    let domain = format!("{name}.example.com");
    let run = controller.ctl(&[
        "cert", "request", "--name", name, "--domain", &domain, "--issuer", "internal", "--agent",
        id,
    ]);
    assert!(run.success, "{}", run.stderr);
}

/// Waits until the item's error says `what`, returning the status.
fn wait_item_error(controller: &Controller, id: &str, item_name: &str, what: &str) -> Value {
    wait_for(
        &format!("{item_name} failing with {what:?}"),
        Duration::from_secs(60),
        || {
            let s = controller.ctl_json(&["agents", "status", id]);
            let i = item(&s, item_name)?;
            (i["state"] == "failed" && i["message"].as_str()?.contains(what)).then_some(s)
        },
    )
}

#[test]
fn a_full_disk_is_the_items_error_signs_at_most_the_limit_and_converges_once_freed() {
    let controller = Controller::start("issuance_limit = 2\n");
    // The agent's whole root on a small disk of its own.
    let disk = Tmpfs::mount(&controller.dir.path().join("host"), "8m");
    let mut agent = Agent::new(controller.dir.path(), "host", NO_CADDY);
    let id = agent.enroll(&controller);
    agent.run();
    agent.wait_status("connected", Duration::from_secs(20), |s| {
        s["connected"] == true && s["applied_generation"] == 1
    });

    disk.fill();
    request(&controller, &id, "big");
    wait_item_error(
        &controller,
        &id,
        "certificate/big",
        "No space left on device",
    );
    // The agent tries the install again with backoff, from the chain it has: it asks for
    // nothing more.
    wait_item_error(&controller, &id, "certificate/big", "(attempt 3)");
    assert_eq!(signed(&controller), 1.0);

    disk.free();
    wait_for("the certificate installed", Duration::from_secs(90), || {
        let s = controller.ctl_json(&["agents", "status", &id]);
        let installed = s["certificates"]
            .as_array()?
            .iter()
            .any(|c| c["name"] == "big");
        (installed && item(&s, "certificate/big")?["state"] == "applied").then_some(())
    });
    assert_eq!(signed(&controller), 1.0);

    // An agent that asks again and again (here: restarted on a full disk, so it keeps no
    // chain) gets at most the limit, then a refusal that says so and is audited.
    disk.fill();
    request(&controller, &id, "other");
    wait_item_error(
        &controller,
        &id,
        "certificate/other",
        "No space left on device",
    );
    for _ in 0..2 {
        agent.kill();
        agent.run();
        wait_for("the agent back", Duration::from_secs(30), || {
            (controller.agent_view(&id)["status"] == "online").then_some(())
        });
    }
    let refused = wait_item_error(&controller, &id, "certificate/other", "issuance_limit");
    assert_eq!(signed(&controller), 3.0, "{refused}");
    let audit = controller.ctl_json(&["audit", "list"]);
    let entry = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "cert.issue")
        .unwrap_or_else(|| panic!("no audit entry: {audit}"));
    assert_eq!(entry["actor"], format!("agent:{id}"));
    assert!(
        entry["result"].as_str().unwrap().contains("refused"),
        "{entry}"
    );
    disk.free();
    drop(agent);
}

#[test]
fn after_six_reissues_with_caddy_off_three_versions_remain() {
    let controller = Controller::start("");
    let mut agent = controller.agent_with("host", NO_CADDY);
    let id = agent.enroll(&controller);
    agent.run();
    request(&controller, &id, "web");
    let serial = |controller: &Controller| {
        let s = controller.ctl_json(&["agents", "status", &id]);
        s["certificates"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == "web")
            .map(|c| c["serial"].as_str().unwrap_or_default().to_owned())
    };
    let mut last = wait_for("the first certificate", Duration::from_secs(30), || {
        serial(&controller)
    });
    for _ in 0..6 {
        let run = controller.ctl(&["cert", "reissue", "--agent", &id, "web"]);
        assert!(run.success, "{}", run.stderr);
        last = wait_for("the reissued certificate", Duration::from_secs(30), || {
            serial(&controller).filter(|s| *s != last)
        });
    }
    let dir = agent.paths().site_certs();
    let count = |ext: &str| gatehouse_testkit::count_files(&dir, ext);
    wait_for("old versions pruned", Duration::from_secs(10), || {
        (count("crt") == 3 && count("key") == 3).then_some(())
    });
}
