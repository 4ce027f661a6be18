//! The GraphQL request pipeline, after the HTTP stage has read the request and the
//! authentication and rate-limit stages (middleware) have let it through. One function per
//! method, each reading as the list of its stages:
//!
//! 5. persisted query (`crate::persisted`): which document runs;
//! 6. response cache (`crate::response_cache`, GET only): answer a public response again;
//! 7. query limits and execution (`execute`): `marquee_schema` measures the document
//!    against the limits, then runs it with this request's dataloaders over the store stack;
//! 8. cache headers (`respond`, `crate::cache_policy`): `Cache-Control`, `ETag`, 304s.
//!
//! (Stages 1-4, connections to rate limit, are the server's and the HTTP router's; the numbers
//! are the request path's, as in the crate docs and ARCHITECTURE.md.)

mod execute;
mod respond;

use std::sync::Arc;

use async_graphql::Request;
use async_graphql::parser::types::OperationType;
use async_graphql::{ServerError, Variables};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use marquee_schema::{Analyzer, Caller, LoaderMetrics, MarqueeSchema, SchemaConfig};
use marquee_store::Store;
use serde_json::Value;
use tracing::Instrument;

use crate::cache_policy::{self, CachePolicy, Decision};
use crate::error::{HttpError, codes};
use crate::persisted::{Document, DocumentRef, PersistedQueries, PersistedQueryError};
use crate::response_cache::{ResponseCache, ResponseKey, Stored};

/// What the pipeline needs, shared by every request.
#[derive(Clone)]
pub struct GraphqlState {
    /// The executable schema (immutable; per-request loaders are attached per request).
    pub schema: MarqueeSchema,
    /// The schema's parse cache: a document parsed here to learn its operation type is not
    /// parsed again when it runs.
    pub documents: Arc<Analyzer>,
    /// The store stack the loaders read through.
    pub store: Store,
    /// Resolver settings, also needed to build each request's loaders.
    pub schema_config: SchemaConfig,
    /// Where the loaders report batch sizes.
    pub loader_metrics: LoaderMetrics,
    /// APQ, manifest and safelist.
    pub persisted: Arc<PersistedQueries>,
    /// Whole public GET responses (`None`: disabled).
    pub response_cache: Option<Arc<ResponseCache>>,
    /// Staleness allowances for cacheable responses.
    pub cache_policy: CachePolicy,
}

/// The response media type, chosen from `Accept` by the HTTP stage.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum MediaType {
    /// `application/graphql-response+json`: request errors are 4xx.
    GraphqlResponseJson,
    /// `application/json`: every well-formed request is 200.
    Json,
}

impl MediaType {
    /// The `Content-Type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaType::GraphqlResponseJson => "application/graphql-response+json; charset=utf-8",
            MediaType::Json => "application/json; charset=utf-8",
        }
    }
}

/// A GraphQL request as a client sent it, whichever method carried it.
pub struct Incoming {
    /// The document text, if sent.
    pub query: Option<String>,
    /// The operation to run.
    pub operation_name: Option<String>,
    /// Variables (a JSON object, or null).
    pub variables: Option<Value>,
    /// Extensions (a JSON object, or null), where `persistedQuery` is.
    pub extensions: Option<Value>,
    /// A persisted document id (`id` or `documentId`).
    pub id: Option<String>,
}

/// The header tooling sends the introspection token in (honoured on POST only, whose responses
/// no cache keeps).
const INTROSPECTION_TOKEN: &str = "marquee-introspection-token";

/// `GET /graphql`: stages 5-8, with the response cache, refusing mutations.
pub(crate) async fn get(
    state: &GraphqlState,
    caller: &Caller,
    media: MediaType,
    incoming: Incoming,
    headers: &HeaderMap,
) -> Result<Response, HttpError> {
    let document = persisted_document(state, &incoming, media, None).await?;
    let directives = cache_policy::request_directives(headers);
    let cache = state.response_cache.as_deref().map(|cache| {
        let scope = if caller.user_id().is_some() { "user" } else { "public" };
        let key = ResponseKey {
            scope,
            media: media.as_str(),
            document_hash: &document.hash,
            operation_name: incoming.operation_name.as_deref(),
            variables: incoming.variables.as_ref(),
        }
        .render();
        (cache, key)
    });
    if let Some((cache, key)) = &cache {
        let span = tracing::debug_span!("response_cache", result = tracing::field::Empty);
        if directives.no_cache {
            cache.bypass();
            span.record("result", "bypass");
        } else if let Some(entry) = cache.get(key).instrument(span.clone()).await {
            span.record("result", "hit");
            return Ok(respond::from_cache(state.cache_policy, &entry, media, headers));
        } else {
            span.record("result", "miss");
        }
    }
    let request = build_request(&document, incoming);
    if is_mutation(&state.documents, &request) {
        return Err(HttpError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            codes::METHOD_NOT_ALLOWED,
            "mutations are not executed over GET; send them with POST",
        )
        .with_header(header::ALLOW, HeaderValue::from_static("POST")));
    }
    let executed =
        execute::run(state, request, caller, media, true).instrument(tracing::debug_span!("graphql")).await?;
    if let (Some((cache, key)), Decision::Public { max_age }, Some(etag), false) =
        (cache, executed.decision, &executed.etag, directives.no_store)
    {
        let stored = Stored {
            body: executed.body.clone(),
            etag: etag.clone(),
            max_age,
            as_of: executed.as_of,
            shown: executed.shown.clone(),
        };
        cache.put(key, stored).instrument(tracing::debug_span!("response_cache.put")).await;
    }
    Ok(respond::executed(state.cache_policy, executed, media, Some(headers)))
}

/// `POST /graphql`: stages 5, 7 and 8 (POST responses are never cached).
pub(crate) async fn post(
    state: &GraphqlState,
    caller: &Caller,
    media: MediaType,
    incoming: Incoming,
    headers: &HeaderMap,
) -> Result<Response, HttpError> {
    let document = persisted_document(state, &incoming, media, Some(headers)).await?;
    let request = build_request(&document, incoming);
    let executed = execute::run(state, request, caller, media, false)
        .instrument(tracing::debug_span!("graphql"))
        .await?;
    Ok(respond::executed(state.cache_policy, executed, media, None))
}

/// A persisted-query refusal: a request error, so 400 under the GraphQL response type and 200
/// under plain JSON (where stock Apollo clients look for `PERSISTED_QUERY_NOT_FOUND`).
fn persisted_error(e: PersistedQueryError, media: MediaType) -> HttpError {
    let code = match e {
        PersistedQueryError::NotFound => codes::PERSISTED_QUERY_NOT_FOUND,
        PersistedQueryError::NotInList => codes::PERSISTED_QUERY_NOT_IN_LIST,
        PersistedQueryError::HashMismatch => codes::PERSISTED_QUERY_HASH_MISMATCH,
        PersistedQueryError::BadRequest(message) => return HttpError::bad_request(message),
    };
    let status =
        if media == MediaType::GraphqlResponseJson { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    HttpError::new(status, code, e.to_string())
}

/// Stage 5: checks the request's shape and names the document to execute. `tooling_headers`
/// are a POST's headers, where the introspection token may be.
async fn persisted_document(
    state: &GraphqlState,
    incoming: &Incoming,
    media: MediaType,
    tooling_headers: Option<&HeaderMap>,
) -> Result<Document, HttpError> {
    if !matches!(&incoming.variables, None | Some(Value::Null | Value::Object(_))) {
        return Err(HttpError::bad_request("`variables` must be a JSON object"));
    }
    if !matches!(&incoming.extensions, None | Some(Value::Null | Value::Object(_))) {
        return Err(HttpError::bad_request("`extensions` must be a JSON object"));
    }
    let reference = DocumentRef {
        query: incoming.query.as_deref(),
        persisted: incoming.extensions.as_ref().and_then(|e| e.get("persistedQuery")),
        id: incoming.id.as_deref(),
        introspection_token: tooling_headers
            .and_then(|h| h.get(INTROSPECTION_TOKEN))
            .and_then(|v| v.to_str().ok()),
    };
    let span = tracing::debug_span!(
        "persisted_query",
        by = if reference.id.is_some() {
            "id"
        } else if reference.persisted.is_some() {
            "hash"
        } else {
            "text"
        }
    );
    state.persisted.resolve(&reference).instrument(span).await.map_err(|e| persisted_error(e, media))
}

/// The executable request for `document` with the client's variables and operation name.
fn build_request(document: &Document, incoming: Incoming) -> Request {
    let variables = match incoming.variables {
        Some(v @ Value::Object(_)) => Variables::from_json(v),
        _ => Variables::default(),
    };
    let mut request = Request::new(document.query.to_string()).variables(variables);
    if let Some(name) = incoming.operation_name {
        request = request.operation_name(name);
    }
    request
}

/// Whether the operation `request` selects is a mutation (an ambiguous choice counts as one).
/// Unparseable documents are not: they fail in execution with the parser's error.
fn is_mutation(documents: &Analyzer, request: &Request) -> bool {
    let Ok(parsed) = documents.parse(&request.query) else { return false };
    parsed.operation_type(request.operation_name.as_deref()) == Some(OperationType::Mutation)
}

/// The body of a request error: the GraphQL spec gives it no `data` entry.
#[derive(serde::Serialize)]
struct RequestErrors<'a> {
    errors: &'a [ServerError],
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    extensions: &'a std::collections::BTreeMap<String, async_graphql::Value>,
}
