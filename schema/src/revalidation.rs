//! Validation once per document, not once per request. async-graphql checks every request's
//! document against all of the spec's validation rules, a walk of the whole document through
//! twenty-odd visitors: a twentieth of the gateway's CPU on a small nested query. Every rule but
//! one depends only on the document and the schema, so an operation that passed them once
//! passes them again. The one exception checks each argument's value, with the request's
//! variables substituted, against the argument's type.
//!
//! A request whose operation passed validation before therefore only has its variables
//! checked here, against the types the operation declares for them: validation already made
//! sure a variable is only used where its declared type is allowed (the same named type, lists
//! where lists go, non-null where non-null is required), so a value that fits the declared type
//! fits every argument it fills. The check is deliberately narrower than the rules it stands
//! in for — it accepts no `null`, no missing variable, no input object — and anything it does
//! not accept goes through async-graphql's full validation, so a client sees exactly the
//! errors it always did.

use async_graphql::Variables;
use async_graphql::parser::types::{BaseType, ExecutableDocument, Type};
use async_graphql::registry::{MetaType, Registry};
use async_graphql_value::ConstValue;

use crate::analysis::operation;

/// Whether every variable the chosen operation declares has a value, not `null`, that fits its
/// declared type. `false` means "not known to fit", not "invalid".
pub(crate) fn variables_fit(
    registry: &Registry,
    document: &ExecutableDocument,
    operation_name: Option<&str>,
    variables: &Variables,
) -> bool {
    let Some(operation) = operation(document, operation_name) else { return false };
    operation.node.variable_definitions.iter().all(|definition| {
        variables
            .get(definition.node.name.node.as_str())
            .is_some_and(|value| fits(registry, &definition.node.var_type.node, value))
    })
}

/// Whether `value` fits `ty` as async-graphql's argument check sees it (a single value fits
/// a list type, as one item), `null` excepted.
fn fits(registry: &Registry, ty: &Type, value: &ConstValue) -> bool {
    match (&ty.base, value) {
        (_, ConstValue::Null) => false,
        (BaseType::List(item), ConstValue::List(items)) => items.iter().all(|v| fits(registry, item, v)),
        (BaseType::List(item), single) => fits(registry, item, single),
        (BaseType::Named(name), value) => match registry.types.get(name.as_str()) {
            Some(MetaType::Scalar { is_valid: Some(is_valid), .. }) => is_valid(value),
            Some(MetaType::Scalar { is_valid: None, .. }) => true,
            Some(MetaType::Enum { enum_values, .. }) => match value {
                ConstValue::Enum(v) => enum_values.contains_key(v.as_str()),
                ConstValue::String(v) => enum_values.contains_key(v.as_str()),
                _ => false,
            },
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::OutputType;
    use async_graphql::parser::parse_query;
    use serde_json::json;

    use super::*;
    use crate::mutation::Mutation;
    use crate::query::Query;

    fn check(query: &str, operation_name: Option<&str>, variables: serde_json::Value) -> bool {
        let mut registry = Registry::default();
        Query::create_type_info(&mut registry);
        Mutation::create_type_info(&mut registry);
        let document = parse_query(query).expect("the test's document parses");
        variables_fit(&registry, &document, operation_name, &Variables::from_json(variables))
    }

    const MOVIE: &str =
        "query M($id: ID!, $first: Int) { movie(id: $id) { cast(first: $first) { character } } }";

    #[test]
    fn values_of_the_declared_types_fit() {
        assert!(check(MOVIE, None, json!({"id": "tt1", "first": 3})));
        assert!(check(MOVIE, None, json!({"id": 17, "first": 3})), "an ID may be sent as an integer");
        assert!(check("{ movie(id: \"1\") { id } }", None, json!({})), "no variables, nothing to check");
    }

    #[test]
    fn wrong_types_nulls_and_missing_values_are_left_to_full_validation() {
        assert!(!check(MOVIE, None, json!({"id": "tt1", "first": "3"})), "a string for an Int");
        assert!(!check(MOVIE, None, json!({"id": "tt1", "first": 3.5})), "a fraction for an Int");
        assert!(!check(MOVIE, None, json!({"id": true, "first": 3})), "a boolean for an ID");
        assert!(!check(MOVIE, None, json!({"id": "tt1", "first": null})), "null is not judged here");
        assert!(!check(MOVIE, None, json!({"id": "tt1"})), "a missing variable is not judged here");
        assert!(!check(MOVIE, None, json!({"id": ["tt1"], "first": 3})), "a list for a scalar");
    }

    #[test]
    fn enums_take_their_own_values_only() {
        let query = "query B($sort: MovieSort!) { browse(sort: $sort) { totalCount } }";
        assert!(check(query, None, json!({"sort": "POPULARITY"})));
        assert!(!check(query, None, json!({"sort": "LOUDNESS"})));
        assert!(!check(query, None, json!({"sort": 1})));
    }

    #[test]
    fn list_types_take_lists_or_a_single_item() {
        let query = "query S($ids: [ID!]!) { movies(ids: $ids) { id } }";
        assert!(check(query, None, json!({"ids": ["1", "2"]})));
        assert!(check(query, None, json!({"ids": "1"})), "a single value is a list of one");
        assert!(!check(query, None, json!({"ids": ["1", null]})));
        assert!(!check(query, None, json!({"ids": [["1"]]})));
    }

    #[test]
    fn the_named_operation_is_the_one_checked() {
        let query = "query A($id: ID!) { movie(id: $id) { id } } query B($n: Int!) { genres { name } }";
        assert!(check(query, Some("A"), json!({"id": "1"})));
        assert!(!check(query, Some("B"), json!({"id": "1"})), "B's variable is missing");
        assert!(!check(query, None, json!({"id": "1", "n": 1})), "no operation is chosen");
        assert!(!check(query, Some("C"), json!({})), "no such operation");
    }
}
