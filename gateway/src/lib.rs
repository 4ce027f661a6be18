//! Marquee's regional GraphQL gateway.
//!
//! A request flows through these stages, one module each (the same numbers in ARCHITECTURE.md
//! and in `pipeline`):
//!
//! 1. `server` — connections: cap, header and idle time limits;
//! 2. `http` — routes, media type, error shape, metrics, timeout (`http/graphql.rs` reads the
//!    GraphQL request from GET or POST), and who the client is (`client_addr`: its address
//!    behind trusted proxies);
//! 3. `auth` — bearer token → caller;
//! 4. `rate_limit` — per-identity rate;
//! 5. `persisted` — which document runs (from `pipeline`, as are 6-8);
//! 6. `response_cache` — a public GET answered again;
//! 7. query limits and execution (`pipeline/execute.rs` → `marquee_schema`): its resolvers and
//!    per-request dataloaders → `store` (the store stack: caches, instrumentation, the backend
//!    chosen in config);
//! 8. cache headers (`pipeline/respond.rs`, `cache_policy`).
//!
//! `startup` builds all of it behind [`startup::Application`] and `state` holds what the
//! stages share; `config` and `telemetry` are cross-cutting; `cache` is the cache abstraction
//! every shared cache uses; `changes` carries what writes changed to every cache holding it
//! (this gateway's, the region's, the edge's, the other regions'); `progress` runs the seed, import and export commands with progress
//! bars; `dns` resolves the names in the configuration.

pub mod auth;
pub mod cache;
pub mod cache_policy;
pub mod changes;
pub mod client_addr;
pub mod config;
pub mod delta;
pub mod dns;
pub mod error;
pub mod http;
pub mod persisted;
pub mod pipeline;
pub mod progress;
pub mod purge;
pub mod rate_limit;
pub mod regional;
pub mod response_cache;
pub mod secret;
pub mod server;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
