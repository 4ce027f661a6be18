//! End-to-end tests: the real gateway on a real socket (port 0) over a temporary data
//! directory, driven with a real HTTP client. One binary, one module per area.

mod abuse;
mod auth;
mod batching;
mod binary;
mod caching;
mod clients;
mod editing;
mod helpers;
mod http;
mod import;
mod lifecycle;
mod limits;
mod persisted;
mod queries;
mod readme;
mod regional;
mod spec;
mod traces;
mod users;
