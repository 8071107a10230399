//! The store against both backends: every check runs on SQLite and on a real PostgreSQL.

use std::collections::BTreeMap;

use gatehouse_controller::store::{
    AcmeAccountRow, AcmeOrderRow, AcmeTxtRow, AgentRow, ApiTokenRow, AuditRow, JoinTokenRow,
    LeaderJob, OrderState, RedeemError, Store, TunnelRecord, TunnelRouteRow, TunnelRow,
    WgNetworkRow, WgPeerRow,
};
use gatehouse_proto::v1::DesiredState;
use gatehouse_testkit::postgres::Postgres;

async fn sqlite() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("gh.db").display());
    (Store::open(&url).await.unwrap(), dir)
}

fn token(id: &str, expires_at: i64) -> JoinTokenRow {
    JoinTokenRow {
        id: id.into(),
        secret_hash: "hash".into(),
        labels: BTreeMap::from([("env".into(), "prod".into())]),
        created_at: 100,
        expires_at,
        used_at: None,
        used_by: None,
        revoked_at: None,
    }
}

fn agent(id: &str) -> AgentRow {
    AgentRow {
        id: id.into(),
        hostname: "web1".into(),
        labels: BTreeMap::new(),
        enrolled_at: 150,
        revoked_at: None,
        cert_serial: "01".into(),
        cert_not_after: 1000,
        last_seen_at: None,
        applied_generation: 0,
        version: String::new(),
        facts: None,
        last_apply: None,
        domain: String::new(),
    }
}

fn state(generation: u64) -> DesiredState {
    DesiredState {
        generation,
        report_interval_seconds: 30,
        ..Default::default()
    }
}

/// Allowlists: devices, check-ins (one row per device and address, last time moving), fixed
/// entries, revocation and expiry.
async fn check_allowlists(store: &Store) {
    use gatehouse_controller::store::{AllowlistRow, DeviceRow, EntryRow};
    let list = AllowlistRow {
        name: "home".into(),
        ttl_seconds: 600,
        cloudflare: "rules".into(),
        account: "main".into(),
        allow_private: false,
        ipv6_prefix: 64,
        created_at: 100,
    };
    store.allowlist_insert(&list).await.unwrap();
    assert_eq!(
        store.allowlist_get("home").await.unwrap(),
        Some(list.clone())
    );
    for (id, name) in [("d1", "phone"), ("d2", "laptop")] {
        store
            .device_insert(&DeviceRow {
                id: id.into(),
                list: "home".into(),
                name: name.into(),
                secret_hash: "ab".repeat(32),
                created_at: 100,
                revoked_at: 0,
            })
            .await
            .unwrap();
    }
    store
        .sighting_record("d1", "203.0.113.7/32", 100)
        .await
        .unwrap();
    store
        .sighting_record("d1", "203.0.113.7/32", 150)
        .await
        .unwrap();
    store
        .sighting_record("d2", "203.0.113.7/32", 120)
        .await
        .unwrap();
    let seen = store.sightings("home").await.unwrap();
    assert_eq!(seen.len(), 2);
    let phone = seen.iter().find(|s| s.device == "phone").unwrap();
    assert_eq!((phone.first_at, phone.last_at), (100, 150));
    store
        .entry_put(&EntryRow {
            list: "home".into(),
            cidr: "198.51.100.0/24".into(),
            comment: "office".into(),
            created_at: 100,
            expires_at: 700,
        })
        .await
        .unwrap();
    assert_eq!(store.entries("home").await.unwrap().len(), 1);
    store.device_revoke("d2", 200).await.unwrap();
    assert_eq!(store.sightings("home").await.unwrap().len(), 1);
    assert_eq!(
        store.device_get("d2").await.unwrap().unwrap().revoked_at,
        200
    );
    // At 760: the phone's check-in (150 + 600) and the entry (700) have expired.
    assert_eq!(store.allowlists_sweep(760).await.unwrap(), 2);
    assert!(store.sightings("home").await.unwrap().is_empty());
    assert!(store.entries("home").await.unwrap().is_empty());
    store.allowlist_delete("home").await.unwrap();
    assert_eq!(store.allowlist_get("home").await.unwrap(), None);
    assert!(store.devices("home").await.unwrap().is_empty());
}

/// Tunnels: each step's result is kept, routes and records read back typed.
async fn check_tunnels(store: &Store) {
    let mut t = TunnelRow {
        agent_id: "agent1".into(),
        name: "odoo-acme".into(),
        account: "main".into(),
        cloudflare_account_id: "01a7362d577a6c3019a474fd6f485823".into(),
        tunnel_id: String::new(),
        token_sealed: String::new(),
        secret_sha256: "ab".repeat(32),
        routes: vec![TunnelRouteRow {
            hostname: "acme.example.com".into(),
            service: "http://172.16.16.105:8069".into(),
            connect_timeout: 5,
            ..Default::default()
        }],
        records: BTreeMap::new(),
        config_version: 0,
        state: "started".into(),
        created_at: 100,
        updated_at: 100,
    };
    store.tunnel_put(&t).await.unwrap();
    t.tunnel_id = "f70ff985-a4ef-4643-bbbc-4a0ed4fc8415".into();
    t.records.insert(
        "acme.example.com".into(),
        TunnelRecord {
            zone_id: "z1".into(),
            record_id: "r1".into(),
        },
    );
    t.config_version = 2;
    t.state = "ready".into();
    t.updated_at = 200;
    store.tunnel_put(&t).await.unwrap();
    assert_eq!(
        store.tunnel_get("agent1", "odoo-acme").await.unwrap(),
        Some(t.clone())
    );
    let other = TunnelRow {
        agent_id: "agent2".into(),
        ..t.clone()
    };
    store.tunnel_put(&other).await.unwrap();
    assert_eq!(store.tunnels(None).await.unwrap().len(), 2);
    assert_eq!(store.tunnels(Some("agent2")).await.unwrap(), vec![other]);
    store.tunnel_delete("agent1", "odoo-acme").await.unwrap();
    assert_eq!(store.tunnel_get("agent1", "odoo-acme").await.unwrap(), None);
    store.tunnel_delete("agent2", "odoo-acme").await.unwrap();
}

/// WireGuard: a taken name or address is refused (not an error), a network with peers stays,
/// a removed peer frees its addresses and comes back whole.
async fn check_wireguard(store: &Store) {
    let net = WgNetworkRow {
        name: "office".into(),
        interface: "gh-office".into(),
        ipv4: "10.60.0.0/24".into(),
        ipv6: "fd12:3456:789a::/64".into(),
        topology: "mesh".into(),
        port: 51820,
        mtu: 1420,
        dns: vec!["10.60.0.1".into(), "fd12:3456:789a::1".into()],
        keepalive_seconds: 25,
        created_at: 100,
    };
    assert!(store.wg_network_insert(&net).await.unwrap());
    assert!(!store.wg_network_insert(&net).await.unwrap());
    assert_eq!(
        store.wg_network_get("office").await.unwrap(),
        Some(net.clone())
    );
    let host = WgPeerRow {
        network: "office".into(),
        name: "agent1".into(),
        kind: "host".into(),
        agent_id: "agent1".into(),
        public_key: String::new(),
        ipv4: "10.60.0.1".into(),
        ipv6: "fd12:3456:789a::1".into(),
        hub: true,
        endpoint: "hub.example.com:51820".into(),
        preshared_key: String::new(),
        expires_at: 0,
        key_revision: 0,
        created_at: 100,
    };
    assert!(store.wg_peer_insert(&host).await.unwrap());
    let same_address = WgPeerRow {
        name: "phone".into(),
        kind: "client".into(),
        ipv6: "fd12:3456:789a::2".into(),
        ..host.clone()
    };
    assert!(!store.wg_peer_insert(&same_address).await.unwrap());
    let phone = WgPeerRow {
        ipv4: "10.60.0.2".into(),
        preshared_key: "sealed".into(),
        expires_at: 500,
        hub: false,
        ..same_address
    };
    assert!(store.wg_peer_insert(&phone).await.unwrap());
    assert!(
        store
            .wg_host_key_set("office", "agent1", "k=")
            .await
            .unwrap()
    );
    assert!(
        !store
            .wg_host_key_set("office", "agent1", "k=")
            .await
            .unwrap()
    );
    let peers = store.wg_peers("office").await.unwrap();
    assert_eq!(peers.len(), 2);
    assert_eq!(peers[0].public_key, "k=");
    assert_eq!(store.wg_addresses("office").await.unwrap().len(), 2);
    assert!(!store.wg_network_delete("office").await.unwrap());
    assert_eq!(
        store.wg_peer_delete("office", "phone").await.unwrap(),
        Some(phone)
    );
    assert_eq!(store.wg_peer_delete("office", "phone").await.unwrap(), None);
    store.wg_peer_delete("office", "agent1").await.unwrap();
    assert!(store.wg_network_delete("office").await.unwrap());
    assert!(store.wg_networks().await.unwrap().is_empty());
}

async fn check_everything(store: Store) {
    check_tunnels(&store).await;
    check_wireguard(&store).await;
    check_allowlists(&store).await;
    // Join tokens: redeemed once, atomically, only while valid.
    store.join_token_insert(&token("tok1", 200)).await.unwrap();
    store.join_token_insert(&token("tok2", 200)).await.unwrap();
    store.join_token_insert(&token("tok3", 120)).await.unwrap();
    assert_eq!(
        store
            .enroll_agent("tok1", &agent("agent1"), &state(1), 150)
            .await
            .unwrap(),
        Ok(())
    );
    assert_eq!(
        store
            .enroll_agent("tok1", &agent("agent2"), &state(1), 151)
            .await
            .unwrap(),
        Err(RedeemError::Used)
    );
    assert_eq!(
        store
            .enroll_agent("tok3", &agent("agent3"), &state(1), 150)
            .await
            .unwrap(),
        Err(RedeemError::Expired)
    );
    assert_eq!(
        store
            .enroll_agent("nope", &agent("agent4"), &state(1), 150)
            .await
            .unwrap(),
        Err(RedeemError::Unknown)
    );
    store.join_token_revoke("tok2", 160).await.unwrap();
    assert_eq!(
        store
            .enroll_agent("tok2", &agent("agent5"), &state(1), 161)
            .await
            .unwrap(),
        Err(RedeemError::Revoked)
    );
    // Refused enrollments left no agent behind.
    let agents = store.agent_list().await.unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0].id, "agent1");
    let t = store.join_token_get("tok1").await.unwrap().unwrap();
    assert_eq!(
        (t.used_at, t.used_by.as_deref()),
        (Some(150), Some("agent1"))
    );
    assert_eq!(t.labels["env"], "prod");
    assert_eq!(t.state(150), "used");
    let states: Vec<String> = store
        .join_token_list()
        .await
        .unwrap()
        .iter()
        .map(|t| format!("{}={}", t.id, t.state(170)))
        .collect();
    assert!(
        states.contains(&"tok2=revoked".to_owned()) && states.contains(&"tok3=expired".to_owned()),
        "{states:?}"
    );

    // Two racing enrollments with one token: exactly one wins.
    store
        .join_token_insert(&token("race", 10_000))
        .await
        .unwrap();
    let (racer1, racer2, first) = (agent("racer1"), agent("racer2"), state(1));
    let (a, b) = tokio::join!(
        store.enroll_agent("race", &racer1, &first, 300),
        store.enroll_agent("race", &racer2, &first, 300),
    );
    let wins = [a, b]
        .into_iter()
        .filter(|r| matches!(r, Ok(Ok(()))))
        .count();
    assert_eq!(wins, 1);

    // Desired states: generations only grow, each is kept.
    let s2 = store.desired_push("agent1", state(0), 400).await.unwrap();
    let s3 = store.desired_push("agent1", state(0), 401).await.unwrap();
    assert_eq!((s2.generation, s3.generation), (2, 3));
    let latest = store.desired_latest("agent1").await.unwrap().unwrap();
    assert_eq!(latest.generation, 3);
    assert_eq!(latest.state.report_interval_seconds, 30);
    assert!(store.desired_latest("ghost").await.unwrap().is_none());
    assert_eq!(
        store
            .desired_get("agent1", 2)
            .await
            .unwrap()
            .unwrap()
            .created_at,
        400
    );
    assert!(store.desired_get("agent1", 9).await.unwrap().is_none());
    let history: Vec<u64> = store
        .desired_history("agent1", 2)
        .await
        .unwrap()
        .iter()
        .map(|d| d.generation)
        .collect();
    assert_eq!(history, [3, 2]);
    let ack = gatehouse_proto::v1::Ack {
        generation: 3,
        results: vec![
            gatehouse_proto::v1::ItemResult::applied("site", "www"),
            gatehouse_proto::v1::ItemResult::pending("certificate", "www", "waiting"),
        ],
    };
    let record = gatehouse_controller::store::ApplyRecord::new(&ack, 77);
    store.agent_set_last_apply("agent1", &record).await.unwrap();
    let stored = store.agent_get("agent1").await.unwrap().unwrap().last_apply;
    assert_eq!(stored.as_ref(), Some(&record));
    assert_eq!(stored.unwrap().items(), ack.results);

    // Agents: hello, progress, certificate, revocation.
    let facts = gatehouse_proto::v1::HostFacts {
        hostname: "web1.example".into(),
        os: "Debian".into(),
        ..Default::default()
    };
    store
        .agent_hello("agent1", "0.1.0", &facts, 2, 500)
        .await
        .unwrap();
    store.agent_seen("agent1", 3, 510).await.unwrap();
    store
        .agent_set_certificate("agent1", "02", 2000)
        .await
        .unwrap();
    let a = store.agent_get("agent1").await.unwrap().unwrap();
    assert_eq!(a.hostname, "web1.example");
    assert_eq!(a.facts.unwrap().os, "Debian");
    assert_eq!((a.applied_generation, a.last_seen_at), (3, Some(510)));
    assert_eq!((a.cert_serial.as_str(), a.cert_not_after), ("02", 2000));
    assert!(store.agent_revoked_ids().await.unwrap().is_empty());
    store.agent_revoke("agent1", 600).await.unwrap();
    store.agent_revoke("agent1", 700).await.unwrap();
    assert_eq!(
        store.agent_get("agent1").await.unwrap().unwrap().revoked_at,
        Some(600)
    );
    assert_eq!(
        store.agent_revoked_ids().await.unwrap(),
        vec!["agent1".to_owned()]
    );

    // API tokens.
    let api = ApiTokenRow {
        id: "api1".into(),
        name: "ci".into(),
        role: "viewer".into(),
        secret_hash: "h".into(),
        created_at: 1,
        revoked_at: None,
        last_used_at: None,
    };
    store.api_token_insert(&api).await.unwrap();
    assert!(
        store.api_token_insert(&api).await.is_err(),
        "ids are unique"
    );
    store.api_token_touch("api1", 1000).await.unwrap();
    store.api_token_touch("api1", 1010).await.unwrap();
    assert_eq!(
        store
            .api_token_get("api1")
            .await
            .unwrap()
            .unwrap()
            .last_used_at,
        Some(1000)
    );
    store.api_token_revoke("api1", 1100).await.unwrap();
    assert_eq!(
        store.api_token_list().await.unwrap()[0].revoked_at,
        Some(1100)
    );

    // Audit: newest N, returned oldest first.
    for i in 0..5 {
        let row = AuditRow {
            at_ms: 1000 + i,
            actor: "local:uid=0".into(),
            action: format!("action{i}"),
            target: "t".into(),
            result: "ok".into(),
        };
        store.audit_insert(&format!("id{i}"), &row).await.unwrap();
    }
    let newest: Vec<String> = store
        .audit_list(3)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.action)
        .collect();
    assert_eq!(newest, ["action2", "action3", "action4"]);

    // Named values: the first writer wins.
    assert_eq!(
        store.kv_insert_if_absent("ca", "first", 1).await.unwrap(),
        "first"
    );
    assert_eq!(
        store.kv_insert_if_absent("ca", "second", 2).await.unwrap(),
        "first"
    );
    assert_eq!(store.kv_get("missing").await.unwrap(), None);

    check_acme(&store).await;
}

fn order(id: &str, csr: &[u8], next_attempt_at: i64) -> AcmeOrderRow {
    AcmeOrderRow {
        id: id.into(),
        agent_id: "a1".into(),
        certificate: "www".into(),
        revision: 3,
        account: "le".into(),
        domains: vec!["www.example.com".into(), "*.example.com".into()],
        csr: csr.to_vec(),
        csr_sha256: format!("sha-{id}"),
        state: OrderState::Pending,
        order_url: String::new(),
        last_error: String::new(),
        failures: 0,
        next_attempt_at,
        chain_pem: String::new(),
        serial: String::new(),
        not_before: 0,
        not_after: 0,
        renew_at: 0,
        renewal: String::new(),
        recheck_at: 0,
        superseded: false,
        created_at: 100,
        updated_at: 100,
    }
}

async fn check_acme(store: &Store) {
    let account = AcmeAccountRow {
        name: "le".into(),
        directory_url: "https://acme.example/dir".into(),
        email: "ops@example.com".into(),
        credentials_sealed: "sealed".into(),
        eab_kid: "kid".into(),
        eab_hmac_sealed: "sealed-hmac".into(),
        ca_roots: String::new(),
        created_at: 1,
    };
    store.acme_account_insert(&account).await.unwrap();
    assert!(
        store.acme_account_insert(&account).await.is_err(),
        "names are unique"
    );
    assert_eq!(
        store.acme_account("le").await.unwrap(),
        Some(account.clone())
    );
    assert_eq!(store.acme_accounts().await.unwrap(), vec![account]);
    assert_eq!(store.acme_account("nope").await.unwrap(), None);

    // Orders: the CSR's bytes survive, due ones come out in order.
    let csr = [0u8, 1, 2, 255, 254];
    store
        .acme_order_insert(&order("o1", &csr, 50))
        .await
        .unwrap();
    store
        .acme_order_insert(&order("o2", &csr, 500))
        .await
        .unwrap();
    let o1 = store.acme_order("o1").await.unwrap().unwrap();
    assert_eq!(o1, order("o1", &csr, 50));
    assert_eq!(
        store
            .acme_order_for_csr("a1", "www", "sha-o2")
            .await
            .unwrap()
            .map(|o| o.id),
        Some("o2".into())
    );
    let due: Vec<String> = store
        .acme_orders_due(100)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(due, ["o1"]);
    assert_eq!(store.acme_next_due().await.unwrap(), Some(50));

    // Progress is saved; issued orders are no longer due but are current.
    let mut issued = o1.clone();
    issued.state = OrderState::Issued;
    issued.chain_pem = "PEM".into();
    issued.serial = "0abc".into();
    issued.not_before = 1000;
    issued.not_after = 2000;
    issued.renew_at = 1500;
    issued.renewal = "lifetime".into();
    issued.recheck_at = i64::MAX;
    issued.updated_at = 200;
    store.acme_order_update(&issued).await.unwrap();
    assert_eq!(store.acme_order("o1").await.unwrap(), Some(issued.clone()));
    assert_eq!(store.acme_orders_due(10_000).await.unwrap().len(), 1);
    assert_eq!(store.acme_current().await.unwrap(), vec![issued.clone()]);
    assert_eq!(store.acme_next_due().await.unwrap(), Some(500));
    issued.superseded = true;
    store.acme_order_update(&issued).await.unwrap();
    assert!(store.acme_current().await.unwrap().is_empty());

    // A retry makes a waiting order due now; issued ones cannot be retried.
    let mut failed = store.acme_order("o2").await.unwrap().unwrap();
    failed.state = OrderState::Failed;
    failed.failures = 3;
    failed.next_attempt_at = 99_999;
    store.acme_order_update(&failed).await.unwrap();
    assert!(store.acme_order_retry_now("o2", 300).await.unwrap());
    let retried = store.acme_order("o2").await.unwrap().unwrap();
    assert_eq!((retried.failures, retried.next_attempt_at), (0, 300));
    assert!(!store.acme_order_retry_now("o1", 300).await.unwrap());
    assert_eq!(store.acme_orders(Some("a1")).await.unwrap().len(), 2);
    assert!(store.acme_orders(Some("other")).await.unwrap().is_empty());

    // TXT records: recorded before creation, their id filled in after, forgotten once deleted.
    let mut txt = AcmeTxtRow {
        order_id: "o2".into(),
        cloudflare_account: "main".into(),
        zone_id: "z1".into(),
        name: "_acme-challenge.example.com".into(),
        content: "token-1".into(),
        record_id: String::new(),
        created_at: 5,
    };
    store.acme_txt_put(&txt).await.unwrap();
    txt.record_id = "rec-1".into();
    store.acme_txt_put(&txt).await.unwrap();
    assert_eq!(
        store.acme_txt_records(Some("o2")).await.unwrap(),
        vec![txt.clone()]
    );
    assert_eq!(store.acme_txt_records(None).await.unwrap().len(), 1);
    store
        .acme_txt_delete("o2", &txt.name, &txt.content)
        .await
        .unwrap();
    assert!(store.acme_txt_records(None).await.unwrap().is_empty());
    store.acme_order_delete("o2").await.unwrap();
    assert_eq!(store.acme_order("o2").await.unwrap(), None);
}

#[tokio::test]
async fn store_on_sqlite() {
    let (store, _dir) = sqlite().await;
    check_everything(store.clone()).await;
    // One controller per SQLite file: it always leads.
    let mut leader = store.try_lead(LeaderJob::Acme).await.unwrap().unwrap();
    assert!(leader.still().await);
}

#[tokio::test(flavor = "multi_thread")]
async fn store_on_postgres() {
    let pg = Postgres::start();
    let store = Store::open(&pg.url).await.unwrap();
    check_everything(store.clone()).await;

    // Two controllers on one database: one leads the ACME worker until its connection goes.
    let other = Store::open(&pg.url).await.unwrap();
    let mut leader = store
        .try_lead(LeaderJob::Acme)
        .await
        .unwrap()
        .expect("leads");
    assert!(leader.still().await);
    assert!(other.try_lead(LeaderJob::Acme).await.unwrap().is_none());
    drop(leader);
    let mut took_over = None;
    for _ in 0..50 {
        took_over = other.try_lead(LeaderJob::Acme).await.unwrap();
        if took_over.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(took_over.is_some(), "the other controller never took over");
    assert!(store.try_lead(LeaderJob::Acme).await.unwrap().is_none());
    drop(took_over);
    other.close().await;
    store.close().await;
    // Reopening runs no migration twice and finds the data.
    let again = Store::open(&pg.url).await.unwrap();
    assert_eq!(again.agent_list().await.unwrap().len(), 2);
    again.close().await;
}

#[tokio::test]
async fn sqlite_data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("gh.db").display());
    let store = Store::open(&url).await.unwrap();
    store.join_token_insert(&token("tok", 200)).await.unwrap();
    store.close().await;
    let store = Store::open(&url).await.unwrap();
    assert!(store.join_token_get("tok").await.unwrap().is_some());
}

#[tokio::test]
async fn an_unreachable_database_is_named_without_its_password() {
    let err = Store::open("postgres://gh:s3cret@127.0.0.1:1/gh")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("postgres://gh:***@127.0.0.1:1/gh"), "{err}");
    assert!(!err.contains("s3cret"));
}
