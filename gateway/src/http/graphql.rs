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
//! This is the HTTP side only: methods, media types, bodies and query strings become an
//! [`Incoming`] request, which `crate::pipeline` takes through the remaining stages.

use std::sync::Arc;

use axum::Extension;
use axum::body::{Body, to_bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use marquee_schema::Caller;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{HttpError, codes};
use crate::pipeline::{self, GraphqlState, Incoming, MediaType};
use crate::state::{BodyLimit, Graphiql};

const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";
const JSON: &str = "application/json";

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

/// The media type [`media`] negotiated (negotiated here when the handler runs without it).
fn media_of(media: Option<Extension<MediaType>>, headers: &HeaderMap) -> Result<MediaType, HttpError> {
    media.map_or_else(|| negotiate(headers), |Extension(media)| Ok(media))
}

fn caller_of(caller: Option<Extension<Caller>>) -> Caller {
    caller.map_or(Caller::Anonymous, |Extension(c)| c)
}

/// `GET /graphql`.
pub(super) async fn get(
    State(state): State<Arc<GraphqlState>>,
    State(graphiql): State<Graphiql>,
    caller: Option<Extension<Caller>>,
    media: Option<Extension<MediaType>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let caller = caller_of(caller);
    let raw = raw.unwrap_or_default();
    if let Some(page) = graphiql.0.as_deref().filter(|_| raw.is_empty() && wants_html(&headers)) {
        return super::graphiql::respond(page);
    }
    let result = async {
        let media = media_of(media, &headers)?;
        let params: GetParams = serde_urlencoded::from_str(&raw)
            .map_err(|e| HttpError::bad_request(format!("the query string is malformed: {e}")))?;
        let incoming = Incoming::try_from(params)?;
        pipeline::get(&state, &caller, media, incoming, &headers).await
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /graphql`.
pub(super) async fn post(
    State(state): State<Arc<GraphqlState>>,
    State(BodyLimit(body_limit)): State<BodyLimit>,
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
        let bytes = to_bytes(body, body_limit).await.map_err(|e| {
            if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>()) {
                HttpError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    codes::PAYLOAD_TOO_LARGE,
                    format!("the request body is larger than {body_limit} bytes"),
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
        pipeline::post(&state, &caller, media, Incoming::from(body), &headers).await
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// Any other method.
/// `/graphql/read` only reads.
pub(super) async fn read_method_not_allowed() -> HttpError {
    HttpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        codes::METHOD_NOT_ALLOWED,
        "/graphql/read accepts GET only",
    )
    .with_header(header::ALLOW, HeaderValue::from_static("GET, HEAD"))
}

pub(super) async fn method_not_allowed() -> HttpError {
    HttpError::new(StatusCode::METHOD_NOT_ALLOWED, codes::METHOD_NOT_ALLOWED, "/graphql accepts GET and POST")
        .with_header(header::ALLOW, HeaderValue::from_static("GET, POST"))
}
