//! Telemetry: the `tracing` subscriber (human or JSON lines) and the Prometheus metrics every
//! stage reports into. Log lines go to stderr around the progress bar being drawn
//! ([`PROGRESS`]): the bar is lifted while a line is written, so a line never lands at the end
//! of a bar. Colours only when stderr is a terminal, so logs written to a file stay plain.
//! Metrics live in a registry owned by the application rather than a
//! process global, so tests can run several gateways in one process and read each one's
//! counters; every series carries the configured `region` label. Traces, when configured, are
//! exported by [`traces`].

pub mod traces;

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};

use indicatif::ProgressBar;
use marquee_schema::LoaderMetrics;
use marquee_store::Lifecycle;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogConfig, LogFormat, TelemetryConfig};
use crate::telemetry::traces::{Traces, TracesError};

/// The progress bar being drawn on stderr, if any, so log lines can be written around it.
pub static PROGRESS: ActiveBar = ActiveBar(Mutex::new(None));

/// At most one progress bar at a time (see [`PROGRESS`]).
pub struct ActiveBar(Mutex<Option<ProgressBar>>);

impl ActiveBar {
    /// Makes `bar` the one drawn; log lines lift it while they are written.
    pub fn show(&self, bar: ProgressBar) -> ProgressBar {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(bar.clone());
        }
        bar
    }

    /// Sets the message drawn under the bar (when its template has one).
    pub fn set_message(&self, message: String) {
        if let Some(bar) = self.0.lock().ok().and_then(|slot| slot.clone()) {
            bar.set_message(message);
        }
    }

    /// Clears the bar from the terminal and forgets it.
    pub fn clear(&self) {
        if let Some(bar) = self.0.lock().ok().and_then(|mut slot| slot.take()) {
            bar.finish_and_clear();
        }
    }

    fn suspend<R>(&self, write: impl FnOnce() -> R) -> R {
        match self.0.lock().ok().and_then(|slot| slot.clone()) {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }
}

/// A log line on its way to stderr: written whole when dropped, with the bars lifted.
struct LogLine(Vec<u8>);

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            // A failed write to stderr has nowhere to be reported.
            let _ = PROGRESS.suspend(|| std::io::stderr().lock().write_all(&self.0));
        }
    }
}

/// Installs the global `tracing` subscriber: log lines as `config` says (`RUST_LOG`, when
/// set, overrides its filter), and with `[telemetry]` an OTLP endpoint, spans exported as
/// traces ([`traces`]). Call it on the Tokio runtime: the trace export runs there. Keep the
/// returned [`Traces`] until the end, and shut it down to export the last spans.
pub fn init_tracing(
    config: &LogConfig,
    telemetry: &TelemetryConfig,
    region: &str,
) -> Result<Option<Traces>, TracesError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.filter));
    let lines = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(|| LogLine(Vec::new()));
    let lines = match config.format {
        LogFormat::Human => lines.boxed(),
        LogFormat::Json => lines.json().flatten_event(true).with_current_span(true).boxed(),
    };
    let (traces, layer) = match Traces::start(telemetry, region)? {
        Some((traces, tracer)) => {
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_location(false)
                .with_threads(false)
                .with_level(false)
                .with_tracked_inactivity(false)
                // A warning in a request that still succeeded (a fallback taken) is an event of
                // its span, not a failed span; the request span's status says 5xx.
                .with_error_events_to_status(false)
                .with_filter(
                    tracing_subscriber::filter::filter_fn(exported)
                        .with_max_level_hint(tracing_subscriber::filter::LevelFilter::DEBUG),
                );
            (Some(traces), Some(layer))
        }
        None => (None, None),
    };
    // `try_init` fails only when a subscriber is already set (tests); keeping it is right.
    let _ = tracing_subscriber::registry().with(lines.with_filter(filter)).with(layer).try_init();
    Ok(traces)
}

/// What becomes part of a trace: Marquee's spans at `debug` and above, and Marquee's own
/// warnings and errors (as events of the span they happened in; other crates' messages may
/// quote what they were given).
fn exported(meta: &tracing::Metadata<'_>) -> bool {
    let level = if meta.is_span() { tracing::Level::DEBUG } else { tracing::Level::WARN };
    meta.target().starts_with("marquee_") && *meta.level() <= level
}

/// The gateway's metrics.
#[derive(Clone)]
pub struct Metrics {
    /// Rendered at `/metrics`.
    pub registry: Registry,
    /// `http_requests_total{route,status}`.
    pub http_requests: IntCounterVec,
    /// `http_request_duration_seconds{route}`.
    pub http_duration: HistogramVec,
    /// `store_calls_total{backend,op}`: one per backend round trip.
    pub store_calls: IntCounterVec,
    /// `store_call_duration_seconds{backend,op}`.
    pub store_duration: HistogramVec,
    /// `store_statements_per_call{backend,op}`: database statements one store call sent (a
    /// page of a paged read is one), for backends that send statements (ScyllaDB).
    pub store_statements: HistogramVec,
    /// `store_round_trips_per_call{backend,op}`: how many of a call's statements were waited
    /// for one after another (statements sent together count once).
    pub store_round_trips: HistogramVec,
    /// `dataloader_batch_size{loader}`.
    pub loader: LoaderMetrics,
    /// `cache_requests_total{cache,tier,result}`: lookups per cache (`response`,
    /// `rating_totals`, `movies`, `people`, `credits`, `apq`) and tier (`l1`: in process,
    /// `l2`: the region's Redis): `hit`, `miss`, `bypass`, keys `invalidated` by writes, and for
    /// `l2` `error` (Redis failed or was too slow) and `skipped` (left alone while failing).
    pub cache_requests: IntCounterVec,
    /// `rate_limiter_fallbacks_total`: checks the rate limiter could not answer, decided by
    /// the in-process fallback instead.
    pub rate_limiter_fallbacks: IntCounter,
    /// `redis_command_duration_seconds`: round trips to the regional Redis Cluster.
    pub redis_latency: prometheus::Histogram,
    /// `cache_l2_degraded`: 1 while the regional cache is failing (requests go to the store).
    pub cache_l2_degraded: prometheus::IntGauge,
    /// `cache_invalidations_total{event}`: invalidations `published` on the region's bus (or
    /// `publish_failed`), messages `received` from it, and other gateways' or regions' writes
    /// `followed` from the store's change log (applied region-wide by this gateway), and
    /// changes whose claim got no answer from the region's Redis, `follow_deferred` to the
    /// next read of the log.
    pub cache_invalidations: IntCounterVec,
    /// `cdn_purges_total{result}`: purges of the region's CDN edges (`ok`, `failed` after
    /// retries).
    pub cdn_purges: IntCounterVec,
    /// `cache_invalidation_bus_live`: 1 while the gateway receives the region's invalidations.
    pub cache_bus_live: prometheus::IntGauge,
    /// `redis_writes_refused_total`: writes the regional Redis refused because it is full
    /// (`maxmemory` reached under the `noeviction` policy).
    pub redis_writes_refused: IntCounter,
    /// Client connections.
    pub connections: ConnectionMetrics,
    /// `gateway_ready`: 1 while `/readyz` answers 200 (the store answers and the gateway is
    /// not draining), set when scraped.
    pub ready: IntGauge,
    /// The change-log follower's progress.
    pub follower: FollowerMetrics,
}

/// What the change-log follower (`crate::changes`) reports, for the alert on a follower that
/// fell behind or stopped.
#[derive(Clone)]
pub struct FollowerMetrics {
    /// `change_follower_unread_seconds{log}`: after each tick, how many seconds back the first
    /// second of the `ratings` or `catalog` log it could not read is (0: read up to now).
    pub unread: IntGaugeVec,
    /// `change_follower_last_tick_timestamp_seconds`: when the follower last finished reading
    /// the logs (Unix seconds; 0 on a gateway that follows none, without `[redis]`).
    pub last_tick: IntGauge,
}

/// The store driver's cumulative figures, copied into counters when scraped.
struct DriverCollector {
    lifecycle: Arc<dyn Lifecycle>,
    /// Two scrapes at once must not both add the same difference.
    copying: Mutex<()>,
    requests: IntCounter,
    errors: IntCounter,
    retries: IntCounter,
    speculative: IntCounter,
    timeouts: IntCounter,
    connections: IntGauge,
    reconciling: IntGauge,
    reconciled_at: IntGauge,
}

impl Collector for DriverCollector {
    fn desc(&self) -> Vec<&Desc> {
        [&self.requests, &self.errors, &self.retries, &self.speculative, &self.timeouts]
            .into_iter()
            .flat_map(Collector::desc)
            .chain(self.connections.desc())
            .chain(self.reconciling.desc())
            .chain(self.reconciled_at.desc())
            .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let copying = self.copying.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(figures) = self.lifecycle.driver_figures() {
            for (counter, value) in [
                (&self.requests, figures.requests),
                (&self.errors, figures.errors),
                (&self.retries, figures.retries),
                (&self.speculative, figures.speculative_executions),
                (&self.timeouts, figures.timeouts),
            ] {
                counter.inc_by(value.saturating_sub(counter.get()));
            }
            self.connections.set(i64::try_from(figures.connections).unwrap_or(i64::MAX));
            self.reconciling.set(i64::from(figures.reconciling));
            self.reconciled_at.set(i64::try_from(figures.reconciled_at_ms / 1_000).unwrap_or(i64::MAX));
        }
        let families = [&self.requests, &self.errors, &self.retries, &self.speculative, &self.timeouts]
            .into_iter()
            .flat_map(Collector::collect)
            .chain(self.connections.collect())
            .chain(self.reconciling.collect())
            .chain(self.reconciled_at.collect())
            .collect();
        drop(copying);
        families
    }
}

/// What the connection stage reports.
#[derive(Clone)]
pub struct ConnectionMetrics {
    /// `http_connections_open`: connections being served now.
    pub open: IntGauge,
    /// `http_connections_accepted_total`.
    pub accepted: IntCounter,
    /// `http_connections_closed_total{reason}`: `done`, `idle_timeout`, `header_timeout`,
    /// `write_timeout`, `protocol_error` (hyper refused the request head) or `error`.
    pub closed: IntCounterVec,
    /// `http_connections_limit_reached_total`: times the accept loop waited for a free slot
    /// because `http.max_connections` were open.
    pub limit_reached: IntCounter,
    /// `http_connections_max`: the connection cap in force (after the file-descriptor limit).
    pub max: IntGauge,
}

impl ConnectionMetrics {
    fn new(registry: &Registry) -> Result<ConnectionMetrics, prometheus::Error> {
        let metrics = ConnectionMetrics {
            open: IntGauge::new("http_connections_open", "Client connections being served")?,
            accepted: IntCounter::new("http_connections_accepted_total", "Client connections accepted")?,
            closed: IntCounterVec::new(
                Opts::new("http_connections_closed_total", "Client connections closed, by reason"),
                &["reason"],
            )?,
            limit_reached: IntCounter::new(
                "http_connections_limit_reached_total",
                "Times accepting waited because the connection cap was reached",
            )?,
            max: IntGauge::new("http_connections_max", "The connection cap in force")?,
        };
        registry.register(Box::new(metrics.open.clone()))?;
        registry.register(Box::new(metrics.accepted.clone()))?;
        registry.register(Box::new(metrics.closed.clone()))?;
        registry.register(Box::new(metrics.limit_reached.clone()))?;
        registry.register(Box::new(metrics.max.clone()))?;
        Ok(metrics)
    }
}

/// Latency buckets from 100µs to 10s.
const LATENCY_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

impl Metrics {
    /// Creates and registers every metric with `region` as a constant label.
    pub fn new(region: &str) -> Result<Metrics, prometheus::Error> {
        let labels: HashMap<String, String> = [("region".to_owned(), region.to_owned())].into();
        let registry = Registry::new_custom(None, Some(labels))?;
        let http_requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route and status"),
            &["route", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )?;
        let store_calls = IntCounterVec::new(
            Opts::new("store_calls_total", "Store round trips (a batch is one call)"),
            &["backend", "op"],
        )?;
        let store_duration = HistogramVec::new(
            HistogramOpts::new("store_call_duration_seconds", "Store round-trip latency")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["backend", "op"],
        )?;
        let per_call = vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
        let store_statements = HistogramVec::new(
            HistogramOpts::new("store_statements_per_call", "Database statements per store call")
                .buckets(per_call.clone()),
            &["backend", "op"],
        )?;
        let store_round_trips = HistogramVec::new(
            HistogramOpts::new(
                "store_round_trips_per_call",
                "Sequential database round trips per store call",
            )
            .buckets(per_call),
            &["backend", "op"],
        )?;
        let batch_size = HistogramVec::new(
            HistogramOpts::new("dataloader_batch_size", "Keys per dataloader batch")
                .buckets(vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0]),
            &["loader"],
        )?;
        let cache_requests = IntCounterVec::new(
            Opts::new("cache_requests_total", "Cache lookups by cache, tier and result"),
            &["cache", "tier", "result"],
        )?;
        registry.register(Box::new(cache_requests.clone()))?;
        let rate_limiter_fallbacks = IntCounter::new(
            "rate_limiter_fallbacks_total",
            "Rate-limit checks decided by the in-process fallback because the limiter was unavailable",
        )?;
        registry.register(Box::new(rate_limiter_fallbacks.clone()))?;
        let redis_latency = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "redis_command_duration_seconds",
                "Regional Redis round trips (a pipelined batch is one)",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(redis_latency.clone()))?;
        let cache_l2_degraded = prometheus::IntGauge::new(
            "cache_l2_degraded",
            "1 while the regional cache (Redis) fails and requests are served from the store",
        )?;
        registry.register(Box::new(cache_l2_degraded.clone()))?;
        let cache_invalidations = IntCounterVec::new(
            Opts::new("cache_invalidations_total", "Invalidations sent and received over the region's Redis"),
            &["event"],
        )?;
        registry.register(Box::new(cache_invalidations.clone()))?;
        let cache_bus_live = prometheus::IntGauge::new(
            "cache_invalidation_bus_live",
            "1 while the gateway receives the region's cache invalidations (Redis pub/sub)",
        )?;
        registry.register(Box::new(cache_bus_live.clone()))?;
        let redis_writes_refused = IntCounter::new(
            "redis_writes_refused_total",
            "Writes the regional Redis refused because it is full (maxmemory with the noeviction policy)",
        )?;
        registry.register(Box::new(redis_writes_refused.clone()))?;
        let cdn_purges = IntCounterVec::new(
            Opts::new("cdn_purges_total", "Purges of the region's CDN edges by surrogate key, by result"),
            &["result"],
        )?;
        registry.register(Box::new(cdn_purges.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(store_calls.clone()))?;
        registry.register(Box::new(store_duration.clone()))?;
        registry.register(Box::new(store_statements.clone()))?;
        registry.register(Box::new(store_round_trips.clone()))?;
        registry.register(Box::new(batch_size.clone()))?;
        let connections = ConnectionMetrics::new(&registry)?;
        let ready = IntGauge::new(
            "gateway_ready",
            "1 while /readyz answers 200: the store answers and the gateway is not draining",
        )?;
        registry.register(Box::new(ready.clone()))?;
        let follower = FollowerMetrics {
            unread: IntGaugeVec::new(
                Opts::new(
                    "change_follower_unread_seconds",
                    "How far back the first second of a change log the follower could not read is (0: read up to now)",
                ),
                &["log"],
            )?,
            last_tick: IntGauge::new(
                "change_follower_last_tick_timestamp_seconds",
                "When the change-log follower last finished reading the logs (Unix seconds)",
            )?,
        };
        registry.register(Box::new(follower.unread.clone()))?;
        registry.register(Box::new(follower.last_tick.clone()))?;
        registry.register(Box::new(traces::SPANS.clone()))?;
        Ok(Metrics {
            registry,
            http_requests,
            http_duration,
            store_calls,
            store_duration,
            store_statements,
            store_round_trips,
            loader: LoaderMetrics { batch_size },
            cache_requests,
            rate_limiter_fallbacks,
            redis_latency,
            cache_l2_degraded,
            cache_invalidations,
            cache_bus_live,
            redis_writes_refused,
            cdn_purges,
            connections,
            ready,
            follower,
        })
    }

    /// Reports the backend's driver figures (`store_driver_*{backend}`), read at each scrape.
    pub fn watch_driver(&self, lifecycle: Arc<dyn Lifecycle>) -> Result<(), prometheus::Error> {
        if lifecycle.driver_figures().is_none() {
            return Ok(());
        }
        let backend = lifecycle.backend();
        let counter = |name: &str, help: &str| {
            IntCounter::with_opts(Opts::new(name, help).const_label("backend", backend))
        };
        let collector = DriverCollector {
            lifecycle,
            copying: Mutex::new(()),
            requests: counter("store_driver_requests_total", "Requests the store driver sent")?,
            errors: counter("store_driver_errors_total", "Store driver requests that failed after retries")?,
            retries: counter(
                "store_driver_retries_total",
                "Retries made by the store driver's retry policy",
            )?,
            speculative: counter(
                "store_driver_speculative_executions_total",
                "Reads the store driver also sent to a second replica",
            )?,
            timeouts: counter(
                "store_driver_timeouts_total",
                "Store driver requests that timed out client-side",
            )?,
            connections: IntGauge::with_opts(
                Opts::new("store_driver_connections", "Connections the store driver holds open")
                    .const_label("backend", backend),
            )?,
            reconciling: IntGauge::with_opts(
                Opts::new(
                    "store_reconciler_lease_held",
                    "1 while this gateway holds its region's rating-reconciler lease",
                )
                .const_label("backend", backend),
            )?,
            reconciled_at: IntGauge::with_opts(
                Opts::new(
                    "store_reconciler_last_pass_timestamp_seconds",
                    "When this gateway last finished a rating-reconcile pass as its region's reconciler (Unix seconds; 0: never)",
                )
                .const_label("backend", backend),
            )?,
        };
        self.registry.register(Box::new(collector))
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Encoding into a String only fails on invalid metric names, which `new` rejects.
        if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "rendering metrics");
        }
        out
    }
}
