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
