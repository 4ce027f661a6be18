//! The cached layer of the store stack: read-through caches of shared data over the
//! instrumented backend, and the write path's invalidation.
//!
//! Reads are batch-shaped all the way down: one dataloader batch is one pass over the cache
//! and at most one backend call for the misses. Writes go to the backend first; once it has
//! acknowledged them, [`Invalidation::changed`] drops every cached copy the write made stale,
//! before the mutation returns, so the gateway that took a write reads it back at once.
//!
//! Cached here: movies' rating totals (`cache.rating_totals_ttl_secs`), read by every query
//! that shows a rating, and, through [`CachedCatalog`], movies, people and credits by id
//! (the catalog changes only with a new load, so no write invalidates those).
//!
//! With `[redis]`, rating totals have a regional tier too, and a write reaches the region's
//! other gateways through the invalidation bus (`crate::regional::bus`): it deletes the
//! regional entries and every gateway drops its own copies, within the bus's delivery time.
//! A read racing the write (it read the old totals before the write and stores them after the
//! deletion) would put the old value back; so every invalidation is sent again
//! `REPEAT_AFTER` later, and retried while the cluster fails, for as long as an entry it could
//! have missed may live. While the bus is not live (the cluster unreachable, frozen, or a
//! subscription lost), this gateway uses neither tier for totals: messages could be lost, so
//! totals come from the store, and the bound holds through an outage too. Once it is live
//! again it ignores regional entries read from the store before that moment (each entry
//! carries when it was read), since an invalidation sent during the outage may have missed
//! them. A writer that cannot reach Redis at all keeps retrying; until it succeeds (or the TTL
//! passes) gateways that never lost the bus may show the old totals.
//!
//! Other regions' writes arrive through the store: every rating write lists its movie in the
//! backend's change log (`rating_changes` on ScyllaDB, replicated to every data center with
//! the rating), and each gateway reads the last `FOLLOW_SECONDS` of it every `FOLLOW_EVERY`.
//! A change it has not seen yet is claimed in the region's Redis (`SET NX`), so one gateway of
//! the region applies it (a claim that gets no answer is asked again on the next read, never
//! taken for another gateway's), exactly as if the write had been taken here: regional entries
//! deleted, every gateway's copies dropped through the bus, sent again `REPEAT_AFTER` later
//! (for totals replicated after the log entry). No write waits on another region. A change
//! that arrives later than `FOLLOW_SECONDS` (hints replayed after a partition, a batchlog
//! replay, a repair) is found by the region's rating reconciler, which re-derives the totals
//! it makes wrong and hands their movies to its gateway's follower (`rederived_totals`), which
//! applies them region-wide like any other change (ARCHITECTURE.md).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use marquee_store::{
    MovieId, Page, Rating, RatingTotals, Store, StoreError, UserData, UserId, UserPage, WatchlistEntry,
};
use prometheus::IntCounterVec;

use futures::FutureExt;

use super::StackConfig;
use super::entities::CachedCatalog;
use crate::cache::{SharedTier, Sizing, Tiered, Tiers, Weigh};
use crate::regional::bus::{Bus, Listener};
use crate::regional::{Claim, RedisConfigError, Regional};

/// Bumped when the shape of a cached value changes.
const VERSION: &str = "s1";

/// The `cache` label of rating totals.
const TOTALS: &str = "rating_totals";

/// When an invalidation is sent again (see the module docs).
const REPEAT_AFTER: Duration = Duration::from_millis(500);

/// How often each gateway reads the change log.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// How far back, in seconds of the writers' clocks, each read of the change log goes: a change
/// that reaches this region's replicas later than that (or from a clock further behind) is
/// left to the totals' TTL.
const FOLLOW_SECONDS: u64 = 3;

/// How long a gateway's claim to apply a change lasts: longer than the change stays within
/// `FOLLOW_SECONDS`, so no second gateway of the region claims it.
const CLAIM_FOR: Duration = Duration::from_secs(30);

impl Weigh for RatingTotals {
    fn weight(&self) -> usize {
        std::mem::size_of::<RatingTotals>()
    }
}

/// What a successful write changed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A rating was set or removed: the movie's totals changed.
    RatingTotals(MovieId),
}

impl Change {
    /// The bus message saying so: `totals <movie id>`.
    fn message(self) -> (u64, String) {
        match self {
            Change::RatingTotals(movie) => (movie.0, format!("totals {}", movie.0)),
        }
    }

    fn parse(text: &str) -> Option<Change> {
        let (kind, id) = text.split_once(' ')?;
        match kind {
            "totals" => Some(Change::RatingTotals(MovieId(id.parse().ok()?))),
            _ => None,
        }
    }
}

/// What else holds ratings: HTTP caches of whole responses (this gateway's response cache,
/// the region's CDN edge), told of every change to rating totals.
pub trait RatingsObserver: Send + Sync + 'static {
    /// `movies`' ratings changed, and this gateway learnt of it (its own write, a message on
    /// the region's bus, or a change it applied from the log).
    fn seen(&self, movies: &[MovieId]) {
        let _ = movies;
    }

    /// `movies`' ratings changed and this gateway applies it for the whole region (its own
    /// write, or another region's it claimed from the log): once per change per region.
    fn applied(&self, movies: &[MovieId]) {
        let _ = movies;
    }

    /// Messages about changes may have been lost: anything may be stale.
    fn lost(&self) {}
}

/// The region's side of the rating-totals cache: its regional tier and the bus.
struct RegionTier {
    regional: Arc<Regional>,
    bus: Bus,
}

/// The invalidation entry point: the write path tells it what changed, and it drops the
/// cached copies, in every tier and every gateway of the region.
pub struct Invalidation {
    rating_totals: Tiered<RatingTotals, MovieId>,
    observers: Vec<Arc<dyn RatingsObserver>>,
    region_tier: Option<Arc<RegionTier>>,
    /// How long a copy it could have missed may live (the totals' TTL, jitter included).
    horizon: Duration,
}

impl Invalidation {
    /// Drops whatever `changes` made stale.
    pub async fn changed(&self, changes: &[Change]) {
        let keys: Vec<MovieId> = changes
            .iter()
            .map(|change| match change {
                Change::RatingTotals(movie) => *movie,
            })
            .collect();
        if let Some(region_tier) = &self.region_tier {
            let shared = self.rating_totals.shared_keys(&keys);
            let messages: Vec<(u64, String)> = changes.iter().map(|c| c.message()).collect();
            // The regional entries first, so this gateway cannot refill its own from them.
            region_tier.bus.invalidate(&shared, &messages).await;
            let region_tier = region_tier.clone();
            let horizon = self.horizon;
            tokio::spawn(async move {
                let started = Instant::now();
                let mut wait = REPEAT_AFTER;
                loop {
                    tokio::time::sleep(wait).await;
                    if region_tier.bus.invalidate(&shared, &messages).await || started.elapsed() > horizon {
                        break;
                    }
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
            });
        }
        self.rating_totals.invalidate(&keys).await;
        for observer in &self.observers {
            observer.seen(&keys);
            observer.applied(&keys);
        }
    }
}

/// Reads the backend's change log every `FOLLOW_EVERY` and applies, region-wide, each change
/// this gateway is the first of its region to claim (see the module docs). Returns at once on
/// a backend without a log.
async fn follow_changes(log: Arc<dyn UserData>, invalidation: Arc<Invalidation>, regional: Arc<Regional>) {
    // The changes seen, by second, for the seconds still read.
    let mut seen: BTreeMap<u64, HashSet<MovieId>> = BTreeMap::new();
    // Changes whose claim got no answer, with when they were first deferred: claimed again on
    // every tick (even once their second has left the log's window) until the claim is
    // settled, for as long as another gateway's claim of them could last.
    let mut deferred: HashMap<(u64, MovieId), Instant> = HashMap::new();
    let mut ticks = tokio::time::interval(FOLLOW_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let now = crate::regional::bus::now_ms() / 1_000;
        let first = now.saturating_sub(FOLLOW_SECONDS);
        seen = seen.split_off(&first);
        let before = deferred.len();
        deferred.retain(|_, since| since.elapsed() < CLAIM_FOR);
        if deferred.len() < before {
            tracing::warn!(
                changes = before - deferred.len(),
                "changes from the log could not be claimed while the region's Redis failed; left to the totals' TTL"
            );
        }
        let mut fresh: Vec<(u64, MovieId)> = deferred.keys().copied().collect();
        for second in first..=now {
            match log.rating_changes(second).await {
                Ok(Some(movies)) => {
                    let known = seen.entry(second).or_default();
                    fresh.extend(
                        movies
                            .into_iter()
                            .filter(|m| !known.contains(m) && !deferred.contains_key(&(second, *m)))
                            .map(|m| (second, m)),
                    );
                }
                Ok(None) => return,
                Err(error) => {
                    tracing::debug!(%error, "reading the change log failed; reading it again next tick");
                    break;
                }
            }
        }
        // Totals this gateway's reconciler (the region's one) found wrong and re-derived: rows
        // that arrived after the log's window, which no follower saw. Applied region-wide
        // here, unclaimed: only the region's reconciler has them.
        let rederived = log.rederived_totals().await.unwrap_or_default();
        if !rederived.is_empty() {
            regional.count_invalidations("rederived", rederived.len());
            let changes: Vec<Change> = rederived.into_iter().map(Change::RatingTotals).collect();
            invalidation.changed(&changes).await;
        }
        if fresh.is_empty() {
            continue;
        }
        let claims: Vec<String> = fresh
            .iter()
            .map(|(second, movie)| format!("mq:{VERSION}:followed:{second}:{}", movie.0))
            .collect();
        // A change is settled once its claim is (won here, or held by another gateway); one
        // whose claim got no answer is claimed again next tick, so a failed call never leaves
        // a change applied by nobody.
        let claimed = regional.claim_many(&claims, CLAIM_FOR).await;
        let mut changes = Vec::new();
        let mut unanswered = 0;
        for (&(second, movie), claim) in fresh.iter().zip(claimed) {
            match claim {
                Claim::Won => changes.push(Change::RatingTotals(movie)),
                Claim::HeldElsewhere => {}
                Claim::Unknown => {
                    unanswered += 1;
                    deferred.entry((second, movie)).or_insert_with(Instant::now);
                    continue;
                }
            }
            deferred.remove(&(second, movie));
            if second >= first {
                seen.entry(second).or_default().insert(movie);
            }
        }
        regional.count_invalidations("follow_deferred", unanswered);
        if !changes.is_empty() {
            regional.count_invalidations("followed", changes.len());
            invalidation.changed(&changes).await;
        }
    }
}

/// Drops this gateway's copies on the bus's word.
struct TotalsListener {
    rating_totals: Tiered<RatingTotals, MovieId>,
    observers: Vec<Arc<dyn RatingsObserver>>,
}

#[async_trait]
impl Listener for TotalsListener {
    async fn message(&self, text: &str) {
        match Change::parse(text) {
            Some(Change::RatingTotals(movie)) => {
                self.rating_totals.invalidate([&movie]).await;
                for observer in &self.observers {
                    observer.seen(&[movie]);
                }
            }
            None => tracing::debug!(text, "unknown invalidation message"),
        }
    }

    async fn resync(&self) {
        self.rating_totals.clear();
        for observer in &self.observers {
            observer.lost();
        }
    }
}

/// [`UserData`] with rating totals read through a cache and writes invalidating it.
pub struct CachedUsers {
    inner: Arc<dyn UserData>,
    totals: Tiered<RatingTotals, MovieId>,
    ttl: Duration,
    region_tier: Option<Arc<RegionTier>>,
    invalidation: Arc<Invalidation>,
    /// Follows the change log while the store lives (with `[redis]`).
    follower: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for CachedUsers {
    fn drop(&mut self) {
        if let Some(follower) = &self.follower {
            follower.abort();
        }
    }
}

/// Wraps the faces of `store` that have caches.
pub fn wrap(store: Store, config: &StackConfig, requests: IntCounterVec) -> Result<Store, RedisConfigError> {
    let requests_for_entities = requests.clone();
    let ttl = config.rating_totals_ttl;
    let sizing = Sizing { name: TOTALS, max_bytes: config.rating_totals_bytes, ttl, requests };
    // Rating totals do not depend on the catalog generation: users' data outlives loads.
    let shared = config.regional.as_ref().map(|regional| SharedTier {
        regional: regional.clone(),
        version: VERSION,
        namespace: "totals".into(),
    });
    let totals = Tiered::new(sizing, shared);
    let region_tier = match &config.regional {
        Some(regional) => {
            let listener = Arc::new(TotalsListener {
                rating_totals: totals.clone(),
                observers: config.observers.clone(),
            });
            Some(Arc::new(RegionTier {
                regional: regional.clone(),
                bus: Bus::join(regional.clone(), listener)?,
            }))
        }
        None => None,
    };
    let invalidation = Arc::new(Invalidation {
        rating_totals: totals.clone(),
        observers: config.observers.clone(),
        region_tier: region_tier.clone(),
        horizon: totals.longest_life(ttl) + Duration::from_secs(1),
    });
    let follower = region_tier.as_ref().map(|region_tier| {
        tokio::spawn(follow_changes(store.users.clone(), invalidation.clone(), region_tier.regional.clone()))
    });
    let users = CachedUsers { inner: store.users, invalidation, totals, ttl, region_tier, follower };
    let catalog = CachedCatalog::wrap(store.catalog, &config.entities, requests_for_entities);
    Ok(Store { catalog, users: Arc::new(users), lifecycle: store.lifecycle })
}

#[async_trait]
impl UserData for CachedUsers {
    fn totals_lag(&self) -> Duration {
        self.inner.totals_lag() + self.ttl
    }

    async fn rate(&self, user: &UserId, movie: MovieId, score: u8) -> Result<Rating, StoreError> {
        let rating = self.inner.rate(user, movie, score).await?;
        self.invalidation.changed(&[Change::RatingTotals(movie)]).await;
        Ok(rating)
    }

    async fn delete_rating(&self, user: &UserId, movie: MovieId) -> Result<bool, StoreError> {
        let removed = self.inner.delete_rating(user, movie).await?;
        if removed {
            self.invalidation.changed(&[Change::RatingTotals(movie)]).await;
        }
        Ok(removed)
    }

    async fn user_ratings(
        &self,
        user: &UserId,
        movies: &[MovieId],
    ) -> Result<Vec<Option<Rating>>, StoreError> {
        self.inner.user_ratings(user, movies).await
    }

    async fn ratings_page(&self, user: &UserId, page: UserPage) -> Result<Page<Rating>, StoreError> {
        self.inner.ratings_page(user, page).await
    }

    async fn add_to_watchlist(&self, user: &UserId, movie: MovieId) -> Result<WatchlistEntry, StoreError> {
        self.inner.add_to_watchlist(user, movie).await
    }

    async fn remove_from_watchlist(&self, user: &UserId, movie: MovieId) -> Result<bool, StoreError> {
        self.inner.remove_from_watchlist(user, movie).await
    }

    async fn watchlist_page(
        &self,
        user: &UserId,
        page: UserPage,
    ) -> Result<Page<WatchlistEntry>, StoreError> {
        self.inner.watchlist_page(user, page).await
    }

    async fn rating_changes(&self, second: u64) -> Result<Option<Vec<MovieId>>, StoreError> {
        self.inner.rating_changes(second).await
    }

    async fn rederived_totals(&self) -> Result<Vec<MovieId>, StoreError> {
        self.inner.rederived_totals().await
    }

    async fn rating_totals(&self, movies: &[MovieId]) -> Result<Vec<RatingTotals>, StoreError> {
        if self.ttl.is_zero() {
            // `cache.rating_totals_ttl_secs = 0`: nothing is ever stored, so do not look.
            return self.inner.rating_totals(movies).await;
        }
        // Without a live bus, another gateway's write could not reach this gateway's copies:
        // neither tier is used then, and the regional one only for values read since.
        let tiers = match self.region_tier.as_ref().map(|r| r.bus.live_since()) {
            None => Tiers::ANY,
            Some(Some(since_ms)) => Tiers::Cached { since_ms },
            Some(None) => Tiers::Bypass,
        };
        let inner = self.inner.clone();
        self.totals
            .load(movies, tiers, move |movies| async move { inner.rating_totals(&movies).await }.boxed())
            .await
    }
}
