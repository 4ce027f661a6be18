//! The one cache abstraction every cache of shared data uses: whole GET responses
//! (`response_cache`) and the store stack's read-through caches (`store::cached`).
//!
//! A [`Cache`] is keyed by strings that start with a version prefix (so a deploy that
//! changes a value's shape never reads the old shape) or by typed ids, bounded in bytes, and
//! gives every entry its own time to live. Its interface is async and batch-shaped —
//! `get_many`, `put_many`, `invalidate` — the same shape as the regional Redis Cluster
//! (`regional`), which the entity and rating-totals caches consult on a miss, in one pipelined
//! round trip per batch.
//!
//! Caches that hold what cannot be shared between processes keep their own moka cache: parsed
//! documents (`marquee_schema`'s parse cache) and token verdicts (`auth`).
//!
//! The entity and rating-totals caches key by the typed id, so a lookup on the hot path
//! neither formats nor hashes a string. The hasher is foldhash, seeded per process (keys
//! come from clients, so the table must not be predictable).

use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use prometheus::IntCounterVec;

/// The `tier` label of the in-process tier.
pub const L1: &str = "l1";

/// A value as stored: shared, with its own lifetime.
#[derive(Debug)]
struct Timed<V> {
    value: V,
    ttl: Duration,
}

struct PerEntryTtl;

impl<K, V> Expiry<K, Arc<Timed<V>>> for PerEntryTtl {
    fn expire_after_create(&self, _: &K, stored: &Arc<Timed<V>>, _: Instant) -> Option<Duration> {
        Some(stored.ttl)
    }
}

/// How much memory a value takes, for the byte bound.
pub trait Weigh {
    /// Approximate bytes, key excluded.
    fn weight(&self) -> usize;
}

/// A key of a [`Cache`].
pub trait CacheKey: Hash + Eq + Clone + Send + Sync + 'static {
    /// Approximate bytes the key takes.
    fn weight(&self) -> usize;
}

impl CacheKey for Arc<str> {
    fn weight(&self) -> usize {
        self.len()
    }
}

impl CacheKey for marquee_store::MovieId {
    fn weight(&self) -> usize {
        std::mem::size_of::<Self>()
    }
}

impl CacheKey for marquee_store::PersonId {
    fn weight(&self) -> usize {
        std::mem::size_of::<Self>()
    }
}

/// What moka keeps per entry besides key and value (its node, deque links, timer, the
/// `Timed` wrapper), estimated: counted so that many small entries do not overrun the bound.
const ENTRY_OVERHEAD: usize = 160;

type Hasher = foldhash::fast::RandomState;

/// A cache of `V` by key `K` (a string by default), in front of whatever tier comes next.
pub struct Cache<V, K: CacheKey = Arc<str>> {
    /// Label in `cache_requests_total{cache}`.
    name: &'static str,
    local: moka::future::Cache<K, Arc<Timed<V>>, Hasher>,
    requests: IntCounterVec,
}

impl<V, K> Cache<V, K>
where
    V: Clone + Weigh + Send + Sync + 'static,
    K: CacheKey,
{
    /// A cache of at most `max_bytes` (keys and values), counting its lookups into `requests`
    /// (`cache_requests_total{cache,tier,result}`) under `cache = name`, `tier = "l1"`.
    pub fn new(name: &'static str, max_bytes: u64, requests: IntCounterVec) -> Cache<V, K> {
        let local = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &K, v: &Arc<Timed<V>>| {
                u32::try_from(k.weight() + v.value.weight() + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryTtl)
            .build_with_hasher(Hasher::default());
        Cache { name, local, requests }
    }

    /// The values of `keys`, in order (`None`: a miss), counting hits and misses.
    pub async fn get_many<'k, Q>(&self, keys: impl IntoIterator<Item = &'k Q>) -> Vec<Option<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized + 'k,
    {
        let keys = keys.into_iter();
        let mut out = Vec::with_capacity(keys.size_hint().0);
        let (mut hits, mut misses) = (0, 0);
        for key in keys {
            let found = self.local.get(key).await.map(|stored| stored.value.clone());
            if found.is_some() {
                hits += 1;
            } else {
                misses += 1;
            }
            out.push(found);
        }
        self.count("hit", hits);
        self.count("miss", misses);
        out
    }

    /// The value of one key.
    pub async fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get_many([key]).await.pop().flatten()
    }

    /// Stores values, each for its own time to live (zero: not stored).
    pub async fn put_many(&self, entries: impl IntoIterator<Item = (impl Into<K>, V, Duration)>) {
        for (key, value, ttl) in entries {
            if !ttl.is_zero() {
                self.local.insert(key.into(), Arc::new(Timed { value, ttl })).await;
            }
        }
    }

    /// Stores one value.
    pub async fn put(&self, key: impl Into<K>, value: V, ttl: Duration) {
        self.put_many([(key, value, ttl)]).await;
    }

    /// Drops `keys` (after a write changed what they hold).
    pub async fn invalidate<'k, Q>(&self, keys: impl IntoIterator<Item = &'k Q>)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized + 'k,
    {
        let mut n = 0;
        for key in keys {
            self.local.invalidate(key).await;
            n += 1;
        }
        self.count("invalidated", n);
    }

    /// Drops every entry (messages that would have invalidated some may have been lost).
    pub fn clear(&self) {
        self.local.invalidate_all();
    }

    /// Counts a lookup the client asked to skip (`Cache-Control: no-cache`).
    pub fn bypass(&self) {
        self.count("bypass", 1);
    }

    fn count(&self, result: &str, n: usize) {
        if n > 0 {
            self.requests.with_label_values(&[self.name, L1, result]).inc_by(n as u64);
        }
    }
}

/// Keys of one kind of cached value: `<version>|<kind>|<id>`.
pub fn key(version: &str, kind: &str, id: impl std::fmt::Display) -> String {
    format!("{version}|{kind}|{id}")
}

/// Distinct ids of a batch, in first-seen order (a batch asks each key once).
pub fn distinct<T: Copy + Eq + Hash>(ids: &[T]) -> Vec<T> {
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    ids.iter().copied().filter(|id| seen.insert(*id)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Weigh for u64 {
        fn weight(&self) -> usize {
            8
        }
    }

    fn counter() -> IntCounterVec {
        IntCounterVec::new(prometheus::Opts::new("t", "t"), &["cache", "tier", "result"]).expect("counter")
    }

    #[tokio::test]
    async fn batches_keep_order_and_invalidation_drops() {
        let requests = counter();
        let cache: Cache<u64> = Cache::new("test", 1 << 20, requests.clone());
        cache.put_many([("a".to_owned(), 1, Duration::from_secs(60)), ("b".into(), 2, Duration::ZERO)]).await;
        assert_eq!(cache.get_many(["b", "a", "c"]).await, [None, Some(1), None], "zero ttl is not stored");
        assert_eq!(requests.with_label_values(&["test", L1, "hit"]).get(), 1);
        assert_eq!(requests.with_label_values(&["test", L1, "miss"]).get(), 2);
        cache.invalidate(["a"]).await;
        assert_eq!(cache.get("a").await, None);
    }

    #[tokio::test]
    async fn entries_expire_on_their_own_ttl() {
        let cache: Cache<u64> = Cache::new("test", 1 << 20, counter());
        cache.put("short", 1, Duration::from_millis(50)).await;
        cache.put("long", 2, Duration::from_secs(60)).await;
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(cache.get_many(["short", "long"]).await, [None, Some(2)]);
    }
}
