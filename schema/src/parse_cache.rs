//! Parsed documents, kept across requests. Parsing is a sizeable share of a small query's CPU
//! (the parser is a PEG grammar), and a real workload sends the same few documents over and
//! over — persisted queries by construction. Only what depends on the text alone is shared:
//! the AST, and which of its operations passed async-graphql's validation (`validated`). The
//! analysis still runs on every request, because it depends on the variables. Bounded in bytes
//! of query text; failed parses are never kept.

use std::ops::Deref;
use std::sync::{Arc, Mutex};

use async_graphql::ServerError;
use async_graphql::ValidationResult;
use async_graphql::parser::types::ExecutableDocument;

/// Operations of one document remembered as validated. A document names its operations, so a
/// client cannot grow this past the operations it holds; the bound is against a document of
/// thousands of operations, each asked for once.
const VALIDATED_OPERATIONS: usize = 16;

/// A parsed document and what is known of it.
pub struct Parsed {
    document: ExecutableDocument,
    /// Operations (by the request's `operationName`) that passed validation, with its result.
    validated: Mutex<Vec<(Option<Box<str>>, ValidationResult)>>,
}

impl Parsed {
    fn new(document: ExecutableDocument) -> Parsed {
        Parsed { document, validated: Mutex::new(Vec::new()) }
    }

    /// The AST.
    pub fn document(&self) -> &ExecutableDocument {
        &self.document
    }

    /// What validating the document for `operation_name` gave, if it passed before.
    pub(crate) fn validated(&self, operation_name: Option<&str>) -> Option<ValidationResult> {
        let validated = self.validated.lock().ok()?;
        validated.iter().find(|(name, _)| name.as_deref() == operation_name).map(|(_, result)| *result)
    }

    /// Records that the document passed validation for `operation_name`.
    pub(crate) fn set_validated(&self, operation_name: Option<&str>, result: ValidationResult) {
        let Ok(mut validated) = self.validated.lock() else { return };
        if validated.len() < VALIDATED_OPERATIONS
            && !validated.iter().any(|(n, _)| n.as_deref() == operation_name)
        {
            validated.push((operation_name.map(Into::into), result));
        }
    }
}

impl Deref for Parsed {
    type Target = ExecutableDocument;

    fn deref(&self) -> &ExecutableDocument {
        &self.document
    }
}

/// The shared cache.
pub(crate) struct ParseCache {
    documents: moka::sync::Cache<Arc<str>, Arc<Parsed>>,
}

impl ParseCache {
    /// A cache holding up to about `max_bytes` of query text.
    pub(crate) fn new(max_bytes: u64) -> ParseCache {
        let documents = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            // The AST is several times the text; weigh entries accordingly.
            .weigher(|query: &Arc<str>, _: &Arc<Parsed>| {
                u32::try_from(query.len().saturating_mul(8)).unwrap_or(u32::MAX)
            })
            .build();
        ParseCache { documents }
    }

    /// The parsed `query`, from the cache or the parser.
    pub(crate) fn parse(&self, query: &str) -> Result<Arc<Parsed>, ServerError> {
        if let Some(document) = self.documents.get(query) {
            return Ok(document);
        }
        let document = Arc::new(Parsed::new(async_graphql::parser::parse_query(query)?));
        self.documents.insert(query.into(), document.clone());
        Ok(document)
    }
}
