//! Bulk loading a catalog into a fresh file.
//!
//! Movies and people arrive in id order, so the by-id tables are appended chunk by chunk. The
//! other access paths (credits by person, browse partitions, title search) are keyed by
//! something else: their rows go through an external sort and are inserted in key order at
//! the end, so every B-tree is built by appends and memory stays bounded whatever the catalog
//! size. The file is written as `catalog.redb.tmp` and renamed over `catalog.redb` only after
//! the final durable commit: readers see the old catalog or the whole new one, never a part.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, Durability, Key, TableDefinition, Value};

use serde::de::DeserializeOwned;

use super::sorter::{ExternalSorter, Sorted};
use super::tables::*;
use crate::catalog::CatalogSink;
use crate::{CatalogStats, FilmographyEntry, GENRES, MovieRecord, MovieSort, Person, StoreError, keys, text};

/// Name prefix of the external sort's scratch directory inside the data directory.
const SCRATCH_PREFIX: &str = ".catalog-build-";
/// Rows per redb transaction while loading.
const ROWS_PER_TXN: usize = 4_000_000;
/// Rows per external-sort run (bounds the loader's memory to a few hundred MB).
const RUN_ROWS: usize = 2_000_000;
/// Rows handed from the merge thread to the inserting thread at a time.
const MERGE_BATCH: usize = 16_384;

type FilmRow = ((u64, u64, u64), Vec<u8>);
type BrowseRow = (u8, u8, u16, u64, u64);
type SearchRow = ((String, u8, u64, u64), Arc<str>);

/// Builds a catalog file from a stream of people and movies. See the module docs.
pub struct CatalogBuilder {
    /// `None` after `finish` hands the file over.
    db: Option<Database>,
    tmp: PathBuf,
    target: PathBuf,
    /// Holds the sort runs; removed with the builder.
    _scratch: tempfile::TempDir,
    direct: Direct,
    filmography: ExternalSorter<FilmRow>,
    browse: ExternalSorter<BrowseRow>,
    search: ExternalSorter<SearchRow>,
    stats: CatalogStats,
    genre_counts: [u64; GENRES.len()],
    years: BTreeMap<u16, u64>,
}

/// Rows of the by-id tables waiting for the next append transaction.
#[derive(Default)]
struct Direct {
    movies: Vec<(u64, Vec<u8>)>,
    credits: Vec<(u64, Vec<u8>)>,
    people: Vec<(u64, Vec<u8>)>,
}

impl Direct {
    fn len(&self) -> usize {
        self.movies.len() + self.people.len()
    }
}

impl CatalogBuilder {
    /// Starts a new catalog for `data_dir` (created if missing). `cache_bytes` sizes redb's
    /// page cache for the load.
    pub fn create(data_dir: &Path, cache_bytes: usize) -> Result<CatalogBuilder, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::io(format!("creating data directory {}", data_dir.display()), e))?;
        let target = super::catalog_path(data_dir);
        let tmp = target.with_extension("redb.tmp");
        match std::fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(StoreError::io(format!("removing stale {}", tmp.display()), e));
            }
        }
        let db = redb::Builder::new().set_cache_size(cache_bytes).create(&tmp).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked(data_dir.display().to_string()),
            other => StoreError::backend(other),
        })?;
        remove_stale_scratch(data_dir);
        let scratch = tempfile::Builder::new()
            .prefix(SCRATCH_PREFIX)
            .tempdir_in(data_dir)
            .map_err(|e| StoreError::io("creating the sort directory", e))?;
        Ok(CatalogBuilder {
            db: Some(db),
            tmp,
            target,
            filmography: ExternalSorter::new(scratch.path(), "filmography", RUN_ROWS)?,
            browse: ExternalSorter::new(scratch.path(), "browse", RUN_ROWS * 2)?,
            search: ExternalSorter::new(scratch.path(), "search", RUN_ROWS)?,
            _scratch: scratch,
            direct: Direct::default(),
            stats: CatalogStats::default(),
            genre_counts: [0; GENRES.len()],
            years: BTreeMap::new(),
        })
    }

    fn db(&self) -> Result<&Database, StoreError> {
        self.db.as_ref().ok_or(StoreError::Closed)
    }

    fn flush_direct(&mut self) -> Result<(), StoreError> {
        let mut direct = std::mem::take(&mut self.direct);
        let mut txn = self.db()?.begin_write()?;
        txn.set_durability(Durability::None)?;
        for (table, rows) in [
            (MOVIES, &mut direct.movies),
            (CREDITS_BY_MOVIE, &mut direct.credits),
            (PEOPLE, &mut direct.people),
        ] {
            rows.sort_unstable_by_key(|r| r.0);
            let mut t = txn.open_table(table)?;
            for (k, v) in rows.iter() {
                t.insert(k, v.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Inserts `rows` (ascending) into `table`. A helper thread merges and decodes the sort
    /// runs while this one inserts, so the two halves of the work overlap.
    fn load_sorted<K, V, T>(
        &self,
        table: TableDefinition<'_, K, V>,
        rows: Sorted<T>,
        insert: impl Fn(&mut redb::Table<'_, K, V>, T) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>
    where
        K: Key + 'static,
        V: Value + 'static,
        T: Ord + DeserializeOwned + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<T>, StoreError>>(8);
        let merge = move || {
            let mut batch = Vec::with_capacity(MERGE_BATCH);
            for row in rows {
                match row {
                    Ok(row) => batch.push(row),
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
                if batch.len() == MERGE_BATCH && tx.send(Ok(std::mem::take(&mut batch))).is_err() {
                    return;
                }
            }
            if !batch.is_empty() {
                let _ = tx.send(Ok(batch));
            }
        };
        let merger = std::thread::Builder::new()
            .name("catalog-merge".into())
            .spawn(merge)
            .map_err(|e| StoreError::io("starting the merge thread", e))?;
        let mut batches = rx.into_iter().peekable();
        while batches.peek().is_some() {
            let mut txn = self.db()?.begin_write()?;
            txn.set_durability(Durability::None)?;
            {
                let mut t = txn.open_table(table)?;
                let mut inserted = 0;
                while inserted < ROWS_PER_TXN {
                    let Some(batch) = batches.next() else { break };
                    let batch = batch?;
                    inserted += batch.len();
                    for row in batch {
                        insert(&mut t, row)?;
                    }
                }
            }
            txn.commit()?;
        }
        merger.join().map_err(|_| StoreError::Backend("the merge thread panicked".into()))?;
        Ok(())
    }

    fn write_summary(&self) -> Result<(), StoreError> {
        let mut txn = self.db()?.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut t = txn.open_table(GENRE_COUNTS)?;
            for (code, count) in self.genre_counts.iter().enumerate() {
                t.insert(code as u8, count)?;
            }
            let mut t = txn.open_table(YEARS)?;
            for (year, count) in &self.years {
                t.insert(year, count)?;
            }
            // Every table exists even in an empty catalog, so readers never meet a missing one.
            txn.open_table(MOVIES)?;
            txn.open_table(PEOPLE)?;
            txn.open_table(CREDITS_BY_MOVIE)?;
            txn.open_table(CREDITS_BY_PERSON)?;
            txn.open_table(MOVIES_BY_GENRE_YEAR)?;
            txn.open_table(TITLE_SEARCH)?;
            let mut t = txn.open_table(META)?;
            t.insert("format_version", FORMAT_VERSION)?;
            t.insert("movies", self.stats.movies)?;
            t.insert("people", self.stats.people)?;
        }
        txn.commit()?;
        Ok(())
    }
}

impl CatalogSink for CatalogBuilder {
    fn put_person(&mut self, person: &Person) -> Result<(), StoreError> {
        self.direct.people.push((person.id.0, encode(person)?));
        self.stats.people += 1;
        if self.direct.len() >= ROWS_PER_TXN / 4 {
            self.flush_direct()?;
        }
        Ok(())
    }

    fn put_movie(&mut self, record: &MovieRecord) -> Result<(), StoreError> {
        let movie = &record.movie;
        let id = movie.id.0;
        self.direct.movies.push((id, encode(movie)?));
        self.direct.credits.push((id, encode(&record.credits)?));
        let film_key = keys::filmography(movie.year, movie.popularity);
        for (ordinal, credit) in record.credits.iter().enumerate().take(256) {
            let entry = FilmographyEntry {
                movie: movie.id,
                department: credit.department,
                role: credit.role.clone(),
                year: movie.year,
            };
            self.filmography
                .push(((credit.person.0, film_key, (id << 8) | ordinal as u64), encode(&entry)?))?;
        }
        let year = movie.year.unwrap_or(0);
        let sort_keys = [
            (MovieSort::Popularity, keys::popularity(movie.popularity)),
            (MovieSort::Rating, keys::rating(movie)),
            (MovieSort::ReleaseDate, keys::release(movie)),
        ];
        for (sort, key) in sort_keys {
            self.browse.push((sort.code(), ANY_GENRE, year, key, id))?;
            for genre in &movie.genres {
                self.browse.push((sort.code(), genre.code(), year, key, id))?;
            }
        }
        let words = text::words(&movie.title);
        let joined: Arc<str> = words.join(" ").into();
        let bucket = search_bucket(id);
        let pop = keys::popularity(movie.popularity);
        for prefix in text::index_prefixes(&words) {
            self.search.push(((prefix, bucket, pop, id), joined.clone()))?;
        }
        for genre in &movie.genres {
            self.genre_counts[usize::from(genre.code())] += 1;
        }
        *self.years.entry(year).or_default() += 1;
        self.stats.movies += 1;
        if self.direct.len() >= ROWS_PER_TXN / 4 {
            self.flush_direct()?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<CatalogStats, StoreError> {
        self.flush_direct()?;
        let rows = self.filmography.sorted()?;
        self.load_sorted(CREDITS_BY_PERSON, rows, |t, (k, v)| {
            t.insert(k, v.as_slice())?;
            Ok(())
        })?;
        let rows = self.browse.sorted()?;
        self.load_sorted(MOVIES_BY_GENRE_YEAR, rows, |t, k| {
            t.insert(k, ())?;
            Ok(())
        })?;
        let rows = self.search.sorted()?;
        self.load_sorted(TITLE_SEARCH, rows, |t, ((prefix, bucket, key, id), words)| {
            t.insert((prefix.as_str(), bucket, key, id), &*words)?;
            Ok(())
        })?;
        self.write_summary()?;
        drop(self.db.take());
        std::fs::rename(&self.tmp, &self.target)
            .map_err(|e| StoreError::io(format!("moving {} into place", self.tmp.display()), e))?;
        if let Some(dir) = self.target.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| StoreError::io(format!("syncing {}", dir.display()), e))?;
        }
        Ok(self.stats)
    }
}

/// Sort directories left by a load that was killed (a clean stop removes its own).
fn remove_stale_scratch(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(data_dir) else { return };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(SCRATCH_PREFIX) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for CatalogBuilder {
    fn drop(&mut self) {
        // An abandoned build leaves no partial file behind (after `finish` it was renamed).
        if self.db.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
