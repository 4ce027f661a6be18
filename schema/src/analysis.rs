//! What a query would cost, worked out on the parsed document before anything runs: the
//! first step of the request inside the schema (`http` → **analysis** → resolvers). A query
//! over a limit (see [`QueryLimits`]) is refused here and never reaches a resolver or the store.
//!
//! The walk is linear in the size of the document, whatever its fragments do. Every fragment
//! is summarised once — fragments that spread no other fragment first, then those that spread
//! only summarised ones — and a spread adds the fragment's summary instead of walking it again.
//! (Expanding fragments at every spread costs the product of the fan-outs, which for a 1.5 KB
//! document nine fragments deep is billions of steps.) Spread chains are handled in that
//! order, not by recursion, so no document can exhaust the stack here.
//!
//! What it measures is what runs after it. async-graphql's validation walks every fragment
//! again at every spread (its cache-control, complexity and depth pass), and execution collects
//! fields through every spread, repeated ones included: so every spread counts each time it is
//! written, a fragment cycle — on which that pass would recurse forever — is refused here, and
//! so is selection nesting (fields, spreads and inline fragments) deeper than [`MAX_NESTING`],
//! the recursion limit async-graphql's own check enforced before this walk replaced it.
//!
//! The walk follows the schema's types ([`Shape`]): a list field multiplies the cost of what it
//! selects by how many items it can return (`first`, its default from the schema, the number
//! of `ids`, or a fixed bound). Variables count with their values, and with the operation's
//! defaults for those not sent (`with_defaults`); `@skip`/`@include` parts that will not run
//! cost nothing, but still count in the document's size, because validation walks them.
//! Introspection fields have their own depth and cost, with list sizes taken from this
//! schema's real counts, and their aliases count like any other.

use std::collections::{HashMap, HashSet};

use async_graphql::parser::types::{
    Directive, DocumentOperations, ExecutableDocument, Field, OperationType, Selection, SelectionSet,
};
use async_graphql::{Positioned, Value, Variables};
use async_graphql_value::Value as InputValue;

use crate::query_limits::{QueryLimits, Refusal, codes};
use crate::shape::{FieldShape, Items, Shape};

/// What a document costs: the largest of each measure over its operations, and the size of
/// the whole document.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    /// Deepest nesting of catalog fields.
    pub depth: u32,
    /// Estimated cost of catalog fields: each field 1, lists multiply what they select.
    pub complexity: u64,
    /// Deepest nesting of introspection fields, from the root.
    pub introspection_depth: u32,
    /// Estimated cost of introspection fields, by the same rule with this schema's counts.
    pub introspection_complexity: u64,
    /// Aliased fields, counting each use of a fragment.
    pub aliases: u64,
    /// Fields at the top of the operation.
    pub root_fields: u64,
    /// Fields in the document with every fragment expanded where it is used, skipped parts
    /// included and pages not multiplied: the work validation does.
    pub size: u64,
    /// Selections the walk visited: at most one per selection written in the document.
    pub visited: u64,
}

/// Checks one operation's measures against every limit, in the order a client fixes them.
fn check_operation(limits: &QueryLimits, cost: &Cost) -> Result<(), Refusal> {
    limits.check_depth(cost.depth, cost.introspection_depth)?;
    limits.check_aliases(cost.aliases)?;
    limits.check_root_fields(cost.root_fields)?;
    limits.check_complexity(cost.complexity)?;
    limits.check_introspection_complexity(cost.introspection_complexity)?;
    limits.check_size(cost.size)
}

/// What a selection costs, relative to where it is used.
#[derive(Copy, Clone, Debug, Default)]
struct Summary {
    cost: u64,
    introspection: u64,
    depth: u32,
    introspection_depth: u32,
    aliases: u64,
    width: u64,
    size: u64,
    /// Deepest selection nesting below here: a field with a selection, a fragment spread and
    /// an inline fragment each enter one level.
    nesting: u32,
}

impl Summary {
    /// Adds `part` (a field, or a fragment's summary); a part that will not run (`included`
    /// false) still adds to the size and aliases.
    fn absorb(&mut self, part: &Summary, included: bool) {
        self.size = self.size.saturating_add(part.size);
        self.aliases = self.aliases.saturating_add(part.aliases);
        self.nesting = self.nesting.max(part.nesting);
        if included {
            self.cost = self.cost.saturating_add(part.cost);
            self.introspection = self.introspection.saturating_add(part.introspection);
            self.width = self.width.saturating_add(part.width);
            self.depth = self.depth.max(part.depth);
            self.introspection_depth = self.introspection_depth.max(part.introspection_depth);
        }
    }
}

/// Where a selection runs inside an operation.
#[derive(Copy, Clone, Debug)]
struct Place {
    /// How many times it runs (the product of the page sizes above it).
    scale: u64,
    /// How deep its parent field is (0 at the root).
    level: u32,
}

/// The root field names that enter introspection, and the types they return.
fn meta_field(name: &str) -> Option<&'static str> {
    match name {
        "__schema" => Some("__Schema"),
        "__type" => Some("__Type"),
        _ => None,
    }
}

struct Walk<'a> {
    document: &'a ExecutableDocument,
    shape: &'a Shape,
    variables: &'a Variables,
    limits: &'a QueryLimits,
    /// Fragment summaries, filled in dependency order.
    fragments: HashMap<&'a str, Summary>,
    visited: u64,
}

impl<'a> Walk<'a> {
    /// A number argument: a literal, or a variable's value.
    fn number(&self, value: &InputValue) -> Option<u64> {
        match value {
            InputValue::Number(n) => n.as_u64(),
            InputValue::Variable(name) => match self.variables.get(name) {
                Some(Value::Number(n)) => n.as_u64(),
                _ => None,
            },
            _ => None,
        }
    }

    /// How many values a list argument holds (a single value is coerced into a list of one).
    fn length(&self, value: &InputValue) -> u64 {
        match value {
            InputValue::List(items) => items.len() as u64,
            InputValue::Null => 0,
            InputValue::Variable(name) => match self.variables.get(name) {
                Some(Value::List(items)) => items.len() as u64,
                Some(Value::Null) => 0,
                _ => 1,
            },
            _ => 1,
        }
    }

    fn skipped(&self, directives: &[Positioned<Directive>]) -> bool {
        skipped(directives, self.variables)
    }

    /// How many items `field` returns per parent.
    fn items(&self, field: &Field, shape: Option<&FieldShape>) -> u64 {
        let argument = |name: &str| field.get_argument(name).map(|v| &v.node);
        match shape.map(|s| s.items) {
            None | Some(Items::One) => 1,
            Some(Items::Fixed(n)) => n,
            Some(Items::Unbounded) => marquee_store::MAX_PAGE as u64,
            Some(Items::First(default)) => argument("first").and_then(|v| self.number(v)).unwrap_or(default),
            Some(Items::Ids) => argument("ids").map_or(1, |v| self.length(v)),
        }
    }

    /// The summary of `set` selected on `ty` (`None`: an unknown type, whose fields each cost 1).
    /// `place` is where the set runs when that is known (inside an operation, not in a
    /// fragment), so a field past a limit ends the walk at once.
    fn selection(
        &mut self,
        set: &'a SelectionSet,
        ty: Option<&'a str>,
        place: Option<Place>,
    ) -> Result<Summary, Refusal> {
        let mut out = Summary::default();
        for item in &set.items {
            self.visited += 1;
            let included = !self.skipped(item.node.directives());
            // A part that will not run has no place: it only adds to the size.
            let place = place.filter(|_| included);
            match &item.node {
                Selection::Field(field) => {
                    let part = self.field(&field.node, ty, place)?;
                    out.absorb(&part, included);
                }
                Selection::InlineFragment(inline) => {
                    let on = inline.node.type_condition.as_ref().map(|c| c.node.on.node.as_str()).or(ty);
                    let mut part = self.selection(&inline.node.selection_set.node, on, place)?;
                    part.nesting += 1;
                    out.absorb(&part, included);
                }
                Selection::FragmentSpread(s) => {
                    // Unknown fragments are left to validation, which names them.
                    if let Some(fragment) = self.fragments.get(s.node.fragment_name.node.as_str()) {
                        let mut part = *fragment;
                        part.nesting += 1;
                        out.absorb(&part, included);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The summary of one field on `parent`.
    fn field(
        &mut self,
        field: &'a Field,
        parent: Option<&'a str>,
        place: Option<Place>,
    ) -> Result<Summary, Refusal> {
        let name = field.name.node.as_str();
        let meta = meta_field(name);
        let shape = parent.and_then(|p| self.shape.field(p, name));
        let child_type = meta.or(shape.map(|s| s.ty.as_str()));
        let introspection = meta.is_some() || parent.is_some_and(|p| p.starts_with("__"));
        let items = if meta.is_some() { 1 } else { self.items(field, shape) };
        let below = place.map(|p| Place { scale: p.scale.saturating_mul(items), level: p.level + 1 });
        let child = self.selection(&field.selection_set.node, child_type, below)?;
        let own = |is_kind: bool| u64::from(is_kind);
        let level = |below: u32, is_kind: bool| if below > 0 { below + 1 } else { u32::from(is_kind) };
        let summary = Summary {
            cost: own(!introspection).saturating_add(items.saturating_mul(child.cost)),
            introspection: own(introspection).saturating_add(items.saturating_mul(child.introspection)),
            depth: level(child.depth, !introspection),
            introspection_depth: level(child.introspection_depth, introspection),
            aliases: own(field.alias.is_some()).saturating_add(child.aliases),
            width: 1,
            size: child.size.saturating_add(1),
            nesting: if field.selection_set.node.items.is_empty() { 0 } else { child.nesting + 1 },
        };
        // Inside an operation this field sits at a known depth and runs a known number of
        // times: past a limit already means refused (depth first, as the full check orders them).
        if let Some(place) = place {
            let at = |depth: u32| if depth > 0 { place.level + depth } else { 0 };
            self.limits.check_depth(at(summary.depth), at(summary.introspection_depth))?;
            self.limits.check_complexity(place.scale.saturating_mul(summary.cost))?;
            self.limits.check_introspection_complexity(place.scale.saturating_mul(summary.introspection))?;
        }
        Ok(summary)
    }

    /// Summarises every fragment, each after the fragments it spreads; refuses a document whose
    /// fragments spread each other in a cycle. Returns what each fragment spreads.
    fn summarise_fragments(&mut self) -> Result<HashMap<&'a str, Vec<&'a str>>, Refusal> {
        let document = self.document;
        let mut spreads: HashMap<&'a str, Vec<&'a str>> = HashMap::new();
        let mut waiting_on: HashMap<&'a str, usize> = HashMap::new();
        let mut dependents: HashMap<&'a str, Vec<&'a str>> = HashMap::new();
        // In name order, so that a document over two limits is always refused for the same one.
        let mut ordered: Vec<(&'a str, _)> =
            document.fragments.iter().map(|(n, f)| (n.as_str(), f)).collect();
        ordered.sort_unstable_by_key(|(name, _)| *name);
        for (name, fragment) in ordered {
            let mut names = Vec::new();
            spreads_in(&fragment.node.selection_set.node, &mut names);
            names.retain(|n| document.fragments.contains_key(*n));
            names.sort_unstable();
            names.dedup();
            for n in &names {
                dependents.entry(*n).or_default().push(name);
            }
            waiting_on.insert(name, names.len());
            spreads.insert(name, names);
        }
        let mut ready: Vec<&'a str> = waiting_on.iter().filter(|(_, n)| **n == 0).map(|(f, _)| *f).collect();
        ready.sort_unstable_by(|a, b| b.cmp(a));
        while let Some(name) = ready.pop() {
            let Some(fragment) = document.fragments.get(name) else { continue };
            let on = fragment.node.type_condition.node.on.node.as_str();
            let summary = self.selection(&fragment.node.selection_set.node, Some(on), None)?;
            // These only grow where a fragment is used: past a limit here is past it.
            self.limits.check_size(summary.size)?;
            self.limits.check_aliases(summary.aliases)?;
            check_nesting(summary.nesting)?;
            self.fragments.insert(name, summary);
            for dependent in dependents.get(name).into_iter().flatten() {
                if let Some(n) = waiting_on.get_mut(dependent) {
                    *n -= 1;
                    if *n == 0 {
                        ready.push(dependent);
                    }
                }
            }
        }
        if self.fragments.len() < document.fragments.len() {
            let mut cyclic: Vec<&str> = document
                .fragments
                .keys()
                .map(|n| n.as_str())
                .filter(|n| !self.fragments.contains_key(n))
                .collect();
            cyclic.sort_unstable();
            return Err(Refusal {
                code: codes::GRAPHQL_VALIDATION_FAILED,
                message: format!(
                    "fragments spread each other in a cycle (among {}); a fragment cannot contain itself",
                    cyclic.join(", ")
                ),
            });
        }
        Ok(spreads)
    }
}

/// Deepest selection nesting a document may have (async-graphql's recursion limit).
pub(crate) const MAX_NESTING: u32 = 32;

fn check_nesting(nesting: u32) -> Result<(), Refusal> {
    if nesting > MAX_NESTING {
        return Err(Refusal {
            code: codes::QUERY_TOO_DEEP,
            message: format!(
                "the document nests selections (fields, fragment spreads, inline fragments) at least {nesting} deep; the limit is {MAX_NESTING}"
            ),
        });
    }
    Ok(())
}

/// The names of the fragments spread anywhere in `set`.
fn spreads_in<'a>(set: &'a SelectionSet, out: &mut Vec<&'a str>) {
    for item in &set.items {
        match &item.node {
            Selection::Field(field) => spreads_in(&field.node.selection_set.node, out),
            Selection::InlineFragment(inline) => spreads_in(&inline.node.selection_set.node, out),
            Selection::FragmentSpread(s) => out.push(s.node.fragment_name.node.as_str()),
        }
    }
}

/// Measures every operation of `document` with `variables` and checks each against `limits`.
pub(crate) fn measure(
    document: &ExecutableDocument,
    shape: &Shape,
    variables: &Variables,
    limits: &QueryLimits,
) -> Result<Cost, Refusal> {
    let mut walk = Walk { document, shape, variables, limits, fragments: HashMap::new(), visited: 0 };
    let spreads = walk.summarise_fragments()?;
    let mut cost = Cost::default();
    let mut used: Vec<&str> = Vec::new();
    for (_, operation) in document.operations.iter() {
        let root = match operation.node.ty {
            OperationType::Query => Some(shape.query.as_str()),
            OperationType::Mutation => shape.mutation.as_deref(),
            OperationType::Subscription => None,
        };
        let set = &operation.node.selection_set.node;
        let summary = walk.selection(set, root, Some(Place { scale: 1, level: 0 }))?;
        check_nesting(summary.nesting)?;
        spreads_in(set, &mut used);
        let measured = Cost {
            depth: summary.depth,
            complexity: summary.cost,
            introspection_depth: summary.introspection_depth,
            introspection_complexity: summary.introspection,
            aliases: summary.aliases,
            root_fields: summary.width,
            size: summary.size,
            visited: 0,
        };
        check_operation(limits, &measured)?;
        cost = Cost {
            depth: cost.depth.max(measured.depth),
            complexity: cost.complexity.max(measured.complexity),
            introspection_depth: cost.introspection_depth.max(measured.introspection_depth),
            introspection_complexity: cost.introspection_complexity.max(measured.introspection_complexity),
            aliases: cost.aliases.max(measured.aliases),
            root_fields: cost.root_fields.max(measured.root_fields),
            size: cost.size.saturating_add(measured.size),
            visited: 0,
        };
    }
    // Fragments no operation uses are still validated: their size counts too.
    let mut reached: HashSet<&str> = HashSet::new();
    while let Some(name) = used.pop() {
        if reached.insert(name) {
            used.extend(spreads.get(name).into_iter().flatten());
        }
    }
    for (name, summary) in &walk.fragments {
        if !reached.contains(name) {
            cost.size = cost.size.saturating_add(summary.size);
        }
    }
    limits.check_size(cost.size)?;
    cost.visited = walk.visited;
    Ok(cost)
}

/// Whether `@skip`/`@include` keep a selection out of execution (as execution decides: a
/// condition that is not a boolean keeps it in).
pub(crate) fn skipped(directives: &[Positioned<Directive>], variables: &Variables) -> bool {
    let boolean = |value: &InputValue| match value {
        InputValue::Boolean(b) => Some(*b),
        InputValue::Variable(name) => match variables.get(name) {
            Some(Value::Boolean(b)) => Some(*b),
            _ => None,
        },
        _ => None,
    };
    directives.iter().any(|d| {
        let include = match d.node.name.node.as_str() {
            "skip" => false,
            "include" => true,
            _ => return false,
        };
        d.node.get_argument("if").and_then(|v| boolean(&v.node)).is_some_and(|c| c != include)
    })
}

/// The operation a request runs: the one named, or the only one.
pub(crate) fn operation<'d>(
    document: &'d ExecutableDocument,
    name: Option<&str>,
) -> Option<&'d Positioned<async_graphql::parser::types::OperationDefinition>> {
    match (&document.operations, name) {
        (DocumentOperations::Single(op), None) => Some(op),
        (DocumentOperations::Single(_), Some(_)) => None,
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops.values().next(),
        (DocumentOperations::Multiple(_), None) => None,
    }
}

/// Adds the declared defaults of the operation's variables that the request did not send, so
/// that the cost estimate and `@skip`/`@include` see the values execution will use; refuses a
/// request that leaves out a variable of a non-null type with no default. The GraphQL spec
/// makes that a request error (CoerceVariableValues); async-graphql only notices when a
/// resolver reads the argument, and answers with a field error and partial data.
pub(crate) fn with_defaults(
    document: &ExecutableDocument,
    operation_name: Option<&str>,
    variables: &mut Variables,
) -> Result<(), Refusal> {
    let Some(op) = operation(document, operation_name) else { return Ok(()) };
    for definition in &op.node.variable_definitions {
        let name = &definition.node.name.node;
        if variables.contains_key(name) {
            continue;
        }
        match &definition.node.default_value {
            Some(default) => {
                variables.insert(name.clone(), default.node.clone());
            }
            None if !definition.node.var_type.node.nullable => {
                return Err(Refusal {
                    code: crate::error::codes::BAD_USER_INPUT,
                    message: format!(
                        "variable \"${name}\" of required type \"{}\" was not provided",
                        definition.node.var_type.node
                    ),
                });
            }
            None => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use async_graphql::parser::parse_query;
    use std::sync::LazyLock;

    use super::*;

    static SHAPE: LazyLock<Shape> = LazyLock::new(Shape::of_marquee);

    fn cost_with(query: &str, variables: serde_json::Value, limits: &QueryLimits) -> Result<Cost, Refusal> {
        let document = parse_query(query).expect("parses");
        let mut variables = Variables::from_json(variables);
        with_defaults(&document, None, &mut variables)?;
        measure(&document, &SHAPE, &variables, limits)
    }

    fn cost(query: &str, variables: serde_json::Value) -> Cost {
        cost_with(query, variables, &QueryLimits::unlimited()).expect("within unlimited limits")
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
        let defaulted = cost("{ movie(id: \"tt1\") { cast { id: character } } }", serde_json::json!({}));
        assert_eq!(defaulted.complexity, 1 + (1 + 10));
        let ids = cost("{ movies(ids: [\"tt1\", \"tt2\"]) { title } }", serde_json::json!({}));
        assert_eq!(ids.complexity, 1 + 2);
        let ids_variable = cost(
            "query($ids: [ID!]!) { movies(ids: $ids) { title } }",
            serde_json::json!({ "ids": ["tt1", "tt2", "tt3"] }),
        );
        assert_eq!(ids_variable.complexity, 1 + 3);
    }

    #[test]
    fn every_paged_field_multiplies_including_the_signed_in_ones() {
        // `me { ratings }` pages like `browse`: the schema says so, not a list of names.
        let c = cost(
            "{ me { ratings(first: 50) { edges { node { movie { similar(first: 10) { title } } } } } } }",
            serde_json::json!({}),
        );
        // similar: 1 + 10; movie: 1 + 11; node: 1 + 12; edges: 1 + 13; ratings: 1 + 50*14; me: 1 + 701.
        assert_eq!(c.complexity, 702);
    }

    #[test]
    fn variable_defaults_are_the_values_that_run() {
        let q = "query($n: Int = 100) { browse(first: $n) { edges { node { id } } } }";
        assert_eq!(cost(q, serde_json::json!({})).complexity, 1 + 100 * (1 + 2));
        assert_eq!(cost(q, serde_json::json!({ "n": 2 })).complexity, 1 + 2 * (1 + 2));
    }

    #[test]
    fn a_required_variable_left_out_is_a_request_error() {
        let q = "query($id: ID!, $n: Int!, $m: Int! = 3, $o: Int) { movie(id: $id) { cast(first: $n) { character } } }";
        let limits = QueryLimits::default();
        let refused = cost_with(q, serde_json::json!({ "id": "tt1" }), &limits).expect_err("$n is missing");
        assert_eq!(refused.code, crate::error::codes::BAD_USER_INPUT);
        assert_eq!(refused.message, r#"variable "$n" of required type "Int!" was not provided"#);
        assert!(
            cost_with(q, serde_json::json!({ "id": "tt1", "n": 2 }), &limits).is_ok(),
            "a default stands in for a required variable, and a nullable one may be left out"
        );
    }

    #[test]
    fn skipped_parts_cost_nothing_but_count_in_the_size() {
        let q = "query($all: Boolean = false) { movie(id: \"tt1\") { title similar(first: 50) @include(if: $all) { title } } }";
        let c = cost(q, serde_json::json!({}));
        assert_eq!(c.complexity, 2);
        assert_eq!(c.size, 4);
        assert_eq!(cost(q, serde_json::json!({ "all": true })).complexity, 2 + 1 + 50);
        let skip =
            cost("{ movie(id: \"tt1\") { title ... @skip(if: true) { year } } }", serde_json::json!({}));
        assert_eq!(skip.complexity, 2);
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
        let Some(Items::Fixed(types)) = SHAPE.field("__Schema", "types").map(|f| f.items) else {
            panic!("__Schema.types has a fixed size")
        };
        // __schema: 1 + (types: 1 + types × name).
        assert_eq!(c.introspection_complexity, 2 + types);
        assert_eq!(c.introspection_depth, 3);
    }

    #[test]
    fn a_fragment_fan_out_is_walked_once_per_fragment() {
        // Eight copies of `similar { ...Next }` per level, nine levels: 8^9 paths through 146
        // selections (movie and the first spread, then 9 × 8 fields each holding a spread).
        let mut fragments = String::new();
        for level in 0..9 {
            let next = if level < 8 { format!("...N{}", level + 1) } else { "title".into() };
            let copies: Vec<String> = (0..8).map(|_| format!("similar {{ {next} }}")).collect();
            fragments.push_str(&format!("fragment N{level} on Movie {{ {} }} ", copies.join(" ")));
        }
        let query = format!("{{ movie(id: \"tt1\") {{ ...N0 }} }} {fragments}");
        let c = cost(&query, serde_json::json!({}));
        assert_eq!(c.visited, 146, "each selection of the document is visited once");
        assert_eq!(c.depth, 11, "movie, nine levels of similar, title");
        assert!(c.complexity > 1_000_000_000, "{}", c.complexity);
        let refused = cost_with(&query, serde_json::json!({}), &QueryLimits::default());
        assert_eq!(refused.err().map(|r| r.code), Some(codes::QUERY_TOO_COMPLEX));
    }

    /// A chain of `n` fragments, each spreading the next `copies` times.
    fn chain(n: usize, copies: usize) -> String {
        let mut query = String::from("{ movie(id: \"tt1\") { ...F0 } } ");
        for i in 0..n {
            let next =
                if i + 1 < n { vec![format!("...F{}", i + 1); copies].join(" ") } else { "title".into() };
            query.push_str(&format!("fragment F{i} on Movie {{ {next} }} "));
        }
        query
    }

    #[test]
    fn spread_chains_nest_and_long_ones_are_refused_without_recursing() {
        // movie, then 31 spreads: 32 levels, the most async-graphql's recursion allows.
        let c = cost(&chain(31, 1), serde_json::json!({}));
        assert_eq!(c.complexity, 2);
        assert!(
            cost_with(&chain(32, 1), serde_json::json!({}), &QueryLimits::unlimited())
                .is_err_and(|r| r.code == codes::QUERY_TOO_DEEP)
        );
        // Twenty thousand: refused, without a recursion as deep as the chain.
        let refused = cost_with(&chain(20_000, 1), serde_json::json!({}), &QueryLimits::unlimited());
        assert_eq!(refused.err().map(|r| r.code), Some(codes::QUERY_TOO_DEEP));
    }

    #[test]
    fn every_spread_counts_where_it_is_written() {
        // Execution and validation walk each spread: four spreads of one fragment cost four times.
        let once = cost(&chain(3, 1), serde_json::json!({}));
        let four = cost(&chain(3, 4), serde_json::json!({}));
        assert_eq!(once.size, 2);
        assert_eq!(four.size, 1 + 4 * 4);
        assert_eq!(four.complexity, 1 + 4 * 4);
        let fixture = include_str!("../tests/fixtures/adversarial/repeated-spreads.graphql");
        let refused = cost_with(fixture, serde_json::json!({}), &QueryLimits::default());
        assert_eq!(refused.err().map(|r| r.code), Some(codes::QUERY_TOO_COMPLEX));
    }

    #[test]
    fn fragment_cycles_are_refused() {
        let fixture = include_str!("../tests/fixtures/adversarial/fragment-cycle.graphql");
        let refused = cost_with(fixture, serde_json::json!({}), &QueryLimits::unlimited()).err();
        assert_eq!(refused.as_ref().map(|r| r.code), Some(codes::GRAPHQL_VALIDATION_FAILED));
        assert!(refused.is_some_and(|r| r.message.contains("A, B")));
        // An unused cycle too: the document is invalid whatever runs.
        let unused = "{ genres { name } } fragment A on Movie { ...A }";
        assert!(cost_with(unused, serde_json::json!({}), &QueryLimits::unlimited()).is_err());
    }

    #[test]
    fn each_limit_refuses_with_its_code() {
        let limits = QueryLimits::default();
        let refused = |q: &str| cost_with(q, serde_json::json!({}), &limits).err().map(|r| r.code);
        // Too deep and too costly: depth is reported, as the checks are ordered.
        let deep = "{ movie(id: \"1\") { cast { person { filmography { edges { node { movie { cast { person {
            filmography { edges { node { movie { title } } } } } } } } } } } } } }";
        assert_eq!(refused(deep), Some(codes::QUERY_TOO_DEEP));
        let aliases: String = (0..31).map(|i| format!("t{i}: title ")).collect();
        assert_eq!(
            refused(&format!("{{ movie(id: \"1\") {{ {aliases} }} }}")),
            Some(codes::TOO_MANY_ALIASES)
        );
        // Aliases inside introspection count too.
        let intro_aliases: String = (0..31).map(|i| format!("n{i}: name ")).collect();
        assert_eq!(
            refused(&format!("{{ __schema {{ queryType {{ {intro_aliases} }} }} }}")),
            Some(codes::TOO_MANY_ALIASES)
        );
        let deep_introspection = format!(
            "{{ __schema {{ types {{ {} }} }} }}",
            "ofType { ".repeat(40) + "name" + &" }".repeat(40)
        );
        assert_eq!(refused(&deep_introspection), Some(codes::QUERY_TOO_DEEP));
        let wide_introspection = "{ __schema { types { fields { type { fields { type { fields { type { fields { name } } } } } } } } } }";
        assert_eq!(refused(wide_introspection), Some(codes::QUERY_TOO_COMPLEX));
        let skipped_but_huge: String = (0..6_000).map(|_| "title ").collect();
        assert_eq!(
            refused(&format!("{{ movie(id: \"1\") @skip(if: true) {{ {skipped_but_huge} }} }}")),
            Some(codes::QUERY_TOO_COMPLEX)
        );
    }

    #[test]
    fn the_standard_introspection_query_fits_the_default_limits() {
        let query = include_str!("../tests/fixtures/introspection.graphql");
        // Estimated at 136,414 with depth 15 when written: the defaults leave room to grow.
        let c = cost_with(query, serde_json::json!({}), &QueryLimits::default());
        assert!(c.is_ok(), "{c:?}");
    }
}
