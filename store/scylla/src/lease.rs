//! Which gateway of a region runs the rating reconciler (`reconcile_leases`, schema version
//! 3): the one whose name the region's row holds, until the time it holds it to. Each
//! gateway reads the row every [`CHECK_EVERY`]; the holder renews it, and any gateway takes
//! it once it has lapsed (its holder stopped). No lightweight transaction: a race leaves two
//! holders until the next check, which only repeats idempotent work.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use marquee_store::StoreError;
use scylla::statement::prepared::PreparedStatement;

use crate::session::{Cluster, Kind, decode_error, driver_error, execution_error};

/// How often each gateway reads (and its holder renews) the lease.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// How long a lease lasts past its last renewal: three checks, so a holder that misses one
/// keeps it, and a stopped holder's region has a reconciler again within 15 s (the
/// reconciler's looks reach back further than that).
const HOLD_FOR: Duration = Duration::from_secs(15);

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// One gateway's view of its region's lease.
pub(crate) struct Lease {
    read: PreparedStatement,
    write: PreparedStatement,
    region: String,
    me: String,
    held: bool,
    checked: Option<Instant>,
}

impl Lease {
    pub(crate) async fn prepare(cluster: &Cluster, region: &str) -> Result<Lease, StoreError> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        Ok(Lease {
            read: cluster
                .prepare(
                    Kind::Read,
                    "SELECT holder, until_ms FROM {keyspace}.reconcile_leases WHERE region = ?",
                )
                .await?,
            write: cluster
                .prepare(
                    Kind::Write,
                    "INSERT INTO {keyspace}.reconcile_leases (region, holder, until_ms) VALUES (?, ?, ?)",
                )
                .await?,
            region: region.to_owned(),
            me: format!("{}-{nanos:x}", std::process::id()),
            held: false,
            checked: None,
        })
    }

    /// Whether this gateway is its region's reconciler now (reading, renewing or taking the
    /// lease when a check is due).
    pub(crate) async fn held(&mut self, cluster: &Cluster) -> Result<bool, StoreError> {
        if self.checked.is_some_and(|at| at.elapsed() < CHECK_EVERY) {
            return Ok(self.held);
        }
        let result = {
            let _slot = cluster.slot().await?;
            cluster
                .session
                .execute_unpaged(&self.read, (self.region.as_str(),))
                .await
                .map_err(execution_error)?
        };
        let row = result
            .into_rows_result()
            .map_err(driver_error)?
            .maybe_first_row::<(Option<String>, Option<i64>)>()
            .map_err(decode_error)?;
        let now = now_ms();
        let free = match &row {
            None => true,
            Some((holder, until)) => holder.as_deref() == Some(&self.me) || until.unwrap_or(0) < now,
        };
        if free {
            let until = now + HOLD_FOR.as_millis() as i64;
            let _slot = cluster.slot().await?;
            cluster
                .session
                .execute_unpaged(&self.write, (self.region.as_str(), self.me.as_str(), until))
                .await
                .map_err(execution_error)?;
        }
        if free != self.held {
            tracing::info!(region = %self.region, reconciling = free, "rating reconciler lease changed hands");
        }
        self.held = free;
        self.checked = Some(Instant::now());
        Ok(free)
    }
}
