//! The store's typed errors. Driver errors are wrapped, never leaked, so callers match on
//! what happened rather than on which backend it happened in.

/// Errors from any [`crate::Store`] backend, the seeder or the importer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A client-supplied id is not of the expected form.
    #[error("`{value}` is not a valid {kind}; ids look like tt0000001 (movies) or nm0000001 (people)")]
    InvalidId {
        /// Which id type was expected.
        kind: &'static str,
        /// The rejected value (truncated).
        value: String,
    },
    /// A query argument is out of range or malformed.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A write names something that does not exist (e.g. rating an unknown movie).
    #[error("there is no {kind} {id}")]
    NotFound {
        /// What was looked for.
        kind: &'static str,
        /// Its id.
        id: String,
    },
    /// A change was derived from a record another writer has changed since (see
    /// [`crate::writes::Base`]): read it again and derive the change anew.
    #[error("{0} was changed by another writer first; read it again and retry")]
    Conflict(String),
    /// The store was closed (the gateway is shutting down).
    #[error("the store is closed; the gateway is shutting down")]
    Closed,
    /// The store holds no catalog yet.
    #[error("no catalog in {0}; run `gateway seed` or `gateway import imdb` first")]
    NoCatalog(String),
    /// Stored bytes did not decode: the data was written by an incompatible version.
    #[error(
        "stored {what} could not be decoded ({detail}); it was written by an incompatible Marquee version: re-seed or re-import the catalog"
    )]
    Corrupt {
        /// Which record.
        what: &'static str,
        /// Decoder message.
        detail: String,
    },
    /// The backend could not answer now (unreachable, timed out, too few replicas): the same
    /// call may succeed when retried, here or in another region.
    #[error("storage backend unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The backend failed in a way a retry will not fix (disk, driver, a backend-specific
    /// condition such as a data directory held by another process).
    #[error("storage backend error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A file could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    /// Wraps a transient backend error (see [`StoreError::Unavailable`]).
    pub fn unavailable(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Unavailable(Box::new(err))
    }

    /// Wraps a backend error.
    pub fn backend(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Backend(Box::new(err))
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StoreError::Io { context: context.into(), source }
    }

    /// Whether the caller sent something wrong (as opposed to the store failing).
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            StoreError::InvalidId { .. } | StoreError::InvalidInput(_) | StoreError::NotFound { .. }
        )
    }

    /// Whether the same call may succeed later (the backend is unreachable or shutting down):
    /// the API answers `SERVICE_UNAVAILABLE` rather than an internal error.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Closed)
    }

    /// The same error for another caller that waited on the same call (a single-flight
    /// read): the same kind, so it maps to the same API error, with the same message.
    pub fn echo(&self) -> StoreError {
        match self {
            StoreError::InvalidId { kind, value } => StoreError::InvalidId { kind, value: value.clone() },
            StoreError::InvalidInput(message) => StoreError::InvalidInput(message.clone()),
            StoreError::NotFound { kind, id } => StoreError::NotFound { kind, id: id.clone() },
            StoreError::Conflict(id) => StoreError::Conflict(id.clone()),
            StoreError::Closed => StoreError::Closed,
            StoreError::NoCatalog(location) => StoreError::NoCatalog(location.clone()),
            StoreError::Corrupt { what, detail } => StoreError::Corrupt { what, detail: detail.clone() },
            StoreError::Unavailable(source) => StoreError::Unavailable(source.to_string().into()),
            StoreError::Backend(source) => StoreError::Backend(source.to_string().into()),
            StoreError::Io { context, source } => StoreError::Io {
                context: context.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StoreError;

    #[test]
    fn an_echo_keeps_the_kind_and_the_message() {
        let errors = [
            StoreError::InvalidInput("limit".into()),
            StoreError::Closed,
            StoreError::unavailable(std::io::Error::other("timed out")),
            StoreError::backend(std::io::Error::other("refused")),
            StoreError::io("reading", std::io::Error::new(std::io::ErrorKind::NotFound, "gone")),
        ];
        for error in errors {
            let echo = error.echo();
            assert_eq!(echo.to_string(), error.to_string());
            assert_eq!(
                (echo.is_retryable(), echo.is_client_error()),
                (error.is_retryable(), error.is_client_error())
            );
            assert_eq!(std::mem::discriminant(&echo), std::mem::discriminant(&error));
        }
    }
}
