use super::*;

#[test]
fn a_database_password_never_shows_in_a_debug_print() {
    let c = Config::with_data_dir(Path::new("/srv/gh"))
        .with_database(Some(
            "postgres://gh:s3cret-pw@db.example.com/gatehouse".into(),
        ))
        .unwrap();
    for printed in [format!("{c:?}"), format!("{}", c.database)] {
        assert!(!printed.contains("s3cret-pw"), "{printed}");
        assert!(
            printed.contains("postgres://gh:***@db.example.com/gatehouse"),
            "{printed}"
        );
    }
    assert!(c.database.expose().contains("s3cret-pw"));
}

#[test]
fn parses_and_names_bad_fields() {
    let p = Path::new("controller.toml");
    let c = Config::parse(
        p,
        "data_dir = \"/srv/gh\"\nagent_cert_lifetime = \"1h\"\nserver_names = [\"ctl.example.com\"]",
    )
    .unwrap();
    assert_eq!(c.database.expose(), "sqlite:///srv/gh/gatehouse.db");
    assert_eq!(c.agent_cert_lifetime, Duration::from_secs(3600));
    let proxies = Config::parse(
        p,
        "[checkin]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\"]\nmin_interval = \"1m\"",
    )
    .unwrap()
    .checkin;
    assert_eq!(proxies.trusted_proxies.len(), 2);
    assert_eq!(proxies.min_interval, Duration::from_secs(60));
    for (text, field) in [
        ("agent_listen = \"nowhere\"", "`agent_listen`"),
        ("database = \"mysql://x\"", "`database`"),
        ("report_interval = \"0s\"", "`report_interval`"),
        ("log = \"gatehouse=loud\"", "`log`"),
        ("issuance_limit = 0", "`issuance_limit`"),
        ("enroll_failure_limit = 0", "`enroll_failure_limit`"),
        ("stream_timeout = \"soon\"", "`stream_timeout`"),
        ("server_names = []", "`server_names`"),
        ("data_dir = \"rel\"", "`data_dir`"),
        (
            "[checkin]\ntrusted_proxies = [\"10.0.0.0/33\"]",
            "`checkin.trusted_proxies`",
        ),
        ("cloudflare_ranges = [\"cf\"]", "`cloudflare_ranges`"),
        ("[checkin]\nmin_interval = \"x\"", "`checkin.min_interval`"),
        ("[checkin]\nfailure_limit = 0", "`checkin.failure_limit`"),
    ] {
        let e = Config::parse(p, text).unwrap_err().to_string();
        assert!(e.contains(field), "{text}: {e}");
    }
    assert!(
        Config::parse(p, "unknown = 1")
            .unwrap_err()
            .to_string()
            .contains("unknown")
    );
}

#[test]
fn a_reload_keeps_what_needs_a_restart_and_names_it() {
    let p = Path::new("/etc/gatehouse/controller.toml");
    let old = Config::parse(p, "report_interval = \"30s\"").unwrap();
    let new = Config::parse(
        p,
        "report_interval = \"5s\"\nagent_listen = \"127.0.0.1:9\"\nlog = \"debug\"",
    )
    .unwrap();
    let (running, restart) = old.reloaded(new);
    assert_eq!(running.report_interval, Duration::from_secs(5));
    assert_eq!(running.log, "debug");
    assert_eq!(running.agent_listen, old.agent_listen);
    assert_eq!(restart, ["agent_listen"]);
}
