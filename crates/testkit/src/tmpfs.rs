//! A small tmpfs mounted over a test's directory, to run a process on a disk that fills up.
//! Needs root (tests and CI run as root); unmounted when dropped, also when a test panics.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs.
#[derive(Debug)]
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (for example `"4m"`) on `path`, which is created.
    pub fn mount(path: &Path, size: &str) -> Self {
        std::fs::create_dir_all(path).expect("mount point");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .expect("run mount (util-linux)");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs on {} (the test needs root): {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            path: path.to_owned(),
        }
    }

    /// Fills what is left with one file, which [`Tmpfs::free`] removes.
    pub fn fill(&self) {
        use std::io::Write;
        let mut file = std::fs::File::create(self.filler()).expect("filler");
        let chunk = vec![0u8; 64 * 1024];
        loop {
            if file.write_all(&chunk).is_err() {
                break;
            }
        }
        // The last partial blocks too.
        while file.write_all(&[0u8; 512]).is_ok() {}
        let _ = file.sync_all();
    }

    /// Removes the filler.
    pub fn free(&self) {
        std::fs::remove_file(self.filler()).expect("remove the filler");
    }

    fn filler(&self) -> PathBuf {
        self.path.join("filler")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).output();
    }
}
