//! Test-only harnesses. Each picks free ports, works in a fresh temporary directory and stops
//! what it started when dropped, even when the test panics.

pub mod ari;
pub mod caddy;
/// The Cloudflare emulator (its own crate, which dev mode uses too).
pub use gatehouse_cloudflare_emulator as cloudflare;
pub mod cloudflare_schema;
pub mod gatehouse;
pub mod netns;
pub mod pebble;
pub mod postgres;
pub mod process;
pub mod systembox;
pub mod tmpfs;

use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound and released; the kernel does not hand it out again soon).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `timeout` with `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How many files in `dir` have the extension `ext` (`crt`, `key`, …).
pub fn count_files(dir: &std::path::Path, ext: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == ext))
        })
        .count()
}
