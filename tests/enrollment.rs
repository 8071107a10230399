//! Enrollment end to end: a join token works once, expires, and never leaves the host when the
//! controller's CA does not match the pin; an enrolled agent connects and reports metrics.

use std::time::Duration;

use gatehouse_testkit::gatehouse::Controller;
use gatehouse_testkit::wait_for;

#[test]
fn enrolled_agent_connects_and_its_metrics_show_in_the_agent_list() {
    let controller = Controller::start("");
    let mut agent = controller.agent("web1");
    let id = agent.enroll(&controller);
    agent.run();

    let listed = wait_for(
        "the agent online with metrics",
        Duration::from_secs(30),
        || {
            controller.agents().into_iter().find(|a| {
                a["id"] == id.as_str() && a["status"] == "online" && !a["metrics"].is_null()
            })
        },
    );
    assert_eq!(controller.agents().len(), 1);
    let m = &listed["metrics"];
    assert!(m["memory_total_bytes"].as_u64().unwrap() > 0, "{m}");
    assert!(m["memory_used_bytes"].as_u64().unwrap() <= m["memory_total_bytes"].as_u64().unwrap());
    assert!(m["uptime_seconds"].as_u64().unwrap() > 0);
    assert!(m["cpu_percent"].as_f64().unwrap() >= 0.0);
    assert!(m["load_1"].is_number() && m["load_15"].is_number(), "{m}");
    assert!(
        m["filesystems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["mount_point"] == "/"),
        "{m}"
    );
    assert!(
        m["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == "lo"),
        "{m}"
    );
    assert!(!listed["hostname"].as_str().unwrap().is_empty());
    assert_eq!(listed["version"], env!("CARGO_PKG_VERSION"));
    // The first desired state was applied and acknowledged.
    assert_eq!(listed["desired_generation"], 1);
    wait_for("generation 1 acknowledged", Duration::from_secs(10), || {
        (controller.agent_view(&id)["applied_generation"] == 1).then_some(())
    });

    // The identity key never left the host: it is 0600 there, and the controller has only the
    // certificate's serial.
    use std::os::unix::fs::PermissionsExt;
    let key = agent.paths().identity();
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let status = agent.status().unwrap();
    assert_eq!(status["agent_id"], id.as_str());
    assert_eq!(status["connected"], true);
    assert_eq!(listed["certificate_serial"], status["identity_serial"]);

    // The human table shows the same agent.
    let table = controller.ctl(&["agents", "list"]);
    assert!(
        table.success && table.stdout.contains(&id) && table.stdout.contains("online"),
        "{}",
        table.stdout
    );
}

#[test]
fn a_join_token_works_once() {
    let controller = Controller::start("");
    let token = controller.join_token("10m");
    let first = controller.agent("a");
    let run = first.enroll_with(&controller.agent_url(), &controller.ca_hash(), &token);
    assert!(run.success, "{}", run.stderr);
    let second = controller.agent("b");
    let run = second.enroll_with(&controller.agent_url(), &controller.ca_hash(), &token);
    assert!(!run.success);
    assert!(run.stderr.contains("already used"), "{}", run.stderr);
    // Nothing was written for the refused host.
    assert!(!second.paths().identity().exists());
    assert!(!second.paths().enrollment().exists());
    let tokens = controller.ctl_json(&["token", "list"]);
    assert_eq!(tokens[0]["state"], "used");
    assert_eq!(controller.agents().len(), 1);
}

#[test]
fn expired_unknown_and_malformed_tokens_are_refused() {
    let controller = Controller::start("");
    let expired = controller.join_token("1s");
    std::thread::sleep(Duration::from_millis(2100));
    let agent = controller.agent("a");
    let hash = controller.ca_hash();
    let run = agent.enroll_with(&controller.agent_url(), &hash, &expired);
    assert!(!run.success);
    assert!(run.stderr.contains("expired"), "{}", run.stderr);

    let unknown = "ghj_aaaaaaaaaa.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    let run = agent.enroll_with(&controller.agent_url(), &hash, unknown);
    assert!(run.stderr.contains("unknown join token"), "{}", run.stderr);

    // A right id with a wrong secret is as unknown as a wrong id.
    let real = controller.join_token("10m");
    let forged = format!("{}.{}", real.split_once('.').unwrap().0, "c".repeat(32));
    let run = agent.enroll_with(&controller.agent_url(), &hash, &forged);
    assert!(run.stderr.contains("unknown join token"), "{}", run.stderr);

    let run = agent.enroll_with(&controller.agent_url(), &hash, "not-a-token");
    assert!(run.stderr.contains("malformed token"), "{}", run.stderr);

    let run = agent.enroll_with(&controller.agent_url(), "sha256:abc", &real);
    assert!(
        run.stderr.contains("--ca-hash must look like sha256:"),
        "{}",
        run.stderr
    );

    assert!(controller.agents().is_empty());
    assert!(!agent.paths().identity().exists());
    // The real token is still good after all of that.
    let run = agent.enroll_with(&controller.agent_url(), &hash, &real);
    assert!(run.success, "{}", run.stderr);
}

#[test]
fn a_wrong_ca_hash_refuses_before_the_token_is_sent() {
    let controller = Controller::start("");
    let token = controller.join_token("10m");
    let agent = controller.agent("a");
    let wrong = format!("sha256:{}", "0".repeat(64));
    let run = agent.enroll_with(&controller.agent_url(), &wrong, &token);
    assert!(!run.success);
    assert!(
        run.stderr.contains("does not match --ca-hash"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("the token was not sent"),
        "{}",
        run.stderr
    );
    // The controller never saw the token: it is still valid, and no enrollment was logged.
    let tokens = controller.ctl_json(&["token", "list"]);
    assert_eq!(tokens[0]["state"], "valid");
    assert!(!controller.log().contains("agent enrolled"));
    let run = agent.enroll_with(&controller.agent_url(), &controller.ca_hash(), &token);
    assert!(run.success, "{}", run.stderr);
    assert!(controller.log().contains("agent enrolled"));
}

#[test]
fn enrolling_twice_keeps_the_first_identity() {
    let controller = Controller::start("");
    let agent = controller.agent("a");
    let id = agent.enroll(&controller);
    let before = std::fs::read(agent.paths().identity()).unwrap();
    let token = controller.join_token("10m");
    let run = agent.enroll_with(&controller.agent_url(), &controller.ca_hash(), &token);
    assert!(!run.success);
    assert!(
        run.stderr
            .contains(&format!("already enrolled as agent {id}")),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read(agent.paths().identity()).unwrap(), before);
}
