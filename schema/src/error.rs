//! Resolver errors and their stable GraphQL codes (`extensions.code`). Clients branch on the
//! code, never on the message; messages say what to do.

use std::sync::Arc;

use async_graphql::ErrorExtensions;
use marquee_store::StoreError;

/// Stable `extensions.code` values.
pub mod codes {
    /// An argument is invalid (bad id, out-of-range `first`, unknown genre...).
    pub const BAD_USER_INPUT: &str = "BAD_USER_INPUT";
    /// The field or mutation needs a signed-in user; send a user token.
    pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
    /// The caller is signed in but may not do this (an editor's mutation without the role).
    pub const FORBIDDEN: &str = "FORBIDDEN";
    /// A mutation names something that does not exist (e.g. an unknown movie).
    pub const NOT_FOUND: &str = "NOT_FOUND";
    /// An editor's change met another editor's, applied first; read the record and retry.
    pub const CONFLICT: &str = "CONFLICT";
    /// A cursor was not produced by this API for this field.
    pub const INVALID_CURSOR: &str = "INVALID_CURSOR";
    /// The gateway is shutting down or its store is unreachable; retry elsewhere.
    pub const SERVICE_UNAVAILABLE: &str = "SERVICE_UNAVAILABLE";
    /// Anything else; details are in the gateway's logs, not the response.
    pub const INTERNAL_SERVER_ERROR: &str = "INTERNAL_SERVER_ERROR";
}

/// An error a resolver returns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The client sent something invalid.
    #[error("{0}")]
    BadUserInput(String),
    /// The caller is not signed in.
    #[error("{0} needs a signed-in user; send `Authorization: Bearer <user token>`")]
    Unauthenticated(&'static str),
    /// The caller is signed in without the role this needs.
    #[error("{0} needs an editor: a token whose `role` claim is `editor`")]
    Forbidden(&'static str),
    /// The cursor does not decode or belongs to another field.
    #[error("`after` is not a cursor returned by this field; start again without it")]
    InvalidCursor,
    /// The store failed (shared: one failed batch fails every field waiting on it).
    #[error(transparent)]
    Store(Arc<StoreError>),
}

impl ApiError {
    /// The stable code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadUserInput(_) => codes::BAD_USER_INPUT,
            ApiError::InvalidCursor => codes::INVALID_CURSOR,
            ApiError::Unauthenticated(_) => codes::UNAUTHENTICATED,
            ApiError::Forbidden(_) => codes::FORBIDDEN,
            ApiError::Store(e) if matches!(**e, StoreError::NotFound { .. }) => codes::NOT_FOUND,
            ApiError::Store(e) if matches!(**e, StoreError::Conflict(_)) => codes::CONFLICT,
            ApiError::Store(e) if e.is_client_error() => codes::BAD_USER_INPUT,
            ApiError::Store(e) if e.is_retryable() => codes::SERVICE_UNAVAILABLE,
            ApiError::Store(_) => codes::INTERNAL_SERVER_ERROR,
        }
    }
}

impl ErrorExtensions for ApiError {
    fn extend(&self) -> async_graphql::Error {
        let code = self.code();
        let message = if code == codes::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "resolver failed");
            "internal error; the gateway logged the details".to_owned()
        } else {
            self.to_string()
        };
        async_graphql::Error::new(message).extend_with(|_, e| e.set("code", code))
    }
}

/// Runs a resolver body and turns its [`ApiError`] into a GraphQL error carrying its code.
/// (async-graphql converts any `Display` error implicitly, which would drop the code.)
pub(crate) async fn resolve<T>(body: impl Future<Output = Result<T, ApiError>>) -> async_graphql::Result<T> {
    body.await.map_err(|e| e.extend())
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Store(Arc::new(e))
    }
}

impl From<Arc<StoreError>> for ApiError {
    fn from(e: Arc<StoreError>) -> Self {
        ApiError::Store(e)
    }
}
