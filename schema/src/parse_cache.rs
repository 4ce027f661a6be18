//! Parsed documents, kept across requests. Parsing is a sizeable share of a small query's CPU
//! (the parser is a PEG grammar), and a real workload sends the same few documents over and
//! over — persisted queries by construction. Only the text → AST step is shared: the analysis
//! still runs on every request, because it depends on the variables. Bounded in bytes of query
//! text; failed parses are never kept.

use std::sync::Arc;

use async_graphql::ServerError;
use async_graphql::parser::types::ExecutableDocument;

/// The shared cache.
pub(crate) struct ParseCache {
    documents: moka::sync::Cache<Arc<str>, Arc<ExecutableDocument>>,
}

impl ParseCache {
    /// A cache holding up to about `max_bytes` of query text.
    pub(crate) fn new(max_bytes: u64) -> ParseCache {
        let documents = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            // The AST is several times the text; weigh entries accordingly.
            .weigher(|query: &Arc<str>, _: &Arc<ExecutableDocument>| {
                u32::try_from(query.len().saturating_mul(8)).unwrap_or(u32::MAX)
            })
            .build();
        ParseCache { documents }
    }

    /// The parsed `query`, from the cache or the parser.
    pub(crate) fn parse(&self, query: &str) -> Result<Arc<ExecutableDocument>, ServerError> {
        if let Some(document) = self.documents.get(query) {
            return Ok(document);
        }
        let document = Arc::new(async_graphql::parser::parse_query(query)?);
        self.documents.insert(query.into(), document.clone());
        Ok(document)
    }
}
