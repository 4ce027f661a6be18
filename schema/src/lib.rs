//! Marquee's GraphQL schema: the types clients see, the resolvers behind them, and the
//! per-request dataloaders that turn a query's many small reads into one store call per
//! entity kind per level.
//!
//! This is the resolver stage of the read path (`http` → **schema** → loaders → store). The
//! schema holds only shared, immutable things (the store handle and settings); everything
//! per-request — the loaders and their caches — is attached to each request by the HTTP layer
//! with [`Loaders::new`], so no request can see another's data.

mod caller;
mod cursor;
mod document;
mod error;
mod limits;
mod loaders;
mod mutation;
mod ordering;
mod parse_cache;
mod query;
mod types;

use std::time::Duration;

use async_graphql::{EmptySubscription, Schema};
use marquee_store::DynStore;

pub use caller::Caller;
pub use error::{ApiError, codes};
pub use limits::{QueryLimits, codes as limit_codes};
pub use loaders::{LoaderMetrics, Loaders};
pub use mutation::Mutation;
pub use query::Query;

/// The executable schema type.
pub type MarqueeSchema = Schema<Query, Mutation, EmptySubscription>;

/// Query text whose parsed form is kept across requests.
const PARSE_CACHE_BYTES: u64 = 8 * 1024 * 1024;

/// Settings the resolvers need.
#[derive(Clone, Debug)]
pub struct SchemaConfig {
    /// Prefix for `Movie.posterUrl` (poster paths are stored relative).
    pub image_base_url: String,
    /// How long a dataloader waits to collect a batch.
    pub batch_delay: Duration,
    /// Depth, complexity, alias and root-field limits.
    pub limits: QueryLimits,
}

impl Default for SchemaConfig {
    fn default() -> Self {
        SchemaConfig {
            image_base_url: "https://images.marquee.example".into(),
            batch_delay: Duration::ZERO,
            limits: QueryLimits::default(),
        }
    }
}

/// Builds the schema over `store`.
pub fn build(store: DynStore, config: SchemaConfig) -> MarqueeSchema {
    Schema::build(Query, Mutation, EmptySubscription)
        .data(store)
        .extension(config.limits)
        .data(config)
        .extension(ordering::QueryOrder)
        // Innermost: only the text → AST step is shared between requests.
        .extension(parse_cache::ParseCache::new(PARSE_CACHE_BYTES))
        .finish()
}

/// The schema in SDL, as checked in at `schema/schema.graphql`.
pub fn sdl() -> String {
    Schema::build(Query, Mutation, EmptySubscription).finish().sdl()
}
