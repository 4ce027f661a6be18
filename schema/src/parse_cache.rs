//! Parsed documents, kept across requests. Parsing is a sizeable share of a small query's CPU
//! (the parser is a PEG grammar), and a real workload sends the same few documents over and
//! over — persisted queries by construction. This extension sits innermost, right before the
//! parser: the limit checks and the ordering extension still run on every request (limits
//! depend on the variables), only the text → AST step is shared. Bounded in bytes of query
//! text; failed parses are never kept.

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{ServerResult, Variables};

/// The shared cache, installed once per schema.
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
}

impl ExtensionFactory for ParseCache {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ParseCacheExtension { documents: self.documents.clone() })
    }
}

struct ParseCacheExtension {
    documents: moka::sync::Cache<Arc<str>, Arc<ExecutableDocument>>,
}

#[async_trait::async_trait]
impl Extension for ParseCacheExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        if let Some(document) = self.documents.get(query) {
            return Ok((*document).clone());
        }
        let document = next.run(ctx, query, variables).await?;
        self.documents.insert(query.into(), Arc::new(document.clone()));
        Ok(document)
    }
}
