//! Relay-style connections with opaque cursors.

use async_graphql::SimpleObject;

use super::{CreditObject, MovieObject};

/// Relay page information.
#[derive(SimpleObject, Clone, Debug, Default)]
pub(crate) struct PageInfo {
    /// Whether another page follows (pass `endCursor` as `after`).
    has_next_page: bool,
    /// Always false: pages run forwards only.
    has_previous_page: bool,
    /// Cursor of the first edge.
    start_cursor: Option<String>,
    /// Cursor of the last edge.
    end_cursor: Option<String>,
}

impl PageInfo {
    pub(crate) fn new(cursors: &[String], has_next_page: bool) -> PageInfo {
        PageInfo {
            has_next_page,
            has_previous_page: false,
            start_cursor: cursors.first().cloned(),
            end_cursor: cursors.last().cloned(),
        }
    }
}

/// A movie in a page.
#[derive(SimpleObject)]
pub(crate) struct MovieEdge {
    /// Resume after this edge.
    pub(crate) cursor: String,
    /// The movie.
    pub(crate) node: MovieObject,
}

/// A page of movies.
#[derive(SimpleObject)]
pub(crate) struct MovieConnection {
    /// Movies with their cursors.
    pub(crate) edges: Vec<MovieEdge>,
    /// Page position.
    pub(crate) page_info: PageInfo,
}

/// A credit in a page.
#[derive(SimpleObject)]
pub(crate) struct CreditEdge {
    /// Resume after this edge.
    pub(crate) cursor: String,
    /// The credit.
    pub(crate) node: CreditObject,
}

/// A page of credits.
#[derive(SimpleObject)]
pub(crate) struct CreditConnection {
    /// Credits with their cursors.
    pub(crate) edges: Vec<CreditEdge>,
    /// Page position.
    pub(crate) page_info: PageInfo,
}
