//! Bulk loading a catalog into a fresh catalog generation.
//!
//! Movies and people arrive in id order, so the by-id tables are appended chunk by chunk. The
//! other access paths (credits by person, browse partitions, title search) are keyed by
//! something else: their rows go through an external sort and are inserted in key order at
//! the end, so every B-tree is built by appends and memory stays bounded whatever the catalog
//! size. Credits by person and title search live in their own files so that two threads can
//! build them at once (redb allows one writer per file).
//!
//! A load writes a new generation directory (`catalog-<id>.building`), renames it to
//! `catalog-<id>` after the final durable commits, and then atomically repoints the `catalog`
//! symlink at it: readers see the old catalog or the whole new one, never a part.

use crate::Db;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, Durability, Key, TableDefinition, Value};
use serde::de::DeserializeOwned;

use super::sorter::{ExternalSorter, Sorted};
use super::tables::*;
use super::{CATALOG_LINK, FILMOGRAPHY_FILE, MAIN_FILE, SEARCH_FILE};
use marquee_store::bulk::CatalogSink;
use marquee_store::plan;
use marquee_store::{CatalogStats, GENRES, MovieRecord, Person, StoreError};

/// Name prefix of the external sort's scratch directory inside the data directory.
const SCRATCH_PREFIX: &str = ".catalog-build-";
/// Suffix of a generation directory still being written.
const BUILDING_SUFFIX: &str = ".building";
/// Rows per redb transaction while loading.
const ROWS_PER_TXN: usize = 4_000_000;
/// Rows per external-sort run (bounds the loader's memory to a few hundred MB).
const RUN_ROWS: usize = 2_000_000;
/// Rows handed from the merge thread to the inserting thread at a time.
const MERGE_BATCH: usize = 16_384;

type FilmRow = ((u64, u64, u64), Vec<u8>);
type BrowseRow = (u8, u8, u16, u64, u64);
type SearchRow = ((String, u8, u64, u64), Arc<str>);

/// The three files of a generation, open for writing.
struct Files {
    main: Database,
    filmography: Database,
    search: Database,
}

/// Builds a catalog from a stream of people and movies. See the module docs.
pub struct CatalogBuilder {
    /// `None` after `finish` hands the generation over.
    files: Option<Files>,
    data_dir: PathBuf,
    /// `catalog-<id>.building` while loading.
    building: PathBuf,
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
    /// Starts a new catalog generation in `data_dir` (created if missing). `cache_bytes` sizes
    /// redb's page cache of each file for the load.
    pub fn create(data_dir: &Path, cache_bytes: usize) -> Result<CatalogBuilder, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::io(format!("creating data directory {}", data_dir.display()), e))?;
        remove_leftovers(data_dir);
        let id =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let building = data_dir.join(format!("catalog-{id}{BUILDING_SUFFIX}"));
        std::fs::create_dir(&building)
            .map_err(|e| StoreError::io(format!("creating {}", building.display()), e))?;
        let create = |name: &str| -> Result<Database, StoreError> {
            redb::Builder::new().set_cache_size(cache_bytes).create(building.join(name)).db()
        };
        let files = Files {
            main: create(MAIN_FILE)?,
            filmography: create(FILMOGRAPHY_FILE)?,
            search: create(SEARCH_FILE)?,
        };
        let scratch = tempfile::Builder::new()
            .prefix(SCRATCH_PREFIX)
            .tempdir_in(data_dir)
            .map_err(|e| StoreError::io("creating the sort directory", e))?;
        Ok(CatalogBuilder {
            files: Some(files),
            data_dir: data_dir.to_owned(),
            building,
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

    fn files(&self) -> Result<&Files, StoreError> {
        self.files.as_ref().ok_or(StoreError::Closed)
    }

    fn flush_direct(&mut self) -> Result<(), StoreError> {
        let mut direct = std::mem::take(&mut self.direct);
        let mut txn = self.files()?.main.begin_write().db()?;
        txn.set_durability(Durability::None).db()?;
        for (table, rows) in [
            (MOVIES, &mut direct.movies),
            (CREDITS_BY_MOVIE, &mut direct.credits),
            (PEOPLE, &mut direct.people),
        ] {
            rows.sort_unstable_by_key(|r| r.0);
            let mut t = txn.open_table(table).db()?;
            for (k, v) in rows.iter() {
                t.insert(k, v.as_slice()).db()?;
            }
        }
        txn.commit().db()?;
        Ok(())
    }

    fn write_summary(&self) -> Result<(), StoreError> {
        let files = self.files()?;
        let mut txn = files.main.begin_write().db()?;
        txn.set_durability(Durability::Immediate).db()?;
        {
            let mut t = txn.open_table(GENRE_COUNTS).db()?;
            for (code, count) in self.genre_counts.iter().enumerate() {
                t.insert(code as u8, count).db()?;
            }
            let mut t = txn.open_table(YEARS).db()?;
            for (year, count) in &self.years {
                t.insert(year, count).db()?;
            }
            // Every table exists even in an empty catalog, so readers never meet a missing one.
            txn.open_table(MOVIES).db()?;
            txn.open_table(PEOPLE).db()?;
            txn.open_table(CREDITS_BY_MOVIE).db()?;
            txn.open_table(MOVIES_BY_GENRE_YEAR).db()?;
            let mut t = txn.open_table(META).db()?;
            t.insert("format_version", FORMAT_VERSION).db()?;
            t.insert("movies", self.stats.movies).db()?;
            t.insert("people", self.stats.people).db()?;
        }
        txn.commit().db()?;
        seal(&files.filmography, CREDITS_BY_PERSON)?;
        seal(&files.search, TITLE_SEARCH)?;
        Ok(())
    }

    /// Moves the finished generation into place and points `catalog` at it.
    fn publish(&mut self) -> Result<(), StoreError> {
        let io = |what: &str, e| StoreError::io(what.to_owned(), e);
        drop(self.files.take());
        let name = self
            .building
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(BUILDING_SUFFIX))
            .ok_or_else(|| StoreError::InvalidInput("generation directory has an unexpected name".into()))?
            .to_owned();
        let generation = self.data_dir.join(&name);
        sync_dir(&self.building)?;
        std::fs::rename(&self.building, &generation)
            .map_err(|e| io("moving the new catalog into place", e))?;
        let link = self.data_dir.join(CATALOG_LINK);
        let next = self.data_dir.join(format!("{CATALOG_LINK}.next"));
        let _ = std::fs::remove_file(&next);
        std::os::unix::fs::symlink(&name, &next).map_err(|e| io("linking the new catalog", e))?;
        std::fs::rename(&next, &link).map_err(|e| io("switching to the new catalog", e))?;
        sync_dir(&self.data_dir)?;
        // Older generations are no longer reachable; a gateway still reading one keeps its open
        // files until it has switched to this one and its reads in flight have finished.
        if let Ok(entries) = std::fs::read_dir(&self.data_dir) {
            for entry in entries.flatten() {
                let file_name = entry.file_name();
                let other = file_name.to_string_lossy();
                if other.starts_with("catalog-") && other != name && !other.ends_with(BUILDING_SUFFIX) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        Ok(())
    }
}

/// A final durable commit on an index file (its loads committed without syncing).
fn seal<K: Key + 'static, V: Value + 'static>(
    db: &Database,
    table: TableDefinition<'_, K, V>,
) -> Result<(), StoreError> {
    let mut txn = db.begin_write().db()?;
    txn.set_durability(Durability::Immediate).db()?;
    txn.open_table(table).db()?;
    txn.commit().db()?;
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(format!("syncing {}", dir.display()), e))
}

/// Inserts `rows` (ascending) into `table` of `db`. A helper thread merges and decodes the sort
/// runs while this one inserts, so the two halves of the work overlap.
fn load_sorted<K, V, T>(
    db: &Database,
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
        let mut txn = db.begin_write().db()?;
        txn.set_durability(Durability::None).db()?;
        {
            let mut t = txn.open_table(table).db()?;
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
        txn.commit().db()?;
    }
    merger.join().map_err(|_| StoreError::Backend("the merge thread panicked".into()))?;
    Ok(())
}

/// Removes what a killed load left behind: sort scratch and unfinished generations.
fn remove_leftovers(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(data_dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(SCRATCH_PREFIX)
            || (name.starts_with("catalog-") && name.ends_with(BUILDING_SUFFIX))
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
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
        let rows = plan::index_rows(record);
        for (person, key, ordinal_id, entry) in &rows.filmography {
            self.filmography.push(((*person, *key, *ordinal_id), encode(entry)?))?;
        }
        for (sort, genre, year, key) in rows.browse {
            self.browse.push((sort, genre, year, key, id))?;
        }
        let joined: Arc<str> = rows.title_words.into();
        for prefix in rows.prefixes {
            self.search.push(((prefix, rows.bucket, rows.popularity_key, id), joined.clone()))?;
        }
        for genre in &movie.genres {
            self.genre_counts[usize::from(genre.code())] += 1;
        }
        *self.years.entry(movie.year.unwrap_or(0)).or_default() += 1;
        self.stats.movies += 1;
        if self.direct.len() >= ROWS_PER_TXN / 4 {
            self.flush_direct()?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<CatalogStats, StoreError> {
        self.flush_direct()?;
        let film_rows = self.filmography.sorted()?;
        let browse_rows = self.browse.sorted()?;
        let search_rows = self.search.sorted()?;
        let files = self.files()?;
        // Two writers on two files at once: credits by person on one thread, browse (main
        // file) then title search on the other. Each also has its own merge thread.
        std::thread::scope(|scope| -> Result<(), StoreError> {
            let film = scope.spawn(|| {
                load_sorted(&files.filmography, CREDITS_BY_PERSON, film_rows, |t, (k, v)| {
                    t.insert(k, v.as_slice()).db()?;
                    Ok(())
                })
            });
            load_sorted(&files.main, MOVIES_BY_GENRE_YEAR, browse_rows, |t, k| {
                t.insert(k, ()).db()?;
                Ok(())
            })?;
            load_sorted(
                &files.search,
                TITLE_SEARCH,
                search_rows,
                |t, ((prefix, bucket, key, id), words)| {
                    t.insert((prefix.as_str(), bucket, key, id), &*words).db()?;
                    Ok(())
                },
            )?;
            film.join().map_err(|_| StoreError::Backend("the filmography loader panicked".into()))?
        })?;
        self.write_summary()?;
        self.publish()?;
        Ok(self.stats)
    }
}

impl Drop for CatalogBuilder {
    fn drop(&mut self) {
        // An abandoned build leaves no partial generation behind (after `finish` it was moved).
        if self.files.take().is_some() {
            let _ = std::fs::remove_dir_all(&self.building);
        }
    }
}
