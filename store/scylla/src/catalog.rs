//! Catalog reads, one method per access path. Every call reads the one generation the store
//! serves when it starts (a newly published one replaces it between calls), so a call never
//! mixes two catalogs. Batches are
//! concurrent single-partition reads (token-aware), never a multi-partition `IN`.

use std::sync::Arc;

use futures::future::try_join_all;
use marquee_store::plan::{self, SEARCH_BUCKETS, SEARCH_SCAN_LIMIT};
use marquee_store::{
    BrowseQuery, CatalogStats, Credit, FilmographyEntry, FilmographyQuery, Genre, GenreCount, Movie, MovieId,
    MovieSort, Page, Person, PersonId, Position, SearchQuery, SimilarQuery, StoreError, keys, text,
};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlValue;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::ranged::{Cursor, Merge, RangeRead};
use crate::session::{Cluster, Kind, decode_error, driver_error, execution_error};

/// `sort_order` of the mirrored popularity partitions (see the schema file).
pub(crate) const POPULARITY_MIRRORED: u8 = 3;

/// `year` of the top partitions in `movies_by_genre_year`: each browse order's first rows
/// across all years (no movie has a negative year; see `plan::BROWSE_TOP_ROWS`).
pub(crate) const TOP_YEAR: i32 = -1;

/// The catalog generation a store serves, with what is small enough to hold whole.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Generation {
    pub(crate) id: i64,
    pub(crate) stats: CatalogStats,
    pub(crate) genre_movies: Vec<u64>,
    pub(crate) years: Vec<u16>,
    /// Whether the load wrote the top partitions of every browse order (format 2 on).
    pub(crate) top_partitions: bool,
    /// The stamp of the live change whose counts these are (`catalog_counts`); 0 for the
    /// load's own. Counts are only ever replaced by ones of a stamp at least as new.
    pub(crate) counts_stamp: i64,
}

/// Prepared statements of the catalog reads.
pub(crate) struct CatalogStatements {
    movie: PreparedStatement,
    person: PreparedStatement,
    credits: PreparedStatement,
    filmography: RangeRead,
    browse: RangeRead,
    search: RangeRead,
}

impl CatalogStatements {
    pub(crate) async fn prepare(cluster: &Cluster) -> Result<Self, StoreError> {
        Ok(CatalogStatements {
            movie: cluster
                .prepare(Kind::Read, "SELECT body FROM {keyspace}.movies_by_id WHERE generation = ? AND movie = ?")
                .await?,
            person: cluster
                .prepare(Kind::Read, "SELECT body FROM {keyspace}.people_by_id WHERE generation = ? AND person = ?")
                .await?,
            credits: cluster
                .prepare(Kind::Read, "SELECT body FROM {keyspace}.credits_by_movie WHERE generation = ? AND movie = ?")
                .await?,
            filmography: RangeRead::prepare(
                cluster,
                "SELECT pos, body FROM {keyspace}.credits_by_person WHERE generation = ? AND person = ?",
            )
            .await?,
            browse: RangeRead::prepare(
                cluster,
                "SELECT pos FROM {keyspace}.movies_by_genre_year \
                 WHERE generation = ? AND sort_order = ? AND genre = ? AND year = ?",
            )
            .await?,
            search: RangeRead::prepare(
                cluster,
                "SELECT pos, words FROM {keyspace}.title_search WHERE generation = ? AND prefix = ? AND bucket = ?",
            )
            .await?,
        })
    }
}

pub(crate) fn decode_body<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt { what, detail: e.to_string() })
}

/// One row's `body` by partition key, `None` when there is no such row.
async fn body(
    cluster: &Cluster,
    statement: &PreparedStatement,
    generation: i64,
    id: u64,
) -> Result<Option<Vec<u8>>, StoreError> {
    let span = crate::session::statement_span(statement);
    let result = async {
        let _slot = cluster.slot().await?;
        cluster.session.execute_unpaged(statement, (generation, id as i64)).await.map_err(execution_error)
    }
    .instrument(span.clone())
    .await?;
    crate::session::record_rows(&span, &result);
    let rows = result.into_rows_result().map_err(driver_error)?;
    Ok(rows.maybe_first_row::<(Vec<u8>,)>().map_err(decode_error)?.map(|(body,)| body))
}

async fn bodies<T: DeserializeOwned>(
    cluster: &Cluster,
    statement: &PreparedStatement,
    generation: i64,
    ids: impl Iterator<Item = u64>,
    what: &'static str,
) -> Result<Vec<Option<T>>, StoreError> {
    try_join_all(ids.map(|id| async move {
        body(cluster, statement, generation, id).await?.map(|b| decode_body(what, &b)).transpose()
    }))
    .await
}

fn big(v: u64) -> CqlValue {
    CqlValue::BigInt(v as i64)
}

fn int(v: impl Into<i32>) -> CqlValue {
    CqlValue::Int(v.into())
}

/// The catalog as one generation, read through one cluster.
pub(crate) struct Catalog<'a> {
    pub(crate) cluster: &'a Cluster,
    pub(crate) statements: &'a CatalogStatements,
    /// Taken once per call, so one call never mixes two generations.
    pub(crate) generation: Arc<Generation>,
}

impl Catalog<'_> {
    fn gen_value(&self) -> CqlValue {
        CqlValue::BigInt(self.generation.id)
    }

    pub(crate) async fn movies(&self, ids: &[MovieId]) -> Result<Vec<Option<Movie>>, StoreError> {
        bodies(self.cluster, &self.statements.movie, self.generation.id, ids.iter().map(|m| m.0), "movie")
            .await
    }

    pub(crate) async fn people(&self, ids: &[PersonId]) -> Result<Vec<Option<Person>>, StoreError> {
        bodies(self.cluster, &self.statements.person, self.generation.id, ids.iter().map(|p| p.0), "person")
            .await
    }

    pub(crate) async fn credits(&self, ids: &[MovieId]) -> Result<Vec<Vec<Credit>>, StoreError> {
        let credits: Vec<Option<Vec<Credit>>> = bodies(
            self.cluster,
            &self.statements.credits,
            self.generation.id,
            ids.iter().map(|m| m.0),
            "credits",
        )
        .await?;
        Ok(credits.into_iter().map(Option::unwrap_or_default).collect())
    }

    async fn filmography(&self, q: &FilmographyQuery) -> Result<Page<FilmographyEntry>, StoreError> {
        plan::check_page(q.first)?;
        let partition = vec![self.gen_value(), big(q.person.0)];
        let mut cursor: Cursor<'_, (Vec<u8>, Vec<u8>)> =
            Cursor::new(&self.statements.filmography, partition, q.after, q.first + 1);
        let mut items = Vec::with_capacity(q.first);
        while let Some((pos, (_, body))) = cursor.next(self.cluster).await? {
            if items.len() == q.first {
                return Ok(Page { items, has_next: true });
            }
            items.push((pos, decode_body("filmography entry", &body)?));
        }
        Ok(Page { items, has_next: false })
    }

    pub(crate) async fn filmographies(
        &self,
        queries: &[FilmographyQuery],
    ) -> Result<Vec<Page<FilmographyEntry>>, StoreError> {
        try_join_all(queries.iter().map(|q| self.filmography(q))).await
    }

    pub(crate) async fn search(&self, q: &SearchQuery) -> Result<Page<MovieId>, StoreError> {
        let (words, driver) = plan::search_plan(q)?;
        let cursors = (0..SEARCH_BUCKETS)
            .map(|bucket| {
                let partition = vec![self.gen_value(), CqlValue::Text(driver.clone()), int(bucket)];
                Cursor::<(Vec<u8>, String)>::new(&self.statements.search, partition, q.after, q.first + 1)
            })
            .collect();
        let mut merged = Merge::scanning(cursors);
        let mut examined = 0usize;
        let mut items = Vec::with_capacity(q.first);
        while let Some((pos, (_, title_words))) = merged.next(self.cluster).await? {
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

    /// A browse without a year range reads its order's top partition (one statement) and,
    /// only for a page past its [`plan::BROWSE_TOP_ROWS`], every year's partition merged; with a year
    /// range, the range's years merged.
    pub(crate) async fn browse(&self, q: &BrowseQuery) -> Result<Page<MovieId>, StoreError> {
        let partitions = plan::browse_partitions(q, &self.generation.years)?;
        if q.year_from.is_none()
            && q.year_to.is_none()
            && self.generation.top_partitions
            && let Some(page) = self.browse_top(q).await?
        {
            return Ok(page);
        }
        let cursors = partitions
            .into_iter()
            .map(|(sort, genre, year)| {
                let partition = vec![self.gen_value(), int(sort), int(genre), int(year)];
                Cursor::<(Vec<u8>,)>::new(&self.statements.browse, partition, q.after, q.first + 1)
            })
            .collect();
        let mut merged = Merge::new(cursors);
        let mut items = Vec::with_capacity(q.first);
        while let Some((pos, _)) = merged.next(self.cluster).await? {
            if items.len() == q.first {
                return Ok(Page { items, has_next: true });
            }
            items.push((pos, MovieId(pos.id)));
        }
        Ok(Page { items, has_next: false })
    }

    /// The page from the top partition of the query's order, `None` when the page reaches past
    /// the partition's last row and the order has more.
    async fn browse_top(&self, q: &BrowseQuery) -> Result<Option<Page<MovieId>>, StoreError> {
        let genre = q.genre.map_or(plan::ANY_GENRE, Genre::code);
        let rows = match q.genre {
            None => self.generation.stats.movies,
            Some(genre) => self.generation.genre_movies.get(usize::from(genre.code())).copied().unwrap_or(0),
        };
        let partition = vec![self.gen_value(), int(q.sort.code()), int(genre), CqlValue::Int(TOP_YEAR)];
        let mut cursor = Cursor::<(Vec<u8>,)>::new(&self.statements.browse, partition, q.after, q.first + 1);
        let mut items = Vec::with_capacity(q.first);
        while let Some((pos, _)) = cursor.next(self.cluster).await? {
            if items.len() == q.first {
                return Ok(Some(Page { items, has_next: true }));
            }
            items.push((pos, MovieId(pos.id)));
        }
        // The top partition holds the whole order when the order has no more rows than it.
        Ok((rows <= plan::BROWSE_TOP_ROWS as u64).then_some(Page { items, has_next: false }))
    }

    /// Up to `first` rows of one browse partition after `after`.
    async fn partition_after(
        &self,
        sort: u8,
        genre: u8,
        year: u16,
        after: Position,
        first: usize,
    ) -> Result<Vec<Position>, StoreError> {
        let partition = vec![self.gen_value(), int(sort), int(genre), int(year)];
        let mut cursor = Cursor::<(Vec<u8>,)>::new(&self.statements.browse, partition, Some(after), first);
        let mut out = Vec::with_capacity(first);
        while out.len() < first {
            let Some((pos, _)) = cursor.next(self.cluster).await? else { break };
            out.push(pos);
        }
        Ok(out)
    }

    async fn similar_one(&self, q: &SimilarQuery) -> Result<Vec<MovieId>, StoreError> {
        plan::check_page(q.first)?;
        let Some(movie) = self.movies(&[q.movie]).await?.pop().flatten() else {
            return Ok(Vec::new());
        };
        let Some(&genre) = movie.genres.first() else {
            return Ok(Vec::new());
        };
        let own = keys::popularity(movie.popularity);
        let pivot = Position { key: own, id: movie.id.0 };
        let mirrored_pivot = Position { key: u64::MAX - own, id: u64::MAX - movie.id.0 };
        let sort = MovieSort::Popularity.code();
        // Nearest in popularity within the same genre and year: `first` just less popular
        // (ascending after the movie) and `first` just more popular (ascending after it in the
        // mirrored partition); neighbouring years only when the movie's own year has too few.
        let mut candidates: Vec<(u64, u64)> = Vec::new();
        for years in plan::similar_years(movie.year.unwrap_or(0)) {
            let reads = years.iter().flat_map(|&y| {
                [
                    self.partition_after(sort, genre.code(), y, pivot, q.first),
                    self.partition_after(POPULARITY_MIRRORED, genre.code(), y, mirrored_pivot, q.first),
                ]
            });
            for (i, side) in try_join_all(reads).await?.into_iter().enumerate() {
                let mirrored = i % 2 == 1;
                for pos in side {
                    let (key, id) =
                        if mirrored { (u64::MAX - pos.key, u64::MAX - pos.id) } else { (pos.key, pos.id) };
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

    pub(crate) async fn similar(&self, queries: &[SimilarQuery]) -> Result<Vec<Vec<MovieId>>, StoreError> {
        try_join_all(queries.iter().map(|q| self.similar_one(q))).await
    }

    pub(crate) fn genres(&self) -> Vec<GenreCount> {
        Genre::all()
            .map(|genre| GenreCount {
                genre,
                movies: self.generation.genre_movies.get(usize::from(genre.code())).copied().unwrap_or(0),
            })
            .collect()
    }
}
