//! The region's Redis Cluster, shared by all its gateways: the second cache tier (L2) behind
//! every gateway's in-process one, the invalidation bus between them (`bus`), region-wide rate
//! limits (`limiter`) and APQ registrations (`crate::persisted`). So a region of many gateways
//! reads a hot entity from the store once, limits each client once, and knows every
//! registered query hash.
//!
//! Redis is an optimisation, never a dependency. Every call here answers: a lookup that fails
//! or takes longer than `redis.command_timeout_ms` is a miss, a write that fails is dropped, and
//! both are counted (`cache_requests_total{tier="l2",result="error"}`, `cache_l2_degraded`) and
//! logged once per change of state. After a failure the cluster is left alone for a second
//! (a circuit breaker: lookups are `skipped`, the limiter falls back), then one call probes it;
//! so a cluster that stopped answering costs one timeout per second, not one per request. The
//! client reconnects by itself, and a gateway starts and serves with the cluster down.
//!
//! A batch of keys is one pipelined round trip: keys are grouped by hash slot, one `MGET` per
//! slot (a cross-slot `MGET` fails on a cluster), and the pipeline sends each to its node.
//! What the keys and values are, and the TTL jitter, are the caches' (`crate::cache`): this
//! module moves bytes.
//!
//! A cluster that is full is not failing. Run with `maxmemory-policy allkeys-lru` it evicts and
//! never refuses a write; run with Redis's default, `noeviction`, it refuses writes with `OOM`
//! once `maxmemory` is reached while still answering reads. Those refusals are counted
//! (`redis_writes_refused_total`) and logged at most once a minute, but they neither open the
//! breaker nor mark the tier degraded: otherwise clients registering APQ hashes could fill
//! the cluster and so switch the region's L2 off for everyone.
//!
//! In production the cluster is reached over TLS (`redis.tls`; the server's certificate is
//! verified against public CAs, as ElastiCache's are issued, or against `redis.tls_ca_file`)
//! and with AUTH (`redis.username`, `redis.password`): ElastiCache with transit encryption and
//! an AUTH token. Nodes a cluster announces by address are checked against the name of the
//! seed that announced them (or the name the cluster announces alongside), so one certificate
//! for the cluster's names serves every node.

pub mod bus;
pub mod limiter;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fred::prelude::{
    Builder, ClientLike, Config as FredConfig, Expiration, KeysInterface, ReconnectPolicy, ServerConfig,
    Value,
};
use fred::types::Resolve;
use fred::types::config::{Server, TlsConfig, TlsConnector, TlsHostMapping};
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge};
use tracing::Instrument;

use crate::config::RedisConfig;

/// The TLS settings `config` asks for, or `None` when TLS is off.
fn tls_config(config: &RedisConfig) -> Result<Option<TlsConfig>, RedisConfigError> {
    if !config.tls {
        if config.tls_ca_file.is_some() {
            return Err(RedisConfigError("tls_ca_file is set and tls is off: set redis.tls = true".into()));
        }
        return Ok(None);
    }
    let mut roots = rustls::RootCertStore::empty();
    match &config.tls_ca_file {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(file) => {
            use rustls::pki_types::pem::PemObject as _;
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(file)
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(|e| RedisConfigError(format!("tls_ca_file {}: {e}", file.display())))?;
            if certs.is_empty() {
                return Err(RedisConfigError(format!(
                    "tls_ca_file {}: no PEM certificate in it",
                    file.display()
                )));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| RedisConfigError(format!("tls_ca_file {}: {e}", file.display())))?;
            }
        }
    }
    // Named explicitly: the dependency graph carries more than one rustls provider.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RedisConfigError(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(TlsConfig { connector: TlsConnector::from(client), hostnames: TlsHostMapping::DefaultHost }))
}

/// Why the client could not be set up (bad settings; an unreachable cluster is not an error).
#[derive(Debug, thiserror::Error)]
#[error("redis: {0}")]
pub struct RedisConfigError(String);

/// The metrics of the gateway's use of Redis.
#[derive(Clone)]
pub struct RegionalMetrics {
    /// `cache_requests_total`, counted under `tier="l2"`.
    pub requests: IntCounterVec,
    /// `redis_command_duration_seconds`: one pipelined round trip.
    pub latency: Histogram,
    /// `cache_l2_degraded`: 1 while the last call to the cluster failed.
    pub degraded: IntGauge,
    /// `cache_invalidations_total{event}`: invalidations published, failed, received.
    pub invalidations: IntCounterVec,
    /// `cache_invalidation_bus_live`: 1 while this gateway receives the region's invalidations.
    pub bus_live: IntGauge,
    /// `redis_writes_refused_total`: calls the cluster refused because it is full.
    pub refused: IntCounter,
}

/// The `tier` label of the regional tier.
pub const L2: &str = "l2";

/// How long the cluster is left alone after a failure before one call probes it.
const PROBE_AFTER: Duration = Duration::from_secs(1);

/// The least time between two warnings that the cluster is full.
const FULL_WARNING_EVERY: Duration = Duration::from_secs(60);

/// The outcome of claiming a key ([`Regional::claim_many`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This call set it: the caller acts.
    Won,
    /// Another caller holds it: that one acts.
    HeldElsewhere,
    /// The cluster did not say (an error, a timeout, the breaker open): nobody may hold it,
    /// so the caller asks again rather than assume either.
    Unknown,
}

/// A client of the region's Redis Cluster.
pub struct Regional {
    client: fred::clients::Client,
    /// The settings the client was made from (the bus makes its own connections from them).
    fred_config: FredConfig,
    /// Resolves the seeds' names, for every client of the cluster this gateway makes.
    resolver: Option<Arc<dyn Resolve>>,
    timeout: Duration,
    jitter_pct: u8,
    metrics: RegionalMetrics,
    breaker: Breaker,
    degraded: AtomicBool,
    /// When the last "cluster is full" warning was logged, in milliseconds after `started`
    /// (0: never).
    full_warned_at: AtomicU64,
    started: Instant,
    /// This gateway's value in the keys it claims: a claim whose reply was lost (it timed
    /// out, and the command ran later) is recognised as its own when asked again.
    claimant: String,
}

impl std::fmt::Debug for Regional {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Regional").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

/// A failed call from the breaker's point of view.
#[derive(Debug)]
enum CallError {
    /// The breaker is open: the call was not made.
    Skipped,
    /// The cluster did not answer in time.
    TimedOut,
    /// The cluster answered with an error, or the connection failed.
    Failed(fred::error::Error),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Skipped => f.write_str("skipped while the cluster is failing"),
            CallError::TimedOut => f.write_str("timed out"),
            CallError::Failed(e) => write!(f, "{e}"),
        }
    }
}

impl Regional {
    /// A client of the cluster at `config.seeds`, connecting in the background (the gateway
    /// does not wait for the cluster, and serves from the store while it is away).
    pub fn connect(
        config: &RedisConfig,
        metrics: RegionalMetrics,
    ) -> Result<Arc<Regional>, RedisConfigError> {
        Regional::connect_with(config, metrics, None)
    }

    /// [`Regional::connect`], resolving the seeds' names with `resolver` (fred's own, the
    /// system's `getaddrinfo`, when `None`). Must be called within a tokio runtime.
    pub fn connect_with(
        config: &RedisConfig,
        metrics: RegionalMetrics,
        resolver: Option<Arc<dyn Resolve>>,
    ) -> Result<Arc<Regional>, RedisConfigError> {
        let mut hosts = Vec::with_capacity(config.seeds.len());
        for seed in &config.seeds {
            let (host, port) = seed
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
                .ok_or_else(|| RedisConfigError(format!("seed `{seed}` is not host:port")))?;
            hosts.push(Server::new(host, port));
        }
        if hosts.is_empty() {
            return Err(RedisConfigError("seeds is empty".into()));
        }
        let timeout = config.command_timeout_ms.get().max(Duration::from_millis(1));
        let fred_config = FredConfig {
            server: ServerConfig::Clustered { hosts, policy: Default::default() },
            tls: tls_config(config)?,
            username: config.username.clone(),
            password: config.password.as_ref().map(|p| p.expose().to_owned()),
            // Keep trying in the background rather than failing the first connection.
            fail_fast: false,
            ..FredConfig::default()
        };
        let client = builder(&fred_config)
            .with_connection_config(|c| {
                // A command is tried once: a cache lookup is not worth waiting for.
                c.max_command_attempts = 1;
            })
            .with_performance_config(|p| p.default_command_timeout = timeout)
            .build()
            .map_err(|e| RedisConfigError(e.to_string()))?;
        start(&client, resolver.clone());
        Ok(Arc::new(Regional {
            client,
            fred_config,
            resolver,
            timeout,
            jitter_pct: config.ttl_jitter_pct,
            metrics,
            breaker: Breaker::new(),
            degraded: AtomicBool::new(false),
            full_warned_at: AtomicU64::new(0),
            started: Instant::now(),
            claimant: uuid::Uuid::new_v4().to_string(),
        }))
    }

    /// How much longer than asked, in percent at most, the caches keep an entry
    /// (`redis.ttl_jitter_pct`; applied by `crate::cache`).
    pub fn ttl_jitter_pct(&self) -> u8 {
        self.jitter_pct
    }

    /// Whether every connection to the cluster is up now.
    pub fn is_connected(&self) -> bool {
        self.client.is_connected()
    }

    /// Runs one call to the cluster through the breaker and the timeout, recording its
    /// latency and the tier's state.
    async fn call<T>(
        &self,
        what: &'static str,
        call: impl Future<Output = Result<T, fred::error::Error>>,
    ) -> Result<T, CallError> {
        if !self.breaker.admit() {
            return Err(CallError::Skipped);
        }
        // The operation, never its keys (they hold user ids and query hashes); within a request
        // or another traced task only (heartbeats would each be a trace of their own).
        let span = if tracing::Span::current().is_none() {
            tracing::Span::none()
        } else {
            tracing::debug_span!("redis", op = what, otel.kind = "client", outcome = tracing::field::Empty)
        };
        let started = Instant::now();
        let outcome = tokio::time::timeout(self.timeout, call).instrument(span.clone()).await;
        self.metrics.latency.observe(started.elapsed().as_secs_f64());
        span.record(
            "outcome",
            match &outcome {
                Ok(Ok(_)) => "ok",
                Ok(Err(_)) => "error",
                Err(_) => "timeout",
            },
        );
        let error = match outcome {
            Ok(Ok(value)) => {
                self.breaker.closed();
                self.recovered();
                return Ok(value);
            }
            Ok(Err(e)) if is_out_of_memory(&e) => {
                // The node answered: it is up, only full.
                self.breaker.closed();
                self.refused(what, &e);
                return Err(CallError::Failed(e));
            }
            Ok(Err(e)) => CallError::Failed(e),
            Err(_) => CallError::TimedOut,
        };
        self.failed(what, &error);
        Err(error)
    }

    /// Records a call the cluster refused for want of memory.
    fn refused(&self, what: &'static str, error: &fred::error::Error) {
        self.metrics.refused.inc();
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX).max(1);
        let last = self.full_warned_at.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= FULL_WARNING_EVERY.as_millis() as u64;
        if due
            && self.full_warned_at.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(
                what,
                error = %error,
                "the region's Redis is full and refuses writes: entries are not shared until it has room \
                 (run it with maxmemory-policy allkeys-lru)"
            );
        }
    }

    /// Records a failed call: opens the breaker and marks the tier degraded.
    fn failed(&self, what: &'static str, error: &dyn std::fmt::Display) {
        self.breaker.open();
        self.metrics.degraded.set(1);
        if !self.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(what, error = %error, "the region's Redis is failing: serving from the store");
        }
    }

    /// The values of `keys`, in order (`None`: a miss, or the cluster did not answer in
    /// time), counted under `cache`.
    pub async fn get_many(&self, cache: &str, keys: &[String]) -> Vec<Option<Vec<u8>>> {
        let mut out = vec![None; keys.len()];
        if keys.is_empty() {
            return out;
        }
        let mut by_slot: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (i, key) in keys.iter().enumerate() {
            by_slot.entry(fred::util::redis_keyslot(key.as_bytes())).or_default().push(i);
        }
        let pipeline = self.client.pipeline();
        let groups: Vec<Vec<usize>> = by_slot.into_values().collect();
        for group in &groups {
            let slot_keys: Vec<&str> = group.iter().map(|&i| keys[i].as_str()).collect();
            // Queued in memory; sent below in one round trip.
            let _: Result<(), _> = pipeline.mget(slot_keys).await;
        }
        let replies = match self.call("lookup", async { Ok(pipeline.try_all::<Value>().await) }).await {
            Ok(replies) => replies,
            Err(CallError::Skipped) => {
                self.count(cache, "skipped", keys.len());
                return out;
            }
            Err(_) => {
                self.count(cache, "error", keys.len());
                return out;
            }
        };
        let (mut hits, mut misses, mut errors) = (0, 0, 0);
        for (group, reply) in groups.iter().zip(replies) {
            match reply {
                Ok(Value::Array(values)) if values.len() == group.len() => {
                    for (&i, value) in group.iter().zip(values) {
                        match value {
                            Value::Bytes(bytes) => {
                                out[i] = Some(bytes.to_vec());
                                hits += 1;
                            }
                            Value::String(text) => {
                                out[i] = Some(text.as_bytes().to_vec());
                                hits += 1;
                            }
                            _ => misses += 1,
                        }
                    }
                }
                Ok(other) => {
                    errors += group.len();
                    tracing::debug!(?other, "unexpected MGET reply");
                }
                Err(_) => errors += group.len(),
            }
        }
        self.count(cache, "hit", hits);
        self.count(cache, "miss", misses);
        if errors > 0 {
            // Part of the cluster failed (a node down): the breaker takes it as a failure.
            self.count(cache, "error", errors);
            self.failed("lookup", &format_args!("{errors} of {} keys failed", keys.len()));
        }
        out
    }

    /// Stores `entries` (key, value, TTL), best effort; whether every one was stored.
    pub async fn put_many(&self, entries: Vec<(String, Vec<u8>, Duration)>) -> bool {
        if entries.is_empty() {
            return true;
        }
        let pipeline = self.client.pipeline();
        for (key, value, ttl) in entries {
            let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
            let _: Result<(), _> =
                pipeline.set(key, value.as_slice(), Some(Expiration::PX(ttl_ms)), None, false).await;
        }
        self.run_pipeline("write", pipeline).await
    }

    /// Deletes `keys`; whether the cluster confirmed it.
    pub async fn delete_many(&self, keys: &[String]) -> bool {
        if keys.is_empty() {
            return true;
        }
        let pipeline = self.client.pipeline();
        for key in keys {
            // One DEL per key: a multi-key DEL across slots fails on a cluster.
            let _: Result<(), _> = pipeline.del(key.as_str()).await;
        }
        self.run_pipeline("delete", pipeline).await
    }

    /// Counts `n` invalidations under `cache_invalidations_total{event}`.
    pub fn count_invalidations(&self, event: &str, n: usize) {
        if n > 0 {
            self.metrics.invalidations.with_label_values(&[event]).inc_by(n as u64);
        }
    }

    /// Claims each of `keys` for its time to live, one [`Claim`] per key: `SET key <this gateway> NX GET`
    /// (Redis 7), so a key this gateway already holds (a claim whose reply timed out while
    /// the command itself ran) is won again rather than taken for another's. What a claim
    /// stands for is the caller's (one gateway of the region acting on something).
    pub async fn claim_many(&self, keys: &[(String, Duration)]) -> Vec<Claim> {
        if keys.is_empty() {
            return Vec::new();
        }
        let pipeline = self.client.pipeline();
        for (key, ttl) in keys {
            let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
            let _: Result<(), _> = pipeline
                .set(
                    key.as_str(),
                    self.claimant.as_str(),
                    Some(Expiration::PX(ttl_ms)),
                    Some(fred::types::SetOptions::NX),
                    true,
                )
                .await;
        }
        let replies = self.call("claim", async { Ok(pipeline.try_all::<Value>().await) }).await;
        match replies {
            Ok(replies) => replies
                .into_iter()
                .map(|reply| match reply {
                    // Nothing was there: set now.
                    Ok(Value::Null) => Claim::Won,
                    Ok(Value::String(holder)) if *holder == *self.claimant => Claim::Won,
                    Ok(Value::Bytes(holder)) if *holder == *self.claimant.as_bytes() => Claim::Won,
                    Ok(Value::String(_) | Value::Bytes(_)) => Claim::HeldElsewhere,
                    _ => Claim::Unknown,
                })
                .collect(),
            Err(_) => vec![Claim::Unknown; keys.len()],
        }
    }

    async fn run_pipeline(
        &self,
        what: &'static str,
        pipeline: fred::clients::Pipeline<fred::clients::Client>,
    ) -> bool {
        let outcome = self
            .call(what, async {
                let replies = pipeline.try_all::<Value>().await;
                match replies.into_iter().find_map(Result::err) {
                    Some(error) => Err(error),
                    None => Ok(()),
                }
            })
            .await;
        outcome.is_ok()
    }

    fn count(&self, cache: &str, result: &str, n: usize) {
        if n > 0 {
            self.metrics.requests.with_label_values(&[cache, L2, result]).inc_by(n as u64);
        }
    }

    fn recovered(&self) {
        if self.degraded.swap(false, Ordering::Relaxed) {
            self.metrics.degraded.set(0);
            tracing::info!("the region's Redis answers again");
        }
    }
}

/// Whether `error` is Redis refusing a command because `maxmemory` is reached.
fn is_out_of_memory(error: &fred::error::Error) -> bool {
    error.details().starts_with("OOM ")
}

/// Connects `client` in the background, its seeds resolved by `resolver` (set first, so the
/// first connection already uses it).
fn start<C: ClientLike + 'static>(client: &C, resolver: Option<Arc<dyn Resolve>>) {
    let client = client.clone();
    tokio::spawn(async move {
        if let Some(resolver) = resolver {
            client.set_resolver(resolver).await;
        }
        let _connection = client.connect();
    });
}

/// A client builder from `config`, with the reconnection settings every connection to the
/// cluster shares.
fn builder(config: &FredConfig) -> Builder {
    let mut builder = Builder::from_config(config.clone());
    builder
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(1);
            c.internal_command_timeout = Duration::from_secs(2);
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
    builder
}

/// The circuit breaker: closed (calls go), open (calls are skipped until `PROBE_AFTER` has
/// passed since the last failure), then half-open (one call probes; its outcome closes or
/// reopens it).
struct Breaker {
    epoch: Instant,
    /// Milliseconds since `epoch` until which calls are skipped; 0: closed.
    open_until_ms: AtomicU64,
}

impl Breaker {
    fn new() -> Breaker {
        Breaker { epoch: Instant::now(), open_until_ms: AtomicU64::new(0) }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX).max(1)
    }

    /// Whether a call may go now (in the half-open state, only the first caller's does).
    fn admit(&self) -> bool {
        let until = self.open_until_ms.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = self.now_ms();
        now >= until
            && self
                .open_until_ms
                .compare_exchange(until, now + probe_ms(), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    fn open(&self) {
        self.open_until_ms.store(self.now_ms() + probe_ms(), Ordering::Release);
    }

    fn closed(&self) {
        self.open_until_ms.store(0, Ordering::Release);
    }
}

fn probe_ms() -> u64 {
    u64::try_from(PROBE_AFTER.as_millis()).unwrap_or(1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_skips_after_a_failure_then_lets_one_probe_through() {
        let breaker = Breaker::new();
        assert!(breaker.admit() && breaker.admit(), "closed: every call goes");
        breaker.open();
        assert!(!breaker.admit(), "open: calls are skipped");
        // Pretend the probe delay has passed.
        breaker.open_until_ms.store(1, Ordering::Release);
        assert!(breaker.admit(), "half-open: the first caller probes");
        assert!(!breaker.admit(), "and only the first");
        breaker.closed();
        assert!(
            breaker.open_until_ms.load(Ordering::Acquire) == 0 && breaker.admit(),
            "a successful probe closes it"
        );
    }
}
