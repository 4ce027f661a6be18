//! Versioned CQL schema: the files in `store/scylla/schema/`, applied in order by
//! `gateway migrate` and recorded in `schema_versions`. Every statement is `IF NOT EXISTS`, so
//! running it again (after an interruption, or on every deploy) changes nothing; a keyspace
//! already at a newer version than this build knows is refused rather than touched, and a
//! gateway refuses to serve from a keyspace whose version is not exactly its own.

use std::time::{SystemTime, UNIX_EPOCH};

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
const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "0001_catalog_and_users",
    cql: include_str!("../schema/0001_catalog_and_users.cql"),
}];

/// The version a keyspace must be at for this build to serve from it.
pub const SCHEMA_VERSION: i32 = 1;

const VERSIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS {keyspace}.schema_versions (
    version int PRIMARY KEY, name text, applied_at bigint)";

/// What `gateway migrate` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions found already applied.
    pub already_applied: Vec<i32>,
    /// Versions applied now, in order.
    pub applied: Vec<i32>,
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

async fn run(cluster: &Cluster, cql: &str) -> Result<(), StoreError> {
    let statement = cql.replace("{keyspace}", &cluster.keyspace);
    let mut query = scylla::statement::unprepared::Statement::new(statement);
    query.set_execution_profile_handle(Some(cluster.profile(Kind::Bulk)));
    cluster.session.query_unpaged(query, ()).await.map_err(execution_error)?;
    Ok(())
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

/// Creates the keyspace and applies every schema version it lacks.
pub async fn migrate(options: &ScyllaOptions) -> Result<MigrationReport, StoreError> {
    let cluster = Cluster::connect(options).await?;
    run(&cluster, &keyspace_statement(options)).await?;
    run(&cluster, VERSIONS_TABLE).await?;
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
    let mut report = MigrationReport { already_applied: already.clone(), applied: Vec::new() };
    for migration in MIGRATIONS.iter().filter(|m| !already.contains(&m.version)) {
        tracing::info!(version = migration.version, name = migration.name, "applying schema version");
        for statement in statements(migration.cql) {
            run(&cluster, &statement).await?;
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
    Ok(report)
}

/// Refuses to serve from a keyspace that is not at exactly [`SCHEMA_VERSION`].
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
        Some(&SCHEMA_VERSION) => Ok(()),
        Some(&newer) if newer > SCHEMA_VERSION => Err(StoreError::backend(ScyllaError::Schema(format!(
            "keyspace {} is at schema version {newer}, newer than this build's {SCHEMA_VERSION}; deploy a newer gateway",
            cluster.keyspace
        )))),
        other => Err(StoreError::backend(ScyllaError::Schema(format!(
            "keyspace {} is at schema version {}, this build needs {SCHEMA_VERSION}; run `gateway migrate`",
            cluster.keyspace,
            other.map_or_else(|| "none".to_owned(), i32::to_string)
        )))),
    }
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
