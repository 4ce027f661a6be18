//! The limits a query must stay within, and the stable codes of the refusals. The document's
//! shape is checked before anything runs (`analysis`); what the estimate cannot see is caught
//! while the query runs, by a budget of resolved fields (`extension`).

use async_graphql::{ErrorExtensionValues, ServerError};
use serde::{Deserialize, Serialize};

/// The limits, from config: the gateway reads them from `[graphql]`, these names as its keys
/// (a missing key keeps its default).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueryLimits {
    /// Deepest nesting of catalog fields (introspection has its own).
    pub max_depth: u32,
    /// Largest estimated cost of catalog fields (each field 1; lists multiply what they
    /// select by their page size). Also the most fields a document may hold once its fragments
    /// are expanded.
    pub max_complexity: u64,
    /// Deepest nesting of introspection fields, from the root.
    pub max_introspection_depth: u32,
    /// Largest estimated cost of introspection fields (lists count with this schema's sizes).
    pub max_introspection_complexity: u64,
    /// Most aliased fields in one document (each use of a fragment counts).
    pub max_aliases: u64,
    /// Most fields at the top of the operation.
    pub max_root_fields: u64,
    /// Most fields one request may resolve (each field of each object returned counts once).
    /// Execution ends with `RESPONSE_TOO_LARGE` beyond it.
    pub max_response_fields: u64,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            max_depth: 12,
            max_complexity: 5_000,
            max_introspection_depth: 20,
            max_introspection_complexity: 400_000,
            max_aliases: 30,
            max_root_fields: 20,
            max_response_fields: 20_000,
        }
    }
}

impl QueryLimits {
    /// No limit at all: for measuring a document's whole cost (benchmarks, tests). Never for
    /// serving.
    pub fn unlimited() -> QueryLimits {
        QueryLimits {
            max_depth: u32::MAX,
            max_complexity: u64::MAX,
            max_introspection_depth: u32::MAX,
            max_introspection_complexity: u64::MAX,
            max_aliases: u64::MAX,
            max_root_fields: u64::MAX,
            max_response_fields: u64::MAX,
        }
    }
}

/// Stable codes for refused documents.
pub mod codes {
    /// Nesting deeper than `max_depth` (or `max_introspection_depth`).
    pub const QUERY_TOO_DEEP: &str = "QUERY_TOO_DEEP";
    /// Estimated cost above `max_complexity` (or `max_introspection_complexity`), or more
    /// fields than `max_complexity` once fragments are expanded.
    pub const QUERY_TOO_COMPLEX: &str = "QUERY_TOO_COMPLEX";
    /// More aliases than `max_aliases`.
    pub const TOO_MANY_ALIASES: &str = "TOO_MANY_ALIASES";
    /// More root fields than `max_root_fields`.
    pub const TOO_MANY_ROOT_FIELDS: &str = "TOO_MANY_ROOT_FIELDS";
    /// The response grew past `max_response_fields` while executing; nothing of it is sent.
    pub const RESPONSE_TOO_LARGE: &str = "RESPONSE_TOO_LARGE";
    /// The document is invalid in a way the analysis must refuse before validation runs
    /// (fragments spreading each other in a cycle).
    pub const GRAPHQL_VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";
}

/// Why a query was refused: a stable code and a message saying what to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// One of [`codes`].
    pub code: &'static str,
    /// What was over which limit.
    pub message: String,
}

impl From<Refusal> for ServerError {
    fn from(refusal: Refusal) -> Self {
        let mut error = ServerError::new(refusal.message, None);
        let mut extensions = ErrorExtensionValues::default();
        extensions.set("code", refusal.code);
        error.extensions = Some(extensions);
        error
    }
}

fn over(value: u64, limit: u64, code: &'static str, message: impl FnOnce() -> String) -> Result<(), Refusal> {
    if value > limit { Err(Refusal { code, message: message() }) } else { Ok(()) }
}

impl QueryLimits {
    /// Fields at the top of the operation.
    pub(crate) fn check_root_fields(&self, root_fields: u64) -> Result<(), Refusal> {
        over(root_fields, self.max_root_fields, codes::TOO_MANY_ROOT_FIELDS, || {
            format!("the query asks for {root_fields} root fields; the limit is {}", self.max_root_fields)
        })
    }

    /// Nesting of catalog and of introspection fields.
    pub(crate) fn check_depth(&self, depth: u32, introspection_depth: u32) -> Result<(), Refusal> {
        over(depth.into(), self.max_depth.into(), codes::QUERY_TOO_DEEP, || {
            format!("the query nests at least {depth} levels deep; the limit is {}", self.max_depth)
        })?;
        over(introspection_depth.into(), self.max_introspection_depth.into(), codes::QUERY_TOO_DEEP, || {
            format!(
                "the introspection query nests at least {introspection_depth} levels deep; the limit is {}",
                self.max_introspection_depth
            )
        })
    }

    /// The estimated cost of catalog fields (a lower bound while the walk is under way).
    pub(crate) fn check_complexity(&self, complexity: u64) -> Result<(), Refusal> {
        over(complexity, self.max_complexity, codes::QUERY_TOO_COMPLEX, || {
            format!(
                "the query's estimated cost is at least {complexity}; the limit is {} (list fields multiply by `first`: ask for smaller pages)",
                self.max_complexity
            )
        })
    }

    /// The estimated cost of introspection fields.
    pub(crate) fn check_introspection_complexity(&self, complexity: u64) -> Result<(), Refusal> {
        over(complexity, self.max_introspection_complexity, codes::QUERY_TOO_COMPLEX, || {
            format!(
                "the introspection query's estimated cost is at least {complexity}; the limit is {} (nest `fields`, `types` and `args` less deeply)",
                self.max_introspection_complexity
            )
        })
    }

    /// Fields in the document with fragments expanded.
    pub(crate) fn check_size(&self, size: u64) -> Result<(), Refusal> {
        over(size, self.max_complexity, codes::QUERY_TOO_COMPLEX, || {
            format!(
                "the document holds at least {size} fields once its fragments are expanded; the limit is {}",
                self.max_complexity
            )
        })
    }

    /// Aliased fields.
    pub(crate) fn check_aliases(&self, aliases: u64) -> Result<(), Refusal> {
        over(aliases, self.max_aliases, codes::TOO_MANY_ALIASES, || {
            format!("the query uses at least {aliases} aliases; the limit is {}", self.max_aliases)
        })
    }
}
