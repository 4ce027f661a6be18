//! Marquee's GraphQL schema: the types clients see, the resolvers behind them, and the
//! per-request dataloaders that turn a query's many small reads into one store call per
//! entity kind per level.
//!
//! This is the resolver stage of the read path (`http` → **schema** → loaders → store). Inside
//! it, a request is parsed, measured against the query limits (`analysis`, `query_limits`),
//! validated (once per document: `revalidation`), executed within a budget of resolved fields
//! and completed — query order, and field errors as nulls
//! that propagate as the spec says (`extension`, `completion`). The
//! schema holds only shared, immutable things (the store handle and settings); everything
//! per-request — the loaders and their caches — is attached to each request by the HTTP layer
//! with [`Loaders::new`], so no request can see another's data.

mod analysis;
mod caller;
mod completion;
mod context;
mod cursor;
mod editing;
mod error;
mod extension;
mod loaders;
mod mutation;
mod parse_cache;
mod query;
mod query_limits;
mod revalidation;
mod settings;
mod shape;
mod shown;
mod types;

use std::sync::Arc;

use async_graphql::{EmptySubscription, Schema};
use marquee_store::Store;

pub use analysis::Cost;
pub use caller::Caller;
pub use error::{ApiError, codes};
pub use extension::{Analyzer, ExecutionStarted};
pub use loaders::{LoaderMetrics, Loaders};
pub use mutation::Mutation;
pub use parse_cache::Parsed;
pub use query::Query;
pub use query_limits::{QueryLimits, codes as limit_codes};
pub use settings::SchemaConfig;
pub use shown::{Key as SurrogateKey, Shown};

/// The executable schema type.
pub type MarqueeSchema = Schema<Query, Mutation, EmptySubscription>;

/// Builds the schema over `store`.
pub fn build(store: Store, config: SchemaConfig) -> MarqueeSchema {
    let analyzer = Arc::new(Analyzer::new(config.limits));
    build_with(store, config, analyzer)
}

/// Builds the schema over `store`, parsing through `analyzer`: a caller that parses a
/// document before executing it (to learn its operation type) shares the parse with the
/// execution.
pub fn build_with(store: Store, config: SchemaConfig, analyzer: Arc<Analyzer>) -> MarqueeSchema {
    Schema::build(Query, Mutation::default(), EmptySubscription)
        .data(store)
        .data(config)
        .extension(extension::Pipeline(analyzer))
        .finish()
}

/// The schema in SDL, as checked in at `schema/schema.graphql`.
pub fn sdl() -> String {
    Schema::build(Query, Mutation::default(), EmptySubscription).finish().sdl()
}
