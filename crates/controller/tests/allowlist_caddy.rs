//! An allowlisted site on a real Caddy, driven by an in-process controller on a manual clock:
//! entries leave Caddy when the clock passes their expiry (an address shared by two devices
//! when the later one expires), a revoked device's address at once, and `CF-Connecting-IP`
//! counts only from a trusted peer (cloudflared, on loopback).

mod support;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use gatehouse_common::Clock;
use gatehouse_controller::allowlists::{self, Mirror, NewList};
use gatehouse_controller::secrets::{JOIN_PREFIX, Token};
use gatehouse_controller::server::{self, Running};
use gatehouse_controller::tokens;
use gatehouse_testkit::caddy::{CaddyServer, Upstream};
use gatehouse_testkit::gatehouse::Agent;
use gatehouse_testkit::process::bin;
use tokio_util::sync::CancellationToken;

const TTL: Duration = Duration::from_secs(60);

struct Host {
    running: Running,
    clock: Clock,
    caddy: CaddyServer,
    site_ca: String,
    _agent: Agent,
    _dir: tempfile::TempDir,
}

impl Host {
    /// A controller, an enrolled agent process and its Caddy serving `shop.example.test`, which
    /// lets in only allowlist `home` (TTL one minute, loopback sources allowed for the test).
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::manual(gatehouse_common::now_unix());
        let mut config = support::config(dir.path());
        config.checkin.min_interval = Duration::from_secs(1);
        let running = server::start_with_clock(config, clock.clone(), CancellationToken::new())
            .await
            .unwrap();
        let root = dir.path().join("host");
        std::fs::create_dir_all(&root).unwrap();
        let caddy = CaddyServer::start(&root, "");
        let mut agent = Agent::new(dir.path(), "host", &caddy.agent_toml());
        let token = Token::generate(JOIN_PREFIX);
        tokens::create_join_token(&running.shared, &token, TTL, BTreeMap::new())
            .await
            .unwrap();
        let url = format!("https://127.0.0.1:{}", running.agent_addr.port());
        let ca_hash = running.ca_hash().to_owned();
        let enrolled = {
            let agent = &agent;
            let token = token.reveal();
            tokio::task::block_in_place(|| agent.enroll_with(&url, &ca_hash, &token))
        };
        assert!(enrolled.success, "{}{}", enrolled.stdout, enrolled.stderr);
        let id = enrolled
            .stdout
            .split_whitespace()
            .nth(3)
            .unwrap()
            .to_owned();
        agent.run();

        allowlists::create(
            &running.shared,
            NewList {
                name: "home".into(),
                ttl: TTL,
                cloudflare: Mirror::None,
                account: String::new(),
                allow_private: true,
                ipv6_prefix: 64,
            },
        )
        .await
        .unwrap();
        let upstream = Upstream::start("hello from behind the allowlist");
        let site_ca = std::fs::read_to_string(dir.path().join("controller/site-ca.pem")).unwrap();
        let host = Self {
            running,
            clock,
            caddy,
            site_ca,
            _agent: agent,
            _dir: dir,
        };
        let port = host.caddy.https_port.to_string();
        host.ctl(&[
            "site",
            "create",
            "--agent",
            &id,
            "--domain",
            "shop.example.test",
            "--upstream",
            &upstream.address(),
            "--port",
            &port,
            "--allow",
            "home",
        ]);
        host
    }

    /// `gatehousectl --socket … ARGS`, which must succeed.
    fn ctl(&self, args: &[&str]) -> String {
        let out = tokio::task::block_in_place(|| {
            std::process::Command::new(bin("gatehousectl"))
                .arg("--socket")
                .arg(&self.running.shared.config().admin_socket)
                .args(args)
                .output()
                .unwrap()
        });
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }

    async fn device(&self, name: &str) -> String {
        let (_, token) = allowlists::add_device(&self.running.shared, "home", name)
            .await
            .unwrap();
        token.reveal()
    }

    async fn checkin(&self, source: &str, token: &str) {
        let status = reqwest::Client::builder()
            .local_address(source.parse::<IpAddr>().unwrap())
            .no_proxy()
            .build()
            .unwrap()
            .post(format!(
                "http://{}/v1/allowlist/checkin",
                self.running.http_addr
            ))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "check-in from {source}");
    }

    /// The status Caddy answers a GET from `source` with these headers.
    async fn status(&self, source: &str, headers: &[(&str, &str)]) -> u16 {
        let ca = reqwest::Certificate::from_pem(self.site_ca.as_bytes()).unwrap();
        let addr = format!("127.0.0.1:{}", self.caddy.https_port)
            .parse()
            .unwrap();
        let client = reqwest::Client::builder()
            .tls_certs_only([ca])
            .resolve("shop.example.test", addr)
            .local_address(source.parse::<IpAddr>().unwrap())
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let mut req = client.get(format!(
            "https://shop.example.test:{}/",
            self.caddy.https_port
        ));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        match req.send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    /// Waits until a GET from `source` is answered `status`.
    async fn wait_status(&self, what: &str, source: &str, headers: &[(&str, &str)], status: u16) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.status(source, headers).await;
            if got == status {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: still {got}, not {status}\n{}",
                self.caddy.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The addresses `allowlist show` lists now.
    fn listed(&self) -> Vec<String> {
        let show: serde_json::Value =
            serde_json::from_str(&self.ctl(&["allowlist", "show", "home", "--output", "json"]))
                .unwrap();
        show["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["cidr"].as_str().unwrap().to_owned())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_follows_expiry_revocation_and_shared_addresses() {
    let host = Host::start().await;
    host.wait_status("nobody checked in", "127.0.0.2", &[], 403)
        .await;
    let phone = host.device("phone").await;
    let laptop = host.device("laptop").await;
    let tablet = host.device("tablet").await;
    let watch = host.device("watch").await;

    // The phone checks in at t0, the laptop from the same address 30 s later; the tablet and
    // the watch from addresses of their own at t0.
    host.checkin("127.0.0.2", &phone).await;
    host.checkin("127.0.0.4", &tablet).await;
    host.checkin("127.0.0.5", &watch).await;
    host.clock.advance(Duration::from_secs(30));
    host.checkin("127.0.0.2", &laptop).await;
    host.wait_status("the shared address let in", "127.0.0.2", &[], 200)
        .await;
    host.wait_status("the tablet let in", "127.0.0.4", &[], 200)
        .await;
    assert_eq!(host.status("127.0.0.3", &[]).await, 403);

    // Revoking the tablet takes its address away at once, with no clock moving.
    host.ctl(&["allowlist", "device", "revoke", "home", "--name", "tablet"]);
    host.wait_status("the revoked tablet shut out", "127.0.0.4", &[], 403)
        .await;

    // t0 + 61 s: the phone's and the watch's check-ins have expired, the laptop's (t0 + 30 s)
    // has not: once the watch is shut out, the shared address is still let in.
    host.wait_status("the watch let in", "127.0.0.5", &[], 200)
        .await;
    host.clock.advance(Duration::from_secs(31));
    host.wait_status("the expired watch shut out", "127.0.0.5", &[], 403)
        .await;
    assert_eq!(host.listed(), ["127.0.0.2/32"]);
    assert_eq!(host.status("127.0.0.2", &[]).await, 200);

    // t0 + 91 s: both expired; the store's list, then Caddy, let nobody in.
    host.clock.advance(Duration::from_secs(30));
    assert!(host.listed().is_empty());
    host.wait_status("the expired address shut out", "127.0.0.2", &[], 403)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cf_connecting_ip_counts_only_from_a_trusted_peer() {
    let host = Host::start().await;
    let phone = host.device("phone").await;
    host.checkin("127.0.0.2", &phone).await;
    host.wait_status("the phone let in", "127.0.0.2", &[], 200)
        .await;

    // cloudflared connects from 127.0.0.1 and names the client in CF-Connecting-IP.
    let named = |ip| [("CF-Connecting-IP", ip)];
    assert_eq!(host.status("127.0.0.1", &named("127.0.0.2")).await, 200);
    assert_eq!(host.status("127.0.0.1", &named("127.0.0.3")).await, 403);
    assert_eq!(
        host.status("127.0.0.1", &named("not-an-address")).await,
        403
    );
    // Without the header the trusted peer is judged by its own address.
    assert_eq!(host.status("127.0.0.1", &[]).await, 403);
    // X-Forwarded-For counts from nobody, even a trusted peer.
    assert_eq!(
        host.status("127.0.0.1", &[("X-Forwarded-For", "127.0.0.2")])
            .await,
        403
    );
    // From an untrusted peer no header names anyone else.
    for header in ["CF-Connecting-IP", "X-Forwarded-For"] {
        assert_eq!(
            host.status("127.0.0.3", &[(header, "127.0.0.2")]).await,
            403,
            "{header}"
        );
    }
    // And the allowed client, direct, with a forged header naming an outsider, still gets in.
    assert_eq!(
        host.status("127.0.0.2", &[("X-Forwarded-For", "192.0.2.1")])
            .await,
        200
    );
}
