//! The regional cache tier (L2): the region's Redis Cluster, shared by all its gateways, so a
//! region reads a hot entity from the store once rather than once per gateway.
//!
//! Redis is an optimisation, never a dependency. Every call here answers: a lookup that fails
//! or takes longer than `cache.redis.command_timeout_ms` is a miss, a write that fails is
//! dropped, and both are counted (`cache_requests_total{tier="l2",result="error"}`,
//! `cache_l2_degraded`) and logged at most once per state change. The client reconnects by
//! itself; a gateway starts and serves with the cluster down.
//!
//! A batch of keys is one pipelined round trip: keys are grouped by hash slot, one `MGET` per
//! slot (a cross-slot `MGET` fails on a cluster), and the pipeline sends each to its node.
//! Values are postcard bytes under keys that carry the encoding version and the catalog
//! generation (see `store::entities`); every entry gets the caller's TTL plus up to
//! `ttl_jitter_pct` percent, so entries written together do not expire together.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fred::prelude::{
    Builder, ClientLike, Config as FredConfig, Expiration, KeysInterface, ReconnectPolicy, ServerConfig,
    Value,
};
use fred::types::config::Server;
use prometheus::{Histogram, IntCounterVec, IntGauge};
use serde::{Deserialize, Serialize};

/// `[cache.redis]`: the region's Redis Cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Cluster nodes to discover the cluster from, `host:port`.
    pub seeds: Vec<String>,
    /// A lookup or write taking longer is a miss (or dropped), in milliseconds.
    pub command_timeout_ms: u64,
    /// Extra time to live, up to this percentage of an entry's TTL, chosen per entry.
    pub ttl_jitter_pct: u8,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig { seeds: Vec::new(), command_timeout_ms: 50, ttl_jitter_pct: 10 }
    }
}

/// Why the tier could not be set up (bad settings; an unreachable cluster is not an error).
#[derive(Debug, thiserror::Error)]
#[error("cache.redis: {0}")]
pub struct RedisConfigError(String);

/// The tier's metrics.
#[derive(Clone)]
pub struct RegionalMetrics {
    /// `cache_requests_total`, counted under `tier="l2"`.
    pub requests: IntCounterVec,
    /// `redis_command_duration_seconds`: one pipelined round trip.
    pub latency: Histogram,
    /// `cache_l2_degraded`: 1 while the last call to the cluster failed.
    pub degraded: IntGauge,
}

/// A client of the region's Redis Cluster.
pub struct RegionalCache {
    client: fred::clients::Client,
    timeout: Duration,
    jitter_pct: u8,
    metrics: RegionalMetrics,
    degraded: AtomicBool,
}

impl std::fmt::Debug for RegionalCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionalCache").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

/// The `tier` label of this tier.
pub const L2: &str = "l2";

impl RegionalCache {
    /// A client of the cluster at `config.seeds`, connecting in the background (the gateway
    /// does not wait for the cluster, and serves from the store while it is away).
    pub fn connect(
        config: &RedisConfig,
        metrics: RegionalMetrics,
    ) -> Result<Arc<RegionalCache>, RedisConfigError> {
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
        let timeout = Duration::from_millis(config.command_timeout_ms.max(1));
        let fred_config = FredConfig {
            server: ServerConfig::Clustered { hosts, policy: Default::default() },
            // Keep trying in the background rather than failing the first connection.
            fail_fast: false,
            ..FredConfig::default()
        };
        let client = Builder::from_config(fred_config)
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(1);
                c.internal_command_timeout = Duration::from_secs(2);
                // A command is tried once: a cache lookup is not worth waiting for.
                c.max_command_attempts = 1;
            })
            .with_performance_config(|p| p.default_command_timeout = timeout)
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
            .build()
            .map_err(|e| RedisConfigError(e.to_string()))?;
        let _connection = client.connect();
        Ok(Arc::new(RegionalCache {
            client,
            timeout,
            jitter_pct: config.ttl_jitter_pct,
            metrics,
            degraded: AtomicBool::new(false),
        }))
    }

    /// Whether every connection to the cluster is up now.
    pub fn is_connected(&self) -> bool {
        self.client.is_connected()
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
        let started = Instant::now();
        let replies = tokio::time::timeout(self.timeout, pipeline.try_all::<Value>()).await;
        self.metrics.latency.observe(started.elapsed().as_secs_f64());
        let Ok(replies) = replies else {
            self.failed(cache, keys.len(), "lookup timed out");
            return out;
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
            self.failed(cache, errors, "lookup failed");
        } else {
            self.recovered();
        }
        out
    }

    /// Stores `entries` (key, value, TTL), best effort.
    pub async fn put_many(&self, entries: Vec<(String, Vec<u8>, Duration)>) {
        if entries.is_empty() {
            return;
        }
        let pipeline = self.client.pipeline();
        for (key, value, ttl) in entries {
            let ttl_ms = ttl.as_millis().min(i64::MAX as u128) as i64;
            let jitter = ttl_ms * i64::from(self.jitter_pct) / 100;
            let extra = if jitter > 0 { spread(&key, jitter) } else { 0 };
            let _: Result<(), _> =
                pipeline.set(key, value.as_slice(), Some(Expiration::PX(ttl_ms + extra)), None, false).await;
        }
        match tokio::time::timeout(self.timeout, pipeline.try_all::<Value>()).await {
            Ok(replies) if replies.iter().all(Result::is_ok) => self.recovered(),
            _ => self.failed("write", 0, "write failed"),
        }
    }

    fn count(&self, cache: &str, result: &str, n: usize) {
        if n > 0 {
            self.metrics.requests.with_label_values(&[cache, L2, result]).inc_by(n as u64);
        }
    }

    fn failed(&self, cache: &str, keys: usize, what: &str) {
        self.count(cache, "error", keys);
        self.metrics.degraded.set(1);
        if !self.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(what, "the regional cache (Redis) is degraded: serving from the store");
        }
    }

    fn recovered(&self) {
        if self.degraded.swap(false, Ordering::Relaxed) {
            self.metrics.degraded.set(0);
            tracing::info!("the regional cache (Redis) answers again");
        }
    }
}

/// A number in `0..bound` (`bound` > 0) from the key and the clock: spreads the expiries of
/// entries written together; needs no other quality.
fn spread(key: &str, bound: i64) -> i64 {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ u64::from(nanos);
    for byte in key.as_bytes() {
        hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
    }
    i64::try_from(hash % bound.unsigned_abs()).unwrap_or(0)
}
