//! The gateway's shared state: one [`AppState`], a cheap clone of `Arc`s, built once by
//! `startup`. Handlers and middleware never take all of it: each takes the sub-state of its
//! stage through axum's `FromRef` ([`GraphqlState`] for the pipeline, [`AuthStage`] for
//! authentication, [`RateLimit`] for rate limits, [`Readiness`] for `/readyz`, [`Metrics`]),
//! so what a stage can touch is visible in its signature. This module imports the stages'
//! types; only the HTTP routes and `startup` import it, and no stage imports `http`, so there is
//! no cycle.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::extract::FromRef;
use marquee_store::Lifecycle;

use crate::auth::{AuthStage, Authenticator};
use crate::pipeline::GraphqlState;
use crate::rate_limit::RateLimit;
use crate::store::health::StoreHealth;
use crate::telemetry::Metrics;

/// Everything the routes share.
#[derive(Clone)]
pub struct AppState {
    /// The GraphQL pipeline's state.
    pub graphql: Arc<GraphqlState>,
    /// Token verification and issuing.
    pub authenticator: Arc<Authenticator>,
    /// Per-identity rate limits (on `/graphql` and `/auth/anonymous`).
    pub rate_limit: RateLimit,
    /// What `/readyz` reports.
    pub readiness: Readiness,
    /// Metrics registry and handles, shared: the metrics layer takes it on every request.
    pub metrics: Arc<Metrics>,
    /// Largest accepted request body.
    pub body_limit: BodyLimit,
    /// GraphiQL's page.
    pub graphiql: Graphiql,
    /// The proxies whose `X-Forwarded-For` names the client.
    pub proxies: crate::client_addr::TrustedProxies,
}

/// What `/readyz` looks at.
#[derive(Clone)]
pub struct Readiness {
    /// Set once shutdown begins: `/readyz` turns 503 so traffic moves away first.
    pub draining: Arc<AtomicBool>,
    /// Region name, reported by `/readyz`.
    pub region: Arc<str>,
    /// What the background probe last saw of the store.
    pub store_health: Arc<StoreHealth>,
    /// The store's lifecycle face (closed at shutdown).
    pub store: Arc<dyn Lifecycle>,
}

impl Readiness {
    /// Whether the gateway should get traffic: `Err` with why not (draining, or what the
    /// store last failed with).
    pub fn ready(&self) -> Result<(), NotReady> {
        if self.draining.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(NotReady::Draining);
        }
        self.store_health.status().map_err(NotReady::Store)
    }
}

/// Why a gateway should get no traffic now.
#[derive(Debug)]
pub enum NotReady {
    /// Shutting down: in-flight requests finish, new ones go elsewhere.
    Draining,
    /// The store has not answered lately: its last error.
    Store(String),
}

/// The largest request body `POST /graphql` reads, in bytes.
#[derive(Copy, Clone, Debug)]
pub struct BodyLimit(pub usize);

/// GraphiQL's page, rendered once at startup (`None`: not served).
#[derive(Clone, Debug, Default)]
pub struct Graphiql(pub Option<Arc<str>>);

macro_rules! substate {
    ($($ty:ty => |$s:ident| $get:expr;)*) => {$(
        impl FromRef<AppState> for $ty {
            fn from_ref($s: &AppState) -> Self {
                $get
            }
        }
    )*};
}

substate! {
    Arc<GraphqlState> => |s| s.graphql.clone();
    Arc<Authenticator> => |s| s.authenticator.clone();
    AuthStage => |s| AuthStage { authenticator: s.authenticator.clone(), rate_limit: s.rate_limit.clone() };
    RateLimit => |s| s.rate_limit.clone();
    Readiness => |s| s.readiness.clone();
    Arc<Metrics> => |s| s.metrics.clone();
    BodyLimit => |s| s.body_limit;
    Graphiql => |s| s.graphiql.clone();
}
