//! Each host's metrics over time: a sample of every report at most every `history_interval`,
//! kept for `history_retention`, for the status page's charts and the disk-fill prediction.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_proto::v1::{FilesystemUsage, HostMetrics};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::Shared;
use crate::store::{SampleRow, StoreError};

/// The filesystem with the smallest free share.
pub fn fullest(m: &HostMetrics) -> Option<&FilesystemUsage> {
    m.filesystems
        .iter()
        .filter(|f| f.total_bytes > 0)
        .min_by(|a, b| {
            let share = |f: &FilesystemUsage| f.available_bytes as f64 / f.total_bytes as f64;
            share(a).total_cmp(&share(b))
        })
}

/// Keeps a sample of `m` when the last one kept (`last`) is old enough.
pub async fn record(
    shared: &Shared,
    agent: &str,
    m: &HostMetrics,
    at: i64,
    last: &mut i64,
) -> Result<(), StoreError> {
    if at - *last < shared.config().history_interval.as_secs() as i64 {
        return Ok(());
    }
    let disk = fullest(m);
    shared
        .store
        .sample_insert(&SampleRow {
            agent_id: agent.to_owned(),
            at,
            cpu_percent: f64::from(m.cpu_percent),
            memory_used: m.memory_used_bytes,
            memory_total: m.memory_total_bytes,
            disk_mount: disk.map(|d| d.mount_point.clone()).unwrap_or_default(),
            disk_free: disk.map_or(0, |d| d.available_bytes),
            disk_total: disk.map_or(0, |d| d.total_bytes),
        })
        .await?;
    *last = at;
    Ok(())
}

/// How often old samples, sign-ins and silences are removed.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Ended silences stay listed this long.
const KEEP_SILENCES: i64 = 7 * 86_400;

/// Removes what is past its retention, until `shutdown`.
pub async fn prune(shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let now = shared.now();
        let retention = shared.config().history_retention.as_secs() as i64;
        let store = &shared.store;
        let results = [
            store.samples_prune(now - retention).await.map(|_| ()),
            store.apply_history_prune(now - retention).await,
            store.ui_sessions_prune(now).await,
            store.silences_prune(now - KEEP_SILENCES).await,
        ];
        for e in results.into_iter().filter_map(|r| r.err()) {
            warn!("cannot prune old history: {e}");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
        }
    }
}
