//! Response field order. async-graphql resolves sibling fields concurrently and emits them in
//! completion order, so the same query could produce differently ordered bodies. The GraphQL
//! spec asks for the order of the query, and byte-identical bodies matter for caching (ETags,
//! CDN keys). This extension keeps the parsed document and, after execution, reorders every
//! object in `data` to the order its fields first appear in the query (fragments included).

use std::sync::{Arc, Mutex};

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery};
use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, SelectionSet};
use async_graphql::{Response, ServerResult, Value, Variables};

/// Installs the reordering extension (one instance per request).
pub(crate) struct QueryOrder;

impl ExtensionFactory for QueryOrder {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(QueryOrderExtension { document: Mutex::new(None) })
    }
}

struct QueryOrderExtension {
    /// The request's parsed document, kept from parsing until the response is ready.
    document: Mutex<Option<ExecutableDocument>>,
}

#[async_trait::async_trait]
impl Extension for QueryOrderExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        if let Ok(mut slot) = self.document.lock() {
            *slot = Some(document.clone());
        }
        Ok(document)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let mut response = next.run(ctx, operation_name).await;
        let document = self.document.lock().ok().and_then(|mut slot| slot.take());
        if let Some(document) = document {
            let operation = match &document.operations {
                DocumentOperations::Single(op) => Some(op),
                DocumentOperations::Multiple(ops) => operation_name.and_then(|name| ops.get(name)),
            };
            if let Some(op) = operation {
                reorder(&document, &mut response.data, &[&op.node.selection_set.node]);
            }
        }
        response
    }
}

/// Response keys of `sets`, in order of first appearance, each with the sub-selections that
/// apply to its value.
fn collect<'a>(
    document: &'a ExecutableDocument,
    sets: &[&'a SelectionSet],
) -> Vec<(&'a str, Vec<&'a SelectionSet>)> {
    let mut keys: Vec<(&str, Vec<&SelectionSet>)> = Vec::new();
    for field in crate::document::fields(document, sets) {
        let key = field.response_key().node.as_str();
        let sub = &field.selection_set.node;
        match keys.iter_mut().find(|(k, _)| *k == key) {
            Some((_, subs)) => subs.push(sub),
            None => keys.push((key, vec![sub])),
        }
    }
    keys
}

fn reorder(document: &ExecutableDocument, value: &mut Value, sets: &[&SelectionSet]) {
    match value {
        Value::Object(map) => {
            let fields = collect(document, sets);
            let mut unordered = std::mem::take(map);
            for (key, subs) in &fields {
                if let Some((name, mut child)) = unordered.shift_remove_entry(*key) {
                    reorder(document, &mut child, subs);
                    map.insert(name, child);
                }
            }
            map.extend(unordered);
        }
        Value::List(items) => items.iter_mut().for_each(|item| reorder(document, item, sets)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::parser::parse_query;
    use async_graphql::{Name, indexmap::IndexMap};

    use super::*;

    fn object(pairs: &[(&str, Value)]) -> Value {
        Value::Object(pairs.iter().map(|(k, v)| (Name::new(*k), v.clone())).collect::<IndexMap<_, _>>())
    }

    #[test]
    fn objects_follow_query_order_through_lists_aliases_and_fragments() {
        let doc = parse_query("{ b: movie { z a ...F } list { y ... on T { x } w } } fragment F on M { m }")
            .expect("parses");
        let DocumentOperations::Single(op) = &doc.operations else { panic!("single operation") };
        let mut data = object(&[
            (
                "list",
                Value::List(vec![object(&[("w", Value::Null), ("x", Value::Null), ("y", Value::Null)])]),
            ),
            ("b", object(&[("m", Value::Null), ("a", Value::Null), ("z", Value::Null)])),
        ]);
        reorder(&doc, &mut data, &[&op.node.selection_set.node]);
        let expected = object(&[
            ("b", object(&[("z", Value::Null), ("a", Value::Null), ("m", Value::Null)])),
            (
                "list",
                Value::List(vec![object(&[("y", Value::Null), ("x", Value::Null), ("w", Value::Null)])]),
            ),
        ]);
        assert_eq!(serde_json::to_string(&data).ok(), serde_json::to_string(&expected).ok());
    }
}
