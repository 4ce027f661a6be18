//! The embedded backend's tables: one per access path, keyed the way the CQL tables are
//! partitioned and clustered (partition key first, then clustering columns), so both backends
//! answer the same query with the same shape of read.

use redb::TableDefinition;
use serde::Serialize;
use serde::de::DeserializeOwned;

use marquee_store::StoreError;

/// Bumped whenever a table's key or value encoding changes; a data directory written with
/// another version is refused at open instead of being misread.
pub(crate) const FORMAT_VERSION: u64 = 1;

/// movie id → postcard `Movie`.
pub(crate) const MOVIES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("movies_by_id");
/// person id → postcard `Person`.
pub(crate) const PEOPLE: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("people_by_id");
/// movie id → postcard `Vec<Credit>` (one partition per movie, billing order).
pub(crate) const CREDITS_BY_MOVIE: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("credits_by_movie");
/// (person id, filmography key, movie id << 8 | credit ordinal) → postcard `FilmographyEntry`.
pub(crate) const CREDITS_BY_PERSON: TableDefinition<'_, (u64, u64, u64), &[u8]> =
    TableDefinition::new("credits_by_person");
/// (sort code, genre code or `plan::ANY_GENRE`, year, sort key, movie id) → ().
pub(crate) const MOVIES_BY_GENRE_YEAR: TableDefinition<'_, (u8, u8, u16, u64, u64), ()> =
    TableDefinition::new("movies_by_genre_year");
/// (prefix, bucket, popularity key, movie id) → the title's normalised words, space-separated.
pub(crate) const TITLE_SEARCH: TableDefinition<'_, (&str, u8, u64, u64), &str> =
    TableDefinition::new("title_search");
/// genre code → number of movies.
pub(crate) const GENRE_COUNTS: TableDefinition<'_, u8, u64> = TableDefinition::new("genre_counts");
/// year → number of movies (0 = unknown year); lists the year partitions that exist.
pub(crate) const YEARS: TableDefinition<'_, u16, u64> = TableDefinition::new("years");
/// name → value: `format_version`, `movies`, `people`.
pub(crate) const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(value).map_err(|e| StoreError::Corrupt { what: "record", detail: e.to_string() })
}

pub(crate) fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt { what, detail: e.to_string() })
}
