//! The alert, history and sign-in tables against both backends (SQLite and a real PostgreSQL).

use std::collections::BTreeMap;

use gatehouse_controller::store::{
    AlertRow, AlertState, ApplyRecord, LeaderJob, SampleRow, SilenceRow, Store,
};
use gatehouse_proto::v1::{Ack, ItemResult};
use gatehouse_testkit::postgres::Postgres;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn alert(fp: &str, state: AlertState) -> AlertRow {
    AlertRow {
        fingerprint: fp.into(),
        rule: "HostOffline".into(),
        labels: labels(&[("agent", "a1")]),
        annotations: labels(&[("summary", "gone")]),
        severity: "critical".into(),
        state,
        active_since: 100,
        fired_at: 0,
        resolved_at: 0,
        notified: String::new(),
    }
}

fn sample(agent: &str, at: i64, free: u64) -> SampleRow {
    SampleRow {
        agent_id: agent.into(),
        at,
        cpu_percent: 12.34,
        memory_used: 1 << 30,
        memory_total: 4 << 30,
        disk_mount: "/".into(),
        disk_free: free,
        disk_total: 1 << 40,
    }
}

async fn check(store: &Store) {
    // Alerts: written, updated in place, forgotten.
    store
        .alert_put(&alert("f1", AlertState::Pending))
        .await
        .unwrap();
    let mut firing = alert("f1", AlertState::Firing);
    firing.fired_at = 105;
    firing.notified = "firing".into();
    store.alert_put(&firing).await.unwrap();
    store
        .alert_put(&alert("f2", AlertState::Pending))
        .await
        .unwrap();
    let all = store.alerts().await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0], firing);
    store.alert_delete("f2").await.unwrap();
    assert_eq!(store.alerts().await.unwrap(), vec![firing.clone()]);

    // Silences: match on every label, hold only between start and end, expire once.
    let silence = SilenceRow {
        id: "s1".into(),
        matchers: labels(&[("agent", "a1"), ("alertname", "HostOffline")]),
        starts_at: 100,
        ends_at: 200,
        comment: "maintenance".into(),
        created_by: "local:uid=0".into(),
    };
    store.silence_insert(&silence).await.unwrap();
    let mut full = firing.labels.clone();
    full.insert("alertname".into(), "HostOffline".into());
    assert!(silence.silences(&full, 150));
    assert!(!silence.silences(&full, 200), "it ends at ends_at");
    assert!(
        !silence.silences(&firing.labels, 150),
        "every matcher must match"
    );
    assert_eq!(store.silences(150).await.unwrap(), vec![silence.clone()]);
    let ended = store.silence_expire("s1", 160).await.unwrap();
    assert_eq!(ended.id, "s1");
    assert!(store.silences(160).await.unwrap().is_empty());
    assert_eq!(store.silences(0).await.unwrap()[0].ends_at, 160);
    assert!(store.silence_expire("s1", 170).await.is_err(), "only once");
    store.silences_prune(161).await.unwrap();
    assert!(store.silences(0).await.unwrap().is_empty());

    // The outbox: the newest state per receiver and alert; a delivery removes only what it sent.
    store
        .outbox_put("webhook x", "f1", "{\"v\":1}", 100)
        .await
        .unwrap();
    store
        .outbox_put("alertmanager y", "f1", "{\"v\":1}", 100)
        .await
        .unwrap();
    let queued = store.outbox().await.unwrap();
    assert_eq!(queued.len(), 2);
    let sent = queued
        .iter()
        .find(|n| n.receiver == "webhook x")
        .unwrap()
        .clone();
    store.outbox_failed(&sent, 130, "HTTP 503").await.unwrap();
    let failed = store.outbox().await.unwrap();
    let retry = failed.iter().find(|n| n.receiver == "webhook x").unwrap();
    assert_eq!((retry.attempts, retry.next_at), (1, 130));
    assert_eq!(retry.last_error, "HTTP 503");
    // A newer state while the old one was being sent: the delivery of the old one keeps it.
    store
        .outbox_put("webhook x", "f1", "{\"v\":2}", 140)
        .await
        .unwrap();
    store.outbox_done(&sent).await.unwrap();
    let left = store.outbox().await.unwrap();
    let newer = left
        .iter()
        .find(|n| n.receiver == "webhook x")
        .unwrap()
        .clone();
    assert_eq!((newer.body.as_str(), newer.attempts), ("{\"v\":2}", 0));
    store.outbox_done(&newer).await.unwrap();
    assert_eq!(store.outbox().await.unwrap().len(), 1);

    // Samples, oldest first, pruned by age.
    for (at, free) in [(100, 900), (160, 800), (220, 700)] {
        store.sample_insert(&sample("a1", at, free)).await.unwrap();
    }
    store.sample_insert(&sample("a2", 100, 1)).await.unwrap();
    let samples = store.samples("a1", 150).await.unwrap();
    assert_eq!(samples.len(), 2);
    assert_eq!(samples[0], sample("a1", 160, 800));
    assert_eq!(store.samples_prune(161).await.unwrap(), 3);
    assert_eq!(store.samples("a1", 0).await.unwrap().len(), 1);

    // Each generation's result; pruning keeps every host's newest.
    let record = |generation, at, state: &str| {
        let result = match state {
            "failed" => ItemResult::failed("site", "a", "caddy refused it"),
            _ => ItemResult::applied("site", "a"),
        };
        ApplyRecord::new(
            &Ack {
                generation,
                results: vec![result],
            },
            at,
        )
    };
    // Failures in a row are counted from the record before.
    let first = record(1, 10, "failed").following(None);
    let second = record(1, 11, "failed").following(Some(&first));
    assert_eq!(
        (first.results[0].failures, second.results[0].failures),
        (1, 2)
    );
    let fixed = record(2, 12, "applied").following(Some(&second));
    assert_eq!(fixed.results[0].failures, 0);
    store
        .apply_history_put("a1", &record(1, 10, "failed"))
        .await
        .unwrap();
    store
        .apply_history_put("a1", &record(2, 20, "applied"))
        .await
        .unwrap();
    store
        .apply_history_put("a1", &record(2, 25, "applied"))
        .await
        .unwrap();
    let history = store.apply_history("a1", 10).await.unwrap();
    assert_eq!(
        history,
        vec![record(2, 25, "applied"), record(1, 10, "failed")]
    );
    store.apply_history_prune(1000).await.unwrap();
    assert_eq!(
        store.apply_history("a1", 10).await.unwrap(),
        vec![record(2, 25, "applied")]
    );

    // Sign-in links: once, before they expire; sessions until theirs.
    store
        .ui_link_insert("l1", "viewer", "token:t1", 100, 200)
        .await
        .unwrap();
    store
        .ui_link_insert("l2", "admin", "local:uid=0", 100, 150)
        .await
        .unwrap();
    assert_eq!(
        store.ui_link_redeem("l1", "s1", 120, 1000).await.unwrap(),
        Some(("viewer".into(), "token:t1".into()))
    );
    assert_eq!(
        store.ui_link_redeem("l1", "s9", 121, 1000).await.unwrap(),
        None
    );
    assert_eq!(
        store.ui_link_redeem("l2", "s2", 150, 1000).await.unwrap(),
        None,
        "expired"
    );
    assert_eq!(
        store.ui_session("l1", 130).await.unwrap(),
        None,
        "a link is no session"
    );
    assert_eq!(
        store.ui_session("s1", 999).await.unwrap(),
        Some(("viewer".into(), "token:t1".into()))
    );
    assert_eq!(store.ui_session("s1", 1000).await.unwrap(), None);
    store.ui_sessions_prune(1000).await.unwrap();
}

#[tokio::test]
async fn alert_tables_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite://{}", dir.path().join("gh.db").display()))
        .await
        .unwrap();
    check(&store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn alert_tables_on_postgres_and_one_leader_for_the_rules() {
    let pg = Postgres::start();
    let store = Store::open(&pg.url).await.unwrap();
    check(&store).await;
    // The alert rules have a leader of their own, apart from the ACME worker's.
    let other = Store::open(&pg.url).await.unwrap();
    let _acme = store
        .try_lead(LeaderJob::Acme)
        .await
        .unwrap()
        .expect("leads ACME");
    let alerts = other.try_lead(LeaderJob::Alerts).await.unwrap();
    assert!(alerts.is_some(), "another controller may lead the alerts");
    assert!(store.try_lead(LeaderJob::Alerts).await.unwrap().is_none());
    // And so has the allowlist mirror at Cloudflare.
    let _sync = store
        .try_lead(LeaderJob::AllowlistSync)
        .await
        .unwrap()
        .expect("leads the allowlist sync");
    assert!(
        other
            .try_lead(LeaderJob::AllowlistSync)
            .await
            .unwrap()
            .is_none()
    );
}
