//! Filling a catalog: the deterministic demo generator ([`seed`]) and the IMDb dataset
//! importer ([`imdb`]). Both stream into a [`CatalogSink`], so they hold no catalog in memory
//! and work the same against any backend that can bulk-load.

pub mod imdb;
pub mod seed;
mod words;

use crate::{CatalogStats, MovieRecord, Person, StoreError};

/// Where the seeder and importer write. A sink publishes nothing until [`CatalogSink::finish`]
/// succeeds; dropping it unfinished discards everything written.
pub trait CatalogSink {
    /// Adds a person. People should arrive in ascending id order (faster, not required).
    fn put_person(&mut self, person: &Person) -> Result<(), StoreError>;
    /// Adds a movie with its credits. Movies should arrive in ascending id order.
    fn put_movie(&mut self, record: &MovieRecord) -> Result<(), StoreError>;
    /// Builds the remaining indexes and publishes the catalog atomically.
    fn finish(self: Box<Self>) -> Result<CatalogStats, StoreError>;
}

/// Progress of a long load, reported to the caller (who may draw a progress bar).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// A new phase started; `total` items are expected (0 when unknown).
    Phase {
        /// Phase name.
        name: &'static str,
        /// Expected items.
        total: u64,
    },
    /// `done` items of the current phase are complete.
    Advance {
        /// Items done so far in this phase.
        done: u64,
    },
}
