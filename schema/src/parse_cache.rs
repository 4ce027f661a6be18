//! Parsed documents, kept across requests. Parsing is a sizeable share of a small query's CPU
//! (the parser is a PEG grammar), and a real workload sends the same few documents over and
//! over — persisted queries by construction. Only what depends on the text alone is shared:
//! the AST, which of its operations passed async-graphql's validation (`validated`), and what
//! the gateway asks of a document before running it (the type of the operation a GET selects,
//! whether it only introspects), so a request is parsed once. The analysis still runs on
//! every request, because it depends on the variables. Bounded in bytes of query text; failed
//! parses are never kept.

use std::ops::Deref;
use std::sync::{Arc, Mutex};

use async_graphql::ServerError;
use async_graphql::ValidationResult;
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationType, Selection, SelectionSet,
};

/// Operations of one document remembered as validated. A document names its operations, so a
/// client cannot grow this past the operations it holds; the bound is against a document of
/// thousands of operations, each asked for once.
const VALIDATED_OPERATIONS: usize = 16;

/// A parsed document and what is known of it.
pub struct Parsed {
    document: ExecutableDocument,
    /// Every operation is a query selecting only introspection fields at its root.
    introspection_only: bool,
    /// Operations (by the request's `operationName`) that passed validation, with its result.
    validated: Mutex<Vec<(Option<Box<str>>, ValidationResult)>>,
}

impl Parsed {
    fn new(document: ExecutableDocument) -> Parsed {
        let introspection_only = introspection_only(&document);
        Parsed { document, introspection_only, validated: Mutex::new(Vec::new()) }
    }

    /// The type of the operation `operation_name` selects (`None`: no such operation). Without
    /// a name in a document of several operations the choice is ambiguous (execution refuses
    /// it): it is a mutation if any of them is, so a caller refusing writes refuses it too.
    pub fn operation_type(&self, operation_name: Option<&str>) -> Option<OperationType> {
        match (&self.document.operations, operation_name) {
            (DocumentOperations::Single(op), _) => Some(op.node.ty),
            (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name).map(|op| op.node.ty),
            (DocumentOperations::Multiple(ops), None) => {
                Some(if ops.values().any(|op| op.node.ty == OperationType::Mutation) {
                    OperationType::Mutation
                } else {
                    OperationType::Query
                })
            }
        }
    }

    /// Whether every operation is a query selecting nothing but `__schema`, `__type` and
    /// `__typename` at its root (through fragments too).
    pub fn introspection_only(&self) -> bool {
        self.introspection_only
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

fn introspection_only(document: &ExecutableDocument) -> bool {
    fn only_meta(document: &ExecutableDocument, set: &SelectionSet, depth: u32) -> bool {
        depth < 8
            && set.items.iter().all(|item| match &item.node {
                Selection::Field(f) => f.node.name.node.starts_with("__"),
                Selection::InlineFragment(i) => only_meta(document, &i.node.selection_set.node, depth + 1),
                Selection::FragmentSpread(s) => document
                    .fragments
                    .get(&s.node.fragment_name.node)
                    .is_some_and(|f| only_meta(document, &f.node.selection_set.node, depth + 1)),
            })
    }
    document.operations.iter().all(|(_, op)| {
        op.node.ty == OperationType::Query && only_meta(document, &op.node.selection_set.node, 0)
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(query: &str) -> Arc<Parsed> {
        ParseCache::new(1 << 20).parse(query).expect("parses")
    }

    #[test]
    fn a_parse_tells_the_operation_type_and_whether_it_only_introspects() {
        let one = parsed("mutation { rateMovie(movieId: \"tt1\", score: 5) { score } }");
        assert_eq!(one.operation_type(None), Some(OperationType::Mutation));
        let two = parsed("query A { genres { name } } mutation B { __typename }");
        assert_eq!(two.operation_type(Some("A")), Some(OperationType::Query));
        assert_eq!(two.operation_type(Some("B")), Some(OperationType::Mutation));
        assert_eq!(two.operation_type(Some("C")), None);
        assert_eq!(two.operation_type(None), Some(OperationType::Mutation), "ambiguous: counted as a write");
        let reads = parsed("query A { genres { name } } query B { __typename }");
        assert_eq!(reads.operation_type(None), Some(OperationType::Query));

        assert!(
            parsed("{ __schema { types { name } } ...T } fragment T on Query { __typename }")
                .introspection_only()
        );
        assert!(!parsed("{ __typename genres { name } }").introspection_only());
        assert!(
            !parsed("{ __type(name: \"Movie\") { name } ...F } fragment F on Query { genres { name } }")
                .introspection_only()
        );
        assert!(!parsed("mutation { __typename }").introspection_only());
    }

    #[test]
    fn a_document_is_parsed_once_and_failures_are_not_kept() {
        let cache = ParseCache::new(1 << 20);
        let first = cache.parse("{ genres { name } }").expect("parses");
        let again = cache.parse("{ genres { name } }").expect("parses");
        assert!(Arc::ptr_eq(&first, &again), "the second request reuses the first parse");
        assert!(cache.parse("{ nope").is_err());
        assert!(cache.documents.get("{ nope").is_none());
    }
}
