//! A large fleet through the admin API: `ListAgents` pages in id order and filters by selector
//! and status on the controller, every agent is seen exactly once across pages even while
//! agents enroll during the walk, and one `LabelAgents` call relabels every matching host.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use gatehouse_common::transport::unix_channel;
use gatehouse_controller::server::{self, Running};
use gatehouse_proto::v1::admin_service_client::AdminServiceClient;
use gatehouse_proto::v1::{LabelAgentsRequest, ListAgentsRequest};
use tokio_util::sync::CancellationToken;

type Admin = AdminServiceClient<tonic::transport::Channel>;

/// Enrolls an agent (identity only) with `role` as its token's label; its id.
async fn enroll(running: &Running, root: &std::path::Path, role: &str) -> String {
    let labels = BTreeMap::from([("role".to_owned(), role.to_owned())]);
    support::enroll(running, root, labels).await
}

/// One `LabelAgents` call.
async fn label(
    admin: &mut Admin,
    selector: &str,
    set: &[(&str, &str)],
    remove: &[&str],
) -> Result<gatehouse_proto::v1::LabelAgentsResponse, tonic::Status> {
    admin
        .label_agents(LabelAgentsRequest {
            selector: selector.into(),
            set: set
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            remove: remove.iter().map(|k| (*k).to_owned()).collect(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Every page of a walk with `selector`; the ids in order, and the size of each page.
async fn walk(admin: &mut Admin, selector: &str, status: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = admin
            .list_agents(ListAgentsRequest {
                page_size: 7,
                page_token,
                selector: selector.into(),
                status: status.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.agents.len() <= 7);
        ids.extend(page.agents.into_iter().map(|a| a.id));
        if page.next_page_token.is_empty() {
            return ids;
        }
        page_token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_hold_every_agent_once_while_agents_enroll_and_filters_run_on_the_controller() {
    let dir = tempfile::tempdir().unwrap();
    let running = server::start(support::config(dir.path()), CancellationToken::new())
        .await
        .unwrap();
    let mut n = 0;
    let mut next_root = || {
        n += 1;
        dir.path().join(format!("agent-{n}"))
    };
    let mut before = BTreeSet::new();
    let mut edge = BTreeSet::new();
    for i in 0..24 {
        let role = if i % 3 == 0 { "db" } else { "edge" };
        let id = enroll(&running, &next_root(), role).await;
        if role == "edge" {
            edge.insert(id.clone());
        }
        before.insert(id);
    }
    let mut admin =
        AdminServiceClient::new(unix_channel(running.admin_socket.clone()).await.unwrap());

    // A walk of small pages, with two agents enrolling after each page.
    let mut seen = Vec::new();
    let mut page_token = String::new();
    let mut during = BTreeSet::new();
    loop {
        let page = admin
            .list_agents(ListAgentsRequest {
                page_size: 5,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.agents.len() <= 5);
        seen.extend(page.agents.into_iter().map(|a| a.id));
        for _ in 0..2 {
            during.insert(enroll(&running, &next_root(), "late").await);
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "an agent was listed twice: {seen:?}"
    );
    for id in &before {
        assert!(
            seen.contains(id),
            "{id}, enrolled before the walk, was not listed"
        );
    }
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "pages are in id order");
    assert!(
        seen.iter()
            .all(|id| before.contains(id) || during.contains(id))
    );

    // Filters run on the controller.
    let edge_ids: BTreeSet<String> = walk(&mut admin, "role=edge", "")
        .await
        .into_iter()
        .collect();
    assert_eq!(edge_ids, edge);
    assert_eq!(walk(&mut admin, "role=late", "").await.len(), during.len());
    assert!(walk(&mut admin, "", "online").await.is_empty(), "none runs");
    assert_eq!(walk(&mut admin, "!role", "").await.len(), 0);
    let bad = admin
        .list_agents(ListAgentsRequest {
            selector: "Role=edge".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("label key"), "{}", bad.message());
    let bad = admin
        .list_agents(ListAgentsRequest {
            page_token: "not-a-token".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(bad.message().contains("page token"), "{}", bad.message());

    // One call relabels every matching agent, each in a new generation.
    let done = label(&mut admin, "role=edge", &[("region", "fra")], &[])
        .await
        .unwrap();
    assert_eq!(done.matched as usize, edge.len());
    assert_eq!(done.changed, done.matched);
    let fra: BTreeSet<String> = walk(&mut admin, "region=fra,role=edge", "")
        .await
        .into_iter()
        .collect();
    assert_eq!(fra, edge);
    let state = running
        .shared
        .store
        .desired_latest(edge.iter().next().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        state.state.labels.get("region").map(String::as_str),
        Some("fra")
    );
    let again = label(&mut admin, "role=edge", &[("region", "fra")], &[])
        .await
        .unwrap();
    assert_eq!(again.changed, 0, "nothing to change the second time");
    let removed = label(&mut admin, "region=fra", &[], &["region"])
        .await
        .unwrap();
    assert_eq!(removed.changed as usize, edge.len());
    assert!(walk(&mut admin, "region", "").await.is_empty());
    let none = label(&mut admin, "role=nothing", &[("x", "y")], &[])
        .await
        .unwrap_err();
    assert_eq!(none.code(), tonic::Code::NotFound);
}
