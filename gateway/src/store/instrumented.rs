//! The instrumented layer of the store stack: every backend call wrapped in a `tracing` span
//! and counted in `store_calls_total{backend,op}` / `store_call_duration_seconds`, with the
//! database statements and sequential round trips it cost (`store_statements_per_call`,
//! `store_round_trips_per_call`) when the backend sends statements. It sits
//! directly on the backend, under the caches, so the counts are exactly the backend round
//! trips requests caused.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use marquee_store::{
    Applied, AuditRecord, BrowseQuery, CatalogChanges, CatalogReads, CatalogStats, CatalogWrites, Credit,
    Edit, FilmographyEntry, FilmographyQuery, GenreCount, Lifecycle, Logged, Movie, MovieId, MovieRecord,
    Page, Person, PersonId, Rating, RatingTotals, SearchQuery, SimilarQuery, Store, StoreError, UserData,
    UserId, UserPage, WatchlistEntry, statements,
};
use tracing::Instrument;

use crate::telemetry::Metrics;

/// One face of the store (`S` is `dyn CatalogReads`, `dyn UserData`, `dyn CatalogWrites` or
/// `dyn Lifecycle`),
/// reporting every call.
pub struct Instrumented<S: ?Sized> {
    inner: Arc<S>,
    backend: &'static str,
    metrics: Metrics,
}

/// Wraps each face of `store` (whose backend is called `backend` in metrics).
pub fn wrap(store: Store, backend: &'static str, metrics: &Metrics) -> Store {
    let metrics = metrics.clone();
    Store {
        catalog: Arc::new(Instrumented { inner: store.catalog, backend, metrics: metrics.clone() }),
        users: Arc::new(Instrumented { inner: store.users, backend, metrics: metrics.clone() }),
        edits: Arc::new(Instrumented { inner: store.edits, backend, metrics: metrics.clone() }),
        lifecycle: Arc::new(Instrumented { inner: store.lifecycle, backend, metrics }),
    }
}

impl<S: ?Sized> Instrumented<S> {
    async fn call<T>(
        &self,
        op: &'static str,
        keys: usize,
        f: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let backend = self.backend;
        self.metrics.store_calls.with_label_values(&[backend, op]).inc();
        let start = Instant::now();
        // Only within a request or another traced task: the readiness probe's ping and other
        // background calls would each be a trace of their own, one a second.
        let span = if tracing::Span::current().is_none() {
            tracing::Span::none()
        } else {
            tracing::debug_span!("store", backend, op, keys)
        };
        let (result, sent) = statements::counted(f.instrument(span)).await;
        self.metrics.store_duration.with_label_values(&[backend, op]).observe(start.elapsed().as_secs_f64());
        if sent.statements > 0 {
            let labels = [backend, op];
            self.metrics.store_statements.with_label_values(&labels).observe(f64::from(sent.statements));
            self.metrics.store_round_trips.with_label_values(&labels).observe(f64::from(sent.round_trips));
        }
        if let Err(e) = &result
            && !e.is_client_error()
        {
            tracing::warn!(backend, op, error = %e, "store call failed");
        }
        result
    }
}

#[async_trait]
impl CatalogWrites for Instrumented<dyn CatalogWrites> {
    async fn apply(&self, changes: CatalogChanges, edit: Edit) -> Result<Applied, StoreError> {
        self.call("apply", changes.len(), self.inner.apply(changes, edit)).await
    }

    async fn records(&self, ids: &[MovieId]) -> Result<Vec<Option<MovieRecord>>, StoreError> {
        self.call("records", ids.len(), self.inner.records(ids)).await
    }

    async fn person_records(&self, ids: &[PersonId]) -> Result<Vec<Option<Person>>, StoreError> {
        self.call("person_records", ids.len(), self.inner.person_records(ids)).await
    }

    async fn audit_page(&self, page: UserPage) -> Result<Page<AuditRecord>, StoreError> {
        self.call("audit_page", 1, self.inner.audit_page(page)).await
    }

    fn recovered(&self) -> Vec<Applied> {
        self.inner.recovered()
    }

    async fn catalog_log(&self, second: u64) -> Result<Option<Vec<Logged>>, StoreError> {
        self.call("catalog_log", 1, self.inner.catalog_log(second)).await
    }
}

#[async_trait]
impl CatalogReads for Instrumented<dyn CatalogReads> {
    async fn movies(&self, ids: &[MovieId]) -> Result<Vec<Option<Movie>>, StoreError> {
        self.call("movies", ids.len(), self.inner.movies(ids)).await
    }

    async fn people(&self, ids: &[PersonId]) -> Result<Vec<Option<Person>>, StoreError> {
        self.call("people", ids.len(), self.inner.people(ids)).await
    }

    async fn credits(&self, movies: &[MovieId]) -> Result<Vec<Arc<Vec<Credit>>>, StoreError> {
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
}

#[async_trait]
impl UserData for Instrumented<dyn UserData> {
    fn totals_lag(&self) -> Duration {
        self.inner.totals_lag()
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

    async fn rating_totals(&self, movies: &[MovieId]) -> Result<Vec<RatingTotals>, StoreError> {
        self.call("rating_totals", movies.len(), self.inner.rating_totals(movies)).await
    }

    async fn rating_changes(&self, second: u64) -> Result<Option<Vec<MovieId>>, StoreError> {
        self.call("rating_changes", 1, self.inner.rating_changes(second)).await
    }

    // Not a call to the backend: what its reconciler noted in memory.
    async fn rederived_totals(&self) -> Result<Vec<MovieId>, StoreError> {
        self.inner.rederived_totals().await
    }
}

#[async_trait]
impl Lifecycle for Instrumented<dyn Lifecycle> {
    fn backend(&self) -> &'static str {
        self.backend
    }

    fn catalog_id(&self) -> String {
        self.inner.catalog_id()
    }

    fn catalog_changes(&self) -> Option<tokio::sync::watch::Receiver<String>> {
        self.inner.catalog_changes()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.call("ping", 0, self.inner.ping()).await
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.inner.close().await
    }

    fn driver_figures(&self) -> Option<marquee_store::DriverFigures> {
        self.inner.driver_figures()
    }
}
