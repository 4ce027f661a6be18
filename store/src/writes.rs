//! Live catalog writes: a set of changes (movies with their credits, people, removals) applied
//! to the catalog being served, with every derived row (search terms, browse orderings,
//! filmographies, counts) kept in step, and an audit record of who changed what and when.
//!
//! The diff is backend-independent: a backend reads the current record of each changed id,
//! hands old and new to [`MovieDiff::new`], and writes the rows it lists. So both backends
//! derive exactly the rows a full load would have written for the new record, and an
//! unchanged record writes nothing (re-running a delta converges instead of churning).
//!
//! [`Applied`] says what changed, in the terms caches are invalidated in: entities by id, and
//! the list pages whose membership or order moved ([`Lists`]).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::plan::{self, ANY_GENRE, IndexRows};
use crate::{FilmographyEntry, MovieId, MovieRecord, Person, PersonId, StoreError};

/// Most changes one [`CatalogChanges`] may carry (movies, people and removals together):
/// one apply is one transaction, and readers wait for its commit.
pub const MAX_CHANGES: usize = 1_000;

/// Changes to apply to the catalog as one unit.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CatalogChanges {
    /// Movies to add or replace, each with its complete credits.
    pub movies: Vec<MovieRecord>,
    /// People to add or replace.
    pub people: Vec<Person>,
    /// Movies to remove, with their credits and every derived row.
    pub removed_movies: Vec<MovieId>,
    /// People to remove (credits naming them stay, and show no person).
    pub removed_people: Vec<PersonId>,
    /// The records these changes were derived from (an editor's read before a patch): the
    /// apply is refused with [`StoreError::Conflict`] if one is no longer what is stored, so
    /// two editors never undo each other. Empty for changes that replace records whole.
    pub based_on: Vec<Base>,
}

/// A record as a change found it (`None`: absent).
#[derive(Clone, Debug, PartialEq)]
pub enum Base {
    /// A movie with its credits.
    Movie(MovieId, Option<MovieRecord>),
    /// A person.
    Person(PersonId, Option<Person>),
}

impl CatalogChanges {
    /// How many changes this carries.
    pub fn len(&self) -> usize {
        self.movies.len() + self.people.len() + self.removed_movies.len() + self.removed_people.len()
    }

    /// Whether it carries none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuses a set that is too large, names one id twice, or holds a record an import would
    /// refuse.
    pub fn check(&self) -> Result<(), StoreError> {
        if self.len() > MAX_CHANGES {
            return Err(StoreError::InvalidInput(format!(
                "one apply takes at most {MAX_CHANGES} changes, got {}",
                self.len()
            )));
        }
        let mut movies = BTreeSet::new();
        for id in self.movies.iter().map(|r| r.movie.id).chain(self.removed_movies.iter().copied()) {
            if !movies.insert(id) {
                return Err(StoreError::InvalidInput(format!("{id} is changed twice in one apply")));
            }
        }
        let mut people = BTreeSet::new();
        for id in self.people.iter().map(|p| p.id).chain(self.removed_people.iter().copied()) {
            if !people.insert(id) {
                return Err(StoreError::InvalidInput(format!("{id} is changed twice in one apply")));
            }
        }
        for record in &self.movies {
            record.check().map_err(|e| StoreError::InvalidInput(format!("{}: {e}", record.movie.id)))?;
        }
        for person in &self.people {
            person.check().map_err(|e| StoreError::InvalidInput(format!("{}: {e}", person.id)))?;
        }
        Ok(())
    }
}

/// Who makes a change, and why: the audit record's origin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edit {
    /// Who: an editor's user id, or the operator's name for a delta import.
    pub editor: String,
    /// What they ran: a mutation name (`updateMovie`) or a command (`import imdb --incremental`).
    pub action: String,
}

/// One audit record: who changed what, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When the change was applied, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Who and why.
    pub edit: Edit,
    /// Movies added or replaced.
    pub movies: Vec<MovieId>,
    /// People added or replaced.
    pub people: Vec<PersonId>,
    /// Movies removed.
    pub removed_movies: Vec<MovieId>,
    /// People removed.
    pub removed_people: Vec<PersonId>,
}

/// The list pages whose membership or order a change moved: what an edge purges by key and a
/// response cache drops, besides the changed entities themselves.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lists {
    /// Title-search partitions (index prefixes) whose rows moved.
    pub search_prefixes: BTreeSet<String>,
    /// Browse partitions by genre code ([`ANY_GENRE`] for "any genre") whose rows moved.
    pub browse_genres: BTreeSet<u8>,
    /// Whether a genre's movie count changed.
    pub genre_counts: bool,
}

impl Lists {
    /// Adds `other`'s lists.
    pub fn merge(&mut self, other: Lists) {
        self.search_prefixes.extend(other.search_prefixes);
        self.browse_genres.extend(other.browse_genres);
        self.genre_counts |= other.genre_counts;
    }
}

/// An apply in the backend's change log ([`crate::CatalogWrites::catalog_log`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logged {
    /// The apply's own number (on ScyllaDB its write timestamp): the same wherever and
    /// however often it is listed.
    pub stamp: i64,
    /// What it changed.
    pub applied: Applied,
}

/// What an apply changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Movies added or replaced (the record differed).
    pub movies: Vec<MovieId>,
    /// People added or replaced.
    pub people: Vec<PersonId>,
    /// Movies removed.
    pub removed_movies: Vec<MovieId>,
    /// People removed.
    pub removed_people: Vec<PersonId>,
    /// Records given that equal what is stored: nothing written for them.
    pub unchanged: u64,
    /// Removals naming a movie or person the catalog does not have (reported, not an error:
    /// a re-run delta meets its own earlier removals).
    pub unknown_removals: Vec<String>,
    /// People whose filmography a change of credits moved.
    pub filmographies: Vec<PersonId>,
    /// List pages that moved.
    pub lists: Lists,
}

impl Applied {
    /// Whether anything was written.
    pub fn changed_anything(&self) -> bool {
        !(self.movies.is_empty()
            && self.people.is_empty()
            && self.removed_movies.is_empty()
            && self.removed_people.is_empty())
    }

    /// The audit record of this apply.
    pub fn audit(&self, edit: &Edit, at_ms: u64) -> AuditRecord {
        AuditRecord {
            at_ms,
            edit: edit.clone(),
            movies: self.movies.clone(),
            people: self.people.clone(),
            removed_movies: self.removed_movies.clone(),
            removed_people: self.removed_people.clone(),
        }
    }

    /// Folds one movie's diff in.
    pub fn add_movie(&mut self, id: MovieId, diff: &MovieDiff) {
        match (diff.existed, diff.exists) {
            (_, true) => self.movies.push(id),
            (true, false) => self.removed_movies.push(id),
            (false, false) => {}
        }
        self.filmographies.extend(diff.people.iter().copied());
        self.lists.merge(diff.lists.clone());
    }

    /// Adds what `other` changed (an earlier apply finished late, say).
    pub fn merge(&mut self, other: Applied) {
        self.movies.extend(other.movies);
        self.people.extend(other.people);
        self.removed_movies.extend(other.removed_movies);
        self.removed_people.extend(other.removed_people);
        self.filmographies.extend(other.filmographies);
        self.lists.merge(other.lists);
        self.finish();
    }

    /// Sorts and de-duplicates the id lists.
    pub fn finish(&mut self) {
        self.filmographies.sort_unstable();
        self.filmographies.dedup();
    }
}

/// A filmography row: (person, sort key, movie id << 8 | credit ordinal).
pub type FilmKey = (u64, u64, u64);
/// A browse row: (sort code, genre code or [`ANY_GENRE`], year, sort key, movie id).
pub type BrowseKey = (u8, u8, u16, u64, u64);
/// A title-search row: (prefix, bucket, popularity key, movie id).
pub type SearchKey = (String, u8, u64, u64);

/// The rows one movie's change removes and writes in each derived table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MovieDiff {
    /// Whether the movie was in the catalog before.
    pub existed: bool,
    /// Whether it is after.
    pub exists: bool,
    /// Filmography rows to delete.
    pub film_remove: Vec<FilmKey>,
    /// Filmography rows to write.
    pub film_put: Vec<(FilmKey, FilmographyEntry)>,
    /// Browse rows to delete.
    pub browse_remove: Vec<BrowseKey>,
    /// Browse rows to write.
    pub browse_put: Vec<BrowseKey>,
    /// Title-search rows to delete.
    pub search_remove: Vec<SearchKey>,
    /// Title-search rows to write, with the title's normalised words.
    pub search_put: Vec<(SearchKey, String)>,
    /// Genre counts: (genre code, +1 or -1).
    pub genre_counts: Vec<(u8, i64)>,
    /// Year partitions' movie counts: (year or 0, +1 or -1).
    pub years: Vec<(u16, i64)>,
    /// People whose filmography moved.
    pub people: BTreeSet<PersonId>,
    /// List pages that moved.
    pub lists: Lists,
}

fn film_rows(rows: &IndexRows) -> Vec<(FilmKey, FilmographyEntry)> {
    rows.filmography
        .iter()
        .map(|(person, key, ordinal, entry)| ((*person, *key, *ordinal), entry.clone()))
        .collect()
}

fn browse_rows(id: u64, rows: &IndexRows) -> Vec<BrowseKey> {
    rows.browse.iter().map(|&(sort, genre, year, key)| (sort, genre, year, key, id)).collect()
}

fn search_rows(id: u64, rows: &IndexRows) -> Vec<SearchKey> {
    rows.prefixes.iter().map(|p| (p.clone(), rows.bucket, rows.popularity_key, id)).collect()
}

impl MovieDiff {
    /// The rows that take the catalog from `old` to `new` for one movie (`None`: absent).
    /// `None` when nothing differs.
    pub fn new(old: Option<&MovieRecord>, new: Option<&MovieRecord>) -> Option<MovieDiff> {
        if old == new {
            return None;
        }
        let id = old.or(new).map(|r| r.movie.id)?;
        let old_rows = old.map(plan::index_rows);
        let new_rows = new.map(plan::index_rows);
        let mut diff = MovieDiff { existed: old.is_some(), exists: new.is_some(), ..MovieDiff::default() };

        let old_film = old_rows.as_ref().map(film_rows).unwrap_or_default();
        let new_film = new_rows.as_ref().map(film_rows).unwrap_or_default();
        let new_film_keys: BTreeSet<FilmKey> = new_film.iter().map(|(k, _)| *k).collect();
        diff.film_remove = old_film.iter().map(|(k, _)| *k).filter(|k| !new_film_keys.contains(k)).collect();
        for (key, entry) in &new_film {
            if !old_film.iter().any(|(k, e)| k == key && e == entry) {
                diff.film_put.push((*key, entry.clone()));
            }
        }
        diff.people =
            diff.film_put.iter().map(|(k, _)| k).chain(&diff.film_remove).map(|k| PersonId(k.0)).collect();

        let old_browse: BTreeSet<BrowseKey> =
            old_rows.as_ref().map(|r| browse_rows(id.0, r)).unwrap_or_default().into_iter().collect();
        let new_browse: BTreeSet<BrowseKey> =
            new_rows.as_ref().map(|r| browse_rows(id.0, r)).unwrap_or_default().into_iter().collect();
        diff.browse_remove = old_browse.difference(&new_browse).copied().collect();
        diff.browse_put = new_browse.difference(&old_browse).copied().collect();
        for key in diff.browse_remove.iter().chain(&diff.browse_put) {
            diff.lists.browse_genres.insert(key.1);
        }

        let old_search: BTreeSet<SearchKey> =
            old_rows.as_ref().map(|r| search_rows(id.0, r)).unwrap_or_default().into_iter().collect();
        let new_search: BTreeSet<SearchKey> =
            new_rows.as_ref().map(|r| search_rows(id.0, r)).unwrap_or_default().into_iter().collect();
        let words_changed =
            old_rows.as_ref().map(|r| &r.title_words) != new_rows.as_ref().map(|r| &r.title_words);
        diff.search_remove = old_search.difference(&new_search).cloned().collect();
        let new_words = new_rows.as_ref().map(|r| r.title_words.clone()).unwrap_or_default();
        diff.search_put = new_search
            .iter()
            .filter(|k| words_changed || !old_search.contains(*k))
            .map(|k| (k.clone(), new_words.clone()))
            .collect();
        for (key, _) in &diff.search_put {
            diff.lists.search_prefixes.insert(key.0.clone());
        }
        for key in &diff.search_remove {
            diff.lists.search_prefixes.insert(key.0.clone());
        }

        let genres = |r: Option<&MovieRecord>| -> BTreeSet<u8> {
            r.map(|r| r.movie.genres.iter().map(|g| g.code()).collect()).unwrap_or_default()
        };
        let (old_genres, new_genres) = (genres(old), genres(new));
        diff.genre_counts.extend(old_genres.difference(&new_genres).map(|&g| (g, -1)));
        diff.genre_counts.extend(new_genres.difference(&old_genres).map(|&g| (g, 1)));
        diff.lists.genre_counts = !diff.genre_counts.is_empty();
        let year = |r: Option<&MovieRecord>| r.map(|r| r.movie.year.unwrap_or(0));
        if year(old) != year(new) {
            if let Some(y) = year(old) {
                diff.years.push((y, -1));
            }
            if let Some(y) = year(new) {
                diff.years.push((y, 1));
            }
        }
        if !diff.browse_remove.is_empty() || !diff.browse_put.is_empty() {
            diff.lists.browse_genres.insert(ANY_GENRE);
        }
        Some(diff)
    }
}

/// One movie an apply changes: its record after (`None`: removed) and the rows that move.
#[derive(Clone, Debug, PartialEq)]
pub struct MovieChange {
    /// The movie.
    pub id: MovieId,
    /// Its record before (`None`: new).
    pub old: Option<MovieRecord>,
    /// Its record after (`None`: removed).
    pub new: Option<MovieRecord>,
    /// The rows that move.
    pub diff: MovieDiff,
}

/// One person an apply changes.
#[derive(Clone, Debug, PartialEq)]
pub struct PersonChange {
    /// The person.
    pub id: PersonId,
    /// Whether the catalog had them before.
    pub existed: bool,
    /// Their record after (`None`: removed).
    pub new: Option<Person>,
}

/// What an apply writes, planned from the records it replaces (the same for every backend).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Planned {
    /// Movies that change, in the order given.
    pub movies: Vec<MovieChange>,
    /// People that change.
    pub people: Vec<PersonChange>,
    /// What the apply changes, for the caller and the caches.
    pub applied: Applied,
}

impl Planned {
    /// Plans `changes` against the catalog as `movie` and `person` read it: refuses a change
    /// whose `based_on` no longer holds ([`StoreError::Conflict`]), and leaves out records
    /// equal to what is stored.
    pub fn new(
        changes: &CatalogChanges,
        mut movie: impl FnMut(MovieId) -> Result<Option<MovieRecord>, StoreError>,
        mut person: impl FnMut(PersonId) -> Result<Option<Person>, StoreError>,
    ) -> Result<Planned, StoreError> {
        for base in &changes.based_on {
            let (same, id) = match base {
                Base::Movie(id, seen) => (movie(*id)? == *seen, id.to_string()),
                Base::Person(id, seen) => (person(*id)? == *seen, id.to_string()),
            };
            if !same {
                return Err(StoreError::Conflict(id));
            }
        }
        let mut planned = Planned::default();
        let news = changes.movies.iter().map(|r| (r.movie.id, Some(r)));
        for (id, new) in news.chain(changes.removed_movies.iter().map(|&id| (id, None))) {
            let old = movie(id)?;
            if new.is_none() && old.is_none() {
                planned.applied.unknown_removals.push(id.to_string());
                continue;
            }
            let Some(diff) = MovieDiff::new(old.as_ref(), new) else {
                planned.applied.unchanged += 1;
                continue;
            };
            planned.applied.add_movie(id, &diff);
            planned.movies.push(MovieChange { id, old, new: new.cloned(), diff });
        }
        for new in &changes.people {
            let old = person(new.id)?;
            if old.as_ref() == Some(new) {
                planned.applied.unchanged += 1;
                continue;
            }
            planned.applied.people.push(new.id);
            planned.people.push(PersonChange { id: new.id, existed: old.is_some(), new: Some(new.clone()) });
        }
        for &id in &changes.removed_people {
            if person(id)?.is_none() {
                planned.applied.unknown_removals.push(id.to_string());
                continue;
            }
            planned.applied.removed_people.push(id);
            planned.people.push(PersonChange { id, existed: true, new: None });
        }
        planned.applied.finish();
        Ok(planned)
    }

    /// How the catalog's people count moves.
    pub fn people_added(&self) -> i64 {
        self.people.iter().map(|p| i64::from(p.new.is_some()) - i64::from(p.existed)).sum()
    }
}
