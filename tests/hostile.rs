//! Hostile input, tried as an attacker would: a compromised host's acks and reports and a
//! refused caller's arguments never reach an operator's terminal or the log raw; connections
//! that do nothing after the TLS handshake are closed; the store is private whatever the
//! umask; failed enrollments are throttled per address; and a gRPC client in another language
//! works over the admin socket with its defaults.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_agent::identity::{Identity, load_controller_ca};
use gatehouse_agent::transport::{self, ControllerUrl};
use gatehouse_proto::v1::admin_service_client::AdminServiceClient;
use gatehouse_proto::v1::agent_message::Msg as Up;
use gatehouse_proto::v1::agent_service_client::AgentServiceClient;
use gatehouse_proto::v1::*;
use gatehouse_testkit::gatehouse::Controller;
use gatehouse_testkit::wait_for;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::wrappers::ReceiverStream;

/// Terminal control and line-breaking input, each a class of its own.
const HOSTILE: [&str; 7] = [
    "x\n2026-12-01T00:00:00Z  INFO audit actor=admin result=ok",
    "\x1b[2J\x1b[Hcleared",
    "over\r\x1b[2Kwritten",
    "bell\x07",
    "\x1b]0;title\x07osc",
    "rtl\u{202e}txt",
    "c1\u{9b}31m",
];

/// Whether `text` holds a character that a terminal or a log would act on.
fn raw(text: &str) -> Option<char> {
    text.chars()
        .find(|&c| gatehouse_proto::text::is_unsafe(c) && c != '\n')
}

/// Every line of a controller log is one event: it starts with a timestamp.
fn one_event_per_line(log: &str) {
    for line in log.lines().filter(|l| !l.is_empty()) {
        assert!(
            line.starts_with("20") && line.as_bytes().get(4) == Some(&b'-'),
            "a line that is not an event: {line:?}"
        );
    }
    assert_eq!(raw(log), None, "raw control character in the log");
}

async fn agent_stream(
    controller: &Controller,
    agent: &gatehouse_testkit::gatehouse::Agent,
    messages: Vec<Up>,
) {
    let identity = Identity::load(&agent.paths()).unwrap();
    let tls = identity
        .client_config(&load_controller_ca(&agent.paths()).unwrap())
        .unwrap();
    let url = ControllerUrl::parse(&controller.agent_url(), 7443).unwrap();
    let channel = transport::tls_channel(&url, tls).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    for m in messages {
        tx.send(AgentMessage { msg: Some(m) }).await.unwrap();
    }
    let mut inbound = AgentServiceClient::new(channel)
        .connect(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    // The desired state comes back once the controller has read what was sent before it.
    let _ = tokio::time::timeout(Duration::from_secs(10), inbound.message()).await;
    drop(tx);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hosts_acks_and_reports_cannot_write_to_the_operators_terminal_or_the_log() {
    let controller = Controller::start("");
    let agent = controller.agent("host");
    let id = agent.enroll(&controller);
    let results: Vec<ItemResult> = HOSTILE
        .iter()
        .enumerate()
        .flat_map(|(i, bad)| {
            [
                ItemResult::failed("site", &format!("s{i}{bad}"), bad),
                ItemResult::failed(
                    "certificate",
                    &format!("c{i}"),
                    format!("cannot install: {bad}"),
                ),
            ]
        })
        .collect();
    let n = results.len();
    let inventory = |name: &str, serial: &str, path: &str| CertificateInventory {
        name: name.into(),
        serial: serial.into(),
        not_after: 1,
        sha256: "ab".into(),
        path: path.into(),
        revision: 1,
        domains: vec![],
    };
    let report = Report {
        sampled_at: gatehouse_agent::now_unix(),
        metrics: Some(HostMetrics {
            filesystems: HOSTILE
                .iter()
                .map(|bad| FilesystemUsage {
                    mount_point: format!("/mnt/{bad}"),
                    file_system: (*bad).into(),
                    ..Default::default()
                })
                .collect(),
            interfaces: HOSTILE
                .iter()
                .map(|bad| InterfaceTraffic {
                    name: (*bad).into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        applied_generation: 1,
        wireguard: HOSTILE
            .iter()
            .map(|bad| WireguardStatus {
                network: (*bad).into(),
                interface: (*bad).into(),
                public_key: (*bad).into(),
                ..Default::default()
            })
            .collect(),
        tunnels: HOSTILE
            .iter()
            .map(|bad| TunnelStatus {
                name: (*bad).into(),
                ..Default::default()
            })
            .chain(std::iter::once(TunnelStatus {
                name: "odoo".into(),
                active_state: HOSTILE[0].into(),
                error: HOSTILE[1].into(),
                connector_id: HOSTILE[2].into(),
                ..Default::default()
            }))
            .collect(),
        certificates: HOSTILE
            .iter()
            .flat_map(|bad| {
                [
                    inventory(&format!("n{bad}"), "0a", "/x.crt"),
                    inventory("ok", bad, "/x.crt"),
                    inventory("ok", "0a", &format!("/{bad}")),
                ]
            })
            .collect(),
    };
    agent_stream(
        &controller,
        &agent,
        vec![
            Up::Hello(Hello {
                version: HOSTILE[1].into(),
                facts: Some(HostFacts {
                    hostname: HOSTILE[0].into(),
                    os: HOSTILE[4].into(),
                    ..Default::default()
                }),
                applied_generation: 0,
                ..Default::default()
            }),
            Up::Ack(Ack {
                generation: 1,
                results,
            }),
            Up::Report(report),
        ],
    )
    .await;

    let status = wait_for("the ack stored", Duration::from_secs(20), || {
        let run = controller.ctl(&["agents", "status", &id]);
        run.stdout.contains("cannot install").then_some(run)
    });
    assert_eq!(raw(&status.stdout), None, "{}", status.stdout);
    // One row per item: the items' lines and nothing more.
    let item_rows = status
        .stdout
        .lines()
        .filter(|l| l.contains("site/") || l.contains("certificate/") || l.contains("invalid/"))
        .count();
    assert_eq!(item_rows, n, "{}", status.stdout);
    assert!(status.stdout.contains("\\u{1b}[2J"), "{}", status.stdout);
    // The refused shapes were dropped, not shown.
    let json = controller.ctl_json(&["agents", "status", &id]);
    assert!(
        json["certificates"].as_array().unwrap().is_empty(),
        "{json}"
    );
    for args in [
        vec!["agents", "show", &id],
        vec!["agents", "list"],
        vec!["site", "list"],
    ] {
        let run = controller.ctl(&args);
        assert!(run.success, "{args:?}: {}", run.stderr);
        assert_eq!(raw(&run.stdout), None, "{args:?}: {}", run.stdout);
    }
    let show = controller.ctl(&["agents", "show", &id]);
    assert!(!show.stdout.contains("/mnt/"), "{}", show.stdout);
    one_event_per_line(&controller.log());
}

/// An admin client over TLS with a bearer token.
async fn admin_tls(
    controller: &Controller,
    token: &str,
) -> AdminServiceClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + use<>,
    >,
> {
    let ca = std::fs::read_to_string(controller.data_dir.join("ca.pem")).unwrap();
    let url = ControllerUrl::parse(
        &format!("https://127.0.0.1:{}", controller.admin_port),
        7444,
    )
    .unwrap();
    let channel = transport::tls_channel(&url, transport::client_config(&ca).unwrap())
        .await
        .unwrap();
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    AdminServiceClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
        r.metadata_mut().insert("authorization", bearer.clone());
        Ok(r)
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_calls_cannot_forge_audit_rows_or_log_lines() {
    let controller = Controller::start("");
    let agent = controller.agent("host");
    let id = agent.enroll(&controller);
    let viewer = controller.ctl_json(&["apitoken", "create", "--name", "ro", "--role", "viewer"]);
    let token = viewer["token"].as_str().unwrap();
    let mut admin = admin_tls(&controller, token).await;
    let mut local = AdminServiceClient::new(
        transport::unix_channel(controller.socket.clone())
            .await
            .unwrap(),
    );
    for bad in HOSTILE {
        let refused = admin
            .delete_site(GetSiteRequest {
                agent_id: id.clone(),
                name: bad.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{bad:?}");
        // A name refused by validation is escaped in the message, prefix included.
        let put = local
            .put_site(PutSiteRequest {
                agent_id: id.clone(),
                site: Some(SiteSpec {
                    name: bad.into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(put.code(), tonic::Code::InvalidArgument, "{bad:?}");
        assert_eq!(raw(put.message()), None, "{:?}", put.message());
    }
    let audit = controller.ctl(&["audit", "list"]);
    assert_eq!(raw(&audit.stdout), None, "{}", audit.stdout);
    let entries = controller.ctl_json(&["audit", "list"]);
    let rows = audit.stdout.lines().count() - 1;
    assert_eq!(rows, entries.as_array().unwrap().len(), "{}", audit.stdout);
    for action in ["site.delete", "site.put"] {
        let refusals = audit.stdout.lines().filter(|l| l.contains(action)).count();
        assert_eq!(refusals, HOSTILE.len(), "{action}: {}", audit.stdout);
    }
    assert!(
        !audit
            .stdout
            .lines()
            .any(|l| l.starts_with("2026-12-01T00:00:00Z")),
        "a forged row: {}",
        audit.stdout
    );
    one_event_per_line(&controller.log());
}

/// Opens a TLS connection to `port` (ALPN h2) and then waits, sending nothing or only
/// `then`; returns how long the controller kept it open.
async fn held_open(controller: &Controller, port: u16, then: &[u8]) -> Duration {
    let ca = std::fs::read_to_string(controller.data_dir.join("ca.pem")).unwrap();
    let tls = transport::client_config(&ca).unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .expect("the TLS handshake completes");
    let opened = Instant::now();
    stream.write_all(then).await.unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return opened.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("port {port}: still open after 20 s"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_that_do_nothing_are_closed_but_an_idle_agent_stream_is_not() {
    let controller =
        Controller::start("first_request_timeout = \"2s\"\nidle_connection_timeout = \"3s\"\n");
    let mut agent = controller.agent("host");
    let id = agent.enroll(&controller);
    agent.run();
    wait_for("online", Duration::from_secs(20), || {
        (controller.agent_view(&id)["status"] == "online").then_some(())
    });
    let preface_and_settings = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
    for port in [controller.agent_port, controller.admin_port] {
        let silent = held_open(&controller, port, b"").await;
        assert!(
            silent >= Duration::from_secs(2) && silent < Duration::from_secs(6),
            "{port}: {silent:?}"
        );
        let no_request = held_open(&controller, port, preface_and_settings).await;
        assert!(
            no_request < Duration::from_secs(6),
            "{port}: {no_request:?}"
        );
    }
    // The agent's stream stayed up all along: still its first session.
    let view = controller.agent_view(&id);
    assert_eq!(
        (view["status"].as_str(), view["sessions"].as_u64()),
        (Some("online"), Some(1)),
        "{view}"
    );
    assert_eq!(agent.status().unwrap()["connected"], true);
}

#[test]
fn the_data_directory_and_the_store_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let controller = Controller::start("");
    controller.join_token("1h");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&controller.data_dir), 0o700);
    for file in [
        "gatehouse.db",
        "gatehouse.db-wal",
        "gatehouse.db-shm",
        "master.key",
    ] {
        let path = controller.data_dir.join(file);
        assert!(path.exists(), "{file} exists while the controller runs");
        assert_eq!(mode(&path), 0o600, "{file}");
    }
}

/// A channel to the agent port from `source` (any 127/8 address is this machine).
async fn channel_from(
    source: IpAddr,
    port: u16,
    tls: Arc<rustls::ClientConfig>,
) -> tonic::transport::Channel {
    let connector = tokio_rustls::TlsConnector::from(tls);
    tonic::transport::Endpoint::from_static("http://127.0.0.1")
        .connect_with_connector(tower::service_fn(move |_| {
            let connector = connector.clone();
            async move {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind(SocketAddr::new(source, 0))?;
                let tcp = socket.connect(([127, 0, 0, 1], port).into()).await?;
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_enrollments_are_throttled_per_address_and_others_still_enroll() {
    let controller = Controller::start("enroll_failure_limit = 3\n");
    let tls = transport::client_config_pinned(
        &gatehouse_agent::pki::parse_ca_hash(&controller.ca_hash()).unwrap(),
    );
    let flooder: IpAddr = "127.0.0.2".parse().unwrap();
    let mut client =
        AgentServiceClient::new(channel_from(flooder, controller.agent_port, tls.clone()).await);
    let enroll = |token: &str| EnrollRequest {
        token: token.into(),
        csr_der: vec![],
        facts: None,
    };
    let bad = "ghj_0000000000.0000000000000000000000000000000000000000000";
    for _ in 0..3 {
        let e = client.enroll(enroll(bad)).await.unwrap_err();
        assert_ne!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    }
    let throttled = client.enroll(enroll(bad)).await.unwrap_err();
    assert_eq!(throttled.code(), tonic::Code::ResourceExhausted);
    assert!(
        throttled.message().contains("try again in"),
        "{}",
        throttled.message()
    );
    // A good token from that address waits too; another address enrolls at once.
    let good = controller.join_token("10m");
    let e = client.enroll(enroll(&good)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    let agent = controller.agent("other");
    let started = Instant::now();
    let run = agent.enroll_with(&controller.agent_url(), &controller.ca_hash(), &good);
    assert!(run.success, "{}", run.stderr);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_python_grpcio_client_calls_the_admin_api_over_the_socket_with_its_defaults() {
    let controller = Controller::start("");
    let agent = controller.agent("host");
    let id = agent.enroll(&controller);
    let script = r#"
import sys, grpc
channel = grpc.insecure_channel("unix://" + sys.argv[1])
list_agents = channel.unary_unary("/gatehouse.v1.AdminService/ListAgents")
sys.stdout.buffer.write(list_agents(b"", timeout=10))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&controller.socket)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python3 with grpcio (pip install grpcio): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The ListAgentsResponse names the enrolled agent.
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id));
}
