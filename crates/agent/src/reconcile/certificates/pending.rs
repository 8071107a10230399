//! Keys made on this host whose certificates are still awaited, kept in one 0600 file so a
//! restarted agent asks again with the same key (and an ACME order goes on).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use base64::Engine;
use gatehouse_common::Backoff;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::INSTALL_RETRY;
use crate::host::files;
use crate::identity::PendingKey;

/// A pending key as kept on disk.
#[derive(Serialize, Deserialize)]
struct SavedPending {
    revision: u64,
    domains: Vec<String>,
    key_type: i32,
    key_pem: String,
    /// Base64.
    csr_der: String,
}

#[derive(Debug)]
pub(super) struct Pending {
    pub revision: u64,
    pub domains: Vec<String>,
    pub key_type: i32,
    pub key: PendingKey,
    /// The chain the controller issued, kept while installing it fails on the host.
    pub issued: Option<String>,
    pub retry: Backoff,
    /// When to try installing `issued` again (Unix seconds).
    pub retry_at: i64,
}

impl Pending {
    pub fn new(revision: u64, domains: Vec<String>, key_type: i32, key: PendingKey) -> Self {
        Self {
            revision,
            domains,
            key_type,
            key,
            issued: None,
            retry: Backoff::new(INSTALL_RETRY.0, INSTALL_RETRY.1),
            retry_at: 0,
        }
    }
}

/// The pending keys a previous run left in `path` (none when there is no file; damaged ones
/// are dropped with a warning).
pub(super) fn load(path: &Path) -> HashMap<String, Pending> {
    let Some(saved) = files::read_json::<BTreeMap<String, SavedPending>>(path, "pending keys")
    else {
        return HashMap::new();
    };
    let mut out = HashMap::new();
    for (name, s) in saved {
        let csr = base64::engine::general_purpose::STANDARD.decode(&s.csr_der);
        match csr
            .map_err(|e| e.to_string())
            .and_then(|csr| PendingKey::restore(&s.key_pem, csr).map_err(|e| e.to_string()))
        {
            Ok(key) => {
                out.insert(name, Pending::new(s.revision, s.domains, s.key_type, key));
            }
            Err(e) => warn!(certificate = %name, error = %e, "dropping a damaged pending key"),
        }
    }
    out
}

/// Writes the pending keys to `path` (0600), or removes it when there are none.
pub(super) fn save(path: &Path, pending: &HashMap<String, Pending>) {
    let result = if pending.is_empty() {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
            _ => Ok(()),
        }
    } else {
        let saved: BTreeMap<&String, SavedPending> = pending
            .iter()
            .map(|(name, p)| {
                (
                    name,
                    SavedPending {
                        revision: p.revision,
                        domains: p.domains.clone(),
                        key_type: p.key_type,
                        key_pem: p.key.key_pem().to_owned(),
                        csr_der: base64::engine::general_purpose::STANDARD.encode(&p.key.csr_der),
                    },
                )
            })
            .collect();
        let json = serde_json::to_vec(&saved).expect("serialisable");
        files::write_atomic(path, &json, 0o600, None).map_err(|e| e.to_string())
    };
    if let Err(e) = result {
        warn!(path = %path.display(), error = %e, "cannot save pending keys");
    }
}
