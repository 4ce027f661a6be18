//! How every backend plans the ordered reads, so they answer the same query with the same
//! rows: which partitions a browse or search reads, how a page is validated, how far `similar`
//! looks, and what one catalog movie contributes to each access path when it is loaded.

use crate::{
    BrowseQuery, FilmographyEntry, Genre, MAX_PAGE, MovieRecord, MovieSort, SearchQuery, StoreError, keys,
    text,
};

/// Buckets per search prefix, so a common prefix ("t", "the") is several bounded partitions
/// rather than one hot, unbounded one.
pub const SEARCH_BUCKETS: u8 = 8;

/// `genre` partition value meaning "any genre" in the browse partitions.
pub const ANY_GENRE: u8 = u8::MAX;

/// Rows of each browse order's top partition (ScyllaDB backend): the first rows of every
/// order (sort and genre, or any genre) across all years, kept by the load, so a browse
/// without a year range reads one partition instead of one per year (~130) for its first
/// 10,000 rows (100 pages of 100). At 16 bytes of key a row, a top partition is a few
/// hundred kB.
pub const BROWSE_TOP_ROWS: usize = 10_000;

/// How many index entries one search may examine before it returns what it found so far
/// (with `has_next`), so a query whose words rarely meet cannot scan a whole prefix.
pub const SEARCH_SCAN_LIMIT: usize = 20_000;

/// Most words a search query may have.
pub const MAX_QUERY_WORDS: usize = 8;

/// How many years either side of a movie `similar` looks in when its own year is short.
pub const SIMILAR_YEAR_SPREAD: u16 = 2;

/// Credits of one movie indexed in its people's filmographies (the ordinal is 8 bits).
pub const MAX_INDEXED_CREDITS: usize = 256;

/// The search bucket of a movie.
pub fn search_bucket(movie: u64) -> u8 {
    (movie % u64::from(SEARCH_BUCKETS)) as u8
}

/// Refuses pages larger than [`MAX_PAGE`].
pub fn check_page(first: usize) -> Result<(), StoreError> {
    if first > MAX_PAGE {
        return Err(StoreError::InvalidInput(format!(
            "page size {first} is above the maximum of {MAX_PAGE}"
        )));
    }
    Ok(())
}

/// A search's query words and the prefix partition it reads (its longest word's).
pub fn search_plan(q: &SearchQuery) -> Result<(Vec<String>, String), StoreError> {
    check_page(q.first)?;
    let words = text::words(&q.text);
    if words.is_empty() {
        return Err(StoreError::InvalidInput("search text needs at least one letter or digit".into()));
    }
    if words.len() > MAX_QUERY_WORDS {
        return Err(StoreError::InvalidInput(format!(
            "search text may have at most {MAX_QUERY_WORDS} words"
        )));
    }
    let driver = words.iter().max_by_key(|w| w.len()).map_or("", |w| text::lookup_prefix(w)).to_owned();
    Ok((words, driver))
}

/// The (sort code, genre code, year) browse partitions a query reads, given the years that
/// have movies (year 0 holds undated movies and is left out when a year range is given).
pub fn browse_partitions(q: &BrowseQuery, years: &[u16]) -> Result<Vec<(u8, u8, u16)>, StoreError> {
    check_page(q.first)?;
    if let (Some(from), Some(to)) = (q.year_from, q.year_to)
        && from > to
    {
        return Err(StoreError::InvalidInput(format!("yearFrom ({from}) is after yearTo ({to})")));
    }
    let filtered = q.year_from.is_some() || q.year_to.is_some();
    let from = q.year_from.unwrap_or(0);
    let to = q.year_to.unwrap_or(u16::MAX);
    let genre = q.genre.map_or(ANY_GENRE, Genre::code);
    Ok(years
        .iter()
        .filter(|&&y| (from..=to).contains(&y) && (y != 0 || !filtered))
        .map(|&year| (q.sort.code(), genre, year))
        .collect())
}

/// The years `similar` reads at each widening step: the movie's own, then ± 1, ± 2.
pub fn similar_years(year: u16) -> impl Iterator<Item = Vec<u16>> {
    (0..=SIMILAR_YEAR_SPREAD).map(move |spread| {
        if spread == 0 { vec![year] } else { vec![year.saturating_sub(spread), year.saturating_add(spread)] }
    })
}

/// Picks `similar`'s answer from (distance in popularity, movie id) candidates.
pub fn closest(mut candidates: Vec<(u64, u64)>, first: usize) -> Vec<crate::MovieId> {
    candidates.sort_unstable();
    candidates.dedup_by_key(|c| c.1);
    candidates.into_iter().take(first).map(|(_, id)| crate::MovieId(id)).collect()
}

/// Every index row one movie contributes, as loaders write them.
pub struct IndexRows {
    /// (person, filmography sort key, movie id << 8 | ordinal, entry).
    pub filmography: Vec<(u64, u64, u64, FilmographyEntry)>,
    /// (sort code, genre code or [`ANY_GENRE`], year, sort key).
    pub browse: Vec<(u8, u8, u16, u64)>,
    /// The title's normalised words, space-separated.
    pub title_words: String,
    /// Search prefixes of the title.
    pub prefixes: Vec<String>,
    /// The search bucket.
    pub bucket: u8,
    /// The popularity key search partitions are ordered by.
    pub popularity_key: u64,
}

/// What `record` contributes to the filmography, browse and search access paths.
pub fn index_rows(record: &MovieRecord) -> IndexRows {
    let movie = &record.movie;
    let id = movie.id.0;
    let film_key = keys::filmography(movie.year, movie.popularity);
    let filmography = record
        .credits
        .iter()
        .enumerate()
        .take(MAX_INDEXED_CREDITS)
        .map(|(ordinal, credit)| {
            let entry = FilmographyEntry {
                movie: movie.id,
                department: credit.department,
                role: credit.role.clone(),
                year: movie.year,
            };
            (credit.person.0, film_key, (id << 8) | ordinal as u64, entry)
        })
        .collect();
    let year = movie.year.unwrap_or(0);
    let sort_keys = [
        (MovieSort::Popularity, keys::popularity(movie.popularity)),
        (MovieSort::Rating, keys::rating(movie)),
        (MovieSort::ReleaseDate, keys::release(movie)),
    ];
    let mut browse = Vec::with_capacity(3 * (1 + movie.genres.len()));
    for (sort, key) in sort_keys {
        browse.push((sort.code(), ANY_GENRE, year, key));
        for genre in &movie.genres {
            browse.push((sort.code(), genre.code(), year, key));
        }
    }
    let words = text::words(&movie.title);
    IndexRows {
        filmography,
        browse,
        prefixes: text::index_prefixes(&words),
        title_words: words.join(" "),
        bucket: search_bucket(id),
        popularity_key: keys::popularity(movie.popularity),
    }
}

/// Refuses user-list pages outside 1..=[`MAX_PAGE`].
pub fn check_user_page(page: crate::UserPage) -> Result<(), StoreError> {
    if page.first == 0 || page.first > MAX_PAGE {
        return Err(StoreError::InvalidInput(format!("`first` must be 1 to {MAX_PAGE}, got {}", page.first)));
    }
    Ok(())
}

/// Refuses a score outside [`crate::SCORES`].
pub fn check_score(score: u8) -> Result<(), StoreError> {
    if !crate::SCORES.contains(&score) {
        return Err(StoreError::InvalidInput(format!(
            "a score is {} to {}, got {score}",
            crate::SCORES.start(),
            crate::SCORES.end()
        )));
    }
    Ok(())
}
