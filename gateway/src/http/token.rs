//! Token endpoints: `POST /auth/anonymous` issues an anonymous token so a client without an
//! account gets its own rate-limit bucket (within its address's: the token records the address
//! it was issued to, and its requests are charged there too), and `GET /.well-known/jwks.json`
//! publishes the gateway's public keys so anything downstream can verify the tokens it issues.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::auth::Authenticator;
use crate::error::{HttpError, codes};

/// `POST /auth/anonymous`.
pub(super) async fn anonymous(State(auth): State<Arc<Authenticator>>, request: Request) -> Response {
    match auth.issue_anonymous(&crate::client_addr::of(&request)) {
        Ok(token) => {
            let mut response = (StatusCode::OK, Json(token)).into_response();
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "issuing an anonymous token");
            HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL_SERVER_ERROR, "internal error")
                .into_response()
        }
    }
}

/// `GET /.well-known/jwks.json`.
pub(super) async fn jwks(State(auth): State<Arc<Authenticator>>) -> Response {
    let mut response = Json(auth.jwks()).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    response
}

/// Any method but POST on `/auth/anonymous`.
pub(super) async fn anonymous_method_not_allowed() -> HttpError {
    HttpError::new(StatusCode::METHOD_NOT_ALLOWED, codes::METHOD_NOT_ALLOWED, "/auth/anonymous accepts POST")
        .with_header(header::ALLOW, HeaderValue::from_static("POST"))
}
