//! Walking parsed GraphQL documents: the fields a selection set selects, with fragment spreads
//! and inline fragments expanded in place. Shared by the limits (cost) and ordering (response
//! field order) extensions so both read fragments the same way.

use std::collections::HashSet;

use async_graphql::parser::types::{ExecutableDocument, Field, Selection, SelectionSet};

/// The fields selected by `sets`, in document order, fragments expanded (each fragment once:
/// validation rejects cycles, and a repeat adds nothing new).
pub(crate) fn fields<'a>(document: &'a ExecutableDocument, sets: &[&'a SelectionSet]) -> Vec<&'a Field> {
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
