//! What the in-process controller tests share.

use gatehouse_controller::config::Config;

/// A config with all state under `dir` and every listener on a free loopback port.
pub fn config(dir: &std::path::Path) -> Config {
    let mut config = Config::with_data_dir(&dir.join("controller"));
    for addr in [
        &mut config.agent_listen,
        &mut config.admin_listen,
        &mut config.http_listen,
    ] {
        *addr = "127.0.0.1:0".parse().unwrap();
    }
    config.admin_socket = dir.join("admin.sock");
    config
}

/// Enrolls an agent with `labels` on its join token (its identity only; it does not run) under
/// `root`; its id.
#[allow(dead_code)]
pub async fn enroll(
    running: &gatehouse_controller::server::Running,
    root: &std::path::Path,
    labels: std::collections::BTreeMap<String, String>,
) -> String {
    use gatehouse_controller::secrets::{JOIN_PREFIX, Token};
    let token = Token::generate(JOIN_PREFIX);
    gatehouse_controller::tokens::create_join_token(
        &running.shared,
        &token,
        std::time::Duration::from_secs(60),
        labels,
    )
    .await
    .unwrap();
    let port = running.agent_addr.port();
    let url = gatehouse_common::transport::ControllerUrl::parse(
        &format!("https://127.0.0.1:{port}"),
        port,
    )
    .unwrap();
    let paths = gatehouse_agent::config::Config::with_root(root).paths;
    gatehouse_agent::enroll::enroll(
        &paths,
        &url,
        &token.reveal(),
        running.ca_hash(),
        gatehouse_proto::v1::HostFacts::default(),
    )
    .await
    .unwrap()
    .agent_id
    .to_string()
}
