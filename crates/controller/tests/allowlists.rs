//! Allowlist check-ins against an in-process controller on a manual clock: devices check in
//! over HTTP from several loopback source addresses, the clock is moved to expire them, and
//! every refusal (bad tokens, floods, bodies, sources, forged headers) changes nothing.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use gatehouse_common::Clock;
use gatehouse_controller::allowlists::{self, Mirror, NewList};
use gatehouse_controller::config::Config;
use gatehouse_controller::server::{self, Running};
use tokio_util::sync::CancellationToken;

async fn controller(
    dir: &std::path::Path,
    clock: Clock,
    edit: impl FnOnce(&mut Config),
) -> Running {
    let mut config = support::config(dir);
    edit(&mut config);
    server::start_with_clock(config, clock, CancellationToken::new())
        .await
        .unwrap()
}

async fn list(running: &Running, name: &str, ttl: Duration, allow_private: bool) {
    allowlists::create(
        &running.shared,
        NewList {
            name: name.into(),
            ttl,
            cloudflare: Mirror::None,
            account: String::new(),
            allow_private,
            ipv6_prefix: 64,
        },
    )
    .await
    .unwrap();
}

async fn device(running: &Running, list: &str, name: &str) -> String {
    let (_, token) = allowlists::add_device(&running.shared, list, name)
        .await
        .unwrap();
    token.reveal()
}

/// One check-in from `source` (a loopback address the client binds to).
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: serde_json::Value,
}

async fn checkin(
    running: &Running,
    source: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Answer {
    let client = reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().unwrap())
        .no_proxy()
        .build()
        .unwrap();
    let mut req = client
        .post(format!("http://{}/v1/allowlist/checkin", running.http_addr))
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = r.json().await.unwrap_or(serde_json::Value::Null);
    Answer {
        status,
        retry_after,
        body,
    }
}

async fn entries(running: &Running, list: &str) -> Vec<(String, Option<i64>, Vec<String>)> {
    let row = allowlists::get(&running.shared, list).await.unwrap();
    allowlists::effective(&running.shared, &row, running.shared.now())
        .await
        .unwrap()
        .into_iter()
        .map(|e| {
            (
                e.cidr.to_string(),
                e.expires_at,
                e.devices.into_iter().map(|d| d.0).collect(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn check_ins_from_several_addresses_expire_with_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let start = gatehouse_common::now_unix();
    let clock = Clock::manual(start);
    let running = controller(dir.path(), clock.clone(), |c| {
        c.checkin.min_interval = Duration::from_secs(30);
    })
    .await;
    list(&running, "home", Duration::from_secs(600), true).await;
    let phone = device(&running, "home", "phone").await;
    let laptop = device(&running, "home", "laptop").await;
    let cron = device(&running, "home", "cron").await;

    let ok = checkin(&running, "127.0.0.2", Some(&phone), &[], Vec::new()).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body["address"], "127.0.0.2/32");
    assert_eq!(ok.body["device"], "phone");
    assert_eq!(ok.body["expires_in"], 600);
    assert!(
        checkin(&running, "127.0.0.3", Some(&laptop), &[], b"{}".to_vec())
            .await
            .status
            == 200
    );
    assert!(
        checkin(&running, "127.0.0.3", Some(&cron), &[], Vec::new())
            .await
            .status
            == 200
    );

    // Checking in again too soon: told when to come back, nothing recorded.
    let soon = checkin(&running, "127.0.0.2", Some(&phone), &[], Vec::new()).await;
    assert_eq!(soon.status, 429);
    assert_eq!(soon.retry_after.as_deref(), Some("30"));
    assert!(
        soon.body["error"]
            .as_str()
            .unwrap()
            .contains("check in again")
    );

    let now = entries(&running, "home").await;
    assert_eq!(
        now,
        [
            (
                "127.0.0.2/32".into(),
                Some(start + 600),
                vec!["phone".into()]
            ),
            (
                "127.0.0.3/32".into(),
                Some(start + 600),
                vec!["cron".into(), "laptop".into()]
            ),
        ]
    );

    // Later, the laptop checks in again: the shared entry lives as long as its latest device.
    clock.advance(Duration::from_secs(400));
    assert_eq!(
        checkin(&running, "127.0.0.3", Some(&laptop), &[], Vec::new())
            .await
            .status,
        200
    );
    clock.advance(Duration::from_secs(250));
    let later = entries(&running, "home").await;
    assert_eq!(later.len(), 1, "the phone's entry expired: {later:?}");
    assert_eq!(later[0].0, "127.0.0.3/32");
    assert_eq!(later[0].1, Some(start + 400 + 600));

    // A revoked device's entries go at once, and its token stops working.
    let p2 = checkin(&running, "127.0.0.2", Some(&phone), &[], Vec::new()).await;
    assert_eq!(p2.status, 200);
    allowlists::revoke_device(&running.shared, "home", "phone")
        .await
        .unwrap();
    assert!(
        !entries(&running, "home")
            .await
            .iter()
            .any(|e| e.0 == "127.0.0.2/32")
    );
    clock.advance(Duration::from_secs(60));
    let revoked = checkin(&running, "127.0.0.2", Some(&phone), &[], Vec::new()).await;
    assert_eq!(revoked.status, 401);

    // The sweeper's deletion agrees with what stopped counting.
    clock.advance(Duration::from_secs(600));
    assert!(entries(&running, "home").await.is_empty());
    assert!(
        running
            .shared
            .store
            .allowlists_sweep(running.shared.now())
            .await
            .unwrap()
            > 0
    );
    assert!(
        running
            .shared
            .store
            .sightings("home")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_tokens_bodies_sources_and_forged_headers_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(gatehouse_common::now_unix());
    let running = controller(dir.path(), clock.clone(), |c| {
        c.checkin.failure_limit = 3;
        c.checkin.trusted_proxies = vec!["127.0.0.9/32".parse().unwrap()];
    })
    .await;
    list(&running, "public", Duration::from_secs(600), false).await;
    list(&running, "lan", Duration::from_secs(600), true).await;
    let phone = device(&running, "public", "phone").await;
    let desk = device(&running, "lan", "desk").await;

    // Loopback is not a device's public address: refused, saying why.
    let refused = checkin(&running, "127.0.0.4", Some(&phone), &[], Vec::new()).await;
    assert_eq!(refused.status, 403);
    assert!(refused.body["error"].as_str().unwrap().contains("loopback"));
    // A forged header from an untrusted peer changes nothing.
    let forged = checkin(
        &running,
        "127.0.0.4",
        Some(&desk),
        &[
            ("X-Forwarded-For", "203.0.113.50"),
            ("CF-Connecting-IP", "203.0.113.51"),
        ],
        Vec::new(),
    )
    .await;
    assert_eq!(forged.status, 200);
    assert_eq!(forged.body["address"], "127.0.0.4/32");
    // From the trusted proxy, the forwarded address counts.
    clock.advance(Duration::from_secs(60));
    let proxied = checkin(
        &running,
        "127.0.0.9",
        Some(&phone),
        &[("CF-Connecting-IP", "2001:db8:1:2::77")],
        Vec::new(),
    )
    .await;
    assert_eq!(proxied.status, 200, "{}", proxied.body);
    assert_eq!(proxied.body["address"], "2001:db8:1:2::/64");

    // Malformed and oversized bodies, and a missing token.
    let malformed = checkin(
        &running,
        "127.0.0.5",
        Some(&desk),
        &[],
        b"not json".to_vec(),
    )
    .await;
    assert_eq!(malformed.status, 400);
    let huge = checkin(
        &running,
        "127.0.0.5",
        Some(&desk),
        &[],
        vec![b' '; 64 * 1024],
    )
    .await;
    assert_eq!(huge.status, 413);
    let none = checkin(&running, "127.0.0.5", None, &[], Vec::new()).await;
    assert_eq!(none.status, 401);
    assert!(none.body["error"].as_str().unwrap().contains("Bearer"));

    // A flood of bad tokens from one address is slowed down; others are not held back.
    for bad in [
        "ghd_aaaaaaaaaa.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
        "nonsense",
        "ghd_x.y",
    ] {
        assert_eq!(
            checkin(&running, "127.0.0.6", Some(bad), &[], Vec::new())
                .await
                .status,
            401
        );
    }
    let slowed = checkin(&running, "127.0.0.6", Some(&desk), &[], Vec::new()).await;
    assert_eq!(slowed.status, 429);
    assert!(slowed.retry_after.is_some());
    clock.advance(Duration::from_secs(60));
    assert_eq!(
        checkin(&running, "127.0.0.7", Some(&desk), &[], Vec::new())
            .await
            .status,
        200
    );

    // Nothing refused was recorded.
    let public: Vec<String> = entries(&running, "public")
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(public, ["2001:db8:1:2::/64"]);
    let lan: Vec<String> = entries(&running, "lan")
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(lan, ["127.0.0.4/32", "127.0.0.7/32"]);
}

/// Waits (on a condition, polling) until `check` holds.
async fn until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cloudflare_lists_follow_check_ins_expiry_and_revocation_and_leave_others_alone() {
    use gatehouse_controller::cloudflare::accounts::{self, NewAccount};
    let emulator = gatehouse_testkit::cloudflare::Emulator::start();
    emulator.add_token("cf-lists");
    emulator.add_zone("example.test");
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(gatehouse_common::now_unix());
    let running = controller(dir.path(), clock.clone(), |c| {
        c.checkin.min_interval = Duration::from_secs(1);
    })
    .await;
    accounts::add(
        &running.shared,
        NewAccount {
            name: "main",
            api_url: &emulator.api_url,
            token: "cf-lists",
        },
    )
    .await
    .unwrap();
    allowlists::create(
        &running.shared,
        NewList {
            name: "home".into(),
            ttl: Duration::from_secs(600),
            cloudflare: Mirror::Both,
            account: "main".into(),
            allow_private: true,
            ipv6_prefix: 64,
        },
    )
    .await
    .unwrap();
    let phone = device(&running, "home", "phone").await;
    let laptop = device(&running, "home", "laptop").await;
    let rules = || {
        let mut v = emulator.rules_list_items("gatehouse_home");
        v.sort();
        v
    };
    let gateway = || {
        let mut v = emulator.gateway_list_items("gatehouse-home");
        v.sort();
        v
    };
    let tagged = |ips: &[&str]| -> Vec<(String, String)> {
        ips.iter()
            .map(|ip| ((*ip).to_owned(), "gatehouse:home".to_owned()))
            .collect()
    };

    assert_eq!(
        checkin(&running, "127.0.0.2", Some(&phone), &[], Vec::new())
            .await
            .status,
        200
    );
    assert_eq!(
        checkin(&running, "127.0.0.3", Some(&laptop), &[], Vec::new())
            .await
            .status,
        200
    );
    let both = tagged(&["127.0.0.2", "127.0.0.3"]);
    until("both check-ins in the Rules List", || {
        (rules() == both).then_some(())
    })
    .await;
    until("both check-ins in the Gateway list", || {
        (gateway() == both).then_some(())
    })
    .await;

    // Someone else's item in the same lists is never touched.
    assert!(emulator.add_foreign_list_item("gatehouse_home", "192.0.2.99", "added by hand"));
    assert!(emulator.add_foreign_list_item("gatehouse-home", "192.0.2.99", "added by hand"));
    // A bulk operation someone else started keeps the account busy: gatehouse's write meets
    // HTTP 429 until it is done, and rides it out.
    emulator.set_bulk_delay(Duration::from_millis(1500));
    let busy = reqwest::Client::new()
        .post(format!(
            "{}/accounts/{}/rules/lists",
            emulator.api_url,
            emulator.account_id()
        ))
        .bearer_auth("cf-lists")
        .json(&serde_json::json!({"name": "other_list", "kind": "ip"}))
        .send()
        .await
        .unwrap();
    let other: serde_json::Value = busy.json().await.unwrap();
    let other_id = other["result"]["id"].as_str().unwrap();
    let pending = reqwest::Client::new()
        .post(format!(
            "{}/accounts/{}/rules/lists/{other_id}/items",
            emulator.api_url,
            emulator.account_id()
        ))
        .bearer_auth("cf-lists")
        .json(&serde_json::json!([{"ip": "198.51.100.1"}]))
        .send()
        .await
        .unwrap();
    assert!(pending.status().is_success());
    let throttled_before = emulator.request_counts().1;
    allowlists::revoke_device(&running.shared, "home", "laptop")
        .await
        .unwrap();
    running.shared.allowlists_changed.notify_waiters();
    let mut left = tagged(&["127.0.0.2"]);
    left.push(("192.0.2.99".into(), "added by hand".into()));
    left.sort();
    until(
        "the revoked device's item gone, the foreign one kept",
        || (rules() == left && gateway() == left).then_some(()),
    )
    .await;
    assert!(
        emulator.request_counts().1 > throttled_before,
        "the write met a 429 while the other bulk operation was pending"
    );
    emulator.set_bulk_delay(Duration::from_millis(50));

    // Time passes: the phone's entry expires from both lists; the foreign item stays.
    clock.advance(Duration::from_secs(601));
    let foreign = vec![("192.0.2.99".to_owned(), "added by hand".to_owned())];
    until("the expired entry gone from both lists", || {
        (rules() == foreign && gateway() == foreign).then_some(())
    })
    .await;
    let status = running
        .shared
        .list_sync
        .get("home", allowlists::sync::Target::Rules)
        .unwrap();
    assert!(
        status.error.is_empty() && status.synced_at > 0,
        "{status:?}"
    );
}
