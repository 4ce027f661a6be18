//! Removing catalog generations nobody serves any more (`gateway catalog gc`).
//!
//! Every load writes a whole new generation (tens of GB at 5M movies, times the replication
//! factor and the data centers), and nothing else removes the old ones. Which go:
//!
//! - published generations older than the current one, once the current one has been
//!   published for `grace` (every gateway follows `catalog_state` within `catalog_poll_ms`,
//!   so by then none serves an older one);
//! - loads that never finished, of any number, once neither their start nor their last
//!   progress (`catalog_loads.updated_at`, written every few thousand movies) is within
//!   `grace`;
//! - never the current one, nor a published generation newer than it.
//!
//! A removed generation is first marked `removing` (no rerun resumes it, no gateway serves
//! it, a load still running refuses to publish it) and its load progress deleted. Then one
//! scan of each catalog table's partition keys (`SELECT DISTINCT`, paged by the driver, at
//! LOCAL_QUORUM) deletes, as it goes, every partition of a removed generation, and of any
//! generation older than the current one that is not listed at all (a load that stopped
//! before its row was written), at the load's consistency with its concurrency and retries.
//! The generations' rows are marked `removed` last and kept, so a removal that stops part way
//! is finished by running it again and no new load is given a removed generation's number.
//!
//! A partition delete is one tombstone whatever the partition holds. Compaction drops it and
//! the data under it once it is droppable: after `gc_grace_seconds` (10 days by default) on a
//! vnodes keyspace, after the next repair on a tablets keyspace (whose default
//! `tombstone_gc` mode is `repair`) ([tombstones][ts], [`tombstone_gc`][ddl]); the disk comes
//! back then, not at once.
//!
//! [ts]: https://docs.scylladb.com/manual/stable/kb/tombstones-flush.html
//! [ddl]: https://docs.scylladb.com/manual/stable/cql/ddl.html

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use marquee_store::StoreError;
use scylla::value::CqlValue;

use crate::bulk::{BUILDING, generation_rows, write_with_retries};
use crate::options::ScyllaOptions;
use crate::schema;
use crate::session::{Cluster, Kind, decode_error, driver_error, execution_error};

/// The catalog tables and their partition keys after `generation`.
const TABLES: [(&str, &str); 6] = [
    ("movies_by_id", "movie"),
    ("people_by_id", "person"),
    ("credits_by_movie", "movie"),
    ("credits_by_person", "person"),
    ("movies_by_genre_year", "sort_order, genre, year"),
    ("title_search", "prefix, bucket"),
];

/// What a collection removed (or, dry, would remove).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Collected {
    /// The generation served now.
    pub current: Option<i64>,
    /// Generations removed, oldest first.
    pub removed: Vec<i64>,
    /// Generations kept, with why.
    pub kept: Vec<(i64, String)>,
    /// Partitions deleted (counted, not deleted, when dry).
    pub partitions: u64,
    /// Of those, partitions of generations no longer listed (left by a removal that stopped
    /// or a load that failed before its row was written), older than the current one.
    pub orphaned: u64,
}

/// A generation's row as a collection sees it.
struct Listed {
    id: i64,
    state: Option<String>,
    started_at: i64,
    published_at: Option<i64>,
    /// When a load last reported progress (`catalog_loads.updated_at`), if it has.
    progressed_at: Option<i64>,
}

impl Listed {
    /// When the load was last known to be running: its start or its latest progress.
    fn last_active(&self) -> i64 {
        self.started_at.max(self.progressed_at.unwrap_or(0))
    }
}

/// `catalog_generations.state` of a generation being removed: never resumed, never served.
const REMOVING: &str = "removing";

/// `catalog_generations.state` of a removed generation. The row stays, so its number is
/// never given to a new load (whose progress a late write of the old one could mix with).
const REMOVED: &str = "removed";

/// Removes (with `dry`: only lists) the generations past `grace` (see the module docs).
pub async fn collect_generations(
    options: &ScyllaOptions,
    grace: Duration,
    dry: bool,
) -> Result<Collected, StoreError> {
    let cluster = Arc::new(Cluster::connect(options).await?);
    schema::check(&cluster).await?;
    let current = crate::bulk::current_id(&cluster).await?;
    let listed = list_generations(&cluster).await?;
    let now = crate::bulk::now_ms();
    let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
    let current_row = listed.iter().find(|g| Some(g.id) == current);
    let mut collected = Collected { current, ..Collected::default() };
    let mut doomed = Vec::new();
    for generation in listed.iter().filter(|g| g.state.as_deref() != Some(REMOVED)) {
        match why_kept(generation, current_row, now, grace_ms) {
            Some(reason) => collected.kept.push((generation.id, reason)),
            None => doomed.push(generation.id),
        }
    }
    // Without the current generation's row nothing is known to be left behind.
    let (Some(current), Some(_)) = (current, current_row) else { return Ok(collected) };
    if !dry {
        for &id in &doomed {
            // First, so no rerun resumes it and no gateway serves it from here on; then its
            // progress, so nothing would skip rows this removal deletes.
            let mark = cluster
                .prepare(
                    Kind::Bulk,
                    "INSERT INTO {keyspace}.catalog_generations (generation, state) VALUES (?, ?)",
                )
                .await?;
            write_with_retries(
                &cluster,
                &mark,
                &[vec![CqlValue::BigInt(id), CqlValue::Text(REMOVING.into())]],
            )
            .await?;
            let progress = cluster
                .prepare(Kind::Bulk, "DELETE FROM {keyspace}.catalog_loads WHERE generation = ?")
                .await?;
            write_with_retries(&cluster, &progress, &[vec![CqlValue::BigInt(id)]]).await?;
            // What live catalog changes kept of it (schema version 7).
            for table in ["catalog_counts", "catalog_pending"] {
                let statement = cluster
                    .prepare(Kind::Bulk, &format!("DELETE FROM {{keyspace}}.{table} WHERE generation = ?"))
                    .await?;
                write_with_retries(&cluster, &statement, &[vec![CqlValue::BigInt(id)]]).await?;
            }
        }
    }
    let listed_ids: HashSet<i64> = listed.iter().map(|g| g.id).collect();
    let removed_ids = listed
        .iter()
        .filter(|g| g.state.as_deref() == Some(REMOVED))
        .map(|g| g.id)
        .filter(|&id| id < current);
    let doomed_ids: HashSet<i64> = doomed.iter().copied().chain(removed_ids).collect();
    let remove = |generation: i64| {
        if doomed_ids.contains(&generation) {
            Some(false)
        } else if !listed_ids.contains(&generation) && generation < current {
            Some(true)
        } else {
            None
        }
    };
    for (table, key) in TABLES {
        let (partitions, orphaned) = sweep(&cluster, options, table, key, &remove, dry).await?;
        tracing::info!(table, partitions, orphaned, dry, "removed old generations' partitions");
        collected.partitions += partitions;
        collected.orphaned += orphaned;
    }
    if !dry {
        let row = cluster
            .prepare(
                Kind::Bulk,
                "INSERT INTO {keyspace}.catalog_generations (generation, state) VALUES (?, ?)",
            )
            .await?;
        for &id in &doomed {
            let values = vec![CqlValue::BigInt(id), CqlValue::Text(REMOVED.into())];
            write_with_retries(&cluster, &row, &[values]).await?;
            tracing::info!(generation = id, "removed a catalog generation");
        }
    }
    collected.removed = doomed;
    Ok(collected)
}

/// Why `generation` stays, or `None` when it goes. `current` is the current generation's row.
fn why_kept(generation: &Listed, current: Option<&Listed>, now: i64, grace_ms: i64) -> Option<String> {
    let Some(current) = current else {
        return Some("the current generation is not listed here; nothing is removed".into());
    };
    let state = generation.state.as_deref();
    if generation.id == current.id {
        return Some("served now".into());
    }
    if state == Some(REMOVING) {
        return None;
    }
    // A load is left alone while it runs (it reports progress every few thousand movies),
    // whatever its number: one that started before the current one was published may still
    // be writing.
    if state == Some(BUILDING) {
        let idle = now.saturating_sub(generation.last_active());
        return (idle <= grace_ms).then(|| {
            format!("a load that started or made progress {} s ago, within the grace period", idle / 1000)
        });
    }
    if generation.id > current.id {
        return Some("newer than the current one (published, not yet switched to)".into());
    }
    // Older than the current one: every gateway has left it once the current one has been
    // published for the grace period (they follow `current` within `catalog_poll_ms`).
    match current.published_at {
        Some(at) if now.saturating_sub(at) > grace_ms => None,
        Some(at) => Some(format!(
            "the current generation was published {} s ago, within the grace period",
            now.saturating_sub(at) / 1000
        )),
        None => Some("the current generation has no publication time here".into()),
    }
}

async fn list_generations(cluster: &Cluster) -> Result<Vec<Listed>, StoreError> {
    type Row = (i64, Option<String>, Option<i64>, Option<i64>);
    let rows = generation_rows::<Row>(cluster, "generation, state, started_at, published_at").await?;
    let mut listed: Vec<Listed> = rows
        .into_iter()
        .map(|(id, state, started_at, published_at)| Listed {
            id,
            state,
            started_at: started_at.unwrap_or(0),
            published_at,
            progressed_at: None,
        })
        .collect();
    let progress = cluster
        .prepare(Kind::Read, "SELECT updated_at FROM {keyspace}.catalog_loads WHERE generation = ?")
        .await?;
    for generation in listed.iter_mut().filter(|g| g.state.as_deref() == Some(BUILDING)) {
        let result =
            cluster.session.execute_unpaged(&progress, (generation.id,)).await.map_err(execution_error)?;
        let row = result.into_rows_result().map_err(driver_error)?.maybe_first_row::<(Option<i64>,)>();
        generation.progressed_at = row.map_err(decode_error)?.and_then(|(at,)| at);
    }
    listed.sort_by_key(|g| g.id);
    Ok(listed)
}

/// Deletes (counts, when `dry`) every partition of `table` whose generation `remove` names
/// (`Some(orphaned)`), as the scan of the table's partition keys finds them (`SELECT
/// DISTINCT`, or, on a CQL server without it, the stand-in, a scan of the rows), with
/// `load_concurrency` deletes in flight; (partitions, orphaned ones).
async fn sweep(
    cluster: &Arc<Cluster>,
    options: &ScyllaOptions,
    table: &str,
    key: &str,
    remove: &impl Fn(i64) -> Option<bool>,
    dry: bool,
) -> Result<(u64, u64), StoreError> {
    let select = format!("SELECT DISTINCT generation, {key} FROM {{keyspace}}.{table}");
    // Read at LOCAL_QUORUM (EACH_QUORUM is for writes): a load writes every partition to a
    // quorum of each data center, so the local one lists them.
    let (statement, distinct) = match cluster.prepare(Kind::Read, &select).await {
        Ok(statement) => (statement, true),
        Err(error) => {
            tracing::warn!(%error, table, "SELECT DISTINCT refused: scanning every row instead");
            (cluster.prepare(Kind::Read, &select.replace("DISTINCT ", "")).await?, false)
        }
    };
    let condition: Vec<String> = key.split(", ").map(|column| format!("{column} = ?")).collect();
    let delete = Arc::new(
        cluster
            .prepare(
                Kind::Bulk,
                &format!(
                    "DELETE FROM {{keyspace}}.{table} WHERE generation = ? AND {}",
                    condition.join(" AND ")
                ),
            )
            .await?,
    );
    let rows = cluster
        .session
        .execute_iter(statement, ())
        .await
        .map_err(driver_error)?
        .rows_stream::<scylla::value::Row>()
        .map_err(decode_error)?;
    let mut rows = std::pin::pin!(rows);
    let permits = Arc::new(tokio::sync::Semaphore::new(options.load_concurrency));
    let mut deletes = tokio::task::JoinSet::new();
    // Without DISTINCT a partition comes once per row: only the doomed ones are remembered.
    let mut seen = HashSet::new();
    let (mut partitions, mut orphaned) = (0, 0);
    while let Some(row) = rows.try_next().await.map_err(driver_error)? {
        let values: Vec<CqlValue> = row.columns.into_iter().map(|c| c.unwrap_or(CqlValue::Empty)).collect();
        let Some(CqlValue::BigInt(generation)) = values.first() else { continue };
        let Some(orphan) = remove(*generation) else { continue };
        if !distinct && !seen.insert(format!("{values:?}")) {
            continue;
        }
        partitions += 1;
        orphaned += u64::from(orphan);
        if dry {
            continue;
        }
        let permit = permits.clone().acquire_owned().await.map_err(|_| StoreError::Closed)?;
        let (cluster, delete) = (cluster.clone(), delete.clone());
        deletes.spawn(async move {
            let _permit = permit;
            write_with_retries(&cluster, &delete, &[values]).await
        });
        while let Some(ended) = deletes.try_join_next() {
            ended.map_err(driver_error)??;
        }
    }
    while let Some(ended) = deletes.join_next().await {
        ended.map_err(driver_error)??;
    }
    Ok((partitions, orphaned))
}
