//! Assembling and running a gateway: open the configured store and stack its layers
//! (`crate::store`), build the schema and every stage's state (`crate::state`), bind the
//! listener, and serve until told to stop, then drain and close the store. `Application::build` binds before
//! it returns, so tests start it on port 0 and read the real port.

use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use marquee_schema::SchemaConfig;
use marquee_store::StoreError;
use tokio::net::TcpListener;

use crate::auth::{AuthSetupError, Authenticator};
use crate::cache_policy::CachePolicy;
use crate::changes::Subscriber;
use crate::client_addr::TrustedProxies;
use crate::config::{Config, StoreConfig};
use crate::http::graphiql;
use crate::persisted::{ManifestError, PersistedQueries};
use crate::pipeline::GraphqlState;
use crate::purge::EdgePurger;
use crate::rate_limit::{InProcessLimiter, RateLimit};
use crate::regional::limiter::RegionalLimiter;
use crate::regional::{Regional, RegionalMetrics};
use crate::response_cache::ResponseCache;
use crate::server::ConnectionLimits;
use crate::state::{AppState, BodyLimit, Graphiql, Readiness};
use crate::store::StackConfig;
use crate::store::entities::EntityCacheConfig;
use crate::store::health::StoreHealth;
use crate::telemetry::Metrics;

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartupError {
    /// The store would not open.
    #[error("opening the store")]
    Store(#[from] StoreError),
    /// The listen address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A setting is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Signing keys or the JWKS are unusable.
    #[error("setting up authentication")]
    Auth(#[from] AuthSetupError),
    /// The persisted-query manifest is unusable.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Metrics could not be registered.
    #[error("registering metrics")]
    Metrics(#[from] prometheus::Error),
    /// `[redis]` is invalid.
    #[error(transparent)]
    Redis(#[from] crate::regional::RedisConfigError),
    /// `[dns]` could not be set up.
    #[error(transparent)]
    Dns(#[from] crate::dns::DnsConfigError),
    /// `[cdn]` is invalid.
    #[error(transparent)]
    Cdn(#[from] crate::purge::CdnConfigError),
}

fn rate_limit(
    config: &Config,
    metrics: &Metrics,
    regional: Option<&Arc<Regional>>,
) -> Result<RateLimit, StartupError> {
    let limits = &config.rate_limit;
    let fallbacks = metrics.rate_limiter_fallbacks.clone();
    if !limits.enabled {
        return Ok(RateLimit::disabled(fallbacks));
    }
    let (Some(per_second), Some(burst)) = (NonZeroU32::new(limits.per_second), NonZeroU32::new(limits.burst))
    else {
        return Err(StartupError::Config(
            "rate_limit.per_second and rate_limit.burst must be above 0".into(),
        ));
    };
    let in_process = Arc::new(InProcessLimiter::new(per_second, burst));
    Ok(match regional {
        // Region-wide, with this gateway's own limiter when Redis does not answer.
        Some(regional) => RateLimit::new(
            Arc::new(RegionalLimiter::new(regional.clone(), per_second, burst)),
            Some(in_process),
            fallbacks,
        ),
        // The in-process limiter is never unavailable, so it needs no fallback.
        None => RateLimit::new(in_process, None, fallbacks),
    })
}

/// A built gateway, bound and ready to serve.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    state: AppState,
    config: Config,
    connections: ConnectionLimits,
}

impl Application {
    /// Opens the configured store, builds the schema and binds `config.listen`.
    pub async fn build(config: Config) -> Result<Application, StartupError> {
        config.check(true).map_err(|e| StartupError::Config(e.to_string()))?;
        let secrets = config.http.origin_secrets().map_err(|e| StartupError::Config(e.to_string()))?;
        let proxies = TrustedProxies::new(&config.http.trusted_proxies, &config.http.origin_header, &secrets)
            .map_err(StartupError::Config)?;
        let metrics = Metrics::new(&config.region)?;
        let backend = crate::store::open(&config.store).await?;
        metrics.watch_driver(backend.lifecycle.clone())?;
        // The seeds' names resolve through `[dns]` (only read when there is a cluster to find).
        let resolver = match &config.redis {
            Some(_) => {
                let resolver: Arc<dyn fred::types::Resolve> =
                    Arc::new(crate::dns::FredResolver(crate::dns::resolver(&config.dns)?));
                Some(resolver)
            }
            None => None,
        };
        let regional = config
            .redis
            .as_ref()
            .map(|redis| {
                Regional::connect_with(
                    redis,
                    RegionalMetrics {
                        requests: metrics.cache_requests.clone(),
                        latency: metrics.redis_latency.clone(),
                        degraded: metrics.cache_l2_degraded.clone(),
                        invalidations: metrics.cache_invalidations.clone(),
                        bus_live: metrics.cache_bus_live.clone(),
                        refused: metrics.redis_writes_refused.clone(),
                    },
                    resolver.clone(),
                )
            })
            .transpose()?;
        let response_cache = config.response_cache.enabled.then(|| {
            Arc::new(ResponseCache::new(
                config.response_cache.max_mib.bytes(),
                config.response_cache.max_ttl_secs.get(),
                metrics.cache_requests.clone(),
            ))
        });
        // A backend that switches to a newly published catalog generation while running: the
        // responses stored from the old one are dropped (the entity caches follow on their own).
        if let (Some(cache), Some(mut changes)) = (&response_cache, backend.lifecycle.catalog_changes()) {
            let cache = Arc::downgrade(cache);
            tokio::spawn(async move {
                while changes.changed().await.is_ok() {
                    let id = changes.borrow_and_update().clone();
                    let Some(cache) = cache.upgrade() else { return };
                    cache.catalog_switched();
                    tracing::info!(catalog = %id, "serving a newly published catalog generation");
                }
            });
        }
        // What else holds ratings, told of every change.
        let mut subscribers: Vec<Arc<dyn Subscriber>> = Vec::new();
        if let Some(cache) = &response_cache {
            subscribers.push(cache.clone());
        }
        if let Some(purger) = EdgePurger::new(&config.cdn, metrics.cdn_purges.clone())? {
            subscribers.push(Arc::new(purger));
        }
        let stack = StackConfig {
            rating_totals_ttl: config.cache.rating_totals_ttl_secs.get(),
            rating_totals_bytes: config.cache.rating_totals_mib.bytes(),
            entities: EntityCacheConfig {
                max_bytes: config.cache.entities_mib.bytes(),
                ttl: config.cache.entities_ttl_secs.get(),
                regional: regional.clone(),
                catalog_id: backend.lifecycle.catalog_id(),
                catalog_changes: backend.lifecycle.catalog_changes(),
            },
            regional: regional.clone(),
            subscribers,
        };
        let store = crate::store::stack(backend, &stack, &metrics)?;
        let schema_config = SchemaConfig {
            image_base_url: config.graphql.image_base_url.clone(),
            batch_delay: config.graphql.batch_delay_us.get(),
            limits: config.graphql.limits,
        };
        // One parse cache for the schema and the stages that look at a document before it runs.
        let documents = Arc::new(marquee_schema::Analyzer::new(schema_config.limits));
        let schema = marquee_schema::build_with(store.clone(), schema_config.clone(), documents.clone());
        let authenticator = Arc::new(Authenticator::new(&config.auth).await?);
        let persisted = Arc::new(PersistedQueries::new(
            &config.persisted_queries,
            regional.clone(),
            metrics.cache_requests.clone(),
            documents.clone(),
        )?);
        let connections = ConnectionLimits::from_config(&config.http);
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartupError::Bind { addr: config.listen, source })?;
        let addr =
            listener.local_addr().map_err(|source| StartupError::Bind { addr: config.listen, source })?;
        let state = AppState {
            graphql: Arc::new(GraphqlState {
                documents,
                schema,
                store: store.clone(),
                schema_config,
                loader_metrics: metrics.loader.clone(),
                persisted,
                response_cache,
                cache_policy: CachePolicy {
                    stale_while_revalidate: config.cache.stale_while_revalidate_secs,
                    stale_if_error: config.cache.stale_if_error_secs,
                },
            }),
            authenticator,
            rate_limit: rate_limit(&config, &metrics, regional.as_ref())?,
            readiness: Readiness {
                draining: Arc::new(AtomicBool::new(false)),
                region: config.region.as_str().into(),
                store_health: StoreHealth::new(store.lifecycle.clone()),
                store: store.lifecycle.clone(),
            },
            metrics: Arc::new(metrics),
            body_limit: BodyLimit(config.http.body_limit_bytes),
            graphiql: Graphiql(
                config
                    .graphql
                    .graphiql
                    .then(|| graphiql::page(config.graphql.graphiql_assets_url.as_deref(), "/graphql")),
            ),
            proxies,
        };
        Ok(Application { listener, addr, state, config, connections })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state (for tests and embedding).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves; then reports not-ready for `http.drain_delay_ms`,
    /// stops accepting, lets in-flight requests finish (up to `http.shutdown_grace_ms`), and
    /// closes the store.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Application { listener, state, config, connections, .. } = self;
        state.authenticator.spawn_refresh();
        state.graphql.persisted.spawn_reload();
        let store_probe = state.readiness.store_health.spawn_probe();
        // An embedded data directory takes catalog deltas through its spool (`crate::delta`).
        let spool = match &config.store {
            StoreConfig::Embedded(embedded) => {
                let share = crate::delta::Share::percent(embedded.delta_share_percent);
                Some(crate::delta::follow_spool(&embedded.data_dir, state.graphql.store.edits.clone(), share))
            }
            StoreConfig::Scylla(_) => None,
        };
        let router = crate::http::router(
            state.clone(),
            config.request_timeout(),
            config.graphql.graphiql && config.graphql.graphiql_assets_url.is_none(),
        );
        let drain_delay = config.http.drain_delay_ms.get();
        let grace = config.http.shutdown_grace_ms.get();
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let draining = state.readiness.draining.clone();
        let signal = async move {
            shutdown.await;
            draining.store(true, Ordering::SeqCst);
            tracing::info!(?drain_delay, "draining: /readyz now answers 503");
            tokio::time::sleep(drain_delay).await;
            tracing::info!("closing the listener; finishing in-flight requests");
            let _ = stopping_tx.send(());
        };
        let server =
            crate::server::serve(listener, router, connections, state.metrics.connections.clone(), signal);
        let deadline = async move {
            if stopping_rx.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = server => {}
            () = deadline => {
                tracing::warn!(?grace, "in-flight requests did not finish within the grace period; stopping anyway");
            }
        }
        store_probe.abort();
        if let Some(spool) = spool {
            spool.abort();
        }
        if let Err(e) = state.readiness.store.close().await {
            tracing::error!(error = %e, "closing the store");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "listening for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "listening for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
