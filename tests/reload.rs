//! SIGHUP reads each daemon's config file again: what can change while running takes effect
//! without a restart, and a broken file keeps the running config and says which field is wrong.

use std::collections::BTreeSet;
use std::time::Duration;

use gatehouse_testkit::gatehouse::Controller;
use gatehouse_testkit::wait_for;
use nix::sys::signal::Signal;

#[test]
fn sighup_gives_every_agent_a_new_report_interval_without_a_restart() {
    let controller = Controller::start("report_interval = \"30s\"\n");
    let mut agent = controller.agent("a");
    let id = agent.enroll(&controller);
    agent.run();
    // The first report comes a second after start, the next one only after ~30 s.
    let first = wait_for("the first report", Duration::from_secs(20), || {
        let at = controller.agent_view(&id)["metrics_sampled_at"].as_i64()?;
        (at > 0).then_some(at)
    });
    let generation = controller.agent_view(&id)["desired_generation"]
        .as_u64()
        .unwrap();
    let pid = agent.pid();

    controller
        .edit_config(|text| text.replace("report_interval = \"30s\"", "report_interval = \"1s\""));
    controller.signal(Signal::SIGHUP);

    // Each agent gets a new generation carrying the interval, and reports every second.
    let mut seen = BTreeSet::new();
    wait_for(
        "three reports a second apart",
        Duration::from_secs(15),
        || {
            let at = controller.agent_view(&id)["metrics_sampled_at"].as_i64()?;
            if at > first {
                seen.insert(at);
            }
            (seen.len() >= 3).then_some(())
        },
    );
    let view = controller.agent_view(&id);
    assert_eq!(view["desired_generation"], generation + 1, "{view}");
    assert_eq!(view["status"], "online");
    assert_eq!(agent.pid(), pid);
    assert!(controller.log().contains("config file read again"));
}

#[test]
fn sighup_with_a_broken_file_keeps_the_running_config_and_names_the_field() {
    let controller = Controller::start("");
    let mut agent = controller.agent_with("a", "log = \"warn\"\n");
    let id = agent.enroll(&controller);
    agent.run();
    agent.wait_status("connected", Duration::from_secs(20), |s| {
        s["connected"] == true
    });

    // The controller: a field that does not validate.
    controller.edit_config(|text| format!("{text}issuance_limit = 0\n"));
    controller.signal(Signal::SIGHUP);
    wait_for("the refusal in the log", Duration::from_secs(10), || {
        let log = controller.log();
        (log.contains("field `issuance_limit`") && log.contains("the running config stays"))
            .then_some(())
    });
    let listed = controller.ctl_json(&["agents", "list"]);
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["status"], "online");

    // The agent, whose filter (warn) hides INFO lines: a broken file, then a good one.
    assert!(!agent.log().contains(" INFO "), "{}", agent.log());
    agent.edit_config(|text| format!("{text}recheck_interval = \"soon\"\n"));
    agent.signal(Signal::SIGHUP);
    wait_for("the agent's refusal", Duration::from_secs(10), || {
        let log = agent.log();
        (log.contains("field `recheck_interval`") && log.contains("the running config stays"))
            .then_some(())
    });
    assert_eq!(agent.status().unwrap()["connected"], true);
    agent.edit_config(|text| {
        text.replace("recheck_interval = \"soon\"\n", "")
            .replace("log = \"warn\"", "log = \"info\"")
    });
    agent.signal(Signal::SIGHUP);
    // The new filter lets the INFO line through: it took effect without a restart.
    wait_for("the agent's reload", Duration::from_secs(10), || {
        agent.log().contains("config file read again").then_some(())
    });
    assert_eq!(agent.status().unwrap()["connected"], true);
}
