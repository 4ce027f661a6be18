//! Marquee's embedded backend: `redb` files in a data directory, which make one machine a
//! complete Marquee with no server to run. The only crate that depends on `redb`.
//!
//! redb is an ACID, copy-on-write B-tree store: readers see a consistent snapshot without
//! blocking the writer, and a commit is durable when it returns. It makes one machine a
//! complete Marquee with no server to run. A catalog is a generation directory of three files
//! (`main.redb`; `filmography.redb` and `search.redb`, separate so they can be built in
//! parallel) reached through the `catalog` symlink in the data directory. Generations are
//! produced whole by [`CatalogBuilder`] and switched to atomically, so a failed seed or
//! import never leaves a half-written catalog behind. A serving store switches to a newly
//! published generation by itself ([`EmbeddedStore::follow_generations`]): calls in flight
//! finish on the old one, later calls read the new one, and `Lifecycle::catalog_changes`
//! tells the caches.
//!
//! Between loads, editors' corrections and daily deltas change the current generation in place
//! (`edit`): one write per file, made visible to readers all at once and durable in an order
//! that a crash cannot tear.
//!
//! User data (ratings, watchlists, rating totals) and the catalog's audit log live in
//! `users.redb` directly in the data directory, outside the generations, so a new catalog
//! keeps every user's data.
//!
//! redb calls block. Writes and user-data reads always run on tokio's blocking pool. Catalog
//! reads run on the calling worker by default ([`EmbeddedOptions::inline_reads`]): a batch
//! whose pages are in memory takes microseconds, less than handing it to a pool thread and
//! waking the task again (two futex round trips and two context switches per store call, a
//! sixth of the gateway's capacity on the nested benchmark). A catalog larger than the
//! machine's memory should turn it off, so that a read waiting on the disk holds a pool thread
//! rather than one of the few workers. A batch is one read transaction, i.e. one "round
//! trip" in `store_calls_total`.
//!
//! Stronger than the [`UserData`] contract: a rating shows in `rating_totals` as soon as it
//! is acknowledged (one transaction writes the row and the totals), so
//! [`UserData::totals_lag`] is zero.

mod builder;
mod edit;
mod export;
mod read;
mod sorter;
pub(crate) mod tables;
mod users;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use marquee_store::bulk::{BulkLoad, CatalogSink, ExportStats, Progress};
use marquee_store::{
    Applied, AuditRecord, BrowseQuery, CatalogChanges, CatalogReads, CatalogStats, CatalogWrites, Credit,
    Edit, FilmographyEntry, FilmographyQuery, GenreCount, Lifecycle, Movie, MovieId, MovieRecord, Page,
    Person, PersonId, Rating, RatingTotals, SearchQuery, SimilarQuery, StoreError, UserData, UserId,
    UserPage, WatchlistEntry,
};
use redb::{Database, ReadableDatabase};

pub use builder::CatalogBuilder;

/// Conditions only this backend has, wrapped in [`StoreError::Backend`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddedError {
    /// The data directory is already open in another process.
    #[error("the data directory {0} is in use by another process; stop it or choose another --data-dir")]
    Locked(String),
    /// A catalog change was refused: a newer load replaced the generation this store serves.
    #[error(
        "a newer catalog generation was published in this data directory; restart this gateway to serve it (changes to the replaced one would be lost)"
    )]
    Superseded,
}

fn open_error(data_dir: &Path, e: redb::DatabaseError) -> StoreError {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => {
            StoreError::backend(EmbeddedError::Locked(data_dir.display().to_string()))
        }
        other => StoreError::backend(other),
    }
}

/// The symlink in the data directory that names the current catalog generation.
pub const CATALOG_LINK: &str = "catalog";
/// By-id tables, browse partitions, counts and metadata.
pub(crate) const MAIN_FILE: &str = "main.redb";
/// Credits by person.
pub(crate) const FILMOGRAPHY_FILE: &str = "filmography.redb";
/// Title search index.
pub(crate) const SEARCH_FILE: &str = "search.redb";

/// The current catalog generation's directory inside `data_dir`.
pub fn catalog_path(data_dir: &Path) -> PathBuf {
    data_dir.join(CATALOG_LINK)
}

/// Whether `data_dir` already holds a catalog.
pub fn has_catalog(data_dir: &Path) -> bool {
    catalog_path(data_dir).join(MAIN_FILE).is_file()
}

/// Bytes taken by the current catalog's files.
pub fn catalog_bytes(data_dir: &Path) -> u64 {
    let dir = catalog_path(data_dir);
    [MAIN_FILE, FILMOGRAPHY_FILE, SEARCH_FILE]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// Tuning for [`EmbeddedStore::open`].
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    /// redb page cache of the catalog's files, in bytes.
    pub cache_bytes: usize,
    /// redb page cache of the user-data file, in bytes.
    pub users_cache_bytes: usize,
    /// Catalog reads run on the calling task's worker thread (`true`) or on the blocking
    /// pool (`false`: for a catalog that does not fit in memory, whose reads wait on the disk).
    pub inline_reads: bool,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            cache_bytes: 128 * 1024 * 1024,
            users_cache_bytes: 16 * 1024 * 1024,
            inline_reads: true,
        }
    }
}

/// Read state shared by every call: the open files and the year partitions that exist.
struct Inner {
    main: Database,
    filmography: Database,
    search: Database,
    /// Year partitions present in the catalog, ascending (0 = unknown year), loaded at open
    /// and kept by live catalog writes, so browse enumerates only partitions that exist.
    years: RwLock<Vec<u16>>,
    /// Serialises live catalog writes; the last one's timestamp (nanoseconds).
    writer: Mutex<u64>,
    /// The data directory's `catalog` link, and the generation directory it pointed at when
    /// this store opened.
    link: PathBuf,
    generation: PathBuf,
    /// Ratings and watchlists (outside the catalog generations), and the catalog's audit log:
    /// one handle for every generation this store opens.
    users: Arc<Database>,
    /// The generation directory's name (unique per load).
    catalog_id: String,
}

impl Inner {
    /// Opens the generation `link` points at now, beside the open `users` file; what the
    /// catalog changes a crash interrupted there changed (finished now).
    fn open(
        data_dir: &Path,
        options: &EmbeddedOptions,
        users: Arc<Database>,
    ) -> Result<(Inner, Option<Applied>), StoreError> {
        let link = catalog_path(data_dir);
        let dir = std::fs::canonicalize(&link)
            .map_err(|e| StoreError::io(format!("resolving {}", link.display()), e))?;
        let open = |file: &str, share: usize| {
            redb::Builder::new()
                .set_cache_size(options.cache_bytes / share)
                .open(dir.join(file))
                .map_err(|e| open_error(data_dir, e))
        };
        let main = open(MAIN_FILE, 2)?;
        let years = read::check_format_and_years(&main)?;
        let catalog_id =
            dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned());
        let inner = Inner {
            main,
            filmography: open(FILMOGRAPHY_FILE, 4)?,
            search: open(SEARCH_FILE, 4)?,
            years: RwLock::new(years),
            writer: Mutex::new(0),
            link,
            generation: dir,
            users,
            catalog_id,
        };
        *inner.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            edit::last_stamp(&inner.main, &inner.users)?;
        let recovered = edit::finish_pending(&inner.files())?;
        Ok((inner, recovered))
    }

    fn files(&self) -> edit::Files<'_> {
        edit::Files {
            main: &self.main,
            filmography: &self.filmography,
            search: &self.search,
            users: &self.users,
            writer: &self.writer,
            years: &self.years,
            link: &self.link,
            generation: &self.generation,
        }
    }

    fn snapshot(&self) -> Result<read::Snapshot<'_>, StoreError> {
        read::Snapshot::new(&self.main, &self.filmography, &self.search, &self.years)
    }

    fn movie_exists(&self, movie: MovieId) -> Result<bool, StoreError> {
        Ok(self.main.begin_read().db()?.open_table(tables::MOVIES).db()?.get(movie.0).db()?.is_some())
    }
}

/// The embedded [`Store`].
pub struct EmbeddedStore {
    /// `None` once closed; readers clone the `Arc` so a close (or a switch to a newly
    /// published generation) waits for none of them, and the files are released when the last
    /// in-flight read of them finishes.
    inner: RwLock<Option<Arc<Inner>>>,
    /// The data directory and the options this store opens generations with.
    data_dir: PathBuf,
    options: EmbeddedOptions,
    /// The generation served, by directory name; changes when a newly published one is
    /// switched to ([`EmbeddedStore::switch_if_published`]).
    catalog_id: tokio::sync::watch::Sender<String>,
    /// Catalog reads on the calling worker rather than the blocking pool.
    inline_reads: bool,
    /// What the catalog changes a crash or an error interrupted changed, finished since
    /// (at open, or before a later apply); taken once.
    recovered: Mutex<Option<Applied>>,
}

impl EmbeddedStore {
    /// Opens the catalog in `data_dir`.
    pub fn open(data_dir: &Path, options: &EmbeddedOptions) -> Result<EmbeddedStore, StoreError> {
        if !has_catalog(data_dir) {
            return Err(StoreError::NoCatalog(data_dir.display().to_string()));
        }
        let users = redb::Builder::new()
            .set_cache_size(options.users_cache_bytes)
            .create(data_dir.join(users::USERS_FILE))
            .map_err(|e| open_error(data_dir, e))?;
        users::init(&users)?;
        let (inner, recovered) = Inner::open(data_dir, options, Arc::new(users))?;
        let (catalog_id, _) = tokio::sync::watch::channel(inner.catalog_id.clone());
        Ok(EmbeddedStore {
            inner: RwLock::new(Some(Arc::new(inner))),
            data_dir: data_dir.to_owned(),
            options: options.clone(),
            catalog_id,
            inline_reads: options.inline_reads,
            recovered: Mutex::new(recovered),
        })
    }

    /// Switches to the generation the data directory's `catalog` link points at, if a load
    /// published a new one since: later calls read it, calls in flight finish on the old one
    /// (whose files close when the last of them ends), and [`Lifecycle::catalog_changes`]
    /// says so. Whether it switched.
    pub fn switch_if_published(&self) -> Result<bool, StoreError> {
        let Ok(current) = self.inner() else { return Ok(false) };
        let link = catalog_path(&self.data_dir);
        let Ok(dir) = std::fs::canonicalize(&link) else { return Ok(false) };
        if dir == current.generation {
            return Ok(false);
        }
        let (next, recovered) = Inner::open(&self.data_dir, &self.options, current.users.clone())?;
        let id = next.catalog_id.clone();
        {
            let mut slot = self.inner.write().map_err(|_| StoreError::Closed)?;
            if slot.is_none() {
                return Ok(false);
            }
            *slot = Some(Arc::new(next));
        }
        if let Some(applied) = recovered {
            self.hand_over_finished(applied);
        }
        tracing::info!(catalog = %id, "serving the newly published catalog generation");
        self.catalog_id.send_replace(id);
        Ok(true)
    }

    /// Keeps what a finished interrupted apply changed for [`CatalogWrites::recovered`].
    fn hand_over_finished(&self, applied: Applied) {
        let mut held = self.recovered.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match held.as_mut() {
            Some(earlier) => earlier.merge(applied),
            None => *held = Some(applied),
        }
    }

    /// Looks for a newly published generation every `every` for as long as `store` lives
    /// ([`EmbeddedStore::switch_if_published`]).
    pub fn follow_generations(store: &Arc<EmbeddedStore>, every: Duration) -> tokio::task::JoinHandle<()> {
        let store = Arc::downgrade(store);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every.max(Duration::from_millis(10)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(store) = store.upgrade() else { return };
                let switched = tokio::task::spawn_blocking(move || store.switch_if_published()).await;
                match switched {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "opening the newly published catalog generation failed; serving the current one");
                    }
                    Err(_) => return,
                }
            }
        })
    }

    fn inner(&self) -> Result<Arc<Inner>, StoreError> {
        self.inner.read().map_err(|_| StoreError::Closed)?.clone().ok_or(StoreError::Closed)
    }

    /// Runs `f` against a read snapshot, on this worker or on the blocking pool
    /// ([`EmbeddedOptions::inline_reads`]).
    async fn read<T, F>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&read::Snapshot<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner()?;
        if self.inline_reads {
            return f(&inner.snapshot()?);
        }
        tokio::task::spawn_blocking(move || f(&inner.snapshot()?)).await.map_err(|e| {
            tracing::error!(op, error = %e, "store call did not complete");
            StoreError::backend(e)
        })?
    }

    /// Runs `f` against the open files on the blocking pool (user-data reads and writes).
    async fn with<T, F>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner()?;
        tokio::task::spawn_blocking(move || f(&inner)).await.map_err(|e| {
            tracing::error!(op, error = %e, "store call did not complete");
            StoreError::backend(e)
        })?
    }
}

#[async_trait]
impl CatalogReads for EmbeddedStore {
    async fn movies(&self, ids: &[MovieId]) -> Result<Vec<Option<Movie>>, StoreError> {
        let ids = ids.to_vec();
        self.read("movies", move |s| s.movies(&ids)).await
    }

    async fn people(&self, ids: &[PersonId]) -> Result<Vec<Option<Person>>, StoreError> {
        let ids = ids.to_vec();
        self.read("people", move |s| s.people(&ids)).await
    }

    async fn credits(&self, movies: &[MovieId]) -> Result<Vec<Arc<Vec<Credit>>>, StoreError> {
        let ids = movies.to_vec();
        let credits = self.read("credits", move |s| s.credits(&ids)).await?;
        Ok(credits.into_iter().map(Arc::new).collect())
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
}

#[async_trait]
impl UserData for EmbeddedStore {
    fn totals_lag(&self) -> Duration {
        Duration::ZERO
    }

    async fn rate(&self, user: &UserId, movie: MovieId, score: u8) -> Result<Rating, StoreError> {
        let user = user.clone();
        self.with("rate", move |inner| {
            let exists = inner.movie_exists(movie)?;
            users::rate(&inner.users, &user, movie, score, exists)
        })
        .await
    }

    async fn delete_rating(&self, user: &UserId, movie: MovieId) -> Result<bool, StoreError> {
        let user = user.clone();
        self.with("delete_rating", move |inner| users::delete_rating(&inner.users, &user, movie)).await
    }

    async fn user_ratings(
        &self,
        user: &UserId,
        movies: &[MovieId],
    ) -> Result<Vec<Option<Rating>>, StoreError> {
        let (user, movies) = (user.clone(), movies.to_vec());
        self.with("user_ratings", move |inner| users::user_ratings(&inner.users, &user, &movies)).await
    }

    async fn ratings_page(&self, user: &UserId, page: UserPage) -> Result<Page<Rating>, StoreError> {
        let user = user.clone();
        self.with("ratings_page", move |inner| users::ratings_page(&inner.users, &user, page)).await
    }

    async fn add_to_watchlist(&self, user: &UserId, movie: MovieId) -> Result<WatchlistEntry, StoreError> {
        let user = user.clone();
        self.with("add_to_watchlist", move |inner| {
            let exists = inner.movie_exists(movie)?;
            users::add_to_watchlist(&inner.users, &user, movie, exists)
        })
        .await
    }

    async fn remove_from_watchlist(&self, user: &UserId, movie: MovieId) -> Result<bool, StoreError> {
        let user = user.clone();
        self.with("remove_from_watchlist", move |inner| {
            users::remove_from_watchlist(&inner.users, &user, movie)
        })
        .await
    }

    async fn watchlist_page(
        &self,
        user: &UserId,
        page: UserPage,
    ) -> Result<Page<WatchlistEntry>, StoreError> {
        let user = user.clone();
        self.with("watchlist_page", move |inner| users::watchlist_page(&inner.users, &user, page)).await
    }

    async fn rating_totals(&self, movies: &[MovieId]) -> Result<Vec<RatingTotals>, StoreError> {
        let movies = movies.to_vec();
        self.with("rating_totals", move |inner| users::rating_totals(&inner.users, &movies)).await
    }
}

#[async_trait]
impl CatalogWrites for EmbeddedStore {
    async fn apply(&self, changes: CatalogChanges, edit: Edit) -> Result<Applied, StoreError> {
        let inner = self.inner()?;
        let (done, outcome) = tokio::sync::oneshot::channel();
        // A thread of its own, at a lower CPU priority than the threads serving requests: an
        // apply is background work, and on a busy machine it waits rather than the readers.
        std::thread::Builder::new()
            .name("catalog-writer".to_owned())
            .spawn(move || {
                lower_this_threads_priority();
                let _ = done.send(edit::apply(&inner.files(), &changes, &edit));
            })
            .map_err(StoreError::backend)?;
        let (leftover, result) = outcome.await.map_err(|e| {
            tracing::error!(error = %e, "a catalog apply did not complete");
            StoreError::backend(e)
        })?;
        if let Some(leftover) = leftover {
            self.hand_over_finished(leftover);
        }
        result
    }

    async fn records(&self, ids: &[MovieId]) -> Result<Vec<Option<MovieRecord>>, StoreError> {
        let ids = ids.to_vec();
        self.with("records", move |inner| edit::records(&inner.main, &ids)).await
    }

    async fn person_records(&self, ids: &[PersonId]) -> Result<Vec<Option<Person>>, StoreError> {
        let ids = ids.to_vec();
        self.read("person_records", move |s| s.people(&ids)).await
    }

    async fn audit_page(&self, page: UserPage) -> Result<Page<AuditRecord>, StoreError> {
        self.with("audit_page", move |inner| edit::audit_page(&inner.users, page)).await
    }

    fn recovered(&self) -> Vec<Applied> {
        self.recovered.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take().into_iter().collect()
    }
}

#[async_trait]
impl Lifecycle for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    fn catalog_id(&self) -> String {
        self.catalog_id.borrow().clone()
    }

    fn catalog_changes(&self) -> Option<tokio::sync::watch::Receiver<String>> {
        Some(self.catalog_id.subscribe())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read("ping", |_| Ok(())).await
    }

    async fn close(&self) -> Result<(), StoreError> {
        // Reads hold their own `Arc`; the files close when the last one finishes. Every
        // write is committed durably before it is acknowledged, so there is nothing to flush.
        let taken = self.inner.write().map_err(|_| StoreError::Closed)?.take();
        drop(taken);
        Ok(())
    }
}

/// The bulk side of a data directory: new catalogs are built as a generation beside the
/// current one and switched to atomically.
pub struct EmbeddedBulk {
    data_dir: PathBuf,
    cache_bytes: usize,
}

impl EmbeddedBulk {
    /// Bulk access to `data_dir`, with `cache_bytes` of redb page cache per file while loading.
    pub fn new(data_dir: &Path, cache_bytes: usize) -> EmbeddedBulk {
        EmbeddedBulk { data_dir: data_dir.to_owned(), cache_bytes }
    }
}

impl BulkLoad for EmbeddedBulk {
    fn location(&self) -> String {
        self.data_dir.display().to_string()
    }

    fn has_catalog(&self) -> Result<bool, StoreError> {
        Ok(has_catalog(&self.data_dir))
    }

    fn sink(&self, _source: &str) -> Result<Box<dyn CatalogSink>, StoreError> {
        Ok(Box::new(CatalogBuilder::create(&self.data_dir, self.cache_bytes)?))
    }

    fn export(&self, out_dir: &Path, progress: &mut dyn FnMut(Progress)) -> Result<ExportStats, StoreError> {
        // Its own handle: exporting needs the data directory to itself (a serving gateway
        // holds it), like any other open.
        let store = EmbeddedStore::open(&self.data_dir, &EmbeddedOptions::default())?;
        export::export(&store.inner()?.main, out_dir, progress)
    }
}

/// Turns a redb error into [`StoreError::Backend`] (`StoreError` lives in another crate, so
/// `?` cannot do it through `From`).
pub(crate) trait Db<T> {
    /// The result with its error wrapped.
    fn db(self) -> Result<T, StoreError>;
}

impl<T, E: Into<redb::Error>> Db<T> for Result<T, E> {
    fn db(self) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::backend(e.into()))
    }
}

/// How much lower than the serving threads' the catalog writer's CPU priority is (a nice
/// value; the scheduler then gives a serving thread about ten times the writer's share).
const WRITER_NICENESS: i32 = 10;

/// Lowers the calling thread's CPU priority by [`WRITER_NICENESS`]. On Linux a nice value is
/// a thread's own (setpriority(2), NOTES: `None`, "the caller", names the calling thread), so
/// only the catalog writer is affected.
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::process::getpriority_process(None)
        .and_then(|now| rustix::process::setpriority_process(None, (now + WRITER_NICENESS).min(19)))
    {
        tracing::warn!(%error, "could not lower the catalog writer's priority");
    }
}
