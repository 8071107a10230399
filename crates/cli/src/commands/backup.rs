//! `gatehousectl backup`: a consistent backup of the controller's store, over the admin API.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use gatehouse_proto::v1::CreateBackupRequest;

use crate::Output;
use crate::client::{Client, explain};
use crate::output::{self, say};

/// Receives the backup and writes it to `to` whole (a temporary file beside it, renamed), 0600.
pub async fn run(client: &mut Client, to: PathBuf, out: Output) -> anyhow::Result<()> {
    let dir = match to.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut file = tempfile::NamedTempFile::new_in(&dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    file.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))?;
    let mut chunks = client
        .create_backup(CreateBackupRequest {})
        .await
        .map_err(explain)?
        .into_inner();
    let mut bytes = 0u64;
    while let Some(chunk) = chunks.message().await.map_err(explain)? {
        file.write_all(&chunk.data)?;
        bytes += chunk.data.len() as u64;
    }
    file.as_file().sync_all()?;
    file.persist(&to)
        .with_context(|| format!("cannot write {}", to.display()))?;
    sync_dir(&dir)?;
    let written = serde_json::json!({ "file": to.display().to_string(), "bytes": bytes });
    output::show(out, &written, || {
        say!(
            "backup written to {} ({bytes} bytes); the master key is not in it: keep it apart",
            to.display()
        );
    });
    Ok(())
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}
