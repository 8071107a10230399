//! The admin API end to end: roles, the audit log, and gatehousectl's safety rails.

use gatehouse_testkit::gatehouse::Controller;

fn token(controller: &Controller, name: &str, role: &str) -> String {
    controller.ctl_json(&["apitoken", "create", "--name", name, "--role", role])["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn a_viewer_cannot_mutate_and_every_mutation_is_audited() {
    let controller = Controller::start("");
    let viewer = token(&controller, "dashboard", "viewer");
    let operator = token(&controller, "deploy", "operator");

    // A viewer reads…
    let listed = controller.ctl_tls(&viewer, &["agents", "list", "--output", "json"]);
    assert!(listed.success, "{}", listed.stderr);
    assert!(controller.ctl_tls(&viewer, &["audit", "list"]).success);
    // …and changes nothing.
    for args in [
        vec!["token", "create"],
        vec!["apitoken", "create", "--name", "x", "--role", "admin"],
        vec!["agents", "label", "abcdefgh01234567", "a=b"],
    ] {
        let run = controller.ctl_tls(&viewer, &args);
        assert!(!run.success, "{args:?}");
        assert!(
            run.stderr.contains("role viewer cannot"),
            "{args:?}: {}",
            run.stderr
        );
    }
    assert!(
        controller
            .ctl_json(&["token", "list"])
            .as_array()
            .unwrap()
            .is_empty()
    );

    // An operator manages tokens but not API tokens.
    let created = controller.ctl_tls(&operator, &["token", "create", "--output", "json"]);
    assert!(created.success, "{}", created.stderr);
    let id = created.json()["info"]["id"].as_str().unwrap().to_owned();
    let run = controller.ctl_tls(
        &operator,
        &["apitoken", "create", "--name", "y", "--role", "viewer"],
    );
    assert!(
        run.stderr.contains("role operator cannot"),
        "{}",
        run.stderr
    );
    assert!(
        controller
            .ctl_tls(&operator, &["token", "revoke", &id, "--yes"])
            .success
    );

    let audit = controller.ctl_json(&["audit", "list"]);
    let entries = audit.as_array().unwrap();
    let has = |action: &str, actor: &str, result: &str| {
        entries.iter().any(|e| {
            e["action"] == action
                && e["actor"].as_str().unwrap().contains(actor)
                && e["result"].as_str().unwrap().starts_with(result)
        })
    };
    assert!(has("apitoken.create", "local:uid=", "ok"), "{audit}");
    assert!(
        has("token.create", "dashboard", "error: role viewer cannot"),
        "{audit}"
    );
    assert!(has("apitoken.create", "dashboard", "error"), "{audit}");
    assert!(has("agent.label", "dashboard", "error"), "{audit}");
    assert!(has("token.create", "deploy", "ok"), "{audit}");
    assert!(
        has("apitoken.create", "deploy", "error: role operator cannot"),
        "{audit}"
    );
    assert!(has("token.revoke", "deploy", "ok"), "{audit}");
    assert!(entries.iter().all(|e| e["at_ms"].as_i64().unwrap() > 0));
    // Reads are not audited.
    assert!(
        !entries
            .iter()
            .any(|e| e["action"].as_str().unwrap().contains("list"))
    );
    // Secrets never reach the audit log.
    assert!(!audit.to_string().contains(&viewer) && !audit.to_string().contains(&operator));
}

#[test]
fn bad_revoked_and_missing_api_tokens_are_refused_clearly() {
    let controller = Controller::start("");
    let run = controller.ctl_tls(
        "gha_aaaaaaaaaa.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
        &["agents", "list"],
    );
    assert!(run.stderr.contains("unknown API token"), "{}", run.stderr);
    let run = controller.ctl_tls("nonsense", &["agents", "list"]);
    assert!(run.stderr.contains("malformed token"), "{}", run.stderr);

    let t = token(&controller, "old", "admin");
    assert!(controller.ctl_tls(&t, &["agents", "list"]).success);
    let id = t.trim_start_matches("gha_").split('.').next().unwrap();
    assert!(controller.ctl(&["apitoken", "revoke", id, "--yes"]).success);
    let run = controller.ctl_tls(&t, &["agents", "list"]);
    assert!(run.stderr.contains("revoked"), "{}", run.stderr);
    let listed = controller.ctl_json(&["apitoken", "list"]);
    assert!(listed[0]["revoked_at"].as_i64().unwrap() > 0);
}

#[test]
fn destructive_commands_need_yes_off_a_terminal_and_input_is_checked() {
    let controller = Controller::start("");
    let run = controller.ctl(&["agents", "revoke", "abcdefgh01234567"]);
    assert!(
        run.stderr.contains("refusing without --yes"),
        "{}",
        run.stderr
    );
    let run = controller.ctl(&["agents", "revoke", "../../etc", "--yes"]);
    assert!(run.stderr.contains("invalid agent id"), "{}", run.stderr);
    let run = controller.ctl(&["agents", "revoke", "abcdefgh01234567", "--yes"]);
    assert!(run.stderr.contains("no agent"), "{}", run.stderr);
    let run = controller.ctl(&["token", "create", "--label", "k=a\nb"]);
    assert!(run.stderr.contains("control characters"), "{}", run.stderr);
    let run = controller.ctl(&["token", "create", "--ttl", "soon"]);
    assert!(run.stderr.contains("--ttl"), "{}", run.stderr);
    let run = controller.ctl(&["apitoken", "create", "--name", "x", "--role", "root"]);
    assert!(
        run.stderr
            .contains("must be one of admin, operator, viewer"),
        "{}",
        run.stderr
    );
    // Nothing was created by any of that.
    assert!(
        controller
            .ctl_json(&["token", "list"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(
        controller
            .ctl_json(&["apitoken", "list"])
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn agents_list_follows_pages_and_selectors_relabel_many_hosts_in_one_call() {
    let c = Controller::start("");
    let mut ids = Vec::new();
    for (i, role) in ["edge", "edge", "db"].iter().enumerate() {
        let label = format!("role={role}");
        let token = c.ctl_json(&["token", "create", "--label", &label])["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let agent = c.agent(&format!("host{i}"));
        let run = agent.enroll_with(&c.agent_url(), &c.ca_hash(), &token);
        assert!(run.success, "{}", run.stderr);
        ids.push(run.stdout.split_whitespace().nth(3).unwrap().to_owned());
    }
    let listed = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["agents", "list", "--page-size", "1"];
        all.extend(args);
        c.ctl_json(&all)
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(listed(&[]), sorted, "one agent a page, every page followed");
    let mut edge = ids[..2].to_vec();
    edge.sort();
    assert_eq!(listed(&["--selector", "role=edge"]), edge);
    assert_eq!(listed(&["--status", "online"]), Vec::<String>::new());

    let done = c.ctl_json(&[
        "agents",
        "label",
        "--selector",
        "role=edge",
        "region=fra",
        "role-",
    ]);
    assert_eq!(
        (done["matched"].as_u64(), done["changed"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(listed(&["--selector", "region=fra,!role"]), edge);
    let refused = c.ctl(&["agents", "label", "--selector", "Role=x", "a=b"]);
    assert!(
        !refused.success && refused.stderr.contains("label key"),
        "{}",
        refused.stderr
    );
    let audit = c.ctl(&["audit", "list"]).stdout;
    assert!(audit.contains("agents.label(region=fra,-role)"), "{audit}");
}
