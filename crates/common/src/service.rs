//! Talking to systemd when it started us (`Type=notify`): READY once the daemon serves, and
//! watchdog pings at half the unit's `WatchdogSec` for as long as it runs. Outside systemd
//! (no `NOTIFY_SOCKET`) these do nothing.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Tells systemd the service is ready.
pub fn notify_ready() {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    match sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        Ok(()) => debug!("told systemd we are ready"),
        Err(e) => warn!("cannot notify systemd: {e}"),
    }
}

/// Tells systemd the service is stopping.
pub fn notify_stopping() {
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    }
}

/// Pings systemd's watchdog until `shutdown`, when the unit asks for one.
pub fn spawn_watchdog(shutdown: CancellationToken) {
    let Some(timeout) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = (timeout / 2).max(Duration::from_millis(100));
    tokio::spawn(async move {
        loop {
            if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]) {
                warn!("cannot ping systemd's watchdog: {e}");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    // NOTIFY_SOCKET is process-wide; this is the only test in the crate that sets it.
    #[test]
    fn ready_reaches_the_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        // NOTIFY_SOCKET is read from the environment: set it in a child run of this test binary.
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "service::tests::child_sends_ready",
                "--nocapture",
            ])
            .env("NOTIFY_SOCKET", &path)
            .env("GATEHOUSE_NOTIFY_CHILD", "1")
            .status()
            .unwrap();
        assert!(status.success());
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).unwrap();
        assert_eq!(std::str::from_utf8(&buf[..n]).unwrap().trim(), "READY=1");
    }

    #[test]
    fn child_sends_ready() {
        if std::env::var_os("GATEHOUSE_NOTIFY_CHILD").is_some() {
            super::notify_ready();
        }
    }
}
