//! Read paths of the embedded backend, one method per access path. Every method works on one
//! read snapshot, so a batch sees one consistent catalog.

use crate::Db;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ops::Bound;

use std::cell::OnceCell;
use std::sync::{PoisonError, RwLock};

use redb::{Database, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable};

use super::tables::*;
use marquee_store::keys;
use marquee_store::plan::{self, SEARCH_BUCKETS, SEARCH_SCAN_LIMIT, check_page};
use marquee_store::text;
use marquee_store::{
    BrowseQuery, CatalogStats, Credit, FilmographyEntry, FilmographyQuery, Genre, GenreCount, Movie, MovieId,
    MovieSort, Page, Person, PersonId, Position, SearchQuery, SimilarQuery, StoreError,
};

/// Checks the file's format version and loads the year partitions.
pub(super) fn check_format_and_years(db: &Database) -> Result<Vec<u16>, StoreError> {
    let txn = db.begin_read().db()?;
    let meta = txn.open_table(META).db()?;
    let version = meta.get("format_version").db()?.map(|v| v.value());
    if version != Some(FORMAT_VERSION) {
        return Err(StoreError::Corrupt {
            what: "catalog",
            detail: format!("format version {version:?}, this build reads {FORMAT_VERSION}"),
        });
    }
    let years = txn.open_table(YEARS).db()?;
    let mut out = Vec::new();
    for entry in years.iter().db()? {
        out.push(entry.db()?.0.value());
    }
    Ok(out)
}

type ByIdTable = ReadOnlyTable<u64, &'static [u8]>;
type CreditsByPersonTable = ReadOnlyTable<(u64, u64, u64), &'static [u8]>;
type ByGenreYearTable = ReadOnlyTable<(u8, u8, u16, u64, u64), ()>;
type TitleSearchTable = ReadOnlyTable<(&'static str, u8, u64, u64), &'static str>;

/// The catalog as one call sees it. Transactions and tables are opened on first use, so a
/// call pays only for the tables it reads (opening all of them cost ~5% of gateway CPU on the
/// realistic mix). Every call reads one file, in one transaction, so it sees one state of the
/// catalog; a live catalog write commits the files one after the other (`edit`).
pub(super) struct Snapshot<'a> {
    main: &'a Database,
    filmography: &'a Database,
    search: &'a Database,
    main_txn: OnceCell<ReadTransaction>,
    movies: OnceCell<ByIdTable>,
    people: OnceCell<ByIdTable>,
    credits_by_movie: OnceCell<ByIdTable>,
    credits_by_person: OnceCell<CreditsByPersonTable>,
    by_genre_year: OnceCell<ByGenreYearTable>,
    title_search: OnceCell<TitleSearchTable>,
    genre_counts: OnceCell<ReadOnlyTable<u8, u64>>,
    meta: OnceCell<ReadOnlyTable<&'static str, u64>>,
    /// The year partitions that exist (kept by live catalog writes).
    years: &'a RwLock<Vec<u16>>,
}

/// The value of `cell`, opening it with `open` the first time.
fn lazy<T>(cell: &OnceCell<T>, open: impl FnOnce() -> Result<T, StoreError>) -> Result<&T, StoreError> {
    if let Some(value) = cell.get() {
        return Ok(value);
    }
    let value = open()?;
    Ok(cell.get_or_init(|| value))
}

impl<'a> Snapshot<'a> {
    /// A view over the three files of the catalog; nothing is opened yet.
    pub(super) fn new(
        main: &'a Database,
        filmography: &'a Database,
        search: &'a Database,
        years: &'a RwLock<Vec<u16>>,
    ) -> Result<Self, StoreError> {
        Ok(Snapshot {
            main,
            filmography,
            search,
            main_txn: OnceCell::new(),
            movies: OnceCell::new(),
            people: OnceCell::new(),
            credits_by_movie: OnceCell::new(),
            credits_by_person: OnceCell::new(),
            by_genre_year: OnceCell::new(),
            title_search: OnceCell::new(),
            genre_counts: OnceCell::new(),
            meta: OnceCell::new(),
            years,
        })
    }

    fn main_txn(&self) -> Result<&ReadTransaction, StoreError> {
        lazy(&self.main_txn, || self.main.begin_read().db())
    }

    fn movies_table(&self) -> Result<&ByIdTable, StoreError> {
        lazy(&self.movies, || self.main_txn()?.open_table(MOVIES).db())
    }

    fn people_table(&self) -> Result<&ByIdTable, StoreError> {
        lazy(&self.people, || self.main_txn()?.open_table(PEOPLE).db())
    }

    fn credits_by_movie_table(&self) -> Result<&ByIdTable, StoreError> {
        lazy(&self.credits_by_movie, || self.main_txn()?.open_table(CREDITS_BY_MOVIE).db())
    }

    fn credits_by_person_table(&self) -> Result<&CreditsByPersonTable, StoreError> {
        lazy(&self.credits_by_person, || {
            self.filmography.begin_read().db()?.open_table(CREDITS_BY_PERSON).db()
        })
    }

    fn by_genre_year_table(&self) -> Result<&ByGenreYearTable, StoreError> {
        lazy(&self.by_genre_year, || self.main_txn()?.open_table(MOVIES_BY_GENRE_YEAR).db())
    }

    fn title_search_table(&self) -> Result<&TitleSearchTable, StoreError> {
        lazy(&self.title_search, || self.search.begin_read().db()?.open_table(TITLE_SEARCH).db())
    }

    fn genre_counts_table(&self) -> Result<&ReadOnlyTable<u8, u64>, StoreError> {
        lazy(&self.genre_counts, || self.main_txn()?.open_table(GENRE_COUNTS).db())
    }

    fn meta_table(&self) -> Result<&ReadOnlyTable<&'static str, u64>, StoreError> {
        lazy(&self.meta, || self.main_txn()?.open_table(META).db())
    }

    pub(super) fn movie(&self, id: MovieId) -> Result<Option<Movie>, StoreError> {
        self.movies_table()?.get(id.0).db()?.map(|v| decode("movie", v.value())).transpose()
    }

    pub(super) fn movies(&self, ids: &[MovieId]) -> Result<Vec<Option<Movie>>, StoreError> {
        ids.iter().map(|&id| self.movie(id)).collect()
    }

    pub(super) fn people(&self, ids: &[PersonId]) -> Result<Vec<Option<Person>>, StoreError> {
        ids.iter()
            .map(|id| self.people_table()?.get(id.0).db()?.map(|v| decode("person", v.value())).transpose())
            .collect()
    }

    pub(super) fn credits(&self, ids: &[MovieId]) -> Result<Vec<Vec<Credit>>, StoreError> {
        ids.iter()
            .map(|id| {
                Ok(self
                    .credits_by_movie_table()?
                    .get(id.0)
                    .db()?
                    .map(|v| decode("credits", v.value()))
                    .transpose()?
                    .unwrap_or_default())
            })
            .collect()
    }

    pub(super) fn filmography(&self, q: &FilmographyQuery) -> Result<Page<FilmographyEntry>, StoreError> {
        check_page(q.first)?;
        let p = q.person.0;
        let start = match q.after {
            Some(pos) => Bound::Excluded((p, pos.key, pos.id)),
            None => Bound::Included((p, 0, 0)),
        };
        let mut items = Vec::with_capacity(q.first);
        let mut has_next = false;
        for entry in self
            .credits_by_person_table()?
            .range::<(u64, u64, u64)>((start, Bound::Included((p, u64::MAX, u64::MAX))))
            .db()?
        {
            let (k, v) = entry.db()?;
            if items.len() == q.first {
                has_next = true;
                break;
            }
            let (_, key, id) = k.value();
            items.push((Position { key, id }, decode("filmography entry", v.value())?));
        }
        Ok(Page { items, has_next })
    }

    pub(super) fn search(&self, q: &SearchQuery) -> Result<Page<MovieId>, StoreError> {
        let (words, driver) = plan::search_plan(q)?;
        let driver = driver.as_str();
        let mut streams = Vec::with_capacity(usize::from(SEARCH_BUCKETS));
        for bucket in 0..SEARCH_BUCKETS {
            let start = match q.after {
                Some(pos) => Bound::Excluded((driver, bucket, pos.key, pos.id)),
                None => Bound::Included((driver, bucket, 0, 0)),
            };
            let end = Bound::Included((driver, bucket, u64::MAX, u64::MAX));
            let range = self.title_search_table()?.range::<(&str, u8, u64, u64)>((start, end)).db()?;
            streams.push(range.map(|entry| {
                let (k, v) = entry.db()?;
                let (_, _, key, id) = k.value();
                Ok((Position { key, id }, v.value().to_owned()))
            }));
        }
        let mut examined = 0usize;
        let mut items = Vec::with_capacity(q.first);
        let mut merged = Merge::new(streams)?;
        while let Some((pos, title_words)) = merged.next_item()? {
            if items.len() == q.first || examined == SEARCH_SCAN_LIMIT {
                return Ok(Page { items, has_next: true });
            }
            examined += 1;
            if text::matches(&words, &title_words) {
                items.push((pos, MovieId(pos.id)));
            }
        }
        Ok(Page { items, has_next: false })
    }

    pub(super) fn browse(&self, q: &BrowseQuery) -> Result<Page<MovieId>, StoreError> {
        let mut streams = Vec::new();
        let partitions =
            plan::browse_partitions(q, &self.years.read().unwrap_or_else(PoisonError::into_inner))?;
        for (sort, genre, year) in partitions {
            let start = match q.after {
                Some(pos) => Bound::Excluded((sort, genre, year, pos.key, pos.id)),
                None => Bound::Included((sort, genre, year, 0, 0)),
            };
            let end = Bound::Included((sort, genre, year, u64::MAX, u64::MAX));
            let range = self.by_genre_year_table()?.range::<(u8, u8, u16, u64, u64)>((start, end)).db()?;
            streams.push(range.map(|entry| {
                let (k, _) = entry.db()?;
                let (_, _, _, key, id) = k.value();
                Ok((Position { key, id }, MovieId(id)))
            }));
        }
        let mut merged = Merge::new(streams)?;
        let mut items = Vec::with_capacity(q.first);
        while let Some(item) = merged.next_item()? {
            if items.len() == q.first {
                return Ok(Page { items, has_next: true });
            }
            items.push(item);
        }
        Ok(Page { items, has_next: false })
    }

    pub(super) fn similar(&self, q: &SimilarQuery) -> Result<Vec<MovieId>, StoreError> {
        check_page(q.first)?;
        let Some(movie) = self.movie(q.movie)? else {
            return Ok(Vec::new());
        };
        let Some(&genre) = movie.genres.first() else {
            return Ok(Vec::new());
        };
        let year = movie.year.unwrap_or(0);
        let own = keys::popularity(movie.popularity);
        let sort = MovieSort::Popularity.code();
        // Nearest in popularity within the same genre and year; neighbouring years only when
        // the movie's own year has too few. Each partition read is bounded by `first` per side.
        let mut candidates: Vec<(u64, u64)> = Vec::new();
        for years in plan::similar_years(year) {
            for y in years {
                let partition = (sort, genre.code(), y);
                let lo = (partition.0, partition.1, partition.2, 0, 0);
                let hi = (partition.0, partition.1, partition.2, u64::MAX, u64::MAX);
                let pivot = (partition.0, partition.1, partition.2, own, movie.id.0);
                let after = self
                    .by_genre_year_table()?
                    .range::<(u8, u8, u16, u64, u64)>((Bound::Excluded(pivot), Bound::Included(hi)))
                    .db()?;
                let before = self
                    .by_genre_year_table()?
                    .range::<(u8, u8, u16, u64, u64)>((Bound::Included(lo), Bound::Excluded(pivot)))
                    .db()?
                    .rev();
                for entry in after.take(q.first).chain(before.take(q.first)) {
                    let (_, _, _, key, id) = entry.db()?.0.value();
                    if id != movie.id.0 {
                        candidates.push((key.abs_diff(own), id));
                    }
                }
            }
            if candidates.len() >= q.first {
                break;
            }
        }
        Ok(plan::closest(candidates, q.first))
    }

    pub(super) fn genres(&self) -> Result<Vec<GenreCount>, StoreError> {
        Genre::all()
            .map(|genre| {
                let movies = self.genre_counts_table()?.get(genre.code()).db()?.map_or(0, |v| v.value());
                Ok(GenreCount { genre, movies })
            })
            .collect()
    }

    pub(super) fn stats(&self) -> Result<CatalogStats, StoreError> {
        let get = |name: &str| -> Result<u64, StoreError> {
            Ok(self.meta_table()?.get(name).db()?.map_or(0, |v| v.value()))
        };
        Ok(CatalogStats { movies: get("movies")?, people: get("people")? })
    }
}

/// Lazy k-way merge of ascending streams: reading n items costs k + n entry reads, whatever
/// the number of partitions.
struct Merge<I, T> {
    streams: Vec<I>,
    heap: BinaryHeap<Reverse<(Position, usize)>>,
    pending: Vec<Option<T>>,
}

impl<I, T> Merge<I, T>
where
    I: Iterator<Item = Result<(Position, T), StoreError>>,
{
    fn new(streams: Vec<I>) -> Result<Self, StoreError> {
        let mut merge =
            Merge { heap: BinaryHeap::with_capacity(streams.len()), pending: Vec::new(), streams };
        merge.pending.resize_with(merge.streams.len(), || None);
        for i in 0..merge.streams.len() {
            merge.refill(i)?;
        }
        Ok(merge)
    }

    fn refill(&mut self, i: usize) -> Result<(), StoreError> {
        if let Some(next) = self.streams[i].next() {
            let (pos, item) = next?;
            self.pending[i] = Some(item);
            self.heap.push(Reverse((pos, i)));
        }
        Ok(())
    }

    fn next_item(&mut self) -> Result<Option<(Position, T)>, StoreError> {
        let Some(Reverse((pos, i))) = self.heap.pop() else {
            return Ok(None);
        };
        let item = self.pending[i].take();
        self.refill(i)?;
        Ok(item.map(|item| (pos, item)))
    }
}
