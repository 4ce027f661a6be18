//! Liveness and readiness. `/healthz` says the process answers; `/readyz` says it should get
//! traffic: the store has answered lately (`crate::store::health`) and the gateway is not
//! draining. Load balancers and DNS health checks use `/readyz` to move traffic away before a
//! gateway stops; it answers at once, never waiting on the store.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::state::{NotReady, Readiness};

/// `GET /healthz`: 200 while the process runs.
pub(super) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 when the store has answered lately and the gateway is not draining,
/// else 503. Answers at once.
pub(super) async fn readyz(State(state): State<Readiness>) -> (StatusCode, Json<Value>) {
    match state.ready() {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ready", "region": &*state.region }))),
        Err(NotReady::Draining) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "draining" }))),
        Err(NotReady::Store(error)) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "store unavailable", "error": error })))
        }
    }
}
