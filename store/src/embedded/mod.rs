//! The embedded backend: a single `redb` file in the data directory.
//!
//! redb is an ACID, copy-on-write B-tree store: readers see a consistent snapshot without
//! blocking the writer, and a commit is durable when it returns. It makes one machine a
//! complete Marquee with no server to run. The catalog file is only ever produced whole by
//! [`CatalogBuilder`] (written under a temporary name, then renamed into place), so a failed
//! seed or import never leaves a half-written catalog behind.
//!
//! redb calls block, so every read runs on tokio's blocking pool; a batch is one read
//! transaction, i.e. one "round trip" in `store_calls_total`.

mod builder;
mod read;
mod sorter;
pub(crate) mod tables;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use redb::{Database, ReadableDatabase};

pub use builder::CatalogBuilder;

use crate::{
    BrowseQuery, CatalogStats, Credit, FilmographyEntry, FilmographyQuery, GenreCount, Movie, MovieId, Page,
    Person, PersonId, SearchQuery, SimilarQuery, Store, StoreError,
};

/// Name of the catalog file inside the data directory.
pub const CATALOG_FILE: &str = "catalog.redb";

/// Where the catalog lives inside `data_dir`.
pub fn catalog_path(data_dir: &Path) -> PathBuf {
    data_dir.join(CATALOG_FILE)
}

/// Whether `data_dir` already holds a catalog.
pub fn has_catalog(data_dir: &Path) -> bool {
    catalog_path(data_dir).is_file()
}

/// Tuning for [`EmbeddedStore::open`].
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    /// redb page cache, in bytes.
    pub cache_bytes: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions { cache_bytes: 256 * 1024 * 1024 }
    }
}

/// Read state shared by every call: the open database and the year partitions that exist.
struct Inner {
    db: Database,
    /// Year partitions present in the catalog, ascending (0 = unknown year). Loaded once at
    /// open so browse enumerates only partitions that exist.
    years: Vec<u16>,
}

/// The embedded [`Store`].
pub struct EmbeddedStore {
    /// `None` once closed; readers clone the `Arc` so a close waits for none of them and the
    /// file is released when the last in-flight read finishes.
    inner: RwLock<Option<Arc<Inner>>>,
}

impl EmbeddedStore {
    /// Opens the catalog in `data_dir`.
    pub fn open(data_dir: &Path, options: &EmbeddedOptions) -> Result<EmbeddedStore, StoreError> {
        let path = catalog_path(data_dir);
        if !path.is_file() {
            return Err(StoreError::NoCatalog(data_dir.display().to_string()));
        }
        let db =
            redb::Builder::new().set_cache_size(options.cache_bytes).open(&path).map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    StoreError::Locked(data_dir.display().to_string())
                }
                other => StoreError::backend(other),
            })?;
        let years = read::check_format_and_years(&db)?;
        Ok(EmbeddedStore { inner: RwLock::new(Some(Arc::new(Inner { db, years }))) })
    }

    fn inner(&self) -> Result<Arc<Inner>, StoreError> {
        self.inner.read().map_err(|_| StoreError::Closed)?.clone().ok_or(StoreError::Closed)
    }

    /// Runs `f` against a read snapshot on the blocking pool.
    async fn read<T, F>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&read::Snapshot<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner()?;
        tokio::task::spawn_blocking(move || {
            let txn = inner.db.begin_read()?;
            let snapshot = read::Snapshot::new(&txn, &inner.years)?;
            f(&snapshot)
        })
        .await
        .map_err(|e| {
            tracing::error!(op, error = %e, "store call did not complete");
            StoreError::backend(e)
        })?
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn movies(&self, ids: &[MovieId]) -> Result<Vec<Option<Movie>>, StoreError> {
        let ids = ids.to_vec();
        self.read("movies", move |s| s.movies(&ids)).await
    }

    async fn people(&self, ids: &[PersonId]) -> Result<Vec<Option<Person>>, StoreError> {
        let ids = ids.to_vec();
        self.read("people", move |s| s.people(&ids)).await
    }

    async fn credits(&self, movies: &[MovieId]) -> Result<Vec<Vec<Credit>>, StoreError> {
        let ids = movies.to_vec();
        self.read("credits", move |s| s.credits(&ids)).await
    }

    async fn filmographies(
        &self,
        queries: &[FilmographyQuery],
    ) -> Result<Vec<Page<FilmographyEntry>>, StoreError> {
        let queries = queries.to_vec();
        self.read("filmographies", move |s| queries.iter().map(|q| s.filmography(q)).collect()).await
    }

    async fn similar(&self, queries: &[SimilarQuery]) -> Result<Vec<Vec<MovieId>>, StoreError> {
        let queries = queries.to_vec();
        self.read("similar", move |s| queries.iter().map(|q| s.similar(q)).collect()).await
    }

    async fn search(&self, query: &SearchQuery) -> Result<Page<MovieId>, StoreError> {
        let query = query.clone();
        self.read("search", move |s| s.search(&query)).await
    }

    async fn browse(&self, query: &BrowseQuery) -> Result<Page<MovieId>, StoreError> {
        let query = query.clone();
        self.read("browse", move |s| s.browse(&query)).await
    }

    async fn genres(&self) -> Result<Vec<GenreCount>, StoreError> {
        self.read("genres", |s| s.genres()).await
    }

    async fn stats(&self) -> Result<CatalogStats, StoreError> {
        self.read("stats", |s| s.stats()).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read("ping", |_| Ok(())).await
    }

    async fn close(&self) -> Result<(), StoreError> {
        // Reads hold their own `Arc`; the file closes when the last one finishes. Every
        // write is committed durably before it is acknowledged, so there is nothing to flush.
        let taken = self.inner.write().map_err(|_| StoreError::Closed)?.take();
        drop(taken);
        Ok(())
    }
}

macro_rules! wrap_redb_errors {
    ($($ty:ty),*) => {$(
        impl From<$ty> for StoreError {
            fn from(e: $ty) -> Self {
                StoreError::backend(e)
            }
        }
    )*};
}

wrap_redb_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);
