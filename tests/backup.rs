//! Backup and restore: a consistent snapshot of a running controller, checked on the way back,
//! and a restored controller that the fleet takes for the same one.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[path = "support/acme.rs"]
mod acme_support;

use gatehouse_controller::store::Store;
use gatehouse_testkit::gatehouse::{Controller, Run};
use gatehouse_testkit::wait_for;

/// `gatehouse-controller restore --from FROM --data DATA`.
fn restore(controller: &Controller, from: &Path, data: &Path) -> Run {
    controller.command(&[
        "restore",
        "--from",
        from.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ])
}

/// `gatehouse-controller backup --to TO`.
fn backup(controller: &Controller, to: &Path) -> Run {
    controller.command(&["backup", "--to", to.to_str().unwrap()])
}

/// The join tokens a restored store holds.
fn tokens_in(data: &Path) -> BTreeSet<String> {
    let url = format!("sqlite://{}", data.join("gatehouse.db").display());
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = Store::open(&url).await.unwrap();
        let ids = store.join_token_list().await.unwrap();
        store.close().await;
        ids.into_iter().map(|t| t.id).collect()
    })
}

#[test]
fn a_backup_taken_while_four_clients_write_holds_every_acknowledged_write() {
    let controller = Arc::new(Controller::start(""));
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let (controller, acked, stop) = (controller.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let created = controller.ctl_json(&["token", "create"]);
                    let id = created["info"]["id"].as_str().unwrap().to_owned();
                    acked.lock().unwrap().insert(id);
                }
            })
        })
        .collect();
    wait_for("writes under way", Duration::from_secs(30), || {
        (acked.lock().unwrap().len() >= 20).then_some(())
    });
    let before: BTreeSet<String> = acked.lock().unwrap().clone();
    let file = controller.dir.path().join("snapshot.backup");
    let run = backup(&controller, &file);
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    assert!(run.success, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("master key"), "{}", run.stdout);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let data = controller.dir.path().join("restored");
    let restored = restore(&controller, &file, &data);
    assert!(restored.success, "{}", restored.stderr);
    assert!(
        restored.stdout.contains(&controller.ca_hash()),
        "{}",
        restored.stdout
    );
    let held = tokens_in(&data);
    let missing: Vec<_> = before.difference(&held).collect();
    assert!(
        missing.is_empty(),
        "acknowledged before the backup but not in it: {missing:?}"
    );
}

#[test]
fn restore_refuses_a_truncated_or_altered_file_and_a_directory_in_use() {
    let controller = Controller::start("");
    let dir = controller.dir.path();
    let file = dir.join("good.backup");
    assert!(backup(&controller, &file).success);
    let bytes = std::fs::read(&file).unwrap();

    let truncated = dir.join("truncated.backup");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let run = restore(&controller, &truncated, &dir.join("a"));
    assert!(
        !run.success && run.stderr.contains("truncated"),
        "{}",
        run.stderr
    );

    let altered = dir.join("altered.backup");
    let mut changed = bytes.clone();
    let at = changed.len() - 100;
    changed[at] ^= 0x55;
    std::fs::write(&altered, &changed).unwrap();
    let run = restore(&controller, &altered, &dir.join("b"));
    assert!(
        !run.success && run.stderr.contains("altered"),
        "{}",
        run.stderr
    );
    assert!(!dir.join("a").join("gatehouse.db").exists() && !dir.join("b").exists());

    let run = restore(&controller, &file, &controller.data_dir);
    assert!(
        !run.success && run.stderr.contains("not empty"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--force"), "{}", run.stderr);
}

#[test]
fn a_restored_controller_is_the_same_controller_to_a_running_agent() {
    let mut controller = Controller::start("");
    let mut agent = controller.agent("a");
    let id = agent.enroll(&controller);
    agent.run();
    controller.ctl_json(&["agents", "label", &id, "env=prod"]);
    agent.wait_status("generation 2 applied", Duration::from_secs(20), |s| {
        s["applied_generation"] == 2 && s["connected"] == true
    });
    let enrollment = std::fs::read(agent.paths().enrollment()).unwrap();
    let file = controller.dir.path().join("fleet.backup");
    assert!(backup(&controller, &file).success);

    // The old host is gone; the data is restored elsewhere with the master key kept apart.
    controller.stop();
    let old = controller.data_dir.clone();
    let new = controller.dir.path().join("new-host");
    let run = restore(&controller, &file, &new);
    assert!(run.success, "{}", run.stderr);
    assert!(run.stdout.contains("1 agents"), "{}", run.stdout);
    std::fs::copy(old.join("master.key"), new.join("master.key")).unwrap();
    std::fs::rename(&old, controller.dir.path().join("lost")).unwrap();
    controller.edit_config(|text| {
        text.replace(
            &format!("data_dir = {:?}", old.display().to_string()),
            &format!("data_dir = {:?}", new.display().to_string()),
        )
    });
    controller.data_dir = new;
    controller.start_again();

    agent.wait_status("reconnected", Duration::from_secs(90), |s| {
        s["connected"] == true && s["applied_generation"] == 2
    });
    assert_eq!(agent.status().unwrap()["agent_id"], id.as_str());
    let labelled = controller.ctl_json(&["agents", "label", &id, "env=restored"]);
    assert_eq!(labelled["desired_generation"], 3);
    agent.wait_status("the new change applied", Duration::from_secs(20), |s| {
        s["applied_generation"] == 3
    });
    // Never enrolled again: the enrollment record is the one from before.
    assert_eq!(
        std::fs::read(agent.paths().enrollment()).unwrap(),
        enrollment
    );
}

#[test]
fn a_backup_over_the_admin_api_is_for_admins_audited_and_holds_no_secret_in_plain_text() {
    use base64::Engine;
    let hmac = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    let s = acme_support::setup(acme_support::Options {
        eab: vec![("kid-1".into(), hmac.into())],
        ..Default::default()
    });
    let hmac_file = s.controller.dir.path().join("eab-hmac");
    std::fs::write(&hmac_file, hmac).unwrap();
    let created = s.create_account(&[
        "--eab-kid",
        "kid-1",
        "--eab-hmac-file",
        hmac_file.to_str().unwrap(),
    ]);
    assert!(created.success, "{}", created.stderr);

    // An operator may not take one; root on the socket (an admin) may.
    let operator = s
        .controller
        .ctl_json(&["apitoken", "create", "--name", "ops", "--role", "operator"])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let file = s.controller.dir.path().join("api.backup");
    let refused = s
        .controller
        .ctl_tls(&operator, &["backup", "--to", file.to_str().unwrap()]);
    assert!(
        !refused.success && refused.stderr.contains("needs admin"),
        "{}",
        refused.stderr
    );
    assert!(!file.exists());
    let taken = s
        .controller
        .ctl(&["backup", "--to", file.to_str().unwrap()]);
    assert!(taken.success, "{}", taken.stderr);
    let audit = s.controller.ctl_json(&["audit", "list"]);
    let results: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "backup.create")
        .map(|e| e["result"].as_str().unwrap())
        .collect();
    assert_eq!(results.len(), 2, "{audit}");
    assert!(results.contains(&"ok"), "{audit}");

    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let bytes = std::fs::read(&file).unwrap();
    let found = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(hmac)
        .unwrap();
    assert!(
        !found(acme_support::TOKEN.as_bytes()),
        "the Cloudflare token is in the backup"
    );
    assert!(!found(hmac.as_bytes()), "the EAB key is in the backup");
    assert!(!found(&decoded), "the EAB key's bytes are in the backup");
    let key = std::fs::read(s.controller.data_dir.join("master.key")).unwrap();
    assert!(!found(&key), "the master key is in the backup");

    // And it is a backup a restore takes.
    let data = s.controller.dir.path().join("restored");
    let restored = restore(&s.controller, &file, &data);
    assert!(restored.success, "{}", restored.stderr);
}
