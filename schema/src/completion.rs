//! Response completion, the last step inside the schema: every object in `data` gets exactly
//! the fields its selection asked for, in the query's order, with field errors turned into
//! nulls that propagate as the GraphQL spec's "Handling Field Errors" says.
//!
//! async-graphql 7 resolves sibling fields concurrently and emits them in completion order,
//! drops a field whose resolver failed instead of making it null, and turns an object whose
//! every field failed into null. Left alone, the same query could produce differently ordered
//! bodies (bad for ETags and CDN keys), and codegen clients would meet objects missing non-null
//! fields. Here, knowing the selection (fragments expanded, `@skip`/`@include` applied) and
//! each field's type from the schema ([`Shape`]):
//! - a selected field missing from its object is null (its error is already in `errors`);
//! - a null in a non-null position makes its parent null, up to the nearest nullable field or
//!   list item, or to `data` itself;
//! - an object collapsed to null although it resolved (errors were reported under it) is
//!   rebuilt from its fields first, so its nullable fields stay null rather than taking their
//!   siblings with them.
//!
//! The order of a selection is worked out once per distinct selection, not once per object:
//! the items of a list share it, so a response of thousands of objects costs what its
//! document costs, not the product of the two.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use async_graphql::parser::types::{ExecutableDocument, Field, OperationType, Selection, SelectionSet};
use async_graphql::{PathSegment, ServerError, Value, Variables};

use crate::analysis::{operation, skipped};
use crate::shape::Shape;

/// Non-null, not a list: `__typename` and `__schema`.
const NON_NULL: &[bool] = &[false];
/// Nullable, not a list: `__type`.
const NULLABLE: &[bool] = &[true];

/// One response key of a selection.
struct Key<'a> {
    /// The response key (alias or field name).
    name: &'a str,
    /// Whether each level of the field's type may be null, outermost first.
    nullable: &'a [bool],
    /// The named type the field returns, if the schema knows the field.
    ty: Option<&'a str>,
    /// The sub-selections that apply to its value.
    subs: Vec<&'a SelectionSet>,
}

/// Response keys in order.
type Keys<'a> = Rc<Vec<Key<'a>>>;

/// One step of a response path.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// Completes `data`, the result of running the operation `operation_name` of `document` with
/// `variables` (defaults included), whose field errors are `errors`.
pub(crate) fn complete<'a>(
    document: &'a ExecutableDocument,
    operation_name: Option<&str>,
    shape: &'a Shape,
    variables: &'a Variables,
    errors: &'a [ServerError],
    data: &mut Value,
) {
    let Some(op) = operation(document, operation_name) else { return };
    let root = match op.node.ty {
        OperationType::Query => Some(shape.query.as_str()),
        OperationType::Mutation => shape.mutation.as_deref(),
        OperationType::Subscription => None,
    };
    let failed_below = errors
        .iter()
        .flat_map(|e| {
            let path: Vec<Step<'a>> = e.path.iter().map(Step::from).collect();
            (0..path.len()).map(move |n| path[..n].to_vec())
        })
        .collect();
    let mut completion =
        Completion { document, shape, variables, memo: HashMap::new(), failed_below, path: Vec::new() };
    // Execution ran (request errors never get here): `data` is the root object, even when
    // every root field failed and async-graphql left null.
    if matches!(data, Value::Null) {
        *data = Value::Object(Default::default());
    }
    if !completion.object(data, root, &[&op.node.selection_set.node]) {
        *data = Value::Null;
    }
}

impl<'a> From<&'a PathSegment> for Step<'a> {
    fn from(segment: &'a PathSegment) -> Step<'a> {
        match segment {
            PathSegment::Field(name) => Step::Key(name),
            PathSegment::Index(i) => Step::Index(*i),
        }
    }
}

struct Completion<'a> {
    document: &'a ExecutableDocument,
    shape: &'a Shape,
    variables: &'a Variables,
    /// Keys by the identity of the selection sets they were collected from.
    memo: HashMap<Vec<usize>, Keys<'a>>,
    /// Every proper prefix of an error's path: positions with an error somewhere below.
    failed_below: HashSet<Vec<Step<'a>>>,
    /// Where the walk is.
    path: Vec<Step<'a>>,
}

impl<'a> Completion<'a> {
    fn keys(&mut self, ty: Option<&'a str>, sets: &[&'a SelectionSet]) -> Keys<'a> {
        let id: Vec<usize> = sets.iter().map(|s| std::ptr::from_ref(*s) as usize).collect();
        if let Some(keys) = self.memo.get(&id) {
            return keys.clone();
        }
        let mut keys: Vec<Key<'a>> = Vec::new();
        for field in fields(self.document, self.variables, ty, sets) {
            let name = field.response_key().node.as_str();
            let sub = &field.selection_set.node;
            if let Some(key) = keys.iter_mut().find(|k| k.name == name) {
                key.subs.push(sub);
                continue;
            }
            let (nullable, field_ty) = match field.name.node.as_str() {
                "__typename" => (NON_NULL, None),
                "__schema" => (NON_NULL, Some("__Schema")),
                "__type" => (NULLABLE, Some("__Type")),
                other => match ty.and_then(|ty| self.shape.field(ty, other)) {
                    Some(f) => (f.nullable.as_slice(), Some(f.ty.as_str())),
                    // Validation refuses unknown fields; nothing to complete below one.
                    None => (NULLABLE, None),
                },
            };
            keys.push(Key { name, nullable, ty: field_ty, subs: vec![sub] });
        }
        let keys = Rc::new(keys);
        self.memo.insert(id, keys.clone());
        keys
    }

    /// Completes the object `value` of type `ty`; false when it must become null (a non-null
    /// field of it is null).
    fn object(&mut self, value: &mut Value, ty: Option<&'a str>, sets: &[&'a SelectionSet]) -> bool {
        let Value::Object(map) = value else { return true };
        let keys = self.keys(ty, sets);
        if map.len() == keys.len() && map.keys().zip(keys.iter()).all(|(name, key)| name.as_str() == key.name)
        {
            // Already complete and in order (the common case): only the values need a look.
            for (key, child) in keys.iter().zip(map.values_mut()) {
                self.path.push(Step::Key(key.name));
                let ok = self.value(child, key.nullable, key.ty, &key.subs);
                self.path.pop();
                if !ok {
                    return false;
                }
            }
            return true;
        }
        let mut unordered = std::mem::take(map);
        for key in keys.iter() {
            let (name, mut child) = match unordered.shift_remove_entry(key.name) {
                Some(entry) => entry,
                // Dropped by async-graphql because its resolver failed.
                None => (async_graphql::Name::new(key.name), Value::Null),
            };
            self.path.push(Step::Key(key.name));
            let ok = self.value(&mut child, key.nullable, key.ty, &key.subs);
            self.path.pop();
            if !ok {
                return false;
            }
            map.insert(name, child);
        }
        map.extend(unordered);
        true
    }

    /// Completes `value` at a position whose levels are `nullable`; false when it is null in a
    /// non-null position, so the parent must become null.
    fn value(
        &mut self,
        value: &mut Value,
        nullable: &[bool],
        ty: Option<&'a str>,
        sets: &[&'a SelectionSet],
    ) -> bool {
        let Some((&here, inner)) = nullable.split_first() else { return true };
        let object = !sets.iter().all(|s| s.items.is_empty());
        if matches!(value, Value::Null) && object && inner.is_empty() && self.resolved_below() {
            // It resolved, but every field failed and async-graphql made the object null.
            *value = Value::Object(Default::default());
        }
        let is_null = match value {
            Value::Null => true,
            Value::List(items) if !inner.is_empty() => {
                let mut ok = true;
                for (index, item) in items.iter_mut().enumerate() {
                    self.path.push(Step::Index(index));
                    ok = self.value(item, inner, ty, sets);
                    self.path.pop();
                    if !ok {
                        break;
                    }
                }
                !ok
            }
            Value::Object(_) if object => !self.object(value, ty, sets),
            _ => false,
        };
        if is_null {
            *value = Value::Null;
        }
        here || !is_null
    }

    /// Whether an error was reported below the current position.
    fn resolved_below(&self) -> bool {
        !self.failed_below.is_empty() && self.failed_below.contains(&self.path)
    }
}

/// The fields `sets` select on an object of type `ty`, in document order: fragments expanded
/// in place (each fragment once: a repeat adds no new response key; the analysis has refused
/// cycles and nesting deeper than 32), parts `@skip`/`@include` leave out left out, and so are
/// fragments on another type (so a field they select is never made null where it does not
/// apply; such fields, if present, keep their place after the others).
fn fields<'a>(
    document: &'a ExecutableDocument,
    variables: &Variables,
    ty: Option<&str>,
    sets: &[&'a SelectionSet],
) -> Vec<&'a Field> {
    let mut walk = Expand { document, variables, ty, out: Vec::new(), spread: HashSet::new() };
    for set in sets {
        walk.set(set);
    }
    walk.out
}

struct Expand<'a, 'v> {
    document: &'a ExecutableDocument,
    variables: &'v Variables,
    ty: Option<&'v str>,
    out: Vec<&'a Field>,
    spread: HashSet<&'a str>,
}

impl<'a> Expand<'a, '_> {
    /// Whether a fragment on `condition` applies here.
    fn applies(&self, condition: Option<&str>) -> bool {
        match (condition, self.ty) {
            (Some(on), Some(ty)) => on == ty,
            _ => true,
        }
    }

    fn set(&mut self, set: &'a SelectionSet) {
        for item in &set.items {
            if skipped(item.node.directives(), self.variables) {
                continue;
            }
            match &item.node {
                Selection::Field(field) => self.out.push(&field.node),
                Selection::FragmentSpread(s) => {
                    let name = s.node.fragment_name.node.as_str();
                    if let Some(fragment) = self.document.fragments.get(&s.node.fragment_name.node)
                        && self.applies(Some(fragment.node.type_condition.node.on.node.as_str()))
                        && self.spread.insert(name)
                    {
                        self.set(&fragment.node.selection_set.node);
                    }
                }
                Selection::InlineFragment(inline) => {
                    let on = inline.node.type_condition.as_ref().map(|c| c.node.on.node.as_str());
                    if self.applies(on) {
                        self.set(&inline.node.selection_set.node);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::parser::parse_query;
    use async_graphql::{Pos, ServerError};
    use serde_json::json;
    use std::sync::LazyLock;

    use super::*;

    static SHAPE: LazyLock<Shape> = LazyLock::new(Shape::of_marquee);

    /// An error at `path`, as async-graphql reports a failed resolver.
    fn error_at(path: &[serde_json::Value]) -> ServerError {
        let mut error = ServerError::new("failed", Some(Pos::default()));
        error.path = path
            .iter()
            .map(|step| match step {
                serde_json::Value::Number(n) => PathSegment::Index(n.as_u64().unwrap_or(0) as usize),
                other => PathSegment::Field(other.as_str().unwrap_or_default().to_owned()),
            })
            .collect();
        error
    }

    /// Completes `data` (as async-graphql left it) for `query` with `variables` and errors at
    /// `failed` paths; the result as JSON text, so key order is checked too (`json!` sorts keys,
    /// so expected bodies are written out).
    fn completed(
        query: &str,
        variables: serde_json::Value,
        failed: &[&[serde_json::Value]],
        data: serde_json::Value,
    ) -> String {
        let document = parse_query(query).expect("parses");
        let errors: Vec<ServerError> = failed.iter().map(|p| error_at(p)).collect();
        let mut data = Value::from_json(data).expect("valid data");
        complete(&document, None, &SHAPE, &Variables::from_json(variables), &errors, &mut data);
        serde_json::to_string(&data).expect("serialises")
    }

    #[test]
    fn objects_follow_query_order_through_lists_aliases_and_fragments() {
        let query =
            "{ b: movie(id: \"m\") { title id ...F } movies(ids: []) { year ... on Movie { title } id } }
                     fragment F on Movie { year }";
        let got = completed(
            query,
            json!({}),
            &[],
            json!({
                "movies": [{ "id": "1", "title": "T", "year": 1 }, { "title": "U", "year": 2, "id": "2" }],
                "b": { "year": 3, "id": "3", "title": "V" },
            }),
        );
        let want = r#"{"b":{"title":"V","id":"3","year":3},"movies":[{"year":1,"title":"T","id":"1"},{"year":2,"title":"U","id":"2"}]}"#;
        assert_eq!(got, want);
    }

    #[test]
    fn a_failed_nullable_field_is_null_and_its_siblings_stay() {
        let got = completed(
            "{ a: movie(id: \"bogus\") { title } b: movie(id: \"m\") { title } }",
            json!({}),
            &[&[json!("a")]],
            json!({ "b": { "title": "T" } }),
        );
        assert_eq!(got, r#"{"a":null,"b":{"title":"T"}}"#);
    }

    #[test]
    fn every_root_field_failing_still_leaves_data_an_object() {
        let got =
            completed("{ movie(id: \"bogus\") { title } }", json!({}), &[&[json!("movie")]], json!(null));
        assert_eq!(got, r#"{"movie":null}"#);
    }

    #[test]
    fn a_failed_non_null_field_nulls_its_nearest_nullable_parent() {
        // Movie.cast is [Credit!]!; Query.movie is nullable.
        let got = completed(
            "{ movie(id: \"m\") { title cast(first: 500) { character } } genres { name } }",
            json!({}),
            &[&[json!("movie"), json!("cast")]],
            json!({ "genres": [], "movie": { "title": "T" } }),
        );
        assert_eq!(got, r#"{"movie":null,"genres":[]}"#);
    }

    #[test]
    fn objects_already_in_order_still_have_their_values_completed() {
        // The root and the movie arrive complete and in order; below them, a credit's fields are
        // out of order and a non-null `cast` left null must still null the movie.
        let query = "{ movie(id: \"m\") { title cast(first: 2) { character person { name } } } \
                     other: movie(id: \"n\") { title cast(first: 1) { character } } }";
        let got = completed(
            query,
            json!({}),
            &[&[json!("other"), json!("cast")]],
            json!({
                "movie": { "title": "T", "cast": [
                    { "character": "A", "person": { "name": "P" } },
                    { "person": { "name": "Q" }, "character": "B" } ] },
                "other": { "title": "U", "cast": null },
            }),
        );
        let want = r#"{"movie":{"title":"T","cast":[{"character":"A","person":{"name":"P"}},{"character":"B","person":{"name":"Q"}}]},"other":null}"#;
        assert_eq!(got, want);
    }

    #[test]
    fn nulls_propagate_through_several_non_null_levels() {
        // similar: [Movie!]!, cast: [Credit!]!: a failed cast in the second similar movie nulls
        // that item, which nulls the list, which nulls the movie.
        let got = completed(
            "{ movie(id: \"m\") { title similar { title cast { character } } } }",
            json!({}),
            &[&[json!("movie"), json!("similar"), json!(1), json!("cast")]],
            json!({ "movie": { "title": "T", "similar": [
                { "title": "S1", "cast": [] }, { "title": "S2" } ] } }),
        );
        assert_eq!(got, r#"{"movie":null}"#);
    }

    #[test]
    fn a_nullable_list_item_takes_the_null_and_the_list_stays() {
        // movies(ids:) is [Movie]!: the second movie lost its non-null title.
        let got = completed(
            "{ movies(ids: [\"a\", \"b\", \"c\"]) { title } }",
            json!({}),
            &[&[json!("movies"), json!(1), json!("title")]],
            json!({ "movies": [{ "title": "A" }, null, { "title": "C" }] }),
        );
        assert_eq!(got, r#"{"movies":[{"title":"A"},null,{"title":"C"}]}"#);
        let got = completed(
            "{ movies(ids: [\"a\", \"b\"]) { title overview } }",
            json!({}),
            &[&[json!("movies"), json!(1), json!("title")]],
            json!({ "movies": [{ "overview": "x", "title": "A" }, { "overview": "y" }] }),
        );
        assert_eq!(got, r#"{"movies":[{"title":"A","overview":"x"},null]}"#);
    }

    #[test]
    fn a_non_null_root_field_failing_nulls_data() {
        // genres is [Genre!]!.
        let got = completed(
            "{ movie(id: \"m\") { title } genres { name } }",
            json!({}),
            &[&[json!("genres")]],
            json!({ "movie": { "title": "T" } }),
        );
        assert_eq!(got, "null");
    }

    #[test]
    fn errors_in_fragments_and_under_aliases_propagate_the_same_way() {
        let got = completed(
            "{ first: movie(id: \"m\") { ...Parts } second: movie(id: \"n\") { ...Parts } }
             fragment Parts on Movie { t: title overview }",
            json!({}),
            &[&[json!("first"), json!("t")]],
            json!({ "second": { "t": "S", "overview": null }, "first": { "overview": "o" } }),
        );
        assert_eq!(got, r#"{"first":null,"second":{"t":"S","overview":null}}"#);
    }

    #[test]
    fn an_object_whose_every_field_failed_keeps_its_nullable_fields_as_nulls() {
        // async-graphql makes an object with no successful field null; overview is nullable,
        // so the movie itself must stay an object.
        let got = completed(
            "{ movie(id: \"m\") { overview } }",
            json!({}),
            &[&[json!("movie"), json!("overview")]],
            json!({ "movie": null }),
        );
        assert_eq!(got, r#"{"movie":{"overview":null}}"#);
        // With no error below it, a null movie is the resolver's own null.
        let got = completed("{ movie(id: \"m\") { overview } }", json!({}), &[], json!({ "movie": null }));
        assert_eq!(got, r#"{"movie":null}"#);
    }

    #[test]
    fn fragments_on_another_type_add_no_nulls() {
        let got = completed(
            "{ movie(id: \"m\") { title ... on Person { name } ...P } } fragment P on Person { id }",
            json!({}),
            &[],
            json!({ "movie": { "title": "T" } }),
        );
        assert_eq!(got, r#"{"movie":{"title":"T"}}"#);
    }

    #[test]
    fn skipped_fields_are_not_filled_in() {
        let got = completed(
            "query ($no: Boolean!) { movie(id: \"m\") { title overview @include(if: $no) ... @skip(if: true) { year } } }",
            json!({ "no": false }),
            &[],
            json!({ "movie": { "title": "T" } }),
        );
        assert_eq!(got, r#"{"movie":{"title":"T"}}"#);
    }
}
