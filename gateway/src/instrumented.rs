//! The store as the gateway sees it: every call wrapped in a `tracing` span and counted in
//! `store_calls_total{backend,op}` / `store_call_duration_seconds`. Resolvers and loaders get
//! this wrapper, so the counts are exactly the backend round trips a request caused.

use std::future::Future;
use std::time::Instant;

use async_trait::async_trait;
use marquee_store::{
    BrowseQuery, CatalogStats, Credit, DynStore, FilmographyEntry, FilmographyQuery, GenreCount, Movie,
    MovieId, Page, Person, PersonId, Rating, SearchQuery, SimilarQuery, Store, StoreError, UserId, UserPage,
    WatchlistEntry,
};
use tracing::Instrument;

use crate::telemetry::Metrics;

/// A [`Store`] that reports every call.
pub struct InstrumentedStore {
    inner: DynStore,
    metrics: Metrics,
}

impl InstrumentedStore {
    /// Wraps `inner`.
    pub fn new(inner: DynStore, metrics: Metrics) -> InstrumentedStore {
        InstrumentedStore { inner, metrics }
    }

    async fn call<T>(
        &self,
        op: &'static str,
        keys: usize,
        f: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let backend = self.inner.backend();
        self.metrics.store_calls.with_label_values(&[backend, op]).inc();
        let start = Instant::now();
        let span = tracing::debug_span!("store", backend, op, keys);
        let result = f.instrument(span).await;
        self.metrics.store_duration.with_label_values(&[backend, op]).observe(start.elapsed().as_secs_f64());
        if let Err(e) = &result
            && !e.is_client_error()
        {
            tracing::warn!(backend, op, error = %e, "store call failed");
        }
        result
    }
}

#[async_trait]
impl Store for InstrumentedStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn movies(&self, ids: &[MovieId]) -> Result<Vec<Option<Movie>>, StoreError> {
        self.call("movies", ids.len(), self.inner.movies(ids)).await
    }

    async fn people(&self, ids: &[PersonId]) -> Result<Vec<Option<Person>>, StoreError> {
        self.call("people", ids.len(), self.inner.people(ids)).await
    }

    async fn credits(&self, movies: &[MovieId]) -> Result<Vec<Vec<Credit>>, StoreError> {
        self.call("credits", movies.len(), self.inner.credits(movies)).await
    }

    async fn filmographies(
        &self,
        queries: &[FilmographyQuery],
    ) -> Result<Vec<Page<FilmographyEntry>>, StoreError> {
        self.call("filmographies", queries.len(), self.inner.filmographies(queries)).await
    }

    async fn similar(&self, queries: &[SimilarQuery]) -> Result<Vec<Vec<MovieId>>, StoreError> {
        self.call("similar", queries.len(), self.inner.similar(queries)).await
    }

    async fn search(&self, query: &SearchQuery) -> Result<Page<MovieId>, StoreError> {
        self.call("search", 1, self.inner.search(query)).await
    }

    async fn browse(&self, query: &BrowseQuery) -> Result<Page<MovieId>, StoreError> {
        self.call("browse", 1, self.inner.browse(query)).await
    }

    async fn genres(&self) -> Result<Vec<GenreCount>, StoreError> {
        self.call("genres", 1, self.inner.genres()).await
    }

    async fn stats(&self) -> Result<CatalogStats, StoreError> {
        self.call("stats", 1, self.inner.stats()).await
    }

    async fn rate(&self, user: &UserId, movie: MovieId, score: u8) -> Result<Rating, StoreError> {
        self.call("rate", 1, self.inner.rate(user, movie, score)).await
    }

    async fn delete_rating(&self, user: &UserId, movie: MovieId) -> Result<bool, StoreError> {
        self.call("delete_rating", 1, self.inner.delete_rating(user, movie)).await
    }

    async fn user_ratings(
        &self,
        user: &UserId,
        movies: &[MovieId],
    ) -> Result<Vec<Option<Rating>>, StoreError> {
        self.call("user_ratings", movies.len(), self.inner.user_ratings(user, movies)).await
    }

    async fn ratings_page(&self, user: &UserId, page: UserPage) -> Result<Page<Rating>, StoreError> {
        self.call("ratings_page", 1, self.inner.ratings_page(user, page)).await
    }

    async fn add_to_watchlist(&self, user: &UserId, movie: MovieId) -> Result<WatchlistEntry, StoreError> {
        self.call("add_to_watchlist", 1, self.inner.add_to_watchlist(user, movie)).await
    }

    async fn remove_from_watchlist(&self, user: &UserId, movie: MovieId) -> Result<bool, StoreError> {
        self.call("remove_from_watchlist", 1, self.inner.remove_from_watchlist(user, movie)).await
    }

    async fn watchlist_page(
        &self,
        user: &UserId,
        page: UserPage,
    ) -> Result<Page<WatchlistEntry>, StoreError> {
        self.call("watchlist_page", 1, self.inner.watchlist_page(user, page)).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.call("ping", 0, self.inner.ping()).await
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.inner.close().await
    }
}
