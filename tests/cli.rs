//! The binaries as a new user meets them: dev mode, and bad config files.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use gatehouse_testkit::process::bin;
use gatehouse_testkit::{free_port, wait_for};

/// Starts `gatehouse-controller dev` on free ports: the process, its further output lines, and
/// its banner.
fn start_dev(
    http_port: u16,
) -> (
    std::process::Child,
    std::sync::mpsc::Receiver<String>,
    String,
) {
    let (agent_port, admin_port) = (free_port(), free_port());
    let mut dev = Command::new(bin("gatehouse-controller"))
        .args(["dev", "--agent-listen", &format!("127.0.0.1:{agent_port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
        .args(["--http-listen", &format!("127.0.0.1:{http_port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = dev.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut banner = Vec::new();
    wait_for("the dev banner", Duration::from_secs(60), || {
        while let Ok(line) = rx.try_recv() {
            banner.push(line);
        }
        banner
            .iter()
            .any(|l| l.contains("Press Ctrl-C"))
            .then_some(())
    });
    (dev, rx, banner.join("\n"))
}

#[test]
fn dev_mode_runs_a_controller_and_an_agent_and_stops_cleanly_on_ctrl_c() {
    let http_port = free_port();
    let (mut dev, rx, text) = start_dev(http_port);
    let data = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("data:"))
        .and_then(|l| l.split_whitespace().next())
        .expect("data dir in banner")
        .to_owned();
    assert!(text.contains("temporary, removed on exit"), "{text}");

    // The printed commands work as printed.
    for prefix in ["gatehousectl --socket", "gatehousectl --controller"] {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix) && l.ends_with("agents list"))
            .unwrap_or_else(|| panic!("no `{prefix}` command in:\n{text}"));
        let args: Vec<&str> = line.split_whitespace().skip(1).collect();
        let agents = wait_for("the local agent online", Duration::from_secs(30), || {
            let out = Command::new(bin("gatehousectl"))
                .args(&args)
                .args(["--output", "json"])
                .output()
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            (v[0]["status"] == "online").then_some(v)
        });
        assert_eq!(agents.as_array().unwrap().len(), 1);
        assert_eq!(agents[0]["labels"]["dev"], "true");
    }

    // The metrics URL in the banner answers, and counts the local agent.
    let metrics_url = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("metrics:"))
        .and_then(|l| l.split_whitespace().next())
        .expect("a metrics URL in the banner")
        .to_owned();
    assert_eq!(metrics_url, format!("http://127.0.0.1:{http_port}/metrics"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (health, metrics) = rt.block_on(async {
        let health = reqwest::get(format!("http://127.0.0.1:{http_port}/healthz"))
            .await
            .unwrap();
        let metrics = reqwest::get(&metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        (health.status(), metrics)
    });
    assert_eq!(health, reqwest::StatusCode::OK);
    assert!(
        metrics.contains("gatehouse_agents{status=\"online\"} 1"),
        "{metrics}"
    );

    // Cloudflare is the emulator, and it says so; its zone answers through the admin API.
    assert!(text.contains("EMULATOR (not Cloudflare)"), "{text}");
    let zones_line = text
        .lines()
        .map(str::trim)
        .find(|l| l.ends_with("cloudflare zones"))
        .expect("a cloudflare zones command");
    let args: Vec<&str> = zones_line.split_whitespace().skip(1).collect();
    let out = Command::new(bin("gatehousectl"))
        .args(&args)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("dev.gatehouse.test"),
        "{out:?}"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dev.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = wait_for("dev mode to exit", Duration::from_secs(20), || {
        dev.try_wait().unwrap()
    });
    assert!(status.success(), "{status:?}");
    let mut rest = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) {
        rest.push(line);
    }
    assert!(
        rest.iter().any(|l| l.contains("dev mode stopped")),
        "{rest:?}"
    );
    assert!(
        !std::path::Path::new(&data).exists(),
        "{data} was not removed"
    );
}

#[test]
fn bad_config_files_stop_with_a_message_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "gatehouse-controller",
            "report_interval = \"often\"\n",
            "`report_interval`",
        ),
        (
            "gatehouse-controller",
            "agent_listen = \"nowhere\"\n",
            "`agent_listen`",
        ),
        ("gatehouse-controller", "not toml at all", "controller.toml"),
        (
            "gatehouse-agent",
            "controller = \"http://plain\"\n",
            "`controller`",
        ),
        ("gatehouse-agent", "colour = \"blue\"\n", "colour"),
    ];
    for (program, text, expected) in cases {
        let name = if program == "gatehouse-agent" {
            "agent.toml"
        } else {
            "controller.toml"
        };
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = Command::new(bin(program))
            .arg("--config")
            .arg(&path)
            .arg("run")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{program} {text}: {stderr}");
        assert!(stderr.contains(expected), "{program} {text}: {stderr}");
    }
    // A config file that is named but missing is an error too.
    let out = Command::new(bin("gatehouse-agent"))
        .args(["--config", "/nonexistent/agent.toml", "run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/agent.toml"));
}

#[test]
fn an_agent_that_never_enrolled_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!("root = {:?}\n", dir.path().display().to_string()),
    )
    .unwrap();
    let out = Command::new(bin("gatehouse-agent"))
        .arg("--config")
        .arg(&config)
        .arg("run")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not enrolled") && stderr.contains("gatehouse-agent enroll"),
        "{stderr}"
    );
}

#[test]
fn help_puts_a_commands_own_options_first_and_completions_and_man_pages_are_generated() {
    let help = Command::new(bin("gatehousectl"))
        .args(["agents", "status", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let options = help.find("Options:").expect("an Options heading");
    let connection = help.find("Connection:").expect("a Connection heading");
    assert!(options < connection, "{help}");
    let after = &help[connection..];
    for flag in ["--controller", "--ca-file", "--token", "--socket"] {
        assert!(after.contains(flag), "{flag} under Connection:\n{help}");
        assert!(
            !help[..connection].contains(flag),
            "{flag} before Connection:\n{help}"
        );
    }

    for shell in ["bash", "zsh", "fish"] {
        let script = Command::new(bin("gatehousectl"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(script.status.success());
        let text = String::from_utf8_lossy(&script.stdout);
        assert!(
            text.contains("agents") && text.contains("--controller"),
            "{shell}"
        );
    }
    // bash itself reads the bash script.
    let bash = Command::new("bash")
        .args([
            "-c",
            "source <(\"$0\" completions bash) && complete -p gatehousectl",
        ])
        .arg(bin("gatehousectl"))
        .output()
        .unwrap();
    assert!(
        bash.status.success(),
        "{}",
        String::from_utf8_lossy(&bash.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    for program in ["gatehousectl", "gatehouse-agent", "gatehouse-controller"] {
        let run = Command::new(bin(program))
            .arg("man")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(run.status.success(), "{program} man");
        let page = std::fs::read_to_string(dir.path().join(format!("{program}.1"))).unwrap();
        assert!(
            page.starts_with(".ie") || page.contains(".TH"),
            "{program}.1:\n{page}"
        );
    }
    assert!(dir.path().join("gatehousectl-agents-status.1").exists());
}

#[test]
fn dev_mode_with_caddy_on_path_serves_a_site_made_from_the_printed_commands() {
    let http_port = free_port();
    let (mut dev, _rx, text) = start_dev(http_port);
    let printed = |start: &str, has: &str| -> Vec<String> {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(start) && l.contains(has))
            .unwrap_or_else(|| panic!("no `{start} … {has}` line in:\n{text}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    assert!(text.contains("dev Caddy on https 127.0.0.1:"), "{text}");

    // The status page link signs in once.
    let link = printed("status page:", "/ui/login/")[2].clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let status = rt.block_on(async { client.get(&link).send().await.unwrap().status() });
    assert_eq!(status, reqwest::StatusCode::SEE_OTHER, "{link}");

    // The printed site command, then the printed curl, as printed.
    let create = printed("gatehousectl --socket", "site create");
    let out = Command::new(bin("gatehousectl"))
        .args(&create[1..])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let curl = printed("curl", "hello.localhost");
    let body = wait_for(
        "the site to answer through Caddy",
        Duration::from_secs(60),
        || {
            let out = Command::new(&curl[0])
                .args(&curl[1..])
                .args(["--silent", "--fail", "--max-time", "5"])
                .output()
                .unwrap();
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        },
    );
    assert_eq!(
        body, "ok\n",
        "the controller's /healthz through the dev Caddy"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dev.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = wait_for("dev mode to exit", Duration::from_secs(30), || {
        dev.try_wait().unwrap()
    });
    assert!(status.success(), "{status:?}");
    let port: u16 = curl
        .iter()
        .find_map(|a| {
            a.strip_prefix("hello.localhost:")?
                .split(':')
                .next()?
                .parse()
                .ok()
        })
        .expect("the Caddy port in the curl line");
    wait_for(
        "the dev Caddy to stop with dev mode",
        Duration::from_secs(10),
        || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .is_err()
                .then_some(())
        },
    );
}
