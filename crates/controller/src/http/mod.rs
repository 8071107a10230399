//! The controller's plain HTTP port (7480): `/healthz` for load balancers and systemd checks,
//! `/metrics` for Prometheus, `POST /v1/allowlist/checkin` for devices, and the status page
//! under `/ui/`.

mod checkin;
mod metrics;
pub mod ui;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};

use crate::Shared;
pub use metrics::render;

/// The routes. Served with the peer's address (`ConnectInfo<SocketAddr>`).
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::metrics))
        .route(
            "/v1/allowlist/checkin",
            post(checkin::checkin).layer(DefaultBodyLimit::max(checkin::BODY_LIMIT)),
        )
        .merge(ui::router())
        .with_state(shared)
}

/// The service to serve: the router with each connection's peer address.
pub fn service(
    shared: Arc<Shared>,
) -> axum::extract::connect_info::IntoMakeServiceWithConnectInfo<Router, SocketAddr> {
    router(shared).into_make_service_with_connect_info::<SocketAddr>()
}

/// 200 when the store takes a write, 503 (with the reason) when it does not: a store that
/// still reads but cannot write is an outage too.
async fn healthz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    match crate::health::store_writable(&shared).await {
        Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    }
}
