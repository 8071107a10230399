//! The .deb and .rpm packages, installed and run under a real systemd (a booted box, see
//! TESTING.md): what an operator does with them, from `dpkg -i` to `dpkg --purge`.
//!
//! The packages come from `packaging/build` (CI runs it before the tests).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gatehouse_testkit::systembox::SystemBox;
use gatehouse_testkit::wait_for;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The workspace's target directory (this test runs from target/debug/deps).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "target"))
        .expect("target directory")
        .to_owned()
}

/// A built package, or a panic that says how to build it.
fn package(dir: &str, prefix: &str, suffix: &str) -> PathBuf {
    let dir = target_dir().join(dir);
    let found = std::fs::read_dir(&dir)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with(prefix) && name.ends_with(suffix)
        });
    found.unwrap_or_else(|| {
        panic!(
            "no {prefix}…{suffix} in {}: build the packages first with packaging/build",
            dir.display()
        )
    })
}

fn deb(name: &str) -> PathBuf {
    package("debian", &format!("{name}_{VERSION}-1_"), ".deb")
}

fn rpm(name: &str) -> PathBuf {
    package("generate-rpm", &format!("{name}-{VERSION}-1."), ".rpm")
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The same package with a newer version (`-2`): what an upgrade installs.
fn newer_deb(original: &Path, dir: &Path) -> PathBuf {
    let unpacked = dir.join(original.file_stem().expect("name"));
    run(
        "dpkg-deb",
        &["-R", original.to_str().unwrap(), unpacked.to_str().unwrap()],
    );
    let control = unpacked.join("DEBIAN/control");
    let text = std::fs::read_to_string(&control).expect("control");
    let old = format!("Version: {VERSION}-1\n");
    assert!(text.contains(&old), "unexpected control file:\n{text}");
    std::fs::write(
        &control,
        text.replace(&old, &format!("Version: {VERSION}-2\n")),
    )
    .expect("write control");
    let out = dir.join(format!(
        "{}-upgrade.deb",
        original.file_stem().unwrap().to_string_lossy()
    ));
    run(
        "dpkg-deb",
        &[
            "--root-owner-group",
            "-b",
            unpacked.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    out
}

/// The agent as the controller sees it, from `gatehousectl agents list --output json`.
fn listed_agent(vm: &SystemBox, id: &str) -> Option<serde_json::Value> {
    let out = vm.run(&["gatehousectl", "--output", "json", "agents", "list"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    list.as_array()?.iter().find(|a| a["id"] == id).cloned()
}

fn agent_id(vm: &SystemBox) -> String {
    let status: serde_json::Value =
        serde_json::from_str(&vm.ok(&["gatehouse-agent", "status", "--json"])).expect("status");
    status["agent_id"].as_str().expect("agent_id").to_owned()
}

fn wait_online(vm: &SystemBox, id: &str) {
    wait_for("the agent to be online", Duration::from_secs(30), || {
        listed_agent(vm, id).filter(|a| a["status"] == "online")
    });
}

/// Kills the unit's main process as the OOM killer would; systemd must start it again.
fn kill_and_wait_restart(vm: &SystemBox, unit: &str) {
    let before = vm.wait_active(unit, Duration::from_secs(10));
    vm.ok(&["kill", "-9", &before.to_string()]);
    wait_for(
        &format!("systemd to restart {unit}"),
        Duration::from_secs(30),
        || {
            let pid: u32 = vm.property(unit, "MainPID").parse().ok()?;
            (pid != 0 && pid != before && vm.property(unit, "ActiveState") == "active")
                .then_some(())
        },
    );
    assert!(vm.property(unit, "NRestarts").parse::<u32>().unwrap_or(0) >= 1);
}

#[test]
fn debs_install_enroll_restart_upgrade_remove_and_purge_under_systemd() {
    let work = tempfile::tempdir().expect("temp dir");
    let controller_deb = deb("gatehouse-controller");
    let agent_deb = deb("gatehouse-agent");
    let controller_up = newer_deb(&controller_deb, work.path());
    let agent_up = newer_deb(&agent_deb, work.path());
    let vm = SystemBox::boot(&[
        (&controller_deb, "/root/pkgs/controller.deb"),
        (&agent_deb, "/root/pkgs/agent.deb"),
        (&controller_up, "/root/pkgs/controller-2.deb"),
        (&agent_up, "/root/pkgs/agent-2.deb"),
    ]);

    // Install: the controller starts as its own user and reaches READY (Type=notify).
    vm.ok(&[
        "dpkg",
        "-i",
        "/root/pkgs/controller.deb",
        "/root/pkgs/agent.deb",
    ]);
    let controller_pid = vm.wait_active("gatehouse-controller.service", Duration::from_secs(30));
    let user = vm.ok(&["ps", "-o", "user=", "-p", &controller_pid.to_string()]);
    assert_eq!(user.trim(), "gatehouse-controller");
    assert_eq!(
        vm.property("gatehouse-controller.service", "Type"),
        "notify"
    );
    assert_eq!(
        vm.property("gatehouse-controller.service", "UnitFileState"),
        "enabled"
    );
    let config_mode = vm.ok(&["stat", "-c", "%a %U:%G", "/etc/gatehouse/controller.toml"]);
    assert_eq!(config_mode.trim(), "640 root:gatehouse-controller");

    // The agent is enabled but waits, without failing, for a token or an identity.
    assert_eq!(
        vm.property("gatehouse-agent.service", "UnitFileState"),
        "enabled"
    );
    assert_eq!(
        vm.property("gatehouse-agent.service", "ActiveState"),
        "inactive"
    );
    assert_eq!(
        vm.property("gatehouse-agent.service", "ConditionResult"),
        "no"
    );

    // Automation: point agent.toml at the controller, drop a token, start the agent.
    let ca_hash = vm
        .ok(&["gatehouse-controller", "ca-hash"])
        .trim()
        .to_owned();
    assert!(ca_hash.starts_with("sha256:"), "{ca_hash}");
    let agent_toml = format!(
        "controller = \"https://127.0.0.1:7443\"\nca_hash = \"{ca_hash}\"\n\n[caddy]\nenabled = false\n"
    );
    vm.write("/etc/gatehouse/agent.toml", &agent_toml, 0o600);
    let token = vm.ok(&["gatehousectl", "token", "create", "--ttl", "10m"]);
    vm.write("/etc/gatehouse/join-token", token.trim(), 0o600);
    let started = vm.run(&["systemctl", "start", "gatehouse-agent.service"]);
    assert!(
        started.status.success(),
        "systemctl start gatehouse-agent: {}\nenroll unit:\n{}\nagent:\n{}",
        String::from_utf8_lossy(&started.stderr),
        vm.journal("gatehouse-agent-enroll.service"),
        vm.journal("gatehouse-agent.service")
    );
    vm.wait_active("gatehouse-agent.service", Duration::from_secs(30));
    assert_eq!(
        vm.property("gatehouse-agent-enroll.service", "Result"),
        "success"
    );
    assert!(
        !vm.exists("/etc/gatehouse/join-token"),
        "the used token must be deleted"
    );
    let mode = vm.ok(&["stat", "-c", "%a", "/etc/gatehouse/tls/agent.pem"]);
    assert_eq!(mode.trim(), "600");
    let id = agent_id(&vm);
    wait_online(&vm, &id);

    // journald has structured fields: the agent id on the agent's "connected" event.
    let logged = |unit: &str, message: &str| {
        vm.journal_entries(unit)
            .iter()
            .any(|e| e["MESSAGE"] == message && e["AGENT_ID"] == id.as_str())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !logged("gatehouse-agent.service", "connected") {
        assert!(
            std::time::Instant::now() < deadline,
            "no \"connected\" entry with AGENT_ID={id} in the agent's journal:\n{:#?}",
            vm.journal_entries("gatehouse-agent.service")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        logged("gatehouse-controller.service", "agent enrolled"),
        "no \"agent enrolled\" entry with AGENT_ID={id} in the controller's journal:\n{}",
        vm.journal("gatehouse-controller.service")
    );
    for unit in [
        "gatehouse-controller.service",
        "gatehouse-agent-enroll.service",
        "gatehouse-agent.service",
    ] {
        assert!(
            !vm.journal(unit).contains(token.trim()),
            "{unit} logged the join token"
        );
    }

    // Restarts keep identity and state.
    vm.ok(&["systemctl", "restart", "gatehouse-controller.service"]);
    vm.wait_active("gatehouse-controller.service", Duration::from_secs(30));
    vm.ok(&["systemctl", "restart", "gatehouse-agent.service"]);
    vm.wait_active("gatehouse-agent.service", Duration::from_secs(30));
    assert_eq!(agent_id(&vm), id);
    wait_online(&vm, &id);

    // kill -9: systemd starts each one again.
    kill_and_wait_restart(&vm, "gatehouse-controller.service");
    kill_and_wait_restart(&vm, "gatehouse-agent.service");
    wait_online(&vm, &id);

    // Upgrade: config and identity kept, both services restarted on the new version.
    let controller_pid = vm.wait_active("gatehouse-controller.service", Duration::from_secs(5));
    let agent_pid = vm.wait_active("gatehouse-agent.service", Duration::from_secs(5));
    vm.ok(&[
        "dpkg",
        "-i",
        "/root/pkgs/controller-2.deb",
        "/root/pkgs/agent-2.deb",
    ]);
    for name in ["gatehouse-controller", "gatehouse-agent"] {
        let version = vm.ok(&["dpkg-query", "-W", "-f=${Version}", name]);
        assert_eq!(version, format!("{VERSION}-2"));
    }
    let new_controller = vm.wait_active("gatehouse-controller.service", Duration::from_secs(30));
    let new_agent = vm.wait_active("gatehouse-agent.service", Duration::from_secs(30));
    assert_ne!(
        new_controller, controller_pid,
        "upgrade restarts the controller"
    );
    assert_ne!(new_agent, agent_pid, "upgrade restarts the agent");
    assert_eq!(vm.ok(&["cat", "/etc/gatehouse/agent.toml"]), agent_toml);
    assert_eq!(agent_id(&vm), id);
    wait_online(&vm, &id);

    // Remove keeps state; purge deletes it and the units.
    vm.ok(&["dpkg", "--remove", "gatehouse-agent"]);
    assert_eq!(
        vm.property("gatehouse-agent.service", "LoadState"),
        "not-found"
    );
    assert!(vm.exists("/etc/gatehouse/tls/agent.pem"));
    assert!(vm.exists("/var/lib/gatehouse-agent/enrollment.json"));
    assert!(
        vm.exists("/etc/gatehouse/agent.toml"),
        "remove keeps conffiles"
    );
    vm.ok(&["dpkg", "--purge", "gatehouse-agent"]);
    for gone in [
        "/etc/gatehouse/tls",
        "/var/lib/gatehouse-agent",
        "/etc/gatehouse/agent.toml",
    ] {
        assert!(!vm.exists(gone), "{gone} survived the purge");
    }

    vm.ok(&["dpkg", "--remove", "gatehouse-controller"]);
    assert_eq!(
        vm.property("gatehouse-controller.service", "ActiveState"),
        "inactive"
    );
    assert!(vm.exists("/var/lib/gatehouse-controller/gatehouse.db"));
    vm.ok(&["dpkg", "--purge", "gatehouse-controller"]);
    assert!(!vm.exists("/var/lib/gatehouse-controller"));
    assert!(!vm.exists("/lib/systemd/system/gatehouse-controller.service"));
    assert_eq!(
        vm.property("gatehouse-controller.service", "LoadState"),
        "not-found"
    );
}

/// Paths a package installs, with Debian's /lib spelled /usr/lib (usrmerge: the same place).
fn normalise(paths: impl Iterator<Item = String>) -> BTreeSet<String> {
    paths
        .map(|p| {
            let p = p.trim_start_matches('.').to_owned();
            match p.strip_prefix("/lib/") {
                Some(rest) => format!("/usr/lib/{rest}"),
                None => p,
            }
        })
        .filter(|p| !p.is_empty() && !p.ends_with('/'))
        .collect()
}

#[test]
fn the_packaged_controller_has_no_dev_mode_and_says_how_to_get_it() {
    let controller = target_dir().join("release/gatehouse-controller");
    let out = std::process::Command::new(&controller)
        .arg("dev")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (run packaging/build first)", controller.display()));
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no dev mode"), "{err}");
    assert!(
        err.contains("cargo run --bin gatehouse-controller -- dev"),
        "{err}"
    );
}

#[test]
fn rpms_hold_the_same_files_units_and_scripts_as_the_debs() {
    gatehouse_testkit::process::external("rpm", &[], "rpm");
    let root = target_dir().parent().expect("workspace").to_owned();
    for (name, dir) in [
        ("gatehouse-agent", "agent"),
        ("gatehouse-controller", "controller"),
    ] {
        let rpm = rpm(name);
        let rpm = rpm.to_str().unwrap();
        let rpm_files = normalise(run("rpm", &["-qlp", rpm]).lines().map(str::to_owned));
        let deb_files = normalise(
            run("dpkg-deb", &["-c", deb(name).to_str().unwrap()])
                .lines()
                .filter(|l| !l.starts_with('d'))
                .filter_map(|l| l.split_whitespace().nth(5).map(str::to_owned))
                // Debian policy's copyright file; RPM has no such rule.
                .filter(|p| !p.ends_with(&format!("/doc/{name}/copyright"))),
        );
        assert_eq!(
            rpm_files, deb_files,
            "{name}: rpm and deb install different files"
        );
        assert!(rpm_files.contains(&format!("/usr/lib/systemd/system/{name}.service")));
        if name == "gatehouse-agent" {
            assert!(
                rpm_files.contains("/usr/lib/systemd/system/gatehouse-tunnel@.service"),
                "{rpm_files:?}"
            );
        }
        // Man pages (and for gatehousectl, shell completions) from the clap definitions.
        assert!(
            rpm_files.contains(&format!("/usr/share/man/man1/{name}.1.gz")),
            "{rpm_files:?}"
        );
        if name == "gatehouse-controller" {
            for path in [
                "/usr/share/man/man1/gatehousectl.1.gz",
                "/usr/share/man/man1/gatehousectl-agents-status.1.gz",
                "/usr/share/bash-completion/completions/gatehousectl",
                "/usr/share/zsh/vendor-completions/_gatehousectl",
                "/usr/share/fish/vendor_completions.d/gatehousectl.fish",
            ] {
                assert!(rpm_files.contains(path), "{name}: no {path}");
            }
        }

        // The default config is a config file in both, so an upgrade keeps local changes.
        let config = format!("/etc/gatehouse/{dir}.toml");
        assert_eq!(run("rpm", &["-qcp", rpm]).trim(), config);
        let conffiles = run(
            "dpkg-deb",
            &["-I", deb(name).to_str().unwrap(), "conffiles"],
        );
        assert_eq!(conffiles.trim(), config);

        // The scriptlets are the maintainer scripts, word for word.
        let scripts = run("rpm", &["-qp", "--scripts", rpm]);
        for (section, file) in [
            ("postinstall scriptlet", "postinst"),
            ("preuninstall scriptlet", "prerm"),
            ("postuninstall scriptlet", "postrm"),
        ] {
            assert!(
                scripts.contains(section),
                "{name}: no {section}:\n{scripts}"
            );
            let body = std::fs::read_to_string(root.join("packaging").join(dir).join(file))
                .expect("maintainer script");
            assert!(
                scripts.contains(body.trim_end()),
                "{name}: the {section} is not packaging/{dir}/{file}"
            );
        }

        let requires = run("rpm", &["-qp", "--requires", rpm]);
        assert!(
            requires.lines().any(|l| l.trim() == "systemd"),
            "{requires}"
        );
    }
    let recommends = run(
        "rpm",
        &[
            "-qp",
            "--recommends",
            rpm("gatehouse-agent").to_str().unwrap(),
        ],
    );
    assert!(recommends.contains("caddy") && recommends.contains("wireguard-tools"));
    let suggests = run(
        "rpm",
        &[
            "-qp",
            "--suggests",
            rpm("gatehouse-agent").to_str().unwrap(),
        ],
    );
    assert!(suggests.contains("wireguard-go"));
    let control = run(
        "dpkg-deb",
        &["-f", deb("gatehouse-agent").to_str().unwrap()],
    );
    assert!(
        control.contains("Recommends: caddy, wireguard-tools"),
        "{control}"
    );
    assert!(control.contains("Suggests: wireguard-go"), "{control}");
}

/// Uncomments every `#key = value` line of a shipped config file except those in `skip`.
fn uncomment_settings(text: &str, skip: &[&str]) -> String {
    text.lines()
        .map(|line| match line.strip_prefix('#') {
            Some(setting)
                if setting.contains(" = ")
                    && !setting.starts_with(' ')
                    && !skip.iter().any(|k| setting.starts_with(&format!("{k} ="))) =>
            {
                setting
            }
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_packaged_configs_parse_and_document_the_defaults() {
    use gatehouse_agent::config::Config as AgentConfig;
    use gatehouse_controller::config::Config as ControllerConfig;

    let shipped = include_str!("../packaging/agent/agent.toml");
    let path = Path::new("/etc/gatehouse/agent.toml");
    let defaults = format!("{:?}", AgentConfig::with_root(Path::new("/")));
    let parsed = AgentConfig::parse(path, shipped).expect("the shipped agent.toml parses");
    assert_eq!(format!("{parsed:?}"), defaults);
    // Every commented-out value is the default it says it is.
    let explicit = uncomment_settings(shipped, &["controller", "ca_hash"]);
    assert_ne!(explicit, shipped);
    let parsed = AgentConfig::parse(path, &explicit).expect("the uncommented agent.toml parses");
    assert_eq!(format!("{parsed:?}"), defaults);

    let shipped = include_str!("../packaging/controller/controller.toml");
    let path = Path::new("/etc/gatehouse/controller.toml");
    let defaults = format!(
        "{:?}",
        ControllerConfig::load(Path::new("/nonexistent/controller.toml"), false).unwrap()
    );
    let parsed =
        ControllerConfig::parse(path, shipped).expect("the shipped controller.toml parses");
    assert_eq!(format!("{parsed:?}"), defaults);
    let explicit = uncomment_settings(shipped, &["server_names"]);
    assert_ne!(explicit, shipped);
    let parsed =
        ControllerConfig::parse(path, &explicit).expect("the uncommented controller.toml parses");
    assert_eq!(format!("{parsed:?}"), defaults);
}

/// The same scripts under rpm's numeric arguments: install (1), reinstall as an upgrade (2),
/// erase (0). `--nodeps` because the box is Debian: its libraries are not in the rpm database.
#[test]
fn rpms_install_upgrade_and_erase_with_the_same_scripts() {
    gatehouse_testkit::process::external("rpm", &[], "rpm");
    let controller_rpm = rpm("gatehouse-controller");
    let agent_rpm = rpm("gatehouse-agent");
    let vm = SystemBox::boot(&[
        (&controller_rpm, "/root/pkgs/controller.rpm"),
        (&agent_rpm, "/root/pkgs/agent.rpm"),
    ]);
    let pkgs = ["/root/pkgs/controller.rpm", "/root/pkgs/agent.rpm"];
    let rpm_in_box = |args: &[&str]| {
        let mut argv = vec!["rpm", "--nodeps"];
        argv.extend_from_slice(args);
        vm.ok(&argv)
    };

    rpm_in_box(&[&["-i"][..], &pkgs[..]].concat());
    let pid = vm.wait_active("gatehouse-controller.service", Duration::from_secs(30));
    let user = vm.ok(&["ps", "-o", "user=", "-p", &pid.to_string()]);
    assert_eq!(user.trim(), "gatehouse-controller");
    assert_eq!(
        vm.property("gatehouse-agent.service", "UnitFileState"),
        "enabled"
    );
    assert_eq!(
        vm.property("gatehouse-agent.service", "ConditionResult"),
        "no"
    );

    // An upgrade (here: the same version again) restarts the controller and keeps its state.
    rpm_in_box(&[&["-U", "--replacepkgs"][..], &pkgs[..]].concat());
    let restarted = vm.wait_active("gatehouse-controller.service", Duration::from_secs(30));
    assert_ne!(restarted, pid, "the upgrade restarts the controller");
    assert_eq!(
        vm.property("gatehouse-controller.service", "UnitFileState"),
        "enabled"
    );

    // Erase stops and disables it; the store stays (rpm has no purge).
    rpm_in_box(&["-e", "gatehouse-controller", "gatehouse-agent"]);
    assert_eq!(
        vm.property("gatehouse-controller.service", "LoadState"),
        "not-found"
    );
    assert!(
        vm.run(&["pgrep", "-f", "^/usr/bin/gatehouse-controller"])
            .stdout
            .is_empty(),
        "the controller still runs after rpm -e"
    );
    assert!(vm.exists("/var/lib/gatehouse-controller/gatehouse.db"));
    assert!(vm.exists("/var/lib/gatehouse-agent"));
}
