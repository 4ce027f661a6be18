//! What the document stage costs on adversarial documents: parsing, and measuring against the
//! limits (`marquee_schema::Analyzer`), for the documents that once took seconds
//! (`schema/tests/fixtures/adversarial/`), the standard introspection query, an ordinary
//! nested query, and the largest documents a 64 KB body can hold.
//!
//! `cargo bench -p marquee-bench --bench analysis`. Each document is measured twice: with the
//! default limits (what a gateway does: most adversarial documents are refused part-way) and
//! with no limits (the whole walk, the analysis's worst case for that document).

use std::hint::black_box;

use async_graphql::Variables;
use criterion::{BenchmarkId, Criterion, criterion_main};
use marquee_schema::{Analyzer, QueryLimits};

const ADVERSARIAL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../schema/tests/fixtures/adversarial");
const INTROSPECTION: &str = include_str!("../../schema/tests/fixtures/introspection.graphql");
const NESTED: &str = "query Nested($id: ID!) { movie(id: $id) { title year cast(first: 10) { character person { id name birthYear } } } }";
/// The default request body limit.
const BODY_LIMIT: usize = 64 * 1024;

/// A chain of fragments, each spreading the next, as long as fits in a body.
fn spread_chain() -> String {
    let mut query = String::from("{ movie(id: \"tt1\") { ...F0 } }\n");
    let mut i = 0;
    loop {
        let fragment = format!("fragment F{i} on Movie {{ ...F{} }}\n", i + 1);
        if query.len() + fragment.len() + 40 > BODY_LIMIT {
            query.push_str(&format!("fragment F{i} on Movie {{ title }}\n"));
            return query;
        }
        query.push_str(&fragment);
        i += 1;
    }
}

/// As many aliased fields as fit in a body.
fn wide() -> String {
    let mut query = String::from("{ movie(id: \"tt1\") {");
    let mut i = 0;
    while query.len() < BODY_LIMIT - 20 {
        query.push_str(&format!(" t{i}: title"));
        i += 1;
    }
    query.push_str(" } }");
    query
}

fn documents() -> Vec<(String, String)> {
    let mut documents: Vec<(String, String)> = std::fs::read_dir(ADVERSARIAL)
        .expect("the adversarial fixtures")
        .filter_map(Result::ok)
        .map(|entry| {
            let name = entry.file_name().to_string_lossy().trim_end_matches(".graphql").to_owned();
            (name, std::fs::read_to_string(entry.path()).expect("a fixture"))
        })
        .collect();
    documents.sort();
    documents.push(("standard-introspection".into(), INTROSPECTION.into()));
    documents.push(("nested-movie".into(), NESTED.into()));
    documents.push(("spread-chain-64k".into(), spread_chain()));
    documents.push(("aliases-64k".into(), wide()));
    documents
}

fn analysis(c: &mut Criterion) {
    let analyzers = [
        ("default", Analyzer::new(QueryLimits::default())),
        ("unlimited", Analyzer::new(QueryLimits::unlimited())),
    ];
    let variables = Variables::from_json(serde_json::json!({ "id": "tt0000001" }));
    let mut parse = c.benchmark_group("parse");
    for (name, text) in documents() {
        parse.bench_with_input(BenchmarkId::from_parameter(&name), &text, |b, text| {
            b.iter(|| async_graphql::parser::parse_query(black_box(text)).ok())
        });
    }
    parse.finish();
    let mut measure = c.benchmark_group("measure");
    for (name, text) in documents() {
        let Ok(document) = async_graphql::parser::parse_query(&text) else { continue };
        for (limits, analyzer) in &analyzers {
            measure.bench_with_input(BenchmarkId::new(*limits, &name), &document, |b, document| {
                b.iter(|| {
                    let mut variables = variables.clone();
                    analyzer.measure(black_box(document), None, &mut variables).ok()
                })
            });
        }
    }
    measure.finish();
}

mod group {
    // The macro defines an undocumented `pub fn`.
    #![allow(missing_docs, unreachable_pub)]
    criterion::criterion_group!(benches, super::analysis);
}
criterion_main!(group::benches);
