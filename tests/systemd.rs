//! The agent's systemd module against a real systemd, booted in a private namespace: a unit
//! started, read back, restarted with a new main pid, its journal read, and stopped.

use std::time::Duration;

use gatehouse_agent::host::systemd::{Systemd, UnitName, Wait};
use gatehouse_testkit::systembox::SystemBox;
use gatehouse_testkit::wait_for;

#[tokio::test(flavor = "multi_thread")]
async fn units_start_restart_log_and_stop_through_the_one_systemd_module() {
    let vm = SystemBox::boot(&[]);
    vm.write(
        "/etc/systemd/system/gh-echo.service",
        "[Service]\nExecStart=/bin/sh -c 'echo hello from the unit; exec sleep infinity'\n\
         [Install]\nWantedBy=multi-user.target\n",
        0o644,
    );
    let systemd = Systemd::through(vm.prefix());
    let unit: UnitName = "gh-echo.service".parse().unwrap();
    systemd.daemon_reload().await.unwrap();
    systemd.enable_now(&unit, Wait::Yes).await.unwrap();
    let first = systemd.state(&unit).await.unwrap();
    assert_eq!(
        (first.load_state.as_str(), first.active_state.as_str()),
        ("loaded", "active")
    );
    assert!(first.main_pid > 0);
    let logs = wait_for(
        "the unit's line in the journal",
        Duration::from_secs(20),
        || {
            let lines = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(systemd.logs(&unit, 10))
            })
            .ok()?;
            lines
                .iter()
                .any(|l| l.contains("hello from the unit"))
                .then_some(lines)
        },
    );
    assert!(!logs.is_empty());

    systemd.restart(&unit, Wait::Yes).await.unwrap();
    let second = systemd.state(&unit).await.unwrap();
    assert_eq!(second.active_state, "active");
    assert_ne!(
        second.main_pid, first.main_pid,
        "a restart gives a new main pid"
    );

    systemd.disable_now(&unit).await.unwrap();
    let stopped = systemd.state(&unit).await.unwrap();
    assert_eq!(
        (stopped.active_state.as_str(), stopped.main_pid),
        ("inactive", 0)
    );
    let unknown: UnitName = "gh-nothing.service".parse().unwrap();
    assert_eq!(
        systemd.state(&unknown).await.unwrap().load_state,
        "not-found"
    );
    let refused = systemd.restart(&unknown, Wait::Yes).await.unwrap_err();
    assert!(refused.to_string().contains("gh-nothing"), "{refused}");
}
