//! Test-only harnesses. Each picks free ports, works in a fresh temporary directory and stops
//! what it started when dropped, even when the test panics.

pub mod alertmanager;
pub mod ari;
pub mod browser;
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
pub mod webhook;

use std::time::{Duration, Instant};

/// A free TCP and UDP port on 127.0.0.1, held for this test process alone.
///
/// Ports come from below the kernel's ephemeral range (32768 and up), so no outgoing connection
/// takes one between this call and the server binding it, and each is claimed with a lock file
/// that stays locked until the process exits, so parallel tests never pick the same one.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    static HELD: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join("gatehouse-test-ports");
    std::fs::create_dir_all(&dir).expect("create the port lock directory");
    for _ in 0..1000 {
        let port = 20_000 + (RandomState::new().hash_one(0u8) % 12_000) as u16;
        let lock = std::fs::File::create(dir.join(port.to_string())).expect("create a port lock");
        if lock.try_lock().is_err() {
            continue;
        }
        let free = std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok();
        if free {
            HELD.lock().unwrap_or_else(|e| e.into_inner()).push(lock);
            return port;
        }
    }
    panic!("no free port in 20000-31999 after 1000 tries");
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
