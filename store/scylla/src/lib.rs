//! Marquee's ScyllaDB backend: one keyspace replicated to every region's data center, each
//! region's gateways reading and writing their local data center (`LOCAL_QUORUM`), so a region
//! that loses the others still has all the data and takes writes. The only crate that depends
//! on the `scylla` driver.
//!
//! - [`schema`]: versioned CQL files applied by `gateway migrate`.
//! - Catalog reads name the published catalog generation (see `bulk`); loads are written and
//!   published at EACH_QUORUM, and a generation is served only once the local data center
//!   holds it. A running store looks for a newly published one every `catalog_poll_ms` and
//!   switches to it; each call reads one generation whole, and
//!   [`Lifecycle::catalog_changes`] tells the gateway's caches.
//! - Users' data is plain upserts and deletes (last write wins by write timestamp across
//!   regions, each write stamped after the one it replaces); rating totals are derived per
//!   bucket of users and reconciled by one gateway per region (see `users`, `lease`), so they
//!   never double-count and converge within [`UserData::totals_lag`].
//! - Readiness reads a replicated partition at LOCAL_QUORUM; the driver connects to the local
//!   data center's nodes only.
//! - Every request-path statement is prepared; a dataloader batch is concurrent
//!   single-partition reads (one `store_calls_total` increment), never a multi-partition `IN`.

mod bulk;
mod catalog;
mod gc;
mod lease;
mod options;
mod ranged;
pub mod schema;
mod session;
mod spill;
mod tls;
mod users;
mod writes;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use marquee_store::plan;
use marquee_store::{
    Applied, AuditRecord, BrowseQuery, CatalogChanges, CatalogReads, CatalogStats, CatalogWrites, Credit,
    DriverFigures, Edit, FilmographyEntry, FilmographyQuery, GenreCount, Lifecycle, Logged, Movie, MovieId,
    MovieRecord, Page, Person, PersonId, Rating, RatingTotals, SearchQuery, SimilarQuery, StoreError,
    UserData, UserId, UserPage, WatchlistEntry,
};
use tokio::task::JoinHandle;

pub use bulk::ScyllaBulk;
pub use gc::{Collected, collect_generations};
pub use options::{Consistency, ScyllaOptions};
pub use schema::{MigrationReport, SCHEMA_VERSION, migrate};
pub use session::ScyllaError;
pub use users::{Reconciled, TotalsCheck};

use catalog::{Catalog, CatalogStatements, Generation};
use session::Cluster;
use users::{Reconciler, UserStatements, Users};

/// The connected backend.
struct Inner {
    cluster: Cluster,
    catalog: CatalogStatements,
    users: UserStatements,
    /// The generation served now; replaced whole when a newer one is published here.
    generation: std::sync::RwLock<Arc<Generation>>,
    /// The served generation's catalog id, for the gateway's caches.
    catalog_id: tokio::sync::watch::Sender<String>,
    ping: scylla::statement::prepared::PreparedStatement,
    /// Users' data between calls (see [`users::UserState`]).
    user_state: users::UserState,
    /// Prepared on the first catalog write: a cluster without lightweight transactions (the
    /// CQL stand-in) serves everything else.
    writes: tokio::sync::OnceCell<writes::WriteStatements>,
    /// This store's name as a catalog writer (`writes`).
    writer_name: String,
    /// One catalog apply at a time in this store.
    writing: tokio::sync::Mutex<()>,
    /// What applies an interrupted writer left changed, finished here, for the caches.
    recovered: std::sync::Mutex<Option<Applied>>,
    /// Reads one second of `catalog_log`.
    catalog_log: scylla::statement::prepared::PreparedStatement,
    /// The newest apply the log listed whose counts this store has read since.
    logged: std::sync::atomic::AtomicI64,
}

impl Inner {
    /// The generation served now.
    fn generation(&self) -> Arc<Generation> {
        self.generation.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn catalog(&self) -> Catalog<'_> {
        Catalog { cluster: &self.cluster, statements: &self.catalog, generation: self.generation() }
    }

    async fn writer(&self) -> Result<writes::Writer<'_>, StoreError> {
        let statements =
            self.writes.get_or_try_init(|| writes::WriteStatements::prepare(&self.cluster)).await?;
        Ok(writes::Writer {
            cluster: &self.cluster,
            statements,
            catalog: &self.catalog,
            generation: self.generation(),
            me: &self.writer_name,
            writing: &self.writing,
        })
    }

    /// Serves `generation`'s counts as `counts` left them, unless another generation is
    /// served by now.
    fn take_counts(&self, generation: &Generation, counts: &writes::Counts) {
        let mut served = self.generation.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if served.id == generation.id && counts.stamp >= served.counts_stamp {
            *served = Arc::new(counts.apply_to(&served));
        }
    }

    /// Serves `found`'s counts if it is the generation served and they are no older than the
    /// served ones (a read racing a newer apply's counts never undoes them); whether they are
    /// served now.
    fn take_found_counts(&self, found: Generation) -> bool {
        let mut served = self.generation.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if served.id != found.id || found.counts_stamp < served.counts_stamp {
            return false;
        }
        if found != **served {
            *served = Arc::new(found);
        }
        true
    }

    /// Keeps what a finished interrupted apply changed for [`CatalogWrites::recovered`].
    fn hand_over_finished(&self, applied: Applied) {
        let mut held = self.recovered.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match held.as_mut() {
            Some(earlier) => earlier.merge(applied),
            None => *held = Some(applied),
        }
    }

    fn users(&self) -> Users<'_> {
        Users { cluster: &self.cluster, statements: &self.users, state: &self.user_state }
    }

    /// Refuses writes about movies the served catalog does not have.
    async fn check_movie(&self, movie: MovieId) -> Result<(), StoreError> {
        match self.catalog().movies(&[movie]).await?.pop().flatten() {
            Some(_) => Ok(()),
            None => Err(StoreError::NotFound { kind: "movie", id: movie.to_string() }),
        }
    }
}

/// The ScyllaDB backend (see the crate docs).
pub struct ScyllaStore {
    inner: Arc<Inner>,
    totals_lag: Duration,
    reconciler: JoinHandle<()>,
    /// Whether the reconciler runs here, and when its last pass finished (for metrics).
    reconciling: Arc<Reconciling>,
    follower: JoinHandle<()>,
}

/// What the reconcile task reports: whether this store holds the region's lease, and when
/// (Unix ms) it last finished a pass.
#[derive(Default)]
struct Reconciling {
    held: std::sync::atomic::AtomicBool,
    passed_at_ms: std::sync::atomic::AtomicU64,
}

impl ScyllaStore {
    /// Connects, checks the schema version and resolves the published catalog generation.
    pub async fn open(options: &ScyllaOptions) -> Result<ScyllaStore, StoreError> {
        let cluster = Cluster::connect(options).await?;
        schema::check(&cluster).await?;
        let generation = bulk::current_generation(&cluster).await?.ok_or_else(|| {
            StoreError::NoCatalog(format!(
                "keyspace {} at {}",
                options.keyspace,
                options.contact_points.join(",")
            ))
        })?;
        tracing::info!(
            generation = generation.id,
            movies = generation.stats.movies,
            "serving catalog generation"
        );
        let (catalog_id, _) = tokio::sync::watch::channel(catalog_id(&cluster, &generation));
        let inner = Arc::new(Inner {
            catalog: CatalogStatements::prepare(&cluster).await?,
            users: UserStatements::prepare(&cluster).await?,
            ping: readiness_probe(&cluster).await?,
            catalog_log: cluster
                .prepare(
                    session::Kind::Read,
                    "SELECT stamp, applied FROM {keyspace}.catalog_log WHERE slot = ?",
                )
                .await?,
            logged: std::sync::atomic::AtomicI64::new(0),
            generation: std::sync::RwLock::new(Arc::new(generation)),
            catalog_id,
            writes: tokio::sync::OnceCell::new(),
            writer_name: format!(
                "{}-{:x}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos())
            ),
            recovered: std::sync::Mutex::new(None),
            writing: tokio::sync::Mutex::new(()),
            cluster,
            user_state: Default::default(),
        });
        let poll = Duration::from_millis(options.catalog_poll_ms.max(10));
        let follower = tokio::spawn(follow_generations(Arc::downgrade(&inner), poll));
        let interval = Duration::from_millis(options.reconcile_interval_ms.max(10));
        let timeout = options.request_timeout();
        let lease = lease::Lease::prepare(&inner.cluster, &options.local_dc).await?;
        let others: Vec<String> = options.replication.keys().cloned().collect();
        let reconciler = Reconciler::new(timeout, &options.local_dc, &others);
        let reconciling = Arc::new(Reconciling::default());
        let reconciler =
            tokio::spawn(reconcile(Arc::downgrade(&inner), interval, reconciler, lease, reconciling.clone()));
        Ok(ScyllaStore {
            inner,
            totals_lag: users::totals_lag(interval, timeout),
            reconciler,
            reconciling,
            follower,
        })
    }

    /// The catalog generation this store serves.
    pub fn generation(&self) -> i64 {
        self.inner.generation().id
    }

    /// Re-derives every rating total the change log lists since `since_ms` (unix ms), for
    /// operators after a repair or a partition longer than the reconciler's looks reach
    /// (`gateway reconcile --since`); every movie listed is written to the change log again,
    /// so every region's caches and edges drop it. The log keeps a day.
    pub async fn reconcile_since(&self, since_ms: u64) -> Result<Reconciled, StoreError> {
        users::reconcile_since(&self.inner.users(), since_ms).await
    }

    /// Checks, without writing, that every rating total the change log lists from `since_ms`
    /// to `until_ms` (unix ms) equals the count of its ratings in this data center (`gateway
    /// reconcile --check`).
    pub async fn check_totals(&self, since_ms: u64, until_ms: u64) -> Result<TotalsCheck, StoreError> {
        users::check_between(&self.inner.users(), since_ms, until_ms).await
    }
}

impl Drop for ScyllaStore {
    fn drop(&mut self) {
        self.reconciler.abort();
        self.follower.abort();
    }
}

/// Names a generation for caches shared between gateways (`Lifecycle::catalog_id`).
fn catalog_id(cluster: &Cluster, generation: &Generation) -> String {
    format!("{}.{}", cluster.keyspace, generation.id)
}

/// Looks every `poll` for the generation to serve (the published `current` one once this data
/// center holds it whole, see `bulk::current_generation`) and switches to it when it differs,
/// until the store is dropped. A call already reading the old generation finishes on it.
async fn follow_generations(store: std::sync::Weak<Inner>, poll: Duration) {
    let mut ticks = tokio::time::interval(poll);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(inner) = store.upgrade() else { return };
        let found = match bulk::current_generation(&inner.cluster).await {
            Ok(Some(found)) => found,
            Ok(None) => continue,
            Err(StoreError::Closed) => return,
            Err(error) => {
                tracing::warn!(%error, "looking for a new catalog generation failed; looking again later");
                continue;
            }
        };
        let serving = inner.generation();
        if found.id == serving.id {
            // Live catalog changes may have moved the counts.
            inner.take_found_counts(found);
            finish_abandoned(&inner).await;
            continue;
        }
        tracing::info!(
            from = serving.id,
            to = found.id,
            movies = found.stats.movies,
            "serving a newly published catalog generation"
        );
        let id = catalog_id(&inner.cluster, &found);
        *inner.generation.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(found);
        inner.catalog_id.send_replace(id);
    }
}

/// Finishes a catalog apply a stopped writer left half-written, once its lock has lapsed
/// (see `writes`), and keeps what it changed for the caches.
async fn finish_abandoned(inner: &Inner) {
    let writer = match inner.writer().await {
        Ok(writer) => writer,
        Err(error) => {
            // A cluster that cannot prepare them takes no catalog writes either.
            tracing::debug!(%error, "no catalog writes on this cluster");
            return;
        }
    };
    let generation = writer.generation.clone();
    match writer.finish_abandoned().await {
        Ok(None) => {}
        Ok(Some((applied, counts))) => {
            inner.take_counts(&generation, &counts);
            inner.hand_over_finished(applied);
        }
        Err(error) => {
            tracing::warn!(%error, "finishing a half-written catalog change failed; trying again later")
        }
    }
}

/// The readiness read: `catalog_state`'s partition, at LOCAL_QUORUM whatever the configured
/// read consistency, without speculative execution (which would hide a slow replica).
async fn readiness_probe(
    cluster: &Cluster,
) -> Result<scylla::statement::prepared::PreparedStatement, StoreError> {
    let mut probe = cluster
        .prepare(
            session::Kind::Write,
            "SELECT generation FROM {keyspace}.catalog_state WHERE name = 'current'",
        )
        .await?;
    probe.set_consistency(scylla::statement::Consistency::LocalQuorum);
    Ok(probe)
}

/// Re-derives recently changed rating totals every `interval` while this gateway holds its
/// region's reconciler lease, until the store is dropped.
async fn reconcile(
    store: std::sync::Weak<Inner>,
    interval: Duration,
    mut reconciler: Reconciler,
    mut lease: lease::Lease,
    reconciling: Arc<Reconciling>,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(inner) = store.upgrade() else { return };
        // This gateway's own failed writes, whether or not it is the region's reconciler.
        match inner.users().resettle_due().await {
            Ok(_) => {}
            Err(StoreError::Closed) => return,
            Err(error) => {
                tracing::warn!(%error, "re-deriving failed writes' totals failed; retrying next interval")
            }
        }
        match lease.held(&inner.cluster).await {
            Ok(true) => reconciling.held.store(true, Ordering::Relaxed),
            Ok(false) => {
                reconciling.held.store(false, Ordering::Relaxed);
                reconciler.follow_from_now();
                continue;
            }
            Err(StoreError::Closed) => return,
            Err(error) => {
                tracing::warn!(%error, "reading the reconciler lease failed; retrying next interval");
                continue;
            }
        }
        let passed = reconciler.pass(&inner.users()).await;
        if passed.is_ok() {
            reconciling.passed_at_ms.store(u64::try_from(bulk::now_ms()).unwrap_or(0), Ordering::Relaxed);
        }
        match passed {
            Ok(buckets) if buckets > 0 => tracing::debug!(buckets, "rating totals reconciled"),
            Ok(_) => {}
            Err(StoreError::Closed) => return,
            Err(error) => {
                tracing::warn!(%error, "rating totals reconcile pass failed; retrying next interval")
            }
        }
    }
}

#[async_trait]
impl CatalogReads for ScyllaStore {
    async fn movies(&self, ids: &[MovieId]) -> Result<Vec<Option<Movie>>, StoreError> {
        self.inner.catalog().movies(ids).await
    }

    async fn people(&self, ids: &[PersonId]) -> Result<Vec<Option<Person>>, StoreError> {
        self.inner.catalog().people(ids).await
    }

    async fn credits(&self, movies: &[MovieId]) -> Result<Vec<Arc<Vec<Credit>>>, StoreError> {
        Ok(self.inner.catalog().credits(movies).await?.into_iter().map(Arc::new).collect())
    }

    async fn filmographies(
        &self,
        queries: &[FilmographyQuery],
    ) -> Result<Vec<Page<FilmographyEntry>>, StoreError> {
        self.inner.catalog().filmographies(queries).await
    }

    async fn similar(&self, queries: &[SimilarQuery]) -> Result<Vec<Vec<MovieId>>, StoreError> {
        self.inner.catalog().similar(queries).await
    }

    async fn search(&self, query: &SearchQuery) -> Result<Page<MovieId>, StoreError> {
        self.inner.catalog().search(query).await
    }

    async fn browse(&self, query: &BrowseQuery) -> Result<Page<MovieId>, StoreError> {
        self.inner.catalog().browse(query).await
    }

    async fn genres(&self) -> Result<Vec<GenreCount>, StoreError> {
        self.inner.cluster.check_open()?;
        Ok(self.inner.catalog().genres())
    }

    async fn stats(&self) -> Result<CatalogStats, StoreError> {
        self.inner.cluster.check_open()?;
        Ok(self.inner.generation().stats)
    }
}

#[async_trait]
impl UserData for ScyllaStore {
    fn totals_lag(&self) -> Duration {
        self.totals_lag
    }

    async fn rate(&self, user: &UserId, movie: MovieId, score: u8) -> Result<Rating, StoreError> {
        plan::check_score(score)?;
        self.inner.check_movie(movie).await?;
        self.inner.users().rate(user, movie, score).await
    }

    async fn delete_rating(&self, user: &UserId, movie: MovieId) -> Result<bool, StoreError> {
        self.inner.users().delete_rating(user, movie).await
    }

    async fn user_ratings(
        &self,
        user: &UserId,
        movies: &[MovieId],
    ) -> Result<Vec<Option<Rating>>, StoreError> {
        self.inner.users().user_ratings(user, movies).await
    }

    async fn ratings_page(&self, user: &UserId, page: UserPage) -> Result<Page<Rating>, StoreError> {
        self.inner.users().ratings_page(user, page).await
    }

    async fn add_to_watchlist(&self, user: &UserId, movie: MovieId) -> Result<WatchlistEntry, StoreError> {
        self.inner.check_movie(movie).await?;
        self.inner.users().add_to_watchlist(user, movie).await
    }

    async fn remove_from_watchlist(&self, user: &UserId, movie: MovieId) -> Result<bool, StoreError> {
        self.inner.users().remove_from_watchlist(user, movie).await
    }

    async fn watchlist_page(
        &self,
        user: &UserId,
        page: UserPage,
    ) -> Result<Page<WatchlistEntry>, StoreError> {
        self.inner.users().watchlist_page(user, page).await
    }

    async fn rating_totals(&self, movies: &[MovieId]) -> Result<Vec<RatingTotals>, StoreError> {
        self.inner.users().rating_totals(movies).await
    }

    async fn rating_changes(&self, second: u64) -> Result<Option<Vec<MovieId>>, StoreError> {
        Ok(Some(self.inner.users().changed_movies(second).await?))
    }

    async fn rederived_totals(&self) -> Result<Vec<MovieId>, StoreError> {
        Ok(self.inner.users().take_rederived())
    }
}

#[async_trait]
impl CatalogWrites for ScyllaStore {
    async fn apply(&self, changes: CatalogChanges, edit: Edit) -> Result<Applied, StoreError> {
        let writer = self.inner.writer().await?;
        let generation = writer.generation.clone();
        let (leftover, result) = writer.apply(&changes, &edit).await;
        if let Some(leftover) = leftover {
            self.inner.hand_over_finished(leftover);
        }
        let (applied, counts) = result?;
        self.inner.take_counts(&generation, &counts);
        Ok(applied)
    }

    async fn records(&self, ids: &[MovieId]) -> Result<Vec<Option<MovieRecord>>, StoreError> {
        let (movies, credits) = futures::try_join!(self.movies(ids), self.credits(ids))?;
        Ok(movies
            .into_iter()
            .zip(credits)
            .map(|(movie, credits)| movie.map(|movie| MovieRecord { movie, credits: credits.to_vec() }))
            .collect())
    }

    async fn person_records(&self, ids: &[PersonId]) -> Result<Vec<Option<Person>>, StoreError> {
        self.people(ids).await
    }

    async fn audit_page(&self, page: UserPage) -> Result<Page<AuditRecord>, StoreError> {
        self.inner.writer().await?.audit_page(page).await
    }

    fn recovered(&self) -> Vec<Applied> {
        self.inner
            .recovered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .into_iter()
            .collect()
    }

    async fn catalog_log(&self, second: u64) -> Result<Option<Vec<Logged>>, StoreError> {
        let inner = &self.inner;
        let result = inner.cluster.unpaged(&inner.catalog_log, (second as i64,)).await?;
        let rows = result.into_rows_result().map_err(session::driver_error)?;
        let mut logged = Vec::new();
        for row in rows.rows::<(i64, Vec<u8>)>().map_err(session::driver_error)? {
            let (stamp, body) = row.map_err(session::driver_error)?;
            match catalog::decode_body("catalog change", &body) {
                Ok(applied) => logged.push(Logged { stamp, applied }),
                // Written by a build whose record of a change differs: its caches follow
                // their TTL; the rest of the log is still followed.
                Err(error) => {
                    tracing::warn!(stamp, %error, "a catalog change log entry that does not decode")
                }
            }
        }
        // The counts moved with the newest apply listed: read them now rather than at the next
        // generation poll. Taken as read once they are at least that apply's (the counts'
        // lightweight transaction may reach this data center after the log entry: read again
        // on the next call, and the generation poll catches up in any case).
        let newest = logged.iter().map(|l| l.stamp).max().unwrap_or(0);
        if newest > inner.logged.load(std::sync::atomic::Ordering::Relaxed) {
            match bulk::current_generation(&inner.cluster).await {
                Ok(Some(found)) => {
                    let stamp = found.counts_stamp;
                    if inner.take_found_counts(found) && stamp >= newest {
                        inner.logged.fetch_max(newest, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                Ok(None) => {}
                Err(error) => tracing::debug!(%error, "reading the counts a logged change moved failed"),
            }
        }
        Ok(Some(logged))
    }
}

#[async_trait]
impl Lifecycle for ScyllaStore {
    fn backend(&self) -> &'static str {
        "scylla"
    }

    fn catalog_id(&self) -> String {
        self.inner.catalog_id.borrow().clone()
    }

    fn catalog_changes(&self) -> Option<tokio::sync::watch::Receiver<String>> {
        Some(self.inner.catalog_id.subscribe())
    }

    /// One read of a replicated partition at LOCAL_QUORUM (readiness: can the region's data
    /// center serve the consistency requests use, not merely is one node up?).
    async fn ping(&self) -> Result<(), StoreError> {
        let _slot = self.inner.cluster.slot().await?;
        self.inner
            .cluster
            .session
            .execute_unpaged(&self.inner.ping, ())
            .await
            .map_err(session::execution_error)?;
        Ok(())
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.inner.cluster.close();
        self.reconciler.abort();
        Ok(())
    }

    fn driver_figures(&self) -> Option<DriverFigures> {
        Some(DriverFigures {
            reconciling: self.reconciling.held.load(Ordering::Relaxed),
            reconciled_at_ms: self.reconciling.passed_at_ms.load(Ordering::Relaxed),
            ..self.inner.cluster.figures()
        })
    }
}
