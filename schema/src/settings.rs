//! The settings the schema is built with (the gateway fills them from its configuration).
//! Resolvers read them from the schema's data; they live in a module of their own so no
//! module imports the crate root.

use std::time::Duration;

use crate::query_limits::QueryLimits;

/// Settings the resolvers need.
#[derive(Clone, Debug)]
pub struct SchemaConfig {
    /// Prefix for `Movie.posterUrl` (poster paths are stored relative).
    pub image_base_url: String,
    /// How long a dataloader waits to collect a batch.
    pub batch_delay: Duration,
    /// Depth, complexity, alias, root-field and response-size limits.
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
