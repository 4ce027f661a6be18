//! The one place errors become HTTP responses. Every error body is GraphQL-shaped
//! (`{"errors":[{"message":…,"extensions":{"code":…}}]}`) so clients parse one format whatever
//! went wrong, and every status is the one the GraphQL-over-HTTP spec and HTTP itself expect.
//! That includes responses no handler wrote: hyper's own refusals of malformed or oversized
//! request heads (rewritten by the connection stage with [`protocol_error_response`]) and the
//! router's bodiless ones ([`graphql_shaped`]).

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Stable codes for errors raised before GraphQL execution.
pub mod codes {
    /// The body is not valid JSON, or lacks `query`.
    pub const BAD_REQUEST: &str = "BAD_REQUEST";
    /// The body is larger than `http.body_limit_bytes`.
    pub const PAYLOAD_TOO_LARGE: &str = "PAYLOAD_TOO_LARGE";
    /// The request's content type is not `application/json`.
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "UNSUPPORTED_MEDIA_TYPE";
    /// The `Accept` header allows no type this server produces.
    pub const NOT_ACCEPTABLE: &str = "NOT_ACCEPTABLE";
    /// The method is not allowed on this route.
    pub const METHOD_NOT_ALLOWED: &str = "METHOD_NOT_ALLOWED";
    /// No such route.
    pub const NOT_FOUND: &str = "NOT_FOUND";
    /// The bearer token is missing its scheme, malformed, expired, or does not verify.
    pub const INVALID_TOKEN: &str = "INVALID_TOKEN";
    /// The caller is over its request rate; see `Retry-After`.
    pub const RATE_LIMITED: &str = "RATE_LIMITED";
    /// The request took longer than `http.request_timeout_ms`.
    pub const TIMEOUT: &str = "TIMEOUT";
    /// A persisted query's hash is unknown here; send the full query with the hash.
    pub const PERSISTED_QUERY_NOT_FOUND: &str = "PERSISTED_QUERY_NOT_FOUND";
    /// Only the operations of the persisted-query manifest may run on this gateway.
    pub const PERSISTED_QUERY_NOT_IN_LIST: &str = "PERSISTED_QUERY_NOT_IN_LIST";
    /// The query text does not hash to the `sha256Hash` sent with it.
    pub const PERSISTED_QUERY_HASH_MISMATCH: &str = "PERSISTED_QUERY_HASH_MISMATCH";
    /// Something failed that is not the client's fault.
    pub const INTERNAL_SERVER_ERROR: &str = "INTERNAL_SERVER_ERROR";
    /// The request line and headers are larger than `http.max_header_bytes` (or over 100 headers).
    pub const REQUEST_HEADER_FIELDS_TOO_LARGE: &str = "REQUEST_HEADER_FIELDS_TOO_LARGE";
    /// The request URI is longer than HTTP allows here; send the query with POST.
    pub const URI_TOO_LONG: &str = "URI_TOO_LONG";
}

/// An error answered without executing GraphQL.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct HttpError {
    status: StatusCode,
    code: &'static str,
    message: String,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl HttpError {
    /// An error with `status`, stable `code` and a message saying what to do.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> HttpError {
        HttpError { status, code, message: message.into(), headers: Vec::new() }
    }

    /// Adds a response header (`Retry-After`, `WWW-Authenticate`, `Allow`...).
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> HttpError {
        self.headers.push((name, value));
        self
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::BAD_REQUEST, codes::BAD_REQUEST, message)
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

/// A GraphQL-shaped error body.
fn body(code: &str, message: &str) -> serde_json::Value {
    json!({ "errors": [{ "message": message, "extensions": { "code": code } }] })
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(body(self.code, &self.message))).into_response();
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// The whole HTTP/1.1 response for a request head hyper refused before any handler ran:
/// hyper answers those with a bare status line (`status`: 400 malformed, 414 URI too long, 431
/// head too large) and closes the connection; the connection stage sends this instead.
pub fn protocol_error_response(status: u16, max_header_bytes: usize) -> Vec<u8> {
    let (status, code, message) = match status {
        431 => (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            codes::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("the request line and headers must fit in {max_header_bytes} bytes and 100 headers"),
        ),
        414 => (
            StatusCode::URI_TOO_LONG,
            codes::URI_TOO_LONG,
            "the request URI is too long; send large queries with POST".to_owned(),
        ),
        _ => (StatusCode::BAD_REQUEST, codes::BAD_REQUEST, "the request is not valid HTTP/1.1".to_owned()),
    };
    let body = body(code, &message).to_string();
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes()
}

/// Middleware: an error response without a body (the router's own 405 for a method a route
/// does not take, for instance) gets a GraphQL-shaped one, keeping its status and headers.
pub async fn graphql_shaped(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response.headers().contains_key(header::CONTENT_TYPE)
    {
        return response;
    }
    let code = match status {
        StatusCode::METHOD_NOT_ALLOWED => codes::METHOD_NOT_ALLOWED,
        StatusCode::NOT_FOUND => codes::NOT_FOUND,
        StatusCode::PAYLOAD_TOO_LARGE => codes::PAYLOAD_TOO_LARGE,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => codes::UNSUPPORTED_MEDIA_TYPE,
        s if s.is_server_error() => codes::INTERNAL_SERVER_ERROR,
        _ => codes::BAD_REQUEST,
    };
    let message = format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or("error"));
    let (mut parts, _) = response.into_parts();
    let mut fresh = HttpError::new(status, code, message).into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in fresh.headers_mut().drain() {
        if let Some(name) = name {
            parts.headers.insert(name, value);
        }
    }
    Response::from_parts(parts, fresh.into_body())
}

/// Fallback for unknown routes.
pub async fn not_found() -> HttpError {
    HttpError::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, "no such route; GraphQL is served at /graphql")
}

/// Turns a panic caught by the panic layer into a 500 (the panic itself is logged).
pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("request handler panicked");
    HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL_SERVER_ERROR, "internal error")
        .into_response()
}

/// Turns middleware failures (the request timeout) into responses.
pub async fn middleware_error(err: tower::BoxError) -> HttpError {
    if err.is::<tower::timeout::error::Elapsed>() {
        HttpError::new(
            StatusCode::GATEWAY_TIMEOUT,
            codes::TIMEOUT,
            "the request took too long and was cancelled",
        )
    } else {
        tracing::error!(error = %err, "middleware failed");
        HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL_SERVER_ERROR, "internal error")
    }
}
