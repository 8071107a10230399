//! Sites survive: the controller stopped, the agent restarted, a snippet deleted by hand while
//! the controller is away, the agent killed in the middle of applies.

#[path = "support/sites.rs"]
mod support;

use support::*;

#[test]
fn sites_keep_serving_with_the_controller_stopped_and_the_agent_restarted() {
    let mut f = fleet("");
    let upstream = Upstream::start("independent");
    f.create_site("www.example.test", &upstream, &["--name", "www"]);
    f.wait_site("www", "applied");
    let served = served_serial(&f.caddy, "www.example.test");

    f.controller.stop();
    f.agent.kill();
    f.agent.run();
    f.agent.wait_status(
        "the persisted state reapplied",
        Duration::from_secs(20),
        |s| s["applied_from"] == "persisted" && s["failed_attempts"].as_u64().unwrap() >= 1,
    );
    assert_eq!(f.get("www.example.test").unwrap(), "independent");
    assert_eq!(
        served_serial(&f.caddy, "www.example.test"),
        served,
        "nothing was re-issued or torn down"
    );
    assert!(
        f.agent.log().contains("Caddy sites up to date")
            || !f.agent.log().contains("Caddy sites applied")
    );
}

#[test]
fn a_snippet_deleted_by_hand_while_the_controller_is_away_is_written_again() {
    let mut f = fleet_with("", "recheck_interval = \"2s\"\n");
    let upstream = Upstream::start("still served");
    f.create_site("www.example.test", &upstream, &["--name", "www"]);
    f.wait_site("www", "applied");
    let snippet = f.agent.root.join("etc/caddy/gatehouse.d/www.caddy");
    let content = std::fs::read_to_string(&snippet).unwrap();

    f.controller.stop();
    std::fs::remove_file(&snippet).unwrap();
    wait_for(
        "the agent writes the snippet again",
        Duration::from_secs(20),
        || {
            std::fs::read_to_string(&snippet)
                .ok()
                .filter(|c| *c == content)
        },
    );
    let status = f.agent.status().unwrap();
    assert_eq!(status["connected"], false, "{status}");
    // Caddy reloaded with it and serves the site (a request may meet the reload's reset).
    wait_for("the site served", Duration::from_secs(10), || {
        f.get("www.example.test")
            .ok()
            .filter(|body| body == "still served")
    });
    assert!(
        f.agent.log().contains("Caddy sites applied"),
        "{}",
        f.agent.log()
    );
}

/// Every file gatehouse manages on the host is whole and has its mode.
fn assert_files_whole(f: &Fleet) {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let sites_dir = f.agent.root.join("etc/caddy/gatehouse.d");
    for entry in std::fs::read_dir(&sites_dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue; // a temporary file of an interrupted write, never read by Caddy
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# Managed by gatehouse") && text.ends_with("}\n"),
            "{name} is not whole:\n{text}"
        );
        assert_eq!(mode(&path), 0o644, "{name}");
    }
    let certs_dir = f.agent.root.join("etc/gatehouse/tls/sites");
    for entry in std::fs::read_dir(&certs_dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        if name.ends_with(".crt") {
            gatehouse_agent::pki::CertInfo::from_pem(&text)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        } else {
            assert!(
                text.starts_with("-----BEGIN PRIVATE KEY-----")
                    && text.trim_end().ends_with("-----END PRIVATE KEY-----"),
                "{name}"
            );
        }
        assert_eq!(mode(&path), 0o600, "{name}");
    }
    let paths = f.agent.paths();
    gatehouse_agent::state::load(&paths).expect("the persisted desired state is whole");
    assert_eq!(mode(&paths.desired_state()), 0o600);
    let index = std::fs::read(paths.certificates_index()).unwrap();
    serde_json::from_slice::<Value>(&index).expect("the certificate index is whole");
    let caddyfile = std::fs::read_to_string(&f.caddy.caddyfile).unwrap();
    assert_eq!(caddyfile.matches("import ").count(), 1);
}

#[test]
fn killing_the_agent_during_200_applies_never_leaves_a_half_written_file() {
    let mut f = fleet("");
    let upstream = Upstream::start("ok");
    f.create_site("k.example.test", &upstream, &["--name", "k"]);
    f.wait_site("k", "applied");
    let mut kills = 0;
    for i in 0..200u32 {
        if i % 25 == 24 {
            f.controller
                .ctl_json(&["cert", "reissue", "--agent", &f.id, "k"]);
        } else {
            let header = format!("X-Generation=n{i}");
            f.create_site(
                "k.example.test",
                &upstream,
                &["--name", "k", "--header", &header],
            );
        }
        let generation = f.controller.agent_view(&f.id)["desired_generation"]
            .as_u64()
            .unwrap();
        if i % 10 == 7 {
            // Somewhere in the middle of this apply, or just after it.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos();
            std::thread::sleep(Duration::from_millis(u64::from(nanos % 150)));
            f.agent.kill();
            kills += 1;
            assert_files_whole(&f);
            f.agent.run();
        } else {
            wait_for("the apply", Duration::from_secs(20), || {
                (f.controller.agent_view(&f.id)["applied_generation"]
                    .as_u64()
                    .unwrap()
                    >= generation)
                    .then_some(())
            });
        }
    }
    assert_eq!(kills, 20);
    // The last start converges on the newest generation, and Caddy serves it.
    let last = f.controller.agent_view(&f.id)["desired_generation"]
        .as_u64()
        .unwrap();
    wait_for("convergence", Duration::from_secs(60), || {
        let v = f
            .controller
            .ctl_json(&["site", "show", "--agent", &f.id, "k"]);
        (f.controller.agent_view(&f.id)["applied_generation"] == last && v["state"] == "applied")
            .then_some(())
    });
    assert_files_whole(&f);
    assert_eq!(
        f.header("k.example.test", "X-Generation").as_deref(),
        Some("n198")
    );
    assert_eq!(f.get("k.example.test").unwrap(), "ok");
}
