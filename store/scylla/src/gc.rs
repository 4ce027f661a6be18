//! Removing catalog generations nobody serves any more (`gateway catalog gc`).
//!
//! Every load writes a whole new generation (tens of GB at 5M movies, times the replication
//! factor and the data centers), and nothing else removes the old ones. A generation is
//! removed when it is neither the current one nor newer than it (a load in progress), and
//! either a newer generation was published more than `grace` ago (every gateway follows
//! `catalog_state` within seconds, so none serves it by then) or it is a load that never
//! finished and started more than `grace` ago (a rerun of the same load would have resumed
//! it).
//!
//! Its rows are found by scanning each catalog table's partition keys (`SELECT DISTINCT`,
//! paged by the driver) and removed a partition at a time, at the load's consistency, with
//! the load's concurrency and retries. A partition delete is one tombstone whatever the
//! partition holds; ScyllaDB drops it and the data under it at the first compaction after the
//! table's `gc_grace_seconds` (10 days by default, [its tombstone docs][ts]), so the disk comes
//! back then, not at once. The generation's row in `catalog_generations` goes last, so a
//! removal that stops part way is finished by running it again.
//!
//! [ts]: https://opensource.docs.scylladb.com/stable/kb/garbage-collection-ics.html

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use marquee_store::StoreError;
use scylla::value::CqlValue;

use crate::bulk::write_with_retries;
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
}

/// A generation's row as a collection sees it.
struct Listed {
    id: i64,
    state: Option<String>,
    started_at: i64,
    published_at: Option<i64>,
}

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
    let mut collected = Collected { current, ..Collected::default() };
    let mut doomed = Vec::new();
    for generation in &listed {
        match why_kept(generation, current, &listed, now, grace_ms) {
            Some(reason) => collected.kept.push((generation.id, reason)),
            None => doomed.push(generation.id),
        }
    }
    for id in doomed {
        collected.partitions += remove_generation(&cluster, options, id, dry).await?;
        collected.removed.push(id);
    }
    Ok(collected)
}

/// Why `generation` stays, or `None` when it goes.
fn why_kept(
    generation: &Listed,
    current: Option<i64>,
    all: &[Listed],
    now: i64,
    grace_ms: i64,
) -> Option<String> {
    let Some(current) = current else { return Some("no generation is current".into()) };
    if generation.id == current {
        return Some("served now".into());
    }
    if generation.id > current {
        return Some("newer than the current one (a load in progress or not yet switched to)".into());
    }
    if generation.state.as_deref() == Some("published") {
        // Superseded when the next newer published generation was published.
        let superseded = all
            .iter()
            .filter(|g| g.id > generation.id && g.state.as_deref() == Some("published"))
            .filter_map(|g| g.published_at)
            .min();
        return match superseded {
            Some(at) if now.saturating_sub(at) > grace_ms => None,
            Some(at) => {
                Some(format!("superseded {} s ago, within the grace period", (now - at).max(0) / 1000))
            }
            None => Some("no newer generation is published".into()),
        };
    }
    if now.saturating_sub(generation.started_at) > grace_ms {
        None
    } else {
        Some("an unfinished load started within the grace period (a rerun resumes it)".into())
    }
}

async fn list_generations(cluster: &Cluster) -> Result<Vec<Listed>, StoreError> {
    let statement = format!(
        "SELECT generation, state, started_at, published_at FROM {}.catalog_generations",
        cluster.keyspace
    );
    let mut query = scylla::statement::unprepared::Statement::new(statement);
    query.set_execution_profile_handle(Some(cluster.profile(Kind::Read)));
    let result = cluster.session.query_unpaged(query, ()).await.map_err(execution_error)?;
    let mut listed = Vec::new();
    type Row = (i64, Option<String>, Option<i64>, Option<i64>);
    for row in result.into_rows_result().map_err(driver_error)?.rows::<Row>().map_err(decode_error)? {
        let (id, state, started_at, published_at) = row.map_err(decode_error)?;
        listed.push(Listed { id, state, started_at: started_at.unwrap_or(0), published_at });
    }
    listed.sort_by_key(|g| g.id);
    Ok(listed)
}

/// Deletes every partition of `generation` (counts them when `dry`), then its rows in
/// `catalog_loads` and `catalog_generations`; the partitions it found.
async fn remove_generation(
    cluster: &Arc<Cluster>,
    options: &ScyllaOptions,
    generation: i64,
    dry: bool,
) -> Result<u64, StoreError> {
    let mut found = 0;
    for (table, key) in TABLES {
        let partitions = partitions_of(cluster, table, key, generation).await?;
        found += partitions.len() as u64;
        tracing::info!(
            generation,
            table,
            partitions = partitions.len(),
            dry,
            "removing a generation's partitions"
        );
        if dry {
            continue;
        }
        let condition: Vec<String> = key.split(", ").map(|column| format!("{column} = ?")).collect();
        let delete = cluster
            .prepare(
                Kind::Bulk,
                &format!(
                    "DELETE FROM {{keyspace}}.{table} WHERE generation = ? AND {}",
                    condition.join(" AND ")
                ),
            )
            .await?;
        let delete = Arc::new(delete);
        let permits = Arc::new(tokio::sync::Semaphore::new(options.load_concurrency));
        let mut deletes = tokio::task::JoinSet::new();
        for values in partitions {
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
    }
    if !dry {
        for cql in [
            "DELETE FROM {keyspace}.catalog_loads WHERE generation = ?",
            "DELETE FROM {keyspace}.catalog_generations WHERE generation = ?",
        ] {
            let statement = cluster.prepare(Kind::Bulk, cql).await?;
            write_with_retries(cluster, &statement, &[vec![CqlValue::BigInt(generation)]]).await?;
        }
        tracing::info!(generation, partitions = found, "removed a catalog generation");
    }
    Ok(found)
}

/// The partition keys of `generation` in `table` (each with `generation` first): a scan of
/// the table's partitions (`SELECT DISTINCT`), or, on a CQL server without `DISTINCT` (the
/// stand-in), of its rows.
async fn partitions_of(
    cluster: &Cluster,
    table: &str,
    key: &str,
    generation: i64,
) -> Result<Vec<Vec<CqlValue>>, StoreError> {
    let select = format!("SELECT DISTINCT generation, {key} FROM {{keyspace}}.{table}");
    // Read at LOCAL_QUORUM (EACH_QUORUM is for writes): the load wrote every partition to a
    // quorum of each data center, so the local one lists them all.
    let statement = match cluster.prepare(Kind::Read, &select).await {
        Ok(statement) => statement,
        Err(_) => cluster.prepare(Kind::Read, &select.replace("DISTINCT ", "")).await?,
    };
    let rows = cluster
        .session
        .execute_iter(statement, ())
        .await
        .map_err(driver_error)?
        .rows_stream::<scylla::value::Row>()
        .map_err(decode_error)?;
    let mut seen = HashSet::new();
    let mut partitions = Vec::new();
    let mut rows = std::pin::pin!(rows);
    while let Some(row) = rows.try_next().await.map_err(driver_error)? {
        let values: Vec<CqlValue> = row.columns.into_iter().map(|c| c.unwrap_or(CqlValue::Empty)).collect();
        if values.first() == Some(&CqlValue::BigInt(generation)) && seen.insert(format!("{values:?}")) {
            partitions.push(values);
        }
    }
    Ok(partitions)
}
