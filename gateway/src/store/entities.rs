//! The entity cache: movies, people and credits by id, between the dataloaders and the
//! backend, in a [`Tiered`] cache per kind (this gateway's memory, then the region's Redis).
//!
//! Zipf popularity makes a small set of entities most of the reads; answering those from
//! memory saves the backend lookup, its page buffers and the blocking-pool hand-off. Entries
//! are bounded in bytes and age out after `cache.entities_ttl_secs`; a live catalog change
//! drops the entities it names, in every tier and every gateway of the region, through
//! `crate::changes` (which holds this cache's [`EntityTiers`]). When
//! the backend switches to a newly published generation (`Lifecycle::catalog_changes`), the
//! in-process entries are dropped, regional keys name the new generation, and a load that
//! started before the switch answers its waiters but stores nothing. Unknown ids are cached
//! too (as absent), so a client asking for ids that do not exist costs the backend once per
//! id and TTL, not once per request.
//!
//! A dataloader batch stays one pass: its hits come from memory and its misses go to the
//! backend in one call, and concurrent misses of one id cost one backend read (the cache's
//! single flight).
//!
//! Search, browse, filmography and similar pages pass through: the profile of the mix puts
//! the backend's time in entity lookups, and those pages are already answered by the HTTP
//! response cache when they are hot.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use marquee_store::{
    BrowseQuery, CatalogReads, CatalogStats, Credit, FilmographyEntry, FilmographyQuery, GenreCount, Movie,
    MovieId, Page, Person, PersonId, SearchQuery, SimilarQuery, StoreError,
};
use prometheus::IntCounterVec;

use crate::cache::{SharedTier, Sizing, Tiered, Tiers, Weigh};
use crate::regional::Regional;

/// Bumped when the shape of a cached entity changes.
const VERSION: &str = "e2";

/// Settings of the entity cache.
#[derive(Clone, Debug)]
pub struct EntityCacheConfig {
    /// Memory for cached entities, in bytes (0: no entity cache).
    pub max_bytes: u64,
    /// How long an entity stays cached.
    pub ttl: Duration,
    /// The region's Redis Cluster behind the in-process tier, when configured.
    pub regional: Option<Arc<Regional>>,
    /// The catalog generation served (`Lifecycle::catalog_id`): part of every regional key.
    pub catalog_id: String,
    /// The backend's switches to a newly published generation, when it makes them.
    pub catalog_changes: Option<tokio::sync::watch::Receiver<String>>,
}

fn text(value: &str) -> usize {
    value.len()
}

fn maybe_text(value: Option<&String>) -> usize {
    value.map_or(0, |v| text(v))
}

impl Weigh for Option<Movie> {
    fn weight(&self) -> usize {
        std::mem::size_of::<Option<Movie>>()
            + self.as_ref().map_or(0, |m| {
                text(&m.title)
                    + maybe_text(m.original_title.as_ref())
                    + maybe_text(m.overview.as_ref())
                    + maybe_text(m.original_language.as_ref())
                    + maybe_text(m.poster_path.as_ref())
                    + m.genres.len() * std::mem::size_of::<marquee_store::Genre>()
            })
    }
}

impl Weigh for Option<Person> {
    fn weight(&self) -> usize {
        std::mem::size_of::<Option<Person>>() + self.as_ref().map_or(0, |p| text(&p.name))
    }
}

impl Weigh for Arc<Vec<Credit>> {
    fn weight(&self) -> usize {
        self.iter().map(|c| std::mem::size_of::<Credit>() + text(&c.role)).sum::<usize>() + 32
    }
}

/// The regional namespace of one kind of entity of one catalog generation.
fn namespace(catalog_id: &str, kind: &str) -> String {
    format!("{catalog_id}:{kind}")
}

/// The regional tier of one kind of entity, when the region has one.
fn shared_tier<K: std::fmt::Display>(config: &EntityCacheConfig, kind: &str) -> Option<SharedTier<K>> {
    let regional = config.regional.clone()?;
    Some(SharedTier::new(regional, VERSION, namespace(&config.catalog_id, kind)))
}

/// Follows the backend's switches to a new generation until the catalog is dropped: each kind
/// of entity then names the new generation in its regional keys and drops what it holds in
/// memory and has in flight (a load that started before the switch answers its waiters but
/// stores nothing).
async fn follow_switches(
    catalog: std::sync::Weak<CachedCatalog>,
    mut changes: tokio::sync::watch::Receiver<String>,
) {
    while changes.changed().await.is_ok() {
        let Some(catalog) = catalog.upgrade() else { return };
        let id = changes.borrow_and_update().clone();
        catalog.movies.switch(&namespace(&id, "movie"));
        catalog.people.switch(&namespace(&id, "person"));
        catalog.credits.switch(&namespace(&id, "credits"));
        tracing::info!(catalog = %id, "entity caches now hold the newly published catalog generation");
    }
}

/// The entity cache's tiers, one per kind: what a catalog change drops entries from.
#[derive(Clone)]
pub struct EntityTiers {
    movies: Tiered<Option<Movie>, MovieId>,
    people: Tiered<Option<Person>, PersonId>,
    credits: Tiered<Arc<Vec<Credit>>, MovieId>,
}

impl EntityTiers {
    /// The regional keys holding `movies` (with their credits) and `people`.
    pub fn shared_keys(&self, movies: &[MovieId], people: &[PersonId]) -> Vec<String> {
        let mut keys = self.movies.shared_keys(movies);
        keys.extend(self.credits.shared_keys(movies));
        keys.extend(self.people.shared_keys(people));
        keys
    }

    /// Drops `movies` (with their credits) and `people` from this process's tier; loads of
    /// them in flight store nothing.
    pub async fn invalidate(&self, movies: &[MovieId], people: &[PersonId]) {
        self.movies.invalidate(movies).await;
        self.credits.invalidate(movies).await;
        self.people.invalidate(people).await;
    }

    /// Drops everything this process holds (invalidations may have been lost).
    pub fn clear(&self) {
        self.movies.clear();
        self.credits.clear();
        self.people.clear();
    }

    /// How long an entry it missed an invalidation of may live.
    pub fn longest_life(&self) -> Duration {
        self.movies.longest_life(self.movies.ttl())
    }
}

/// [`CatalogReads`] with movies, people and credits served from the entity cache.
pub struct CachedCatalog {
    inner: Arc<dyn CatalogReads>,
    movies: Tiered<Option<Movie>, MovieId>,
    people: Tiered<Option<Person>, PersonId>,
    credits: Tiered<Arc<Vec<Credit>>, MovieId>,
}

impl CachedCatalog {
    /// Wraps `inner` (no cache when `config.max_bytes` is 0 or the TTL is zero).
    pub fn wrap(
        inner: Arc<dyn CatalogReads>,
        config: &EntityCacheConfig,
        requests: IntCounterVec,
    ) -> Arc<dyn CatalogReads> {
        CachedCatalog::wrap_with_tiers(inner, config, requests).0
    }

    /// [`CachedCatalog::wrap`], with the tiers catalog changes drop entries from (`None`
    /// without a cache).
    pub fn wrap_with_tiers(
        inner: Arc<dyn CatalogReads>,
        config: &EntityCacheConfig,
        requests: IntCounterVec,
    ) -> (Arc<dyn CatalogReads>, Option<EntityTiers>) {
        if config.max_bytes == 0 || config.ttl.is_zero() {
            return (inner, None);
        }
        // The byte budget split by what the mix reads most: a movie page shows the movie and
        // its credits, and some of the people.
        let sizing = |name: &'static str, percent: u64| Sizing {
            name,
            max_bytes: config.max_bytes / 100 * percent,
            ttl: config.ttl,
            requests: requests.clone(),
        };
        let movies = Tiered::new(sizing("movies", 40), shared_tier(config, "movie"));
        let people = Tiered::new(sizing("people", 20), shared_tier(config, "person"));
        let credits = Tiered::new(sizing("credits", 40), shared_tier(config, "credits"));
        let tiers = EntityTiers { movies: movies.clone(), people: people.clone(), credits: credits.clone() };
        let catalog = Arc::new(CachedCatalog { inner, movies, people, credits });
        if let Some(changes) = config.catalog_changes.clone() {
            tokio::spawn(follow_switches(Arc::downgrade(&catalog), changes));
        }
        (catalog, Some(tiers))
    }
}

#[async_trait]
impl CatalogReads for CachedCatalog {
    async fn movies(&self, ids: &[MovieId]) -> Result<Vec<Option<Movie>>, StoreError> {
        let inner = self.inner.clone();
        self.movies.load(ids, Tiers::ANY, move |ids| async move { inner.movies(&ids).await }.boxed()).await
    }

    async fn people(&self, ids: &[PersonId]) -> Result<Vec<Option<Person>>, StoreError> {
        let inner = self.inner.clone();
        self.people.load(ids, Tiers::ANY, move |ids| async move { inner.people(&ids).await }.boxed()).await
    }

    async fn credits(&self, movies: &[MovieId]) -> Result<Vec<Arc<Vec<Credit>>>, StoreError> {
        let inner = self.inner.clone();
        self.credits
            .load(movies, Tiers::ANY, move |ids| async move { inner.credits(&ids).await }.boxed())
            .await
    }

    async fn filmographies(
        &self,
        queries: &[FilmographyQuery],
    ) -> Result<Vec<Page<FilmographyEntry>>, StoreError> {
        self.inner.filmographies(queries).await
    }

    async fn similar(&self, queries: &[SimilarQuery]) -> Result<Vec<Vec<MovieId>>, StoreError> {
        self.inner.similar(queries).await
    }

    async fn search(&self, query: &SearchQuery) -> Result<Page<MovieId>, StoreError> {
        self.inner.search(query).await
    }

    async fn browse(&self, query: &BrowseQuery) -> Result<Page<MovieId>, StoreError> {
        self.inner.browse(query).await
    }

    async fn genres(&self) -> Result<Vec<GenreCount>, StoreError> {
        self.inner.genres().await
    }

    async fn stats(&self) -> Result<CatalogStats, StoreError> {
        self.inner.stats().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use marquee_store::bulk::seed::SeedOptions;

    use super::*;
    use crate::config::{EmbeddedConfig, StoreConfig};

    /// The embedded store, each entity read taking `delay` longer and counted, so a load is
    /// still in flight when the next batch asks; `failing` makes reads fail as an unreachable
    /// backend would (the embedded store cannot be made to on command).
    struct Slow {
        inner: Arc<dyn CatalogReads>,
        delay: Duration,
        calls: AtomicUsize,
        ids: AtomicUsize,
        failing: std::sync::atomic::AtomicBool,
    }

    impl Slow {
        async fn pause(&self, ids: usize) -> Result<(), StoreError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.ids.fetch_add(ids, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            if self.failing.load(Ordering::SeqCst) {
                return Err(StoreError::unavailable(std::io::Error::other("injected outage")));
            }
            Ok(())
        }
    }

    #[async_trait]
    impl CatalogReads for Slow {
        async fn movies(&self, ids: &[MovieId]) -> Result<Vec<Option<Movie>>, StoreError> {
            self.pause(ids.len()).await?;
            self.inner.movies(ids).await
        }
        async fn people(&self, ids: &[PersonId]) -> Result<Vec<Option<Person>>, StoreError> {
            self.pause(ids.len()).await?;
            self.inner.people(ids).await
        }
        async fn credits(&self, movies: &[MovieId]) -> Result<Vec<Arc<Vec<Credit>>>, StoreError> {
            self.pause(movies.len()).await?;
            self.inner.credits(movies).await
        }
        async fn filmographies(
            &self,
            q: &[FilmographyQuery],
        ) -> Result<Vec<Page<FilmographyEntry>>, StoreError> {
            self.inner.filmographies(q).await
        }
        async fn similar(&self, q: &[SimilarQuery]) -> Result<Vec<Vec<MovieId>>, StoreError> {
            self.inner.similar(q).await
        }
        async fn search(&self, q: &SearchQuery) -> Result<Page<MovieId>, StoreError> {
            self.inner.search(q).await
        }
        async fn browse(&self, q: &BrowseQuery) -> Result<Page<MovieId>, StoreError> {
            self.inner.browse(q).await
        }
        async fn genres(&self) -> Result<Vec<GenreCount>, StoreError> {
            self.inner.genres().await
        }
        async fn stats(&self) -> Result<CatalogStats, StoreError> {
            self.inner.stats().await
        }
    }

    async fn seeded(dir: &std::path::Path) -> Arc<Slow> {
        let config = StoreConfig::Embedded(EmbeddedConfig {
            data_dir: dir.to_owned(),
            cache_mib: crate::config::Mib(8),
            users_cache_mib: crate::config::Mib(8),
            inline_reads: true,
            ..EmbeddedConfig::default()
        });
        let bulk_config = config.clone();
        tokio::task::spawn_blocking(move || {
            let bulk = crate::store::bulk(&bulk_config);
            crate::progress::seed(bulk.as_ref(), &SeedOptions { movies: 60, people: Some(40), seed: 7 })
        })
        .await
        .expect("seeding")
        .expect("seed");
        let store = crate::store::open(&config).await.expect("open");
        Arc::new(Slow {
            inner: store.catalog,
            delay: Duration::from_millis(100),
            calls: AtomicUsize::new(0),
            ids: AtomicUsize::new(0),
            failing: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn requests() -> IntCounterVec {
        IntCounterVec::new(prometheus::Opts::new("t", "t"), &["cache", "tier", "result"]).expect("counter")
    }

    fn config() -> EntityCacheConfig {
        EntityCacheConfig {
            max_bytes: 1 << 20,
            ttl: Duration::from_secs(60),
            regional: None,
            catalog_id: "test".into(),
            catalog_changes: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_of_one_id_cost_one_backend_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let slow = seeded(dir.path()).await;
        let requests = requests();
        let cached = CachedCatalog::wrap(slow.clone(), &config(), requests.clone());
        let expected = slow.inner.movies(&[MovieId(5)]).await.expect("movie");

        let batches = (0..16).map(|_| cached.movies(&[MovieId(5)]));
        for answer in futures::future::join_all(batches).await {
            assert_eq!(answer.expect("movie"), expected);
        }
        assert_eq!(slow.calls.load(Ordering::SeqCst), 1, "16 concurrent misses, one backend read");

        // Overlapping batches: each id is read once, whichever batch asked first.
        let first = cached.people(&[PersonId(1), PersonId(2), PersonId(3)]);
        let second = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            cached.people(&[PersonId(3), PersonId(2), PersonId(4)]).await
        };
        let (first, second) = tokio::join!(first, second);
        let direct = slow.inner.people(&[PersonId(3), PersonId(2), PersonId(4)]).await.expect("people");
        assert_eq!(second.expect("people"), direct);
        assert_eq!(first.expect("people").len(), 3);
        assert_eq!((slow.calls.load(Ordering::SeqCst), slow.ids.load(Ordering::SeqCst)), (3, 1 + 3 + 1));

        // Hits cost nothing; unknown ids are remembered as absent.
        let again = cached.people(&[PersonId(4), PersonId(1)]).await.expect("people");
        assert!(again.iter().all(Option::is_some));
        let unknown = MovieId(9_999_999);
        assert_eq!(cached.movies(&[unknown]).await.expect("absent"), [None]);
        assert_eq!(cached.movies(&[unknown, MovieId(5)]).await.expect("cached"), [None, expected[0].clone()]);
        assert_eq!(slow.calls.load(Ordering::SeqCst), 4);
        assert_eq!(requests.with_label_values(&["movies", crate::cache::L1, "hit"]).get(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_load_fails_every_waiter_and_is_not_cached() {
        let dir = tempfile::tempdir().expect("tempdir");
        let slow = seeded(dir.path()).await;
        let cached = CachedCatalog::wrap(slow.clone(), &config(), requests());
        slow.failing.store(true, Ordering::SeqCst);
        let answers = futures::future::join_all((0..4).map(|_| cached.credits(&[MovieId(2)]))).await;
        for answer in answers {
            let error = answer.expect_err("the load failed");
            assert!(error.is_retryable() && error.to_string().contains("injected"), "{error}");
        }
        assert_eq!(slow.calls.load(Ordering::SeqCst), 1, "one load, four waiters");
        slow.failing.store(false, Ordering::SeqCst);
        let credits = cached.credits(&[MovieId(2)]).await.expect("the next batch reads again");
        assert_eq!(credits, slow.inner.credits(&[MovieId(2)]).await.expect("credits"));
        assert_eq!(slow.calls.load(Ordering::SeqCst), 2);

        // A hit hands out the cached list itself, not a copy of it.
        let hit = cached.credits(&[MovieId(2)]).await.expect("a hit");
        assert!(Arc::ptr_eq(&hit[0], &credits[0]), "a hit shares the cached allocation");
        assert_eq!(slow.calls.load(Ordering::SeqCst), 2, "a hit reads nothing");
    }

    fn regional_metrics() -> (crate::regional::RegionalMetrics, IntCounterVec) {
        let requests = requests();
        let metrics = crate::regional::RegionalMetrics {
            requests: requests.clone(),
            latency: prometheus::Histogram::with_opts(prometheus::HistogramOpts::new("l", "l"))
                .expect("histogram"),
            degraded: prometheus::IntGauge::new("d", "d").expect("gauge"),
            invalidations: prometheus::IntCounterVec::new(prometheus::Opts::new("i", "i"), &["event"])
                .expect("counter"),
            bus_live: prometheus::IntGauge::new("b", "b").expect("gauge"),
            refused: prometheus::IntCounter::new("r", "r").expect("counter"),
        };
        (metrics, requests)
    }

    /// Two gateways of one region (two clients, two L1 caches) over one Redis Cluster.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gateways_share_entities_through_redis_and_ride_out_its_outage() {
        let mut cluster = tokio::task::spawn_blocking(|| marquee_redis_cluster::RedisCluster::start(3))
            .await
            .expect("starting")
            .expect("a Redis Cluster (redis-server installed?)");
        let dir = tempfile::tempdir().expect("tempdir");
        let slow = seeded(dir.path()).await;
        let redis = crate::config::RedisConfig {
            seeds: cluster.seeds(),
            command_timeout_ms: crate::config::Millis(200),
            ..Default::default()
        };
        let gateway = |regional: Arc<Regional>, requests: IntCounterVec| {
            let config = EntityCacheConfig { regional: Some(regional), ..config() };
            CachedCatalog::wrap(slow.clone(), &config, requests)
        };
        let (metrics_a, _) = regional_metrics();
        let (metrics_b, requests_b) = regional_metrics();
        let degraded_b = metrics_b.degraded.clone();
        let regional_a = Regional::connect(&redis, metrics_a).expect("client a");
        let regional_b = Regional::connect(&redis, metrics_b).expect("client b");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !(regional_a.is_connected() && regional_b.is_connected()) {
            assert!(std::time::Instant::now() < deadline, "the clients did not connect");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let a = gateway(regional_a, requests());
        let b = gateway(regional_b.clone(), requests_b.clone());
        let ids = [MovieId(1), MovieId(2), MovieId(3), MovieId(9_999_999)];
        let direct = slow.inner.movies(&ids).await.expect("movies");

        assert_eq!(a.movies(&ids).await.expect("a reads"), direct);
        assert_eq!(slow.calls.load(Ordering::SeqCst), 1);
        assert_eq!(b.movies(&ids).await.expect("b reads"), direct, "the same answers, unknown id included");
        assert_eq!(slow.calls.load(Ordering::SeqCst), 1, "gateway b read a's entries from Redis");
        assert_eq!(requests_b.with_label_values(&["movies", crate::regional::L2, "hit"]).get(), 4);

        // Every master gone: reads are served from the store, none fails.
        for node in 0..3 {
            cluster.kill(node).expect("kill");
        }
        let more = [MovieId(4), MovieId(5)];
        assert_eq!(
            b.movies(&more).await.expect("served without Redis"),
            slow.inner.movies(&more).await.expect("m")
        );
        assert_eq!(slow.calls.load(Ordering::SeqCst), 2);
        assert!(requests_b.with_label_values(&["movies", crate::regional::L2, "error"]).get() > 0);
        assert_eq!(degraded_b.get(), 1);

        // Back: the client reconnects by itself, and the tier is used again.
        let cluster = tokio::task::spawn_blocking(move || {
            for node in 0..3 {
                cluster.restart(node).expect("restart");
            }
            cluster
        })
        .await
        .expect("restarting");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut id = 10;
        loop {
            b.movies(&[MovieId(id)]).await.expect("served");
            if degraded_b.get() == 0 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the client did not reconnect");
            id += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let calls = slow.calls.load(Ordering::SeqCst);
        b.movies(&[MovieId(40)]).await.expect("written to Redis by b");
        a.movies(&[MovieId(40)]).await.expect("read from Redis by a");
        assert_eq!(slow.calls.load(Ordering::SeqCst), calls + 1);
        drop(cluster);
    }
}
