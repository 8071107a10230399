//! Health, for load balancers, systemd checks and monitors: the standard gRPC health service
//! (`grpc.health.v1`) on the agent port, the admin port and the admin socket, and `/healthz`
//! on the HTTP port. Both say the controller is healthy only while its store takes a write, so
//! a store that still reads but cannot write (full, read-only after a failover) shows.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_proto::v1::admin_service_server::AdminServiceServer;
use gatehouse_proto::v1::agent_service_server::AgentServiceServer;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::{info, warn};

use crate::Shared;

/// How long the store may take to take the probe's write.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the gRPC health status is brought up to date.
const PROBE_EVERY: Duration = Duration::from_secs(2);

/// Why the store does not take writes.
#[derive(Debug, thiserror::Error)]
pub enum Unwritable {
    #[error("the store is not writable: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("the store is not writable: no answer within {} s", .0.as_secs())]
    Timeout(Duration),
}

/// Whether the store takes a write now; the reason when it does not.
pub async fn store_writable(shared: &Shared) -> Result<(), Unwritable> {
    match tokio::time::timeout(PROBE_TIMEOUT, shared.store.probe_write(shared.now())).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(Unwritable::Timeout(PROBE_TIMEOUT)),
    }
}

/// Keeps `reporter` up to date until `shutdown`: the whole server (`""`) and each gatehouse
/// service are SERVING or NOT_SERVING together.
pub async fn run(shared: Arc<Shared>, reporter: HealthReporter, shutdown: CancellationToken) {
    let names = [
        "",
        <AgentServiceServer<crate::agent_api::AgentApi> as NamedService>::NAME,
        <AdminServiceServer<crate::api::AdminApi> as NamedService>::NAME,
    ];
    let mut last = None;
    loop {
        let result = store_writable(&shared).await;
        let status = if result.is_ok() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        if last != Some(status) {
            match &result {
                Ok(()) if last.is_some() => info!("the store takes writes again: SERVING"),
                Ok(()) => {}
                Err(e) => warn!(error = %e, "NOT_SERVING"),
            }
            for name in names {
                reporter.set_service_status(name, status).await;
            }
            last = Some(status);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PROBE_EVERY) => {}
        }
    }
}
