//! Stage 7: query limits and execution. The request gets fresh dataloaders over the store
//! stack and the caller's identity; `marquee_schema` then measures the document against the
//! query limits (refusing it before anything runs), executes it within the response budget and
//! completes it as the spec says. The result is serialised here, once, with its caching
//! decision, so the response cache stores exactly the bytes sent.

use async_graphql::Request;
use axum::body::Bytes;
use axum::http::StatusCode;
use marquee_schema::{Caller, ExecutionStarted, Loaders, SurrogateKey};

use super::{GraphqlState, MediaType, RequestErrors};
use crate::cache_policy::{self, Decision};
use crate::error::{HttpError, codes};

/// An executed operation, serialised, with its caching decision.
pub(super) struct Executed {
    /// A request error (parse, validation or limit): execution never started.
    pub(super) request_error: bool,
    pub(super) body: Bytes,
    pub(super) decision: Decision,
    pub(super) etag: Option<String>,
    /// When execution started.
    pub(super) as_of: std::time::Instant,
    /// The surrogate keys of what the response shows (`marquee_schema::Shown`).
    pub(super) shown: Vec<SurrogateKey>,
}

/// Executes `request` for `caller`, to be answered as `media`; only GETs (`is_get`) are
/// cacheable.
pub(super) async fn run(
    state: &GraphqlState,
    request: Request,
    caller: &Caller,
    media: MediaType,
    is_get: bool,
) -> Result<Executed, HttpError> {
    let loaders = Loaders::new(&state.store, &state.schema_config, Some(&state.loader_metrics), caller);
    let started = ExecutionStarted::default();
    let shown = loaders.shown().clone();
    let as_of = std::time::Instant::now();
    let response =
        state.schema.execute(request.data(loaders).data(caller.clone()).data(started.clone())).await;
    let request_error = !started.get();
    let decision = cache_policy::decide(is_get, response.is_err(), response.cache_control);
    let serializing = tracing::debug_span!("serialize").entered();
    let body = if request_error {
        serde_json::to_vec(&RequestErrors { errors: &response.errors, extensions: &response.extensions })
    } else {
        serde_json::to_vec(&response)
    };
    drop(serializing);
    let body = body.map_err(|e| {
        tracing::error!(error = %e, "serialising a GraphQL response");
        HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL_SERVER_ERROR, "internal error")
    })?;
    let etag = matches!(decision, Decision::Public { .. }).then(|| cache_policy::etag(media.as_str(), &body));
    Ok(Executed { request_error, body: Bytes::from(body), decision, etag, as_of, shown: shown.keys() })
}
