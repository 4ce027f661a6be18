//! What the cost analysis knows about the schema: each type's fields, the type each returns,
//! and how many items a list field can return. It is read from the schema itself — one
//! introspection query when the schema is built — so the facts have one source: a page size's
//! default is the `#[graphql(default = …)]` on its resolver, and the sizes of introspection
//! lists are the real counts of this schema's types, fields and arguments.
//!
//! Every list of objects must have a known bound: a `first` argument, an `ids` argument, a
//! measured introspection count, or an entry in [`UNPAGED_LISTS`]. A list field with none of
//! these is [`Items::Unbounded`], costed as [`MAX_PAGE`] items, and a test fails until it is
//! given a bound.

use std::collections::HashMap;

use async_graphql::{EmptySubscription, Schema};
use marquee_store::MAX_PAGE;
use serde_json::Value;

use crate::mutation::Mutation;
use crate::query::Query;

/// List fields without a page argument, and how many items each returns at most.
/// Connection `edges` are bounded by the `first` of the field that returned the connection,
/// which already multiplied everything below it.
pub(crate) const UNPAGED_LISTS: &[(&str, &str, Items)] = &[
    ("Query", "genres", Items::Fixed(marquee_store::GENRES.len() as u64)),
    ("MovieConnection", "edges", Items::One),
    ("CreditConnection", "edges", Items::One),
    ("RatingConnection", "edges", Items::One),
    ("WatchlistConnection", "edges", Items::One),
];

/// How many values a field returns for each value of its parent.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Items {
    /// A single value (or a list of scalars, which selects nothing below it).
    One,
    /// As many as the `first` argument says, this many when it is not given.
    First(u64),
    /// One per id in the `ids` argument.
    Ids,
    /// At most this many.
    Fixed(u64),
    /// A list of objects nobody gave a bound: costed as `MAX_PAGE` items.
    Unbounded,
}

/// A field of an object type.
#[derive(Clone, Debug)]
pub(crate) struct FieldShape {
    /// The named type it returns (lists and non-null unwrapped).
    pub(crate) ty: String,
    /// How many values it returns.
    pub(crate) items: Items,
    /// Whether each level of the type may be null, outermost first: one entry per list level
    /// and one for the named type (`[Movie!]!` is `[false, false]`, `Movie` is `[true]`).
    pub(crate) nullable: Vec<bool>,
}

/// The schema's object types and their fields, by name.
#[derive(Debug, Default)]
pub(crate) struct Shape {
    types: HashMap<String, HashMap<String, FieldShape>>,
    /// The root type of queries.
    pub(crate) query: String,
    /// The root type of mutations.
    pub(crate) mutation: Option<String>,
}

/// Read once per schema: what the cost analysis needs to know.
const INTROSPECT: &str = r#"{ __schema {
  queryType { name } mutationType { name }
  types { name kind
    fields(includeDeprecated: true) { name args { name defaultValue } type { ...T } }
    inputFields { name } enumValues(includeDeprecated: true) { name }
    interfaces { name } possibleTypes { name } }
  directives { name args { name } } } }
fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } }"#;

impl Shape {
    /// Reads the shape of Marquee's schema.
    pub(crate) fn of_marquee() -> Shape {
        let bare = Schema::build(Query, Mutation::default(), EmptySubscription).finish();
        // Introspection resolves from the schema's registry alone: no store, no runtime.
        let response = futures::executor::block_on(bare.execute(INTROSPECT));
        assert!(response.errors.is_empty(), "introspecting the schema failed: {:?}", response.errors);
        Shape::from_introspection(&response.data.into_json().unwrap_or_default())
    }

    /// Builds the shape from an introspection result (`{ "__schema": … }`).
    fn from_introspection(data: &Value) -> Shape {
        let schema = &data["__schema"];
        let list = |v: &Value| v.as_array().map_or(0, Vec::len) as u64;
        let types = schema["types"].as_array().cloned().unwrap_or_default();
        let max_over = |key: &str| types.iter().map(|t| list(&t[key])).max().unwrap_or(0);
        let field_args = types
            .iter()
            .flat_map(|t| t["fields"].as_array().into_iter().flatten())
            .map(|f| list(&f["args"]))
            .max()
            .unwrap_or(0);
        let directive_args = schema["directives"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| list(&d["args"]))
            .max()
            .unwrap_or(0);
        // The introspection lists, with this schema's real counts.
        let introspection: HashMap<(&str, &str), u64> = [
            (("__Schema", "types"), types.len() as u64),
            (("__Schema", "directives"), list(&schema["directives"])),
            (("__Type", "fields"), max_over("fields")),
            (("__Type", "inputFields"), max_over("inputFields")),
            (("__Type", "enumValues"), max_over("enumValues")),
            (("__Type", "interfaces"), max_over("interfaces")),
            (("__Type", "possibleTypes"), max_over("possibleTypes")),
            (("__Field", "args"), field_args),
            (("__Directive", "args"), directive_args),
        ]
        .into();

        let mut shape = Shape {
            query: schema["queryType"]["name"].as_str().unwrap_or("Query").to_owned(),
            mutation: schema["mutationType"]["name"].as_str().map(str::to_owned),
            ..Shape::default()
        };
        for ty in &types {
            let (Some(type_name), Some(fields)) = (ty["name"].as_str(), ty["fields"].as_array()) else {
                continue;
            };
            let mut by_name = HashMap::new();
            for field in fields {
                let Some(name) = field["name"].as_str() else { continue };
                let (named, list, object) = unwrap_type(&field["type"]);
                let args = field["args"].as_array().cloned().unwrap_or_default();
                let arg = |wanted: &str| args.iter().find(|a| a["name"] == wanted);
                let items = if let Some(first) = arg("first") {
                    let default = first["defaultValue"].as_str().and_then(|d| d.parse::<u64>().ok());
                    Items::First(default.unwrap_or(MAX_PAGE as u64))
                } else if arg("ids").is_some() && list {
                    Items::Ids
                } else if !(list && object) {
                    Items::One
                } else if let Some(&n) = introspection.get(&(type_name, name)) {
                    Items::Fixed(n)
                } else if let Some((_, _, items)) =
                    UNPAGED_LISTS.iter().find(|(t, f, _)| *t == type_name && *f == name)
                {
                    *items
                } else {
                    Items::Unbounded
                };
                let nullable = nullability(&field["type"]);
                by_name.insert(name.to_owned(), FieldShape { ty: named, items, nullable });
            }
            shape.types.insert(type_name.to_owned(), by_name);
        }
        shape
    }

    /// The field `name` of the object type `ty`, if both exist.
    pub(crate) fn field(&self, ty: &str, name: &str) -> Option<&FieldShape> {
        self.types.get(ty)?.get(name)
    }

    /// Every field of every object type, as (type, field, shape).
    #[cfg(test)]
    pub(crate) fn fields(&self) -> impl Iterator<Item = (&str, &str, &FieldShape)> {
        self.types.iter().flat_map(|(t, fields)| fields.iter().map(move |(f, s)| (t.as_str(), f.as_str(), s)))
    }
}

/// The named type under lists and non-nulls, whether a list is among the wrappers, and
/// whether the named type is an object (or interface or union).
fn unwrap_type(mut ty: &Value) -> (String, bool, bool) {
    let mut list = false;
    while let Some(kind) = ty["kind"].as_str() {
        match kind {
            "LIST" => list = true,
            "NON_NULL" => {}
            other => {
                let object = matches!(other, "OBJECT" | "INTERFACE" | "UNION");
                return (ty["name"].as_str().unwrap_or_default().to_owned(), list, object);
            }
        }
        ty = &ty["ofType"];
    }
    (String::new(), list, false)
}

/// Whether each level of an introspected type may be null, outermost first.
fn nullability(mut ty: &Value) -> Vec<bool> {
    let mut levels = Vec::new();
    let mut non_null = false;
    while let Some(kind) = ty["kind"].as_str() {
        match kind {
            "NON_NULL" => non_null = true,
            "LIST" => levels.push(!std::mem::take(&mut non_null)),
            _ => {
                levels.push(!non_null);
                break;
            }
        }
        ty = &ty["ofType"];
    }
    levels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_list_of_objects_has_a_bound() {
        let shape = Shape::of_marquee();
        let unbounded: Vec<String> = shape
            .fields()
            .filter(|(_, _, f)| f.items == Items::Unbounded)
            .map(|(t, f, _)| format!("{t}.{f}"))
            .collect();
        assert!(unbounded.is_empty(), "give these list fields a bound in UNPAGED_LISTS: {unbounded:?}");
    }

    #[test]
    fn page_defaults_and_introspection_counts_come_from_the_schema() {
        let shape = Shape::of_marquee();
        let items = |t: &str, f: &str| shape.field(t, f).map(|f| f.items);
        assert_eq!(items("Movie", "cast"), Some(Items::First(10)));
        assert_eq!(items("Movie", "similar"), Some(Items::First(5)));
        assert_eq!(items("Query", "browse"), Some(Items::First(20)));
        assert_eq!(items("Viewer", "ratings"), Some(Items::First(20)));
        assert_eq!(items("Query", "movies"), Some(Items::Ids));
        assert_eq!(items("Query", "genres"), Some(Items::Fixed(marquee_store::GENRES.len() as u64)));
        assert_eq!(items("MovieConnection", "edges"), Some(Items::One));
        assert_eq!(items("Movie", "genres"), Some(Items::One), "a list of strings selects nothing");
        assert_eq!(shape.field("Movie", "cast").map(|f| f.ty.as_str()), Some("Credit"));
        // __Type.enumValues is at least the 19 values of __DirectiveLocation.
        assert!(matches!(items("__Type", "enumValues"), Some(Items::Fixed(n)) if n >= 19));
        assert!(matches!(items("__Schema", "types"), Some(Items::Fixed(n)) if n > 20));
        let nullable = |t: &str, f: &str| shape.field(t, f).map(|f| f.nullable.clone());
        assert_eq!(nullable("Query", "movie"), Some(vec![true]), "Movie");
        assert_eq!(nullable("Query", "movies"), Some(vec![false, true]), "[Movie]!");
        assert_eq!(nullable("Movie", "cast"), Some(vec![false, false]), "[Credit!]!");
        assert_eq!(nullable("Movie", "title"), Some(vec![false]), "String!");
        assert_eq!(shape.query, "Query");
        assert_eq!(shape.mutation.as_deref(), Some("Mutation"));
    }
}
