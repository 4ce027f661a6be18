//! Per-request dataloaders, one per entity kind. Fields register keys as they resolve; after
//! a short delay each loader sends the whole batch as one store call, so a page of 20 movies
//! with their casts and the cast's people costs three store calls, not hundreds. Each request
//! gets fresh loaders (and so a fresh per-request cache): nothing leaks between callers.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};
use marquee_store::{
    Credit, DynStore, FilmographyEntry, FilmographyQuery, Movie, MovieId, Page, Person, PersonId, Rating,
    SimilarQuery, StoreError, UserId,
};
use prometheus::HistogramVec;

use crate::{Caller, SchemaConfig};

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
    /// The signed-in caller's own ratings (`Movie.myRating`); `None` for anonymous callers.
    pub(crate) my_ratings: Option<DataLoader<MyRatingLoader, HashMapCache>>,
}

impl Loaders {
    /// Fresh loaders over `store` for one request by `caller`.
    pub fn new(
        store: &DynStore,
        config: &SchemaConfig,
        metrics: Option<&LoaderMetrics>,
        caller: &Caller,
    ) -> Loaders {
        fn loader<T: Send + Sync + 'static>(inner: T, config: &SchemaConfig) -> DataLoader<T, HashMapCache> {
            DataLoader::with_cache(inner, tokio::spawn, HashMapCache::default()).delay(config.batch_delay)
        }
        let base = |name: &'static str| Base {
            store: store.clone(),
            batch_size: metrics.map(|m| m.batch_size.with_label_values(&[name])),
        };
        Loaders {
            movies: loader(MovieLoader(base("movie")), config),
            people: loader(PersonLoader(base("person")), config),
            credits: loader(CreditsLoader(base("credits")), config),
            filmography: loader(FilmographyLoader(base("filmography")), config),
            similar: loader(SimilarLoader(base("similar")), config),
            my_ratings: caller
                .user_id()
                .and_then(|id| UserId::new(id).ok())
                .map(|user| loader(MyRatingLoader { base: base("my_rating"), user }, config)),
        }
    }
}

pub(crate) struct Base {
    store: DynStore,
    batch_size: Option<prometheus::Histogram>,
}

impl Base {
    fn observe(&self, n: usize) {
        if let Some(h) = &self.batch_size {
            h.observe(n as f64);
        }
    }
}

type LoadResult<K, V> = Result<HashMap<K, V>, Arc<StoreError>>;

pub(crate) struct MovieLoader(Base);
pub(crate) struct PersonLoader(Base);
pub(crate) struct CreditsLoader(Base);
pub(crate) struct FilmographyLoader(Base);
pub(crate) struct SimilarLoader(Base);
pub(crate) struct MyRatingLoader {
    base: Base,
    user: UserId,
}

impl Loader<MovieId> for MovieLoader {
    type Value = Arc<Movie>;
    type Error = Arc<StoreError>;

    async fn load(&self, keys: &[MovieId]) -> LoadResult<MovieId, Arc<Movie>> {
        self.0.observe(keys.len());
        let found = self.0.store.movies(keys).await?;
        Ok(keys.iter().zip(found).filter_map(|(k, v)| Some((*k, Arc::new(v?)))).collect())
    }
}

impl Loader<PersonId> for PersonLoader {
    type Value = Arc<Person>;
    type Error = Arc<StoreError>;

    async fn load(&self, keys: &[PersonId]) -> LoadResult<PersonId, Arc<Person>> {
        self.0.observe(keys.len());
        let found = self.0.store.people(keys).await?;
        Ok(keys.iter().zip(found).filter_map(|(k, v)| Some((*k, Arc::new(v?)))).collect())
    }
}

impl Loader<MovieId> for CreditsLoader {
    type Value = Arc<Vec<Credit>>;
    type Error = Arc<StoreError>;

    async fn load(&self, keys: &[MovieId]) -> LoadResult<MovieId, Arc<Vec<Credit>>> {
        self.0.observe(keys.len());
        let found = self.0.store.credits(keys).await?;
        Ok(keys.iter().copied().zip(found.into_iter().map(Arc::new)).collect())
    }
}

impl Loader<FilmographyQuery> for FilmographyLoader {
    type Value = Arc<Page<FilmographyEntry>>;
    type Error = Arc<StoreError>;

    async fn load(
        &self,
        keys: &[FilmographyQuery],
    ) -> LoadResult<FilmographyQuery, Arc<Page<FilmographyEntry>>> {
        self.0.observe(keys.len());
        let found = self.0.store.filmographies(keys).await?;
        Ok(keys.iter().cloned().zip(found.into_iter().map(Arc::new)).collect())
    }
}

impl Loader<SimilarQuery> for SimilarLoader {
    type Value = Arc<Vec<MovieId>>;
    type Error = Arc<StoreError>;

    async fn load(&self, keys: &[SimilarQuery]) -> LoadResult<SimilarQuery, Arc<Vec<MovieId>>> {
        self.0.observe(keys.len());
        let found = self.0.store.similar(keys).await?;
        Ok(keys.iter().cloned().zip(found.into_iter().map(Arc::new)).collect())
    }
}

impl Loader<MovieId> for MyRatingLoader {
    type Value = Rating;
    type Error = Arc<StoreError>;

    async fn load(&self, keys: &[MovieId]) -> LoadResult<MovieId, Rating> {
        self.base.observe(keys.len());
        let found = self.base.store.user_ratings(&self.user, keys).await?;
        Ok(keys.iter().zip(found).filter_map(|(k, v)| Some((*k, v?))).collect())
    }
}
