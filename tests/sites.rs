//! Certificates and Caddy sites end to end, with a real Caddy: the key is made on the host,
//! the site serves through Caddy with the certificate the agent reports, and every apply is a
//! transaction. What survives outages and crashes: tests/sites_resilience.rs.

#[path = "support/sites.rs"]
mod support;

use support::*;

#[test]
fn a_site_with_an_internal_certificate_serves_through_caddy() {
    let f = fleet("");
    let upstream = Upstream::start("hello from the upstream");
    let created = f.create_site(
        "www.example.test",
        &upstream,
        &["--header", "X-Served-By=gatehouse"],
    );
    assert_eq!(created["spec"]["name"], "www-example-test");
    f.wait_site("www-example-test", "applied");
    let site = wait_for(
        "the certificate in the inventory",
        Duration::from_secs(10),
        || {
            let v = f
                .controller
                .ctl_json(&["site", "show", "--agent", &f.id, "www-example-test"]);
            (!v["certificate"].is_null()).then_some(v)
        },
    );

    assert_eq!(
        f.get("www.example.test").unwrap(),
        "hello from the upstream"
    );
    // The served certificate is the one the agent reports, made for a key on the host.
    let reported = site["certificate"]["serial"].as_str().unwrap().to_owned();
    assert!(!reported.is_empty(), "{site}");
    assert_eq!(served_serial(&f.caddy, "www.example.test"), reported);
    let key = std::path::PathBuf::from(site["certificate"]["path"].as_str().unwrap())
        .with_extension("key");
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(&key).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    if let Some((uid, _)) = gatehouse_testkit::caddy::caddy_user() {
        assert_eq!(meta.uid(), uid, "the key belongs to Caddy's user");
    }
    let dir = key.parent().unwrap();
    assert_eq!(
        std::fs::metadata(dir).unwrap().permissions().mode() & 0o777,
        0o700
    );

    // The Caddyfile gained one import line and kept the operator's own block.
    let caddyfile = std::fs::read_to_string(&f.caddy.caddyfile).unwrap();
    assert!(caddyfile.contains(&f.user_block), "{caddyfile}");
    assert_eq!(caddyfile.matches("import ").count(), 1, "{caddyfile}");
    let snippet = std::fs::read_to_string(
        f.agent
            .root
            .join("etc/caddy/gatehouse.d/www-example-test.caddy"),
    )
    .unwrap();
    assert!(snippet.contains("X-Served-By \"gatehouse\""), "{snippet}");

    // The status shows every item applied, and the inventory.
    // An RSA-2048 key works the same way.
    f.create_site(
        "rsa.example.test",
        &upstream,
        &["--name", "rsa", "--key-type", "rsa2048"],
    );
    f.wait_site("rsa", "applied");
    assert_eq!(
        f.get("rsa.example.test").unwrap(),
        "hello from the upstream"
    );
    let index: Value =
        serde_json::from_slice(&std::fs::read(f.agent.paths().certificates_index()).unwrap())
            .unwrap();
    assert_eq!(index["certificates"]["rsa"][0]["key_type"], 1, "{index}");

    let status = f.controller.ctl_json(&["agents", "status", &f.id]);
    let results = status["results"].as_array().unwrap();
    assert!(results.iter().all(|r| r["state"] == "applied"), "{status}");
    assert!(
        results
            .iter()
            .any(|r| r["kind"] == "site" && r["name"] == "www-example-test")
    );
    let www = status["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "www-example-test")
        .unwrap();
    assert_eq!(www["serial"], reported.as_str());
}

#[test]
fn a_reissued_certificate_is_served_after_the_reload() {
    let f = fleet("");
    let upstream = Upstream::start("ok");
    f.create_site("app.example.test", &upstream, &["--name", "app"]);
    f.wait_site("app", "applied");
    let first = wait_for(
        "the first certificate served",
        Duration::from_secs(10),
        || {
            let s = try_served_serial(&f.caddy, "app.example.test").ok()?;
            (!s.is_empty()).then_some(s)
        },
    );
    let mut seen = vec![first];
    for _ in 0..3 {
        f.controller
            .ctl_json(&["cert", "reissue", "--agent", &f.id, "app"]);
        let next = wait_for(
            "the new certificate served",
            Duration::from_secs(20),
            || {
                let s = try_served_serial(&f.caddy, "app.example.test").ok()?;
                (!seen.contains(&s)).then_some(s)
            },
        );
        // What Caddy serves is what the agent reports.
        wait_for("the inventory to agree", Duration::from_secs(10), || {
            let v = f
                .controller
                .ctl_json(&["site", "show", "--agent", &f.id, "app"]);
            (v["certificate"]["serial"] == next.as_str()).then_some(())
        });
        seen.push(next);
    }
    assert_eq!(f.get("app.example.test").unwrap(), "ok");
    // Four versions were issued; the current one and the two before it are kept.
    let dir = f.agent.root.join("etc/gatehouse/tls/sites");
    let crts = gatehouse_testkit::count_files(&dir, "crt");
    assert_eq!(crts, 3);
}

#[test]
fn a_failing_apply_keeps_the_old_sites_serving_and_reports_the_error() {
    let f = fleet("");
    let upstream = Upstream::start("still here");
    f.create_site("a.example.test", &upstream, &["--name", "a"]);
    f.wait_site("a", "applied");
    let sites_dir = f.agent.root.join("etc/caddy/gatehouse.d");
    let before: Vec<_> = std::fs::read_dir(&sites_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let caddyfile_before = std::fs::read_to_string(&f.caddy.caddyfile).unwrap();

    // Caddy's validation refuses a site whose CA root file does not exist.
    f.create_failing_site("b", "b.example.test", &upstream);
    let b = f.wait_site("b", "failed");
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("caddy validate rejected"),
        "{b}"
    );
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/root.pem"),
        "{b}"
    );
    assert_eq!(f.get("a.example.test").unwrap(), "still here");
    let after: Vec<_> = std::fs::read_dir(&sites_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after, "nothing was swapped in");
    let status = f.controller.ctl_json(&["agents", "status", &f.id]);
    assert!(
        status["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["kind"] == "site" && r["name"] == "b" && r["state"] == "failed"),
        "{status}"
    );
    f.controller
        .ctl_json(&["site", "delete", "--agent", &f.id, "b", "--yes"]);

    // A config that validates but cannot be loaded (Caddy's admin endpoint is down) is swapped
    // in, fails at the reload, and is rolled back: the files and the Caddyfile are restored.
    let mut f = f;
    f.caddy.stop();
    let up = upstream.address();
    f.controller.ctl_json(&[
        "site",
        "create",
        "--agent",
        &f.id,
        "--domain",
        "c.example.test",
        "--upstream",
        &up,
        "--name",
        "c",
        "--tls",
        "caddy-internal",
    ]);
    let c = f.wait_site("c", "failed");
    assert!(
        c["error"]
            .as_str()
            .unwrap()
            .contains("Caddy refused the reload"),
        "{c}"
    );
    let after: Vec<_> = std::fs::read_dir(&sites_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after, "the failed site's file was removed again");
    assert_eq!(
        std::fs::read_to_string(&f.caddy.caddyfile).unwrap(),
        caddyfile_before
    );
    // Caddy, started again from what is on disk, serves the old sites.
    f.caddy.launch();
    wait_for("site a served again", Duration::from_secs(10), || {
        f.get("a.example.test").ok()
    })
    .eq("still here")
    .then_some(())
    .expect("the old content");
}

#[test]
fn rollback_to_an_earlier_generation_restores_the_earlier_sites() {
    let f = fleet("");
    let upstream = Upstream::start("ok");
    f.create_site("one.example.test", &upstream, &["--name", "one"]);
    f.wait_site("one", "applied");
    let with_one = f.controller.agent_view(&f.id)["desired_generation"]
        .as_u64()
        .unwrap();
    f.create_site("two.example.test", &upstream, &["--name", "two"]);
    f.wait_site("two", "applied");
    assert_eq!(f.get("two.example.test").unwrap(), "ok");

    let rolled =
        f.controller
            .ctl_json(&["agents", "rollback", &f.id, "--to", &with_one.to_string()]);
    let generation = rolled["desired_generation"].as_u64().unwrap();
    assert!(generation > with_one + 1, "a rollback is a new generation");
    wait_for("the rollback applied", Duration::from_secs(30), || {
        (f.controller.agent_view(&f.id)["applied_generation"] == generation).then_some(())
    });
    let sites = f.controller.ctl_json(&["site", "list", "--agent", &f.id]);
    let names: Vec<&str> = sites
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["spec"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["one"]);
    assert!(
        !f.agent
            .root
            .join("etc/caddy/gatehouse.d/two.caddy")
            .exists()
    );
    assert!(
        f.get("two.example.test").is_err(),
        "site two is gone from Caddy"
    );
    assert_eq!(f.get("one.example.test").unwrap(), "ok");
    let status = f.controller.ctl_json(&["agents", "status", &f.id]);
    let history = status["history"].as_array().unwrap();
    assert_eq!(history[0]["generation"], generation);
    assert_eq!(history[0]["sites"], 1);
    let audit = f.controller.ctl_json(&["audit", "list"]);
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"].as_str().unwrap().starts_with("agent.rollback"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_names_are_rejected_at_the_cli_the_admin_api_and_the_agent() {
    let f = fleet("");
    let hostile = [
        "evil.example.test {\n\timport /etc/passwd\n}",
        "a}.example.test",
        "{http.request.host}",
        "../../etc/caddy",
        "a/b.example.test",
        "a b.example.test",
        "*.*.example.test",
        "bad..example.test",
        "trailing.example.test.",
        ".empty-first.example.test",
    ];
    // gatehousectl refuses before sending anything.
    for domain in hostile {
        let run = f.controller.ctl(&[
            "site",
            "create",
            "--agent",
            &f.id,
            "--domain",
            domain,
            "--upstream",
            "127.0.0.1:80",
        ]);
        assert!(!run.success, "{domain:?}");
        assert!(
            run.stderr.contains("invalid domain"),
            "{domain:?}: {}",
            run.stderr
        );
    }
    assert!(
        !f.controller
            .ctl(&[
                "site",
                "create",
                "--agent",
                &f.id,
                "--domain",
                "ok.example.test",
                "--upstream",
                "127.0.0.1:80\nreverse_proxy evil:1"
            ])
            .success
    );
    assert!(
        !f.controller
            .ctl(&[
                "site",
                "create",
                "--agent",
                &f.id,
                "--domain",
                "ok.example.test",
                "--upstream",
                "127.0.0.1:80",
                "--header",
                "X-A=\"}\nimport /x"
            ])
            .success
    );
    let audit = f.controller.ctl_json(&["audit", "list"]);
    assert!(
        !audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "site.put"),
        "nothing reached the API"
    );

    // The admin API refuses them too, named, and audits the refusal.
    use gatehouse_proto::v1::admin_service_client::AdminServiceClient;
    use gatehouse_proto::v1::*;
    let channel = gatehouse_agent::transport::unix_channel(f.controller.socket.clone())
        .await
        .unwrap();
    let mut admin = AdminServiceClient::new(channel);
    for domain in hostile {
        let err = admin
            .put_site(PutSiteRequest {
                agent_id: f.id.clone(),
                site: Some(SiteSpec {
                    name: "x".into(),
                    domains: vec![domain.into()],
                    upstreams: vec!["127.0.0.1:80".into()],
                    tls: Some(SiteTls {
                        mode: Some(site_tls::Mode::CaddyInternal(true)),
                    }),
                    ..Default::default()
                }),
                internal_certificate: false,
                key_type: 0,
                cloudflare: None,
                certificate_issuer: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{domain:?}");
        assert!(
            err.message().contains("invalid domain"),
            "{domain:?}: {}",
            err.message()
        );
    }
    let err = admin
        .put_site(PutSiteRequest {
            agent_id: f.id.clone(),
            site: Some(SiteSpec {
                name: "../etc".into(),
                domains: vec!["ok.example.test".into()],
                upstreams: vec!["127.0.0.1:80".into()],
                tls: Some(SiteTls {
                    mode: Some(site_tls::Mode::CaddyInternal(true)),
                }),
                ..Default::default()
            }),
            internal_certificate: false,
            key_type: 0,
            cloudflare: None,
            certificate_issuer: String::new(),
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("invalid name"), "{}", err.message());
    assert_eq!(
        f.controller.agent_view(&f.id)["desired_generation"],
        1,
        "no generation was stored"
    );

    // The agent refuses them in a desired state that did not come through the controller.
    let mut f = f;
    f.controller.stop();
    f.agent.kill();
    let mut state = gatehouse_agent::state::load(&f.agent.paths())
        .unwrap()
        .unwrap();
    state.generation += 1;
    state.sites = hostile
        .iter()
        .enumerate()
        .map(|(i, d)| SiteSpec {
            name: format!("s{i}"),
            domains: vec![(*d).into()],
            upstreams: vec!["127.0.0.1:80".into()],
            tls: Some(SiteTls {
                mode: Some(site_tls::Mode::CaddyInternal(true)),
            }),
            ..Default::default()
        })
        .collect();
    gatehouse_agent::state::save(&f.agent.paths(), &state).unwrap();
    let caddyfile = std::fs::read_to_string(&f.caddy.caddyfile).unwrap();
    f.agent.run();
    f.agent.wait_status(
        "the persisted state applied",
        Duration::from_secs(20),
        |s| s["applied_generation"] == state.generation,
    );
    // The status says applied as soon as the state is taken; its pass logs right after.
    let refused_all = |log: &str| (0..hostile.len()).all(|i| log.contains(&format!("site/s{i}")));
    gatehouse_testkit::wait_for(
        "every hostile site refused",
        Duration::from_secs(20),
        || refused_all(&f.agent.log()).then_some(()),
    );
    let sites_dir = f.agent.root.join("etc/caddy/gatehouse.d");
    assert!(!sites_dir.exists() || std::fs::read_dir(&sites_dir).unwrap().next().is_none());
    assert_eq!(
        std::fs::read_to_string(&f.caddy.caddyfile).unwrap(),
        caddyfile
    );
}

#[test]
fn an_allowlisted_site_lets_in_only_the_addresses_that_checked_in() {
    let f = fleet("");
    let upstream = Upstream::start("hello from behind the allowlist");
    let ok = |args: &[&str]| {
        let run = f.controller.ctl(args);
        assert!(run.success, "{args:?}: {}{}", run.stdout, run.stderr);
        run.stdout
    };
    ok(&["allowlist", "create", "home", "--allow-private"]);
    let token = ok(&["allowlist", "device", "add", "home", "--name", "phone"])
        .trim()
        .to_owned();
    let unknown = f.controller.ctl(&[
        "site",
        "create",
        "--agent",
        &f.id,
        "--domain",
        "x.example.test",
        "--upstream",
        "127.0.0.1:9",
        "--allow",
        "nope",
    ]);
    assert!(
        !unknown.success && unknown.stderr.contains("allow"),
        "{}",
        unknown.stderr
    );
    f.create_site("shop.example.test", &upstream, &["--allow", "home"]);
    f.wait_site("shop-example-test", "applied");
    // Nobody has checked in: everyone gets 403.
    wait_for("403 before any check-in", Duration::from_secs(20), || {
        (f.get_from("shop.example.test", "127.0.0.2", &[]).ok()?.0 == 403).then_some(())
    });

    // The phone checks in from 127.0.0.2: it gets through, 127.0.0.3 does not.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = rt.block_on(async {
        ::reqwest::Client::builder()
            .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
            .build()
            .unwrap()
            .post(format!(
                "http://127.0.0.1:{}/v1/allowlist/checkin",
                f.controller.http_port
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(status, 200);
    let body = wait_for(
        "the checked-in address let in",
        Duration::from_secs(20),
        || {
            let (status, body) = f.get_from("shop.example.test", "127.0.0.2", &[]).ok()?;
            (status == 200).then_some(body)
        },
    );
    assert_eq!(body, "hello from behind the allowlist");
    assert_eq!(
        f.get_from("shop.example.test", "127.0.0.3", &[]).unwrap().0,
        403
    );
    // A forged forwarded address from an untrusted peer changes nothing.
    for header in ["X-Forwarded-For", "CF-Connecting-IP", "X-Real-IP"] {
        let (status, _) = f
            .get_from("shop.example.test", "127.0.0.3", &[(header, "127.0.0.2")])
            .unwrap();
        assert_eq!(status, 403, "{header}");
    }

    // The controller away, the agent restarted: the last set is still enforced.
    let mut f = f;
    f.controller.stop();
    f.agent.stop();
    f.agent.run();
    wait_for("the agent reapplied", Duration::from_secs(20), || {
        f.agent
            .log()
            .contains("reapplying the persisted desired state")
            .then_some(())
    });
    assert_eq!(
        f.get_from("shop.example.test", "127.0.0.2", &[]).unwrap().0,
        200
    );
    assert_eq!(
        f.get_from("shop.example.test", "127.0.0.3", &[]).unwrap().0,
        403
    );
    let saved = f.agent.root.join("var/lib/gatehouse-agent/allowlists.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777,
        0o600
    );
}
