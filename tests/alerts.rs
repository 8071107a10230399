//! Alerts reaching people: a real Prometheus Alertmanager gets a stopped agent's host-offline
//! alert after its `for` time and its resolution when the agent is back, and so does a webhook
//! in Alertmanager's format; a silence holds it back; a notification that fails is retried and
//! survives a controller restart; a short-lived certificate raises the expiry alert at the
//! threshold; and the shipped Prometheus rules pass promtool.

#[path = "support/sites.rs"]
mod support;

use gatehouse_testkit::alertmanager::Alertmanager;
use gatehouse_testkit::process::external;
use gatehouse_testkit::webhook::Webhook;
use support::*;

/// The controller's `[alerts]` for fast tests (last in the file: it is a table).
fn alerts_config(receivers: &str) -> String {
    format!(
        "[alerts]\ninterval = \"1s\"\nhost_offline_for = \"3s\"\nresend_interval = \"2s\"\n\
         keep_resolved = \"1h\"\n{receivers}"
    )
}

/// The alerts `gatehousectl alert list` shows now.
fn alerts(c: &Controller, resolved: bool) -> Vec<Value> {
    let mut args = vec!["alert", "list"];
    if resolved {
        args.push("--resolved");
    }
    c.ctl_json(&args).as_array().cloned().unwrap_or_default()
}

fn find<'a>(list: &'a [Value], name: &str, agent: &str) -> Option<&'a Value> {
    list.iter()
        .find(|a| a["name"] == name && a["labels"]["agent"] == agent)
}

/// The webhook bodies about `alertname` with `status`.
fn received(hook: &Webhook, alertname: &str, status: &str) -> Vec<Value> {
    hook.bodies()
        .into_iter()
        .filter(|b| b["status"] == status && b["commonLabels"]["alertname"] == alertname)
        .collect()
}

fn enrolled(c: &Controller) -> (gatehouse_testkit::gatehouse::Agent, String) {
    let mut agent = c.agent("host");
    let id = agent.enroll(c);
    agent.run();
    wait_for("the host online", Duration::from_secs(20), || {
        c.agents()
            .iter()
            .any(|a| a["id"] == id.as_str() && a["status"] == "online")
            .then_some(())
    });
    (agent, id)
}

#[test]
fn a_stopped_agents_host_offline_alert_reaches_alertmanager_and_resolves_when_it_is_back() {
    let am_hook = Webhook::start(0);
    let dir = tempfile::tempdir().unwrap();
    let am = Alertmanager::start(dir.path(), &am_hook.url());
    let hook = Webhook::start(0);
    let c = Controller::start(&alerts_config(&format!(
        "alertmanager = [{:?}]\nwebhook = [{:?}]\nwatchdog = true\n",
        am.url(),
        hook.url()
    )));
    let (mut agent, id) = enrolled(&c);
    assert!(find(&alerts(&c, false), "HostOffline", &id).is_none());
    // The dead man's switch fires at once and keeps reaching Alertmanager.
    wait_for(
        "the Watchdog in Alertmanager",
        Duration::from_secs(20),
        || {
            am.query()
                .into_iter()
                .find(|a| a["labels"]["alertname"] == "Watchdog")
        },
    );

    agent.stop();
    let pending = wait_for("HostOffline pending", Duration::from_secs(20), || {
        find(&alerts(&c, false), "HostOffline", &id).cloned()
    });
    assert!(
        am.query()
            .iter()
            .all(|a| a["labels"]["agent"] != id.as_str()),
        "nothing reaches Alertmanager before the alert's `for`: {pending}"
    );
    let firing = wait_for("HostOffline firing", Duration::from_secs(20), || {
        find(&alerts(&c, false), "HostOffline", &id)
            .filter(|a| a["state"] == "firing")
            .cloned()
    });
    let held = firing["fired_at"].as_i64().unwrap() - firing["active_since"].as_i64().unwrap();
    assert!(
        held >= 3,
        "it fired after its 3 s `for`, not sooner: {firing}"
    );
    assert_eq!(firing["severity"], "critical");

    let in_am = wait_for("the alert in Alertmanager", Duration::from_secs(20), || {
        am.query().into_iter().find(|a| {
            a["labels"]["alertname"] == "HostOffline" && a["labels"]["agent"] == id.as_str()
        })
    });
    assert_eq!(in_am["labels"]["severity"], "critical");
    assert!(
        in_am["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("has not reported")
    );
    wait_for(
        "Alertmanager's webhook: firing",
        Duration::from_secs(20),
        || (!received(&am_hook, "HostOffline", "firing").is_empty()).then_some(()),
    );
    let direct = wait_for(
        "gatehouse's webhook: firing",
        Duration::from_secs(20),
        || received(&hook, "HostOffline", "firing").pop(),
    );
    assert_eq!(direct["version"], "4");
    assert_eq!(direct["alerts"][0]["labels"]["agent"], id.as_str());
    assert_eq!(direct["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");

    agent.run();
    wait_for("HostOffline resolved", Duration::from_secs(30), || {
        find(&alerts(&c, true), "HostOffline", &id)
            .filter(|a| a["state"] == "resolved")
            .cloned()
    });
    assert!(find(&alerts(&c, false), "HostOffline", &id).is_none());
    wait_for(
        "the alert gone from Alertmanager",
        Duration::from_secs(30),
        || {
            am.query()
                .iter()
                .all(|a| a["labels"]["agent"] != id.as_str())
                .then_some(())
        },
    );
    wait_for(
        "Alertmanager's webhook: resolved",
        Duration::from_secs(30),
        || (!received(&am_hook, "HostOffline", "resolved").is_empty()).then_some(()),
    );
    let resolved = wait_for(
        "gatehouse's webhook: resolved",
        Duration::from_secs(20),
        || received(&hook, "HostOffline", "resolved").pop(),
    );
    assert_ne!(resolved["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(
        received(&hook, "HostOffline", "firing").len(),
        1,
        "told once"
    );
}

#[test]
fn a_silence_holds_the_alert_back_from_every_receiver_until_it_is_expired() {
    let am_hook = Webhook::start(0);
    let dir = tempfile::tempdir().unwrap();
    let am = Alertmanager::start(dir.path(), &am_hook.url());
    let hook = Webhook::start(0);
    let c = Controller::start(&alerts_config(&format!(
        "alertmanager = [{:?}]\nwebhook = [{:?}]\n",
        am.url(),
        hook.url()
    )));
    let (mut agent, id) = enrolled(&c);

    let refused = c.ctl(&[
        "alert",
        "silence",
        "--match",
        "agent",
        "--for",
        "1h",
        "--comment",
        "x",
    ]);
    assert!(
        !refused.success && refused.stderr.contains("LABEL=VALUE"),
        "{}",
        refused.stderr
    );
    let refused = c.ctl(&[
        "alert",
        "silence",
        "--match",
        "agent=x",
        "--for",
        "1h",
        "--comment",
        " ",
    ]);
    assert!(
        !refused.success && refused.stderr.contains("--comment"),
        "{}",
        refused.stderr
    );
    let matcher = format!("agent={id}");
    let silence = c.ctl_json(&[
        "alert",
        "silence",
        "--match",
        &matcher,
        "--for",
        "1h",
        "--comment",
        "planned maintenance",
    ]);
    let silence_id = silence["id"].as_str().unwrap().to_owned();
    let listed = c.ctl_json(&["alert", "silence", "list"]);
    assert_eq!(listed[0]["comment"], "planned maintenance");

    agent.stop();
    let firing = wait_for(
        "HostOffline firing, silenced",
        Duration::from_secs(30),
        || {
            find(&alerts(&c, false), "HostOffline", &id)
                .filter(|a| a["state"] == "firing")
                .cloned()
        },
    );
    assert_eq!(firing["silenced_by"][0], silence_id.as_str());
    // Several evaluations and re-sends later, still nothing went out.
    let fired_at = firing["fired_at"].as_i64().unwrap();
    wait_for(
        "a few evaluations after it fired",
        Duration::from_secs(30),
        || {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            (now >= fired_at + 5).then_some(())
        },
    );
    assert!(
        am.query()
            .iter()
            .all(|a| a["labels"]["agent"] != id.as_str())
    );
    assert!(received(&hook, "HostOffline", "firing").is_empty());
    assert!(received(&am_hook, "HostOffline", "firing").is_empty());

    let expired = c.ctl_json(&["alert", "silence", "expire", &silence_id]);
    assert_eq!(expired["id"], silence_id.as_str());
    wait_for(
        "the alert in Alertmanager once the silence ended",
        Duration::from_secs(30),
        || {
            am.query()
                .into_iter()
                .find(|a| a["labels"]["agent"] == id.as_str())
        },
    );
    wait_for(
        "gatehouse's webhook: firing",
        Duration::from_secs(20),
        || received(&hook, "HostOffline", "firing").pop(),
    );
    let audit = c.ctl(&["audit", "list"]).stdout;
    assert!(
        audit.contains("alert.silence") && audit.contains("alert.silence.expire"),
        "{audit}"
    );
}

#[test]
fn a_failed_notification_is_retried_and_not_lost_across_a_controller_restart() {
    let hook = Webhook::start(0);
    hook.fail(true);
    let mut c = Controller::start(&alerts_config(&format!("webhook = [{:?}]\n", hook.url())));
    let (mut agent, id) = enrolled(&c);
    agent.stop();
    wait_for(
        "the webhook refusing twice",
        Duration::from_secs(40),
        || (hook.refused() >= 2).then_some(()),
    );
    let listed = wait_for(
        "the delivery error in alert list",
        Duration::from_secs(20),
        || {
            find(&alerts(&c, false), "HostOffline", &id)
                .filter(|a| {
                    a["notification_error"]
                        .as_str()
                        .is_some_and(|e| e.contains("503"))
                })
                .cloned()
        },
    );
    assert_eq!(listed["queued_notifications"], 1, "{listed}");
    assert_eq!(listed["state"], "firing");

    c.stop();
    hook.fail(false);
    c.start_again();
    // The alert's state survived: still firing since the same moment, not fired anew.
    let after = find(&alerts(&c, false), "HostOffline", &id)
        .cloned()
        .unwrap();
    assert_eq!(after["state"], "firing");
    assert_eq!(after["fired_at"], listed["fired_at"]);
    let body = wait_for(
        "the notification after the restart",
        Duration::from_secs(60),
        || received(&hook, "HostOffline", "firing").pop(),
    );
    assert_eq!(body["alerts"][0]["labels"]["agent"], id.as_str());
    wait_for("the outbox empty", Duration::from_secs(20), || {
        find(&alerts(&c, false), "HostOffline", &id)
            .filter(|a| a["queued_notifications"].as_u64().unwrap_or(0) == 0)
            .cloned()
    });
    assert_eq!(
        received(&hook, "HostOffline", "firing").len(),
        1,
        "delivered once"
    );
    assert!(c.log().contains("notification delivered"));
}

#[test]
fn a_short_lived_certificate_raises_the_expiry_alert_at_the_threshold() {
    let f = fleet(&format!(
        "site_cert_lifetime = \"120s\"\n{}certificate_warning = \"100s\"\ncertificate_critical = \"2s\"\n",
        alerts_config("")
    ));
    let upstream = Upstream::start("short-lived");
    f.create_site("short.example.test", &upstream, &["--name", "short"]);
    f.wait_site("short", "applied");
    let alert = wait_for(
        "CertificateExpiringSoon firing",
        Duration::from_secs(60),
        || {
            find(
                &alerts(&f.controller, false),
                "CertificateExpiringSoon",
                &f.id,
            )
            .filter(|a| a["state"] == "firing")
            .cloned()
        },
    );
    let cert = alert["labels"]["certificate"].as_str().unwrap().to_owned();
    let status = f.controller.ctl_json(&["agents", "status", &f.id]);
    let not_after = status["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == cert.as_str())
        .and_then(|c| c["not_after"].as_i64())
        .unwrap_or_else(|| panic!("{cert} in {status}"));
    let fired = alert["fired_at"].as_i64().unwrap();
    let left = not_after - fired;
    assert!(
        left <= 100,
        "it fired with {left} s left, before the 100 s threshold: {alert}"
    );
    assert!(
        left >= 100 - 15,
        "it fired with {left} s left, long after the 100 s threshold: {alert}"
    );
    assert_eq!(alert["severity"], "warning");
    assert!(
        alert["summary"]
            .as_str()
            .unwrap()
            .contains("short.example.test"),
        "{alert}"
    );
}

#[test]
fn the_shipped_rules_pass_promtool_and_the_metrics_lint_clean() {
    let promtool = external("promtool", &[], "prometheus");
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/prometheus");
    for args in [
        vec!["check", "rules", "gatehouse.rules.yml"],
        vec!["test", "rules", "gatehouse.rules.test.yml"],
    ] {
        let out = std::process::Command::new(&promtool)
            .args(&args)
            .current_dir(rules)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let c = Controller::start(&alerts_config(""));
    let (_agent, id) = enrolled(&c);
    let series = format!("gatehouse_host_online{{agent=\"{id}\",");
    let body = wait_for("per-host gauges", Duration::from_secs(20), || {
        let (_, body) = c.http_get("/metrics");
        (body.contains(&series) && body.contains("gatehouse_host_filesystem_avail_bytes{"))
            .then_some(body)
    });
    assert!(body.contains("gatehouse_host_cpu_usage_ratio{"));
    assert!(body.contains("gatehouse_host_last_report_timestamp_seconds{"));
    let mut lint = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    lint.stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = lint.wait_with_output().unwrap();
    let problems =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    // promtool's lint also names style choices (counters without _total); errors fail it.
    assert!(
        out.status.success() || !problems.contains("error"),
        "{problems}"
    );
}
