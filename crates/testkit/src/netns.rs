//! Network namespaces for tests that need several hosts: each a namespace of its own, joined by
//! veth pairs, deleted when dropped. Names carry the test process's id so tests run in
//! parallel.

use std::process::Command;

/// Runs `ip ARGS`, which must succeed.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (Debian package iproute2)");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with its loopback up.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// `ip netns add NAME`; the name gets this process's id appended.
    pub fn new(name: &str) -> Self {
        let name = format!("{name}{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend(args);
        ip(&all);
    }

    /// The argv prefix that runs a command inside the namespace.
    pub fn prefix(&self) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.name.clone(),
        ]
    }

    /// The argv prefix that runs a command inside the namespace as a host of its own: with a
    /// private, empty `/run/wireguard` (wireguard-go's UAPI sockets are not per network
    /// namespace, and two hosts on one machine may name their interfaces alike).
    pub fn host_prefix(&self) -> Vec<String> {
        let mut p = self.prefix();
        p.extend(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                "mkdir -p /run/wireguard && mount -t tmpfs tmpfs /run/wireguard && exec \"$0\" \"$@\"",
            ]
            .map(String::from),
        );
        p
    }

    /// Runs `f` on a thread that has entered the namespace (sockets it opens live there).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("the namespace's file");
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("the namespace thread")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // What runs inside (wireguard-go detaches from whoever started it) goes first, or the
        // namespace would live on with it: asked to stop (wireguard-go then removes its UAPI
        // socket), killed if it does not.
        let pids = || -> Vec<i32> {
            Command::new("ip")
                .args(["netns", "pids", &self.name])
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .split_whitespace()
                        .filter_map(|p| p.parse().ok())
                        .collect()
                })
                .unwrap_or_default()
        };
        let signal = |pids: &[i32], s: nix::sys::signal::Signal| {
            for pid in pids {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), s);
            }
        };
        signal(&pids(), nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while !pids().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        signal(&pids(), nix::sys::signal::Signal::SIGKILL);
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Joins `a` and `b` (either `None`: the test's own namespace) with a veth pair named
/// `NAME-a`/`NAME-b` (at most 15 bytes each) and gives each end its address (`10.0.0.1/30`).
pub fn veth(name: &str, a: (Option<&Netns>, &str), b: (Option<&Netns>, &str)) {
    let (ea, eb) = (format!("{name}a"), format!("{name}b"));
    let _ = Command::new("ip").args(["link", "del", &ea]).output();
    ip(&["link", "add", &ea, "type", "veth", "peer", "name", &eb]);
    for (end, (ns, addr)) in [(&ea, a), (&eb, b)] {
        if let Some(ns) = ns {
            ip(&["link", "set", end, "netns", &ns.name]);
            ns.ip(&["addr", "add", addr, "dev", end]);
            ns.ip(&["link", "set", end, "up"]);
        } else {
            ip(&["addr", "add", addr, "dev", end]);
            ip(&["link", "set", end, "up"]);
        }
    }
}
