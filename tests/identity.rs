//! Identity end to end: only a certificate from the controller's CA opens the stream, the
//! agent id comes from that certificate alone, revocation closes the stream and the door, and
//! certificates rotate without dropping the stream.

use std::time::Duration;

use gatehouse_agent::identity::{Identity, load_controller_ca};
use gatehouse_agent::transport::{self, ControllerUrl};
use gatehouse_proto::v1::agent_message::Msg as Up;
use gatehouse_proto::v1::agent_service_client::AgentServiceClient;
use gatehouse_proto::v1::{AgentMessage, Hello, HostFacts, HostMetrics, Report};
use gatehouse_testkit::gatehouse::Controller;
use gatehouse_testkit::wait_for;
use tokio_stream::wrappers::ReceiverStream;

fn url(controller: &Controller) -> ControllerUrl {
    ControllerUrl::parse(&controller.agent_url(), 7443).unwrap()
}

fn hello(hostname: &str) -> AgentMessage {
    AgentMessage {
        msg: Some(Up::Hello(Hello {
            version: "test".into(),
            facts: Some(HostFacts {
                hostname: hostname.into(),
                ..Default::default()
            }),
            ..Default::default()
        })),
    }
}

/// Opens `Connect` with `tls` and sends `messages`; returns the first answer or the refusal.
async fn connect_with(
    controller: &Controller,
    tls: std::sync::Arc<rustls::ClientConfig>,
    messages: Vec<AgentMessage>,
) -> Result<(), String> {
    let channel = transport::tls_channel(&url(controller), tls)
        .await
        .map_err(|e| gatehouse_agent::enroll::error_chain(&e))?;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    for m in messages {
        tx.send(m).await.unwrap();
    }
    let mut inbound = AgentServiceClient::new(channel)
        .connect(ReceiverStream::new(rx))
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    // Keep the stream open long enough for the controller to take in what was sent.
    match tokio::time::timeout(Duration::from_secs(3), inbound.message()).await {
        Ok(Err(s)) => Err(format!("{:?}: {}", s.code(), s.message())),
        _ => {
            tokio::time::sleep(Duration::from_millis(500)).await;
            drop(tx);
            Ok(())
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_without_a_valid_identity_cannot_connect() {
    let controller = Controller::start("");
    let agent = controller.agent("real");
    let real_id = agent.enroll(&controller);
    let ca = load_controller_ca(&agent.paths()).unwrap();

    // No client certificate: the handshake works (enrollment needs that), Connect does not.
    let no_cert = transport::client_config(&ca).unwrap();
    let err = connect_with(&controller, no_cert, vec![hello("x")])
        .await
        .unwrap_err();
    assert!(
        err.contains("Unauthenticated") && err.contains("client certificate is required"),
        "{err}"
    );

    // A certificate naming the real agent, but from another CA.
    let rogue_ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let rogue_ca = ca_params.self_signed(&rogue_ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, rogue_ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        format!("spiffe://gatehouse/agent/{real_id}")
            .try_into()
            .unwrap(),
    )];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    let rogue = transport::client_config_with_identity(
        &ca,
        vec![cert.der().clone(), rogue_ca.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let err = connect_with(&controller, rogue, vec![hello("rogue")])
        .await
        .unwrap_err();
    assert!(!err.is_empty());
    let view = controller.agent_view(&real_id);
    assert_eq!(
        view["sessions"], 0,
        "the rogue client must not count as the agent: {view}"
    );
    assert_ne!(view["hostname"], "rogue");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_cannot_pose_as_another() {
    let controller = Controller::start("");
    let a = controller.agent("a");
    let a_id = a.enroll(&controller);
    let b = controller.agent("b");
    let b_id = b.enroll(&controller);
    let b_before = controller.agent_view(&b_id);

    // A's identity, claiming B's hostname and sending metrics. There is no agent id field to
    // forge: whatever A says is recorded against A.
    let identity = Identity::load(&a.paths()).unwrap();
    let tls = identity
        .client_config(&load_controller_ca(&a.paths()).unwrap())
        .unwrap();
    let report = AgentMessage {
        msg: Some(Up::Report(Report {
            sampled_at: gatehouse_agent::now_unix(),
            metrics: Some(HostMetrics {
                memory_total_bytes: 12345,
                ..Default::default()
            }),
            applied_generation: 0,
            ..Default::default()
        })),
    };
    connect_with(
        &controller,
        tls,
        vec![hello(b_before["hostname"].as_str().unwrap()), report],
    )
    .await
    .unwrap();

    let a_view = controller.agent_view(&a_id);
    assert_eq!(a_view["metrics"]["memory_total_bytes"], 12345);
    assert_eq!(a_view["sessions"], 1);
    let b_after = controller.agent_view(&b_id);
    assert!(b_after["metrics"].is_null(), "{b_after}");
    assert_eq!(b_after["sessions"], 0);
    assert_eq!(b_after["last_seen_at"], b_before["last_seen_at"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_an_agent_closes_its_stream_and_refuses_it_afterwards() {
    let controller = Controller::start("");
    let mut agent = controller.agent("a");
    let id = agent.enroll(&controller);
    agent.run();
    agent.wait_status("connected", Duration::from_secs(20), |s| {
        s["connected"] == true
    });

    let revoked = controller.ctl_json(&["agents", "revoke", &id, "--yes"]);
    assert_eq!(revoked["status"], "revoked");
    // The open stream closes at once.
    let status = agent.wait_status("disconnected", Duration::from_secs(10), |s| {
        s["connected"] == false
    });
    assert!(
        status["last_error"].as_str().unwrap().contains("revoked"),
        "{status}"
    );
    // The next handshake is refused, and the agent keeps its identity on disk regardless.
    let identity = Identity::load(&agent.paths()).unwrap();
    let tls = identity
        .client_config(&load_controller_ca(&agent.paths()).unwrap())
        .unwrap();
    let err = connect_with(&controller, tls, vec![hello("again")])
        .await
        .unwrap_err();
    assert!(!err.is_empty());
    std::thread::sleep(Duration::from_secs(2));
    assert!(agent.paths().identity().exists());
    assert_eq!(controller.agent_view(&id)["status"], "revoked");
    // The refusal survives a controller restart.
    let mut controller = controller;
    controller.restart();
    let identity = Identity::load(&agent.paths()).unwrap();
    let tls = identity
        .client_config(&load_controller_ca(&agent.paths()).unwrap())
        .unwrap();
    assert!(
        connect_with(&controller, tls, vec![hello("again")])
            .await
            .is_err()
    );
    // Revocation is in the audit log.
    let audit = controller.ctl_json(&["audit", "list"]);
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "agent.revoke"
                && e["target"] == format!("agent:{id}")
                && e["result"] == "ok"),
        "{audit}"
    );
}

#[test]
fn identity_certificates_rotate_without_dropping_the_stream() {
    let controller = Controller::start("agent_cert_lifetime = \"10s\"\n");
    let mut agent = controller.agent("a");
    let id = agent.enroll(&controller);
    let first_serial = controller.agent_view(&id)["certificate_serial"].clone();
    agent.run();
    let connected = wait_for("the agent online", Duration::from_secs(20), || {
        let v = controller.agent_view(&id);
        (v["status"] == "online").then_some(v)
    });
    let status = agent.wait_status("two renewals", Duration::from_secs(40), |s| {
        s["identity_renewals"].as_u64().unwrap() >= 2
    });
    let view = controller.agent_view(&id);
    assert_eq!(view["sessions"], 1, "the stream was reopened: {view}");
    assert_eq!(view["connected_since"], connected["connected_since"]);
    assert_eq!(view["status"], "online");
    assert_ne!(view["certificate_serial"], first_serial);
    // Agent and controller agree on the current certificate.
    let status_now = agent.status().unwrap();
    assert_eq!(
        view["certificate_serial"], status_now["identity_serial"],
        "{status}"
    );
    let on_disk = Identity::load(&agent.paths()).unwrap();
    assert_eq!(
        serde_json::json!(on_disk.info.serial),
        status_now["identity_serial"]
    );
    assert!(on_disk.info.not_after > gatehouse_agent::now_unix());
}

#[test]
fn an_agent_offline_past_expiry_renews_within_the_grace_period() {
    let controller = Controller::start("agent_cert_lifetime = \"10s\"\n");
    let mut agent = controller.agent("a");
    let id = agent.enroll(&controller);
    let expired = Identity::load(&agent.paths()).unwrap();
    let wait = (expired.info.not_after - gatehouse_agent::now_unix() + 2).max(0) as u64;
    std::thread::sleep(Duration::from_secs(wait));
    agent.run();
    agent.wait_status(
        "connected after a grace renewal",
        Duration::from_secs(20),
        |s| s["connected"] == true && s["identity_renewals"].as_u64().unwrap() >= 1,
    );
    let renewed = Identity::load(&agent.paths()).unwrap();
    assert_ne!(renewed.info.serial, expired.info.serial);
    assert_eq!(renewed.agent_id.as_str(), id);
    assert!(controller.log().contains("identity renewed after expiry"));
}
