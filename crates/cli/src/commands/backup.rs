//! `gatehousectl backup`: a consistent backup of the controller's store, over the admin API.

use std::path::PathBuf;

use anyhow::Context;
use gatehouse_proto::v1::CreateBackupRequest;

use crate::Output;
use crate::client::{Client, explain};
use crate::output::{self, say};

/// Receives the backup and writes it to `to` whole, mode 0600.
pub async fn run(client: &mut Client, to: PathBuf, out: Output) -> anyhow::Result<()> {
    let mut chunks = client
        .create_backup(CreateBackupRequest {})
        .await
        .map_err(explain)?
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = chunks.message().await.map_err(explain)? {
        bytes.extend_from_slice(&chunk.data);
    }
    gatehouse_common::files::write_private(&to, &bytes)
        .with_context(|| format!("cannot write {}", to.display()))?;
    let size = bytes.len();
    let written = serde_json::json!({ "file": to.display().to_string(), "bytes": size });
    output::show(out, &written, || {
        say!(
            "backup written to {} ({size} bytes); the master key is not in it: keep it apart",
            to.display()
        );
    });
    Ok(())
}
