//! Certificates on disk. Key and chain files are content-addressed
//! (`<name>-<sha12>.key` / `.crt`, 0600, in a 0700 directory owned by the user that reads them)
//! so a reload always picks up a renewed certificate; an index records the current one per
//! name and the previous few, kept for rollback. Everything else is removed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use gatehouse_proto::v1::CertificateInventory;
use serde::{Deserialize, Serialize};

use crate::host::files::{self, FileError, Owner};
use crate::pki::CertInfo;

/// How many versions of a certificate are kept: the current one and two before it.
pub const KEEP: usize = 3;

/// A certificate could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("the issued certificate is unusable: {0}")]
    Unusable(String),
    #[error("{path} is damaged: {detail}")]
    Index { path: PathBuf, detail: String },
}

/// One installed certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    pub name: String,
    pub revision: u64,
    pub domains: Vec<String>,
    pub key_type: i32,
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
    /// SHA-256 of the chain file.
    pub sha256: String,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    /// name → current, then older versions (newest first), at most [`KEEP`] in all.
    certificates: BTreeMap<String, Vec<Installed>>,
}

/// The certificate directory and its index.
#[derive(Debug, Clone)]
pub struct CertStore {
    dir: PathBuf,
    index: PathBuf,
    owner: Option<Owner>,
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data))
}

impl CertStore {
    /// A store in `dir` with its index at `index`; files are chowned to `owner` when given.
    pub fn new(dir: &Path, index: &Path, owner: Option<Owner>) -> Self {
        Self {
            dir: dir.to_owned(),
            index: index.to_owned(),
            owner,
        }
    }

    fn load(&self) -> Result<Index, CertError> {
        match std::fs::read(&self.index) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| CertError::Index {
                path: self.index.clone(),
                detail: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index::default()),
            Err(source) => Err(FileError {
                action: "cannot read",
                path: self.index.clone(),
                source,
            }
            .into()),
        }
    }

    fn save(&self, index: &Index) -> Result<(), CertError> {
        let text = serde_json::to_vec_pretty(index).expect("serialisable");
        files::write_atomic(&self.index, &text, 0o600, None)?;
        Ok(())
    }

    /// The current certificate of each name.
    pub fn current(&self) -> Result<BTreeMap<String, Installed>, CertError> {
        Ok(self
            .load()?
            .certificates
            .into_iter()
            .filter_map(|(name, versions)| versions.into_iter().next().map(|v| (name, v)))
            .collect())
    }

    /// Installs a key and its chain as the current version of `name`. The files are whole before
    /// the index points at them.
    pub fn install(
        &self,
        name: &str,
        revision: u64,
        domains: &[String],
        key_type: i32,
        key_pem: &str,
        chain_pem: &str,
    ) -> Result<Installed, CertError> {
        let info = CertInfo::from_pem(chain_pem).map_err(|e| CertError::Unusable(e.to_string()))?;
        let sha256 = sha256_hex(chain_pem.as_bytes());
        let base = format!("{name}-{}", &sha256[..12]);
        files::ensure_dir(&self.dir, 0o700)?;
        if let Some(owner) = self.owner {
            nix::unistd::chown(&self.dir, Some(owner.uid), Some(owner.gid)).map_err(|e| {
                FileError {
                    action: "cannot change the owner of",
                    path: self.dir.clone(),
                    source: e.into(),
                }
            })?;
        }
        let key_path = self.dir.join(format!("{base}.key"));
        let cert_path = self.dir.join(format!("{base}.crt"));
        files::write_atomic(&key_path, key_pem.as_bytes(), 0o600, self.owner)?;
        files::write_atomic(&cert_path, chain_pem.as_bytes(), 0o600, self.owner)?;
        let installed = Installed {
            name: name.to_owned(),
            revision,
            domains: domains.to_vec(),
            key_type,
            serial: info.serial,
            not_before: info.not_before,
            not_after: info.not_after,
            sha256,
            cert_path,
            key_path,
        };
        let mut index = self.load()?;
        let versions = index.certificates.entry(name.to_owned()).or_default();
        versions.retain(|v| v.sha256 != installed.sha256);
        versions.insert(0, installed.clone());
        versions.truncate(KEEP);
        self.save(&index)?;
        Ok(installed)
    }

    /// Forgets names not in `wanted` and removes every file the index does not list (older
    /// versions, certificates no longer wanted, leftovers of an interrupted install).
    pub fn clean(&self, wanted: &BTreeSet<String>) -> Result<Vec<PathBuf>, CertError> {
        let mut index = self.load()?;
        let before = index.certificates.len();
        index.certificates.retain(|name, _| wanted.contains(name));
        if index.certificates.len() != before {
            self.save(&index)?;
        }
        let keep: BTreeSet<PathBuf> = index
            .certificates
            .values()
            .flatten()
            .flat_map(|v| [v.cert_path.clone(), v.key_path.clone()])
            .collect();
        let mut removed = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
            Err(source) => {
                return Err(FileError {
                    action: "cannot list",
                    path: self.dir.clone(),
                    source,
                }
                .into());
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let ours = path.extension().is_some_and(|e| e == "crt" || e == "key");
            if ours && !keep.contains(&path) {
                std::fs::remove_file(&path).map_err(|source| FileError {
                    action: "cannot remove",
                    path: path.clone(),
                    source,
                })?;
                removed.push(path);
            }
        }
        files::remove_stale_temps(&self.dir)?;
        Ok(removed)
    }

    /// What `Report` carries: the current certificate of each name.
    pub fn inventory(&self) -> Vec<CertificateInventory> {
        self.current()
            .unwrap_or_default()
            .into_values()
            .map(|c| CertificateInventory {
                name: c.name,
                serial: c.serial,
                not_after: c.not_after,
                sha256: c.sha256,
                path: c.cert_path.display().to_string(),
                revision: c.revision,
                domains: c.domains,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn self_signed(domain: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![domain.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (key.serialize_pem(), cert.pem())
    }

    #[test]
    fn installs_content_addressed_files_and_keeps_three_versions() {
        let dir = tempfile::tempdir().unwrap();
        let store = CertStore::new(
            &dir.path().join("sites"),
            &dir.path().join("index.json"),
            None,
        );
        let mut paths = Vec::new();
        for _ in 0..5 {
            let (key, chain) = self_signed("www.example.com");
            let c = store
                .install("www", 1, &["www.example.com".into()], 0, &key, &chain)
                .unwrap();
            assert!(
                c.cert_path
                    .file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with("www-")
            );
            assert_eq!(std::fs::read_to_string(&c.cert_path).unwrap(), chain);
            for p in [&c.cert_path, &c.key_path] {
                assert_eq!(
                    std::fs::metadata(p).unwrap().permissions().mode() & 0o777,
                    0o600
                );
            }
            paths.push(c);
        }
        let dir_mode = std::fs::metadata(dir.path().join("sites"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        assert_eq!(store.current().unwrap()["www"], paths[4]);
        let removed = store.clean(&BTreeSet::from(["www".to_owned()])).unwrap();
        assert_eq!(removed.len(), 4, "two oldest versions, key and chain each");
        assert!(paths[2].cert_path.exists() && !paths[1].cert_path.exists());
        assert_eq!(store.inventory()[0].serial, paths[4].serial);

        // A certificate no longer wanted goes entirely.
        store.clean(&BTreeSet::new()).unwrap();
        assert!(store.current().unwrap().is_empty());
        assert_eq!(
            std::fs::read_dir(dir.path().join("sites")).unwrap().count(),
            0
        );
    }

    #[test]
    fn an_unusable_chain_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = CertStore::new(
            &dir.path().join("sites"),
            &dir.path().join("index.json"),
            None,
        );
        let err = store
            .install("www", 1, &[], 0, "key", "not a cert")
            .unwrap_err();
        assert!(matches!(err, CertError::Unusable(_)));
        assert!(!dir.path().join("sites").exists());
    }
}
