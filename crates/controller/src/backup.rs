//! Backups of a running controller and restores into a new data directory.
//!
//! A backup file is one line of JSON (the header: format, gatehouse version, time, the CA pin
//! agents enroll with, the payload's length and SHA-256) and then the payload: a consistent
//! copy of the SQLite store made while the controller runs (`VACUUM INTO`). The store holds the
//! CAs and every secret, sealed under the master key, which is never in a backup: a backup
//! without its master key restores the fleet's history but nothing secret. PostgreSQL stores
//! are backed up with `pg_dump`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ca::{Ca, CaError};
use crate::store::{Store, StoreError};

/// The first field of every backup file.
pub const MAGIC: &str = "gatehouse-backup";
/// The layout this build writes and reads.
pub const FORMAT: u32 = 1;
/// The store's file name in a data directory.
pub const STORE_FILE: &str = "gatehouse.db";

/// What a backup file says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub magic: String,
    pub format: u32,
    /// The gatehouse version that wrote it.
    pub version: String,
    /// Unix seconds.
    pub created_at: i64,
    /// The identity CA's pin (`sha256:…`), what every agent checks.
    pub ca_hash: String,
    pub payload_bytes: u64,
    /// Hex SHA-256 of the payload.
    pub payload_sha256: String,
}

/// What a restore put in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub header: Header,
    pub agents: usize,
    pub sites: usize,
    pub certificates: usize,
}

/// A backup or a restore did not happen.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("the store is PostgreSQL: back it up with pg_dump (the README says what else to keep)")]
    Postgres,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: not a gatehouse backup")]
    NotABackup(PathBuf),
    #[error("{path}: backup format {found}; this gatehouse reads format {FORMAT}")]
    Format { path: PathBuf, found: u32 },
    #[error(
        "{path}: truncated: the header announces {expected} bytes of store, the file has {found}"
    )]
    Truncated {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("{0}: altered: the store in it does not match the checksum in its header")]
    Altered(PathBuf),
    #[error("{0} is not empty: restore into a new directory, or pass --force to replace its store")]
    NotEmpty(PathBuf),
    #[error("the restored store failed SQLite's integrity check: {0}")]
    Integrity(String),
    #[error("the store holds no CA yet: has this controller started once?")]
    NoCa,
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A backup of the running `store` as bytes: the header line, then the store. The snapshot is
/// made in a private directory under `work_dir` (it holds the sealed secrets) and removed.
pub async fn encode(
    store: &Store,
    work_dir: &Path,
    now: i64,
) -> Result<(Header, Vec<u8>), BackupError> {
    if store.is_postgres() {
        return Err(BackupError::Postgres);
    }
    let ca_hash = Ca::stored_hash(store).await?.ok_or(BackupError::NoCa)?;
    let work = tempfile::Builder::new()
        .prefix(".gatehouse-backup-")
        .tempdir_in(work_dir)
        .map_err(io(work_dir))?;
    let snapshot = work.path().join(STORE_FILE);
    store.snapshot_into(&snapshot).await?;
    let payload = std::fs::read(&snapshot).map_err(io(&snapshot))?;
    let header = Header {
        magic: MAGIC.into(),
        format: FORMAT,
        version: gatehouse_proto::VERSION.into(),
        created_at: now,
        ca_hash,
        payload_bytes: payload.len() as u64,
        payload_sha256: crate::secrets::sha256_hex(&payload),
    };
    let mut bytes = serde_json::to_vec(&header).expect("the header serialises");
    bytes.push(b'\n');
    bytes.extend_from_slice(&payload);
    Ok((header, bytes))
}

/// Writes a backup of the running `store` to `to`: whole or not at all, mode 0600.
pub async fn save(store: &Store, to: &Path, now: i64) -> Result<Header, BackupError> {
    let dir = match to.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let (header, bytes) = encode(store, &dir, now).await?;
    gatehouse_common::files::write_private(to, &bytes).map_err(io(to))?;
    Ok(header)
}

/// Reads and checks a backup file: its header, its length and its checksum.
pub fn read(from: &Path) -> Result<(Header, Vec<u8>), BackupError> {
    let bytes = std::fs::read(from).map_err(io(from))?;
    let not_a_backup = || BackupError::NotABackup(from.to_owned());
    let end = bytes
        .iter()
        .take(4096)
        .position(|b| *b == b'\n')
        .ok_or_else(not_a_backup)?;
    let header: Header = serde_json::from_slice(&bytes[..end]).map_err(|_| not_a_backup())?;
    if header.magic != MAGIC {
        return Err(not_a_backup());
    }
    if header.format != FORMAT {
        return Err(BackupError::Format {
            path: from.to_owned(),
            found: header.format,
        });
    }
    let payload = bytes[end + 1..].to_vec();
    if payload.len() as u64 != header.payload_bytes {
        return Err(BackupError::Truncated {
            path: from.to_owned(),
            expected: header.payload_bytes,
            found: payload.len() as u64,
        });
    }
    if crate::secrets::sha256_hex(&payload) != header.payload_sha256 {
        return Err(BackupError::Altered(from.to_owned()));
    }
    Ok((header, payload))
}

/// Restores `from` into `data_dir`, which must be empty (or missing) unless `force`; checks the
/// restored store and counts what it holds.
pub async fn restore(from: &Path, data_dir: &Path, force: bool) -> Result<Restored, BackupError> {
    let (header, payload) = read(from)?;
    let occupied = match std::fs::read_dir(data_dir) {
        Ok(mut entries) => entries.next().is_some(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(io(data_dir)(e)),
    };
    if occupied && !force {
        return Err(BackupError::NotEmpty(data_dir.to_owned()));
    }
    crate::server::private_dir(data_dir).map_err(io(data_dir))?;
    let db = data_dir.join(STORE_FILE);
    for stale in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{stale}", db.display()));
    }
    gatehouse_common::files::write_private(&db, &payload).map_err(io(&db))?;
    let store = Store::open(&format!("sqlite://{}", db.display())).await?;
    let counted = count(&store, &header).await;
    store.close().await;
    counted
}

async fn count(store: &Store, header: &Header) -> Result<Restored, BackupError> {
    if let Some(problems) = store.integrity_problems().await? {
        return Err(BackupError::Integrity(problems));
    }
    let agents = store.agent_list().await?;
    let (mut sites, mut certificates) = (0, 0);
    for agent in &agents {
        if let Some(latest) = store.desired_latest(&agent.id).await? {
            sites += latest.state.sites.len();
            certificates += latest.state.certificates.len();
        }
    }
    Ok(Restored {
        header: header.clone(),
        agents: agents.len(),
        sites,
        certificates,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_backup_reads_back_and_any_change_to_it_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.path().join("a.db").display()))
            .await
            .unwrap();
        let key =
            crate::secrets::MasterKey::load_or_create(&dir.path().join("master.key")).unwrap();
        Ca::load_or_create(&store, &key, crate::ca::CaKind::Identity, 1_000)
            .await
            .unwrap();
        let file = dir.path().join("b.backup");
        let header = save(&store, &file, 2_000).await.unwrap();
        assert_eq!((header.created_at, header.format), (2_000, FORMAT));
        let (read_back, payload) = read(&file).unwrap();
        assert_eq!(read_back, header);
        assert_eq!(payload.len() as u64, header.payload_bytes);

        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(&file, &bytes[..bytes.len() - 10]).unwrap();
        assert!(matches!(read(&file), Err(BackupError::Truncated { .. })));
        let mut altered = bytes.clone();
        let last = altered.len() - 1;
        altered[last] ^= 0xff;
        std::fs::write(&file, &altered).unwrap();
        assert!(matches!(read(&file), Err(BackupError::Altered(_))));
        std::fs::write(&file, b"hello\n").unwrap();
        assert!(matches!(read(&file), Err(BackupError::NotABackup(_))));
    }
}
