//! `/graphql`, following the GraphQL-over-HTTP spec: `POST` with an `application/json` body,
//! `GET` with `query`/`variables`/`operationName` in the query string, responses as
//! `application/graphql-response+json` when the client accepts it (request errors are then
//! 400) or as `application/json` (always 200 for a well-formed request). Browsers asking for
//! HTML get GraphiQL.

use async_graphql::http::GraphiQLSource;
use async_graphql::parser::types::{DocumentOperations, OperationType};
use async_graphql::{Request, Variables};
use axum::Extension;
use axum::body::{Body, to_bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use marquee_schema::{Caller, Loaders};
use serde::Deserialize;

use crate::cache_policy::{self, Decision};
use crate::error::{HttpError, codes};
use crate::startup::AppState;

const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";
const JSON: &str = "application/json";

/// The response media type chosen from `Accept`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum MediaType {
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
    variables: Option<serde_json::Value>,
}

/// A GraphQL request as sent over HTTP (GET query string; variables are JSON text).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetParams {
    query: Option<String>,
    operation_name: Option<String>,
    variables: Option<String>,
}

fn build_request(
    query: Option<String>,
    operation_name: Option<String>,
    variables: Option<serde_json::Value>,
) -> Result<Request, HttpError> {
    let query = query
        .filter(|q| !q.trim().is_empty())
        .ok_or_else(|| HttpError::bad_request("the request has no `query`"))?;
    let variables = match variables {
        None | Some(serde_json::Value::Null) => Variables::default(),
        Some(v @ serde_json::Value::Object(_)) => Variables::from_json(v),
        Some(_) => return Err(HttpError::bad_request("`variables` must be a JSON object")),
    };
    let mut request = Request::new(query).variables(variables);
    if let Some(name) = operation_name {
        request = request.operation_name(name);
    }
    Ok(request)
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

/// `GET /graphql`.
pub(super) async fn get(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let caller = caller.map_or(Caller::Anonymous, |Extension(c)| c);
    let raw = raw.unwrap_or_default();
    if raw.is_empty() && state.graphiql && wants_html(&headers) {
        return Html(GraphiQLSource::build().endpoint("/graphql").title("Marquee").finish()).into_response();
    }
    let result = async {
        let media = negotiate(&headers)?;
        let params: GetParams = serde_urlencoded::from_str(&raw)
            .map_err(|e| HttpError::bad_request(format!("the query string is malformed: {e}")))?;
        let variables = params
            .variables
            .map(|v| serde_json::from_str(&v))
            .transpose()
            .map_err(|e| HttpError::bad_request(format!("`variables` is not valid JSON: {e}")))?;
        let request = build_request(params.query, params.operation_name, variables)?;
        if is_mutation(&request) {
            return Err(HttpError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                codes::METHOD_NOT_ALLOWED,
                "mutations are not executed over GET; send them with POST",
            )
            .with_header(header::ALLOW, HeaderValue::from_static("POST")));
        }
        Ok::<_, HttpError>(execute(&state, request, &caller, media, Some(&headers)).await)
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /graphql`.
pub(super) async fn post(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let caller = caller.map_or(Caller::Anonymous, |Extension(c)| c);
    let result = async {
        let media = negotiate(&headers)?;
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
        let body: PostBody = match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(serde_json::Value::Array(_)) => {
                return Err(HttpError::bad_request(
                    "batched requests are not enabled; send one operation per request",
                ));
            }
            Ok(value) => serde_json::from_value(value)
                .map_err(|e| HttpError::bad_request(format!("the body is not a GraphQL request: {e}")))?,
            Err(e) => return Err(HttpError::bad_request(format!("the body is not valid JSON: {e}"))),
        };
        let request = build_request(body.query, body.operation_name, body.variables)?;
        Ok(execute(&state, request, &caller, media, None).await)
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// Any other method.
pub(super) async fn method_not_allowed() -> HttpError {
    HttpError::new(StatusCode::METHOD_NOT_ALLOWED, codes::METHOD_NOT_ALLOWED, "/graphql accepts GET and POST")
        .with_header(header::ALLOW, HeaderValue::from_static("GET, POST"))
}

/// Executes `request`; `get_headers` are the request headers of a GET (only GETs are cacheable).
async fn execute(
    state: &AppState,
    request: Request,
    caller: &Caller,
    media: MediaType,
    get_headers: Option<&HeaderMap>,
) -> Response {
    let loaders = Loaders::new(&state.store, &state.schema_config, Some(&state.metrics.loader), caller);
    let response = state.schema.execute(request.data(loaders).data(caller.clone())).await;
    // A request error (parse or validation failure) means execution never started: no data.
    let request_error = response.data == async_graphql::Value::Null && response.is_err();
    let status = if media == MediaType::GraphqlResponseJson && request_error {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let decision = cache_policy::decide(get_headers.is_some(), response.is_err(), response.cache_control);
    let body = match serde_json::to_vec(&response) {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(error = %e, "serialising a GraphQL response");
            return HttpError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                codes::INTERNAL_SERVER_ERROR,
                "internal error",
            )
            .into_response();
        }
    };
    let etag = matches!(decision, Decision::Public { .. }).then(|| cache_policy::etag(&body));
    let unchanged = matches!((&etag, get_headers), (Some(tag), Some(headers)) if cache_policy::not_modified(headers, tag));
    let mut http =
        if unchanged { StatusCode::NOT_MODIFIED.into_response() } else { (status, body).into_response() };
    if !unchanged {
        http.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(media.as_str()));
    }
    cache_policy::apply(state.cache_policy, decision, etag.as_deref(), http.headers_mut());
    http
}
