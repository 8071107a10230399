//! Atomic file writes: temp file in the same directory, fsync, mode and owner, rename, fsync of
//! the directory. A reader sees the old content or the new, never half of either.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid};

/// A file operation failed; the path says which.
#[derive(Debug, thiserror::Error)]
#[error("{action} {path}: {source}")]
pub struct FileError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

fn err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> FileError + 'a {
    move |source| FileError {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Who should own a written file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: Uid,
    pub gid: Gid,
}

/// Creates `dir` and its parents with `mode` for the ones it creates; an existing directory
/// keeps its mode unless it is the last component, which is set to `mode`.
pub fn ensure_dir(dir: &Path, mode: u32) -> Result<(), FileError> {
    fs::create_dir_all(dir).map_err(err("cannot create directory", dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .map_err(err("cannot set the mode of", dir))
}

/// Creates `dir` (and parents) when missing, leaving an existing directory's mode alone.
pub fn ensure_dir_keep_mode(dir: &Path) -> Result<(), FileError> {
    fs::create_dir_all(dir).map_err(err("cannot create directory", dir))
}

/// A JSON file the agent keeps: `None` when it is not there, or (with a warning naming `what`)
/// when it cannot be read or parsed.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Option<T> {
    match fs::read(path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring damaged {what}");
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read {what}");
            None
        }
    }
}

/// Writes `data` to `path` atomically with `mode` (and `owner` when given).
pub fn write_atomic(
    path: &Path,
    data: &[u8],
    mode: u32,
    owner: Option<Owner>,
) -> Result<(), FileError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (tmp_path, mut file) = create_temp(dir, &name, mode)?;
    let result = (|| {
        file.write_all(data)
            .map_err(err("cannot write", &tmp_path))?;
        // The mode is set again explicitly: the umask applies at creation.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(err("cannot set the mode of", &tmp_path))?;
        if let Some(owner) = owner {
            nix::unistd::fchown(&file, Some(owner.uid), Some(owner.gid)).map_err(|e| {
                FileError {
                    action: "cannot change the owner of",
                    path: tmp_path.clone(),
                    source: e.into(),
                }
            })?;
        }
        file.sync_all().map_err(err("cannot flush", &tmp_path))?;
        fs::rename(&tmp_path, path).map_err(err("cannot move into place", path))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp_path);
    }
    result
}

fn create_temp(dir: &Path, name: &str, mode: u32) -> Result<(PathBuf, File), FileError> {
    for _ in 0..16 {
        let mut suffix = [0u8; 6];
        aws_lc_rs::rand::fill(&mut suffix).expect("the system RNG works");
        let tmp = dir.join(format!(".{name}.tmp-{}", hex::encode(suffix)));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(err("cannot create a temporary file in", dir)(e)),
        }
    }
    Err(FileError {
        action: "cannot find a free temporary name in",
        path: dir.to_owned(),
        source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
    })
}

/// Flushes a directory so a rename in it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<(), FileError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err("cannot flush directory", dir))
}

/// One change to a set of files the agent owns in one directory (Caddy snippets, unit files,
/// WireGuard configs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileChange {
    Write { file: String, content: String },
    Remove { file: String },
}

impl FileChange {
    /// The file it touches.
    pub fn file(&self) -> &str {
        match self {
            FileChange::Write { file, .. } | FileChange::Remove { file } => file,
        }
    }
}

/// What turns the `observed` set of files (name → content) into the `desired` one: a write for
/// each file missing or different, a removal for each file no longer wanted. Pure; unchanged
/// files are left alone, so an empty result means up to date.
pub fn diff(
    desired: &BTreeMap<String, String>,
    observed: &BTreeMap<String, String>,
) -> Vec<FileChange> {
    let mut changes: Vec<FileChange> = desired
        .iter()
        .filter(|(file, content)| observed.get(*file) != Some(content))
        .map(|(file, content)| FileChange::Write {
            file: file.clone(),
            content: content.clone(),
        })
        .collect();
    changes.extend(
        observed
            .keys()
            .filter(|file| !desired.contains_key(*file))
            .map(|file| FileChange::Remove { file: file.clone() }),
    );
    changes
}

/// The files in `dir` whose names end with `suffix` (hidden ones and temporary files left
/// out), by name; an absent directory is an empty set.
pub fn read_set(dir: &Path, suffix: &str) -> Result<BTreeMap<String, String>, FileError> {
    let mut out = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(source) => {
            return Err(FileError {
                action: "cannot list",
                path: dir.to_owned(),
                source,
            });
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(suffix) && !name.starts_with('.') {
            let text = std::fs::read_to_string(entry.path()).map_err(|source| FileError {
                action: "cannot read",
                path: entry.path(),
                source,
            })?;
            out.insert(name, text);
        }
    }
    Ok(out)
}

/// Removes temporary files a killed writer left behind in `dir`.
pub fn remove_stale_temps(dir: &Path) -> Result<usize, FileError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(err("cannot list", dir)(e)),
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.contains(".tmp-") {
            fs::remove_file(entry.path()).map_err(err("cannot remove", &entry.path()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_set_diff_writes_what_differs_and_removes_what_is_not_wanted() {
        let set = |items: &[(&str, &str)]| -> BTreeMap<String, String> {
            items
                .iter()
                .map(|(f, c)| (f.to_string(), c.to_string()))
                .collect()
        };
        let write = |f: &str, c: &str| FileChange::Write {
            file: f.into(),
            content: c.into(),
        };
        let remove = |f: &str| FileChange::Remove { file: f.into() };
        let cases: Vec<(&str, BTreeMap<_, _>, BTreeMap<_, _>, Vec<FileChange>)> = vec![
            ("up to date", set(&[("a", "A")]), set(&[("a", "A")]), vec![]),
            ("nothing at all", set(&[]), set(&[]), vec![]),
            (
                "missing",
                set(&[("a", "A")]),
                set(&[]),
                vec![write("a", "A")],
            ),
            (
                "changed by hand",
                set(&[("a", "A")]),
                set(&[("a", "X")]),
                vec![write("a", "A")],
            ),
            (
                "no longer wanted",
                set(&[]),
                set(&[("a", "A")]),
                vec![remove("a")],
            ),
            (
                "all at once",
                set(&[("a", "A2"), ("b", "B"), ("c", "C")]),
                set(&[("a", "A1"), ("b", "B"), ("d", "D")]),
                vec![write("a", "A2"), write("c", "C"), remove("d")],
            ),
        ];
        for (what, desired, observed, expected) in cases {
            assert_eq!(diff(&desired, &observed), expected, "{what}");
        }
    }

    #[test]
    fn writes_whole_files_with_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        write_atomic(&path, b"one", 0o600, None).unwrap();
        write_atomic(&path, b"two", 0o600, None).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn failure_names_the_path_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing/x");
        let e = write_atomic(&path, b"x", 0o600, None).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }

    #[test]
    fn stale_temps_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".state.tmp-abc"), b"half").unwrap();
        fs::write(dir.path().join("state"), b"whole").unwrap();
        assert_eq!(remove_stale_temps(dir.path()).unwrap(), 1);
        assert!(dir.path().join("state").exists());
    }
}
