//! `[alerts]` in `controller.toml`: when the built-in rules fire and where notifications go.
//! Defaults follow `ALERTS.md`: what the Prometheus ecosystem's rule collections use.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use gatehouse_common::config::field_error;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlerts {
    interval: Option<String>,
    host_offline_for: Option<String>,
    certificate_warning: Option<String>,
    certificate_critical: Option<String>,
    renewal_overdue_for: Option<String>,
    acme_failures: Option<u32>,
    apply_failures: Option<u32>,
    apply_failing_for: Option<String>,
    disk_free_percent: Option<f64>,
    disk_for: Option<String>,
    disk_fill_window: Option<String>,
    disk_fill_horizon: Option<String>,
    tunnel_not_ready_for: Option<String>,
    wireguard_handshake_age: Option<String>,
    watchdog: Option<bool>,
    alertmanager: Option<Vec<String>>,
    webhook: Option<Vec<String>>,
    resend_interval: Option<String>,
    keep_resolved: Option<String>,
}

/// The alert rules' thresholds and the receivers.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertsConfig {
    /// How often the rules are evaluated.
    pub interval: Duration,
    /// How long a host stays offline (no report for three report intervals) before it fires.
    pub host_offline_for: Duration,
    /// A certificate closer than this to its expiry is a warning…
    pub certificate_warning: Duration,
    /// …and closer than this, critical.
    pub certificate_critical: Duration,
    /// How long a certificate may stay in the last third of its life without renewing.
    pub renewal_overdue_for: Duration,
    /// Failed attempts in a row before an ACME order is alerted.
    pub acme_failures: u32,
    /// Acks in a row with an item failed before it fires at once…
    pub apply_failures: u32,
    /// …or how long it may stay failed.
    pub apply_failing_for: Duration,
    /// A filesystem with less free space than this share (percent) fires.
    pub disk_free_percent: f64,
    /// How long a disk condition must hold.
    pub disk_for: Duration,
    /// The history a disk's fill rate is fitted to.
    pub disk_fill_window: Duration,
    /// A disk predicted to fill within this fires.
    pub disk_fill_horizon: Duration,
    /// A tunnel with no ready connection this long fires.
    pub tunnel_not_ready_for: Duration,
    /// A WireGuard host peer without a handshake this long fires.
    pub wireguard_handshake_age: Duration,
    /// An always-firing `Watchdog` alert, so a silent alerting path is noticed.
    pub watchdog: bool,
    /// Alertmanager base URLs (`POST {url}/api/v2/alerts`).
    pub alertmanager: Vec<String>,
    /// URLs that get Alertmanager's webhook JSON.
    pub webhook: Vec<String>,
    /// How often firing alerts are sent to Alertmanager again.
    pub resend_interval: Duration,
    /// How long a resolved alert stays listed.
    pub keep_resolved: Duration,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        const DAY: u64 = 24 * 3600;
        Self {
            interval: Duration::from_secs(30),
            host_offline_for: Duration::from_secs(5 * 60),
            certificate_warning: Duration::from_secs(20 * DAY),
            certificate_critical: Duration::from_secs(3 * DAY),
            renewal_overdue_for: Duration::from_secs(3600),
            acme_failures: 3,
            apply_failures: 3,
            apply_failing_for: Duration::from_secs(15 * 60),
            disk_free_percent: 10.0,
            disk_for: Duration::from_secs(120),
            disk_fill_window: Duration::from_secs(3 * 3600),
            disk_fill_horizon: Duration::from_secs(DAY),
            tunnel_not_ready_for: Duration::from_secs(120),
            wireguard_handshake_age: Duration::from_secs(15 * 60),
            watchdog: false,
            alertmanager: Vec::new(),
            webhook: Vec::new(),
            resend_interval: Duration::from_secs(60),
            keep_resolved: Duration::from_secs(3600),
        }
    }
}

impl AlertsConfig {
    pub(super) fn parse(raw: RawAlerts, path: &Path) -> Result<Self, ConfigError> {
        let field = field_error(path);
        let mut c = Self::default();
        let duration = |name: &'static str, text: Option<String>, into: &mut Duration| {
            if let Some(text) = text {
                *into = humantime::parse_duration(&text).map_err(|e| {
                    field(
                        name,
                        format!("{text:?} is not a duration like 5m or 20d: {e}"),
                    )
                })?;
            }
            Ok::<_, ConfigError>(())
        };
        duration("alerts.interval", raw.interval, &mut c.interval)?;
        if c.interval < Duration::from_secs(1) {
            return Err(field("alerts.interval", "must be at least 1s".into()));
        }
        duration(
            "alerts.host_offline_for",
            raw.host_offline_for,
            &mut c.host_offline_for,
        )?;
        duration(
            "alerts.certificate_warning",
            raw.certificate_warning,
            &mut c.certificate_warning,
        )?;
        duration(
            "alerts.certificate_critical",
            raw.certificate_critical,
            &mut c.certificate_critical,
        )?;
        if c.certificate_critical > c.certificate_warning {
            return Err(field(
                "alerts.certificate_critical",
                "must not be longer than alerts.certificate_warning".into(),
            ));
        }
        duration(
            "alerts.renewal_overdue_for",
            raw.renewal_overdue_for,
            &mut c.renewal_overdue_for,
        )?;
        let at_least_one = |name: &'static str, n: Option<u32>, into: &mut u32| {
            match n {
                Some(0) => return Err(field(name, "must be at least 1".into())),
                Some(n) => *into = n,
                None => {}
            }
            Ok(())
        };
        at_least_one(
            "alerts.acme_failures",
            raw.acme_failures,
            &mut c.acme_failures,
        )?;
        at_least_one(
            "alerts.apply_failures",
            raw.apply_failures,
            &mut c.apply_failures,
        )?;
        duration(
            "alerts.apply_failing_for",
            raw.apply_failing_for,
            &mut c.apply_failing_for,
        )?;
        if let Some(p) = raw.disk_free_percent {
            if !(0.0..100.0).contains(&p) {
                return Err(field(
                    "alerts.disk_free_percent",
                    format!("{p} is not a percentage from 0 to 100"),
                ));
            }
            c.disk_free_percent = p;
        }
        duration("alerts.disk_for", raw.disk_for, &mut c.disk_for)?;
        duration(
            "alerts.disk_fill_window",
            raw.disk_fill_window,
            &mut c.disk_fill_window,
        )?;
        duration(
            "alerts.disk_fill_horizon",
            raw.disk_fill_horizon,
            &mut c.disk_fill_horizon,
        )?;
        duration(
            "alerts.tunnel_not_ready_for",
            raw.tunnel_not_ready_for,
            &mut c.tunnel_not_ready_for,
        )?;
        duration(
            "alerts.wireguard_handshake_age",
            raw.wireguard_handshake_age,
            &mut c.wireguard_handshake_age,
        )?;
        if let Some(w) = raw.watchdog {
            c.watchdog = w;
        }
        let urls = |name: &'static str, list: Option<Vec<String>>, into: &mut Vec<String>| {
            for url in list.unwrap_or_default() {
                let parsed = reqwest::Url::parse(&url)
                    .map_err(|e| field(name, format!("{url:?} is not a URL: {e}")))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(field(
                        name,
                        format!("{url:?} is not an http:// or https:// URL"),
                    ));
                }
                into.push(url.trim_end_matches('/').to_owned());
            }
            Ok(())
        };
        urls("alerts.alertmanager", raw.alertmanager, &mut c.alertmanager)?;
        urls("alerts.webhook", raw.webhook, &mut c.webhook)?;
        duration(
            "alerts.resend_interval",
            raw.resend_interval,
            &mut c.resend_interval,
        )?;
        if c.resend_interval < Duration::from_secs(1) {
            return Err(field(
                "alerts.resend_interval",
                "must be at least 1s".into(),
            ));
        }
        duration(
            "alerts.keep_resolved",
            raw.keep_resolved,
            &mut c.keep_resolved,
        )?;
        Ok(c)
    }
}
