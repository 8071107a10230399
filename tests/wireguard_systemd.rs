//! A userspace WireGuard interface under systemd: in a booted box, the packaged agent unit runs
//! the host's interface as `gatehouse-wg@IFACE.service` (the packaged template), and restarting
//! the agent leaves that unit, its wireguard-go and the interface as they were.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gatehouse_testkit::gatehouse::{Controller, packaged_agent};
use gatehouse_testkit::process::{bin, external};
use gatehouse_testkit::systembox::SystemBox;
use gatehouse_testkit::wait_for;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

#[test]
fn the_interface_runs_in_its_own_unit_and_outlives_an_agent_restart() {
    external("wireguard-go", &[], "wireguard-go");
    let agent_bin = bin("gatehouse-agent");
    let units = [
        repo("systemd/gatehouse-agent.service"),
        repo("systemd/gatehouse-agent-enroll.service"),
        repo("systemd/gatehouse-wg@.service"),
    ];
    let vm = SystemBox::boot(&[
        (agent_bin.as_path(), "/usr/bin/gatehouse-agent"),
        (
            units[0].as_path(),
            "/etc/systemd/system/gatehouse-agent.service",
        ),
        (
            units[1].as_path(),
            "/etc/systemd/system/gatehouse-agent-enroll.service",
        ),
        (
            units[2].as_path(),
            "/etc/systemd/system/gatehouse-wg@.service",
        ),
    ]);
    let (host, _) = vm.link();
    let controller = Controller::start_on(IpAddr::V4(host), "");
    let agent = packaged_agent(&vm, &controller, "[caddy]\nenabled = false\n");
    let net = format!("s{}", std::process::id() % 10_000);
    let made = controller.ctl_json(&["wg", "network", "create", &net]);
    let iface = made["interface"].as_str().unwrap().to_owned();
    let run = controller.ctl(&[
        "wg",
        "host",
        "add",
        &net,
        "--agent",
        &agent,
        "--hub",
        "--endpoint",
        "198.51.100.1:51820",
    ]);
    assert!(run.success, "{}", run.stderr);
    let unit = format!("gatehouse-wg@{iface}.service");
    let key = wait_for("the host's key", Duration::from_secs(60), || {
        let n = controller.ctl_json(&["wg", "network", "show", &net]);
        n["peers"][0]["public_key"]
            .as_str()
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
    });
    let pid = vm.wait_active(&unit, Duration::from_secs(30));
    assert!(pid > 0);
    let link = vm.ok(&["ip", "-o", "addr", "show", "dev", &iface]);
    assert!(link.contains("10.60.0.1/24"), "{link}");

    vm.ok(&["systemctl", "restart", "gatehouse-agent.service"]);
    vm.wait_active("gatehouse-agent.service", Duration::from_secs(30));
    // Its first pass after the restart has run over the interface.
    wait_for(
        "the agent's first pass again",
        Duration::from_secs(60),
        || {
            vm.journal("gatehouse-agent.service")
                .contains("reapplying the persisted desired state")
                .then_some(())
        },
    );
    // The same wireguard-go, never restarted, with the same key.
    assert_eq!(vm.property(&unit, "MainPID"), pid.to_string());
    assert_eq!(vm.property(&unit, "NRestarts"), "0");
    let dump = vm.ok(&["wg", "show", &iface, "public-key"]);
    assert_eq!(dump.trim(), key);
}
