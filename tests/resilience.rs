//! The host keeps working while the controller is away: restarts on either side reconnect by
//! themselves, keep identity and generation, and never re-enroll.

use std::time::Duration;

use gatehouse_testkit::gatehouse::{Agent, Controller};
use gatehouse_testkit::wait_for;

/// An enrolled, running agent that has applied generation 2.
fn agent_at_generation_2(controller: &Controller) -> (Agent, String) {
    let mut agent = controller.agent("a");
    let id = agent.enroll(controller);
    agent.run();
    agent.wait_status("generation 1 applied", Duration::from_secs(20), |s| {
        s["applied_generation"] == 1 && s["connected"] == true
    });
    let labelled = controller.ctl_json(&["agents", "label", &id, "env=prod"]);
    assert_eq!(labelled["desired_generation"], 2);
    agent.wait_status("generation 2 applied", Duration::from_secs(20), |s| {
        s["applied_generation"] == 2 && s["connected"] == true
    });
    (agent, id)
}

/// A controller on a PostgreSQL database of its own.
fn on_postgres() -> (gatehouse_testkit::postgres::Postgres, Controller) {
    let pg = gatehouse_testkit::postgres::Postgres::start();
    let dir = tempfile::Builder::new()
        .prefix("gh-e2e-")
        .tempdir()
        .unwrap();
    let controller = Controller::start_with(dir, "", Some(&pg.url));
    (pg, controller)
}

fn applies(agent: &Agent) -> usize {
    agent.log().matches("applying desired state").count()
}

#[test]
fn after_a_controller_restart_the_agent_reconnects_with_its_identity_and_generation() {
    let mut controller = Controller::start("");
    let (agent, id) = agent_at_generation_2(&controller);
    assert_eq!(applies(&agent), 2);

    controller.restart();
    let view = wait_for("the agent back online", Duration::from_secs(60), || {
        let v = controller.agent_view(&id);
        (v["status"] == "online" && v["sessions"] == 1).then_some(v)
    });
    assert_eq!(view["applied_generation"], 2);
    assert_eq!(view["desired_generation"], 2);
    assert_eq!(controller.agents().len(), 1, "no second enrollment");
    let tokens = controller.ctl_json(&["token", "list"]);
    assert_eq!(tokens.as_array().unwrap().len(), 1);
    // Same generation on both sides: the state is not sent again.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(applies(&agent), 2, "{}", agent.log());
    assert_eq!(agent.status().unwrap()["agent_id"], id.as_str());
}

#[test]
fn an_agent_restarted_while_the_controller_is_down_reapplies_its_state_and_keeps_trying() {
    let mut controller = Controller::start("");
    let (mut agent, id) = agent_at_generation_2(&controller);
    use std::os::unix::fs::PermissionsExt;
    let persisted = agent.paths().desired_state();
    assert_eq!(
        std::fs::metadata(&persisted).unwrap().permissions().mode() & 0o777,
        0o600
    );

    controller.stop();
    agent.kill();
    agent.run();
    let status = agent.wait_status(
        "retrying with the persisted state",
        Duration::from_secs(20),
        |s| s["failed_attempts"].as_u64().unwrap() >= 2,
    );
    assert_eq!(status["applied_generation"], 2);
    assert_eq!(status["applied_from"], "persisted");
    assert_eq!(status["connected"], false);
    assert!(
        agent
            .log()
            .contains("reapplying the persisted desired state")
    );

    controller.start_again();
    agent.wait_status("reconnected", Duration::from_secs(60), |s| {
        s["connected"] == true
    });
    let view = wait_for("the agent online", Duration::from_secs(10), || {
        let v = controller.agent_view(&id);
        (v["status"] == "online").then_some(v)
    });
    assert_eq!(view["applied_generation"], 2);
    // The controller had nothing newer, so the persisted state is still what was applied.
    assert_eq!(agent.status().unwrap()["applied_from"], "persisted");
}

#[test]
fn a_new_generation_reaches_a_connected_agent_and_is_acknowledged() {
    let controller = Controller::start("");
    let (agent, id) = agent_at_generation_2(&controller);
    controller.ctl_json(&["agents", "label", &id, "env=staging", "team=web"]);
    let view = wait_for("generation 3 acknowledged", Duration::from_secs(20), || {
        let v = controller.agent_view(&id);
        (v["applied_generation"] == 3).then_some(v)
    });
    assert_eq!(view["labels"]["team"], "web");
    assert_eq!(agent.status().unwrap()["applied_generation"], 3);
}

#[test]
fn the_controller_marks_an_agent_offline_when_it_stops_reporting() {
    let controller = Controller::start("");
    let mut agent = controller.agent("a");
    let id = agent.enroll(&controller);
    agent.run();
    wait_for("online", Duration::from_secs(20), || {
        (controller.agent_view(&id)["status"] == "online").then_some(())
    });
    // A frozen agent keeps its connection but sends nothing.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent_pid(&agent)),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let view = wait_for(
        "offline after missed reports",
        Duration::from_secs(20),
        || {
            let v = controller.agent_view(&id);
            (v["status"] == "offline").then_some(v)
        },
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent_pid(&agent)),
        nix::sys::signal::Signal::SIGCONT,
    )
    .unwrap();
    assert!(view["last_seen_at"].as_i64().unwrap() > 0);
    wait_for("online again", Duration::from_secs(20), || {
        (controller.agent_view(&id)["status"] == "online").then_some(())
    });
}

#[test]
fn a_controller_on_postgresql_keeps_its_fleet_across_restarts() {
    let (_pg, mut controller) = on_postgres();
    let mut agent = controller.agent("a");
    let id = agent.enroll(&controller);
    agent.run();
    wait_for("online", Duration::from_secs(20), || {
        (controller.agent_view(&id)["status"] == "online").then_some(())
    });
    let hash = controller.ca_hash();
    controller.restart();
    // Same CA (the key is in PostgreSQL, sealed), same agent, reconnected by itself.
    assert_eq!(controller.ca_hash(), hash);
    wait_for("online after restart", Duration::from_secs(60), || {
        (controller.agent_view(&id)["status"] == "online").then_some(())
    });
    assert_eq!(controller.agents().len(), 1);
    // Nothing of it went to a SQLite file.
    assert!(!controller.data_dir.join("gatehouse.db").exists());
}

fn agent_pid(agent: &Agent) -> i32 {
    agent.pid() as i32
}

#[test]
fn healthz_says_503_while_the_store_refuses_writes_and_200_after() {
    let (pg, controller) = on_postgres();
    assert_eq!(controller.http_get("/healthz"), (200, "ok\n".to_owned()));

    // As after a failover to a read-only replica: reads work, writes do not.
    pg.set_read_only(true);
    let (_, body) = wait_for("/healthz turns 503", Duration::from_secs(20), || {
        let (code, body) = controller.http_get("/healthz");
        (code == 503).then_some((code, body))
    });
    assert!(body.contains("the store is not writable"), "{body}");
    assert!(body.contains("read-only"), "{body}");
    // The controller answered: the CLI shows its message without guessing it is down.
    let refused = controller.ctl(&["token", "create"]);
    assert!(!refused.success);
    assert!(refused.stderr.contains("store"), "{}", refused.stderr);
    assert!(
        !refused.stderr.contains("is the controller running"),
        "{}",
        refused.stderr
    );

    pg.set_read_only(false);
    wait_for("/healthz turns 200", Duration::from_secs(20), || {
        (controller.http_get("/healthz").0 == 200).then_some(())
    });
    assert!(controller.ctl(&["token", "create"]).success);
}

/// The health of `service` ("" for the whole server) over `channel`.
async fn grpc_health(channel: tonic::transport::Channel, service: &str) -> i32 {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_health_on_every_port_follows_the_store_and_reflection_lists_the_api() {
    use gatehouse_agent::transport::{self, ControllerUrl};
    use tonic_health::ServingStatus;
    let (pg, controller) = on_postgres();
    let ca = std::fs::read_to_string(controller.data_dir.join("ca.pem")).unwrap();
    // No client certificate and no token: load balancers ask like this.
    let tls_port = |port: u16| {
        let ca = ca.clone();
        async move {
            let url = ControllerUrl::parse(&format!("https://127.0.0.1:{port}"), port).unwrap();
            transport::tls_channel(&url, transport::client_config(&ca).unwrap())
                .await
                .unwrap()
        }
    };
    let socket = || transport::unix_channel(controller.socket.clone());
    let serving = ServingStatus::Serving as i32;
    let not_serving = ServingStatus::NotServing as i32;
    for service in ["", "gatehouse.v1.AgentService"] {
        assert_eq!(
            grpc_health(tls_port(controller.agent_port).await, service).await,
            serving
        );
    }
    for service in ["", "gatehouse.v1.AdminService"] {
        assert_eq!(
            grpc_health(tls_port(controller.admin_port).await, service).await,
            serving
        );
        assert_eq!(grpc_health(socket().await.unwrap(), service).await, serving);
    }

    pg.set_read_only(true);
    let started = std::time::Instant::now();
    while grpc_health(tls_port(controller.agent_port).await, "").await != not_serving {
        assert!(started.elapsed() < Duration::from_secs(20), "still SERVING");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        grpc_health(
            tls_port(controller.admin_port).await,
            "gatehouse.v1.AdminService"
        )
        .await,
        not_serving
    );
    pg.set_read_only(false);
    let started = std::time::Instant::now();
    while grpc_health(socket().await.unwrap(), "").await != serving {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "still NOT_SERVING"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Reflection on the admin port names the services, as grpcurl-style tools ask.
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(tls_port(controller.admin_port).await)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a service list: {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for wanted in ["gatehouse.v1.AdminService", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == wanted), "{names:?}");
    }
}
