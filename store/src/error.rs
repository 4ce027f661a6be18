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
    /// The store was closed (the gateway is shutting down).
    #[error("the store is closed; the gateway is shutting down")]
    Closed,
    /// The data directory holds no catalog yet.
    #[error("no catalog at {0}; run `gateway seed` or `gateway import imdb` first")]
    NoCatalog(String),
    /// The data directory is already open in another process.
    #[error("the data directory {0} is in use by another process; stop it or choose another --data-dir")]
    Locked(String),
    /// Stored bytes did not decode: the data was written by an incompatible version.
    #[error(
        "stored {what} could not be decoded ({detail}); the data directory was written by an incompatible Marquee version: re-seed or re-import it"
    )]
    Corrupt {
        /// Which record.
        what: &'static str,
        /// Decoder message.
        detail: String,
    },
    /// The backend failed (disk, driver, connection).
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
}
