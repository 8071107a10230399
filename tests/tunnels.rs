//! Cloudflare Tunnels end to end: a real systemd booted in a box runs the packaged agent unit,
//! which runs each tunnel as `gatehouse-tunnel@NAME.service` with the cloudflared stand-in
//! (TESTING.md); the controller and the Cloudflare emulator run on the host side of a veth
//! link, and the stand-in registers its connections with the emulator's edge, so Cloudflare's
//! view is real end to end.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use gatehouse_testkit::cloudflare::Emulator;
use gatehouse_testkit::gatehouse::{Controller, Run, packaged_agent};
use gatehouse_testkit::process::bin;
use gatehouse_testkit::systembox::SystemBox;
use gatehouse_testkit::wait_for;
use serde_json::Value;

const TOKEN: &str = "cf-token-tunnels-e2e";
const ZONE: &str = "example.test";
const STATE: &str = "/var/lib/gatehouse-agent/tunnels";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// A booted host running the packaged agent unit, its controller and Cloudflare.
struct Fleet {
    vm: SystemBox,
    controller: Controller,
    emulator: Emulator,
    agent: String,
    zone: String,
}

impl Fleet {
    fn boot() -> Self {
        let agent_bin = bin("gatehouse-agent");
        let standin = bin("cloudflared-standin");
        let units = [
            repo("systemd/gatehouse-agent.service"),
            repo("systemd/gatehouse-agent-enroll.service"),
        ];
        let vm = SystemBox::boot(&[
            (agent_bin.as_path(), "/usr/bin/gatehouse-agent"),
            (standin.as_path(), "/usr/local/bin/cloudflared"),
            (
                units[0].as_path(),
                "/etc/systemd/system/gatehouse-agent.service",
            ),
            (
                units[1].as_path(),
                "/etc/systemd/system/gatehouse-agent-enroll.service",
            ),
        ]);
        let (host, _) = vm.link();
        let emulator = Emulator::start_on(
            SocketAddr::new(IpAddr::V4(host), 0),
            SocketAddr::new(IpAddr::V4(host), 0),
        );
        emulator.add_token(TOKEN);
        let zone = emulator.add_zone(ZONE);
        let controller = Controller::start_on(IpAddr::V4(host), "");
        add_account(&controller, &emulator);
        vm.ok(&["mkdir", "-p", "/etc/cloudflared-standin"]);
        vm.write("/etc/cloudflared-standin/edge", &emulator.edge_url(), 0o644);
        let agent = packaged_agent(
            &vm,
            &controller,
            "log = \"info,gatehouse_agent=debug\"\n[caddy]\nenabled = false\n\
             [tunnels]\ncloudflared = \"/usr/local/bin/cloudflared\"\n\
             check_interval = \"1s\"\nrestart_unready_after = \"4s\"\n",
        );
        Self {
            vm,
            controller,
            emulator,
            agent,
            zone,
        }
    }

    fn ctl(&self, args: &[&str]) -> Run {
        self.controller.ctl(args)
    }

    /// `gatehousectl … --output json`, which must succeed.
    fn json(&self, args: &[&str]) -> Value {
        let run = self.ctl(&[args, &["--output", "json"]].concat());
        assert!(
            run.success,
            "gatehousectl {args:?} failed:\n{}{}\nagent journal:\n{}",
            run.stdout,
            run.stderr,
            self.vm.journal("gatehouse-agent.service")
        );
        serde_json::from_str(&run.stdout).expect("JSON")
    }

    fn create(&self, name: &str, routes: &[&str]) -> Value {
        let mut args = vec!["tunnel", "create", "--agent", &self.agent, "--name", name];
        for r in routes {
            args.extend(["--route", r]);
        }
        self.json(&args)
    }

    fn show(&self, name: &str) -> Value {
        self.json(&["tunnel", "show", name])
    }

    /// Waits until both sides see the tunnel connected: the host's `/ready` and Cloudflare's
    /// connection list.
    fn wait_ready(&self, name: &str) -> Value {
        wait_for(
            &format!("tunnel {name} ready on both sides"),
            Duration::from_secs(60),
            || {
                let t = self.show(name);
                let host_ready = t["host"]["ready"].as_bool() == Some(true);
                let cf = t["cloudflare"]["connections"]
                    .as_array()
                    .map_or(0, Vec::len);
                (host_ready && cf > 0 && t["warnings"].as_array().is_some_and(Vec::is_empty))
                    .then_some(t)
            },
        )
    }

    fn unit(name: &str) -> String {
        format!("gatehouse-tunnel@{name}.service")
    }

    fn main_pid(&self, name: &str) -> u32 {
        self.vm
            .property(&Self::unit(name), "MainPID")
            .parse()
            .unwrap_or(0)
    }

    /// A file in the box as the host sees it (the overlay's upper directory).
    fn file(&self, path: &str) -> PathBuf {
        self.vm.upper().join(path.trim_start_matches('/'))
    }

    fn records(&self, name: &str) -> Vec<gatehouse_testkit::cloudflare::Record> {
        self.emulator
            .records(&self.zone)
            .into_iter()
            .filter(|r| r.name == name)
            .collect()
    }

    fn live_tunnel(&self, name: &str) -> Option<gatehouse_testkit::cloudflare::Tunnel> {
        self.emulator
            .tunnels()
            .into_iter()
            .find(|t| t.name == name && t.deleted_at.is_none())
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for unit in [
                "gatehouse-agent.service",
                "gatehouse-tunnel@odoo.service",
                "gatehouse-tunnel@shop.service",
            ] {
                eprintln!("--- {unit} ---\n{}", self.vm.journal(unit));
            }
        }
    }
}

fn add_account(controller: &Controller, emulator: &Emulator) {
    let run = controller.add_cloudflare_account("main", TOKEN, &emulator.api_url);
    assert!(run.success, "{}{}", run.stdout, run.stderr);
}

/// Whether any process on the machine has `secret` in its argv or environment.
fn in_any_process(secret: &str) -> Option<String> {
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        for what in ["cmdline", "environ"] {
            if let Ok(bytes) = std::fs::read(entry.path().join(what))
                && String::from_utf8_lossy(&bytes).contains(secret)
            {
                return Some(format!("/proc/{name}/{what}"));
            }
        }
    }
    None
}

/// Connects to the emulator's edge with `token` as connector `client` would: true when
/// accepted. The connection stays until [`edge_disconnect`].
fn edge_connect(emulator: &Emulator, token: &str, client: &str) -> bool {
    edge_post(
        emulator,
        "connect",
        serde_json::json!({"token": token, "client_id": client, "client_version": "test"}),
    )
}

fn edge_disconnect(emulator: &Emulator, client: &str) {
    assert!(edge_post(
        emulator,
        "disconnect",
        serde_json::json!({"client_id": client})
    ));
}

fn edge_post(emulator: &Emulator, what: &str, body: Value) -> bool {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        reqwest::Client::new()
            .post(format!("{}/{what}", emulator.edge_url()))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    })
}

/// Whether the edge accepts `token` for a new connection (which is then dropped again).
fn edge_accepts(emulator: &Emulator, token: &str) -> bool {
    let ok = edge_connect(emulator, token, "probe");
    if ok {
        edge_disconnect(emulator, "probe");
    }
    ok
}

#[test]
fn tunnels_run_rotate_heal_and_leave_nothing_behind_under_systemd() {
    let f = Fleet::boot();

    // Create: the unit runs with its token in a 0600 file, nowhere else.
    let created = f.create(
        "odoo",
        &[
            "odoo.example.test=http://172.16.16.105:8069",
            "admin.example.test=http_status:403",
        ],
    );
    assert_eq!(created["state"], "ready", "{created}");
    let tunnel_id = created["tunnel_id"].as_str().unwrap().to_owned();
    let first_pid =
        f.vm.wait_active(&Fleet::unit("odoo"), Duration::from_secs(60));
    let token_file = f.file(&format!("{STATE}/odoo/token"));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&token_file), 0o600);
    assert_eq!(mode(token_file.parent().unwrap()), 0o700);
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert!(token.len() > 40);
    assert_eq!(in_any_process(&token), None, "the token leaked");
    assert!(
        !f.vm
            .journal("gatehouse-agent.service")
            .contains(token.trim())
    );

    // Cloudflare holds the canonical ingress and one proxied, marked CNAME per hostname.
    let cf = f.live_tunnel("odoo").expect("the tunnel at Cloudflare");
    assert_eq!(cf.config_src, "cloudflare");
    let ingress = &cf.config.as_ref().unwrap()["ingress"];
    let rules: Vec<(Value, Value)> = ingress
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["hostname"].clone(), r["service"].clone()))
        .collect();
    assert_eq!(
        rules,
        [
            ("admin.example.test".into(), "http_status:403".into()),
            (
                "odoo.example.test".into(),
                "http://172.16.16.105:8069".into()
            ),
            (Value::Null, "http_status:404".into()),
        ]
    );
    let cname = f.records("odoo.example.test");
    assert_eq!(cname.len(), 1);
    assert_eq!(cname[0].kind, "CNAME");
    assert_eq!(cname[0].content, format!("{tunnel_id}.cfargotunnel.com"));
    assert!(cname[0].proxied);
    let shown = f.wait_ready("odoo");
    let connector = shown["host"]["connector_id"].as_str().unwrap().to_owned();
    assert!(
        shown["cloudflare"]["connections"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["client_id"] == connector.as_str()),
        "{shown}"
    );
    let text = f.ctl(&["tunnel", "show", "odoo"]).stdout;
    assert!(
        text.contains("ready: yes") && text.contains("cloudflare: "),
        "{text}"
    );

    // A second tunnel runs beside it with its own port and files.
    f.create("shop", &["shop.example.test=https://10.0.0.9:8443"]);
    f.vm.wait_active(&Fleet::unit("shop"), Duration::from_secs(60));
    let shop = f.wait_ready("shop");
    let odoo = f.show("odoo");
    assert_ne!(shop["host"]["metrics_port"], odoo["host"]["metrics_port"]);
    assert!(f.file(&format!("{STATE}/shop/token")).exists());
    let listed = f.json(&["tunnel", "list", "--agent", &f.agent]);
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");

    // Logs: the stand-in's journald lines; --follow shows a line written after it started.
    let logs = f.ctl(&["tunnel", "logs", "odoo", "--lines", "50"]);
    assert!(
        logs.success && logs.stdout.contains("Registered tunnel connection"),
        "{}{}",
        logs.stdout,
        logs.stderr
    );
    let mut follow = Command::new(bin("gatehousectl"))
        .args(["--socket"])
        .arg(&f.controller.socket)
        .args(["tunnel", "logs", "odoo", "--lines", "1", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The first line proves the follower is reading before the new line is written.
    rx.recv_timeout(Duration::from_secs(30))
        .expect("a first line");
    f.vm.ok(&["systemctl", "kill", "-s", "USR2", &Fleet::unit("odoo")]);
    let fresh = wait_for(
        "the new line through --follow",
        Duration::from_secs(30),
        || {
            rx.try_recv()
                .ok()
                .filter(|l| l.contains("told to turn ready"))
        },
    );
    assert!(fresh.contains("re-established"));
    follow.kill().unwrap();
    let _ = follow.wait();

    // Restart gives a new main pid.
    assert!(f.ctl(&["tunnel", "restart", "odoo"]).success);
    wait_for("a new main pid", Duration::from_secs(30), || {
        let pid = f.main_pid("odoo");
        (pid != 0 && pid != first_pid).then_some(())
    });
    f.wait_ready("odoo");

    // The controller gone and the agent restarted: the tunnels keep running.
    let running = (f.main_pid("odoo"), f.main_pid("shop"));
    let mut f = f;
    f.controller.stop();
    f.vm.ok(&["systemctl", "restart", "gatehouse-agent.service"]);
    f.vm.wait_active("gatehouse-agent.service", Duration::from_secs(30));
    assert_eq!((f.main_pid("odoo"), f.main_pid("shop")), running);
    assert_eq!(f.vm.property(&Fleet::unit("odoo"), "ActiveState"), "active");
    assert!(!f.live_tunnel("odoo").unwrap().connections.is_empty());
    f.controller.start_again();
    f.wait_ready("odoo");

    // Rotate: a new token file, the old token refused for new connections, ready again.
    assert!(edge_accepts(&f.emulator, token.trim()));
    let rotated = f.json(&["tunnel", "rotate", "odoo"]);
    assert_eq!(rotated["host"]["ready"], true, "{rotated}");
    let new_token = std::fs::read_to_string(&token_file).unwrap();
    assert_ne!(new_token, token);
    assert!(
        !edge_accepts(&f.emulator, token.trim()),
        "the old token still connects"
    );
    assert!(edge_accepts(&f.emulator, new_token.trim()));
    assert_eq!(in_any_process(&new_token), None);
    f.wait_ready("odoo");

    // A connector Cloudflare still lists but the host does not run is flagged.
    assert!(edge_connect(
        &f.emulator,
        new_token.trim(),
        "ghost-connector"
    ));
    let flagged = f.show("odoo");
    assert!(
        flagged["warnings"]
            .to_string()
            .contains("Cloudflare still lists connector ghost-connector"),
        "{flagged}"
    );
    edge_disconnect(&f.emulator, "ghost-connector");
    f.wait_ready("odoo");

    // A connector that turns unready while its unit stays active is restarted.
    let before = f.main_pid("shop");
    f.vm.ok(&["systemctl", "kill", "-s", "USR1", &Fleet::unit("shop")]);
    wait_for("the watchdog's restart", Duration::from_secs(60), || {
        let pid = f.main_pid("shop");
        (pid != 0 && pid != before).then_some(())
    });
    let healed = f.wait_ready("shop");
    assert!(
        healed["host"]["watchdog_restarts"].as_u64() >= Some(1),
        "{healed}"
    );

    // Delete: no unit, no file, no owned record, no tunnel; a record that is not ours stays.
    let foreign = f.emulator.add_record(
        &f.zone,
        "CNAME",
        "odoo2.example.test",
        "elsewhere.example.net",
    );
    let run = f.ctl(&["tunnel", "delete", "odoo", "--yes"]);
    assert!(run.success, "{}{}", run.stdout, run.stderr);
    assert_eq!(
        f.vm.property(&Fleet::unit("odoo"), "ActiveState"),
        "inactive"
    );
    assert!(!f.vm.exists(&format!("{STATE}/odoo")));
    assert!(f.records("odoo.example.test").is_empty());
    assert!(f.records("admin.example.test").is_empty());
    assert!(f.live_tunnel("odoo").is_none());
    assert!(
        f.emulator
            .records(&f.zone)
            .iter()
            .any(|r| r.id == foreign && r.name == "odoo2.example.test")
    );
    assert!(
        !f.vm
            .exists("/etc/systemd/system/multi-user.target.wants/gatehouse-tunnel@odoo.service")
    );
    // The other tunnel is untouched.
    f.wait_ready("shop");
    let audit = f.json(&["audit", "list"]);
    for action in [
        "tunnel.create",
        "tunnel.restart",
        "tunnel.rotate",
        "tunnel.delete",
    ] {
        assert!(audit.to_string().contains(action), "{action} not audited");
    }
}

/// A controller and Cloudflare on loopback, with an enrolled agent that is not running: what
/// happens at Cloudflare does not need the host.
fn offline_fleet() -> (Controller, Emulator, String, String) {
    let emulator = Emulator::start();
    emulator.add_token(TOKEN);
    let zone = emulator.add_zone(ZONE);
    let controller = Controller::start("");
    add_account(&controller, &emulator);
    let agent = controller.agent("host").enroll(&controller);
    (controller, emulator, agent, zone)
}

#[test]
fn a_failure_midway_is_explained_and_finished_and_a_taken_name_is_adopted_or_refused() {
    let (controller, emulator, agent, zone) = offline_fleet();
    let create = |name: &str, route: &str| {
        controller.ctl(&[
            "tunnel", "create", "--agent", &agent, "--name", name, "--route", route,
        ])
    };

    // The tunnel is made, then Cloudflare refuses the configuration.
    emulator.fail_writes_after(1, 1);
    let failed = create("mid", "mid.example.test=http://10.0.0.5:80");
    assert!(!failed.success);
    assert!(
        failed.stderr.contains("stopped at configuring the tunnel")
            && failed.stderr.contains("run the same command again"),
        "{}",
        failed.stderr
    );
    let shown = controller.ctl_json(&["tunnel", "show", "mid"]);
    assert!(
        shown["state"]
            .as_str()
            .unwrap()
            .starts_with("stopped at configuring the tunnel"),
        "{shown}"
    );
    assert!(!shown["tunnel_id"].as_str().unwrap().is_empty());
    let text = controller.ctl(&["tunnel", "show", "mid"]).stdout;
    assert!(text.contains("stopped at configuring the tunnel"), "{text}");
    // Running it again finishes it, with the same tunnel.
    let done = create("mid", "mid.example.test=http://10.0.0.5:80");
    assert!(done.success, "{}", done.stderr);
    let finished = controller.ctl_json(&["tunnel", "show", "mid"]);
    assert_eq!(finished["state"], "ready");
    assert_eq!(finished["tunnel_id"], shown["tunnel_id"]);
    let named: Vec<_> = emulator
        .tunnels()
        .into_iter()
        .filter(|t| t.name == "mid")
        .collect();
    assert_eq!(named.len(), 1);
    assert!(named[0].config.is_some());
    assert!(
        emulator
            .records(&zone)
            .iter()
            .any(|r| r.name == "mid.example.test" && r.kind == "CNAME")
    );

    // A name someone else made in the account is refused, saying what to do.
    emulator.add_tunnel("taken");
    let refused = create("taken", "taken.example.test=http://10.0.0.6:80");
    assert!(!refused.success);
    assert!(
        refused.stderr.contains("already exists") && refused.stderr.contains("another --name"),
        "{}",
        refused.stderr
    );
    let shown = controller.ctl_json(&["tunnel", "show", "taken"]);
    assert!(
        shown["state"].as_str().unwrap().starts_with("refused"),
        "{shown}"
    );
    // Forgetting the refused one touches nothing at Cloudflare.
    let forget = controller.ctl(&["tunnel", "delete", "taken", "--yes"]);
    assert!(forget.success, "{}", forget.stderr);
    assert!(
        emulator
            .tunnels()
            .iter()
            .any(|t| t.name == "taken" && t.deleted_at.is_none())
    );
    // The answer to gatehouse's own create was lost: the retry meets HTTP 409 and adopts it.
    emulator.lose_responses(1);
    let adopted = create("lost", "lost.example.test=http://10.0.0.7:80");
    assert!(adopted.success, "{}", adopted.stderr);
    let lost: Vec<_> = emulator
        .tunnels()
        .into_iter()
        .filter(|t| t.name == "lost")
        .collect();
    assert_eq!(lost.len(), 1, "one tunnel, adopted");
    assert_eq!(
        controller.ctl_json(&["tunnel", "show", "lost"])["tunnel_id"],
        lost[0].id.as_str()
    );
    assert!(controller.log().contains("adopted the tunnel"));

    // A route to a gatehouse site on the same host reaches the local Caddy by the site's name.
    let site = controller.ctl(&[
        "site",
        "create",
        "--agent",
        &agent,
        "--name",
        "shop",
        "--domain",
        "shop.internal.test",
        "--upstream",
        "127.0.0.1:8080",
        "--tls",
        "caddy-internal",
        "--port",
        "8443",
    ]);
    assert!(site.success, "{}", site.stderr);
    let routed = controller.ctl(&[
        "tunnel",
        "route",
        "add",
        "mid",
        "shop.example.test=site:shop",
        "--no-tls-verify",
    ]);
    assert!(routed.success, "{}", routed.stderr);
    let config = |name: &str| {
        emulator
            .tunnels()
            .into_iter()
            .find(|t| t.name == name && t.deleted_at.is_none())
            .and_then(|t| t.config)
            .unwrap()
    };
    let rules = config("mid")["ingress"].as_array().unwrap().clone();
    let shop = rules
        .iter()
        .find(|r| r["hostname"] == "shop.example.test")
        .unwrap();
    assert_eq!(shop["service"], "https://127.0.0.1:8443");
    assert_eq!(
        shop["originRequest"]["originServerName"],
        "shop.internal.test"
    );
    assert_eq!(
        shop["originRequest"]["httpHostHeader"],
        "shop.internal.test"
    );
    assert_eq!(shop["originRequest"]["noTLSVerify"], true);
    assert_eq!(rules.last().unwrap()["service"], "http_status:404");
    let unknown = controller.ctl(&["tunnel", "route", "add", "mid", "x.example.test=site:nope"]);
    assert!(
        !unknown.success && unknown.stderr.contains("no site nope"),
        "{}",
        unknown.stderr
    );
    // Removing a route removes its rule and its record.
    let removed = controller.ctl(&["tunnel", "route", "remove", "mid", "shop.example.test"]);
    assert!(removed.success, "{}", removed.stderr);
    assert!(
        !config("mid")["ingress"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["hostname"] == "shop.example.test")
    );
    assert!(
        !emulator
            .records(&zone)
            .iter()
            .any(|r| r.name == "shop.example.test")
    );

    // A hostname that already has a record gatehouse did not make is not taken over.
    emulator.add_record(&zone, "A", "www.example.test", "192.0.2.1");
    let clash = controller.ctl(&[
        "tunnel",
        "route",
        "add",
        "mid",
        "www.example.test=http://10.0.0.5:80",
    ]);
    assert!(!clash.success);
    assert!(
        clash.stderr.contains("already has DNS records"),
        "{}",
        clash.stderr
    );
    let records = emulator.records(&zone);
    assert!(
        records
            .iter()
            .any(|r| r.name == "www.example.test" && r.kind == "A" && r.content == "192.0.2.1")
    );
    assert!(
        !records
            .iter()
            .any(|r| r.name == "www.example.test" && r.kind == "CNAME")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_names_hostnames_and_services_are_refused_naming_the_field() {
    let (controller, emulator, agent, _) = offline_fleet();
    let cases: &[(&str, &str, &str)] = &[
        ("../etc", "a.example.test=http://x", "tunnel name"),
        ("a@b", "a.example.test=http://x", "tunnel name"),
        ("x.service", "a.example.test=http://x", "tunnel name"),
        ("a;reboot", "a.example.test=http://x", "tunnel name"),
        ("a b", "a.example.test=http://x", "tunnel name"),
        ("ok", "a.example.test:8443=http://x", "hostname"),
        ("ok", "a.*.example.test=http://x", "hostname"),
        ("ok", "a b.example.test=http://x", "hostname"),
        ("ok", "a.example.test=http://x/admin", "service"),
        ("ok", "a.example.test=http://x;reboot", "service"),
        ("ok", "a.example.test=http://user@x", "service"),
        ("ok", "a.example.test=site:../x", "service"),
    ];
    let mut admin = gatehouse_proto::v1::admin_service_client::AdminServiceClient::new(
        gatehouse_agent::transport::unix_channel(controller.socket.clone())
            .await
            .unwrap(),
    );
    for (name, route, field) in cases {
        // At the CLI, before anything is sent.
        let run = tokio::task::block_in_place(|| {
            controller.ctl(&[
                "tunnel", "create", "--agent", &agent, "--name", name, "--route", route,
            ])
        });
        assert!(!run.success, "{name} {route}");
        assert!(
            run.stderr.contains(field),
            "CLI: {} should name {field}",
            run.stderr
        );
        // At the admin API, for callers that are not the CLI.
        let (host, service) = route.split_once('=').unwrap();
        let status = admin
            .create_tunnel(gatehouse_proto::v1::CreateTunnelRequest {
                agent_id: agent.clone(),
                name: (*name).into(),
                account: String::new(),
                routes: vec![gatehouse_proto::v1::TunnelRoute {
                    hostname: host.into(),
                    service: service.into(),
                    ..Default::default()
                }],
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains(field),
            "API: {} should name {field}",
            status.message()
        );
    }
    // Nothing was made anywhere, and every refusal is in the audit log.
    assert!(emulator.tunnels().is_empty());
    let audit = tokio::task::block_in_place(|| controller.ctl_json(&["audit", "list"]));
    let refused = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["action"]
                .as_str()
                .is_some_and(|a| a.starts_with("tunnel.create"))
        })
        .count();
    assert_eq!(refused, cases.len());
}
