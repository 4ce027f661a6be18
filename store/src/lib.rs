//! Marquee's storage contract: the domain model and the traits every backend implements, split
//! by what they serve and what they can promise.
//!
//! - [`CatalogReads`]: movies, people, credits and their indexes. Changed only by loads and
//!   [`CatalogWrites`], each of which says what it changed, so every answer is cacheable
//!   anywhere (in-process, Redis, CDN) until a change names it.
//! - [`UserData`]: users' ratings and watchlists, and the movies' rating totals derived from
//!   them. A user's own rows are read-your-writes; the totals are eventually consistent, within
//!   the bound the backend states ([`UserData::totals_lag`]), and never double-count.
//! - [`CatalogWrites`]: live changes to the catalog (editors' corrections, daily deltas),
//!   applied beside readers with every derived row.
//! - [`Lifecycle`]: readiness and shutdown.
//! - [`bulk::BulkLoad`]: how a whole new catalog gets in (seed, import) and out (export).
//!
//! The store is the last stage of the read path (`http` → resolvers → dataloaders → caches →
//! **store**). Every read method takes a batch or a bounded page, so one dataloader batch is
//! one backend round trip. Tables are designed query-first — one per access path, the way they
//! are laid out in CQL — so every backend answers the same query with the same shape of read.
//! Backends live in their own crates (`marquee-store-embedded`; the ScyllaDB one next to it),
//! so only they depend on their drivers; this crate names none of them.

pub mod bulk;
#[cfg(feature = "conformance")]
pub mod conformance;
mod error;
pub mod keys;
pub mod model;
pub mod plan;
pub mod statements;
pub mod text;
pub mod writes;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use error::StoreError;
pub use model::*;
pub use writes::{Applied, AuditRecord, CatalogChanges, Edit, Lists, Logged};

/// The largest page any paged read returns; larger requests are an error at the API edge.
pub const MAX_PAGE: usize = 100;

/// A position inside one ordered access path: the sort key and the id that breaks ties.
///
/// Backends produce and consume positions; the API wraps them in opaque cursors.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Sort key, ascending (descending orders are stored inverted).
    pub key: u64,
    /// Tie-breaking id (a movie id, or a movie id and credit ordinal).
    pub id: u64,
}

/// One page of an ordered read.
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    /// Items in order, each with the position a cursor resumes after.
    pub items: Vec<(Position, T)>,
    /// Whether more items follow the last one.
    pub has_next: bool,
}

impl<T> Default for Page<T> {
    fn default() -> Self {
        Page { items: Vec::new(), has_next: false }
    }
}

/// Title search: every word of `text` must prefix a word of the title.
#[derive(Clone, Debug)]
pub struct SearchQuery {
    /// What the user typed; case and accents do not matter.
    pub text: String,
    /// Page size, at most [`MAX_PAGE`].
    pub first: usize,
    /// Resume after this position.
    pub after: Option<Position>,
}

/// Orders for [`BrowseQuery`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum MovieSort {
    /// Most popular first.
    Popularity,
    /// Best rated first (weighted so that a handful of votes cannot top the list).
    Rating,
    /// Newest first.
    ReleaseDate,
}

impl MovieSort {
    /// Every sort order.
    pub const ALL: [MovieSort; 3] = [MovieSort::Popularity, MovieSort::Rating, MovieSort::ReleaseDate];

    /// Stable numeric code used in keys and cursors.
    pub fn code(self) -> u8 {
        match self {
            MovieSort::Popularity => 0,
            MovieSort::Rating => 1,
            MovieSort::ReleaseDate => 2,
        }
    }
}

/// Browse the catalog by genre and year range.
#[derive(Clone, Debug)]
pub struct BrowseQuery {
    /// Only movies listing this genre.
    pub genre: Option<Genre>,
    /// Earliest release year (inclusive).
    pub year_from: Option<u16>,
    /// Latest release year (inclusive).
    pub year_to: Option<u16>,
    /// Order.
    pub sort: MovieSort,
    /// Page size, at most [`MAX_PAGE`].
    pub first: usize,
    /// Resume after this position.
    pub after: Option<Position>,
}

/// One page of one person's filmography, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FilmographyQuery {
    /// Whose.
    pub person: PersonId,
    /// Page size, at most [`MAX_PAGE`].
    pub first: usize,
    /// Resume after this position.
    pub after: Option<Position>,
}

/// Movies like `movie`: same primary genre, close in time and popularity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SimilarQuery {
    /// The movie to match.
    pub movie: MovieId,
    /// How many, at most [`MAX_PAGE`].
    pub first: usize,
}

/// A page of one user's list (ratings or watchlist), newest first.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct UserPage {
    /// Page size, at most [`MAX_PAGE`].
    pub first: usize,
    /// Resume after this position.
    pub after: Option<Position>,
}

/// Size of the catalog.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct CatalogStats {
    /// Movies stored.
    pub movies: u64,
    /// People stored.
    pub people: u64,
}

/// Catalog reads: immutable between catalog loads, so cacheable everywhere.
///
/// Batch methods return one entry per input, in input order, so a dataloader batch is one
/// call. Each method is one backend round trip.
#[async_trait]
pub trait CatalogReads: Send + Sync + 'static {
    /// Movies by id, as loaded (without users' ratings: see [`UserData::rating_totals`]);
    /// `None` for unknown ids.
    async fn movies(&self, ids: &[MovieId]) -> Result<Vec<Option<Movie>>, StoreError>;

    /// People by id; `None` for unknown ids.
    async fn people(&self, ids: &[PersonId]) -> Result<Vec<Option<Person>>, StoreError>;

    /// Credits of each movie (cast in billing order, then crew); empty for unknown movies.
    /// Shared: a cache in front of the store hands out the list it holds without copying it.
    async fn credits(&self, movies: &[MovieId]) -> Result<Vec<Arc<Vec<Credit>>>, StoreError>;

    /// A page of each person's filmography, newest first.
    async fn filmographies(
        &self,
        queries: &[FilmographyQuery],
    ) -> Result<Vec<Page<FilmographyEntry>>, StoreError>;

    /// Movies similar to each query's movie, most similar first.
    async fn similar(&self, queries: &[SimilarQuery]) -> Result<Vec<Vec<MovieId>>, StoreError>;

    /// Title search, ranked by popularity.
    async fn search(&self, query: &SearchQuery) -> Result<Page<MovieId>, StoreError>;

    /// Browse by genre and years.
    async fn browse(&self, query: &BrowseQuery) -> Result<Page<MovieId>, StoreError>;

    /// Every genre with its movie count, in [`GENRES`] order, including empty ones.
    async fn genres(&self) -> Result<Vec<GenreCount>, StoreError>;

    /// Catalog size.
    async fn stats(&self) -> Result<CatalogStats, StoreError>;
}

/// Live changes to the catalog being served (see [`writes`]): movies, people and removals
/// applied beside readers, every derived row kept in step.
///
/// What every backend promises:
/// - An apply is checked whole first ([`CatalogChanges::check`]); one invalid record and
///   nothing is written.
/// - It is durable when it returns `Ok`, with its audit record.
/// - A reader sees each movie either before or after (its row and its derived rows agree
///   within what the backend states: one transaction on the embedded store).
/// - A record equal to the stored one writes nothing; a removal of an unknown id is reported
///   in [`Applied::unknown_removals`], not an error; so re-running a delta converges.
#[async_trait]
pub trait CatalogWrites: Send + Sync + 'static {
    /// Applies `changes` on behalf of `edit`, and records it in the audit log.
    async fn apply(&self, changes: CatalogChanges, edit: Edit) -> Result<Applied, StoreError>;

    /// Movies with their credits as stored now, read from the backend itself (no cache), one
    /// entry per input: what an edit starts from.
    async fn records(&self, ids: &[MovieId]) -> Result<Vec<Option<MovieRecord>>, StoreError>;

    /// People as stored now, read from the backend itself (no cache), one entry per input.
    async fn person_records(&self, ids: &[PersonId]) -> Result<Vec<Option<Person>>, StoreError>;

    /// A page of the audit log, most recent first.
    async fn audit_page(&self, page: UserPage) -> Result<Page<AuditRecord>, StoreError>;

    /// What applies a crash interrupted changed, which this backend finished when it opened
    /// (their callers never heard back, so no cache was told). Taken once.
    fn recovered(&self) -> Vec<Applied> {
        Vec::new()
    }

    /// The applies finished during second `second` (since the Unix epoch, by the finishing
    /// writer's clock), by any gateway or importer of any region, as far as this region's
    /// replicas have received them: the log other regions' caches follow, as they follow
    /// [`UserData::rating_changes`]. Each is listed once per finishing (an apply finished
    /// again after a crash may be listed twice), after every row it wrote. Reading it also
    /// brings the counts this backend serves up to the newest apply it lists. `None` for a
    /// backend without such a log (the embedded store: one machine, whose changes all go
    /// through its own gateway).
    async fn catalog_log(&self, second: u64) -> Result<Option<Vec<Logged>>, StoreError> {
        let _ = second;
        Ok(None)
    }
}

/// Users' data: ratings, watchlists, and the rating totals derived from the ratings.
///
/// What every backend promises:
/// - A write is durable when it returns `Ok` (a local commit, or a quorum of replicas).
/// - A user's own rows (their ratings, their watchlist) are read-your-writes through the
///   same backend in the same region. Across regions the last write wins.
/// - A re-rate replaces the earlier score and a delete removes it, exactly once, however
///   often the call is retried: [`UserData::rating_totals`] never counts one user twice.
/// - [`UserData::rating_totals`] reflects a write within [`UserData::totals_lag`] of its
///   acknowledgement (eventually consistent; a backend may be faster, never slower).
/// - An unknown movie or a score out of range writes nothing.
#[async_trait]
pub trait UserData: Send + Sync + 'static {
    /// The longest a rating write takes to show in [`UserData::rating_totals`] on this
    /// backend; `Duration::ZERO` when it shows at once.
    fn totals_lag(&self) -> Duration;

    /// Sets `user`'s score for `movie` (1-10), replacing any earlier score.
    async fn rate(&self, user: &UserId, movie: MovieId, score: u8) -> Result<Rating, StoreError>;

    /// Removes `user`'s rating of `movie`; whether there was one.
    async fn delete_rating(&self, user: &UserId, movie: MovieId) -> Result<bool, StoreError>;

    /// `user`'s ratings of `movies`, one entry per input, `None` where there is none.
    async fn user_ratings(
        &self,
        user: &UserId,
        movies: &[MovieId],
    ) -> Result<Vec<Option<Rating>>, StoreError>;

    /// A page of `user`'s ratings, most recent first.
    async fn ratings_page(&self, user: &UserId, page: UserPage) -> Result<Page<Rating>, StoreError>;

    /// Adds `movie` to `user`'s watchlist (adding it again keeps the first entry).
    async fn add_to_watchlist(&self, user: &UserId, movie: MovieId) -> Result<WatchlistEntry, StoreError>;

    /// Removes `movie` from `user`'s watchlist; whether it was there.
    async fn remove_from_watchlist(&self, user: &UserId, movie: MovieId) -> Result<bool, StoreError>;

    /// A page of `user`'s watchlist, most recently added first.
    async fn watchlist_page(&self, user: &UserId, page: UserPage)
    -> Result<Page<WatchlistEntry>, StoreError>;

    /// Marquee users' rating totals of each movie, one entry per input (zero where nobody
    /// rated). Combine them with the catalog's summary with [`RatingSummary::with`].
    async fn rating_totals(&self, movies: &[MovieId]) -> Result<Vec<RatingTotals>, StoreError>;

    /// The movies whose ratings were written during second `second` (since the Unix epoch,
    /// by the writer's clock), through any gateway of any region, as far as this region's
    /// replicas have received them: the log other regions' caches follow. `None` for a
    /// backend without such a log (the embedded store: one machine, whose writes all go
    /// through its own caches).
    async fn rating_changes(&self, second: u64) -> Result<Option<Vec<MovieId>>, StoreError> {
        let _ = second;
        Ok(None)
    }

    /// The movies whose rating totals this gateway's backend found wrong and re-derived since
    /// the last call: rows that reached this region too late for the change log's followers
    /// (hints replayed after a partition, a batchlog replay, a repair), so no cache heard of
    /// them. Taken once: each is handed to one caller. Empty for a backend whose totals are
    /// exact in each write.
    async fn rederived_totals(&self) -> Result<Vec<MovieId>, StoreError> {
        Ok(Vec::new())
    }
}

/// Readiness and shutdown of a backend.
#[async_trait]
pub trait Lifecycle: Send + Sync + 'static {
    /// Short backend name for metrics and logs (`embedded`, `scylla`).
    fn backend(&self) -> &'static str;

    /// Names the catalog generation this store serves: the same on every gateway serving that
    /// generation and different for every other load, so caches shared between gateways key
    /// catalog entries by it and never mix two loads.
    fn catalog_id(&self) -> String;

    /// The catalog id served, changing when a running backend switches to a newly published
    /// generation (caches keyed by catalog entity drop what they hold then); `None` for a
    /// backend that serves the catalog it opened until it is restarted.
    fn catalog_changes(&self) -> Option<tokio::sync::watch::Receiver<String>> {
        None
    }

    /// A cheap round trip proving the backend answers (readiness).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Flushes and closes; later calls fail with [`StoreError::Closed`].
    async fn close(&self) -> Result<(), StoreError>;

    /// Figures of the backend's client driver, for metrics; `None` for a backend without one.
    fn driver_figures(&self) -> Option<DriverFigures> {
        None
    }
}

/// Cumulative figures of a backend's client driver (what an operator of a database cluster
/// watches besides call latency).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct DriverFigures {
    /// Requests sent to the cluster (a page of a paged read is one).
    pub requests: u64,
    /// Requests that failed after the driver's retries.
    pub errors: u64,
    /// Retries the driver's retry policy made.
    pub retries: u64,
    /// Speculative executions started (the same read sent to a second replica).
    pub speculative_executions: u64,
    /// Requests that reached the client-side timeout.
    pub timeouts: u64,
    /// Connections open now.
    pub connections: u64,
    /// Whether this store holds its region's rating-reconciler lease now (it is the region's
    /// reconciler).
    pub reconciling: bool,
    /// When this store last finished a reconcile pass as its region's reconciler (Unix
    /// milliseconds; 0: never).
    pub reconciled_at_ms: u64,
}

/// One backend as the gateway holds it: its three faces, each a trait object, so decorators
/// (metrics, caches) wrap only the face they concern and nothing is generic over the backend.
#[derive(Clone)]
pub struct Store {
    /// Catalog reads.
    pub catalog: Arc<dyn CatalogReads>,
    /// Users' data.
    pub users: Arc<dyn UserData>,
    /// Live catalog changes.
    pub edits: Arc<dyn CatalogWrites>,
    /// Readiness and shutdown.
    pub lifecycle: Arc<dyn Lifecycle>,
}

impl Store {
    /// The three faces of one backend object.
    pub fn new<B: CatalogReads + UserData + CatalogWrites + Lifecycle>(backend: Arc<B>) -> Store {
        Store { catalog: backend.clone(), users: backend.clone(), edits: backend.clone(), lifecycle: backend }
    }
}
