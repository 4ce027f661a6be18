//! `GET /metrics`: Prometheus text exposition of the gateway's registry.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::state::Readiness;
use crate::telemetry::Metrics;

/// The registry, with `gateway_ready` set to what `/readyz` would answer now.
pub(super) async fn metrics(
    State(metrics): State<Arc<Metrics>>,
    State(readiness): State<Readiness>,
) -> impl IntoResponse {
    metrics.ready.set(i64::from(readiness.ready().is_ok()));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], metrics.render())
}
