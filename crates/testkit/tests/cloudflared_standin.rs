//! The cloudflared stand-in against the emulator's edge: it runs on a tunnel's token, holds the
//! connections Cloudflare then lists, answers `/ready`, turns unready when told, and drops its
//! connections when stopped.

use std::process::{Command, Stdio};
use std::time::Duration;

use gatehouse_testkit::cloudflare::Emulator;
use gatehouse_testkit::gatehouse::http_get;
use gatehouse_testkit::process::bin;
use gatehouse_testkit::{free_port, wait_for};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[test]
fn the_stand_in_connects_with_its_token_reports_readiness_and_disconnects_on_stop() {
    let emulator = Emulator::start();
    let (id, token) = emulator.add_tunnel("odoo-acme");
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &token).unwrap();
    let port = free_port();
    let metrics = format!("127.0.0.1:{port}");
    let mut child = Command::new(bin("cloudflared-standin"))
        .args([
            "tunnel",
            "--no-autoupdate",
            "--metrics",
            &metrics,
            "run",
            "--token-file",
        ])
        .arg(&token_file)
        .env("CLOUDFLARED_STANDIN_EDGE", emulator.edge_url())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let connections = || {
        emulator
            .tunnels()
            .into_iter()
            .find(|t| t.id == id)
            .map_or(0, |t| t.connections.len())
    };
    wait_for(
        "four connections at the edge",
        Duration::from_secs(10),
        || (connections() == 4).then_some(()),
    );
    let (status, body) = wait_for("/ready", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        Some(http_get(port, "/ready"))
    });
    assert_eq!(status, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["readyConnections"], 4);

    let pid = Pid::from_raw(child.id() as i32);
    kill(pid, Signal::SIGUSR1).unwrap();
    wait_for("unready", Duration::from_secs(10), || {
        (http_get(port, "/ready").0 == 503).then_some(())
    });
    kill(pid, Signal::SIGTERM).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(
        connections(),
        0,
        "a stopped connector drops its connections"
    );
}

#[test]
fn a_bad_token_or_one_the_edge_refuses_stops_the_stand_in_with_the_reason() {
    let emulator = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let run = |token: &str| {
        let file = dir.path().join("token");
        std::fs::write(&file, token).unwrap();
        Command::new(bin("cloudflared-standin"))
            .args(["tunnel", "--no-autoupdate", "run", "--token-file"])
            .arg(&file)
            .env("CLOUDFLARED_STANDIN_EDGE", emulator.edge_url())
            .output()
            .unwrap()
    };
    let garbage = run("not a token");
    assert!(!garbage.status.success());
    assert!(String::from_utf8_lossy(&garbage.stdout).contains("token is not valid"));
    // Well formed, but no tunnel has this secret.
    let (id, _) = emulator.add_tunnel("t");
    let forged = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!(
            r#"{{"a":"{}","t":"{id}","s":"AAAA"}}"#,
            emulator.account_id()
        ),
    );
    let refused = run(&forged);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stdout).contains("refused the tunnel token"),
        "{}",
        String::from_utf8_lossy(&refused.stdout)
    );
}
