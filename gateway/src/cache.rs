//! The one cache abstraction every cache of shared data uses: [`Tiered`].
//!
//! Its users: whole GET responses (`response_cache`), APQ registrations (`persisted`), and the
//! store stack's read-through caches of movies, people, credits and rating totals
//! (`store::entities`, `store::cached`). Each is a `Tiered` with its own name, byte bound and
//! time to live, so they share one behaviour:
//!
//! - **Two tiers.** L1 is this process's moka map, bounded in bytes, every entry with its own
//!   time to live. L2, when the cache has one, is the region's Redis Cluster (`regional`):
//!   a batch of keys is one pipelined round trip, values are postcard bytes stamped with when
//!   they were read from their source, under `mq:<version>:<namespace>:<id>` (the version is
//!   bumped when a value's shape changes, so a deploy never reads the old shape; the namespace
//!   names what the values belong to, e.g. a catalog generation). An L2 hit fills L1.
//! - **Degrade to a miss.** An L2 that fails, times out or holds bytes that do not decode (or
//!   fail the cache's check) is a miss; Redis is an optimisation, never a dependency.
//! - **Single flight.** [`Tiered::load`] reads the misses of a batch from the source in one
//!   call, and a miss for a key another batch of this process is loading already waits for that
//!   load instead: N concurrent misses of one key cost one read. A load whose requests all went
//!   away stays in the flights table, and the next batch needing one of its keys drives it on
//!   (the dataloaders run their loads in tasks of their own, so in practice it runs through).
//! - **Invalidation wins over a load in flight.** A key invalidated (or the cache cleared)
//!   while a load of it is in flight is answered to that load's waiters but stored in neither
//!   tier, and later batches start a new load: a write is never undone by a read that began
//!   before it.
//! - **TTL jitter.** Entries written together get up to `jitter_pct` percent more time to live,
//!   chosen per entry, so they do not expire together (the same in both tiers).
//!
//! Caches of what cannot be shared between processes keep their own moka map: parsed
//! documents (`marquee_schema`'s parse cache) and token verdicts (`auth`).
//!
//! Caches keyed by a typed id neither format nor hash a string on the L1 path. The hasher is
//! foldhash, seeded per process (keys come from clients, so the table must not be predictable).

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use marquee_store::StoreError;
use moka::Expiry;
use prometheus::IntCounterVec;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::regional::Regional;
use crate::regional::bus::now_ms;

/// The `tier` label of the in-process tier.
pub const L1: &str = "l1";

/// A value as stored in L1: shared, with its own lifetime.
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

/// The key of a cache entry.
pub trait EntryKey: Hash + Eq + Clone + Send + Sync + 'static {
    /// Approximate bytes the key takes.
    fn weight(&self) -> usize;
}

impl EntryKey for Arc<str> {
    fn weight(&self) -> usize {
        self.len()
    }
}

impl EntryKey for marquee_store::MovieId {
    fn weight(&self) -> usize {
        std::mem::size_of::<Self>()
    }
}

impl EntryKey for marquee_store::PersonId {
    fn weight(&self) -> usize {
        std::mem::size_of::<Self>()
    }
}

impl Weigh for Arc<str> {
    fn weight(&self) -> usize {
        self.len() + 16
    }
}

/// What moka keeps per entry besides key and value (its node, deque links, timer, the
/// `Timed` wrapper), estimated: counted so that many small entries do not overrun the bound.
const ENTRY_OVERHEAD: usize = 160;

type Hasher = foldhash::fast::RandomState;

/// Which tiers a lookup may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tiers {
    /// Both; an L2 entry counts only if it was read from its source at or after `since_ms`
    /// (milliseconds since the Unix epoch; 0: any).
    Cached {
        /// The oldest read an L2 entry may come from.
        since_ms: u64,
    },
    /// Neither: read the source and store nothing (messages that would have invalidated
    /// entries may be lost).
    Bypass,
}

impl Tiers {
    /// Both tiers, any entry.
    pub const ANY: Tiers = Tiers::Cached { since_ms: 0 };
}

/// Where a cache's L2 entries live.
pub struct SharedTier<K> {
    /// The region's Redis Cluster.
    pub regional: Arc<Regional>,
    /// Bumped when the shape of a value changes.
    pub version: &'static str,
    /// What the values belong to (see [`Tiered::switch`]).
    pub namespace: String,
    /// A key as its L2 name ends (the key's `Display` by default).
    pub key: fn(&K) -> String,
}

impl<K: Display> SharedTier<K> {
    /// Entries under `mq:<version>:<namespace>:<key>`.
    pub fn new(
        regional: Arc<Regional>,
        version: &'static str,
        namespace: impl Into<String>,
    ) -> SharedTier<K> {
        SharedTier { regional, version, namespace: namespace.into(), key: |key| key.to_string() }
    }
}

/// An L2 value: when it was read from its source (milliseconds since the Unix epoch), and the
/// value. Encoded by reference, decoded owned; postcard writes both the same way.
#[derive(Serialize)]
struct StampedRef<'a, V> {
    read_at_ms: u64,
    value: &'a V,
}

#[derive(serde::Deserialize)]
struct Stamped<V> {
    read_at_ms: u64,
    value: V,
}

/// A cache's L2, with its codec.
struct L2<K, V> {
    regional: Arc<Regional>,
    version: &'static str,
    /// `mq:<version>:<namespace>:`.
    prefix: RwLock<Arc<str>>,
    encode: fn(u64, &V) -> Option<Vec<u8>>,
    decode: fn(&[u8]) -> Option<Stamped<V>>,
    /// Whether a value read from L2 may be used for its key (another process wrote it).
    check: fn(&K, &V) -> bool,
    key: fn(&K) -> String,
}

impl<K, V> L2<K, V> {
    fn prefix(&self) -> Arc<str> {
        self.prefix.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The L2 names of `keys` under `prefix`.
    fn names(&self, prefix: &str, keys: &[K]) -> Vec<String> {
        keys.iter().map(|key| format!("{prefix}{}", (self.key)(key))).collect()
    }
}

fn encode<V: Serialize>(read_at_ms: u64, value: &V) -> Option<Vec<u8>> {
    postcard::to_stdvec(&StampedRef { read_at_ms, value }).ok()
}

fn decode<V: DeserializeOwned>(bytes: &[u8]) -> Option<Stamped<V>> {
    postcard::from_bytes(bytes).ok()
}

/// Keys invalidated while a load of them was in flight: the load answers its waiters and
/// stores none of them.
struct Revoked<K> {
    all: AtomicBool,
    keys: Mutex<HashSet<K>>,
}

impl<K: Hash + Eq> Revoked<K> {
    fn contains(&self, key: &K) -> bool {
        self.all.load(Ordering::Acquire)
            || self.keys.lock().unwrap_or_else(PoisonError::into_inner).contains(key)
    }
}

/// What a load answers: every key it was asked, or the source's error.
type Loaded<K, V> = Result<Arc<HashMap<K, V>>, Arc<StoreError>>;

/// A load in flight, shared by every batch that needs one of its keys.
struct Flight<K, V> {
    answer: Shared<BoxFuture<'static, Loaded<K, V>>>,
    revoked: Arc<Revoked<K>>,
}

impl<K, V> Clone for Flight<K, V> {
    fn clone(&self) -> Self {
        Flight { answer: self.answer.clone(), revoked: self.revoked.clone() }
    }
}

/// Removes a flight's keys from the flights table when the flight ends, however it ends (the
/// entries that are still its own: an invalidation may have replaced some).
struct Leave<K: EntryKey, V> {
    cache: Tiered<V, K>,
    keys: Vec<K>,
    revoked: Arc<Revoked<K>>,
}

impl<K: EntryKey, V> Drop for Leave<K, V> {
    fn drop(&mut self) {
        let mut flights = self.cache.inner.flights.lock().unwrap_or_else(PoisonError::into_inner);
        for key in &self.keys {
            if flights.get(key).is_some_and(|flight| Arc::ptr_eq(&flight.revoked, &self.revoked)) {
                flights.remove(key);
            }
        }
    }
}

struct Inner<K, V> {
    /// Label in `cache_requests_total{cache}`.
    name: &'static str,
    local: moka::future::Cache<K, Arc<Timed<V>>, Hasher>,
    requests: IntCounterVec,
    l2: Option<L2<K, V>>,
    /// Time to live of what [`Tiered::load`] stores.
    ttl: Duration,
    jitter_pct: u8,
    /// The load each key is waiting on. A key enters when a load of it starts and leaves when
    /// that load ends, or when it is invalidated.
    flights: Mutex<HashMap<K, Flight<K, V>>>,
}

/// A cache of `V` by key `K` (a string by default): L1 in this process, L2 in the region's
/// Redis when it has one (see the module docs).
pub struct Tiered<V, K: EntryKey = Arc<str>> {
    inner: Arc<Inner<K, V>>,
}

impl<V, K: EntryKey> Clone for Tiered<V, K> {
    fn clone(&self) -> Self {
        Tiered { inner: self.inner.clone() }
    }
}

/// How a [`Tiered`] is sized and counted.
#[derive(Clone, Debug)]
pub struct Sizing {
    /// Label in `cache_requests_total{cache}`.
    pub name: &'static str,
    /// Bytes of keys and values L1 holds at most.
    pub max_bytes: u64,
    /// Time to live of loaded values.
    pub ttl: Duration,
    /// `cache_requests_total{cache,tier,result}`.
    pub requests: IntCounterVec,
}

fn local<K: EntryKey, V: Weigh + Send + Sync + 'static>(
    max_bytes: u64,
) -> moka::future::Cache<K, Arc<Timed<V>>, Hasher> {
    moka::future::Cache::builder()
        .max_capacity(max_bytes)
        .weigher(|k: &K, v: &Arc<Timed<V>>| {
            u32::try_from(k.weight() + v.value.weight() + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
        })
        .expire_after(PerEntryTtl)
        .build_with_hasher(Hasher::default())
}

/// Distinct keys of a batch, in first-seen order (a batch asks each key once).
fn distinct<K: Clone + Eq + Hash>(keys: &[K]) -> Vec<K> {
    let mut seen = HashSet::with_capacity(keys.len());
    keys.iter().filter(|key| seen.insert(*key)).cloned().collect()
}

/// A pseudo-random amount below `bound` (nanoseconds of the clock mixed with the key).
fn spread(key: &impl Hash, bound: Duration) -> Duration {
    use std::hash::BuildHasher;
    let bound = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX);
    if bound == 0 {
        return Duration::ZERO;
    }
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let hash = Hasher::default().hash_one((key, nanos));
    Duration::from_millis(hash % bound)
}

impl<V, K> Tiered<V, K>
where
    V: Clone + Weigh + Send + Sync + 'static,
    K: EntryKey,
{
    /// A cache held in this process only.
    pub fn local(sizing: Sizing) -> Tiered<V, K> {
        Tiered::build(sizing, None, 0)
    }

    /// A cache with an L2 in the region's Redis when `shared` is given.
    pub fn new(sizing: Sizing, shared: Option<SharedTier<K>>) -> Tiered<V, K>
    where
        V: Serialize + DeserializeOwned,
    {
        Tiered::new_checked(sizing, shared, |_, _| true)
    }

    /// [`Tiered::new`], using a value read from L2 only if `check` accepts it for its key
    /// (another process wrote it: e.g. a document must hash to its key).
    pub fn new_checked(
        sizing: Sizing,
        shared: Option<SharedTier<K>>,
        check: fn(&K, &V) -> bool,
    ) -> Tiered<V, K>
    where
        V: Serialize + DeserializeOwned,
    {
        match shared {
            None => Tiered::build(sizing, None, 0),
            Some(SharedTier { regional, version, namespace, key }) => {
                let jitter_pct = regional.ttl_jitter_pct();
                let l2 = L2 {
                    regional,
                    version,
                    prefix: RwLock::new(format!("mq:{version}:{namespace}:").into()),
                    encode: encode::<V>,
                    decode: decode::<V>,
                    check,
                    key,
                };
                Tiered::build(sizing, Some(l2), jitter_pct)
            }
        }
    }

    fn build(sizing: Sizing, l2: Option<L2<K, V>>, jitter_pct: u8) -> Tiered<V, K> {
        let Sizing { name, max_bytes, ttl, requests } = sizing;
        Tiered {
            inner: Arc::new(Inner {
                name,
                local: local(max_bytes),
                requests,
                l2,
                ttl,
                jitter_pct,
                flights: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The time to live of what [`Tiered::load`] stores.
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// How long an entry stored for `ttl` may live, jitter included.
    pub fn longest_life(&self, ttl: Duration) -> Duration {
        ttl.saturating_add(self.most_jitter(ttl))
    }

    /// The most jitter an entry stored for `ttl` gets.
    fn most_jitter(&self, ttl: Duration) -> Duration {
        ttl.checked_mul(u32::from(self.inner.jitter_pct)).map_or(Duration::MAX, |d| d / 100)
    }

    /// `ttl` plus this entry's jitter.
    fn jittered(&self, key: &K, ttl: Duration) -> Duration {
        ttl.saturating_add(spread(key, self.most_jitter(ttl)))
    }

    /// The value of `key` in this process's tier (L2 is not asked), counting a hit or a miss.
    pub async fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let found = self.inner.local.get(key).await.map(|stored| stored.value.clone());
        self.count(L1, if found.is_some() { "hit" } else { "miss" }, 1);
        found
    }

    /// Whether this process's tier holds `key` (not counted as a lookup).
    pub fn holds<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner.local.contains_key(key)
    }

    /// Stores values in both tiers, each for its own time to live (zero: not stored); returns
    /// once L2 has answered (or failed).
    pub async fn put_many(&self, entries: Vec<(K, V, Duration)>)
    where
        K: Display,
    {
        let entries: Vec<(K, V, Duration)> = entries
            .into_iter()
            .filter(|(_, _, ttl)| !ttl.is_zero())
            .map(|(key, value, ttl)| {
                let ttl = self.jittered(&key, ttl);
                (key, value, ttl)
            })
            .collect();
        if let Some(l2) = &self.inner.l2 {
            self.store_shared(&l2.prefix(), &entries, now_ms()).await;
        }
        for (key, value, ttl) in entries {
            self.inner.local.insert(key, Arc::new(Timed { value, ttl })).await;
        }
    }

    /// Stores one value in both tiers.
    pub async fn put(&self, key: K, value: V, ttl: Duration)
    where
        K: Display,
    {
        self.put_many(vec![(key, value, ttl)]).await;
    }

    /// The values of `keys`, in order (`None`: in neither tier): L1, then L2 for its misses in
    /// one round trip; an L2 hit fills L1. For values no write changes (APQ registrations):
    /// unlike [`Tiered::load`], an invalidation meanwhile does not stop the fill.
    pub async fn lookup(&self, keys: &[K], tiers: Tiers) -> Vec<Option<V>>
    where
        K: Display,
    {
        let Tiers::Cached { since_ms } = tiers else { return vec![None; keys.len()] };
        let mut found = self.local_many(keys).await;
        let missing: Vec<K> = distinct(
            &keys.iter().zip(&found).filter(|(_, v)| v.is_none()).map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        );
        if missing.is_empty() {
            return found;
        }
        let prefix = self.inner.l2.as_ref().map(L2::prefix);
        let shared = self.shared_many(prefix.as_deref(), &missing, since_ms).await;
        for (key, value) in &shared {
            let ttl = self.jittered(key, self.inner.ttl);
            self.inner.local.insert(key.clone(), Arc::new(Timed { value: value.clone(), ttl })).await;
        }
        for (slot, key) in found.iter_mut().zip(keys) {
            if slot.is_none() {
                *slot = shared.get(key).cloned();
            }
        }
        found
    }

    /// The values of `keys`, in order: L1, then L2, then `source` for what is still missing,
    /// in one call (less the keys another batch is loading already, which are waited for).
    /// `source` answers one value per key it is given, in order; what it answers is stored in
    /// both tiers for the cache's TTL, unless invalidated meanwhile.
    pub async fn load<F>(&self, keys: &[K], tiers: Tiers, source: F) -> Result<Vec<V>, StoreError>
    where
        K: Display,
        F: FnOnce(Vec<K>) -> BoxFuture<'static, Result<Vec<V>, StoreError>> + Send + 'static,
    {
        let Tiers::Cached { since_ms } = tiers else {
            let distinct = distinct(keys);
            let values = source(distinct.clone()).await?;
            let read = self.answered(&distinct, values)?;
            return keys.iter().map(|key| self.answer(&read, key)).collect();
        };
        let cached = self.local_many(keys).await;
        let misses: Vec<K> =
            keys.iter().zip(&cached).filter(|(_, c)| c.is_none()).map(|(key, _)| key.clone()).collect();
        if misses.is_empty() {
            return Ok(cached.into_iter().flatten().collect());
        }
        let mut waits: Vec<Flight<K, V>> = Vec::new();
        {
            let mut flights = self.inner.flights.lock().unwrap_or_else(PoisonError::into_inner);
            let mut own = Vec::new();
            for key in distinct(&misses) {
                match flights.get(&key) {
                    Some(flight) => {
                        if !waits.iter().any(|w| Arc::ptr_eq(&w.revoked, &flight.revoked)) {
                            waits.push(flight.clone());
                        }
                    }
                    None => own.push(key),
                }
            }
            if !own.is_empty() {
                let revoked =
                    Arc::new(Revoked { all: AtomicBool::new(false), keys: Mutex::new(HashSet::new()) });
                let flight =
                    Flight { answer: self.flight(own.clone(), since_ms, revoked.clone(), source), revoked };
                for key in own {
                    flights.insert(key, flight.clone());
                }
                waits.push(flight);
            }
        }
        let mut loaded: HashMap<K, V> = HashMap::with_capacity(misses.len());
        for flight in waits {
            let values = flight.answer.await.map_err(|error| error.echo())?;
            loaded.extend(values.iter().map(|(key, value)| (key.clone(), value.clone())));
        }
        keys.iter()
            .zip(cached)
            .map(|(key, hit)| match hit {
                Some(value) => Ok(value),
                None => self.answer(&loaded, key),
            })
            .collect()
    }

    /// `values` by `keys`, if the source answered one per key.
    fn answered(&self, keys: &[K], values: Vec<V>) -> Result<HashMap<K, V>, StoreError> {
        if values.len() != keys.len() {
            return Err(StoreError::backend(std::io::Error::other(format!(
                "the source of {} answered {} values for {} keys",
                self.inner.name,
                values.len(),
                keys.len()
            ))));
        }
        Ok(keys.iter().cloned().zip(values).collect())
    }

    fn answer(&self, loaded: &HashMap<K, V>, key: &K) -> Result<V, StoreError>
    where
        K: Display,
    {
        loaded.get(key).cloned().ok_or_else(|| {
            StoreError::backend(std::io::Error::other(format!(
                "the {} load in flight did not answer {key}",
                self.inner.name
            )))
        })
    }

    /// The shared load of `keys`: L2 first, `source` for the rest; fills both tiers with what
    /// was not revoked meanwhile, then leaves the flights table (in that order, so a batch
    /// arriving in between finds L1 filled). The L2 names are those of the namespace served
    /// when the flight was registered (`prefix`): a switch revokes the flight, and nothing it
    /// read is written under the new namespace.
    fn flight<F>(
        &self,
        keys: Vec<K>,
        since_ms: u64,
        revoked: Arc<Revoked<K>>,
        source: F,
    ) -> Shared<BoxFuture<'static, Loaded<K, V>>>
    where
        K: Display,
        F: FnOnce(Vec<K>) -> BoxFuture<'static, Result<Vec<V>, StoreError>> + Send + 'static,
    {
        let cache = self.clone();
        let prefix = self.inner.l2.as_ref().map(L2::prefix);
        async move {
            // Leaves the table however the flight ends: answered, failed or panicked (the
            // table holds the flight itself, so it is not dropped before it ends).
            let _leave = Leave { cache: cache.clone(), keys: keys.clone(), revoked: revoked.clone() };
            let prefix = prefix.as_deref();
            let mut found = cache.shared_many(prefix, &keys, since_ms).await;
            let from_l2: Vec<(K, V)> = found.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let missing: Vec<K> = keys.iter().filter(|key| !found.contains_key(*key)).cloned().collect();
            let outcome = async {
                if missing.is_empty() {
                    return Ok(());
                }
                let read_at_ms = now_ms();
                let values = source(missing.clone()).await?;
                let read = cache.answered(&missing, values)?;
                let fresh: Vec<(K, V, Duration)> = read
                    .iter()
                    .filter(|(key, _)| !revoked.contains(key))
                    .map(|(key, value)| (key.clone(), value.clone(), cache.jittered(key, cache.inner.ttl)))
                    .collect();
                if let Some(prefix) = prefix {
                    cache.store_shared(prefix, &fresh, read_at_ms).await;
                    // Revoked during the write: the write may have landed after the
                    // invalidation's delete, so take it back.
                    let late: Vec<K> = fresh
                        .iter()
                        .map(|(key, _, _)| key)
                        .filter(|key| revoked.contains(key))
                        .cloned()
                        .collect();
                    if let (false, Some(l2)) = (late.is_empty(), &cache.inner.l2) {
                        l2.regional.delete_many(&l2.names(prefix, &late)).await;
                    }
                }
                found.extend(read);
                for (key, value, ttl) in fresh {
                    cache.store_local(&revoked, key, value, ttl).await;
                }
                Ok(())
            }
            .await;
            for (key, value) in from_l2 {
                let ttl = cache.jittered(&key, cache.inner.ttl);
                cache.store_local(&revoked, key, value, ttl).await;
            }
            outcome.map(|()| Arc::new(found)).map_err(Arc::new)
        }
        .boxed()
        .shared()
    }

    /// Stores what a flight read in L1, unless its key was revoked: checked before the insert
    /// and again after it (an invalidation marks the key revoked before it drops the entry, so
    /// whichever runs second removes it).
    async fn store_local(&self, revoked: &Revoked<K>, key: K, value: V, ttl: Duration) {
        if revoked.contains(&key) {
            return;
        }
        self.inner.local.insert(key.clone(), Arc::new(Timed { value, ttl })).await;
        if revoked.contains(&key) {
            self.inner.local.invalidate(&key).await;
        }
    }

    /// Writes `entries` to L2 under `prefix`, stamped as read from their source at
    /// `read_at_ms`.
    async fn store_shared(&self, prefix: &str, entries: &[(K, V, Duration)], read_at_ms: u64) {
        let Some(l2) = &self.inner.l2 else { return };
        if entries.is_empty() {
            return;
        }
        let keys: Vec<K> = entries.iter().map(|(key, _, _)| key.clone()).collect();
        let shared = l2
            .names(prefix, &keys)
            .into_iter()
            .zip(entries)
            .filter_map(|(name, (_, value, ttl))| Some((name, (l2.encode)(read_at_ms, value)?, *ttl)))
            .collect();
        l2.regional.put_many(shared).await;
    }

    /// L1 lookups of `keys`, counted.
    async fn local_many(&self, keys: &[K]) -> Vec<Option<V>> {
        let mut out = Vec::with_capacity(keys.len());
        let (mut hits, mut misses) = (0, 0);
        for key in keys {
            let found = self.inner.local.get(key).await.map(|stored| stored.value.clone());
            if found.is_some() {
                hits += 1;
            } else {
                misses += 1;
            }
            out.push(found);
        }
        self.count(L1, "hit", hits);
        self.count(L1, "miss", misses);
        out
    }

    /// The L2 values of `keys` under `prefix` (none: no L2) read from their source at or
    /// after `since_ms` (the cluster counts its own hits and misses).
    async fn shared_many(&self, prefix: Option<&str>, keys: &[K], since_ms: u64) -> HashMap<K, V> {
        let (Some(l2), Some(prefix)) = (&self.inner.l2, prefix) else { return HashMap::new() };
        let names = l2.names(prefix, keys);
        let mut found = HashMap::with_capacity(keys.len());
        for (key, bytes) in keys.iter().zip(l2.regional.get_many(self.inner.name, &names).await) {
            let Some(stamped) = bytes.and_then(|bytes| (l2.decode)(&bytes)) else { continue };
            if stamped.read_at_ms >= since_ms && (l2.check)(key, &stamped.value) {
                found.insert(key.clone(), stamped.value);
            }
        }
        found
    }

    /// Drops `keys` from this process's tier (after a write changed what they hold); a load
    /// of them in flight stores nothing of them, and the next batch loads them again.
    pub async fn invalidate<'k, Q>(&self, keys: impl IntoIterator<Item = &'k Q>)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized + 'k,
    {
        let mut n = 0;
        for key in keys {
            let removed = self.inner.flights.lock().unwrap_or_else(PoisonError::into_inner).remove_entry(key);
            if let Some((key, flight)) = removed {
                flight.revoked.keys.lock().unwrap_or_else(PoisonError::into_inner).insert(key);
            }
            self.inner.local.invalidate(key).await;
            n += 1;
        }
        self.count(L1, "invalidated", n);
    }

    /// Drops every entry of this process's tier, and revokes every load in flight (messages
    /// that would have invalidated some may have been lost).
    pub fn clear(&self) {
        let flights = std::mem::take(&mut *self.inner.flights.lock().unwrap_or_else(PoisonError::into_inner));
        for flight in flights.values() {
            flight.revoked.all.store(true, Ordering::Release);
        }
        self.inner.local.invalidate_all();
    }

    /// The L2 keys of `keys` (for deleting them with an invalidation message); none without L2.
    pub fn shared_keys(&self, keys: &[K]) -> Vec<String>
    where
        K: Display,
    {
        self.inner.l2.as_ref().map(|l2| l2.names(&l2.prefix(), keys)).unwrap_or_default()
    }

    /// Serves another namespace from now on (a newly published catalog generation): L2 keys
    /// name it, and L1 and the loads in flight are dropped as by [`Tiered::clear`].
    pub fn switch(&self, namespace: &str) {
        if let Some(l2) = &self.inner.l2 {
            *l2.prefix.write().unwrap_or_else(PoisonError::into_inner) =
                format!("mq:{}:{namespace}:", l2.version).into();
        }
        self.clear();
    }

    /// Counts a lookup the client asked to skip (`Cache-Control: no-cache`).
    pub fn bypass(&self) {
        self.count(L1, "bypass", 1);
    }

    fn count(&self, tier: &str, result: &str, n: usize) {
        if n > 0 {
            self.inner.requests.with_label_values(&[self.inner.name, tier, result]).inc_by(n as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    impl Weigh for u64 {
        fn weight(&self) -> usize {
            8
        }
    }

    fn counter() -> IntCounterVec {
        IntCounterVec::new(prometheus::Opts::new("t", "t"), &["cache", "tier", "result"]).expect("counter")
    }

    fn sizing(requests: &IntCounterVec) -> Sizing {
        Sizing { name: "test", max_bytes: 1 << 20, ttl: Duration::from_secs(60), requests: requests.clone() }
    }

    #[tokio::test]
    async fn batches_keep_order_and_invalidation_drops() {
        let requests = counter();
        let cache: Tiered<u64> = Tiered::local(sizing(&requests));
        cache.put_many(vec![("a".into(), 1, Duration::from_secs(60)), ("b".into(), 2, Duration::ZERO)]).await;
        let keys: Vec<Arc<str>> = ["b", "a", "c"].map(Arc::from).to_vec();
        assert_eq!(cache.lookup(&keys, Tiers::ANY).await, [None, Some(1), None], "zero ttl is not stored");
        assert_eq!(requests.with_label_values(&["test", L1, "hit"]).get(), 1);
        assert_eq!(requests.with_label_values(&["test", L1, "miss"]).get(), 2);
        assert_eq!(cache.lookup(&keys, Tiers::Bypass).await, [None, None, None], "bypass reads no tier");
        cache.invalidate(["a"]).await;
        assert_eq!(cache.get("a").await, None);
        assert!(!cache.holds("a"));
    }

    #[tokio::test]
    async fn entries_expire_on_their_own_ttl() {
        let cache: Tiered<u64> = Tiered::local(sizing(&counter()));
        cache.put("short".into(), 1, Duration::from_millis(50)).await;
        cache.put("long".into(), 2, Duration::from_secs(60)).await;
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!((cache.get("short").await, cache.get("long").await), (None, Some(2)));
    }

    #[test]
    fn jitter_lengthens_ttls_within_its_bound() {
        let cache: Tiered<u64> = Tiered::build(sizing(&counter()), None, 20);
        let ttl = Duration::from_secs(100);
        assert_eq!(cache.longest_life(ttl), Duration::from_secs(120));
        let ttls: HashSet<Duration> =
            (0..200).map(|i| cache.jittered(&Arc::<str>::from(format!("k{i}")), ttl)).collect();
        assert!(ttls.iter().all(|t| *t >= ttl && *t < Duration::from_secs(120)), "{ttls:?}");
        assert!(ttls.len() > 100, "entries written together get different lifetimes: {}", ttls.len());
        let plain: Tiered<u64> = Tiered::local(sizing(&counter()));
        assert_eq!(plain.jittered(&Arc::<str>::from("k"), ttl), ttl, "no jitter without a shared tier");
    }

    /// A source that counts its calls and answers `value` after `delay`.
    fn slow(
        calls: &Arc<AtomicUsize>,
        value: u64,
        delay: Duration,
    ) -> impl FnOnce(Vec<Arc<str>>) -> BoxFuture<'static, Result<Vec<u64>, StoreError>> + Send + 'static {
        let calls = calls.clone();
        move |keys| {
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                Ok(vec![value; keys.len()])
            }
            .boxed()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_load_per_key_in_flight_and_invalidation_wins_over_it() {
        let cache: Tiered<u64> = Tiered::local(sizing(&counter()));
        let calls = Arc::new(AtomicUsize::new(0));
        let key: Arc<str> = "k".into();
        let keys = [key.clone()];
        let loads =
            (0..8).map(|_| cache.load(&keys, Tiers::ANY, slow(&calls, 1, Duration::from_millis(100))));
        for answer in futures::future::join_all(loads).await {
            assert_eq!(answer.expect("loaded"), [1]);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "8 concurrent misses, one read");
        assert_eq!(cache.get("k").await, Some(1), "stored");

        // A write lands while a load that read before it is in flight: the load answers its
        // waiters but stores nothing, and the next batch reads again instead of joining it.
        cache.invalidate(["k"]).await;
        let stale = cache.load(&keys, Tiers::ANY, slow(&calls, 1, Duration::from_millis(150)));
        let after_write = async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            cache.invalidate(["k"]).await;
            cache.load(&keys, Tiers::ANY, slow(&calls, 2, Duration::from_millis(10))).await
        };
        let (stale, fresh) = tokio::join!(stale, after_write);
        assert_eq!((stale.expect("old value"), fresh.expect("new value")), (vec![1], vec![2]));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(cache.get("k").await, Some(2), "the load that began before the write stored nothing");
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        // Cleared (messages lost) during a load: nothing of it is stored.
        cache.invalidate(["other"]).await;
        let other: [Arc<str>; 1] = ["other".into()];
        let load = cache.load(&other, Tiers::ANY, slow(&calls, 3, Duration::from_millis(100)));
        let clear = async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            cache.clear();
        };
        let (answer, ()) = tokio::join!(load, clear);
        assert_eq!(answer.expect("answered"), [3]);
        assert_eq!(cache.get("other").await, None);

        // Bypass: read, nothing stored.
        let bypass = cache.load(&other, Tiers::Bypass, slow(&calls, 4, Duration::ZERO)).await;
        assert_eq!(bypass.expect("read"), [4]);
        assert_eq!(cache.get("other").await, None);
    }

    #[tokio::test]
    async fn a_source_answering_the_wrong_count_is_an_error_not_a_panic() {
        let cache: Tiered<u64> = Tiered::local(sizing(&counter()));
        let keys: [Arc<str>; 2] = ["a".into(), "b".into()];
        let short = |_: Vec<Arc<str>>| async { Ok(vec![1]) }.boxed();
        let error = cache.load(&keys, Tiers::ANY, short).await.expect_err("one value for two keys");
        assert!(error.to_string().contains("1 values for 2 keys"), "{error}");
        assert_eq!(cache.get("a").await, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_source_that_panics_leaves_no_flight_behind() {
        let cache: Tiered<u64> = Tiered::local(sizing(&counter()));
        let keys: [Arc<str>; 1] = ["k".into()];
        let failing = cache.clone();
        let first = tokio::spawn(async move {
            let panics = |_: Vec<Arc<str>>| async { panic!("the source failed hard") }.boxed();
            failing.load(&["k".into()], Tiers::ANY, panics).await
        });
        assert!(first.await.is_err(), "the waiter saw the panic");
        let calls = Arc::new(AtomicUsize::new(0));
        let answer = cache.load(&keys, Tiers::ANY, slow(&calls, 7, Duration::ZERO)).await;
        assert_eq!(answer.expect("a new load, not the failed one"), [7]);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    /// A switch to another namespace while a load is in flight (a new catalog generation
    /// published mid-read): what the load read is stored nowhere, in particular not in the
    /// region's Redis under the new namespace. A real Redis Cluster.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_switch_during_a_load_stores_nothing_under_the_new_namespace() {
        let cluster = tokio::task::spawn_blocking(|| marquee_redis_cluster::RedisCluster::start(3))
            .await
            .expect("starting")
            .expect("a Redis Cluster (redis-server installed?)");
        let config = crate::config::RedisConfig {
            seeds: cluster.seeds(),
            command_timeout_ms: crate::config::Millis(500),
            ..Default::default()
        };
        let metrics = crate::regional::RegionalMetrics {
            requests: counter(),
            latency: prometheus::Histogram::with_opts(prometheus::HistogramOpts::new("l", "l"))
                .expect("histogram"),
            degraded: prometheus::IntGauge::new("d", "d").expect("gauge"),
            invalidations: IntCounterVec::new(prometheus::Opts::new("i", "i"), &["event"]).expect("counter"),
            bus_live: prometheus::IntGauge::new("b", "b").expect("gauge"),
            refused: prometheus::IntCounter::new("r", "r").expect("counter"),
        };
        let regional = Regional::connect(&config, metrics).expect("client");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !regional.is_connected() {
            assert!(Instant::now() < deadline, "the client did not connect");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let tier = |namespace: &str| Some(SharedTier::new(regional.clone(), "t1", namespace));
        let cache: Tiered<u64> = Tiered::new(sizing(&counter()), tier("old"));
        let calls = Arc::new(AtomicUsize::new(0));
        let keys: [Arc<str>; 1] = ["k".into()];

        let read = cache.load(&keys, Tiers::ANY, slow(&calls, 1, Duration::from_millis(150)));
        let switch = async {
            tokio::time::sleep(Duration::from_millis(40)).await;
            cache.switch("new");
        };
        let (read, ()) = tokio::join!(read, switch);
        assert_eq!(read.expect("answered to its waiter"), [1]);
        assert_eq!(cache.get("k").await, None, "not in memory");
        let fresh: Tiered<u64> = Tiered::new(sizing(&counter()), tier("new"));
        assert_eq!(fresh.lookup(&keys, Tiers::ANY).await, [None], "not in Redis under the new namespace");
        let old: Tiered<u64> = Tiered::new(sizing(&counter()), tier("old"));
        assert_eq!(old.lookup(&keys, Tiers::ANY).await, [None], "nor under the old one");

        // The next load reads the new generation and shares it.
        let answer = cache.load(&keys, Tiers::ANY, slow(&calls, 2, Duration::ZERO)).await;
        assert_eq!(answer.expect("read again"), [2]);
        let other_gateway: Tiered<u64> = Tiered::new(sizing(&counter()), tier("new"));
        assert_eq!(other_gateway.lookup(&keys, Tiers::ANY).await, [Some(2)]);
        drop(cluster);
    }
}
