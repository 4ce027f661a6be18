//! Marquee's regional GraphQL gateway.
//!
//! A request flows `server` (connections: cap, header and idle time limits) → `http` (routes,
//! metrics) → `auth` (bearer token → caller) → `limits` (rate) → `marquee_schema` (query limits,
//! resolvers) → per-request dataloaders → the store (`instrumented` wraps it with metrics and
//! spans). `startup` wires
//! those stages together behind [`startup::Application`]; `config` and `telemetry` are the
//! cross-cutting pieces; `catalog` holds the seed and import commands.

pub mod auth;
pub mod cache_policy;
pub mod catalog;
pub mod config;
pub mod error;
pub mod http;
pub mod instrumented;
pub mod limits;
pub mod persisted;
pub mod response_cache;
pub mod server;
pub mod startup;
pub mod telemetry;
