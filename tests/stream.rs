//! The agent stream under load and under a peer that stops: a burst of certificates all reaches
//! the hosts and later changes still apply; traffic per certificate does not grow with the
//! burst; a peer frozen with SIGSTOP is noticed by the other side within the stream timeout,
//! and the agent converges once it runs again.

use std::time::{Duration, Instant};

use gatehouse_testkit::gatehouse::{Agent, Controller};
use gatehouse_testkit::wait_for;
use nix::sys::signal::Signal;
use serde_json::Value;

const NO_CADDY: &str = "stream_timeout = \"3s\"\n[caddy]\nenabled = false\n";

fn controller() -> Controller {
    Controller::start("stream_timeout = \"3s\"\nissuance_limit = 1000\n")
}

fn running_agent(controller: &Controller, name: &str) -> (Agent, String) {
    let mut agent = controller.agent_with(name, NO_CADDY);
    let id = agent.enroll(controller);
    agent.run();
    agent.wait_status("connected", Duration::from_secs(20), |s| {
        s["connected"] == true && s["applied_generation"] == 1
    });
    (agent, id)
}

/// `cert request` for `names` on `agent`, 10 at a time, as fast as the CLI goes.
fn request_all(controller: &Controller, agent: &str, names: &[String], issuer: &str) {
    std::thread::scope(|scope| {
        for chunk in names.chunks(names.len().div_ceil(10)) {
            scope.spawn(move || {
                for name in chunk {
                    let domain = format!("{name}.example.com");
                    let run = controller.ctl(&[
                        "cert", "request", "--name", name, "--domain", &domain, "--issuer", issuer,
                        "--agent", agent,
                    ]);
                    assert!(run.success, "cert request {name}: {}", run.stderr);
                }
            });
        }
    });
}

fn status(controller: &Controller, id: &str) -> Value {
    controller.ctl_json(&["agents", "status", id])
}

/// Waits until the host reports `n` certificates installed.
fn wait_installed(controller: &Controller, id: &str, n: usize, timeout: Duration) {
    wait_for(
        &format!("{n} certificates installed on {id}"),
        timeout,
        || {
            let s = status(controller, id);
            (s["certificates"].as_array().map_or(0, Vec::len) == n).then_some(())
        },
    );
}

/// A label change made now reaches the agent and is acknowledged.
fn a_change_still_applies(controller: &Controller, agent: &Agent, id: &str) {
    let labelled = controller.ctl_json(&["agents", "label", id, "after=burst"]);
    let generation = labelled["desired_generation"].as_u64().unwrap();
    agent.wait_status("the label change applied", Duration::from_secs(30), |s| {
        s["applied_generation"] == generation && s["connected"] == true
    });
    wait_for(
        "the controller sees it applied",
        Duration::from_secs(30),
        || (controller.agent_view(id)["applied_generation"] == generation).then_some(()),
    );
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

#[test]
fn two_hundred_internal_certificates_over_five_agents_all_arrive() {
    let controller = controller();
    let agents: Vec<(Agent, String)> = (0..5)
        .map(|i| running_agent(&controller, &format!("h{i}")))
        .collect();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for (_, id) in &agents {
            let controller = &controller;
            scope.spawn(move || request_all(controller, id, &names("c", 40), "internal"));
        }
    });
    for (_, id) in &agents {
        wait_installed(&controller, id, 40, Duration::from_secs(120));
    }
    eprintln!("200 certificates on 5 hosts in {:?}", started.elapsed());
    for (agent, id) in &agents {
        a_change_still_applies(&controller, agent, id);
        assert!(
            status(&controller, id)["results"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["state"] == "applied"),
            "{}",
            status(&controller, id)
        );
    }
}

/// Certificate traffic for a burst of `n`: requests received, certificates sent, and every
/// message of the kinds a burst causes.
fn burst_messages(n: usize) -> (f64, f64, f64) {
    let controller = controller();
    let (agent, id) = running_agent(&controller, "host");
    request_all(&controller, &id, &names("m", n), "internal");
    wait_installed(&controller, &id, n, Duration::from_secs(120));
    a_change_still_applies(&controller, &agent, &id);
    let m = |direction: &str, kind: &str| {
        controller.metric(&format!(
            "gatehouse_stream_messages_total{{direction=\"{direction}\",kind=\"{kind}\"}}"
        ))
    };
    let requests = m("received", "certificate_request");
    let certificates = m("sent", "certificate");
    let all = requests
        + certificates
        + m("sent", "certificate_error")
        + m("sent", "desired_state")
        + m("received", "ack");
    (requests, certificates, all)
}

#[test]
fn messages_per_certificate_stay_constant_as_the_burst_grows() {
    let (requests_10, certs_10, all_10) = burst_messages(10);
    let (requests_100, certs_100, all_100) = burst_messages(100);
    eprintln!(
        "per certificate: 10 → {:.2} messages, 100 → {:.2}",
        all_10 / 10.0,
        all_100 / 100.0
    );
    // One request and one certificate per revision, however large the burst.
    assert_eq!((requests_10, certs_10), (10.0, 10.0));
    assert_eq!((requests_100, certs_100), (100.0, 100.0));
    // Desired states and acks coalesce: never more than a few per certificate, and no more
    // per certificate for the larger burst.
    assert!(all_100 / 100.0 <= 5.0, "{all_100} messages for 100");
    assert!(
        all_100 / 100.0 <= all_10 / 10.0 + 0.5,
        "{all_10} for 10 but {all_100} for 100"
    );
}

#[test]
fn a_frozen_agent_is_noticed_by_the_controller_and_converges_when_it_runs_again() {
    let controller = controller();
    let (agent, id) = running_agent(&controller, "host");
    let sessions = controller.agent_view(&id)["sessions"].as_u64().unwrap();
    agent.signal(Signal::SIGSTOP);
    let frozen = Instant::now();
    wait_for(
        "the controller closes the frozen agent's stream",
        Duration::from_secs(15),
        || {
            controller
                .log()
                .contains("the agent stopped answering")
                .then_some(())
        },
    );
    let noticed = frozen.elapsed();
    // A third of the timeout to the next ping, then the timeout.
    assert!(noticed < Duration::from_secs(8), "took {noticed:?}");
    assert_eq!(controller.agent_view(&id)["status"], "offline");
    let labelled = controller.ctl_json(&["agents", "label", &id, "while=frozen"]);
    agent.signal(Signal::SIGCONT);
    let generation = labelled["desired_generation"].as_u64().unwrap();
    agent.wait_status(
        "the change made while frozen",
        Duration::from_secs(30),
        |s| s["applied_generation"] == generation && s["connected"] == true,
    );
    wait_for("the agent back online", Duration::from_secs(30), || {
        let v = controller.agent_view(&id);
        (v["status"] == "online" && v["sessions"].as_u64() > Some(sessions)).then_some(())
    });
}

#[test]
fn a_frozen_controller_is_noticed_by_the_agent_which_reconnects_when_it_runs_again() {
    let controller = controller();
    let (agent, id) = running_agent(&controller, "host");
    controller.signal(Signal::SIGSTOP);
    let frozen = Instant::now();
    let seen = agent.wait_status(
        "the agent notices the frozen controller",
        Duration::from_secs(15),
        |s| s["connected"] == false,
    );
    let noticed = frozen.elapsed();
    controller.signal(Signal::SIGCONT);
    assert!(
        seen["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("stopped answering")),
        "{seen}"
    );
    assert!(noticed < Duration::from_secs(8), "took {noticed:?}");
    agent.wait_status("connected again", Duration::from_secs(30), |s| {
        s["connected"] == true
    });
    a_change_still_applies(&controller, &agent, &id);
}
