//! The cached layer of the store stack: read-through caches of shared data over the
//! instrumented backend, and the write path's hand-off to `crate::changes`.
//!
//! Reads are batch-shaped all the way down: one dataloader batch is one pass over the cache
//! and at most one backend call for the misses. Writes go to the backend first; once it has
//! acknowledged them, [`Changes::changed`] drops every cached copy the write made stale,
//! before the mutation returns, so the gateway that took a write reads it back at once.
//!
//! Cached here: movies' rating totals (`cache.rating_totals_ttl_secs`), read by every query
//! that shows a rating, in a [`Tiered`] cache (regional with `[redis]`, and then read only
//! while the region's invalidation bus is live: `Changes::totals_tiers`), and, through
//! [`CachedCatalog`], movies, people and credits by id, which live catalog changes
//! ([`CachedEdits`]) drop the same way.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use marquee_store::{
    Applied, AuditRecord, CatalogChanges, CatalogWrites, Edit, Logged, MovieId, MovieRecord, Page, Person,
    PersonId, Rating, RatingTotals, Store, StoreError, UserData, UserId, UserPage, WatchlistEntry,
};
use prometheus::IntCounterVec;

use super::StackConfig;
use super::entities::CachedCatalog;
use crate::cache::{SharedTier, Sizing, Tiered, Weigh};
use crate::changes::{Change, Changes, FollowLogs, Following};
use crate::regional::RedisConfigError;
use crate::telemetry::FollowerMetrics;

/// Bumped when the shape of cached totals changes.
const VERSION: &str = "s1";

/// The `cache` label of rating totals.
const TOTALS: &str = "rating_totals";

impl Weigh for RatingTotals {
    fn weight(&self) -> usize {
        std::mem::size_of::<RatingTotals>()
    }
}

/// [`UserData`] with rating totals read through a cache and writes invalidating it.
pub struct CachedUsers {
    inner: Arc<dyn UserData>,
    totals: Tiered<RatingTotals, MovieId>,
    ttl: Duration,
    changes: Arc<Changes>,
    /// Follows the change log while the store lives (with `[redis]`).
    _following: Option<Following>,
}

/// Wraps the faces of `store` that have caches.
pub fn wrap(
    store: Store,
    config: &StackConfig,
    requests: IntCounterVec,
    follower: FollowerMetrics,
) -> Result<Store, RedisConfigError> {
    let requests_for_entities = requests.clone();
    let ttl = config.rating_totals_ttl;
    let sizing = Sizing { name: TOTALS, max_bytes: config.rating_totals_bytes, ttl, requests };
    // Rating totals do not depend on the catalog generation: users' data outlives loads.
    let shared = config.regional.as_ref().map(|regional| SharedTier {
        // `mq:s1:totals:<number>`, as gateways before the tiered cache name them, so both
        // kinds delete the same keys while a region rolls from one to the other.
        key: |movie: &MovieId| movie.0.to_string(),
        ..SharedTier::new(regional.clone(), VERSION, "totals")
    });
    let totals = Tiered::new(sizing, shared);
    let (catalog, entities) =
        CachedCatalog::wrap_with_tiers(store.catalog, &config.entities, requests_for_entities);
    let (changes, following) = Changes::start(
        totals.clone(),
        entities,
        ttl,
        config.subscribers.clone(),
        config.regional.clone(),
        FollowLogs { ratings: store.users.clone(), catalog: store.edits.clone(), metrics: follower },
    )?;
    // Changes a crash interrupted were finished when the backend opened, and no cache heard of
    // them: the region's tier and edges may still hold what they replaced.
    let recovered = store.edits.recovered();
    if !recovered.is_empty() {
        let changes = changes.clone();
        tokio::spawn(async move {
            for applied in recovered {
                changes.changed(&Change::of_catalog(&applied)).await;
            }
        });
    }
    let edits = CachedEdits { inner: store.edits, changes: changes.clone() };
    let users = CachedUsers { inner: store.users, totals, ttl, changes, _following: following };
    Ok(Store { catalog, users: Arc::new(users), edits: Arc::new(edits), lifecycle: store.lifecycle })
}

/// [`CatalogWrites`] whose applies drop what they changed from every cache before returning.
pub struct CachedEdits {
    inner: Arc<dyn CatalogWrites>,
    changes: Arc<Changes>,
}

#[async_trait]
impl CatalogWrites for CachedEdits {
    async fn apply(&self, changes: CatalogChanges, edit: Edit) -> Result<Applied, StoreError> {
        // A task of its own: a caller that goes away (a timeout, a closed connection) after the
        // backend applied the change must not leave the caches untold.
        let (inner, cached) = (self.inner.clone(), self.changes.clone());
        tokio::spawn(async move {
            let result = inner.apply(changes, edit).await;
            // What an earlier, interrupted apply changed, finished by this one: told too,
            // whether this one succeeded or not.
            for earlier in inner.recovered() {
                cached.changed(&Change::of_catalog(&earlier)).await;
            }
            let applied = result?;
            cached.changed(&Change::of_catalog(&applied)).await;
            Ok(applied)
        })
        .await
        .map_err(StoreError::backend)?
    }

    async fn records(&self, ids: &[MovieId]) -> Result<Vec<Option<MovieRecord>>, StoreError> {
        self.inner.records(ids).await
    }

    async fn person_records(&self, ids: &[PersonId]) -> Result<Vec<Option<Person>>, StoreError> {
        self.inner.person_records(ids).await
    }

    async fn audit_page(&self, page: UserPage) -> Result<Page<AuditRecord>, StoreError> {
        self.inner.audit_page(page).await
    }

    async fn catalog_log(&self, second: u64) -> Result<Option<Vec<Logged>>, StoreError> {
        self.inner.catalog_log(second).await
    }
}

#[async_trait]
impl UserData for CachedUsers {
    fn totals_lag(&self) -> Duration {
        self.inner.totals_lag() + self.ttl
    }

    async fn rate(&self, user: &UserId, movie: MovieId, score: u8) -> Result<Rating, StoreError> {
        let rating = self.inner.rate(user, movie, score).await?;
        self.changes.changed(&[Change::RatingTotals(movie)]).await;
        Ok(rating)
    }

    async fn delete_rating(&self, user: &UserId, movie: MovieId) -> Result<bool, StoreError> {
        let removed = self.inner.delete_rating(user, movie).await?;
        if removed {
            self.changes.changed(&[Change::RatingTotals(movie)]).await;
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
        let tiers = self.changes.totals_tiers();
        let inner = self.inner.clone();
        self.totals
            .load(movies, tiers, move |movies| async move { inner.rating_totals(&movies).await }.boxed())
            .await
    }
}
