//! A real systemd, booted as PID 1 of a private PID + mount + network + UTS namespace over an
//! overlay of the host's root (the recipe in TESTING.md). Whatever the test does in the box —
//! installing packages, starting units, adding users — lands in the overlay's upper directory
//! and is deleted with it; the host's root and its /tmp are never touched (the box mounts its
//! own /run and /tmp).
//!
//! Unlike TESTING.md's `chroot`, the box enters its root with `pivot_root`: the kernel refuses
//! user namespaces to a chrooted process, and the controller's unit uses `PrivateUsers=yes`.
//! Its mounts are then made shared (inside the box's own mount namespace only), as systemd does
//! on a real host: without that, `LoadCredential=` silently yields an empty directory.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::wait_for;

/// Units that cannot work in a container and would only slow the boot down.
const MASKED: &[&str] = &[
    "systemd-udevd.service",
    "systemd-udevd-control.socket",
    "systemd-udevd-kernel.socket",
    "getty@tty1.service",
    "console-getty.service",
    "serial-getty@ttyS0.service",
    "systemd-networkd-wait-online.service",
];

/// Services some package enabled on this machine (Alertmanager, Prometheus, PostgreSQL, Caddy,
/// …): the box overlays the machine's root, so they would start in it too and fail there.
/// The box runs only the units a test puts in it; systemd's own are left alone.
fn enabled_on_the_host() -> Vec<String> {
    let Ok(dirs) = std::fs::read_dir("/etc/systemd/system") else {
        return Vec::new();
    };
    dirs.flatten()
        .filter(|d| d.file_name().to_string_lossy().ends_with(".wants"))
        .filter_map(|d| std::fs::read_dir(d.path()).ok())
        .flatten()
        .flatten()
        .map(|u| u.file_name().to_string_lossy().into_owned())
        .filter(|u| {
            (u.ends_with(".service") || u.ends_with(".timer"))
                && !u.starts_with("systemd-")
                && !u.starts_with("gatehouse")
        })
        .collect()
}

const BOOT_SCRIPT: &str = r#"set -e
R=$1
mount -t overlay overlay -o lowerdir=/,upperdir=$R/upper,workdir=$R/work $R/merged
mount -t proc proc $R/merged/proc
mount --rbind /sys $R/merged/sys
mount --rbind /dev $R/merged/dev
mount -t tmpfs tmpfs $R/merged/run
mount -t tmpfs tmpfs $R/merged/tmp
hostname box
cd $R/merged
mkdir -p .oldroot
pivot_root . .oldroot
umount -l /.oldroot
mount --make-rshared /
exec /lib/systemd/systemd --system
"#;

/// A booted box. Dropping it powers systemd off and deletes the overlay.
#[derive(Debug)]
pub struct SystemBox {
    dir: tempfile::TempDir,
    launcher: Child,
    /// systemd's pid as the host sees it.
    pid: u32,
}

impl SystemBox {
    /// Boots a box with `files` (host path, path in the box) placed in it first.
    pub fn boot(files: &[(&Path, &str)]) -> Self {
        for tool in ["unshare", "nsenter"] {
            crate::process::external(tool, &[], "util-linux");
        }
        assert!(
            Path::new("/lib/systemd/systemd").exists(),
            "/lib/systemd/systemd is missing: apt-get install systemd"
        );
        let dir = tempfile::Builder::new()
            .prefix("gh-box-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path();
        for d in ["upper", "work", "merged", "upper/etc/systemd/system"] {
            std::fs::create_dir_all(root.join(d)).expect("box dirs");
        }
        let masked = MASKED
            .iter()
            .map(|u| (*u).to_owned())
            .chain(enabled_on_the_host());
        for unit in masked.collect::<std::collections::BTreeSet<_>>() {
            std::os::unix::fs::symlink(
                "/dev/null",
                root.join("upper/etc/systemd/system").join(unit),
            )
            .expect("mask unit");
        }
        for (from, to) in files {
            let dest = root.join("upper").join(to.trim_start_matches('/'));
            std::fs::create_dir_all(dest.parent().expect("parent")).expect("dir in box");
            std::fs::copy(from, &dest)
                .unwrap_or_else(|e| panic!("copy {} into the box: {e}", from.display()));
        }
        let script = root.join("boot.sh");
        std::fs::write(&script, BOOT_SCRIPT).expect("boot script");
        let log = std::fs::File::create(root.join("systemd.log")).expect("log");
        let launcher = Command::new("unshare")
            .args([
                "--fork",
                "--pid",
                "--mount",
                "--net",
                "--uts",
                "--propagation",
                "private",
            ])
            .arg("/bin/sh")
            .arg(&script)
            .arg(root)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start unshare");
        let launcher_pid = launcher.id();
        let mut booting = Self {
            dir,
            launcher,
            pid: 0,
        };
        booting.pid = wait_for(
            "systemd to start in the box",
            Duration::from_secs(20),
            || {
                let children = std::fs::read_to_string(format!(
                    "/proc/{launcher_pid}/task/{launcher_pid}/children"
                ))
                .ok()?;
                let pid: u32 = children.split_whitespace().next()?.parse().ok()?;
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
                (comm.trim() == "systemd").then_some(pid)
            },
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let state = booting.run(&["systemctl", "is-system-running"]);
            let state = String::from_utf8_lossy(&state.stdout).trim().to_owned();
            if state == "running" {
                break;
            }
            if state == "degraded" {
                let failed = booting.run(&["systemctl", "--failed", "--no-pager"]);
                panic!(
                    "the box booted degraded:\n{}",
                    String::from_utf8_lossy(&failed.stdout)
                );
            }
            assert!(
                Instant::now() < deadline,
                "the box did not finish booting (state {state:?}); systemd's output:\n{}",
                booting.systemd_log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        booting
    }

    /// Runs a program inside the box (all of its namespaces, its root) and returns its output.
    pub fn run(&self, argv: &[&str]) -> Output {
        self.command(argv).output().expect("run nsenter")
    }

    /// Runs a program in the box, panics unless it succeeds, and returns its stdout.
    pub fn ok(&self, argv: &[&str]) -> String {
        let out = self.run(argv);
        assert!(
            out.status.success(),
            "in the box, {argv:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// What runs a program inside the box: prepend it to the program's argv.
    pub fn prefix(&self) -> Vec<std::ffi::OsString> {
        ["nsenter", "-t", &self.pid.to_string(), "-a", "-r", "-w"]
            .into_iter()
            .map(Into::into)
            .collect()
    }

    /// A command that runs `argv` inside the box.
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut command = Command::new("nsenter");
        command
            .args(["-t", &self.pid.to_string(), "-a", "-r", "-w"])
            .args(argv)
            .stdin(Stdio::null());
        command
    }

    /// Writes a file inside the box with `mode`.
    pub fn write(&self, path: &str, contents: &str, mode: u32) {
        let mut child = self
            .command(&["tee", path])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("tee in the box");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(contents.as_bytes())
            .expect("write to tee");
        assert!(
            child.wait().expect("tee").success(),
            "cannot write {path} in the box"
        );
        self.ok(&["chmod", &format!("{mode:o}"), path]);
    }

    /// Whether a path exists inside the box.
    pub fn exists(&self, path: &str) -> bool {
        self.run(&["test", "-e", path]).status.success()
    }

    /// A unit property (`systemctl show -p NAME --value`).
    pub fn property(&self, unit: &str, name: &str) -> String {
        self.ok(&["systemctl", "show", "-p", name, "--value", unit])
            .trim()
            .to_owned()
    }

    /// The unit's main pid, once it is active.
    pub fn wait_active(&self, unit: &str, timeout: Duration) -> u32 {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.property(unit, "ActiveState");
            let pid: u32 = self.property(unit, "MainPID").parse().unwrap_or(0);
            if state == "active" && pid != 0 {
                return pid;
            }
            assert!(
                Instant::now() < deadline,
                "{unit} is {state} after {timeout:?}; its journal:\n{}",
                self.journal(unit)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The unit's journal, as text.
    pub fn journal(&self, unit: &str) -> String {
        let out = self.run(&[
            "journalctl",
            "-u",
            unit,
            "--no-pager",
            "-o",
            "short-precise",
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The unit's journal entries with all their fields.
    pub fn journal_entries(&self, unit: &str) -> Vec<serde_json::Value> {
        let out = self.run(&["journalctl", "-u", unit, "--no-pager", "-o", "json"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// What systemd itself printed while booting.
    pub fn systemd_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("systemd.log")).unwrap_or_default()
    }

    /// Connects the box's network to the host's with a veth pair (TESTING.md): the host end
    /// gets `.1` and the box end `.2` of a /30 in 198.18.0.0/15 (the range set aside for
    /// network tests), chosen from systemd's pid so parallel boxes never share one. Deleting
    /// the box's network namespace deletes the pair. Returns (host address, box address).
    pub fn link(&self) -> (std::net::Ipv4Addr, std::net::Ipv4Addr) {
        let n = self.pid % (1 << 15);
        let base = u32::from(std::net::Ipv4Addr::new(198, 18, 0, 0)) + n * 4;
        let (host, inside) = (
            std::net::Ipv4Addr::from(base + 1),
            std::net::Ipv4Addr::from(base + 2),
        );
        let (host_if, box_if) = (format!("ghh{}", self.pid), format!("ghb{}", self.pid));
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("run ip");
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let pid = self.pid.to_string();
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &box_if, "netns", &pid,
        ]);
        ip(&["addr", "add", &format!("{host}/30"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        let in_box = |args: &[&str]| {
            let out = Command::new("nsenter")
                .args(["-t", &pid, "-n", "ip"])
                .args(args)
                .output()
                .expect("run ip in the box");
            assert!(
                out.status.success(),
                "ip {args:?} in the box: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        in_box(&["addr", "add", &format!("{inside}/30"), "dev", &box_if]);
        in_box(&["link", "set", &box_if, "up"]);
        in_box(&["link", "set", "lo", "up"]);
        (host, inside)
    }

    /// The overlay's upper directory: everything the box changed, seen from the host.
    pub fn upper(&self) -> PathBuf {
        self.dir.path().join("upper")
    }
}

impl Drop for SystemBox {
    fn drop(&mut self) {
        let _ = self.command(&["systemctl", "poweroff"]).output();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.launcher.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if !matches!(self.launcher.try_wait(), Ok(Some(_))) {
            // Killing PID 1 of the namespace ends every process in it and its mounts.
            let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
            let _ = self.launcher.kill();
            let _ = self.launcher.wait();
        }
        // The work dir holds a root-only directory the temp dir's cleanup may trip on.
        let work = self.dir.path().join("work");
        if let Ok(meta) = std::fs::metadata(&work) {
            let mut perms = meta.permissions();
            perms.set_mode(0o700);
            let _ = std::fs::set_permissions(&work, perms);
        }
    }
}
