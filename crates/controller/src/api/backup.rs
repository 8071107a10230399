//! Backups over the admin API: the same file `gatehouse-controller backup` writes, in chunks.

use gatehouse_proto::v1::*;

use super::{Audited, ItemStream};
use crate::Shared;
use crate::backup::BackupError;
use crate::error::{Error, Result};

/// The size of one chunk on the wire (under gRPC's default 4 MiB message limit).
const CHUNK: usize = 1 << 20;

impl Audited for CreateBackupRequest {
    type Response = ItemStream<BackupChunk>;
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
) -> Result<ItemStream<BackupChunk>> {
    // The snapshot is made where the store lives: it holds the sealed secrets.
    let (_, bytes) =
        crate::backup::encode(&shared.store, &shared.config().data_dir, shared.now()).await?;
    let chunks: Vec<_> = bytes
        .chunks(CHUNK)
        .map(|c| Ok(BackupChunk { data: c.to_vec() }))
        .collect();
    Ok(Box::pin(futures_util::stream::iter(chunks)))
}
