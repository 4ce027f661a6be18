//! Assembling and running a gateway: open the store, build the schema, bind the listener, and
//! serve until told to stop, then drain and close the store. `Application::build` binds before
//! it returns, so tests start it on port 0 and read the real port.

use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use marquee_schema::{MarqueeSchema, SchemaConfig};
use marquee_store::embedded::{EmbeddedOptions, EmbeddedStore};
use marquee_store::{DynStore, StoreError};
use tokio::net::TcpListener;

use crate::auth::{AuthSetupError, Authenticator};
use crate::cache_policy::CachePolicy;
use crate::config::Config;
use crate::http::graphiql::{self, AssetSource, MissingAsset};
use crate::instrumented::InstrumentedStore;
use crate::limits::{InProcessLimiter, RateLimiter};
use crate::persisted::{ManifestError, PersistedQueries};
use crate::response_cache::ResponseCache;
use crate::server::ConnectionLimits;
use crate::telemetry::Metrics;

/// Shared state of one gateway: a cheap clone of `Arc`s handed to every handler.
#[derive(Clone)]
pub struct AppState {
    /// The store, wrapped so every call is counted and traced.
    pub store: DynStore,
    /// The executable schema (immutable; per-request loaders are attached per request).
    pub schema: MarqueeSchema,
    /// Resolver settings, also needed to build each request's loaders.
    pub schema_config: SchemaConfig,
    /// Metrics registry and handles.
    pub metrics: Metrics,
    /// Set once shutdown begins: `/readyz` turns 503 so traffic moves away first.
    pub draining: Arc<AtomicBool>,
    /// Region name, reported by `/readyz`.
    pub region: Arc<str>,
    /// Largest accepted request body.
    pub body_limit: usize,
    /// GraphiQL's page, rendered once (`None`: not served).
    pub graphiql: Option<Arc<str>>,
    /// Per-identity rate limiter for `/graphql` (`None`: unlimited).
    pub limiter: Option<Arc<dyn RateLimiter>>,
    /// Staleness allowances for cacheable responses.
    pub cache_policy: CachePolicy,
    /// Token verification and issuing.
    pub auth: Arc<Authenticator>,
    /// APQ, manifest and safelist.
    pub persisted: Arc<PersistedQueries>,
    /// Whole public GET responses (`None`: disabled).
    pub response_cache: Option<Arc<ResponseCache>>,
}

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
    /// GraphiQL's assets directory is incomplete.
    #[error(transparent)]
    Graphiql(#[from] MissingAsset),
    /// Metrics could not be registered.
    #[error("registering metrics")]
    Metrics(#[from] prometheus::Error),
}

fn rate_limiter(config: &Config) -> Result<Option<Arc<dyn RateLimiter>>, StartupError> {
    let limits = &config.rate_limit;
    if !limits.enabled {
        return Ok(None);
    }
    let (Some(per_second), Some(burst)) = (NonZeroU32::new(limits.per_second), NonZeroU32::new(limits.burst))
    else {
        return Err(StartupError::Config(
            "rate_limit.per_second and rate_limit.burst must be above 0".into(),
        ));
    };
    Ok(Some(Arc::new(InProcessLimiter::new(per_second, burst))))
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
    /// Opens the store in `config.data_dir`, builds the schema and binds `config.listen`.
    pub async fn build(config: Config) -> Result<Application, StartupError> {
        let metrics = Metrics::new(&config.region)?;
        let options = EmbeddedOptions { cache_bytes: config.store.cache_mib * 1024 * 1024 };
        let data_dir = config.data_dir.clone();
        let embedded = tokio::task::spawn_blocking(move || EmbeddedStore::open(&data_dir, &options))
            .await
            .map_err(StoreError::backend)??;
        let store: DynStore = Arc::new(InstrumentedStore::new(Arc::new(embedded), metrics.clone()));
        let schema_config = SchemaConfig {
            image_base_url: config.graphql.image_base_url.clone(),
            batch_delay: Duration::from_micros(config.graphql.batch_delay_us),
            limits: config.graphql.limits(),
        };
        let schema = marquee_schema::build(store.clone(), schema_config.clone());
        let auth = Arc::new(Authenticator::new(&config.auth).await?);
        let persisted = Arc::new(PersistedQueries::new(&config.persisted_queries)?);
        let response_cache = config.response_cache.enabled.then(|| {
            Arc::new(ResponseCache::new(
                config.response_cache.max_mib * 1024 * 1024,
                Duration::from_secs(config.response_cache.max_ttl_secs),
                metrics.cache_requests.clone(),
            ))
        });
        let graphiql_assets = match &config.graphql.graphiql_assets_dir {
            Some(dir) => AssetSource::Dir(dir.clone()),
            None => AssetSource::Cdn(config.graphql.graphiql_assets_url.clone()),
        };
        if config.graphql.graphiql {
            graphiql_assets.check()?;
        }
        let connections = ConnectionLimits::from_config(&config.http);
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartupError::Bind { addr: config.listen, source })?;
        let addr =
            listener.local_addr().map_err(|source| StartupError::Bind { addr: config.listen, source })?;
        let state = AppState {
            store,
            schema,
            schema_config,
            metrics,
            draining: Arc::new(AtomicBool::new(false)),
            region: config.region.as_str().into(),
            body_limit: config.http.body_limit_bytes,
            graphiql: config.graphql.graphiql.then(|| graphiql::page(&graphiql_assets, "/graphql")),
            limiter: rate_limiter(&config)?,
            cache_policy: CachePolicy {
                stale_while_revalidate: config.cache.stale_while_revalidate_secs,
                stale_if_error: config.cache.stale_if_error_secs,
            },
            auth,
            persisted,
            response_cache,
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
        state.auth.spawn_refresh();
        state.persisted.spawn_reload();
        let router = crate::http::router(
            state.clone(),
            config.request_timeout(),
            config.graphql.graphiql_assets_dir.as_deref().filter(|_| config.graphql.graphiql),
        );
        let drain_delay = Duration::from_millis(config.http.drain_delay_ms);
        let grace = Duration::from_millis(config.http.shutdown_grace_ms);
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let draining = state.draining.clone();
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
        if let Err(e) = state.store.close().await {
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
