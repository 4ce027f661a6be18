//! Versioned CQL schema: the files in `store/scylla/schema/`, applied in order by
//! `gateway migrate` and recorded in `schema_versions`. Every statement is idempotent
//! (`IF NOT EXISTS`, or an `ALTER` to fixed options), so running it again (after an
//! interruption, or on every deploy) changes nothing; a keyspace already at a newer version
//! than this build knows is refused rather than touched.
//!
//! - **Rolling upgrades**: every version after the first is additive, so a gateway serves a
//!   keyspace at its own version or one newer ([`SCHEMA_VERSION`] + 1): migrate first, then
//!   roll the gateways. A keyspace older than the build is refused (`gateway migrate`).
//! - **Replication**: `CREATE KEYSPACE IF NOT EXISTS` would ignore a changed
//!   `[store] replication`, so `migrate` compares it with the keyspace's: a data center added
//!   or a factor raised is applied (`ALTER KEYSPACE`) and the report says what the operator
//!   runs next (`nodetool rebuild`, repair); a data center removed or a factor lowered is
//!   refused, since that drops replicas and is done by hand after decommissioning.
//! - **Tables checked**: at migrate and at open, every table and column the schema files
//!   declare must exist with its type, or the error names what differs.
//! - **Engines**: on ScyllaDB, users' tables get `tombstone_gc = {'mode': 'repair'}` (a
//!   tombstone is purged only after a repair has seen it, so a deleted rating cannot come
//!   back from a replica that missed the delete); Cassandra has no such option and relies on
//!   `gc_grace_seconds` (10 days) outliving the repair interval (ARCHITECTURE.md). The change
//!   logs, never deleted from, get `immediate` mode, so their expired rows leave at once.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use marquee_store::StoreError;

use crate::options::ScyllaOptions;
use crate::session::{Cluster, Kind, ScyllaError, driver_error, execution_error};

/// One schema file.
struct Migration {
    version: i32,
    name: &'static str,
    cql: &'static str,
}

/// Every schema version this build knows, oldest first.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_catalog_and_users",
        cql: include_str!("../schema/0001_catalog_and_users.cql"),
    },
    Migration {
        version: 2,
        name: "0002_change_log_expiry",
        cql: include_str!("../schema/0002_change_log_expiry.cql"),
    },
    Migration {
        version: 3,
        name: "0003_reconcile_leases",
        cql: include_str!("../schema/0003_reconcile_leases.cql"),
    },
    Migration {
        version: 4,
        name: "0004_rating_log_marks",
        cql: include_str!("../schema/0004_rating_log_marks.cql"),
    },
    Migration { version: 5, name: "0005_late_rows", cql: include_str!("../schema/0005_late_rows.cql") },
    Migration {
        version: 6,
        name: "0006_load_progress",
        cql: include_str!("../schema/0006_load_progress.cql"),
    },
    Migration {
        version: 7,
        name: "0007_catalog_writes",
        cql: include_str!("../schema/0007_catalog_writes.cql"),
    },
    Migration { version: 8, name: "0008_catalog_log", cql: include_str!("../schema/0008_catalog_log.cql") },
];

/// The version this build migrates a keyspace to; it serves from this one or the next.
pub const SCHEMA_VERSION: i32 = 8;

/// Tables deletes happen in (users' data; the catalog since live changes, schema version 7),
/// so their tombstones must not be purged before a repair (ScyllaDB's `tombstone_gc` repair
/// mode): a deleted rating or search row must not come back from a replica that missed it.
const DELETED_FROM: &[&str] = &[
    "ratings_by_user",
    "ratings_by_user_time",
    "watchlist_by_user",
    "watchlist_by_user_time",
    "movie_ratings",
    "rating_totals",
    "movies_by_id",
    "people_by_id",
    "credits_by_movie",
    "credits_by_person",
    "movies_by_genre_year",
    "title_search",
    "catalog_pending",
];

/// The change logs: rows only ever inserted with a time to live, never deleted, compacted by
/// time window. ScyllaDB's default `tombstone_gc` mode, `repair`, would keep their expired
/// rows on disk until a repair ran; `immediate` is its documented mode for "a table that uses
/// the TWCS compaction strategy with no user deletes" (ScyllaDB's CQL reference, Data
/// Definition, tombstone GC options), so whole expired SSTables are dropped when they expire.
const EXPIRED_ONLY: &[&str] = &["rating_changes", "catalog_log"];

const VERSIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS {keyspace}.schema_versions (
    version int PRIMARY KEY, name text, applied_at bigint)";

/// What `gateway migrate` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions found already applied.
    pub already_applied: Vec<i32>,
    /// Versions applied now, in order.
    pub applied: Vec<i32>,
    /// The replication change applied now, with what the operator runs next.
    pub replication_change: Option<String>,
    /// The engine found: `ScyllaDB` or `Cassandra`.
    pub engine: &'static str,
}

/// The statements of a schema file: comments removed, split on `;`.
fn statements(cql: &str) -> Vec<String> {
    let without_comments: String = cql
        .lines()
        .map(|line| line.split_once("--").map_or(line, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n");
    without_comments
        .split(';')
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty())
        .collect()
}

/// `CREATE KEYSPACE` with the configured replication map.
fn keyspace_statement(options: &ScyllaOptions) -> String {
    let factors: Vec<String> = options.replication.iter().map(|(dc, rf)| format!("'{dc}': {rf}")).collect();
    format!(
        "CREATE KEYSPACE IF NOT EXISTS {} WITH replication = {{'class': 'NetworkTopologyStrategy', {}}}",
        options.keyspace,
        factors.join(", ")
    )
}

/// A keyspace's replication as `system_schema.keyspaces` holds it: data center → factor.
type Replication = std::collections::BTreeMap<String, u32>;

/// How a keyspace's replication is brought to `[store] replication`: the `ALTER KEYSPACE`
/// statements in order, and what the operator runs after them.
#[derive(Debug, PartialEq, Eq)]
struct ReplicationPlan {
    alters: Vec<String>,
    next: String,
}

/// What to do about a keyspace whose replication differs from `[store] replication`: nothing
/// (`None`), a plan, or a refusal (replicas removed). A vnode keyspace (Cassandra, or
/// ScyllaDB without tablets) takes one ALTER, then `nodetool rebuild` in a new data center
/// or a repair where a factor rose; a tablets keyspace (ScyllaDB's default) accepts a factor
/// changed by at most 1 per ALTER and moves the replicas itself, so no rebuild or repair.
fn plan_replication(
    keyspace: &str,
    current: &Replication,
    wanted: &Replication,
    tablets: bool,
) -> Result<Option<ReplicationPlan>, String> {
    if current == wanted {
        return Ok(None);
    }
    let shrunk: Vec<String> = current
        .iter()
        .filter(|(dc, rf)| wanted.get(*dc).is_none_or(|want| want < rf))
        .map(|(dc, rf)| format!("{dc} {rf} -> {}", wanted.get(dc).copied().unwrap_or(0)))
        .collect();
    if !shrunk.is_empty() {
        return Err(format!(
            "keyspace {keyspace} replicates {current:?}; [store] replication {wanted:?} removes replicas ({}). \
             Migrate does not drop replicas: decommission first, then ALTER KEYSPACE by hand (docs/scylladb.md)",
            shrunk.join(", ")
        ));
    }
    let alter = |factors: &Replication| {
        let factors: Vec<String> = factors.iter().map(|(dc, rf)| format!("'{dc}': {rf}")).collect();
        format!(
            "ALTER KEYSPACE {keyspace} WITH replication = {{'class': 'NetworkTopologyStrategy', {}}}",
            factors.join(", ")
        )
    };
    if tablets {
        let mut step = current.clone();
        let mut alters = Vec::new();
        for (dc, &rf) in wanted {
            while step.get(dc).copied().unwrap_or(0) < rf {
                *step.entry(dc.clone()).or_insert(0) += 1;
                alters.push(alter(&step));
            }
        }
        let next = "tablets: ScyllaDB streams the new replicas itself; no rebuild or repair".to_owned();
        return Ok(Some(ReplicationPlan { alters, next }));
    }
    let source = current.keys().next().cloned().unwrap_or_default();
    let mut next = Vec::new();
    for (dc, rf) in wanted {
        match current.get(dc) {
            None => next.push(format!(
                "data center {dc} added: on each of its nodes run `nodetool rebuild -- {source}` (streams the \
                 existing data), then a full repair, before its gateways serve"
            )),
            Some(old) if old < rf => next.push(format!(
                "data center {dc} raised from {old} to {rf} replicas: run `nodetool repair -full {keyspace}` on \
                 each of its nodes before reading at LOCAL_QUORUM there"
            )),
            Some(_) => {}
        }
    }
    Ok(Some(ReplicationPlan { alters: vec![alter(wanted)], next: next.join("; ") }))
}

/// Whether a ScyllaDB keyspace uses tablets (`system_schema.scylla_keyspaces`); Cassandra
/// has no tablets.
async fn uses_tablets(cluster: &Cluster, engine: &str) -> Result<bool, StoreError> {
    if engine != "ScyllaDB" {
        return Ok(false);
    }
    let result = cluster
        .session
        .query_unpaged(
            "SELECT initial_tablets FROM system_schema.scylla_keyspaces WHERE keyspace_name = ?",
            (cluster.keyspace.as_str(),),
        )
        .await
        .map_err(execution_error)?;
    let row = result.into_rows_result().map_err(driver_error)?.maybe_first_row::<(Option<i32>,)>();
    Ok(matches!(row, Ok(Some((Some(_),)))))
}

/// The keyspace's replication, `None` when it does not exist.
async fn keyspace_replication(cluster: &Cluster) -> Result<Option<Replication>, StoreError> {
    let result = cluster
        .session
        .query_unpaged(
            "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = ?",
            (cluster.keyspace.as_str(),),
        )
        .await
        .map_err(execution_error)?;
    let row = result
        .into_rows_result()
        .map_err(driver_error)?
        .maybe_first_row::<(std::collections::HashMap<String, String>,)>()
        .map_err(driver_error)?;
    // `class` names the strategy; `replication_factor` is SimpleStrategy's (or an
    // auto-expansion Cassandra rewrites per data center), never a data center.
    Ok(row.map(|(map,)| {
        map.into_iter()
            .filter(|(key, _)| key != "class" && key != "replication_factor")
            .filter_map(|(dc, rf)| Some((dc, rf.parse().ok()?)))
            .collect()
    }))
}

/// `ScyllaDB` when the cluster is ScyllaDB (it has `system.scylla_local`), else `Cassandra`.
async fn engine(cluster: &Cluster) -> Result<&'static str, StoreError> {
    let result = cluster
        .session
        .query_unpaged(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = 'system' AND table_name = 'scylla_local'",
            (),
        )
        .await
        .map_err(execution_error)?;
    let rows = result.into_rows_result().map_err(driver_error)?;
    Ok(if rows.rows_num() > 0 { "ScyllaDB" } else { "Cassandra" })
}

/// The `tombstone_gc` statements for ScyllaDB (see the module docs).
fn tombstone_gc_statements() -> Vec<String> {
    let mode = |tables: &[&str], mode: &str| {
        tables
            .iter()
            .map(|table| format!("ALTER TABLE {{keyspace}}.{table} WITH tombstone_gc = {{'mode': '{mode}'}}"))
            .collect::<Vec<_>>()
    };
    [mode(DELETED_FROM, "repair"), mode(EXPIRED_ONLY, "immediate")].concat()
}

/// Every column the schema files declare, by table: `(table, column, type)`, from their
/// `CREATE TABLE` statements.
fn declared_columns() -> Vec<(String, String, String)> {
    let mut columns = Vec::new();
    for migration in MIGRATIONS {
        for statement in statements(migration.cql) {
            let Some(rest) = statement.strip_prefix("CREATE TABLE IF NOT EXISTS {keyspace}.") else {
                continue;
            };
            let Some((table, body)) = rest.split_once(" (") else { continue };
            // Column definitions are `name type [PRIMARY KEY]`; the key clause's pieces are
            // the segments with parentheses.
            for column in body.split(',').filter(|c| !c.contains(['(', ')'])) {
                let mut words = column.split_whitespace();
                if let (Some(name), Some(kind)) = (words.next(), words.next()) {
                    columns.push((table.to_owned(), name.to_owned(), kind.to_owned()));
                }
            }
        }
    }
    columns
}

/// Refuses a keyspace that lacks a declared table or column, or holds one with another type.
async fn check_tables(cluster: &Cluster) -> Result<(), StoreError> {
    let result = cluster
        .session
        .query_unpaged(
            "SELECT table_name, column_name, type FROM system_schema.columns WHERE keyspace_name = ?",
            (cluster.keyspace.as_str(),),
        )
        .await
        .map_err(execution_error)?;
    let rows = result.into_rows_result().map_err(driver_error)?;
    let mut found = std::collections::HashMap::new();
    for row in rows.rows::<(String, String, String)>().map_err(driver_error)? {
        let (table, column, kind) = row.map_err(driver_error)?;
        found.insert((table, column), kind);
    }
    if found.is_empty() {
        // Every migrated keyspace lists columns (`schema_versions` at least); only the CQL
        // stand-in, which keeps no schema metadata, lists none.
        tracing::warn!(keyspace = %cluster.keyspace, "the cluster lists no columns; table check skipped");
        return Ok(());
    }
    let mut wrong = Vec::new();
    for (table, column, kind) in declared_columns() {
        match found.get(&(table.clone(), column.clone())) {
            None => wrong.push(format!("{table}.{column} is missing")),
            Some(actual) if *actual != kind => {
                wrong.push(format!("{table}.{column} is {actual}, not {kind}"))
            }
            Some(_) => {}
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(StoreError::backend(ScyllaError::Schema(format!(
            "keyspace {} does not match the schema this build reads: {}",
            cluster.keyspace,
            wrong.join("; ")
        ))))
    }
}

async fn run(cluster: &Cluster, cql: &str) -> Result<(), StoreError> {
    let statement = cql.replace("{keyspace}", &cluster.keyspace);
    let mut query = scylla::statement::unprepared::Statement::new(statement);
    query.set_execution_profile_handle(Some(cluster.profile(Kind::Bulk)));
    cluster.session.query_unpaged(query, ()).await.map_err(execution_error)?;
    Ok(())
}

/// How long `migrate` waits for another data center's nodes to take a schema change.
const REMOTE_AGREEMENT: Duration = Duration::from_secs(30);

/// Schema agreement in every data center, before `migrate` writes to what it created.
///
/// The driver awaits agreement after each change, but only among the nodes it connects to:
/// the local data center's (`local_dc` filters the rest out). A table just created may not
/// exist yet in another region, where an `EACH_QUORUM` write to it fails with
/// `INCOMPATIBLE_SCHEMA` (seen on a two-data-center Cassandra under concurrent schema
/// changes). So the local nodes' agreed version is compared with every peer's in
/// `system.peers` as well, which holds each node's schema version as gossip last reported it
/// (Cassandra and ScyllaDB alike).
#[derive(Default)]
struct Agreement {
    /// Set once a wait ran out: a node that is down reports an old version until it returns
    /// (and pulls the schema then), so this run waits no longer.
    gave_up: bool,
}

impl Agreement {
    async fn wait(&mut self, cluster: &Cluster) -> Result<(), StoreError> {
        if self.gave_up {
            return Ok(());
        }
        let deadline = std::time::Instant::now() + REMOTE_AGREEMENT;
        loop {
            let behind = match cluster.session.check_schema_agreement().await {
                Ok(Some(version)) => behind_peers(cluster, version).await?,
                Ok(None) => vec!["a node of the local data center".to_owned()],
                Err(error) => return Err(driver_error(error)),
            };
            if behind.is_empty() {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                tracing::warn!(
                    behind = %behind.join(", "),
                    "schema agreement not reached in {REMOTE_AGREEMENT:?}; a node that is down takes the \
                     schema when it returns, and writes needing it fail until then"
                );
                self.gave_up = true;
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The peers (`address (data center)`) whose schema version is not `version`.
async fn behind_peers(cluster: &Cluster, version: uuid::Uuid) -> Result<Vec<String>, StoreError> {
    let result = cluster
        .session
        .query_unpaged("SELECT peer, data_center, schema_version FROM system.peers", ())
        .await
        .map_err(execution_error)?;
    let rows = result.into_rows_result().map_err(driver_error)?;
    let mut behind = Vec::new();
    for row in rows.rows::<(std::net::IpAddr, Option<String>, Option<uuid::Uuid>)>().map_err(driver_error)? {
        let (peer, data_center, peer_version) = row.map_err(driver_error)?;
        if peer_version != Some(version) {
            behind.push(format!("{peer} ({})", data_center.unwrap_or_default()));
        }
    }
    Ok(behind)
}

/// The schema versions recorded in the keyspace.
async fn applied_versions(cluster: &Cluster) -> Result<Vec<i32>, StoreError> {
    let statement = format!("SELECT version FROM {}.schema_versions", cluster.keyspace);
    let result = cluster.session.query_unpaged(statement, ()).await.map_err(execution_error)?;
    let rows = result.into_rows_result().map_err(driver_error)?;
    let mut versions = Vec::new();
    for row in rows.rows::<(i32,)>().map_err(driver_error)? {
        versions.push(row.map_err(driver_error)?.0);
    }
    versions.sort_unstable();
    Ok(versions)
}

/// Creates the keyspace (or brings its replication up to `[store] replication`), applies every
/// schema version it lacks, applies the engine's table options and checks every table.
pub async fn migrate(options: &ScyllaOptions) -> Result<MigrationReport, StoreError> {
    let cluster = Cluster::connect(options).await?;
    let mut report = MigrationReport { engine: engine(&cluster).await?, ..MigrationReport::default() };
    match keyspace_replication(&cluster).await? {
        None => run(&cluster, &keyspace_statement(options)).await?,
        // A keyspace listing no data center (the CQL stand-in's) has nothing to compare.
        Some(current) if current.is_empty() => {
            tracing::warn!(keyspace = %options.keyspace, "the keyspace lists no data centers; replication not compared");
        }
        Some(current) => {
            let wanted: Replication = options.replication.clone().into_iter().collect();
            let tablets = uses_tablets(&cluster, report.engine).await?;
            match plan_replication(&options.keyspace, &current, &wanted, tablets) {
                Ok(None) => {}
                Ok(Some(plan)) => {
                    for alter in &plan.alters {
                        tracing::info!(%alter, "changing the keyspace's replication");
                        run(&cluster, alter).await?;
                    }
                    report.replication_change =
                        Some(format!("{}; next: {}", plan.alters.join("; "), plan.next));
                }
                Err(refusal) => return Err(StoreError::backend(ScyllaError::Schema(refusal))),
            }
        }
    }
    run(&cluster, VERSIONS_TABLE).await?;
    let mut agreement = Agreement::default();
    if options.await_schema_agreement {
        agreement.wait(&cluster).await?;
    }
    let already = applied_versions(&cluster).await?;
    if let Some(&newest) = already.last()
        && newest > SCHEMA_VERSION
    {
        return Err(StoreError::backend(ScyllaError::Schema(format!(
            "keyspace {} is at schema version {newest}, newer than this build's {SCHEMA_VERSION}; \
             migrate with a newer gateway",
            options.keyspace
        ))));
    }
    report.already_applied = already.clone();
    for migration in MIGRATIONS.iter().filter(|m| !already.contains(&m.version)) {
        tracing::info!(version = migration.version, name = migration.name, "applying schema version");
        for statement in statements(migration.cql) {
            run(&cluster, &statement).await?;
        }
        if options.await_schema_agreement {
            agreement.wait(&cluster).await?;
        }
        let record = cluster
            .prepare(
                Kind::Bulk,
                "INSERT INTO {keyspace}.schema_versions (version, name, applied_at) VALUES (?, ?, ?)",
            )
            .await?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        cluster
            .session
            .execute_unpaged(&record, (migration.version, migration.name, now))
            .await
            .map_err(execution_error)?;
        report.applied.push(migration.version);
    }
    if report.engine == "ScyllaDB" {
        for statement in tombstone_gc_statements() {
            run(&cluster, &statement).await?;
        }
    }
    check_tables(&cluster).await?;
    Ok(report)
}

/// Refuses to serve from a keyspace not at [`SCHEMA_VERSION`] or the one after it (see the
/// module docs), or whose tables differ from the schema files.
pub(crate) async fn check(cluster: &Cluster) -> Result<(), StoreError> {
    let versions = match applied_versions(cluster).await {
        Ok(versions) => versions,
        Err(error) if error.is_retryable() => return Err(error),
        Err(error) => {
            return Err(StoreError::backend(ScyllaError::Schema(format!(
                "keyspace {} has no Marquee schema ({error}); run `gateway migrate` first",
                cluster.keyspace
            ))));
        }
    };
    match versions.last() {
        Some(&version) if served(version) => check_tables(cluster).await,
        Some(&newer) if newer > SCHEMA_VERSION => Err(StoreError::backend(ScyllaError::Schema(format!(
            "keyspace {} is at schema version {newer}; this build serves {SCHEMA_VERSION} and {}: deploy a newer gateway",
            cluster.keyspace,
            SCHEMA_VERSION + 1
        )))),
        other => Err(StoreError::backend(ScyllaError::Schema(format!(
            "keyspace {} is at schema version {}, this build needs {SCHEMA_VERSION}; run `gateway migrate`",
            cluster.keyspace,
            other.map_or_else(|| "none".to_owned(), i32::to_string)
        )))),
    }
}

/// Whether this build serves from a keyspace at `version`: its own, or the next (additive).
fn served(version: i32) -> bool {
    version == SCHEMA_VERSION || version == SCHEMA_VERSION + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_files_split_into_statements_without_comments() {
        let statements = statements(MIGRATIONS[0].cql);
        assert!(statements.len() >= 10, "{statements:?}");
        assert!(statements.iter().all(|s| s.starts_with("CREATE TABLE IF NOT EXISTS {keyspace}.")));
        assert!(statements.iter().all(|s| !s.contains("--")));
        assert_eq!(MIGRATIONS.last().map(|m| m.version), Some(SCHEMA_VERSION));
        let versions: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
    }

    #[test]
    fn versions_after_the_first_only_add_or_alter_options() {
        for migration in &MIGRATIONS[1..] {
            for statement in statements(migration.cql) {
                let additive = statement.starts_with("CREATE TABLE IF NOT EXISTS")
                    || (statement.starts_with("ALTER TABLE") && statement.contains(" WITH "))
                    || (statement.starts_with("ALTER TABLE") && statement.contains(" ADD "));
                assert!(additive, "{}: not additive: {statement}", migration.name);
            }
        }
    }

    #[test]
    fn declared_columns_come_from_the_create_statements() {
        let columns = declared_columns();
        let has = |table: &str, column: &str, kind: &str| {
            columns.iter().any(|(t, c, k)| t == table && c == column && k == kind)
        };
        assert!(has("catalog_generations", "genre_movies", "list<bigint>"), "{columns:?}");
        assert!(has("rating_changes", "slot", "bigint"));
        assert!(has("movie_ratings", "user_id", "text"));
        assert!(!columns.iter().any(|(_, c, _)| c == "PRIMARY" || c.starts_with('(')), "{columns:?}");
    }

    #[test]
    fn a_build_serves_its_version_and_the_next_only() {
        assert!(served(SCHEMA_VERSION) && served(SCHEMA_VERSION + 1));
        assert!(!served(SCHEMA_VERSION - 1) && !served(SCHEMA_VERSION + 2));
    }

    #[test]
    fn replication_grows_by_alter_with_the_next_steps_and_never_shrinks() {
        let map = |pairs: &[(&str, u32)]| -> Replication {
            pairs.iter().map(|(d, r)| ((*d).to_owned(), *r)).collect()
        };
        let east = map(&[("us-east", 3)]);
        let both = map(&[("us-east", 3), ("eu-west", 3)]);
        assert_eq!(plan_replication("marquee", &east, &east, false), Ok(None));
        let plan = plan_replication("marquee", &east, &both, false).expect("grows").expect("a change");
        assert_eq!(
            plan.alters,
            [
                "ALTER KEYSPACE marquee WITH replication = {'class': 'NetworkTopologyStrategy', 'eu-west': 3, 'us-east': 3}"
            ]
        );
        assert!(
            plan.next.contains("nodetool rebuild -- us-east") && plan.next.contains("eu-west"),
            "{}",
            plan.next
        );
        let raised =
            plan_replication("marquee", &map(&[("us-east", 1)]), &east, false).expect("ok").expect("change");
        assert!(raised.next.contains("repair -full marquee"), "{}", raised.next);
        let removed = plan_replication("marquee", &both, &east, false).expect_err("refused");
        assert!(removed.contains("eu-west 3 -> 0"), "{removed}");
        plan_replication("marquee", &east, &map(&[("us-east", 2)]), false).expect_err("lowering refused");
        plan_replication("marquee", &east, &map(&[("us-east", 2)]), true)
            .expect_err("lowering refused on tablets");
    }

    #[test]
    fn a_tablets_keyspace_grows_one_replica_per_alter() {
        let map = |pairs: &[(&str, u32)]| -> Replication {
            pairs.iter().map(|(d, r)| ((*d).to_owned(), *r)).collect()
        };
        let plan = plan_replication(
            "marquee",
            &map(&[("us-east", 3)]),
            &map(&[("us-east", 3), ("eu-west", 2)]),
            true,
        )
        .expect("grows")
        .expect("a change");
        assert_eq!(
            plan.alters,
            [
                "ALTER KEYSPACE marquee WITH replication = {'class': 'NetworkTopologyStrategy', 'eu-west': 1, 'us-east': 3}",
                "ALTER KEYSPACE marquee WITH replication = {'class': 'NetworkTopologyStrategy', 'eu-west': 2, 'us-east': 3}",
            ]
        );
        assert!(plan.next.contains("no rebuild"), "{}", plan.next);
    }

    #[test]
    fn scylla_gets_the_tombstone_gc_mode_each_table_needs() {
        let statements = tombstone_gc_statements();
        assert_eq!(statements.len(), DELETED_FROM.len() + EXPIRED_ONLY.len());
        assert!(statements.contains(
            &"ALTER TABLE {keyspace}.ratings_by_user WITH tombstone_gc = {'mode': 'repair'}".to_owned()
        ));
        assert!(statements.contains(
            &"ALTER TABLE {keyspace}.catalog_log WITH tombstone_gc = {'mode': 'immediate'}".to_owned()
        ));
        let declared: std::collections::HashSet<String> =
            declared_columns().into_iter().map(|(t, _, _)| t).collect();
        assert!(
            DELETED_FROM.iter().chain(EXPIRED_ONLY).all(|t| declared.contains(*t)),
            "a table the schema lacks"
        );
        assert!(!EXPIRED_ONLY.iter().any(|t| DELETED_FROM.contains(t)), "a table deleted from");
    }

    #[test]
    fn the_keyspace_replicates_to_every_configured_data_center() {
        let options = ScyllaOptions {
            replication: [("eu-west".to_owned(), 3), ("us-east".to_owned(), 2)].into(),
            ..ScyllaOptions::default()
        };
        assert_eq!(
            keyspace_statement(&options),
            "CREATE KEYSPACE IF NOT EXISTS marquee WITH replication = \
             {'class': 'NetworkTopologyStrategy', 'eu-west': 3, 'us-east': 2}"
        );
    }
}
