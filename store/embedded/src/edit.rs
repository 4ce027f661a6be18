//! Live catalog writes on the embedded store: a [`CatalogChanges`] applied to the generation
//! being served, beside readers, as one unit across the generation's three files.
//!
//! redb gives one transaction per file, and a catalog has three (`main`: movies, credits,
//! people, browse rows and counts; `filmography`; `search`). An apply therefore:
//!
//! 1. writes every change in one transaction per file, and in `main` also a *pending* record
//!    of the index rows it writes in the other two files and of its audit record;
//! 2. commits `main` durably: from here the apply is acknowledged, and no reader saw any of it
//!    before (so no cache can hold a change a crash then loses);
//! 3. commits the two index files without syncing (`Durability::None`): readers see each
//!    file's part whole, and for the moment between two commits a search or a filmography may
//!    still list a movie as it was (every read call reads one file, so no call sees a mix;
//!    the ScyllaDB backend's tables behave the same way); then syncs them, writes the audit
//!    record to `users.redb` and drops the pending record.
//!
//! A crash (or an I/O error) after `main` became durable leaves the pending record:
//! [`finish_pending`] (run at every open, and before every apply) writes its index rows and
//! audit record again, so an acknowledged apply is never half there, and hands back what it
//! changed, for the caches. Every step is idempotent (rows are deleted and written by key).
//!
//! An apply refuses to write into a generation a newer load has replaced (the `catalog` link
//! points elsewhere): its changes would be lost with the old generation.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use marquee_store::writes::{FilmKey, MovieDiff, Planned, SearchKey};
use marquee_store::{
    Applied, AuditRecord, CatalogChanges, Credit, Edit, Movie, MovieId, MovieRecord, Page, Person, PersonId,
    Position, StoreError, UserPage, plan,
};

use crate::Db;
use crate::tables::*;

/// nanoseconds of the apply → postcard [`Pending`]: applies whose index rows and audit record
/// may not be durable yet.
const PENDING: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("pending_index_writes");

/// In `users.redb`: inverted nanoseconds of the apply → postcard [`AuditRecord`], newest first.
pub(crate) const AUDIT: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("catalog_audit");

/// What an apply writes outside `main`, kept in `main` until it is durable.
#[derive(Default, Serialize, Deserialize)]
struct Pending {
    film_remove: Vec<FilmKey>,
    film_put: Vec<(FilmKey, Vec<u8>)>,
    search_remove: Vec<SearchKey>,
    search_put: Vec<(SearchKey, String)>,
    audit: Option<AuditRecord>,
    /// What the apply changed, for the caches of whoever finishes it.
    applied: Applied,
}

/// The files an apply writes, and the lock that makes it the only one.
pub(crate) struct Files<'a> {
    pub(crate) main: &'a Database,
    pub(crate) filmography: &'a Database,
    pub(crate) search: &'a Database,
    pub(crate) users: &'a Database,
    /// The last apply's nanoseconds (applies are serialised on it, and each takes a later one).
    pub(crate) writer: &'a Mutex<u64>,
    /// The year partitions that exist, kept for readers.
    pub(crate) years: &'a std::sync::RwLock<Vec<u16>>,
    /// The `catalog` link, and the generation directory these files are in.
    pub(crate) link: &'a Path,
    pub(crate) generation: &'a Path,
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn non_durable(db: &Database) -> Result<WriteTransaction, StoreError> {
    let mut txn = db.begin_write().db()?;
    txn.set_durability(Durability::None).db()?;
    Ok(txn)
}

/// Makes every earlier non-durable commit of `db` durable.
fn sync(db: &Database) -> Result<(), StoreError> {
    let mut txn = db.begin_write().db()?;
    txn.set_durability(Durability::Immediate).db()?;
    txn.commit().db()
}

/// The tables of `main` an apply writes, opened once for its transaction (a table opened in
/// a write transaction writes its root back when it is dropped).
struct MainTables<'t> {
    movies: redb::Table<'t, u64, &'static [u8]>,
    credits: redb::Table<'t, u64, &'static [u8]>,
    people: redb::Table<'t, u64, &'static [u8]>,
    browse: redb::Table<'t, (u8, u8, u16, u64, u64), ()>,
    genres: redb::Table<'t, u8, u64>,
    years: redb::Table<'t, u16, u64>,
    meta: redb::Table<'t, &'static str, u64>,
}

impl<'t> MainTables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        Ok(MainTables {
            movies: txn.open_table(MOVIES).db()?,
            credits: txn.open_table(CREDITS_BY_MOVIE).db()?,
            people: txn.open_table(PEOPLE).db()?,
            browse: txn.open_table(MOVIES_BY_GENRE_YEAR).db()?,
            genres: txn.open_table(GENRE_COUNTS).db()?,
            years: txn.open_table(YEARS).db()?,
            meta: txn.open_table(META).db()?,
        })
    }

    /// The stored record of `id`.
    fn record(&self, id: MovieId) -> Result<Option<MovieRecord>, StoreError> {
        let Some(bytes) = self.movies.get(id.0).db()?.map(|v| v.value().to_vec()) else {
            return Ok(None);
        };
        let movie: Movie = decode("movie", &bytes)?;
        let credits: Vec<Credit> = match self.credits.get(id.0).db()? {
            Some(v) => decode("credits", v.value())?,
            None => Vec::new(),
        };
        Ok(Some(MovieRecord { movie, credits }))
    }

    /// The stored person `id`.
    fn person(&self, id: PersonId) -> Result<Option<Person>, StoreError> {
        match self.people.get(id.0).db()? {
            Some(v) => Ok(Some(decode("person", v.value())?)),
            None => Ok(None),
        }
    }

    /// The year partitions that have movies, as the transaction leaves them.
    fn years(&self) -> Result<Vec<u16>, StoreError> {
        self.years.iter().db()?.map(|entry| Ok(entry.db()?.0.value())).collect()
    }
}

/// Adds `delta` to the counter under `key` of `table`, removing it at zero.
fn count<'k, K: redb::Key + 'static>(
    table: &mut redb::Table<'_, K, u64>,
    key: impl std::borrow::Borrow<K::SelfType<'k>> + Copy,
    delta: i64,
) -> Result<(), StoreError> {
    let now = table.get(key).db()?.map_or(0, |v| v.value());
    let next = now.saturating_add_signed(delta);
    if next == 0 {
        table.remove(key).db()?;
    } else {
        table.insert(key, next).db()?;
    }
    Ok(())
}

/// Writes one movie's diff into `main` (and its record, unless removed) and queues its index
/// rows in `pending`.
fn write_movie(
    main: &mut MainTables<'_>,
    new: Option<&MovieRecord>,
    id: MovieId,
    diff: &MovieDiff,
    pending: &mut Pending,
) -> Result<(), StoreError> {
    match new {
        Some(record) => {
            main.movies.insert(id.0, encode(&record.movie)?.as_slice()).db()?;
            main.credits.insert(id.0, encode(&record.credits)?.as_slice()).db()?;
        }
        None => {
            main.movies.remove(id.0).db()?;
            main.credits.remove(id.0).db()?;
        }
    }
    for key in &diff.browse_remove {
        main.browse.remove(key).db()?;
    }
    for key in &diff.browse_put {
        main.browse.insert(key, ()).db()?;
    }
    // Genre counts stay listed at zero: `genres` answers every genre.
    for &(genre, delta) in &diff.genre_counts {
        let now = main.genres.get(genre).db()?.map_or(0, |v| v.value());
        main.genres.insert(genre, now.saturating_add_signed(delta)).db()?;
    }
    for &(year, delta) in &diff.years {
        count(&mut main.years, year, delta)?;
    }
    if diff.existed != diff.exists {
        count(&mut main.meta, "movies", if diff.exists { 1 } else { -1 })?;
    }
    pending.film_remove.extend(diff.film_remove.iter().copied());
    for (key, entry) in &diff.film_put {
        pending.film_put.push((*key, encode(entry)?));
    }
    pending.search_remove.extend(diff.search_remove.iter().cloned());
    pending.search_put.extend(diff.search_put.iter().cloned());
    Ok(())
}

/// Writes the person changes.
fn write_people(main: &mut MainTables<'_>, planned: &Planned) -> Result<(), StoreError> {
    for change in &planned.people {
        match &change.new {
            Some(person) => main.people.insert(change.id.0, encode(person)?.as_slice()).db()?,
            None => main.people.remove(change.id.0).db()?,
        };
    }
    let added = planned.people_added();
    if added != 0 {
        count(&mut main.meta, "people", added)?;
    }
    Ok(())
}

/// Writes `pending`'s index rows into the two index files (not yet committed).
fn index_txns(
    files: &Files<'_>,
    pending: &Pending,
) -> Result<(WriteTransaction, WriteTransaction), StoreError> {
    let film = non_durable(files.filmography)?;
    {
        let mut table = film.open_table(CREDITS_BY_PERSON).db()?;
        for key in &pending.film_remove {
            table.remove(key).db()?;
        }
        for (key, entry) in &pending.film_put {
            table.insert(key, entry.as_slice()).db()?;
        }
    }
    let search = non_durable(files.search)?;
    {
        let mut table = search.open_table(TITLE_SEARCH).db()?;
        for (prefix, bucket, key, id) in &pending.search_remove {
            table.remove((prefix.as_str(), *bucket, *key, *id)).db()?;
        }
        for ((prefix, bucket, key, id), words) in &pending.search_put {
            table.insert((prefix.as_str(), *bucket, *key, *id), words.as_str()).db()?;
        }
    }
    Ok((film, search))
}

/// Makes the index files durable, writes the audit record and drops the pending record of the
/// apply stamped `nanos` (see the module docs).
fn settle(files: &Files<'_>, nanos: u64, audit: Option<&AuditRecord>) -> Result<(), StoreError> {
    sync(files.filmography)?;
    sync(files.search)?;
    if let Some(audit) = audit {
        let txn = files.users.begin_write().db()?;
        txn.open_table(AUDIT).db()?.insert(u64::MAX - nanos, encode(audit)?.as_slice()).db()?;
        txn.commit().db()?;
    }
    let txn = non_durable(files.main)?;
    txn.open_table(PENDING).db()?.remove(nanos).db()?;
    txn.commit().db()
}

/// The latest stamp an apply has used, from the pending records and the audit log, so a new
/// one is later whatever the clock did across a restart.
pub(crate) fn last_stamp(main: &Database, users: &Database) -> Result<u64, StoreError> {
    let pending = match main.begin_read().db()?.open_table(PENDING) {
        Ok(table) => table.last().db()?.map_or(0, |(k, _)| k.value()),
        Err(redb::TableError::TableDoesNotExist(_)) => 0,
        Err(e) => return Err(StoreError::backend(redb::Error::from(e))),
    };
    let audited = users
        .begin_read()
        .db()?
        .open_table(AUDIT)
        .db()?
        .first()
        .db()?
        .map_or(0, |(k, _)| u64::MAX - k.value());
    Ok(pending.max(audited))
}

/// Applies `changes` (see the module docs). Also returns what an earlier apply, which failed
/// after `main` became durable, changed: it is finished first, whatever becomes of this one,
/// and its changes are for the caches too.
pub(crate) fn apply(
    files: &Files<'_>,
    changes: &CatalogChanges,
    edit: &Edit,
) -> (Option<Applied>, Result<Applied, StoreError>) {
    if let Err(error) = changes.check() {
        return (None, Err(error));
    }
    let mut last = files.writer.lock().unwrap_or_else(PoisonError::into_inner);
    if std::fs::canonicalize(files.link).ok().as_deref() != Some(files.generation) {
        return (None, Err(StoreError::unavailable(crate::EmbeddedError::Superseded)));
    }
    let leftover = match finish_pending(files) {
        Ok(leftover) => leftover,
        Err(error) => return (None, Err(error)),
    };
    (leftover, apply_locked(files, changes, edit, &mut last))
}

/// [`apply`], with the writer's lock held (its last stamp in `last`).
fn apply_locked(
    files: &Files<'_>,
    changes: &CatalogChanges,
    edit: &Edit,
    last: &mut u64,
) -> Result<Applied, StoreError> {
    let nanos = now_nanos().max(*last + 1);
    *last = nanos;
    let mut pending = Pending::default();
    let main = non_durable(files.main)?;
    let mut tables = MainTables::open(&main)?;
    let planned = Planned::new(changes, |id| tables.record(id), |id| tables.person(id))?;
    for change in &planned.movies {
        write_movie(&mut tables, change.new.as_ref(), change.id, &change.diff, &mut pending)?;
    }
    write_people(&mut tables, &planned)?;
    let applied = planned.applied;
    if !applied.changed_anything() {
        drop(tables);
        main.abort().db()?;
        return Ok(applied);
    }
    let years = tables.years()?;
    drop(tables);
    let audit = applied.audit(edit, nanos / 1_000_000);
    pending.audit = Some(audit.clone());
    pending.applied = applied.clone();
    main.open_table(PENDING).db()?.insert(nanos, encode(&pending)?.as_slice()).db()?;
    let (film, search) = index_txns(files, &pending)?;
    // Durable before any reader sees it; acknowledged from here on.
    let mut main = main;
    main.set_durability(Durability::Immediate).db()?;
    main.commit().db()?;
    *files.years.write().unwrap_or_else(PoisonError::into_inner) = years;
    let rest = film
        .commit()
        .db()
        .and_then(|()| search.commit().db())
        .and_then(|()| settle(files, nanos, Some(&audit)));
    if let Err(error) = rest {
        // Durable in `main`: finished by the next apply or the next open.
        tracing::error!(%error, "a catalog change is durable but its index rows are not written yet; the next change or restart finishes it");
    }
    Ok(applied)
}

/// Finishes the applies a crash or an I/O error interrupted after `main` became durable (see
/// the module docs): what they changed, merged; `None` when there were none.
pub(crate) fn finish_pending(files: &Files<'_>) -> Result<Option<Applied>, StoreError> {
    let pending: BTreeMap<u64, Vec<u8>> = match files.main.begin_read().db()?.open_table(PENDING) {
        Ok(table) => table
            .iter()
            .db()?
            .map(|entry| {
                let (k, v) = entry.db()?;
                Ok((k.value(), v.value().to_vec()))
            })
            .collect::<Result<_, StoreError>>()?,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(StoreError::backend(redb::Error::from(e))),
    };
    if pending.is_empty() {
        return Ok(None);
    }
    let mut changed = Applied::default();
    for (nanos, bytes) in &pending {
        let record: Pending = decode("pending catalog write", bytes)?;
        let (film, search) = index_txns(files, &record)?;
        film.commit().db()?;
        search.commit().db()?;
        settle(files, *nanos, record.audit.as_ref())?;
        changed.merge(record.applied);
        tracing::warn!(nanos, "finished a catalog change that a crash or an error interrupted");
    }
    sync(files.main)?;
    Ok(Some(changed))
}

/// Movies with their credits as stored now.
pub(crate) fn records(main: &Database, ids: &[MovieId]) -> Result<Vec<Option<MovieRecord>>, StoreError> {
    let txn = main.begin_read().db()?;
    let movies = txn.open_table(MOVIES).db()?;
    let credits = txn.open_table(CREDITS_BY_MOVIE).db()?;
    ids.iter()
        .map(|id| {
            let Some(movie) = movies.get(id.0).db()? else { return Ok(None) };
            let movie: Movie = decode("movie", movie.value())?;
            let credits: Vec<Credit> = match credits.get(id.0).db()? {
                Some(v) => decode("credits", v.value())?,
                None => Vec::new(),
            };
            Ok(Some(MovieRecord { movie, credits }))
        })
        .collect()
}

/// A page of the audit log, newest first.
pub(crate) fn audit_page(users: &Database, page: UserPage) -> Result<Page<AuditRecord>, StoreError> {
    plan::check_user_page(page)?;
    let table = users.begin_read().db()?.open_table(AUDIT).db()?;
    let start = page.after.map_or(0, |p| p.key.saturating_add(1));
    let mut items = Vec::with_capacity(page.first);
    let mut has_next = false;
    for entry in table.range(start..).db()? {
        let (key, value) = entry.db()?;
        if items.len() == page.first {
            has_next = true;
            break;
        }
        items.push((Position { key: key.value(), id: 0 }, decode("audit record", value.value())?));
    }
    Ok(Page { items, has_next })
}
