//! Ordered reads inside one partition, correct whether or not the server honours a clustering
//! bound.
//!
//! Every sorted table clusters on `pos`, 16 bytes: the big-endian sort key, then the big-endian
//! tie breaker, so byte order is [`Position`] order. A page after a cursor is
//! `WHERE <partition> AND pos > ?`; on a real cluster that bound makes the read start at the
//! cursor. Some CQL servers (the in-memory stand-in used in tests) accept the statement but
//! ignore the bound; the statement is then prepared without it. Either way every row is
//! re-checked against the cursor here and the partition is paged until enough rows are past it:
//! free on a real cluster, slower but still correct on such a server.

use std::collections::VecDeque;

use futures::future::Either;
use futures::future::try_join_all;
use marquee_store::{Position, StoreError};
use scylla::deserialize::row::DeserializeRow;
use scylla::response::{PagingState, PagingStateResponse};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlValue;
use tracing::Instrument;

use crate::session::{Cluster, Kind, decode_error, driver_error, execution_error};

/// `pos` of a position.
pub(crate) fn encode(pos: Position) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(16);
    bytes.extend_from_slice(&pos.key.to_be_bytes());
    bytes.extend_from_slice(&pos.id.to_be_bytes());
    bytes
}

/// The position a `pos` value holds.
pub(crate) fn decode(bytes: &[u8]) -> Result<Position, StoreError> {
    let key: [u8; 8] = bytes.get(..8).and_then(|b| b.try_into().ok()).ok_or_else(|| bad_pos(bytes))?;
    let id: [u8; 8] = bytes.get(8..16).and_then(|b| b.try_into().ok()).ok_or_else(|| bad_pos(bytes))?;
    if bytes.len() != 16 {
        return Err(bad_pos(bytes));
    }
    Ok(Position { key: u64::from_be_bytes(key), id: u64::from_be_bytes(id) })
}

fn bad_pos(bytes: &[u8]) -> StoreError {
    StoreError::Corrupt { what: "position", detail: format!("{} bytes, expected 16", bytes.len()) }
}

/// A row of a sorted table: `pos` first, then what the read selects.
pub(crate) trait Ranged: for<'f, 'm> DeserializeRow<'f, 'm> + Send + 'static {
    /// The row's `pos` column.
    fn pos(&self) -> &[u8];
}

impl Ranged for (Vec<u8>,) {
    fn pos(&self) -> &[u8] {
        &self.0
    }
}

impl<V> Ranged for (Vec<u8>, V)
where
    (Vec<u8>, V): for<'f, 'm> DeserializeRow<'f, 'm>,
    V: Send + 'static,
{
    fn pos(&self) -> &[u8] {
        &self.0
    }
}

/// A range read over one table, prepared with the clustering bound when the server takes it.
pub(crate) struct RangeRead {
    statement: PreparedStatement,
    bounded: bool,
}

impl RangeRead {
    /// `select` is `SELECT pos, ... FROM {keyspace}.t WHERE <partition key = ?, ...>`.
    pub(crate) async fn prepare(cluster: &Cluster, select: &str) -> Result<RangeRead, StoreError> {
        let markers = select.matches('?').count();
        let bounded = cluster.prepare(Kind::Read, &format!("{select} AND pos > ?")).await?;
        if bounded.get_variable_col_specs().len() == markers + 1 {
            return Ok(RangeRead { statement: bounded, bounded: true });
        }
        tracing::warn!(
            statement = select,
            "the CQL server ignores clustering bounds: pages re-check positions on the client"
        );
        Ok(RangeRead { statement: cluster.prepare(Kind::Read, select).await?, bounded: false })
    }
}

/// One partition read in order from just after a position, a page at a time. The first page
/// is what the caller expects to consume; each later one is four times larger, up to
/// `[store] page_size`, so a read that walks far into a partition takes few round trips
/// while a page that stops early reads little more than it returns.
pub(crate) struct Cursor<'r, T> {
    read: &'r RangeRead,
    partition: Vec<CqlValue>,
    after: Option<Position>,
    want: i32,
    rows: VecDeque<(Position, T)>,
    paging: Option<PagingState>,
}

/// How much larger each page of a cursor is than the one before.
const PAGE_GROWTH: i32 = 4;

impl<'r, T: Ranged> Cursor<'r, T> {
    /// Rows of `partition` after `after`; `want` is how many the caller expects to consume
    /// (the page size of the first request).
    pub(crate) fn new(
        read: &'r RangeRead,
        partition: Vec<CqlValue>,
        after: Option<Position>,
        want: usize,
    ) -> Self {
        Cursor {
            read,
            partition,
            after,
            want: i32::try_from(want.max(1)).unwrap_or(i32::MAX),
            rows: VecDeque::new(),
            paging: Some(PagingState::start()),
        }
    }

    /// Whether the partition has rows not fetched yet (or may have: a last page can be empty).
    fn more(&self) -> bool {
        self.paging.is_some()
    }

    /// Fetches pages until a row past the cursor is buffered or the partition ends.
    pub(crate) async fn fill(&mut self, cluster: &Cluster) -> Result<(), StoreError> {
        while self.rows.is_empty() && self.more() {
            self.fetch(cluster).await?;
        }
        Ok(())
    }

    /// Fetches the next page, if there is one.
    async fn fetch(&mut self, cluster: &Cluster) -> Result<(), StoreError> {
        let Some(paging) = self.paging.take() else { return Ok(()) };
        let mut statement = self.read.statement.clone();
        // Without a server-side bound, rows before the cursor are read too: use full pages.
        let skipping = !self.read.bounded && self.after.is_some();
        let page = if skipping { cluster.page_size.max(self.want) } else { self.want };
        statement.set_page_size(page);
        self.want = self.want.saturating_mul(PAGE_GROWTH).min(cluster.page_size.max(self.want));
        let mut values = self.partition.clone();
        if self.read.bounded {
            values.push(CqlValue::Blob(self.after.map(encode).unwrap_or_default()));
        }
        let span = crate::session::statement_span(&statement);
        let (result, next) = async {
            let _slot = cluster.slot().await?;
            cluster.session.execute_single_page(&statement, values, paging).await.map_err(execution_error)
        }
        .instrument(span.clone())
        .await?;
        crate::session::record_rows(&span, &result);
        self.paging = match next {
            PagingStateResponse::HasMorePages { state } => Some(state),
            PagingStateResponse::NoMorePages => None,
        };
        let rows = result.into_rows_result().map_err(driver_error)?;
        for row in rows.rows::<T>().map_err(decode_error)? {
            let row = row.map_err(decode_error)?;
            let pos = decode(row.pos())?;
            if self.after.is_none_or(|after| pos > after) {
                self.rows.push_back((pos, row));
            }
        }
        Ok(())
    }

    /// The next row, fetching as needed.
    pub(crate) async fn next(&mut self, cluster: &Cluster) -> Result<Option<(Position, T)>, StoreError> {
        self.fill(cluster).await?;
        Ok(self.rows.pop_front())
    }

    fn head(&self) -> Option<Position> {
        self.rows.front().map(|(pos, _)| *pos)
    }

    /// Buffered rows are running out: fewer than a quarter of the page being fetched next.
    fn low(&self) -> bool {
        self.more() && self.rows.len() < (self.want / PAGE_GROWTH).max(1) as usize
    }
}

/// Several partitions merged in position order.
///
/// A partition is fetched only when the merge needs its next row to know which row comes
/// next, so a merge fetches nothing it does not need (reading n rows costs one first page per
/// partition, fetched concurrently, plus the pages those n rows span). Every fetch the merge
/// needs at once is sent at once: one round trip. A merge made [`Merge::scanning`] also
/// refills, in that same round trip, every partition that is running low, so a long scan over
/// partitions that drain at about the same rate (search buckets) waits once per page
/// generation rather than once per partition.
pub(crate) struct Merge<'r, T> {
    cursors: Vec<Cursor<'r, T>>,
    prefetch: bool,
}

impl<'r, T: Ranged> Merge<'r, T> {
    /// A merge that fetches only what it returns (and what deciding the order needs).
    pub(crate) fn new(cursors: Vec<Cursor<'r, T>>) -> Self {
        Merge { cursors, prefetch: false }
    }

    /// A merge for long scans: refills partitions running low together with the ones empty.
    pub(crate) fn scanning(cursors: Vec<Cursor<'r, T>>) -> Self {
        Merge { cursors, prefetch: true }
    }

    /// The next row of all partitions, in position order.
    pub(crate) async fn next(&mut self, cluster: &Cluster) -> Result<Option<(Position, T)>, StoreError> {
        if self.cursors.iter().any(|c| c.rows.is_empty() && c.more()) {
            let prefetch = self.prefetch;
            let fetches = self.cursors.iter_mut().filter_map(|c| {
                if c.rows.is_empty() && c.more() {
                    Some(Either::Left(c.fill(cluster)))
                } else if prefetch && c.low() {
                    Some(Either::Right(c.fetch(cluster)))
                } else {
                    None
                }
            });
            try_join_all(fetches).await?;
        }
        let best = self.cursors.iter().enumerate().filter_map(|(i, c)| c.head().map(|pos| (pos, i))).min();
        let Some((_, i)) = best else { return Ok(None) };
        Ok(self.cursors[i].rows.pop_front())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_order_is_position_order() {
        let positions = [
            Position { key: 0, id: 5 },
            Position { key: 0, id: u64::MAX },
            Position { key: 1, id: 0 },
            Position { key: u64::MAX - 1, id: 7 },
            Position { key: u64::MAX, id: 0 },
        ];
        for pair in positions.windows(2) {
            assert!(encode(pair[0]) < encode(pair[1]), "{pair:?}");
        }
        for pos in positions {
            assert_eq!(decode(&encode(pos)).expect("decodes"), pos);
        }
        assert!(decode(&[1, 2, 3]).is_err());
        assert!(decode(&[0; 17]).is_err());
    }
}
