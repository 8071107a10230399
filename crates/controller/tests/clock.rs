//! Where wall-clock time decides, an in-process controller runs on a manual clock that the test
//! moves: no test waits for a token to expire or an agent to miss its reports.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use gatehouse_agent::config::Config as AgentConfig;
use gatehouse_agent::runtime::Agent;
use gatehouse_common::Clock;
use gatehouse_common::transport::ControllerUrl;
use gatehouse_controller::secrets::{JOIN_PREFIX, Token};
use gatehouse_controller::server::{self, Running};
use gatehouse_controller::tokens;
use gatehouse_proto::v1::HostFacts;
use tokio_util::sync::CancellationToken;

/// A controller on 127.0.0.1 with free ports, deciding by `clock`.
async fn controller(dir: &std::path::Path, clock: Clock, report_interval: Duration) -> Running {
    let mut config = support::config(dir);
    config.report_interval = report_interval;
    server::start_with_clock(config, clock, CancellationToken::new())
        .await
        .unwrap()
}

async fn join_token(running: &Running, ttl: Duration) -> String {
    let token = Token::generate(JOIN_PREFIX);
    tokens::create_join_token(&running.shared, &token, ttl, BTreeMap::new())
        .await
        .unwrap();
    token.reveal()
}

async fn enroll(running: &Running, root: &std::path::Path, token: &str) -> Result<String, String> {
    let port = running.agent_addr.port();
    let url = ControllerUrl::parse(&format!("https://127.0.0.1:{port}"), port).unwrap();
    let paths = AgentConfig::with_root(root).paths;
    gatehouse_agent::enroll::enroll(&paths, &url, token, running.ca_hash(), HostFacts::default())
        .await
        .map(|e| e.agent_id)
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_join_token_expires_when_the_clock_passes_its_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(gatehouse_common::now_unix());
    let running = controller(dir.path(), clock.clone(), Duration::from_secs(30)).await;
    let early = join_token(&running, Duration::from_secs(3600)).await;
    let late = join_token(&running, Duration::from_secs(3600)).await;

    enroll(&running, &dir.path().join("a"), &early)
        .await
        .expect("a fresh token enrolls");
    clock.advance(Duration::from_secs(3601));
    let refused = enroll(&running, &dir.path().join("b"), &late)
        .await
        .unwrap_err();
    assert!(refused.contains("expired"), "{refused}");
}

#[tokio::test]
async fn a_connected_agent_that_misses_three_reports_shows_offline() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(gatehouse_common::now_unix());
    // Reports an hour apart: after the first one, none comes while the test runs.
    let running = controller(dir.path(), clock.clone(), Duration::from_secs(3600)).await;
    let token = join_token(&running, Duration::from_secs(60)).await;
    let root = dir.path().join("agent");
    let id = enroll(&running, &root, &token).await.unwrap();
    let mut config = AgentConfig::with_root(&root);
    config.caddy = None;
    let agent = Agent::start(config).await.unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(agent.run(stop.clone()));

    let shared = running.shared.clone();
    let status = async || {
        let row = shared.store.agent_get(&id).await.unwrap().unwrap();
        let live = shared.fleet.view(&id);
        (shared.agent_status(&row), live.metrics.is_some())
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    // The first report comes a second after start; the next one an hour later.
    while status().await != ("online", true) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first report never came"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    clock.advance(Duration::from_secs(2 * 3600));
    assert_eq!(
        status().await.0,
        "online",
        "two missed reports are not enough"
    );
    clock.advance(Duration::from_secs(3600 + 10));
    assert_eq!(status().await.0, "offline");
    assert!(
        shared.fleet.view(&id).connected_since.is_some(),
        "still connected"
    );
    stop.cancel();
    task.await.unwrap();
}
