//! A GraphQL request's whole way through the schema: parsing, the limit analysis, validation,
//! execution under the response budget and completion, against a small seeded catalog.
//!
//! Input: the query text, then optionally a NUL byte and the variables as JSON, then another
//! NUL and the operation name. Besides "never panics", each run checks what the hardening
//! promises: the analysis visits at most one selection per byte of the document (it is linear,
//! whatever the fragments do), a response never holds more values than the budget allows, and
//! every response serialises. libFuzzer's `-timeout` and `-rss_limit_mb` (set by `cargo xtask
//! fuzz`) turn a slow or memory-hungry input into a failure too.

#![no_main]

use std::sync::LazyLock;

use async_graphql::{Request, Value, Variables};
use libfuzzer_sys::fuzz_target;
use marquee_schema::{Analyzer, Caller, Loaders, MarqueeSchema, QueryLimits, SchemaConfig};
use marquee_store::Store;
use marquee_store::bulk::BulkLoad;
use marquee_store::bulk::seed::{SeedOptions, seed};
use marquee_store_embedded::{EmbeddedBulk, EmbeddedOptions, EmbeddedStore};

struct World {
    analyzer: Analyzer,
    schema: MarqueeSchema,
    store: Store,
    config: SchemaConfig,
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let sink = EmbeddedBulk::new(dir.path(), 16 << 20).sink("fuzz").expect("a catalog sink");
    let options = SeedOptions { movies: 300, people: Some(200), seed: 7 };
    seed(&options, sink, &mut |_| {}).expect("seeded");
    let store = Store::new(std::sync::Arc::new(
        EmbeddedStore::open(
            dir.path(),
            &EmbeddedOptions { cache_bytes: 16 << 20, ..EmbeddedOptions::default() },
        )
        .expect("opens"),
    ));
    let config = SchemaConfig::default();
    World {
        analyzer: Analyzer::new(config.limits),
        schema: marquee_schema::build(store.clone(), config.clone()),
        store,
        config,
        runtime: tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime"),
        _dir: dir,
    }
});

/// Values in a response: objects, lists and leaves.
fn values(value: &Value) -> u64 {
    1 + match value {
        Value::List(items) => items.iter().map(values).sum(),
        Value::Object(fields) => fields.values().map(values).sum(),
        _ => 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |b| *b == 0);
    let Some(query) = parts.next().and_then(|q| std::str::from_utf8(q).ok()) else { return };
    let variables = parts
        .next()
        .and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok())
        .filter(serde_json::Value::is_object)
        .map(Variables::from_json)
        .unwrap_or_default();
    let operation = parts.next().and_then(|o| std::str::from_utf8(o).ok()).filter(|o| !o.is_empty());
    let world = &*WORLD;

    if let Ok(document) = world.analyzer.parse(query) {
        let mut variables = variables.clone();
        if let Ok(cost) = world.analyzer.measure(&document, operation, &mut variables) {
            assert!(
                cost.visited <= query.len() as u64,
                "visited {} selections in {} bytes",
                cost.visited,
                query.len()
            );
        }
    }

    let mut request = Request::new(query).variables(variables);
    if let Some(operation) = operation {
        request = request.operation_name(operation);
    }
    let caller = Caller::Anonymous;
    let loaders = Loaders::new(&world.store, &world.config, None, &caller);
    let response = world.runtime.block_on(world.schema.execute(request.data(loaders).data(caller)));
    let QueryLimits { max_response_fields, .. } = world.config.limits;
    // Every field and list item resolved is one value and counts against the budget. Only
    // `__typename` is answered without the count (the estimate bounds those): hence the margin.
    assert!(values(&response.data) <= 2 * max_response_fields + 1, "a response past the budget");
    serde_json::to_vec(&response).expect("every response serialises");
});
