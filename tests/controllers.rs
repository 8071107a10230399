//! Two controllers on one PostgreSQL: a change made through one reaches an agent streaming to
//! the other at once (LISTEN/NOTIFY), not when the agent next asks.

use std::time::{Duration, Instant};

use gatehouse_testkit::gatehouse::Controller;
use gatehouse_testkit::postgres::Postgres;
use gatehouse_testkit::wait_for;

fn controller(pg: &Postgres, extra: &str) -> Controller {
    let dir = tempfile::Builder::new()
        .prefix("gh-e2e-")
        .tempdir()
        .unwrap();
    Controller::start_with(dir, extra, Some(&pg.url))
}

#[test]
fn a_change_made_through_one_controller_reaches_an_agent_streaming_to_the_other_at_once() {
    let pg = Postgres::start();
    let a = controller(&pg, "");
    // The second shares the store and the key that seals the CA's.
    let b = controller(
        &pg,
        &format!("master_key_file = {:?}\n", a.data_dir.join("master.key")),
    );
    assert_eq!(a.ca_hash(), b.ca_hash(), "one CA for both");

    // Caddy off: nothing on the host changes by itself, so the agent sends nothing that would
    // make the second controller look at the store on its own.
    let mut agent = b.agent_with("host", "[caddy]\nenabled = false\n");
    let id = agent.enroll(&b);
    agent.run();
    agent.wait_status(
        "streaming to the second controller",
        Duration::from_secs(20),
        |s| s["connected"] == true && s["applied_generation"] == 1,
    );

    for round in 0..3 {
        let label = format!("round={round}");
        let started = Instant::now();
        let changed = a.ctl_json(&["agents", "label", &id, &label]);
        let generation = changed["desired_generation"].as_u64().unwrap();
        // Without the announcement the agent would see it when it next asks, up to a minute on.
        agent.wait_status(
            "the change through the first controller applied",
            Duration::from_secs(5),
            |s| s["applied_generation"].as_u64() == Some(generation),
        );
        let took = started.elapsed();
        wait_for("the ack recorded", Duration::from_secs(5), || {
            (a.agent_view(&id)["applied_generation"].as_u64() == Some(generation)).then_some(())
        });
        eprintln!("round {round}: generation {generation} applied {took:?} after the call");
    }
    assert!(b.log().contains("agent connected"), "{}", b.log());
}

#[test]
fn agents_of_a_killed_controller_move_to_the_other_and_keep_identity_and_generation() {
    let pg = Postgres::start();
    let mut a = controller(&pg, "");
    let b = controller(
        &pg,
        &format!("master_key_file = {:?}\n", a.data_dir.join("master.key")),
    );
    let mut agent = a.agent_with(
        "host",
        &format!(
            "controllers = [{:?}]\n[caddy]\nenabled = false\n",
            b.agent_url()
        ),
    );
    let id = agent.enroll(&a);
    agent.run();
    let labelled = a.ctl_json(&["agents", "label", &id, "env=prod"]);
    assert_eq!(labelled["desired_generation"], 2);
    agent.wait_status(
        "generation 2 through the first controller",
        Duration::from_secs(20),
        |s| s["connected"] == true && s["applied_generation"] == 2,
    );
    let applies = agent.log().matches("applying desired state").count();

    a.kill();
    let status = agent.wait_status(
        "streaming to the second controller",
        Duration::from_secs(30),
        |s| s["connected"] == true && s["controller"].as_str() == Some(b.agent_url().as_str()),
    );
    assert_eq!(status["agent_id"], id.as_str(), "the same identity");
    assert_eq!(status["applied_generation"], 2, "the same generation");
    wait_for(
        "online at the second controller",
        Duration::from_secs(20),
        || (b.agent_view(&id)["status"] == "online").then_some(()),
    );
    assert_eq!(
        agent.log().matches("applying desired state").count(),
        applies,
        "nothing applied again: {}",
        agent.log()
    );
    assert_eq!(b.agents().len(), 1, "no second enrollment");
    let moved = b.ctl_json(&["agents", "label", &id, "env=prod", "moved=yes"]);
    let generation = moved["desired_generation"].as_u64().unwrap();
    agent.wait_status(
        "a change through the second controller",
        Duration::from_secs(10),
        |s| s["applied_generation"].as_u64() == Some(generation),
    );
}
