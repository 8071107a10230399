//! The fleet benchmark runs end to end with a tiny fleet and prints every figure as
//! `key: value` (the real runs, N = 1,000 and 10,000, are in the README and never run in CI).

use std::collections::HashMap;
use std::process::Command;

use gatehouse_testkit::process::bin;

/// The `key: value` lines, every value a number.
fn figures(stdout: &str) -> HashMap<&str, f64> {
    stdout
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| {
            (
                k,
                v.parse::<f64>()
                    .unwrap_or_else(|_| panic!("{k}: {v} is not a number")),
            )
        })
        .collect()
}

/// Runs `gatehouse-bench ARGS`, which must succeed; its stdout.
fn bench(args: &[&str]) -> String {
    let out = Command::new(bin("gatehouse-bench"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn the_benchmark_prints_every_figure_for_a_tiny_fleet() {
    let stdout = bench(&[
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
    ]);
    let figures = figures(&stdout);
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

#[test]
fn the_allowlist_benchmark_prints_every_figure_for_a_few_devices() {
    let stdout = bench(&[
        "allowlist",
        "--devices",
        "30",
        "--window",
        "2s",
        "--caddy-sample",
        "10",
    ]);
    let figures = figures(&stdout);
    for key in [
        "devices",
        "allowlist_window_checkin_p99_ms",
        "allowlist_to_cloudflare_p50_ms",
        "allowlist_to_cloudflare_p99_ms",
        "allowlist_to_caddy_p50_ms",
        "allowlist_to_caddy_p99_ms",
        "allowlist_sustained_checkins_per_second",
        "allowlist_sustained_checkin_p99_ms",
    ] {
        assert!(figures.contains_key(key), "{key} missing:\n{stdout}");
    }
    assert_eq!(figures["devices"], 30.0);
    assert_eq!(figures["allowlist_caddy_samples"], 3.0);
    assert!(figures["allowlist_sustained_checkins_per_second"] > 0.0);
    assert!(
        figures["allowlist_to_caddy_p99_ms"] >= figures["allowlist_to_caddy_p50_ms"],
        "{stdout}"
    );
}

#[test]
fn the_wireguard_benchmark_prints_every_figure_for_a_small_network() {
    // It makes an interface: in a namespace of its own.
    gatehouse_testkit::process::external("wireguard-go", &[], "wireguard-go");
    let ns = gatehouse_testkit::netns::Netns::new("ghwbench");
    let prefix = ns.prefix();
    let out = Command::new(&prefix[0])
        .args(&prefix[1..])
        .arg(bin("gatehouse-bench"))
        .args([
            "wireguard",
            "--clients",
            "40",
            "--hub-peers",
            "30",
            "--mesh-hosts",
            "5",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let figures = figures(&stdout);
    for key in [
        "wg_ipam_clients_added_seconds",
        "wg_ipam_client_add_p99_ms",
        "wg_ipam_hub_state_synced_seconds",
        "wg_mesh_plan_ms",
        "wg_hub_create_and_apply_ms",
        "wg_hub_one_peer_added_ms",
    ] {
        assert!(figures.contains_key(key), "{key} missing:\n{stdout}");
    }
    assert_eq!(figures["wg_clients"], 40.0);
    assert_eq!(figures["wg_mesh_peerings"], 20.0, "5 hosts, 4 peers each");
    // Planned as a diff: nothing to do the second time, one step for one new peer.
    assert_eq!(figures["wg_hub_unchanged_steps"], 0.0);
    assert_eq!(figures["wg_hub_one_peer_added_steps"], 1.0);
}

#[test]
fn the_acme_benchmark_prints_every_figure_for_two_certificates() {
    let stdout = bench(&["acme", "--certificates", "2", "--parallel", "2"]);
    let figures = figures(&stdout);
    for side in ["gatehouse", "lego_sequential", "lego_parallel"] {
        for figure in [
            "total_ms",
            "per_certificate_p50_ms",
            "per_certificate_p99_ms",
        ] {
            let key = format!("{side}_{figure}");
            assert!(
                figures.get(key.as_str()).is_some_and(|v| *v > 0.0),
                "{key} missing or zero:\n{stdout}"
            );
        }
    }
    assert_eq!(figures["certificates"], 2.0);
    assert!(
        figures.contains_key("lego_sequential_over_gatehouse"),
        "{stdout}"
    );
    assert!(
        figures.contains_key("lego_parallel_over_gatehouse"),
        "{stdout}"
    );
    assert_eq!(figures["lego_propagation_checked"], 0.0, "{stdout}");
}
