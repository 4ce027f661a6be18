//! User data: ratings and watchlists, in `users.redb` beside (not inside) the catalog
//! generations, so re-seeding or re-importing the catalog never touches them.
//!
//! Each list has two tables, the way the CQL tables are laid out: one keyed by (user, movie)
//! for point reads and replacement, one clustered by (user, newest first) for paging. Rating
//! totals per movie are maintained in the same write transaction as the user's row, so a
//! re-rate replaces the old score in the totals exactly once and a delete removes it exactly
//! once. Every write commits with redb's default durability (fsync) before it returns.

use crate::Db;
use std::ops::Bound;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use marquee_store::plan;
use marquee_store::{
    MovieId, Page, Position, Rating, RatingTotals, StoreError, UserId, UserPage, WatchlistEntry,
};

/// The user-data file in the data directory.
pub(crate) const USERS_FILE: &str = "users.redb";

/// (user, movie id) → (score, rated at ms).
const RATINGS_BY_USER: TableDefinition<'_, (&str, u64), (u8, u64)> = TableDefinition::new("ratings_by_user");
/// (user, inverted rated-at ms, movie id) → score.
const RATINGS_BY_USER_TIME: TableDefinition<'_, (&str, u64, u64), u8> =
    TableDefinition::new("ratings_by_user_time");
/// movie id → (sum of scores, number of ratings) from users.
const RATING_TOTALS: TableDefinition<'_, u64, (u64, u64)> = TableDefinition::new("rating_totals");
/// (user, movie id) → added at ms.
const WATCHLIST_BY_USER: TableDefinition<'_, (&str, u64), u64> = TableDefinition::new("watchlist_by_user");
/// (user, inverted added-at ms, movie id) → ().
const WATCHLIST_BY_USER_TIME: TableDefinition<'_, (&str, u64, u64), ()> =
    TableDefinition::new("watchlist_by_user_time");

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn inverted(ms: u64) -> u64 {
    u64::MAX - ms
}

/// Creates the tables if the file is new.
pub(super) fn init(db: &Database) -> Result<(), StoreError> {
    let txn = db.begin_write().db()?;
    txn.open_table(RATINGS_BY_USER).db()?;
    txn.open_table(RATINGS_BY_USER_TIME).db()?;
    txn.open_table(RATING_TOTALS).db()?;
    txn.open_table(WATCHLIST_BY_USER).db()?;
    txn.open_table(WATCHLIST_BY_USER_TIME).db()?;
    txn.open_table(crate::edit::AUDIT).db()?;
    txn.commit().db()?;
    Ok(())
}

/// Users' rating totals of each movie (zero where nobody rated).
pub(super) fn rating_totals(db: &Database, movies: &[MovieId]) -> Result<Vec<RatingTotals>, StoreError> {
    let totals = db.begin_read().db()?.open_table(RATING_TOTALS).db()?;
    movies
        .iter()
        .map(|movie| {
            Ok(totals.get(movie.0).db()?.map_or_else(RatingTotals::default, |v| {
                let (sum, count) = v.value();
                RatingTotals { sum, count }
            }))
        })
        .collect()
}

/// Sets a rating; `movie_exists` (read from the catalog just before) refuses an unknown movie
/// before anything is written. (An editor may remove the movie in between: the rating then
/// names a movie no longer listed, as one given before the removal does.)
pub(super) fn rate(
    db: &Database,
    user: &UserId,
    movie: MovieId,
    score: u8,
    movie_exists: bool,
) -> Result<Rating, StoreError> {
    plan::check_score(score)?;
    if !movie_exists {
        return Err(StoreError::NotFound { kind: "movie", id: movie.to_string() });
    }
    let at = now_ms();
    let u = user.as_str();
    let txn = db.begin_write().db()?;
    {
        let mut by_user = txn.open_table(RATINGS_BY_USER).db()?;
        let mut by_time = txn.open_table(RATINGS_BY_USER_TIME).db()?;
        let mut totals = txn.open_table(RATING_TOTALS).db()?;
        let previous = by_user.insert((u, movie.0), (score, at)).db()?.map(|v| v.value());
        let (mut sum, mut count) = totals.get(movie.0).db()?.map_or((0, 0), |v| v.value());
        if let Some((old_score, old_at)) = previous {
            by_time.remove((u, inverted(old_at), movie.0)).db()?;
            sum -= u64::from(old_score);
            count -= 1;
        }
        by_time.insert((u, inverted(at), movie.0), score).db()?;
        totals.insert(movie.0, (sum + u64::from(score), count + 1)).db()?;
    }
    txn.commit().db()?;
    Ok(Rating { movie, score, rated_at_ms: at })
}

pub(super) fn delete_rating(db: &Database, user: &UserId, movie: MovieId) -> Result<bool, StoreError> {
    let u = user.as_str();
    let txn = db.begin_write().db()?;
    let removed = {
        let mut by_user = txn.open_table(RATINGS_BY_USER).db()?;
        let Some((score, at)) = by_user.remove((u, movie.0)).db()?.map(|v| v.value()) else {
            return Ok(false);
        };
        txn.open_table(RATINGS_BY_USER_TIME).db()?.remove((u, inverted(at), movie.0)).db()?;
        let mut totals = txn.open_table(RATING_TOTALS).db()?;
        let (sum, count) = totals.get(movie.0).db()?.map_or((0, 0), |v| v.value());
        if count <= 1 {
            totals.remove(movie.0).db()?;
        } else {
            totals.insert(movie.0, (sum - u64::from(score), count - 1)).db()?;
        }
        true
    };
    txn.commit().db()?;
    Ok(removed)
}

pub(super) fn user_ratings(
    db: &Database,
    user: &UserId,
    movies: &[MovieId],
) -> Result<Vec<Option<Rating>>, StoreError> {
    let table = db.begin_read().db()?.open_table(RATINGS_BY_USER).db()?;
    movies
        .iter()
        .map(|&movie| {
            Ok(table.get((user.as_str(), movie.0)).db()?.map(|v| {
                let (score, at) = v.value();
                Rating { movie, score, rated_at_ms: at }
            }))
        })
        .collect()
}

/// Reads a newest-first page from a (user, inverted time, movie) table.
fn page_of<V: redb::Value + 'static, T>(
    table: &impl ReadableTable<(&'static str, u64, u64), V>,
    user: &UserId,
    page: UserPage,
    item: impl Fn(u64, u64, V::SelfType<'_>) -> T,
) -> Result<Page<T>, StoreError> {
    plan::check_user_page(page)?;
    let u = user.as_str();
    let start = match page.after {
        Some(pos) => Bound::Excluded((u, pos.key, pos.id)),
        None => Bound::Included((u, 0, 0)),
    };
    let end = Bound::Included((u, u64::MAX, u64::MAX));
    let mut items = Vec::with_capacity(page.first);
    let mut has_next = false;
    for entry in table.range::<(&str, u64, u64)>((start, end)).db()? {
        let (key, value) = entry.db()?;
        if items.len() == page.first {
            has_next = true;
            break;
        }
        let (_, inv, movie) = key.value();
        items.push((Position { key: inv, id: movie }, item(inv, movie, value.value())));
    }
    Ok(Page { items, has_next })
}

pub(super) fn ratings_page(db: &Database, user: &UserId, page: UserPage) -> Result<Page<Rating>, StoreError> {
    let table = db.begin_read().db()?.open_table(RATINGS_BY_USER_TIME).db()?;
    page_of(&table, user, page, |inv, movie, score| Rating {
        movie: MovieId(movie),
        score,
        rated_at_ms: inverted(inv),
    })
}

pub(super) fn add_to_watchlist(
    db: &Database,
    user: &UserId,
    movie: MovieId,
    movie_exists: bool,
) -> Result<WatchlistEntry, StoreError> {
    if !movie_exists {
        return Err(StoreError::NotFound { kind: "movie", id: movie.to_string() });
    }
    let u = user.as_str();
    let txn = db.begin_write().db()?;
    let entry = {
        let mut by_user = txn.open_table(WATCHLIST_BY_USER).db()?;
        if let Some(at) = by_user.get((u, movie.0)).db()?.map(|v| v.value()) {
            return Ok(WatchlistEntry { movie, added_at_ms: at });
        }
        let at = now_ms();
        by_user.insert((u, movie.0), at).db()?;
        txn.open_table(WATCHLIST_BY_USER_TIME).db()?.insert((u, inverted(at), movie.0), ()).db()?;
        WatchlistEntry { movie, added_at_ms: at }
    };
    txn.commit().db()?;
    Ok(entry)
}

pub(super) fn remove_from_watchlist(
    db: &Database,
    user: &UserId,
    movie: MovieId,
) -> Result<bool, StoreError> {
    let u = user.as_str();
    let txn = db.begin_write().db()?;
    {
        let Some(at) = txn.open_table(WATCHLIST_BY_USER).db()?.remove((u, movie.0)).db()?.map(|v| v.value())
        else {
            return Ok(false);
        };
        txn.open_table(WATCHLIST_BY_USER_TIME).db()?.remove((u, inverted(at), movie.0)).db()?;
    }
    txn.commit().db()?;
    Ok(true)
}

pub(super) fn watchlist_page(
    db: &Database,
    user: &UserId,
    page: UserPage,
) -> Result<Page<WatchlistEntry>, StoreError> {
    let table = db.begin_read().db()?.open_table(WATCHLIST_BY_USER_TIME).db()?;
    page_of(&table, user, page, |inv, movie, ()| WatchlistEntry {
        movie: MovieId(movie),
        added_at_ms: inverted(inv),
    })
}
