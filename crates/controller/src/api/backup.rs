//! Backups over the admin API: the same file `gatehouse-controller backup` writes, in chunks.

use gatehouse_proto::v1::*;

use super::Audited;
use crate::Shared;
use crate::backup::BackupError;
use crate::error::{Error, Result};

/// The size of one chunk on the wire (under gRPC's default 4 MiB message limit).
const CHUNK: usize = 1 << 20;

impl Audited for CreateBackupRequest {
    type Response = Vec<BackupChunk>;
    fn target(&self) -> String {
        "store".into()
    }
}

impl From<BackupError> for Error {
    fn from(e: BackupError) -> Self {
        match e {
            BackupError::Store(e) => Error::Store(e),
            e @ (BackupError::Postgres | BackupError::NoCa) => Error::Precondition(e.to_string()),
            e => Error::Internal(e.to_string()),
        }
    }
}

pub(super) async fn create_backup(
    shared: &Shared,
    _: CreateBackupRequest,
) -> Result<Vec<BackupChunk>> {
    // Written where the store lives: the snapshot holds the sealed secrets.
    let dir = tempfile::Builder::new()
        .prefix(".api-backup-")
        .tempdir_in(&shared.config().data_dir)
        .map_err(|e| Error::Internal(format!("cannot make a place for the backup: {e}")))?;
    let file = dir.path().join("controller.backup");
    crate::backup::save(&shared.store, &file, shared.now()).await?;
    let bytes = std::fs::read(&file)
        .map_err(|e| Error::Internal(format!("cannot read the backup back: {e}")))?;
    Ok(bytes
        .chunks(CHUNK)
        .map(|c| BackupChunk { data: c.to_vec() })
        .collect())
}
