//! Liveness and readiness. `/healthz` says the process answers; `/readyz` says it should get
//! traffic: the store answers and the gateway is not draining. Load balancers and DNS health
//! checks use `/readyz` to move traffic away before a gateway stops.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::state::Readiness;

/// How long readiness waits for the store.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /healthz`: 200 while the process runs.
pub(super) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 when the store answers and the gateway is not draining, else 503.
pub(super) async fn readyz(State(state): State<Readiness>) -> (StatusCode, Json<Value>) {
    if state.draining.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "draining" })));
    }
    match tokio::time::timeout(PING_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, Json(json!({ "status": "ready", "region": &*state.region }))),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "store unavailable", "error": e.to_string() })),
        ),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "store timed out" }))),
    }
}
