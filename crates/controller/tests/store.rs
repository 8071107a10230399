//! The store against both backends: every check runs on SQLite and on a real PostgreSQL.

use std::collections::BTreeMap;

use gatehouse_controller::store::{
    AgentRow, ApiTokenRow, AuditRow, JoinTokenRow, RedeemError, Store,
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
        last_apply: String::new(),
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

async fn check_everything(store: Store) {
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
    store
        .agent_set_last_apply("agent1", r#"{"generation":3}"#)
        .await
        .unwrap();
    assert_eq!(
        store.agent_get("agent1").await.unwrap().unwrap().last_apply,
        r#"{"generation":3}"#
    );

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
}

#[tokio::test]
async fn store_on_sqlite() {
    let (store, _dir) = sqlite().await;
    check_everything(store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn store_on_postgres() {
    let pg = Postgres::start();
    let store = Store::open(&pg.url).await.unwrap();
    check_everything(store.clone()).await;
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
