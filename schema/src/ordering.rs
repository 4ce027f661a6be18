//! Response field order. async-graphql resolves sibling fields concurrently and emits them in
//! completion order, so the same query could produce differently ordered bodies. The GraphQL
//! spec asks for the order of the query, and byte-identical bodies matter for caching (ETags,
//! CDN keys). After execution, every object in `data` is reordered to the order its fields
//! first appear in the query (fragments included).
//!
//! The order of a selection is worked out once per distinct selection, not once per object:
//! the items of a list share it, so a response of thousands of objects costs what its
//! document costs, not the product of the two.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use async_graphql::Value;
use async_graphql::parser::types::{ExecutableDocument, Field, Selection, SelectionSet};

/// Response keys in order, each with the sub-selections that apply to its value.
type Keys<'a> = Rc<Vec<(&'a str, Vec<&'a SelectionSet>)>>;

/// Puts every object of `data` in the order of the operation `operation_name` of `document`.
pub(crate) fn reorder(document: &ExecutableDocument, operation_name: Option<&str>, data: &mut Value) {
    if let Some(operation) = crate::analysis::operation(document, operation_name) {
        let mut order = Order { document, memo: HashMap::new() };
        order.value(data, &[&operation.node.selection_set.node]);
    }
}

struct Order<'a> {
    document: &'a ExecutableDocument,
    /// Keys by the identity of the selection sets they were collected from.
    memo: HashMap<Vec<usize>, Keys<'a>>,
}

impl<'a> Order<'a> {
    fn keys(&mut self, sets: &[&'a SelectionSet]) -> Keys<'a> {
        let id: Vec<usize> = sets.iter().map(|s| std::ptr::from_ref(*s) as usize).collect();
        if let Some(keys) = self.memo.get(&id) {
            return keys.clone();
        }
        let mut keys: Vec<(&str, Vec<&SelectionSet>)> = Vec::new();
        for field in fields(self.document, sets) {
            let key = field.response_key().node.as_str();
            let sub = &field.selection_set.node;
            match keys.iter_mut().find(|(k, _)| *k == key) {
                Some((_, subs)) => subs.push(sub),
                None => keys.push((key, vec![sub])),
            }
        }
        let keys = Rc::new(keys);
        self.memo.insert(id, keys.clone());
        keys
    }

    fn value(&mut self, value: &mut Value, sets: &[&'a SelectionSet]) {
        match value {
            Value::Object(map) => {
                let keys = self.keys(sets);
                let mut unordered = std::mem::take(map);
                for (key, subs) in keys.iter() {
                    if let Some((name, mut child)) = unordered.shift_remove_entry(*key) {
                        self.value(&mut child, subs);
                        map.insert(name, child);
                    }
                }
                map.extend(unordered);
            }
            Value::List(items) => items.iter_mut().for_each(|item| self.value(item, sets)),
            _ => {}
        }
    }
}

/// The fields selected by `sets`, in document order, fragments expanded in place (each
/// fragment once: a repeat adds no new response key; the analysis has refused cycles and
/// nesting deeper than 32).
fn fields<'a>(document: &'a ExecutableDocument, sets: &[&'a SelectionSet]) -> Vec<&'a Field> {
    let mut out = Vec::new();
    let mut spread = HashSet::new();
    for set in sets {
        expand(document, set, &mut out, &mut spread);
    }
    out
}

fn expand<'a>(
    document: &'a ExecutableDocument,
    set: &'a SelectionSet,
    out: &mut Vec<&'a Field>,
    spread: &mut HashSet<&'a str>,
) {
    for item in &set.items {
        match &item.node {
            Selection::Field(field) => out.push(&field.node),
            Selection::FragmentSpread(s) => {
                if let Some(fragment) = document.fragments.get(&s.node.fragment_name.node)
                    && spread.insert(s.node.fragment_name.node.as_str())
                {
                    expand(document, &fragment.node.selection_set.node, out, spread);
                }
            }
            Selection::InlineFragment(inline) => {
                expand(document, &inline.node.selection_set.node, out, spread)
            }
        }
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
        let item = || object(&[("w", Value::Null), ("x", Value::Null), ("y", Value::Null)]);
        let mut data = object(&[
            ("list", Value::List(vec![item(), item()])),
            ("b", object(&[("m", Value::Null), ("a", Value::Null), ("z", Value::Null)])),
        ]);
        reorder(&doc, None, &mut data);
        let ordered = || object(&[("y", Value::Null), ("x", Value::Null), ("w", Value::Null)]);
        let expected = object(&[
            ("b", object(&[("z", Value::Null), ("a", Value::Null), ("m", Value::Null)])),
            ("list", Value::List(vec![ordered(), ordered()])),
        ]);
        assert_eq!(serde_json::to_string(&data).ok(), serde_json::to_string(&expected).ok());
    }
}
