//! Live catalog writes on ScyllaDB ([`CatalogWrites::apply`](marquee_store::CatalogWrites)):
//! a set of changes written into the generation being served, with every derived row
//! (filmographies, browse orders, title search) and the generation's counts kept in step.
//!
//! - **One writer at a time, in every region.** An apply holds the `catalog_writer` row, taken
//!   with a lightweight transaction at SERIAL (schema version 7) under a token of its own, for
//!   [`LOCK_TTL`] at a time, renewed between chunks of its writes; a writer that stops lets it
//!   lapse. Within one gateway applies also queue on a mutex. Two writers never derive rows
//!   from the same old record, so no derived row of a replaced record survives.
//! - **Writes are ordered by the lock, not by clocks.** The apply's stamp (microseconds) is
//!   later than the last apply's (read at SERIAL with the counts), and every row is written
//!   `USING TIMESTAMP` the stamp: a later apply wins whatever the writers' clocks say.
//! - **Every region sees an acknowledged apply.** Rows are written at the load consistency
//!   (`[store] load_consistency`, EACH_QUORUM by default), so each region's LOCAL_QUORUM reads
//!   see them; the counts move by a conditional write on their stamp (QUORUM and SERIAL).
//! - **An interrupted apply is finished, not lost.** Its plan (`catalog_pending`: each
//!   entity's records before and after, the counts' movement, the audit record) is written
//!   first, its own row last (a plan without it was never started on); the next writer, or any
//!   gateway once the plan is twice the lock's time old and the lock is free
//!   ([`Writer::finish_abandoned`]), writes it again whole, if the counts are still those it
//!   was planned on, and hands what it changed to the caches.
//! - **Top partitions stay prefixes.** A browse order's top partition (the first
//!   [`plan::BROWSE_TOP_ROWS`] rows across years, read first by a browse without years) must
//!   hold every row before its last: a moved row is always deleted from it, and written to it
//!   only when it sorts before its last row (or the order fits in it whole); a row both
//!   removed and written (a corrected year: the order's key is the same) is only written; an
//!   order that shrinks to fit gets its top partition rewritten from the year partitions.
//!
//! Readers see an apply's rows as they land (no isolation across partitions, as with the
//! bulk load's rows); each read call reads single partitions, so a call never sees half of
//! one row. An apply's last step lists it in `catalog_log` (its changes, under the second it
//! finished in), which every region's gateways follow to drop what it changed from their
//! caches; a store that reads an entry reads the counts it moved then, and every store polls
//! `catalog_counts` every `catalog_poll_ms` in any case.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::stream::{self, StreamExt, TryStreamExt};
use marquee_store::plan::{self, ANY_GENRE, BROWSE_TOP_ROWS};
use marquee_store::writes::{BrowseKey, MovieChange, PersonChange, Planned};
use marquee_store::{
    Applied, AuditRecord, BrowseQuery, CatalogChanges, CatalogStats, Edit, Genre, MovieId, MovieRecord,
    MovieSort, Page, Person, PersonId, Position, StoreError, UserPage,
};
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};
use scylla::value::{CqlValue, Row};
use serde::{Deserialize, Serialize};

use crate::bulk::encode_body;
use crate::catalog::{Catalog, CatalogStatements, Generation, POPULARITY_MIRRORED, TOP_YEAR, decode_body};
use crate::ranged::{decode, encode};
use crate::session::{Cluster, Kind, ScyllaError, decode_error, driver_error};

/// How long a writer holds the lock without renewing it (an apply renews it between steps).
pub(crate) const LOCK_TTL: Duration = Duration::from_secs(30);

/// How long an apply waits for another writer to release the lock.
const LOCK_WAIT: Duration = Duration::from_secs(20);

/// Statements written at once by one apply.
const WRITES_IN_FLIGHT: usize = 32;

/// Statements written between two looks at the lock's age.
const WRITES_PER_RENEWAL: usize = 2_000;

/// The `entity` of an apply's own pending row.
const APPLY_ROW: &str = "";

/// Prepared statements of the catalog writes. Their reads are at the read consistency:
/// ScyllaDB takes EACH_QUORUM for writes only.
pub(crate) struct WriteStatements {
    lock_take: PreparedStatement,
    lock_renew: PreparedStatement,
    lock_release: PreparedStatement,
    counts_read: PreparedStatement,
    counts_insert: PreparedStatement,
    counts_update: PreparedStatement,
    current: PreparedStatement,
    movie_put: PreparedStatement,
    movie_delete: PreparedStatement,
    credits_put: PreparedStatement,
    credits_delete: PreparedStatement,
    person_put: PreparedStatement,
    person_delete: PreparedStatement,
    film_put: PreparedStatement,
    film_delete: PreparedStatement,
    browse_put: PreparedStatement,
    browse_delete: PreparedStatement,
    browse_last: PreparedStatement,
    search_put: PreparedStatement,
    search_delete: PreparedStatement,
    pending_put: PreparedStatement,
    pending_read: PreparedStatement,
    pending_first: PreparedStatement,
    pending_delete: PreparedStatement,
    audit_put: PreparedStatement,
    log_put: PreparedStatement,
    audit_month: PreparedStatement,
    audit_months: PreparedStatement,
    audit_read: PreparedStatement,
}

/// Prepares a conditional statement: SERIAL (every data center's quorum) for its Paxos round,
/// QUORUM for its commit, so the next writer's SERIAL read sees it wherever it runs.
async fn conditional(cluster: &Cluster, cql: &str) -> Result<PreparedStatement, StoreError> {
    let mut statement = cluster.prepare(Kind::Bulk, cql).await?;
    statement.set_consistency(Consistency::Quorum);
    statement.set_serial_consistency(Some(SerialConsistency::Serial));
    // A conditional write retried after a timeout may find its own write and report it as
    // not applied; each caller reads the outcome instead of trusting a retry.
    statement.set_is_idempotent(false);
    Ok(statement)
}

impl WriteStatements {
    pub(crate) async fn prepare(cluster: &Cluster) -> Result<Self, StoreError> {
        let write = |cql: &'static str| cluster.prepare(Kind::Bulk, cql);
        let mut counts_read = cluster
            .prepare(
                Kind::Bulk,
                "SELECT stamp, movies, people, genre_movies, years FROM {keyspace}.catalog_counts WHERE generation = ?",
            )
            .await?;
        counts_read.set_consistency(Consistency::Serial);
        Ok(WriteStatements {
            lock_take: conditional(
                cluster,
                "INSERT INTO {keyspace}.catalog_writer (name, holder) VALUES ('catalog', ?) IF NOT EXISTS USING TTL ?",
            )
            .await?,
            lock_renew: conditional(
                cluster,
                "UPDATE {keyspace}.catalog_writer USING TTL ? SET holder = ? WHERE name = 'catalog' IF holder = ?",
            )
            .await?,
            lock_release: conditional(
                cluster,
                "DELETE FROM {keyspace}.catalog_writer WHERE name = 'catalog' IF holder = ?",
            )
            .await?,
            counts_read,
            counts_insert: conditional(
                cluster,
                "INSERT INTO {keyspace}.catalog_counts (generation, stamp, movies, people, genre_movies, years) \
                 VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS",
            )
            .await?,
            counts_update: conditional(
                cluster,
                "UPDATE {keyspace}.catalog_counts SET stamp = ?, movies = ?, people = ?, genre_movies = ?, years = ? \
                 WHERE generation = ? IF stamp = ?",
            )
            .await?,
            current: cluster
                .prepare(Kind::Read, "SELECT generation FROM {keyspace}.catalog_state WHERE name = 'current'")
                .await?,
            movie_put: write(
                "INSERT INTO {keyspace}.movies_by_id (generation, movie, body) VALUES (?, ?, ?) USING TIMESTAMP ?",
            )
            .await?,
            movie_delete: write(
                "DELETE FROM {keyspace}.movies_by_id USING TIMESTAMP ? WHERE generation = ? AND movie = ?",
            )
            .await?,
            credits_put: write(
                "INSERT INTO {keyspace}.credits_by_movie (generation, movie, body) VALUES (?, ?, ?) USING TIMESTAMP ?",
            )
            .await?,
            credits_delete: write(
                "DELETE FROM {keyspace}.credits_by_movie USING TIMESTAMP ? WHERE generation = ? AND movie = ?",
            )
            .await?,
            person_put: write(
                "INSERT INTO {keyspace}.people_by_id (generation, person, body) VALUES (?, ?, ?) USING TIMESTAMP ?",
            )
            .await?,
            person_delete: write(
                "DELETE FROM {keyspace}.people_by_id USING TIMESTAMP ? WHERE generation = ? AND person = ?",
            )
            .await?,
            film_put: write(
                "INSERT INTO {keyspace}.credits_by_person (generation, person, pos, body) VALUES (?, ?, ?, ?) \
                 USING TIMESTAMP ?",
            )
            .await?,
            film_delete: write(
                "DELETE FROM {keyspace}.credits_by_person USING TIMESTAMP ? \
                 WHERE generation = ? AND person = ? AND pos = ?",
            )
            .await?,
            browse_put: write(
                "INSERT INTO {keyspace}.movies_by_genre_year (generation, sort_order, genre, year, pos) \
                 VALUES (?, ?, ?, ?, ?) USING TIMESTAMP ?",
            )
            .await?,
            browse_delete: write(
                "DELETE FROM {keyspace}.movies_by_genre_year USING TIMESTAMP ? \
                 WHERE generation = ? AND sort_order = ? AND genre = ? AND year = ? AND pos = ?",
            )
            .await?,
            browse_last: cluster
                .prepare(
                    Kind::Read,
                    "SELECT pos FROM {keyspace}.movies_by_genre_year \
                     WHERE generation = ? AND sort_order = ? AND genre = ? AND year = ? ORDER BY pos DESC LIMIT 1",
                )
                .await?,
            search_put: write(
                "INSERT INTO {keyspace}.title_search (generation, prefix, bucket, pos, words) VALUES (?, ?, ?, ?, ?) \
                 USING TIMESTAMP ?",
            )
            .await?,
            search_delete: write(
                "DELETE FROM {keyspace}.title_search USING TIMESTAMP ? \
                 WHERE generation = ? AND prefix = ? AND bucket = ? AND pos = ?",
            )
            .await?,
            pending_put: write(
                "INSERT INTO {keyspace}.catalog_pending (generation, stamp, entity, body) VALUES (?, ?, ?, ?)",
            )
            .await?,
            pending_read: cluster
                .prepare(
                    Kind::Read,
                    "SELECT stamp, entity, body FROM {keyspace}.catalog_pending WHERE generation = ?",
                )
                .await?,
            pending_first: cluster
                .prepare(Kind::Read, "SELECT stamp FROM {keyspace}.catalog_pending WHERE generation = ? LIMIT 1")
                .await?,
            pending_delete: write("DELETE FROM {keyspace}.catalog_pending WHERE generation = ? AND stamp = ?")
                .await?,
            audit_put: write("INSERT INTO {keyspace}.catalog_audit (month, pos, body) VALUES (?, ?, ?)").await?,
            log_put: write("INSERT INTO {keyspace}.catalog_log (slot, stamp, applied) VALUES (?, ?, ?)").await?,
            audit_month: write("INSERT INTO {keyspace}.catalog_audit_months (log, month) VALUES ('catalog', ?)")
                .await?,
            audit_months: cluster
                .prepare(Kind::Read, "SELECT month FROM {keyspace}.catalog_audit_months WHERE log = 'catalog'")
                .await?,
            audit_read: cluster
                .prepare(
                    Kind::Read,
                    "SELECT pos, body FROM {keyspace}.catalog_audit WHERE month = ? AND pos > ? LIMIT ?",
                )
                .await?,
        })
    }
}

/// A generation's counts as live changes leave them (`catalog_counts`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Counts {
    /// The last apply's stamp (0: no apply yet, the load's counts).
    pub(crate) stamp: i64,
    pub(crate) movies: u64,
    pub(crate) people: u64,
    pub(crate) genre_movies: Vec<u64>,
    pub(crate) years: Vec<u16>,
}

impl Counts {
    fn of(generation: &Generation) -> Counts {
        Counts {
            stamp: 0,
            movies: generation.stats.movies,
            people: generation.stats.people,
            genre_movies: generation.genre_movies.clone(),
            years: generation.years.clone(),
        }
    }

    /// These counts moved by `movement`.
    fn moved(&self, movement: &Movement, stamp: i64) -> Counts {
        let mut genre_movies = self.genre_movies.clone();
        for &(genre, delta) in &movement.genres {
            let slot = usize::from(genre);
            if genre_movies.len() <= slot {
                genre_movies.resize(slot + 1, 0);
            }
            genre_movies[slot] = genre_movies[slot].saturating_add_signed(delta);
        }
        // A year keeps its partitions listed once it had movies: an empty one reads nothing.
        let years: BTreeSet<u16> = self.years.iter().chain(&movement.years).copied().collect();
        Counts {
            stamp,
            movies: self.movies.saturating_add_signed(movement.movies),
            people: self.people.saturating_add_signed(movement.people),
            genre_movies,
            years: years.into_iter().collect(),
        }
    }

    /// The served generation with these counts.
    pub(crate) fn apply_to(&self, generation: &Generation) -> Generation {
        Generation {
            stats: CatalogStats { movies: self.movies, people: self.people },
            genre_movies: self.genre_movies.clone(),
            years: self.years.clone(),
            counts_stamp: self.stamp,
            ..generation.clone()
        }
    }

    /// Rows of the order (sort, genre or [`ANY_GENRE`]).
    fn order_rows(&self, genre: u8) -> u64 {
        if genre == ANY_GENRE {
            self.movies
        } else {
            self.genre_movies.get(usize::from(genre)).copied().unwrap_or(0)
        }
    }
}

/// How an apply moves the counts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Movement {
    movies: i64,
    people: i64,
    genres: Vec<(u8, i64)>,
    /// Years that have movies after the apply.
    years: Vec<u16>,
}

impl Movement {
    fn of(planned: &Planned) -> Movement {
        let mut genres: BTreeMap<u8, i64> = BTreeMap::new();
        let mut movement = Movement { people: planned.people_added(), ..Movement::default() };
        for change in &planned.movies {
            movement.movies += i64::from(change.diff.exists) - i64::from(change.diff.existed);
            for &(genre, delta) in &change.diff.genre_counts {
                *genres.entry(genre).or_default() += delta;
            }
            movement.years.extend(change.new.as_ref().map(|r| r.movie.year.unwrap_or(0)));
        }
        movement.genres = genres.into_iter().filter(|&(_, d)| d != 0).collect();
        movement
    }
}

/// An apply's own pending row.
#[derive(Serialize, Deserialize)]
struct PendingApply {
    /// The counts' stamp the apply was planned on: it is written again only over those.
    base: i64,
    movement: Movement,
    audit: AuditRecord,
    applied: Applied,
}

/// A changed entity's pending row.
#[derive(Serialize, Deserialize)]
enum PendingEntity {
    Movie { id: MovieId, old: Option<Box<MovieRecord>>, new: Option<Box<MovieRecord>> },
    Person { id: PersonId, existed: bool, new: Option<Person> },
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

fn big(v: u64) -> CqlValue {
    CqlValue::BigInt(v as i64)
}

fn int(v: impl Into<i32>) -> CqlValue {
    CqlValue::Int(v.into())
}

fn busy(what: &str) -> StoreError {
    StoreError::unavailable(ScyllaError::Driver(what.to_owned()))
}

/// The `[applied]` column of a conditional statement's result.
fn was_applied(result: scylla::response::query_result::QueryResult) -> Result<bool, StoreError> {
    let rows = result.into_rows_result().map_err(driver_error)?;
    let row = rows.maybe_first_row::<Row>().map_err(decode_error)?;
    Ok(matches!(row.and_then(|r| r.columns.into_iter().next().flatten()), Some(CqlValue::Boolean(true))))
}

/// One gateway's catalog writer.
pub(crate) struct Writer<'a> {
    pub(crate) cluster: &'a Cluster,
    pub(crate) statements: &'a WriteStatements,
    pub(crate) catalog: &'a CatalogStatements,
    /// The generation served (and written).
    pub(crate) generation: Arc<Generation>,
    /// This store's name in the lock.
    pub(crate) me: &'a str,
    /// One apply (or finishing) at a time in this store.
    pub(crate) writing: &'a tokio::sync::Mutex<()>,
}

/// One taking of the lock: its holder token (this store's name and a number of its own, so
/// two applies of one gateway never pass for each other) and when it was last renewed.
struct Held {
    token: String,
    renewed: Instant,
}

/// Numbers each taking of the lock in this process.
static TAKINGS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Writer<'_> {
    async fn execute(
        &self,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<scylla::response::query_result::QueryResult, StoreError> {
        self.cluster.unpaged(statement, values).await
    }

    /// One write, its result dropped.
    async fn write(&self, statement: &PreparedStatement, values: Vec<CqlValue>) -> Result<(), StoreError> {
        self.execute(statement, values).await.map(drop)
    }

    /// Takes the lock, waiting up to [`LOCK_WAIT`] for another writer to finish.
    async fn lock(&self) -> Result<Held, StoreError> {
        let started = Instant::now();
        loop {
            match self.try_lock().await {
                Ok(Some(held)) => return Ok(held),
                Ok(None) if started.elapsed() > LOCK_WAIT => {
                    return Err(busy("another gateway is applying catalog changes; try again shortly"));
                }
                Ok(None) => {}
                // A Paxos round that timed out (contention, a slow replica) is tried again
                // within the wait.
                Err(error) if started.elapsed() <= LOCK_WAIT => {
                    tracing::debug!(%error, "taking the catalog writer's lock failed; retrying");
                }
                Err(error) => return Err(error),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Takes the lock if nobody holds it.
    async fn try_lock(&self) -> Result<Option<Held>, StoreError> {
        let ttl = LOCK_TTL.as_secs() as i32;
        let n = TAKINGS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let held = Held { token: format!("{}-{n}", self.me), renewed: Instant::now() };
        let taken = match self.execute(&self.statements.lock_take, (held.token.as_str(), ttl)).await {
            Ok(taken) => was_applied(taken)?,
            // A timed-out take may still have been applied: it is ours if it renews as ours,
            // and otherwise lapses by itself.
            Err(error) => return if self.renew(&held).await.is_ok() { Ok(Some(held)) } else { Err(error) },
        };
        // Not applied: held by someone (by this taking, when a retried request took it).
        let ours = taken || self.renew(&held).await.is_ok();
        Ok(ours.then_some(held))
    }

    /// Renews the lock if `held` holds it.
    async fn renew(&self, held: &Held) -> Result<(), StoreError> {
        let ttl = LOCK_TTL.as_secs() as i32;
        let token = held.token.as_str();
        let renewed = self.execute(&self.statements.lock_renew, (ttl, token, token)).await?;
        if was_applied(renewed)? { Ok(()) } else { Err(busy("the catalog writer's lock was lost")) }
    }

    /// Renews the lock when a third of its time has passed.
    async fn keep(&self, held: &mut Held) -> Result<(), StoreError> {
        if held.renewed.elapsed() > LOCK_TTL / 3 {
            self.renew(held).await?;
            held.renewed = Instant::now();
        }
        Ok(())
    }

    async fn unlock(&self, held: &Held) {
        if let Err(error) = self.execute(&self.statements.lock_release, (held.token.as_str(),)).await {
            tracing::warn!(%error, "releasing the catalog writer's lock failed; it lapses by itself");
        }
    }

    /// The counts as the last apply left them, read at SERIAL.
    async fn counts(&self) -> Result<Counts, StoreError> {
        let result = self.execute(&self.statements.counts_read, (self.generation.id,)).await?;
        type CountsRow = (Option<i64>, Option<i64>, Option<i64>, Option<Vec<i64>>, Option<Vec<i32>>);
        let row = result
            .into_rows_result()
            .map_err(driver_error)?
            .maybe_first_row::<CountsRow>()
            .map_err(decode_error)?;
        Ok(match row {
            None => Counts::of(&self.generation),
            Some((stamp, movies, people, genres, years)) => Counts {
                stamp: stamp.unwrap_or(0),
                movies: movies.unwrap_or(0) as u64,
                people: people.unwrap_or(0) as u64,
                genre_movies: genres.unwrap_or_default().into_iter().map(|n| n as u64).collect(),
                years: years.unwrap_or_default().into_iter().map(|y| y as u16).collect(),
            },
        })
    }

    /// Moves the counts from `before` to `after`; false when they were moved already (the
    /// apply is being finished again).
    async fn commit_counts(&self, before: &Counts, after: &Counts) -> Result<(), StoreError> {
        let genres: Vec<i64> = after.genre_movies.iter().map(|&n| n as i64).collect();
        let years: Vec<i32> = after.years.iter().map(|&y| i32::from(y)).collect();
        let (movies, people) = (after.movies as i64, after.people as i64);
        let result = if before.stamp == 0 {
            let values = (self.generation.id, after.stamp, movies, people, genres, years);
            self.execute(&self.statements.counts_insert, values).await?
        } else {
            let values = (after.stamp, movies, people, genres, years, self.generation.id, before.stamp);
            self.execute(&self.statements.counts_update, values).await?
        };
        if was_applied(result)? || self.counts().await?.stamp >= after.stamp {
            Ok(())
        } else {
            Err(busy("the catalog's counts moved under this writer; its apply is finished by the next one"))
        }
    }

    /// Refuses to write into a generation a newer load replaced.
    async fn check_current(&self) -> Result<(), StoreError> {
        let result = self.execute(&self.statements.current, ()).await?;
        let current = result
            .into_rows_result()
            .map_err(driver_error)?
            .maybe_first_row::<(i64,)>()
            .map_err(decode_error)?;
        if current.map(|(id,)| id) == Some(self.generation.id) {
            Ok(())
        } else {
            Err(busy(
                "a newer catalog generation was published; this gateway switches to it within store.catalog_poll_ms",
            ))
        }
    }

    /// Applies `changes` (see the module docs). Also returns what an interrupted earlier apply
    /// changed, finished first.
    pub(crate) async fn apply(
        &self,
        changes: &CatalogChanges,
        edit: &Edit,
    ) -> (Option<Applied>, Result<(Applied, Counts), StoreError>) {
        if let Err(error) = changes.check() {
            return (None, Err(error));
        }
        let _one = self.writing.lock().await;
        let mut held = match self.lock().await {
            Ok(held) => held,
            Err(error) => return (None, Err(error)),
        };
        let finished = self.finish_pending(&mut held).await;
        let (leftover, result) = match finished {
            Ok(leftover) => (leftover, self.apply_locked(changes, edit, &mut held).await),
            Err(error) => (None, Err(error)),
        };
        self.unlock(&held).await;
        (leftover, result)
    }

    async fn apply_locked(
        &self,
        changes: &CatalogChanges,
        edit: &Edit,
        held: &mut Held,
    ) -> Result<(Applied, Counts), StoreError> {
        self.check_current().await?;
        let before = self.counts().await?;
        let catalog =
            Catalog { cluster: self.cluster, statements: self.catalog, generation: self.generation.clone() };
        let mut movie_ids: Vec<MovieId> = changes.movies.iter().map(|r| r.movie.id).collect();
        movie_ids.extend(&changes.removed_movies);
        let mut person_ids: Vec<PersonId> = changes.people.iter().map(|p| p.id).collect();
        person_ids.extend(&changes.removed_people);
        for base in &changes.based_on {
            match base {
                marquee_store::writes::Base::Movie(id, _) => movie_ids.push(*id),
                marquee_store::writes::Base::Person(id, _) => person_ids.push(*id),
            }
        }
        let (movies, credits, people) = futures::try_join!(
            catalog.movies(&movie_ids),
            catalog.credits(&movie_ids),
            catalog.people(&person_ids)
        )?;
        let records: HashMap<MovieId, Option<MovieRecord>> = movie_ids
            .iter()
            .zip(movies.into_iter().zip(credits))
            .map(|(id, (movie, credits))| (*id, movie.map(|movie| MovieRecord { movie, credits })))
            .collect();
        let people: HashMap<PersonId, Option<Person>> = person_ids.iter().copied().zip(people).collect();
        let planned = Planned::new(
            changes,
            |id| Ok(records.get(&id).cloned().flatten()),
            |id| Ok(people.get(&id).cloned().flatten()),
        )?;
        if !planned.applied.changed_anything() {
            return Ok((planned.applied, before));
        }
        let stamp = now_micros().max(before.stamp + 1);
        let movement = Movement::of(&planned);
        let audit = planned.applied.audit(edit, (stamp / 1000) as u64);
        let apply = PendingApply { base: before.stamp, movement, audit, applied: planned.applied.clone() };
        let entities = planned
            .movies
            .iter()
            .map(|c| PendingEntity::Movie {
                id: c.id,
                old: c.old.clone().map(Box::new),
                new: c.new.clone().map(Box::new),
            })
            .chain(planned.people.iter().map(|p| PendingEntity::Person {
                id: p.id,
                existed: p.existed,
                new: p.new.clone(),
            }))
            .collect::<Vec<_>>();
        self.write_pending(stamp, &apply, &entities).await?;
        self.keep(held).await?;
        let after = self.write_apply(stamp, &before, &apply, &planned, held).await?;
        Ok((apply.applied, after))
    }

    /// Writes an apply's plan: its entities, then its own row, which makes the plan whole (a
    /// plan without it is dropped unwritten by whoever finishes it).
    async fn write_pending(
        &self,
        stamp: i64,
        apply: &PendingApply,
        entities: &[PendingEntity],
    ) -> Result<(), StoreError> {
        let statement = &self.statements.pending_put;
        let row = |entity: String, body: Vec<u8>| {
            vec![
                CqlValue::BigInt(self.generation.id),
                CqlValue::BigInt(stamp),
                CqlValue::Text(entity),
                CqlValue::Blob(body),
            ]
        };
        let mut writes = Vec::with_capacity(entities.len());
        for entity in entities {
            let key = match entity {
                PendingEntity::Movie { id, .. } => id.to_string(),
                PendingEntity::Person { id, .. } => id.to_string(),
            };
            writes.push(self.write(statement, row(key, encode_body(entity)?)));
        }
        stream::iter(writes).buffer_unordered(WRITES_IN_FLIGHT).try_collect::<()>().await?;
        self.write(statement, row(APPLY_ROW.to_owned(), encode_body(apply)?)).await
    }

    /// Writes an apply's rows, counts and audit record, and drops its plan.
    async fn write_apply(
        &self,
        stamp: i64,
        before: &Counts,
        apply: &PendingApply,
        planned: &Planned,
        held: &mut Held,
    ) -> Result<Counts, StoreError> {
        let after = before.moved(&apply.movement, stamp);
        self.write_rows(stamp, planned, before, &after, held).await?;
        self.keep(held).await?;
        self.commit_counts(before, &after).await?;
        self.close_plan(stamp, apply).await?;
        Ok(after)
    }

    /// Lists an apply in the change log, writes its audit record and drops its plan: its last
    /// step, after every row (and the counts) it wrote, so a region that reads the log entry
    /// reads what it changed.
    async fn close_plan(&self, stamp: i64, apply: &PendingApply) -> Result<(), StoreError> {
        let second = now_micros() / 1_000_000;
        self.execute(&self.statements.log_put, (second, stamp, encode_body(&apply.applied)?)).await?;
        let audit = &apply.audit;
        let month = month_of(stamp);
        self.execute(&self.statements.audit_month, (month,)).await?;
        self.execute(&self.statements.audit_put, (month, i64::MAX - stamp, encode_body(audit)?)).await?;
        self.execute(&self.statements.pending_delete, (self.generation.id, stamp)).await?;
        Ok(())
    }

    /// Every record and derived row of `planned`, at `stamp`.
    async fn write_rows(
        &self,
        stamp: i64,
        planned: &Planned,
        before: &Counts,
        after: &Counts,
        held: &mut Held,
    ) -> Result<(), StoreError> {
        let mut writes: Vec<(&PreparedStatement, Vec<CqlValue>)> = Vec::new();
        let generation = CqlValue::BigInt(self.generation.id);
        let at = CqlValue::BigInt(stamp);
        for change in &planned.movies {
            self.movie_writes(change, &generation, &at, &mut writes)?;
        }
        for change in &planned.people {
            person_writes(self.statements, change, &generation, &at, &mut writes)?;
        }
        self.top_writes(planned, before, after, &generation, &at, &mut writes).await?;
        // In chunks, renewing the lock between them: a large apply outlasts it.
        let mut writes = writes.into_iter().peekable();
        while writes.peek().is_some() {
            // Collected first: a lazy map over borrowed statements is not Send for every lifetime.
            let chunk: Vec<_> = writes
                .by_ref()
                .take(WRITES_PER_RENEWAL)
                .map(|(statement, values)| self.write(statement, values))
                .collect();
            stream::iter(chunk).buffer_unordered(WRITES_IN_FLIGHT).try_collect::<()>().await?;
            self.keep(held).await?;
        }
        Ok(())
    }

    fn movie_writes<'s>(
        &'s self,
        change: &MovieChange,
        generation: &CqlValue,
        at: &CqlValue,
        writes: &mut Vec<(&'s PreparedStatement, Vec<CqlValue>)>,
    ) -> Result<(), StoreError> {
        let s = self.statements;
        let id = big(change.id.0);
        match &change.new {
            Some(record) => {
                let movie = CqlValue::Blob(encode_body(&record.movie)?);
                let credits = CqlValue::Blob(encode_body(&record.credits)?);
                writes.push((&s.movie_put, vec![generation.clone(), id.clone(), movie, at.clone()]));
                writes.push((&s.credits_put, vec![generation.clone(), id.clone(), credits, at.clone()]));
            }
            None => {
                writes.push((&s.movie_delete, vec![at.clone(), generation.clone(), id.clone()]));
                writes.push((&s.credits_delete, vec![at.clone(), generation.clone(), id.clone()]));
            }
        }
        let diff = &change.diff;
        for &(person, key, ordinal) in &diff.film_remove {
            let pos = CqlValue::Blob(encode(Position { key, id: ordinal }));
            writes.push((&s.film_delete, vec![at.clone(), generation.clone(), big(person), pos]));
        }
        for ((person, key, ordinal), entry) in &diff.film_put {
            let pos = CqlValue::Blob(encode(Position { key: *key, id: *ordinal }));
            let body = CqlValue::Blob(encode_body(entry)?);
            writes.push((&s.film_put, vec![generation.clone(), big(*person), pos, body, at.clone()]));
        }
        for (key, put) in
            diff.browse_remove.iter().map(|k| (k, false)).chain(diff.browse_put.iter().map(|k| (k, true)))
        {
            for (sort, genre, year, pos) in browse_partitions(key) {
                let pos = CqlValue::Blob(encode(pos));
                if put {
                    writes.push((
                        &s.browse_put,
                        vec![generation.clone(), int(sort), int(genre), int(year), pos, at.clone()],
                    ));
                } else {
                    writes.push((
                        &s.browse_delete,
                        vec![at.clone(), generation.clone(), int(sort), int(genre), int(year), pos],
                    ));
                }
            }
        }
        for (prefix, bucket, key, id) in &diff.search_remove {
            let pos = CqlValue::Blob(encode(Position { key: *key, id: *id }));
            writes.push((
                &s.search_delete,
                vec![at.clone(), generation.clone(), CqlValue::Text(prefix.clone()), int(*bucket), pos],
            ));
        }
        for ((prefix, bucket, key, id), words) in &diff.search_put {
            let pos = CqlValue::Blob(encode(Position { key: *key, id: *id }));
            writes.push((
                &s.search_put,
                vec![
                    generation.clone(),
                    CqlValue::Text(prefix.clone()),
                    int(*bucket),
                    pos,
                    CqlValue::Text(words.clone()),
                    at.clone(),
                ],
            ));
        }
        Ok(())
    }

    /// The top partitions' writes (see the module docs).
    async fn top_writes<'s>(
        &'s self,
        planned: &Planned,
        before: &Counts,
        after: &Counts,
        generation: &CqlValue,
        at: &CqlValue,
        writes: &mut Vec<(&'s PreparedStatement, Vec<CqlValue>)>,
    ) -> Result<(), StoreError> {
        if !self.generation.top_partitions {
            return Ok(());
        }
        let s = self.statements;
        let top = |sort: u8, genre: u8, pos: Position| {
            vec![
                generation.clone(),
                int(sort),
                int(genre),
                CqlValue::Int(TOP_YEAR),
                CqlValue::Blob(encode(pos)),
            ]
        };
        let top_rows = BROWSE_TOP_ROWS as u64;
        let mut last: HashMap<(u8, u8), Option<Position>> = HashMap::new();
        let mut rebuilt: BTreeSet<(u8, u8)> = BTreeSet::new();
        let mut puts: BTreeSet<(u8, u8, Position)> = BTreeSet::new();
        let mut removes: BTreeSet<(u8, u8, Position)> = BTreeSet::new();
        for change in &planned.movies {
            for &(sort, genre, _, key, id) in &change.diff.browse_remove {
                removes.insert((sort, genre, Position { key, id }));
                // An order that shrinks to fit its top partition.
                if after.order_rows(genre) <= top_rows && before.order_rows(genre) > top_rows {
                    rebuilt.insert((sort, genre));
                }
            }
            for &(sort, genre, _, key, id) in &change.diff.browse_put {
                let pos = Position { key, id };
                // The whole order fits its top partition (before, or after: it holds it all).
                if after.order_rows(genre) <= top_rows || before.order_rows(genre) <= top_rows {
                    if before.order_rows(genre) > top_rows {
                        rebuilt.insert((sort, genre));
                    }
                    puts.insert((sort, genre, pos));
                    continue;
                }
                let last = match last.get(&(sort, genre)) {
                    Some(last) => *last,
                    None => {
                        let found = self.top_last(sort, genre).await?;
                        last.insert((sort, genre), found);
                        found
                    }
                };
                if last.is_some_and(|last| pos < last) {
                    puts.insert((sort, genre, pos));
                }
            }
        }
        for (sort, genre) in rebuilt {
            for pos in self.order_rows(sort, genre, after).await? {
                if !removes.contains(&(sort, genre, pos)) {
                    puts.insert((sort, genre, pos));
                }
            }
        }
        // A row both removed and put (a year corrected: the order's key is the same) is put
        // only: at one timestamp a delete would win.
        for &(sort, genre, pos) in removes.difference(&puts) {
            writes.push((&s.browse_delete, [vec![at.clone()], top(sort, genre, pos)].concat()));
        }
        for &(sort, genre, pos) in &puts {
            writes.push((&s.browse_put, [top(sort, genre, pos), vec![at.clone()]].concat()));
        }
        Ok(())
    }

    /// The last row of a top partition.
    async fn top_last(&self, sort: u8, genre: u8) -> Result<Option<Position>, StoreError> {
        let values = (self.generation.id, i32::from(sort), i32::from(genre), TOP_YEAR);
        let result = self.execute(&self.statements.browse_last, values).await?;
        let row = result
            .into_rows_result()
            .map_err(driver_error)?
            .maybe_first_row::<(Vec<u8>,)>()
            .map_err(decode_error)?;
        row.map(|(pos,)| decode(&pos)).transpose()
    }

    /// Every row of an order, from its year partitions (undated movies included): for an
    /// order that fits its top partition.
    async fn order_rows(&self, sort: u8, genre: u8, counts: &Counts) -> Result<Vec<Position>, StoreError> {
        let generation = Generation { top_partitions: false, ..counts.apply_to(&self.generation) };
        let catalog =
            Catalog { cluster: self.cluster, statements: self.catalog, generation: Arc::new(generation) };
        let mut query = BrowseQuery {
            sort: MovieSort::ALL
                .into_iter()
                .find(|s| s.code() == sort)
                .ok_or_else(|| busy("unknown browse order"))?,
            genre: (genre != ANY_GENRE).then(|| Genre::from_code(genre)).flatten(),
            year_from: None,
            year_to: None,
            first: marquee_store::MAX_PAGE,
            after: None,
        };
        let mut rows = Vec::new();
        loop {
            let page = catalog.browse(&query).await?;
            rows.extend(page.items.iter().map(|(pos, _)| *pos));
            if !page.has_next || rows.len() > BROWSE_TOP_ROWS {
                return Ok(rows);
            }
            query.after = page.items.last().map(|(pos, _)| *pos);
        }
    }

    /// Finishes the applies an interrupted writer left (the lock held). What they changed,
    /// merged; `None` when there were none.
    async fn finish_pending(&self, held: &mut Held) -> Result<Option<Applied>, StoreError> {
        let result = self.execute(&self.statements.pending_read, (self.generation.id,)).await?;
        let rows = result.into_rows_result().map_err(driver_error)?;
        let mut applies: BTreeMap<i64, (Option<PendingApply>, Vec<PendingEntity>)> = BTreeMap::new();
        for row in rows.rows::<(i64, String, Vec<u8>)>().map_err(decode_error)? {
            let (stamp, entity, body) = row.map_err(decode_error)?;
            let slot = applies.entry(stamp).or_default();
            if entity == APPLY_ROW {
                slot.0 = Some(decode_body("pending catalog apply", &body)?);
            } else {
                slot.1.push(decode_body("pending catalog change", &body)?);
            }
        }
        let mut changed: Option<Applied> = None;
        for (stamp, (apply, entities)) in applies {
            let Some(apply) = apply else {
                // The writer stopped before its plan was whole: nothing of it was written.
                self.execute(&self.statements.pending_delete, (self.generation.id, stamp)).await?;
                continue;
            };
            let planned = replanned(entities);
            let counts = self.counts().await?;
            if counts.stamp < stamp && counts.stamp != apply.base {
                // Planned on counts another apply has moved since: writing it again would undo
                // newer changes (a plan this data center missed when that apply ran).
                tracing::error!(
                    stamp,
                    base = apply.base,
                    counts = counts.stamp,
                    "dropping a half-written catalog change planned on an older catalog; apply its changes again"
                );
                self.execute(&self.statements.pending_delete, (self.generation.id, stamp)).await?;
                continue;
            }
            if counts.stamp >= stamp {
                // Its counts moved: only the audit record and the plan's removal may be missing.
                self.close_plan(stamp, &apply).await?;
            } else {
                self.write_apply(stamp, &counts, &apply, &planned, held).await?;
            }
            tracing::warn!(stamp, "finished a catalog change that a stopped writer left half-written");
            match changed.as_mut() {
                Some(changed) => changed.merge(apply.applied),
                None => changed = Some(apply.applied),
            }
        }
        Ok(changed)
    }

    /// The stamp of the oldest plan waiting (one read of the plans' partition).
    async fn oldest_pending(&self) -> Result<Option<i64>, StoreError> {
        let result = self.execute(&self.statements.pending_first, (self.generation.id,)).await?;
        let rows = result.into_rows_result().map_err(driver_error)?;
        Ok(rows.maybe_first_row::<(i64,)>().map_err(decode_error)?.map(|(stamp,)| stamp))
    }

    /// Finishes what a stopped writer left: a plan older than twice the lock's time (a live
    /// writer renews its lock and finishes sooner), once nobody holds the lock. `None` when
    /// nothing was left.
    pub(crate) async fn finish_abandoned(&self) -> Result<Option<(Applied, Counts)>, StoreError> {
        let Some(oldest) = self.oldest_pending().await? else { return Ok(None) };
        let age = Duration::from_micros(now_micros().saturating_sub(oldest).max(0) as u64);
        if age < 2 * LOCK_TTL {
            return Ok(None);
        }
        let Ok(_one) = self.writing.try_lock() else { return Ok(None) };
        // Held: a writer is at work (or its lock has not lapsed yet).
        let Some(mut held) = self.try_lock().await? else { return Ok(None) };
        let finished = self.finish_pending(&mut held).await;
        let counts = self.counts().await;
        self.unlock(&held).await;
        match finished? {
            Some(applied) => Ok(Some((applied, counts?))),
            None => Ok(None),
        }
    }

    /// A page of the audit log, newest first.
    pub(crate) async fn audit_page(&self, page: UserPage) -> Result<Page<AuditRecord>, StoreError> {
        plan::check_user_page(page)?;
        let result = self.execute(&self.statements.audit_months, ()).await?;
        let rows = result.into_rows_result().map_err(driver_error)?;
        let mut months: Vec<i32> = rows
            .rows::<(i32,)>()
            .map_err(decode_error)?
            .map(|r| r.map(|(m,)| m))
            .collect::<Result<_, _>>()
            .map_err(decode_error)?;
        months.sort_unstable_by(|a, b| b.cmp(a));
        let after = page.after.map_or(-1, |p| i64::try_from(p.key).unwrap_or(i64::MAX));
        let start = page.after.map(|_| month_of(i64::MAX - after));
        let mut items = Vec::with_capacity(page.first);
        for month in months.into_iter().filter(|m| start.is_none_or(|s| *m <= s)) {
            let limit = (page.first + 1 - items.len()) as i32;
            let result = self.execute(&self.statements.audit_read, (month, after, limit)).await?;
            let rows = result.into_rows_result().map_err(driver_error)?;
            for row in rows.rows::<(i64, Vec<u8>)>().map_err(decode_error)? {
                let (pos, body) = row.map_err(decode_error)?;
                if items.len() == page.first {
                    return Ok(Page { items, has_next: true });
                }
                items.push((Position { key: pos as u64, id: 0 }, decode_body("audit record", &body)?));
            }
        }
        Ok(Page { items, has_next: false })
    }
}

/// The writes of one person's change.
fn person_writes<'s>(
    s: &'s WriteStatements,
    change: &PersonChange,
    generation: &CqlValue,
    at: &CqlValue,
    writes: &mut Vec<(&'s PreparedStatement, Vec<CqlValue>)>,
) -> Result<(), StoreError> {
    let id = big(change.id.0);
    match &change.new {
        Some(person) => {
            let body = CqlValue::Blob(encode_body(person)?);
            writes.push((&s.person_put, vec![generation.clone(), id, body, at.clone()]));
        }
        None => writes.push((&s.person_delete, vec![at.clone(), generation.clone(), id])),
    }
    Ok(())
}

/// The partitions a browse row is written to (with the mirrored popularity one of a genre).
fn browse_partitions(&(sort, genre, year, key, id): &BrowseKey) -> Vec<(u8, u8, u16, Position)> {
    let mut rows = vec![(sort, genre, year, Position { key, id })];
    if sort == MovieSort::Popularity.code() && genre != ANY_GENRE {
        rows.push((POPULARITY_MIRRORED, genre, year, Position { key: u64::MAX - key, id: u64::MAX - id }));
    }
    rows
}

/// The plan of a pending apply, from its entities' records.
fn replanned(entities: Vec<PendingEntity>) -> Planned {
    let mut planned = Planned::default();
    for entity in entities {
        match entity {
            PendingEntity::Movie { id, old, new } => {
                let (old, new) = (old.map(|r| *r), new.map(|r| *r));
                if let Some(diff) = marquee_store::writes::MovieDiff::new(old.as_ref(), new.as_ref()) {
                    planned.movies.push(MovieChange { id, old, new, diff });
                }
            }
            PendingEntity::Person { id, existed, new } => {
                planned.people.push(PersonChange { id, existed, new })
            }
        }
    }
    planned
}

/// The audit partition (yyyymm, UTC) of a stamp in microseconds.
fn month_of(micros: i64) -> i32 {
    let days = micros.div_euclid(86_400_000_000);
    // Civil-from-days (Howard Hinnant's algorithm), for the year and month only.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year * 100 + month) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_utc_calendar_months() {
        assert_eq!(month_of(0), 197_001);
        // 2026-12-07T06:54:52Z
        assert_eq!(month_of(1_796_626_492_000_000), 202_612);
        // 2024-02-29T23:59:59Z and the second after.
        assert_eq!(month_of(1_709_251_199_000_000), 202_402);
        assert_eq!(month_of(1_709_251_200_000_000), 202_403);
    }

    #[test]
    fn counts_move_by_an_apply_and_keep_years() {
        let counts =
            Counts { stamp: 5, movies: 10, people: 4, genre_movies: vec![3, 2], years: vec![1999, 2001] };
        let movement = Movement { movies: -1, people: 2, genres: vec![(0, -1), (4, 1)], years: vec![2000] };
        let after = counts.moved(&movement, 9);
        assert_eq!(
            after,
            Counts {
                stamp: 9,
                movies: 9,
                people: 6,
                genre_movies: vec![2, 2, 0, 0, 1],
                years: vec![1999, 2000, 2001]
            }
        );
    }
}
