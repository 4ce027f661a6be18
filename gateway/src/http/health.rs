//! Liveness and readiness. `/healthz` says the process answers; `/readyz` says it should get
//! traffic: the store has answered lately (`crate::store::health`) and the gateway is not
//! draining. Load balancers and DNS health checks use `/readyz` to move traffic away before a
//! gateway stops; it answers at once, never waiting on the store.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::state::Readiness;

/// `GET /healthz`: 200 while the process runs.
pub(super) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 when the store has answered lately and the gateway is not draining,
/// else 503. Answers at once.
pub(super) async fn readyz(State(state): State<Readiness>) -> (StatusCode, Json<Value>) {
    if state.draining.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "draining" })));
    }
    match state.store_health.status() {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ready", "region": &*state.region }))),
        Err(error) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "store unavailable", "error": error })))
        }
    }
}
