//! The fleet benchmark runs end to end with a tiny fleet and prints every figure as
//! `key: value` (the real runs, N = 1,000 and 10,000, are in the README and never run in CI).

use std::collections::HashMap;
use std::process::Command;

use gatehouse_testkit::process::bin;

#[test]
fn the_benchmark_prints_every_figure_for_a_tiny_fleet() {
    let out = Command::new(bin("gatehouse-bench"))
        .args([
            "--agents",
            "12",
            "--report-interval",
            "1s",
            "--cpu-window",
            "2s",
            "--agent-window",
            "2s",
            "--bursts",
            "10",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let figures: HashMap<&str, f64> = stdout
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| {
            (
                k,
                v.parse::<f64>()
                    .unwrap_or_else(|_| panic!("{k}: {v} is not a number")),
            )
        })
        .collect();
    for key in [
        "agents",
        "enroll_and_connect_seconds",
        "controller_rss_before_kib",
        "controller_rss_after_kib",
        "controller_rss_per_agent_kib",
        "controller_cpu_percent_of_one_core",
        "fanout_latency_p50_ms",
        "fanout_latency_p99_ms",
        "fanout_latency_max_ms",
        "reconnect_all_seconds",
        "agent_idle_rss_kib",
        "agent_idle_cpu_percent",
        "burst_10_installed_seconds",
        "burst_10_messages_per_certificate",
        "burst_10_requests_per_certificate",
    ] {
        assert!(figures.contains_key(key), "{key} missing:\n{stdout}");
    }
    assert_eq!(figures["agents"], 12.0);
    assert!(figures["controller_rss_after_kib"] > 0.0 && figures["agent_idle_rss_kib"] > 0.0);
    assert!(figures["fanout_latency_max_ms"] >= figures["fanout_latency_p50_ms"]);
    // One request per certificate revision, whatever the burst.
    assert_eq!(figures["burst_10_requests_per_certificate"], 1.0);
}
