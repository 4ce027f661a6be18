//! Query cost limits, checked on the parsed document before anything executes: depth, alias
//! count, root-field count and complexity (list fields multiply the cost of what they select by
//! their page size: `first`, or the number of `ids`). A query over a limit is refused with a
//! stable code and never reaches a resolver or the store.

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, Field, SelectionSet};
use async_graphql::{ErrorExtensionValues, ServerError, ServerResult, Value, Variables};
use marquee_store::MAX_PAGE;

/// The limits, from config.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct QueryLimits {
    /// Deepest field nesting (introspection fields are not counted).
    pub max_depth: usize,
    /// Largest estimated cost (see the module docs).
    pub max_complexity: u64,
    /// Most aliased fields in one document.
    pub max_aliases: usize,
    /// Most fields at the top of the operation.
    pub max_root_fields: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits { max_depth: 12, max_complexity: 5_000, max_aliases: 30, max_root_fields: 20 }
    }
}

/// Stable codes for refused documents.
pub mod codes {
    /// Nesting deeper than `max_depth`.
    pub const QUERY_TOO_DEEP: &str = "QUERY_TOO_DEEP";
    /// Estimated cost above `max_complexity`.
    pub const QUERY_TOO_COMPLEX: &str = "QUERY_TOO_COMPLEX";
    /// More aliases than `max_aliases`.
    pub const TOO_MANY_ALIASES: &str = "TOO_MANY_ALIASES";
    /// More root fields than `max_root_fields`.
    pub const TOO_MANY_ROOT_FIELDS: &str = "TOO_MANY_ROOT_FIELDS";
}

/// List fields and the page size they use when the query gives none.
fn default_page(field: &str) -> Option<u64> {
    match field {
        "search" | "browse" | "filmography" | "crew" => Some(20),
        "cast" => Some(10),
        "similar" => Some(5),
        "genres" => Some(marquee_store::GENRES.len() as u64),
        "movies" | "people" => Some(MAX_PAGE as u64),
        _ => None,
    }
}

/// What a document costs.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Cost {
    pub(crate) depth: usize,
    pub(crate) complexity: u64,
    pub(crate) aliases: usize,
    pub(crate) root_fields: usize,
}

struct Walker<'a> {
    document: &'a ExecutableDocument,
    variables: &'a Variables,
    aliases: usize,
    max_depth: usize,
}

impl<'a> Walker<'a> {
    /// The page size a list field asks for.
    fn page(&self, field: &Field) -> u64 {
        let name = field.name.node.as_str();
        let Some(default) = default_page(name) else { return 1 };
        let argument = if matches!(name, "movies" | "people") { "ids" } else { "first" };
        let value = field.get_argument(argument).and_then(|v| {
            v.node.clone().into_const_with(|var| self.variables.get(&var).cloned().ok_or(())).ok()
        });
        match value {
            Some(Value::Number(n)) => n.as_u64().unwrap_or(default),
            Some(Value::List(items)) => items.len() as u64,
            _ => default,
        }
    }

    /// Cost of the selection `set` at `depth`, counting its aliases and deepest level.
    fn cost(&mut self, set: &'a SelectionSet, depth: usize) -> u64 {
        let mut total = 0u64;
        for field in crate::document::fields(self.document, &[set]) {
            if field.name.node.starts_with("__") {
                continue;
            }
            if field.alias.is_some() {
                self.aliases += 1;
            }
            self.max_depth = self.max_depth.max(depth);
            let children = self.cost(&field.selection_set.node, depth + 1);
            total = total.saturating_add(1u64.saturating_add(self.page(field).saturating_mul(children)));
        }
        total
    }
}

/// Measures the operation `operation_name` of `document`.
pub(crate) fn measure(
    document: &ExecutableDocument,
    operation_name: Option<&str>,
    variables: &Variables,
) -> Cost {
    let operation = match &document.operations {
        DocumentOperations::Single(op) => Some(op),
        DocumentOperations::Multiple(ops) => match operation_name {
            Some(name) => ops.get(name),
            None if ops.len() == 1 => ops.values().next(),
            None => None,
        },
    };
    let Some(operation) = operation else { return Cost::default() };
    let mut walker = Walker { document, variables, aliases: 0, max_depth: 0 };
    let set = &operation.node.selection_set.node;
    let root_fields = crate::document::fields(document, &[set]).len();
    let complexity = walker.cost(set, 1);
    Cost { depth: walker.max_depth, complexity, aliases: walker.aliases, root_fields }
}

impl QueryLimits {
    fn check(&self, cost: Cost) -> Result<(), ServerError> {
        let refuse = |code: &str, message: String| {
            let mut error = ServerError::new(message, None);
            let mut extensions = ErrorExtensionValues::default();
            extensions.set("code", code);
            error.extensions = Some(extensions);
            Err(error)
        };
        if cost.depth > self.max_depth {
            return refuse(
                codes::QUERY_TOO_DEEP,
                format!("the query nests {} levels deep; the limit is {}", cost.depth, self.max_depth),
            );
        }
        if cost.aliases > self.max_aliases {
            return refuse(
                codes::TOO_MANY_ALIASES,
                format!("the query uses {} aliases; the limit is {}", cost.aliases, self.max_aliases),
            );
        }
        if cost.root_fields > self.max_root_fields {
            return refuse(
                codes::TOO_MANY_ROOT_FIELDS,
                format!(
                    "the query asks for {} root fields; the limit is {}",
                    cost.root_fields, self.max_root_fields
                ),
            );
        }
        if cost.complexity > self.max_complexity {
            return refuse(
                codes::QUERY_TOO_COMPLEX,
                format!(
                    "the query's estimated cost is {}; the limit is {} (list fields multiply by `first`: ask for smaller pages)",
                    cost.complexity, self.max_complexity
                ),
            );
        }
        Ok(())
    }
}

impl ExtensionFactory for QueryLimits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(LimitsExtension(*self))
    }
}

struct LimitsExtension(QueryLimits);

#[async_trait::async_trait]
impl Extension for LimitsExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        // The operation name is not known here; with several operations each is measured and
        // the most expensive decides, so no operation can slip through.
        let costs: Vec<Cost> = match &document.operations {
            DocumentOperations::Single(_) => vec![measure(&document, None, variables)],
            DocumentOperations::Multiple(ops) => {
                ops.keys().map(|name| measure(&document, Some(name.as_str()), variables)).collect()
            }
        };
        for cost in costs {
            self.0.check(cost)?;
        }
        Ok(document)
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::parser::parse_query;

    use super::*;

    fn cost(query: &str, variables: serde_json::Value) -> Cost {
        let document = parse_query(query).expect("parses");
        measure(&document, None, &Variables::from_json(variables))
    }

    #[test]
    fn lists_multiply_by_their_page_size() {
        let c = cost(
            "{ browse(first: 20) { edges { node { id title cast(first: 10) { character person { id name } } } } } }",
            serde_json::json!({}),
        );
        // cast: 1 + 10*(1 + (1 + 2)); node: 1 + (1 + 1 + 41); edges: 1 + 44; browse: 1 + 20*45.
        assert_eq!(c.complexity, 901);
        assert_eq!(c.depth, 6);
        assert_eq!(c.root_fields, 1);
        let with_variable = cost(
            "query($n: Int) { browse(first: $n) { edges { node { id } } } }",
            serde_json::json!({ "n": 3 }),
        );
        assert_eq!(with_variable.complexity, 1 + 3 * (1 + 2));
        let defaulted = cost("{ movie(id: \"tt1\") { cast { id } } }", serde_json::json!({}));
        assert_eq!(defaulted.complexity, 1 + (1 + 10));
        let ids = cost("{ movies(ids: [\"tt1\", \"tt2\"]) { title } }", serde_json::json!({}));
        assert_eq!(ids.complexity, 1 + 2);
    }

    #[test]
    fn fragments_aliases_and_introspection() {
        let c = cost(
            "{ a: movie(id: \"tt1\") { ...M } b: movie(id: \"tt2\") { ...M } __schema { types { name } } } fragment M on Movie { title similar { title } }",
            serde_json::json!({}),
        );
        assert_eq!(c.aliases, 2);
        assert_eq!(c.root_fields, 3);
        assert_eq!(c.depth, 3);
        assert_eq!(c.complexity, 2 * (1 + (1 + (1 + 5))));
    }
}
