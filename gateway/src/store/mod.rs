//! The store stack: the one place that decides which backend serves this gateway and what
//! sits between it and the dataloaders.
//!
//! ```text
//! dataloaders (marquee_schema)
//!   → cached        read-through caches of shared data: rating totals (dropped through
//!                   `crate::changes` by the write path) and the entity cache (`entities`:
//!                   movies, people, credits), each a `crate::cache::Tiered`: an in-process
//!                   L1 and, when `[redis]` is set, the regional Redis Cluster as L2
//!   → instrumented  every backend call counted and traced (store_calls_total)
//!   → backend       chosen by `[store] backend` (`backend.rs`)
//! ```
//!
//! Each layer wraps only the faces of [`Store`] it concerns. The regional tier is not a layer
//! of its own: it is the second tier of each cache, consulted between its L1 and the store
//! inside the same single flight. Nothing outside this module and `startup` knows which backend runs.

mod backend;
pub mod cached;
pub mod entities;
pub mod health;
pub mod instrumented;

use std::sync::Arc;
use std::time::Duration;

use marquee_store::Store;

pub use backend::{bulk, collect_generations, migrate, open, reconcile};

use crate::telemetry::Metrics;

/// Settings of the layers above the backend.
#[derive(Clone)]
pub struct StackConfig {
    /// How long rating totals are cached (`cache.rating_totals_ttl_secs`).
    pub rating_totals_ttl: Duration,
    /// Memory for cached rating totals, in bytes.
    pub rating_totals_bytes: u64,
    /// The entity cache (`cache.entities_*`).
    pub entities: entities::EntityCacheConfig,
    /// The region's Redis (`[redis]`), behind the rating-totals cache and carrying its
    /// invalidations.
    pub regional: Option<Arc<crate::regional::Regional>>,
    /// Told of every change to ratings (the response cache, the CDN purger).
    pub subscribers: Vec<Arc<dyn crate::changes::Subscriber>>,
}

/// Stacks the layers over `backend`, bottom up.
pub fn stack(
    backend: Store,
    config: &StackConfig,
    metrics: &Metrics,
) -> Result<Store, crate::regional::RedisConfigError> {
    let name = backend.lifecycle.backend();
    let instrumented = instrumented::wrap(backend, name, metrics);
    cached::wrap(instrumented, config, metrics.cache_requests.clone(), metrics.follower.clone())
}
