//! Catalog loads into ScyllaDB.
//!
//! A load writes every row of the new catalog under a new generation number, streaming:
//! each write waits only for one of `[store] load_concurrency` permits, never for the writes
//! before it, and a timeout, an overloaded node or a broken connection is retried with
//! backoff (every write is an idempotent upsert). Rows of one partition that arrive together
//! go as one unlogged batch (never a batch across partitions); people's filmography rows,
//! which arrive scattered over the stream, are grouped by person on disk and sent last
//! (`spill.rs`). Only when every write is acknowledged does `finish` publish the
//! generation (its row, then `catalog_state.current`); gateways resolve the current generation
//! at start and again every `catalog_poll_ms`, so a failed or partial load is never served. Every write of a load, and the
//! publication, is at `[store] load_consistency` (EACH_QUORUM): acknowledged by a quorum of
//! every data center, so when another region reads `current` at LOCAL_QUORUM the rows are
//! there too; and a gateway checks the generation's state before serving it (see
//! [`current_generation`]). Every write is an upsert of
//! given keys, so a rerun of the same load (same source) reuses the unfinished generation and
//! completes it, skipping what it had written whole (`catalog_loads`), as long as no other
//! load was published since; a different source starts a new one. Old generations are
//! removed by `gateway catalog gc` (see `gc`).

use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{SystemTime, UNIX_EPOCH};

use marquee_store::bulk::{BulkLoad, CatalogSink, ExportStats, Progress, TableWritten};
use marquee_store::plan;
use marquee_store::{CatalogStats, GENRES, MovieRecord, MovieSort, Person, Position, StoreError};
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlValue;
use serde::Serialize;
use tokio::runtime::Handle;

use crate::catalog::{Generation, POPULARITY_MIRRORED, TOP_YEAR};
use crate::options::ScyllaOptions;
use crate::ranged::encode;
use crate::schema;
use crate::session::{Cluster, Kind, decode_error, driver_error, execution_error};
use crate::spill::Spill;

/// `catalog_generations.format` of what this build writes: the `body` encoding of format 1,
/// plus the top partitions of every browse order (see [`plan::BROWSE_TOP_ROWS`]).
pub(crate) const FORMAT: i32 = 2;

/// The formats this build serves: 1 (generations loaded before the top partitions, browsed
/// without them) and [`FORMAT`]. Any other is refused when opened.
const READABLE_FORMATS: std::ops::RangeInclusive<i32> = 1..=FORMAT;

/// Rows of one partition per unlogged batch.
const BATCH_ROWS: usize = 64;

/// Attempts per write: a timeout or an overloaded node is retried with backoff (the driver's
/// default policy does not retry a write timeout, so one would otherwise end the load), and
/// a load gives up only after the cluster has failed a write for about a minute.
const WRITE_ATTEMPTS: usize = 10;

/// Backoff between attempts of a write: 100 ms doubling to 15 s, with jitter.
fn write_backoff() -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(100))
        .with_max_delay(std::time::Duration::from_secs(15))
        .with_max_times(WRITE_ATTEMPTS - 1)
        .with_jitter()
}

/// `catalog_generations.state` of a generation whose every row is written.
pub(crate) const PUBLISHED: &str = "published";

/// `catalog_generations.state` of a generation being loaded (or whose load stopped).
pub(crate) const BUILDING: &str = "building";

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

pub(crate) fn encode_body<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(value).map_err(|e| StoreError::Corrupt { what: "record", detail: e.to_string() })
}

/// A generation's row in `catalog_generations`.
type GenerationRow =
    (Option<String>, Option<i32>, Option<i64>, Option<i64>, Option<Vec<i64>>, Option<Vec<i32>>);

/// The generation gateways serve: the one `catalog_state` points at, once this data center
/// holds it published; while it does not (the row has not arrived, or says `building`), the
/// newest generation it does hold published, so a gateway never serves a load that is still
/// being written or whose rows have not reached its data center. `None` when none is.
pub(crate) async fn current_generation(cluster: &Cluster) -> Result<Option<Generation>, StoreError> {
    let Some(generation) = published_generation(cluster).await? else { return Ok(None) };
    live_counts(cluster, generation).await.map(Some)
}

/// `generation` with the counts live catalog changes left it (`catalog_counts`), if any.
async fn live_counts(cluster: &Cluster, generation: Generation) -> Result<Generation, StoreError> {
    let counts = cluster
        .prepare(
            Kind::Read,
            "SELECT stamp, movies, people, genre_movies, years FROM {keyspace}.catalog_counts WHERE generation = ?",
        )
        .await?;
    let result = cluster.session.execute_unpaged(&counts, (generation.id,)).await.map_err(execution_error)?;
    type CountsRow = (Option<i64>, Option<i64>, Option<i64>, Option<Vec<i64>>, Option<Vec<i32>>);
    let row: Option<CountsRow> =
        result.into_rows_result().map_err(driver_error)?.maybe_first_row().map_err(decode_error)?;
    let Some((stamp, movies, people, genre_movies, years)) = row else { return Ok(generation) };
    let format = if generation.top_partitions { FORMAT } else { 1 };
    let live = self::generation(generation.id, (None, Some(format), movies, people, genre_movies, years))?;
    Ok(Generation { counts_stamp: stamp.unwrap_or(0), ..live })
}

/// The generation to serve, with the counts its load wrote (see [`current_generation`]).
async fn published_generation(cluster: &Cluster) -> Result<Option<Generation>, StoreError> {
    let Some(id) = current_id(cluster).await? else { return Ok(None) };
    let row = cluster
        .prepare(
            Kind::Read,
            "SELECT state, format, movies, people, genre_movies, years FROM {keyspace}.catalog_generations \
             WHERE generation = ?",
        )
        .await?;
    let result = cluster.session.execute_unpaged(&row, (id,)).await.map_err(execution_error)?;
    let row: Option<GenerationRow> =
        result.into_rows_result().map_err(driver_error)?.maybe_first_row().map_err(decode_error)?;
    match row {
        Some(row) if row.0.as_deref() == Some(PUBLISHED) => generation(id, row).map(Some),
        other => {
            let state = other.and_then(|r| r.0).unwrap_or_else(|| "not here yet".to_owned());
            tracing::warn!(
                generation = id,
                state,
                "the current catalog generation is not published in this data center; serving the newest that is"
            );
            newest_published(cluster).await
        }
    }
}

/// The generation `catalog_state` names current, if any.
pub(crate) async fn current_id(cluster: &Cluster) -> Result<Option<i64>, StoreError> {
    let current = cluster
        .prepare(Kind::Read, "SELECT generation FROM {keyspace}.catalog_state WHERE name = 'current'")
        .await?;
    let result = cluster.session.execute_unpaged(&current, ()).await.map_err(execution_error)?;
    let row =
        result.into_rows_result().map_err(driver_error)?.maybe_first_row::<(i64,)>().map_err(decode_error)?;
    Ok(row.map(|(id,)| id))
}

/// Every row of `catalog_generations` (a table of a few rows per load), `columns` of each,
/// read at the read consistency (EACH_QUORUM is for writes).
pub(crate) async fn generation_rows<T>(cluster: &Cluster, columns: &str) -> Result<Vec<T>, StoreError>
where
    T: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
{
    let statement = format!("SELECT {columns} FROM {}.catalog_generations", cluster.keyspace);
    let mut query = scylla::statement::unprepared::Statement::new(statement);
    query.set_execution_profile_handle(Some(cluster.profile(Kind::Read)));
    let result = cluster.session.query_unpaged(query, ()).await.map_err(execution_error)?;
    let rows = result.into_rows_result().map_err(driver_error)?;
    rows.rows::<T>().map_err(decode_error)?.map(|row| row.map_err(decode_error)).collect()
}

/// The newest generation this data center holds as published (a scan of a table of a few
/// rows per load).
async fn newest_published(cluster: &Cluster) -> Result<Option<Generation>, StoreError> {
    let mut newest: Option<(i64, GenerationRow)> = None;
    type Listed =
        (i64, Option<String>, Option<i32>, Option<i64>, Option<i64>, Option<Vec<i64>>, Option<Vec<i32>>);
    let columns = "generation, state, format, movies, people, genre_movies, years";
    for (id, state, format, movies, people, genres, years) in
        generation_rows::<Listed>(cluster, columns).await?
    {
        if state.as_deref() == Some(PUBLISHED) && newest.as_ref().is_none_or(|(n, _)| id > *n) {
            newest = Some((id, (state, format, movies, people, genres, years)));
        }
    }
    newest.map(|(id, row)| generation(id, row)).transpose()
}

fn generation(id: i64, row: GenerationRow) -> Result<Generation, StoreError> {
    let (_, format, movies, people, genre_movies, years) = row;
    let Some(format) = format.filter(|f| READABLE_FORMATS.contains(f)) else {
        return Err(StoreError::Corrupt {
            what: "catalog",
            detail: format!("generation {id} has format {format:?}, this build reads {READABLE_FORMATS:?}"),
        });
    };
    let mut years: Vec<u16> =
        years.unwrap_or_default().into_iter().filter_map(|y| u16::try_from(y).ok()).collect();
    years.sort_unstable();
    Ok(Generation {
        id,
        stats: CatalogStats { movies: movies.unwrap_or(0) as u64, people: people.unwrap_or(0) as u64 },
        genre_movies: genre_movies.unwrap_or_default().into_iter().map(|c| c.max(0) as u64).collect(),
        years,
        top_partitions: format >= 2,
        counts_stamp: 0,
    })
}

/// The ScyllaDB backend's bulk side. Its calls block on `runtime` (they run off the async
/// workers, on the blocking pool).
pub struct ScyllaBulk {
    options: ScyllaOptions,
    runtime: Handle,
    /// What this `ScyllaBulk`'s loads have had acknowledged, per table.
    written: Arc<Written>,
}

/// Rows and statements acknowledged per table, counted as writes succeed.
#[derive(Default)]
struct Written([(std::sync::atomic::AtomicU64, std::sync::atomic::AtomicU64); Table::ALL.len()]);

impl Written {
    fn add(&self, table: Table, rows: usize) {
        let (written, statements) = &self.0[table as usize];
        written.fetch_add(rows as u64, std::sync::atomic::Ordering::Relaxed);
        statements.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn figures(&self) -> Vec<TableWritten> {
        Table::ALL
            .iter()
            .map(|&table| {
                let (rows, statements) = &self.0[table as usize];
                TableWritten {
                    table: table.name(),
                    rows: rows.load(std::sync::atomic::Ordering::Relaxed),
                    statements: statements.load(std::sync::atomic::Ordering::Relaxed),
                }
            })
            .collect()
    }
}

impl ScyllaBulk {
    /// Bulk access to the keyspace of `options`, driving the driver on `runtime`.
    pub fn new(options: ScyllaOptions, runtime: Handle) -> ScyllaBulk {
        ScyllaBulk { options, runtime, written: Arc::default() }
    }

    async fn connect(&self) -> Result<Cluster, StoreError> {
        let cluster = Cluster::connect(&self.options).await?;
        schema::check(&cluster).await?;
        Ok(cluster)
    }
}

impl BulkLoad for ScyllaBulk {
    fn location(&self) -> String {
        format!("keyspace {} at {}", self.options.keyspace, self.options.contact_points.join(","))
    }

    fn has_catalog(&self) -> Result<bool, StoreError> {
        self.runtime.block_on(async {
            let cluster = self.connect().await?;
            Ok(current_generation(&cluster).await?.is_some())
        })
    }

    fn sink(&self, source: &str) -> Result<Box<dyn CatalogSink>, StoreError> {
        let sink = self.runtime.block_on(ScyllaSink::start(
            &self.options,
            source,
            self.runtime.clone(),
            self.written.clone(),
        ))?;
        Ok(Box::new(sink))
    }

    fn written(&self) -> Option<Vec<TableWritten>> {
        Some(self.written.figures())
    }

    fn export(
        &self,
        _out_dir: &Path,
        _progress: &mut dyn FnMut(Progress),
    ) -> Result<ExportStats, StoreError> {
        Err(StoreError::InvalidInput(
            "export reads the embedded backend; the ScyllaDB backend has no export yet (load the same catalog \
             into a data directory with `gateway seed` or `gateway import` instead)"
                .into(),
        ))
    }
}

/// What a load's progress in `catalog_loads` means changes with the loader; it is part of
/// the source a generation records, so a build whose progress means something else never
/// resumes this build's load (revision 2: filmography rows are not covered by the count, see
/// `spill.rs`, and a build of revision 1 resuming would skip them).
const LOADER_REVISION: u32 = 2;

/// The source a load records: what it reads, and which loader wrote it.
fn recorded_source(source: &str) -> String {
    format!("{source} (loader {LOADER_REVISION})")
}

/// The generation a load writes into: the unfinished one of the same source, or a new one.
async fn choose_generation(cluster: &Cluster, source: &str) -> Result<i64, StoreError> {
    let mut newest = 0;
    let mut newest_published = 0;
    let mut resumable = None;
    type Row = (i64, Option<String>, Option<String>, Option<i32>);
    for (generation, row_source, state, format) in
        generation_rows::<Row>(cluster, "generation, source, state, format").await?
    {
        newest = newest.max(generation);
        match state.as_deref() {
            Some(PUBLISHED) => newest_published = newest_published.max(generation),
            // Rows written by a build of another format are not this build's to complete.
            Some(BUILDING) if row_source.as_deref() == Some(source) && format == Some(FORMAT) => {
                resumable = Some(resumable.map_or(generation, |g: i64| g.max(generation)));
            }
            // `removing` (see `gc`) and anything else is never written into again.
            _ => {}
        }
    }
    // Only a generation newer than every published one is resumed: publishing an older one
    // would move `current` backwards, behind a load that finished after it.
    Ok(match resumable.filter(|&g| g > newest_published) {
        Some(generation) => {
            tracing::info!(generation, source, "completing an unfinished load of the same source");
            generation
        }
        None => newest + 1,
    })
}

/// Refuses to publish `generation` when `gateway catalog gc` has begun removing it (its rows
/// may be gone) or when a newer generation was published while it loaded (publishing would
/// move `current` backwards); a rerun then loads the source into a new generation.
async fn may_publish(cluster: &Cluster, generation: i64) -> Result<(), StoreError> {
    for (id, state) in generation_rows::<(i64, Option<String>)>(cluster, "generation, state").await? {
        let refused = match state.as_deref() {
            Some(state) if id == generation && state != BUILDING => {
                format!("generation {generation} is marked {state} (`gateway catalog gc` is removing it)")
            }
            Some(PUBLISHED) if id > generation => {
                format!("generation {id} was published while generation {generation} loaded")
            }
            _ => continue,
        };
        return Err(StoreError::InvalidInput(format!(
            "not publishing the load: {refused}; run it again to load its source into a new generation"
        )));
    }
    Ok(())
}

/// How many items an earlier run of the load into `generation` wrote whole (0 if none).
async fn items_written(cluster: &Cluster, generation: i64) -> Result<u64, StoreError> {
    // At the read consistency: EACH_QUORUM is for writes (ScyllaDB refuses it for reads), and
    // a LOCAL_QUORUM read sees what an EACH_QUORUM write acknowledged.
    let statement = cluster
        .prepare(Kind::Read, "SELECT items FROM {keyspace}.catalog_loads WHERE generation = ?")
        .await?;
    let result = cluster.session.execute_unpaged(&statement, (generation,)).await.map_err(execution_error)?;
    let row = result
        .into_rows_result()
        .map_err(driver_error)?
        .maybe_first_row::<(Option<i64>,)>()
        .map_err(decode_error)?;
    Ok(row.and_then(|(items,)| items).map_or(0, |items| items.max(0) as u64))
}

/// Prepared inserts of a load.
struct Inserts {
    movie: PreparedStatement,
    person: PreparedStatement,
    credits: PreparedStatement,
    filmography: PreparedStatement,
    browse: PreparedStatement,
    search: PreparedStatement,
}

impl Inserts {
    fn statement(&self, table: Table) -> &PreparedStatement {
        match table {
            Table::Movie => &self.movie,
            Table::Person => &self.person,
            Table::Credits => &self.credits,
            Table::Filmography => &self.filmography,
            Table::Browse => &self.browse,
            Table::Search => &self.search,
        }
    }
}

/// The table a buffered row goes to.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
enum Table {
    Movie,
    Person,
    Credits,
    Filmography,
    Browse,
    Search,
}

impl Table {
    const ALL: [Table; 6] =
        [Table::Person, Table::Movie, Table::Credits, Table::Filmography, Table::Browse, Table::Search];

    fn name(self) -> &'static str {
        match self {
            Table::Movie => "movies_by_id",
            Table::Person => "people_by_id",
            Table::Credits => "credits_by_movie",
            Table::Filmography => "credits_by_person",
            Table::Browse => "movies_by_genre_year",
            Table::Search => "title_search",
        }
    }
}

/// Writes a catalog into a new (or unfinished) generation. See the module docs.
struct ScyllaSink {
    cluster: Arc<Cluster>,
    inserts: Arc<Inserts>,
    runtime: Handle,
    generation: i64,
    source: String,
    started_at: i64,
    /// Writes in flight: a permit each, `[store] load_concurrency` in all.
    in_flight: Arc<tokio::sync::Semaphore>,
    /// The writes sent and not yet collected; the first failure ends the load.
    writes: tokio::task::JoinSet<Result<(), StoreError>>,
    /// Writes retried after a timeout or an overloaded node, for the load's summary.
    retried: Arc<std::sync::atomic::AtomicU64>,
    /// Rows and statements acknowledged, per table.
    written: Arc<Written>,
    /// People and movies put so far; the item being put is number `items` (from 0).
    items: u64,
    /// Items an earlier run of this load had written whole (`catalog_loads`): their rows
    /// are not sent again.
    resume_from: u64,
    /// Whether the item being put is one of those.
    skipping: bool,
    /// Writes in flight of the rows sent since the last full flush.
    open_epoch: Arc<AtomicUsize>,
    /// Spans ended by a full flush: every row of the items before `.0` is sent, `.1` of
    /// those writes are still in flight. Oldest first.
    closed_epochs: VecDeque<(u64, Arc<AtomicUsize>)>,
    /// The item count last saved to `catalog_loads`.
    saved_items: u64,
    save_progress: Arc<PreparedStatement>,
    /// Rows waiting to be written, by (table, partition): same-partition rows batch together.
    pending: HashMap<(Table, String), Vec<Vec<CqlValue>>>,
    pending_rows: usize,
    /// `[store] load_buffer_rows`: a partition's rows go as soon as they fill a batch
    /// ([`BATCH_ROWS`]); up to this many wait for theirs to fill, so rows of partitions that
    /// fill slowly still batch where the stream brings them together (a common search
    /// prefix, a recent year's browse order).
    buffer_rows: usize,
    stats: CatalogStats,
    genre_movies: [u64; GENRES.len()],
    years: BTreeSet<u16>,
    /// The first [`plan::BROWSE_TOP_ROWS`] positions of each (sort, genre) browse order so far.
    top: HashMap<(u8, u8), BinaryHeap<Position>>,
    /// People's filmography rows, sent grouped by person once every movie is in (see
    /// `spill.rs`). Kept for the items a rerun skips too: they are sent again whole.
    filmographies: Option<Spill>,
}

impl ScyllaSink {
    async fn start(
        options: &ScyllaOptions,
        source: &str,
        runtime: Handle,
        written: Arc<Written>,
    ) -> Result<ScyllaSink, StoreError> {
        let source = &recorded_source(source);
        let cluster = Cluster::connect(options).await?;
        schema::check(&cluster).await?;
        let generation = choose_generation(&cluster, source).await?;
        // Before the generation is recorded: a spill directory that cannot be made fails the
        // load before it has written anything.
        let filmographies = Spill::new(options, generation)?;
        let record = cluster
            .prepare(
                Kind::Bulk,
                "INSERT INTO {keyspace}.catalog_generations (generation, source, state, format, started_at) \
                 VALUES (?, ?, ?, ?, ?)",
            )
            .await?;
        let started_at = now_ms();
        let values = (generation, source, BUILDING, FORMAT, started_at);
        cluster.session.execute_unpaged(&record, values).await.map_err(execution_error)?;
        let bulk = |cql: &'static str| cluster.prepare(Kind::Bulk, cql);
        let inserts = Inserts {
            movie: bulk("INSERT INTO {keyspace}.movies_by_id (generation, movie, body) VALUES (?, ?, ?)").await?,
            person: bulk("INSERT INTO {keyspace}.people_by_id (generation, person, body) VALUES (?, ?, ?)").await?,
            credits: bulk("INSERT INTO {keyspace}.credits_by_movie (generation, movie, body) VALUES (?, ?, ?)").await?,
            filmography: bulk(
                "INSERT INTO {keyspace}.credits_by_person (generation, person, pos, body) VALUES (?, ?, ?, ?)",
            )
            .await?,
            browse: bulk(
                "INSERT INTO {keyspace}.movies_by_genre_year (generation, sort_order, genre, year, pos) \
                 VALUES (?, ?, ?, ?, ?)",
            )
            .await?,
            search: bulk(
                "INSERT INTO {keyspace}.title_search (generation, prefix, bucket, pos, words) VALUES (?, ?, ?, ?, ?)",
            )
            .await?,
        };
        let save_progress =
            bulk("INSERT INTO {keyspace}.catalog_loads (generation, items, updated_at) VALUES (?, ?, ?)")
                .await?;
        let resume_from = items_written(&cluster, generation).await?;
        if resume_from > 0 {
            tracing::info!(
                generation,
                items = resume_from,
                "an earlier run of this load wrote its first people and movies whole: their rows are not written again"
            );
        }
        tracing::info!(generation, source, keyspace = %options.keyspace, "loading a catalog generation");
        Ok(ScyllaSink {
            cluster: Arc::new(cluster),
            inserts: Arc::new(inserts),
            runtime,
            generation,
            source: source.to_owned(),
            started_at,
            in_flight: Arc::new(tokio::sync::Semaphore::new(options.load_concurrency)),
            writes: tokio::task::JoinSet::new(),
            retried: Arc::default(),
            written,
            items: 0,
            resume_from,
            skipping: false,
            open_epoch: Arc::default(),
            closed_epochs: VecDeque::new(),
            saved_items: resume_from,
            save_progress: Arc::new(save_progress),
            pending: HashMap::new(),
            pending_rows: 0,
            buffer_rows: options.load_buffer_rows,
            stats: CatalogStats::default(),
            genre_movies: [0; GENRES.len()],
            years: BTreeSet::new(),
            top: HashMap::new(),
            filmographies: Some(filmographies),
        })
    }

    fn push(&mut self, table: Table, partition: String, row: Vec<CqlValue>) -> Result<(), StoreError> {
        if self.skipping {
            return Ok(());
        }
        let rows = self.pending.entry((table, partition)).or_default();
        rows.push(row);
        if rows.len() == BATCH_ROWS {
            let full = std::mem::take(rows);
            self.pending_rows -= BATCH_ROWS - 1;
            self.send(table, full)?;
            self.collect_finished()?;
        } else {
            self.pending_rows += 1;
        }
        if self.pending_rows >= self.buffer_rows {
            self.flush()?;
        }
        Ok(())
    }

    /// Keeps `pos` if it is among the first [`plan::BROWSE_TOP_ROWS`] of its browse order so far.
    fn keep_top(&mut self, sort: u8, genre: u8, pos: Position) {
        let top = self.top.entry((sort, genre)).or_default();
        if top.len() < plan::BROWSE_TOP_ROWS {
            top.push(pos);
        } else if top.peek().is_some_and(|last| pos < *last) {
            top.pop();
            top.push(pos);
        }
    }

    /// Writes the top partitions, once every movie is in.
    fn write_top(&mut self) -> Result<(), StoreError> {
        let generation = CqlValue::BigInt(self.generation);
        for ((sort, genre), top) in std::mem::take(&mut self.top) {
            for pos in top {
                let row = vec![
                    generation.clone(),
                    int(sort),
                    int(genre),
                    CqlValue::Int(TOP_YEAR),
                    CqlValue::Blob(encode(pos)),
                ];
                self.push(Table::Browse, format!("{sort}/{genre}/top"), row)?;
            }
        }
        Ok(())
    }

    /// Sends the people's filmographies from the spill files, a person's rows in unlogged
    /// batches of [`BATCH_ROWS`]. A rerun after a kill in this phase sends them all again (a
    /// few percent of the load's statements); `catalog_loads` counts the other rows only.
    fn write_filmographies(&mut self) -> Result<(), StoreError> {
        let Some(spill) = self.filmographies.take() else { return Ok(()) };
        tracing::info!(
            rows = spill.rows(),
            generation = self.generation,
            "writing the people's filmographies, grouped by person"
        );
        let generation = CqlValue::BigInt(self.generation);
        spill.drain(|person, rows| {
            let mut rows = rows.into_iter().peekable();
            while rows.peek().is_some() {
                let chunk = rows
                    .by_ref()
                    .take(BATCH_ROWS)
                    .map(|(pos, body)| {
                        vec![generation.clone(), big(person), CqlValue::Blob(pos), CqlValue::Blob(body)]
                    })
                    .collect();
                self.send(Table::Filmography, chunk)?;
            }
            self.collect_finished()
        })
    }

    /// Sends everything buffered, each partition's rows in unlogged batches of
    /// [`BATCH_ROWS`], without waiting for them: a write waits only for a free permit of
    /// `load_concurrency`, so the pipeline never drains between buffers. Writes that ended are
    /// collected as it goes, so a failure stops the load at once.
    fn flush(&mut self) -> Result<(), StoreError> {
        let pending = std::mem::take(&mut self.pending);
        self.pending_rows = 0;
        for ((table, _), rows) in pending {
            for chunk in rows.chunks(BATCH_ROWS) {
                self.send(table, chunk.to_vec())?;
            }
            self.collect_finished()?;
        }
        // Every row of the items before this one is sent.
        let epoch = std::mem::take(&mut self.open_epoch);
        self.closed_epochs.push_back((self.items, epoch));
        self.collect_finished()
    }

    /// Sends one partition's rows (at most [`BATCH_ROWS`]) once a permit is free.
    fn send(&mut self, table: Table, chunk: Vec<Vec<CqlValue>>) -> Result<(), StoreError> {
        if chunk.is_empty() {
            return Ok(());
        }
        let permit =
            self.runtime.block_on(self.in_flight.clone().acquire_owned()).map_err(|_| StoreError::Closed)?;
        let (cluster, inserts) = (self.cluster.clone(), self.inserts.clone());
        let (retried, written, epoch) = (self.retried.clone(), self.written.clone(), self.open_epoch.clone());
        epoch.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.writes.spawn_on(
            async move {
                let _permit = permit;
                write_chunk(&cluster, inserts.statement(table), &chunk, &retried).await?;
                written.add(table, chunk.len());
                epoch.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            },
            &self.runtime,
        );
        Ok(())
    }

    /// Collects the writes that have ended; the first failure.
    fn collect_finished(&mut self) -> Result<(), StoreError> {
        while let Some(ended) = self.writes.try_join_next() {
            ended.map_err(|e| StoreError::backend(crate::session::ScyllaError::Driver(e.to_string())))??;
        }
        self.save_progress();
        Ok(())
    }

    /// Saves how many items are written whole, once a flushed span's writes have all landed
    /// (and every span's before it). A save that fails is only logged: a rerun then rewrites
    /// a little more.
    fn save_progress(&mut self) {
        let mut written = None;
        while let Some((items, in_flight)) = self.closed_epochs.front() {
            if in_flight.load(std::sync::atomic::Ordering::Relaxed) > 0 {
                break;
            }
            written = Some(*items);
            self.closed_epochs.pop_front();
        }
        let Some(items) = written.filter(|&items| items > self.saved_items) else { return };
        self.saved_items = items;
        let (cluster, generation) = (self.cluster.clone(), self.generation);
        // The count is the write's timestamp, so a larger count wins whichever save lands
        // last (the driver stamps each attempt when it is sent, and saves can overtake each
        // other); a removal (`gc`) is stamped with the time and wins over every save.
        let mut statement = (*self.save_progress).clone();
        statement.set_timestamp(Some(i64::try_from(items).unwrap_or(i64::MAX)));
        self.writes.spawn_on(
            async move {
                let values = (generation, items as i64, now_ms());
                if let Err(error) = cluster.session.execute_unpaged(&statement, values).await {
                    tracing::warn!(%error, items, "saving the load's progress failed; a rerun rewrites more");
                }
                Ok(())
            },
            &self.runtime,
        );
    }

    /// Waits for every write sent; the first failure.
    fn drain(&mut self) -> Result<(), StoreError> {
        let writes = &mut self.writes;
        self.runtime.block_on(async {
            while let Some(ended) = writes.join_next().await {
                ended
                    .map_err(|e| StoreError::backend(crate::session::ScyllaError::Driver(e.to_string())))??;
            }
            Ok(())
        })
    }
}

/// Writes one partition's rows (one statement, or one unlogged batch), retrying timeouts,
/// unavailable replicas, overload and broken connections with backoff; every write of a load
/// is an idempotent upsert, so a retry of one that did land changes nothing.
async fn write_chunk(
    cluster: &Cluster,
    statement: &PreparedStatement,
    chunk: &[Vec<CqlValue>],
    retried: &std::sync::atomic::AtomicU64,
) -> Result<(), StoreError> {
    use backon::Retryable;
    let attempt = || async {
        if let [row] = chunk {
            cluster.session.execute_unpaged(statement, row).await.map_err(execution_error)?;
        } else {
            let mut batch = Batch::new(BatchType::Unlogged);
            batch.set_execution_profile_handle(Some(cluster.profile(Kind::Bulk)));
            batch.set_is_idempotent(true);
            for _ in chunk {
                batch.append_statement(statement.clone());
            }
            cluster.session.batch(&batch, chunk).await.map_err(execution_error)?;
        }
        Ok::<(), StoreError>(())
    };
    attempt
        .retry(write_backoff())
        .when(StoreError::is_retryable)
        .notify(|error, after| {
            retried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(%error, ?after, "a catalog write failed; retrying");
        })
        .await
}

/// [`write_chunk`] for writes outside a load (removing a generation).
pub(crate) async fn write_with_retries(
    cluster: &Cluster,
    statement: &PreparedStatement,
    chunk: &[Vec<CqlValue>],
) -> Result<(), StoreError> {
    write_chunk(cluster, statement, chunk, &std::sync::atomic::AtomicU64::new(0)).await
}

fn big(v: u64) -> CqlValue {
    CqlValue::BigInt(v as i64)
}

fn int(v: impl Into<i32>) -> CqlValue {
    CqlValue::Int(v.into())
}

impl CatalogSink for ScyllaSink {
    fn put_person(&mut self, person: &Person) -> Result<(), StoreError> {
        self.skipping = self.items < self.resume_from;
        let row =
            vec![CqlValue::BigInt(self.generation), big(person.id.0), CqlValue::Blob(encode_body(person)?)];
        self.stats.people += 1;
        self.push(Table::Person, person.id.0.to_string(), row)?;
        self.items += 1;
        Ok(())
    }

    fn put_movie(&mut self, record: &MovieRecord) -> Result<(), StoreError> {
        self.skipping = self.items < self.resume_from;
        let movie = &record.movie;
        let id = movie.id.0;
        let generation = CqlValue::BigInt(self.generation);
        self.push(
            Table::Movie,
            id.to_string(),
            vec![generation.clone(), big(id), CqlValue::Blob(encode_body(movie)?)],
        )?;
        self.push(
            Table::Credits,
            id.to_string(),
            vec![generation.clone(), big(id), CqlValue::Blob(encode_body(&record.credits)?)],
        )?;
        let rows = plan::index_rows(record);
        for (person, key, ordinal_id, entry) in &rows.filmography {
            let pos = encode(Position { key: *key, id: *ordinal_id });
            let spill = self.filmographies.as_mut().ok_or(StoreError::Closed)?;
            spill.push(*person, &pos, &encode_body(entry)?)?;
        }
        let popularity = MovieSort::Popularity.code();
        for (sort, genre, year, key) in rows.browse {
            self.keep_top(sort, genre, Position { key, id });
            let mut partitions = vec![(sort, Position { key, id })];
            if sort == popularity && genre != plan::ANY_GENRE {
                partitions.push((POPULARITY_MIRRORED, Position { key: u64::MAX - key, id: u64::MAX - id }));
            }
            for (sort, pos) in partitions {
                let row =
                    vec![generation.clone(), int(sort), int(genre), int(year), CqlValue::Blob(encode(pos))];
                self.push(Table::Browse, format!("{sort}/{genre}/{year}"), row)?;
            }
        }
        let pos = encode(Position { key: rows.popularity_key, id });
        for prefix in rows.prefixes {
            let partition = format!("{prefix}/{}", rows.bucket);
            let row = vec![
                generation.clone(),
                CqlValue::Text(prefix),
                int(rows.bucket),
                CqlValue::Blob(pos.clone()),
                CqlValue::Text(rows.title_words.clone()),
            ];
            self.push(Table::Search, partition, row)?;
        }
        for genre in &movie.genres {
            self.genre_movies[usize::from(genre.code())] += 1;
        }
        self.years.insert(movie.year.unwrap_or(0));
        self.stats.movies += 1;
        self.items += 1;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<CatalogStats, StoreError> {
        self.skipping = false;
        self.write_top()?;
        self.flush()?;
        self.write_filmographies()?;
        self.drain()?;
        let retried = self.retried.load(std::sync::atomic::Ordering::Relaxed);
        if retried > 0 {
            tracing::info!(
                retried,
                generation = self.generation,
                "catalog writes retried after timeouts or overload"
            );
        }
        let (cluster, generation, stats) = (self.cluster.clone(), self.generation, self.stats);
        let (source, started_at) = (self.source.clone(), self.started_at);
        let genre_movies: Vec<i64> = self.genre_movies.iter().map(|&c| c as i64).collect();
        let years: Vec<i32> = self.years.iter().map(|&y| i32::from(y)).collect();
        self.runtime.block_on(async move {
            may_publish(&cluster, generation).await?;
            let publish = cluster
                .prepare(
                    Kind::Bulk,
                    "INSERT INTO {keyspace}.catalog_generations (generation, source, state, format, movies, people, \
                     genre_movies, years, started_at, published_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .await?;
            let values = (
                generation,
                source,
                PUBLISHED,
                FORMAT,
                stats.movies as i64,
                stats.people as i64,
                genre_movies,
                years,
                started_at,
                now_ms(),
            );
            cluster.session.execute_unpaged(&publish, values).await.map_err(execution_error)?;
            let switch = cluster
                .prepare(Kind::Bulk, "INSERT INTO {keyspace}.catalog_state (name, generation) VALUES (?, ?)")
                .await?;
            cluster.session.execute_unpaged(&switch, ("current", generation)).await.map_err(execution_error)?;
            tracing::info!(generation, movies = stats.movies, people = stats.people, "published the catalog generation");
            Ok::<_, StoreError>(())
        })?;
        Ok(stats)
    }
}
