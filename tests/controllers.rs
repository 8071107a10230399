//! Two controllers on one PostgreSQL: a change made through one reaches an agent streaming to
//! the other at once (LISTEN/NOTIFY), not when the agent next asks; agents of a killed
//! controller move to the other with their identity and generation; and the ACME worker's
//! leader killed mid-order, the other finishes the order.

#[path = "support/acme.rs"]
mod acme;

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

#[test]
fn the_acme_leader_killed_mid_order_the_other_finishes_it_and_the_host_follows() {
    let pg = Postgres::start();
    // The first controller checks propagation where nothing answers: its order waits in
    // `presenting` with the TXT record published, and then it is killed.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    drop(silent);
    let mut s = acme::setup(acme::Options {
        check_dns: Some(silent_addr),
        postgres: Some(pg.url.clone()),
        ..Default::default()
    });
    assert!(s.create_account(&[]).success);
    let upstream = acme::Upstream::start("finished by the other controller");
    s.site(&upstream, &["ha.example.com"]);
    s.order_where("the order presenting its record", |o| {
        o["state"] == "presenting" && o["txt_records"].as_array().is_some_and(|t| !t.is_empty())
    });
    s.controller.kill();

    let root = s.issuing_root();
    let body = wait_for("the certificate served", Duration::from_secs(120), || {
        acme::get(&root, "ha.example.com", s.caddy.https_port).ok()
    });
    assert_eq!(body, "finished by the other controller");
    let b = s.second.as_ref().unwrap();
    assert!(
        b.log().contains("this controller now runs the ACME worker"),
        "{}",
        b.log()
    );
    let orders = b.ctl_json(&["cert", "list"]);
    let orders = orders.as_array().unwrap();
    assert_eq!(orders.len(), 1, "{orders:#?}");
    assert_eq!(orders[0]["state"], "issued");
    assert_eq!(
        s.txt_records(),
        Vec::<String>::new(),
        "DNS-01 records left behind"
    );
    assert_eq!(
        s.agent.status().unwrap()["controller"].as_str(),
        Some(b.agent_url().as_str()),
        "the host streams to the survivor"
    );
}
