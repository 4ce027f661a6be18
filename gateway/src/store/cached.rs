//! The cached layer of the store stack: read-through caches of shared data over the
//! instrumented backend, and the write path's invalidation.
//!
//! Reads are batch-shaped all the way down: one dataloader batch is one pass over the cache
//! and at most one backend call for the misses. Writes go to the backend first; once it has
//! acknowledged them, [`Invalidation::changed`] drops every cached copy the write made stale,
//! before the mutation returns — so the gateway that took a write reads it back at once, and
//! the region's other gateways within the entry's time to live.
//!
//! Cached here: movies' rating totals (`cache.rating_totals_ttl_secs`), read by every query
//! that shows a rating, and, through [`CachedCatalog`], movies, people and credits by id
//! (the catalog changes only with a new load, so no write invalidates those). The regional
//! Redis tier goes behind both, and its invalidation joins [`Invalidation::changed`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use marquee_store::{
    MovieId, Page, Rating, RatingTotals, Store, StoreError, UserData, UserId, UserPage, WatchlistEntry,
};
use prometheus::IntCounterVec;

use super::StackConfig;
use super::entities::CachedCatalog;
use crate::cache::{self, Cache, Weigh};

/// Bumped when the shape of a cached value changes.
const VERSION: &str = "s1";

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

/// The invalidation entry point: the write path tells it what changed, and it drops the
/// cached copies, in every tier this gateway reaches.
pub struct Invalidation {
    rating_totals: Arc<Cache<RatingTotals>>,
}

impl Invalidation {
    /// Drops whatever `changes` made stale.
    pub async fn changed(&self, changes: &[Change]) {
        let keys: Vec<String> = changes
            .iter()
            .map(|change| match change {
                Change::RatingTotals(movie) => totals_key(*movie),
            })
            .collect();
        self.rating_totals.invalidate(&keys).await;
    }
}

fn totals_key(movie: MovieId) -> String {
    cache::key(VERSION, "totals", movie.0)
}

/// [`UserData`] with rating totals read through a cache and writes invalidating it.
pub struct CachedUsers {
    inner: Arc<dyn UserData>,
    totals: Arc<Cache<RatingTotals>>,
    ttl: Duration,
    invalidation: Invalidation,
}

/// Wraps the faces of `store` that have caches.
pub fn wrap(store: Store, config: &StackConfig, requests: IntCounterVec) -> Store {
    let requests_for_entities = requests.clone();
    let totals = Arc::new(Cache::new("rating_totals", config.rating_totals_bytes, requests));
    let users = CachedUsers {
        inner: store.users,
        invalidation: Invalidation { rating_totals: totals.clone() },
        totals,
        ttl: config.rating_totals_ttl,
    };
    let catalog = CachedCatalog::wrap(store.catalog, &config.entities, requests_for_entities);
    Store { catalog, users: Arc::new(users), lifecycle: store.lifecycle }
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

    async fn rating_totals(&self, movies: &[MovieId]) -> Result<Vec<RatingTotals>, StoreError> {
        if self.ttl.is_zero() {
            // `cache.rating_totals_ttl_secs = 0`: nothing is ever stored, so do not look.
            return self.inner.rating_totals(movies).await;
        }
        let keys: Vec<String> = movies.iter().map(|m| totals_key(*m)).collect();
        let cached = self.totals.get_many(&keys).await;
        let misses: Vec<MovieId> =
            movies.iter().zip(&cached).filter(|(_, c)| c.is_none()).map(|(m, _)| *m).collect();
        let missing = cache::distinct(&misses);
        if missing.is_empty() {
            return Ok(cached.into_iter().map(Option::unwrap_or_default).collect());
        }
        let loaded = self.inner.rating_totals(&missing).await?;
        let fresh: HashMap<MovieId, RatingTotals> = missing.iter().copied().zip(loaded).collect();
        let entries: Vec<(String, RatingTotals, Duration)> =
            fresh.iter().map(|(m, t)| (totals_key(*m), *t, self.ttl)).collect();
        self.totals.put_many(entries).await;
        Ok(movies
            .iter()
            .zip(cached)
            .map(|(m, c)| c.or_else(|| fresh.get(m).copied()).unwrap_or_default())
            .collect())
    }
}
