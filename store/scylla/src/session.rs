//! The driver, set up the way ScyllaDB recommends for several data centers: token-aware,
//! DC-aware load balancing that stays in the local data center, one execution profile per kind
//! of statement (reads with speculative execution, writes, bulk loads), prepared statements
//! marked idempotent where they are, a bound on requests in flight, and no connection to
//! another data center's nodes at all (a host filter). Driver errors become
//! typed [`StoreError`]s here and nowhere else.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use marquee_store::{DriverFigures, StoreError, statements};
use scylla::client::execution_profile::{ExecutionProfile, ExecutionProfileHandle};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{DbError, ExecutionError, RequestAttemptError, RequestError};
use scylla::observability::history::{AttemptId, HistoryListener, RequestId, SpeculativeId};
use scylla::policies::host_filter::DcHostFilter;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::policies::retry::RetryDecision;
use scylla::policies::speculative_execution::SimpleSpeculativeExecutionPolicy;
use scylla::policies::timestamp_generator::MonotonicTimestampGenerator;
use scylla::statement::prepared::PreparedStatement;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::options::ScyllaOptions;

/// Bulk loads wait longer per request than the request path.
const BULK_TIMEOUT: Duration = Duration::from_secs(30);

/// Conditions only this backend has, wrapped in [`StoreError`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScyllaError {
    /// A driver error (the message says which).
    #[error("{0}")]
    Driver(String),
    /// The settings are inconsistent.
    #[error("invalid [store] settings: {0}")]
    Config(String),
    /// The keyspace's schema is not the one this build reads.
    #[error("{0}")]
    Schema(String),
}

/// Maps a request error: timeouts, unreachable or overloaded replicas and broken connections
/// are retryable ([`StoreError::Unavailable`]); statements the server refuses are not.
pub(crate) fn execution_error(error: ExecutionError) -> StoreError {
    let retryable = match &error {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, _)) => !matches!(
            db,
            DbError::SyntaxError
                | DbError::Invalid
                | DbError::AlreadyExists { .. }
                | DbError::FunctionFailure { .. }
                | DbError::AuthenticationError
                | DbError::Unauthorized
                | DbError::ConfigError
                | DbError::ProtocolError
        ),
        ExecutionError::LastAttemptError(
            RequestAttemptError::SerializationError(_)
            | RequestAttemptError::CqlRequestSerialization(_)
            | RequestAttemptError::CqlResultParseError(_)
            | RequestAttemptError::UnexpectedResponse(_),
        )
        | ExecutionError::BadQuery(_)
        | ExecutionError::UseKeyspaceError(_) => false,
        _ => true,
    };
    let error = ScyllaError::Driver(error.to_string());
    if retryable { StoreError::unavailable(error) } else { StoreError::backend(error) }
}

/// Any other driver error (preparing, connecting, decoding rows).
pub(crate) fn driver_error(error: impl fmt::Display) -> StoreError {
    StoreError::unavailable(ScyllaError::Driver(error.to_string()))
}

/// A row that did not decode as this build expects.
pub(crate) fn decode_error(error: impl fmt::Display) -> StoreError {
    StoreError::Corrupt { what: "row", detail: error.to_string() }
}

/// Counts speculative executions of the statements it is attached to.
#[derive(Debug, Default)]
pub(crate) struct SpeculationCounter {
    ids: AtomicUsize,
    speculative: AtomicU64,
}

impl SpeculationCounter {
    fn next(&self) -> usize {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }
}

impl HistoryListener for SpeculationCounter {
    fn log_request_start(&self) -> RequestId {
        RequestId(self.next())
    }
    fn log_request_success(&self, _: RequestId) {}
    fn log_request_error(&self, _: RequestId, _: &RequestError) {}
    fn log_new_speculative_fiber(&self, _: RequestId) -> SpeculativeId {
        self.speculative.fetch_add(1, Ordering::Relaxed);
        SpeculativeId(self.next())
    }
    fn log_attempt_start(
        &self,
        _: RequestId,
        _: Option<SpeculativeId>,
        _: std::net::SocketAddr,
    ) -> AttemptId {
        AttemptId(self.next())
    }
    fn log_attempt_success(&self, _: AttemptId) {}
    fn log_attempt_error(&self, _: AttemptId, _: &RequestAttemptError, _: &RetryDecision) {}
}

/// One request-path statement in flight (see [`Cluster::slot`]).
pub(crate) struct Slot<'c> {
    _permit: tokio::sync::SemaphorePermit<'c>,
    _sent: statements::InFlight,
}

/// The span of one CQL statement (`cql`) made within a traced call: its verb and table, from the prepared text (which
/// holds bind markers, never values), and the consistency it runs at; [`record_rows`] adds
/// the rows it returned.
pub(crate) fn statement_span(statement: &PreparedStatement) -> tracing::Span {
    // Background statements (leases, the reconciler, probes) outside any span trace nothing.
    if tracing::Span::current().is_none() {
        return tracing::Span::none();
    }
    tracing::debug_span!(
        "cql",
        otel.kind = "client",
        statement = %StatementName(statement.get_statement()),
        consistency = ?statement
            .get_consistency()
            .or_else(|| statement.get_execution_profile_handle().map(|p| p.to_profile().get_consistency())),
        rows = tracing::field::Empty,
    )
}

/// Records in `span` how many rows `result` holds (when the span is recorded at all).
pub(crate) fn record_rows(span: &tracing::Span, result: &scylla::response::query_result::QueryResult) {
    if !span.is_disabled()
        && let Ok(rows) = result.clone().into_rows_result()
    {
        span.record("rows", rows.rows_num());
    }
}

/// A statement's verb and table, e.g. `SELECT movies` for `SELECT body FROM ks.movies WHERE ...`.
struct StatementName<'a>(&'a str);

impl fmt::Display for StatementName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut words = self.0.split_whitespace();
        let verb = words.next().unwrap_or("?");
        let table = if verb.eq_ignore_ascii_case("update") {
            words.next()
        } else {
            words.by_ref().find(|w| w.eq_ignore_ascii_case("from") || w.eq_ignore_ascii_case("into"));
            words.next()
        };
        let table = table.map(|t| t.rsplit('.').next().unwrap_or(t).trim_end_matches(['(', ';']));
        write!(f, "{} {}", verb.to_ascii_uppercase(), table.unwrap_or("?"))
    }
}

/// What kind of statement, which picks its execution profile.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Request-path read: idempotent, speculative execution, read consistency.
    Read,
    /// Request-path write (idempotent when it is an upsert or delete of given keys).
    Write,
    /// Catalog load and schema statements: longer timeout, the load consistency.
    Bulk,
}

/// One connected session with its profiles and in-flight bound.
pub(crate) struct Cluster {
    pub(crate) session: Session,
    pub(crate) keyspace: String,
    reads: ExecutionProfileHandle,
    writes: ExecutionProfileHandle,
    bulk: ExecutionProfileHandle,
    slots: Semaphore,
    speculation: Arc<SpeculationCounter>,
    pub(crate) page_size: i32,
}

impl Cluster {
    /// Connects to the contact points and discovers the cluster.
    pub(crate) async fn connect(options: &ScyllaOptions) -> Result<Cluster, StoreError> {
        options.validate().map_err(|e| StoreError::backend(ScyllaError::Config(e)))?;
        let policy = DefaultPolicy::builder()
            .prefer_datacenter(options.local_dc.clone())
            .token_aware(true)
            .permit_dc_failover(false)
            .build();
        let timeout = options.request_timeout();
        let mut reads = ExecutionProfile::builder()
            .consistency(options.read_consistency.driver())
            .request_timeout(Some(timeout))
            .load_balancing_policy(policy.clone());
        if options.speculative_delay_ms > 0 {
            reads = reads.speculative_execution_policy(Some(Arc::new(SimpleSpeculativeExecutionPolicy {
                max_retry_count: 1,
                retry_interval: Duration::from_millis(options.speculative_delay_ms),
            })));
        }
        let writes = ExecutionProfile::builder()
            .consistency(options.write_consistency.driver())
            .request_timeout(Some(timeout))
            .load_balancing_policy(policy.clone())
            .build();
        let bulk = ExecutionProfile::builder()
            .consistency(options.load_consistency.driver())
            .request_timeout(Some(BULK_TIMEOUT.max(timeout)))
            .load_balancing_policy(policy)
            .build();
        let mut builder = SessionBuilder::new()
            .known_nodes(&options.contact_points)
            // No pools to another region's nodes: requests never leave the local data center
            // (the policy above), so connections across the WAN would only cost sockets,
            // heartbeats and reconnects to every remote node on every gateway.
            .host_filter(Arc::new(DcHostFilter::new(options.local_dc.clone())))
            .default_execution_profile_handle(writes.clone().into_handle())
            .auto_await_schema_agreement(options.await_schema_agreement)
            // Client-side write timestamps: when two regions write the same row, the later
            // write wins wherever it is read.
            .timestamp_generator(Arc::new(MonotonicTimestampGenerator::new()))
            .connection_timeout(timeout.max(Duration::from_secs(5)));
        if let Some(user) = &options.username {
            let password = options
                .password()
                .map_err(|e| StoreError::io("reading store.password_file", e))?
                .unwrap_or_default();
            builder = builder.user(user, password);
        }
        let tls =
            crate::tls::client_config(options).map_err(|e| StoreError::backend(ScyllaError::Config(e)))?;
        let tls_state = if tls.is_some() { "TLS on" } else { "TLS off" };
        builder = builder.tls_context(tls);
        // The driver's own message names neither the nodes nor how it tried to reach them.
        let session = builder.build().await.map_err(|e| {
            driver_error(format_args!(
                "connecting to {} (data center {}, {tls_state}): {e}",
                options.contact_points.join(", "),
                options.local_dc
            ))
        })?;
        Ok(Cluster {
            session,
            keyspace: options.keyspace.clone(),
            reads: reads.build().into_handle(),
            writes: writes.into_handle(),
            bulk: bulk.into_handle(),
            slots: Semaphore::new(options.max_in_flight),
            speculation: Arc::new(SpeculationCounter::default()),
            page_size: i32::try_from(options.page_size).unwrap_or(i32::MAX),
        })
    }

    /// Prepares `cql` (with `{keyspace}` replaced) for statements of `kind`.
    pub(crate) async fn prepare(&self, kind: Kind, cql: &str) -> Result<PreparedStatement, StoreError> {
        let text = cql.replace("{keyspace}", &self.keyspace);
        let mut statement = self.session.prepare(text).await.map_err(driver_error)?;
        statement.set_page_size(self.page_size);
        match kind {
            Kind::Read => {
                statement.set_execution_profile_handle(Some(self.reads.clone()));
                statement.set_is_idempotent(true);
                statement.set_history_listener(self.speculation.clone());
            }
            Kind::Write => {
                statement.set_execution_profile_handle(Some(self.writes.clone()));
                statement.set_is_idempotent(true);
            }
            Kind::Bulk => {
                statement.set_execution_profile_handle(Some(self.bulk.clone()));
                statement.set_is_idempotent(true);
            }
        }
        Ok(statement)
    }

    /// The profile of `kind`, for batches and unprepared statements.
    pub(crate) fn profile(&self, kind: Kind) -> ExecutionProfileHandle {
        match kind {
            Kind::Read => self.reads.clone(),
            Kind::Write => self.writes.clone(),
            Kind::Bulk => self.bulk.clone(),
        }
    }

    /// Runs one prepared statement, unpaged, in a slot of its own.
    pub(crate) async fn unpaged(
        &self,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<scylla::response::query_result::QueryResult, StoreError> {
        let span = statement_span(statement);
        let result = async {
            let _slot = self.slot().await?;
            self.session.execute_unpaged(statement, values).await.map_err(execution_error)
        }
        .instrument(span.clone())
        .await?;
        record_rows(&span, &result);
        Ok(result)
    }

    /// Waits for a slot among the requests in flight; the slot is held, and the statement
    /// counted in the calling store call (`marquee_store::statements`), until it is dropped.
    pub(crate) async fn slot(&self) -> Result<Slot<'_>, StoreError> {
        // Counted before waiting for the slot: statements a call sends together are all
        // counted on their first poll, before any of them can finish, so they are one round
        // trip even when the runtime's budget makes some wait for a later poll.
        let sent = statements::sent();
        let permit = self.slots.acquire().await.map_err(|_| StoreError::Closed)?;
        Ok(Slot { _permit: permit, _sent: sent })
    }

    /// [`StoreError::Closed`] once the store is closed.
    pub(crate) fn check_open(&self) -> Result<(), StoreError> {
        if self.slots.is_closed() { Err(StoreError::Closed) } else { Ok(()) }
    }

    /// Closes the in-flight gate: later requests fail with [`StoreError::Closed`].
    pub(crate) fn close(&self) {
        self.slots.close();
    }

    pub(crate) fn figures(&self) -> DriverFigures {
        let metrics = self.session.get_metrics();
        DriverFigures {
            requests: metrics.get_requests_unpaged_num()
                + metrics.get_requests_manually_paged_num()
                + metrics.get_requests_automatically_paged_num(),
            errors: metrics.get_errors_unpaged_num()
                + metrics.get_errors_manually_paged_num()
                + metrics.get_errors_automatically_paged_num(),
            retries: metrics.get_retries_num(),
            speculative_executions: self.speculation.speculative.load(Ordering::Relaxed),
            timeouts: metrics.get_request_timeouts(),
            connections: metrics.get_total_connections(),
            // Filled in by the store, which runs the reconciler.
            reconciling: false,
            reconciled_at_ms: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StatementName;

    #[test]
    fn statement_names_are_verb_and_table() {
        for (cql, name) in [
            ("SELECT body FROM ks.movies WHERE generation = ? AND id = ?", "SELECT movies"),
            ("select pos, body from ks.search where term = ?", "SELECT search"),
            ("INSERT INTO ks.ratings (user, movie) VALUES (?, ?)", "INSERT ratings"),
            ("UPDATE ks.rating_totals SET sum = ? WHERE movie = ?", "UPDATE rating_totals"),
            ("DELETE FROM watchlist WHERE user = ?", "DELETE watchlist"),
            ("BEGIN BATCH", "BEGIN ?"),
            ("", "? ?"),
        ] {
            assert_eq!(StatementName(cql).to_string(), name, "{cql}");
        }
    }
}
