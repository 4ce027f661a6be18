//! `/graphql`, following the GraphQL-over-HTTP spec: `POST` with an `application/json` body,
//! `GET` with `query`/`variables`/`operationName` in the query string, responses as
//! `application/graphql-response+json` when the client accepts it (request errors are then
//! 4xx) or as `application/json` (always 200 for a well-formed request). Browsers asking for
//! HTML get GraphiQL.
//!
//! The media type is chosen once per request, by [`media`], a middleware around everything
//! else on the route: every response of `/graphql` — the handler's, and the refusals of the
//! authentication, rate-limit and timeout stages — is labelled with the type the client
//! negotiated and says `Vary: Accept, Authorization`, so a client that asked for the spec's
//! type can read `extensions.code` whatever went wrong. A request error (nothing executed)
//! has no `data` entry; an executed request always has one.
//!
//! Every request first passes the persisted-query stage (`crate::persisted`), which names the
//! document to run; public GETs are then answered from the response cache when they can be.

use async_graphql::parser::types::{DocumentOperations, OperationType};
use async_graphql::{Request, ServerError, Variables};
use axum::Extension;
use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use marquee_schema::{Caller, ExecutionStarted, Loaders};
use serde::Deserialize;
use serde_json::Value;

use crate::cache_policy::{self, Decision};
use crate::error::{HttpError, codes};
use crate::persisted::{Document, DocumentRef, PersistedQueryError};
use crate::response_cache::{CacheKey, Entry};
use crate::startup::AppState;

const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";
const JSON: &str = "application/json";

/// The response media type chosen from `Accept`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum MediaType {
    GraphqlResponseJson,
    Json,
}

impl MediaType {
    fn as_str(self) -> &'static str {
        match self {
            MediaType::GraphqlResponseJson => "application/graphql-response+json; charset=utf-8",
            MediaType::Json => "application/json; charset=utf-8",
        }
    }
}

/// Picks the response type: the spec's type if accepted, else JSON; 406 if neither is.
fn negotiate(headers: &HeaderMap) -> Result<MediaType, HttpError> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(MediaType::Json);
    };
    let types: Vec<&str> =
        accept.split(',').map(|part| part.split(';').next().unwrap_or("").trim()).collect();
    if types.iter().any(|t| t.eq_ignore_ascii_case(GRAPHQL_RESPONSE_JSON)) {
        Ok(MediaType::GraphqlResponseJson)
    } else if types
        .iter()
        .any(|t| t.eq_ignore_ascii_case(JSON) || *t == "*/*" || t.eq_ignore_ascii_case("application/*"))
    {
        Ok(MediaType::Json)
    } else {
        Err(HttpError::new(
            StatusCode::NOT_ACCEPTABLE,
            codes::NOT_ACCEPTABLE,
            format!("responses are {GRAPHQL_RESPONSE_JSON} or {JSON}; the Accept header allows neither"),
        ))
    }
}

/// Middleware for `/graphql`: negotiates the media type for the handler, and labels every JSON
/// response of the route with it, with `Vary`. (When `Accept` allows neither type, the handler
/// answers 406, after authentication and rate limits like any other request.)
pub(super) async fn media(mut request: axum::extract::Request, next: Next) -> Response {
    let media = negotiate(request.headers()).ok();
    if let Some(media) = media {
        request.extensions_mut().insert(media);
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case(JSON)));
    if let (true, Some(media)) = (json, media) {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media.as_str()));
    }
    // The body's media type follows `Accept`, and whether a request is answered at all (401)
    // follows `Authorization`: shared caches must key on both.
    headers.insert(header::VARY, HeaderValue::from_static("Accept, Authorization"));
    response
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.split(',').any(|t| t.trim().starts_with("text/html")))
}

/// A GraphQL request as sent over HTTP (POST body).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PostBody {
    query: Option<String>,
    operation_name: Option<String>,
    variables: Option<Value>,
    extensions: Option<Value>,
    id: Option<String>,
    document_id: Option<String>,
}

/// A GraphQL request as sent over HTTP (GET query string; variables and extensions are JSON).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetParams {
    query: Option<String>,
    operation_name: Option<String>,
    variables: Option<String>,
    extensions: Option<String>,
    id: Option<String>,
    document_id: Option<String>,
}

/// What a client sent, whichever method carried it.
struct Incoming {
    query: Option<String>,
    operation_name: Option<String>,
    variables: Option<Value>,
    extensions: Option<Value>,
    id: Option<String>,
}

impl From<PostBody> for Incoming {
    fn from(b: PostBody) -> Self {
        Incoming {
            query: b.query,
            operation_name: b.operation_name,
            variables: b.variables,
            extensions: b.extensions,
            id: b.id.or(b.document_id),
        }
    }
}

impl TryFrom<GetParams> for Incoming {
    type Error = HttpError;

    fn try_from(p: GetParams) -> Result<Self, HttpError> {
        let json = |name: &str, text: Option<String>| {
            text.map(|t| serde_json::from_str::<Value>(&t))
                .transpose()
                .map_err(|e| HttpError::bad_request(format!("`{name}` is not valid JSON: {e}")))
        };
        Ok(Incoming {
            variables: json("variables", p.variables)?,
            extensions: json("extensions", p.extensions)?,
            query: p.query,
            operation_name: p.operation_name,
            id: p.id.or(p.document_id),
        })
    }
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

/// The header tooling sends the introspection token in (honoured on POST only, whose responses
/// no cache keeps).
const INTROSPECTION_TOKEN: &str = "marquee-introspection-token";

/// Checks the request's shape and runs the persisted-query stage: the document to execute.
/// `tooling_headers` are a POST's headers, where the introspection token may be.
fn resolve_document(
    state: &AppState,
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
    state.persisted.resolve(&reference).map_err(|e| persisted_error(e, media))
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

/// Whether the operation `request` selects is a mutation. Unparseable documents are not: they
/// fail in execution with the parser's error.
fn is_mutation(request: &Request) -> bool {
    let Ok(document) = async_graphql::parser::parse_query(&request.query) else { return false };
    let ty = match (&document.operations, request.operation_name.as_deref()) {
        (DocumentOperations::Single(op), _) => Some(op.node.ty),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name).map(|op| op.node.ty),
        (DocumentOperations::Multiple(ops), None) => {
            // Ambiguous without a name: refuse if any operation could write.
            ops.values().any(|op| op.node.ty == OperationType::Mutation).then_some(OperationType::Mutation)
        }
    };
    ty == Some(OperationType::Mutation)
}

/// The media type [`media`] negotiated (negotiated here when the handler runs without it).
fn media_of(media: Option<Extension<MediaType>>, headers: &HeaderMap) -> Result<MediaType, HttpError> {
    media.map_or_else(|| negotiate(headers), |Extension(media)| Ok(media))
}

fn caller_of(caller: Option<Extension<Caller>>) -> Caller {
    caller.map_or(Caller::Anonymous, |Extension(c)| c)
}

/// `GET /graphql`.
pub(super) async fn get(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    media: Option<Extension<MediaType>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let caller = caller_of(caller);
    let raw = raw.unwrap_or_default();
    if let Some(page) = state.graphiql.as_deref().filter(|_| raw.is_empty() && wants_html(&headers)) {
        return super::graphiql::respond(page);
    }
    let result = async {
        let media = media_of(media, &headers)?;
        let params: GetParams = serde_urlencoded::from_str(&raw)
            .map_err(|e| HttpError::bad_request(format!("the query string is malformed: {e}")))?;
        let incoming = Incoming::try_from(params)?;
        let document = resolve_document(&state, &incoming, media, None)?;
        let directives = cache_policy::request_directives(&headers);
        let cached = state.response_cache.as_ref().map(|cache| {
            let scope = if caller.user_id().is_some() { "user" } else { "public" };
            let key = CacheKey {
                scope,
                media: media.as_str(),
                document_hash: &document.hash,
                operation_name: incoming.operation_name.as_deref(),
                variables: incoming.variables.as_ref(),
            }
            .render();
            if directives.no_cache {
                cache.bypass();
                (cache, key, None)
            } else {
                let found = cache.get(&key);
                (cache, key, found)
            }
        });
        if let Some((_, _, Some(entry))) = &cached {
            return Ok(from_cache(&state, entry, media, &headers));
        }
        let request = build_request(&document, incoming);
        if is_mutation(&request) {
            return Err(HttpError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                codes::METHOD_NOT_ALLOWED,
                "mutations are not executed over GET; send them with POST",
            )
            .with_header(header::ALLOW, HeaderValue::from_static("POST")));
        }
        let executed = execute(&state, request, &caller, media, true).await?;
        if let (Some((cache, key, None)), Decision::Public { max_age }, Some(etag), false) =
            (cached, executed.decision, &executed.etag, directives.no_store)
        {
            cache.put(key, executed.body.clone(), etag.clone(), max_age);
        }
        Ok(respond(&state, executed, media, Some(&headers)))
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /graphql`.
pub(super) async fn post(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    media: Option<Extension<MediaType>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let caller = caller_of(caller);
    let result = async {
        let media = media_of(media, &headers)?;
        let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let essence = content_type.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case(JSON) {
            return Err(HttpError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                codes::UNSUPPORTED_MEDIA_TYPE,
                "POST bodies must be application/json",
            ));
        }
        let bytes = to_bytes(body, state.body_limit).await.map_err(|e| {
            if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>()) {
                HttpError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    codes::PAYLOAD_TOO_LARGE,
                    format!("the request body is larger than {} bytes", state.body_limit),
                )
            } else {
                HttpError::bad_request(format!("the request body could not be read: {e}"))
            }
        })?;
        let body: PostBody = match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Array(_)) => {
                return Err(HttpError::bad_request(
                    "batched requests are not enabled; send one operation per request",
                ));
            }
            Ok(value) => serde_json::from_value(value)
                .map_err(|e| HttpError::bad_request(format!("the body is not a GraphQL request: {e}")))?,
            Err(e) => return Err(HttpError::bad_request(format!("the body is not valid JSON: {e}"))),
        };
        let incoming = Incoming::from(body);
        let document = resolve_document(&state, &incoming, media, Some(&headers))?;
        let request = build_request(&document, incoming);
        let executed = execute(&state, request, &caller, media, false).await?;
        Ok(respond(&state, executed, media, None))
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// Any other method.
pub(super) async fn method_not_allowed() -> HttpError {
    HttpError::new(StatusCode::METHOD_NOT_ALLOWED, codes::METHOD_NOT_ALLOWED, "/graphql accepts GET and POST")
        .with_header(header::ALLOW, HeaderValue::from_static("GET, POST"))
}

/// An executed operation, serialised, with its caching decision.
struct Executed {
    /// A request error (parse or validation failure): execution never started.
    request_error: bool,
    body: Bytes,
    decision: Decision,
    etag: Option<String>,
}

/// The body of a request error: the GraphQL spec gives it no `data` entry.
#[derive(serde::Serialize)]
struct RequestErrors<'a> {
    errors: &'a [ServerError],
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    extensions: &'a std::collections::BTreeMap<String, async_graphql::Value>,
}

/// Executes `request` for `caller`, to be answered as `media`; only GETs (`is_get`) are
/// cacheable.
async fn execute(
    state: &AppState,
    request: Request,
    caller: &Caller,
    media: MediaType,
    is_get: bool,
) -> Result<Executed, HttpError> {
    let loaders = Loaders::new(&state.store, &state.schema_config, Some(&state.metrics.loader), caller);
    let started = ExecutionStarted::default();
    let response =
        state.schema.execute(request.data(loaders).data(caller.clone()).data(started.clone())).await;
    let request_error = !started.get();
    let decision = cache_policy::decide(is_get, response.is_err(), response.cache_control);
    let body = if request_error {
        serde_json::to_vec(&RequestErrors { errors: &response.errors, extensions: &response.extensions })
    } else {
        serde_json::to_vec(&response)
    };
    let body = body.map_err(|e| {
        tracing::error!(error = %e, "serialising a GraphQL response");
        HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL_SERVER_ERROR, "internal error")
    })?;
    let etag = matches!(decision, Decision::Public { .. }).then(|| cache_policy::etag(media.as_str(), &body));
    Ok(Executed { request_error, body: Bytes::from(body), decision, etag })
}

/// The HTTP response for `executed`; `get_headers` are a GET's request headers (for 304).
fn respond(
    state: &AppState,
    executed: Executed,
    media: MediaType,
    get_headers: Option<&HeaderMap>,
) -> Response {
    let status = if media == MediaType::GraphqlResponseJson && executed.request_error {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let unchanged = matches!((&executed.etag, get_headers), (Some(tag), Some(headers)) if cache_policy::not_modified(headers, tag));
    let mut http = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (status, executed.body).into_response()
    };
    if !unchanged {
        http.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(media.as_str()));
    }
    cache_policy::apply(state.cache_policy, executed.decision, executed.etag.as_deref(), http.headers_mut());
    http
}

/// A response-cache hit, answered like the original (including 304) plus its `Age`.
fn from_cache(state: &AppState, entry: &Entry, media: MediaType, headers: &HeaderMap) -> Response {
    let unchanged = cache_policy::not_modified(headers, &entry.etag);
    let mut http = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut http = (StatusCode::OK, entry.body.clone()).into_response();
        http.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(media.as_str()));
        http
    };
    let decision = Decision::Public { max_age: entry.max_age };
    cache_policy::apply(state.cache_policy, decision, Some(&entry.etag), http.headers_mut());
    http.headers_mut().insert(header::AGE, HeaderValue::from(entry.stored_at.elapsed().as_secs()));
    http
}
