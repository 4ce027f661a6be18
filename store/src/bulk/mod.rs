//! Bulk loading: a whole catalog in (the deterministic demo generator, [`seed`], and the IMDb
//! dataset importer, [`imdb`]) or out (export). Both sources stream into a [`CatalogSink`],
//! so they hold no catalog in memory; a backend takes part by implementing [`BulkLoad`], and
//! the gateway's `seed`, `import` and `export` commands work through that seam alone.

pub mod imdb;
pub mod seed;
mod words;

use std::path::Path;

use crate::{CatalogStats, MovieRecord, Person, StoreError};

/// A backend's bulk side: where a new catalog is written and how the current one is exported.
/// Calls block (they move gigabytes): run them off the async runtime.
pub trait BulkLoad: Send + Sync {
    /// Where the catalog lives, for messages (a directory, a keyspace).
    fn location(&self) -> String;

    /// Whether a catalog has been published there.
    fn has_catalog(&self) -> Result<bool, StoreError>;

    /// A sink for a new catalog, published whole by [`CatalogSink::finish`] (readers switch
    /// to it at once; until then they keep the old one). `source` names what is loaded (for
    /// example `seed movies=50000 seed=1`): a backend may complete an unfinished load of the
    /// same source rather than start over.
    fn sink(&self, source: &str) -> Result<Box<dyn CatalogSink>, StoreError>;

    /// Writes the current catalog as PostgreSQL `COPY` text files (`movie.tsv`, `person.tsv`,
    /// `credit.tsv`) into `out_dir`, from one consistent snapshot.
    fn export(&self, out_dir: &Path, progress: &mut dyn FnMut(Progress)) -> Result<ExportStats, StoreError>;

    /// What the loads of this `BulkLoad` have written so far, table by table (rows and
    /// statements acknowledged), for progress and throughput figures; `None` for a backend
    /// that does not write table by table (the embedded one builds its tables in one
    /// transaction).
    fn written(&self) -> Option<Vec<TableWritten>> {
        None
    }
}

/// Rows and statements one table has had acknowledged (see [`BulkLoad::written`]).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct TableWritten {
    /// The table's name.
    pub table: &'static str,
    /// Rows written.
    pub rows: u64,
    /// Statements that wrote them (a batch of one partition's rows is one).
    pub statements: u64,
}

/// What an export wrote.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// Movies written.
    pub movies: u64,
    /// People written.
    pub people: u64,
    /// Credits written.
    pub credits: u64,
}

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
