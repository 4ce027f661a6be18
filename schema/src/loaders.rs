//! Per-request dataloaders, one per entity kind. Fields register keys as they resolve; once
//! the resolvers of a level have all yielded (after `graphql.batch_delay_us`, zero by
//! default), each loader sends the whole batch as one call to the store stack, so a page of
//! 20 movies with their casts and the cast's people costs three store calls, not hundreds.
//! Each request gets fresh loaders (and so a fresh per-request cache): nothing leaks between
//! callers. Below the loaders sit the store stack's decorators (metrics, caches), then the
//! backend.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};
use marquee_store::{
    CatalogReads, Credit, FilmographyEntry, FilmographyQuery, Movie, MovieId, Page, Person, PersonId, Rating,
    RatingTotals, SimilarQuery, Store, StoreError, UserData, UserId,
};
use prometheus::HistogramVec;
use tracing::Instrument;

use crate::caller::Caller;
use crate::settings::SchemaConfig;
use crate::shown::{Key, Shown};

/// Where loaders report their batch sizes (`dataloader_batch_size{loader}`).
#[derive(Clone, Debug)]
pub struct LoaderMetrics {
    /// Histogram of keys per batch, labelled by loader.
    pub batch_size: HistogramVec,
}

/// The loaders of one request.
pub struct Loaders {
    pub(crate) movies: DataLoader<MovieLoader, HashMapCache>,
    pub(crate) people: DataLoader<PersonLoader, HashMapCache>,
    pub(crate) credits: DataLoader<CreditsLoader, HashMapCache>,
    pub(crate) filmography: DataLoader<FilmographyLoader, HashMapCache>,
    pub(crate) similar: DataLoader<SimilarLoader, HashMapCache>,
    /// Marquee users' rating totals, added to each movie's catalog summary.
    pub(crate) rating_totals: DataLoader<RatingTotalsLoader, HashMapCache>,
    /// The signed-in caller's own ratings (`Movie.myRating`); `None` for anonymous callers.
    pub(crate) my_ratings: Option<DataLoader<MyRatingLoader, HashMapCache>>,
    /// The surrogate keys of what this request read.
    pub(crate) shown: Shown,
}

impl Loaders {
    /// Fresh loaders over `store` for one request by `caller`.
    pub fn new(
        store: &Store,
        config: &SchemaConfig,
        metrics: Option<&LoaderMetrics>,
        caller: &Caller,
    ) -> Loaders {
        fn loader<T: Send + Sync + 'static>(inner: T, config: &SchemaConfig) -> DataLoader<T, HashMapCache> {
            // A batch runs as a task of its own, in the span of the field that started it, so
            // a trace shows it under the request's execution.
            let spawn = |batch| tokio::spawn(tracing::Instrument::in_current_span(batch));
            DataLoader::with_cache(inner, spawn, HashMapCache::default()).delay(config.batch_delay)
        }
        let batch_size = |name: &'static str| metrics.map(|m| m.batch_size.with_label_values(&[name]));
        let shown = Shown::default();
        let catalog = |name| Base {
            name,
            store: store.catalog.clone(),
            batch_size: batch_size(name),
            shown: shown.clone(),
        };
        let users = |name| Base {
            name,
            store: store.users.clone(),
            batch_size: batch_size(name),
            shown: shown.clone(),
        };
        Loaders {
            movies: loader(MovieLoader(catalog("movie")), config),
            people: loader(PersonLoader(catalog("person")), config),
            credits: loader(CreditsLoader(catalog("credits")), config),
            filmography: loader(FilmographyLoader(catalog("filmography")), config),
            similar: loader(SimilarLoader(catalog("similar")), config),
            rating_totals: loader(RatingTotalsLoader(users("rating_totals")), config),
            my_ratings: caller
                .user_id()
                .and_then(|id| UserId::new(id).ok())
                .map(|user| loader(MyRatingLoader { base: users("my_rating"), user }, config)),
            shown,
        }
    }

    /// The surrogate keys of everything this request's loaders were asked for so far.
    pub fn shown(&self) -> &Shown {
        &self.shown
    }
}

/// What every loader holds: the face of the store it reads, its batch-size histogram, and
/// the request's surrogate keys, to which it adds every key it is asked for.
pub(crate) struct Base<S: ?Sized> {
    /// The loader's name (`movie`, `person`, ...), in metrics and spans.
    name: &'static str,
    store: Arc<S>,
    batch_size: Option<prometheus::Histogram>,
    shown: Shown,
}

impl<S: ?Sized> Base<S> {
    /// Counts a batch of `n` keys and returns its span (`dataloader.batch`, with the loader's
    /// name and the batch's size), which the store call runs in.
    fn observe(&self, n: usize) -> tracing::Span {
        if let Some(h) = &self.batch_size {
            h.observe(n as f64);
        }
        tracing::debug_span!("dataloader.batch", loader = self.name, keys = n)
    }

    fn show(&self, keys: impl IntoIterator<Item = Key>) {
        self.shown.add_all(keys);
    }
}

type LoadResult<K, V> = Result<HashMap<K, V>, Arc<StoreError>>;

type CatalogBase = Base<dyn CatalogReads>;
type UsersBase = Base<dyn UserData>;

pub(crate) struct MovieLoader(CatalogBase);
pub(crate) struct PersonLoader(CatalogBase);
pub(crate) struct CreditsLoader(CatalogBase);
pub(crate) struct FilmographyLoader(CatalogBase);
pub(crate) struct SimilarLoader(CatalogBase);
pub(crate) struct RatingTotalsLoader(UsersBase);
pub(crate) struct MyRatingLoader {
    base: UsersBase,
    user: UserId,
}

impl Loader<MovieId> for MovieLoader {
    type Value = Arc<Movie>;
    type Error = Arc<StoreError>;

    async fn load(&self, keys: &[MovieId]) -> LoadResult<MovieId, Arc<Movie>> {
        let batch = self.0.observe(keys.len());
        self.0.show(keys.iter().map(|&id| Key::Movie(id)));
        let found = self.0.store.movies(keys).instrument(batch).await?;
        Ok(keys.iter().zip(found).filter_map(|(k, v)| Some((*k, Arc::new(v?)))).collect())
    }
}

impl Loader<PersonId> for PersonLoader {
    type Value = Arc<Person>;
    type Error = Arc<StoreError>;

    async fn load(&self, keys: &[PersonId]) -> LoadResult<PersonId, Arc<Person>> {
        let batch = self.0.observe(keys.len());
        self.0.show(keys.iter().map(|&id| Key::Person(id)));
        let found = self.0.store.people(keys).instrument(batch).await?;
        Ok(keys.iter().zip(found).filter_map(|(k, v)| Some((*k, Arc::new(v?)))).collect())
    }
}

impl Loader<MovieId> for CreditsLoader {
    type Value = Arc<Vec<Credit>>;
    type Error = Arc<StoreError>;

    async fn load(&self, keys: &[MovieId]) -> LoadResult<MovieId, Arc<Vec<Credit>>> {
        let batch = self.0.observe(keys.len());
        self.0.show(keys.iter().map(|&id| Key::Movie(id)));
        let found = self.0.store.credits(keys).instrument(batch).await?;
        Ok(keys.iter().copied().zip(found).collect())
    }
}

impl Loader<FilmographyQuery> for FilmographyLoader {
    type Value = Arc<Page<FilmographyEntry>>;
    type Error = Arc<StoreError>;

    async fn load(
        &self,
        keys: &[FilmographyQuery],
    ) -> LoadResult<FilmographyQuery, Arc<Page<FilmographyEntry>>> {
        let batch = self.0.observe(keys.len());
        self.0.show(keys.iter().map(|q| Key::Person(q.person)));
        let found = self.0.store.filmographies(keys).instrument(batch).await?;
        Ok(keys.iter().cloned().zip(found.into_iter().map(Arc::new)).collect())
    }
}

impl Loader<SimilarQuery> for SimilarLoader {
    type Value = Arc<Vec<MovieId>>;
    type Error = Arc<StoreError>;

    async fn load(&self, keys: &[SimilarQuery]) -> LoadResult<SimilarQuery, Arc<Vec<MovieId>>> {
        let batch = self.0.observe(keys.len());
        self.0.show(keys.iter().map(|q| Key::Movie(q.movie)));
        let found = self.0.store.similar(keys).instrument(batch).await?;
        Ok(keys.iter().cloned().zip(found.into_iter().map(Arc::new)).collect())
    }
}

impl Loader<MovieId> for RatingTotalsLoader {
    type Value = RatingTotals;
    type Error = Arc<StoreError>;

    async fn load(&self, keys: &[MovieId]) -> LoadResult<MovieId, RatingTotals> {
        let batch = self.0.observe(keys.len());
        self.0.show(keys.iter().map(|&id| Key::Movie(id)));
        let found = self.0.store.rating_totals(keys).instrument(batch).await?;
        Ok(keys.iter().copied().zip(found).collect())
    }
}

impl Loader<MovieId> for MyRatingLoader {
    type Value = Rating;
    type Error = Arc<StoreError>;

    async fn load(&self, keys: &[MovieId]) -> LoadResult<MovieId, Rating> {
        let batch = self.base.observe(keys.len());
        let found = self.base.store.user_ratings(&self.user, keys).instrument(batch).await?;
        Ok(keys.iter().zip(found).filter_map(|(k, v)| Some((*k, v?))).collect())
    }
}
