//! The one conformance suite for the store traits, run by every backend's test crate against
//! a store holding the catalog of [`OPTIONS`] (seeded through the backend's [`crate::bulk::BulkLoad`]).
//! The expected answers are computed from the generator itself, never from a backend.
//!
//! The cases check what the traits promise and nothing more: catalog reads exactly as
//! generated; user rows read-your-writes; rating totals that never double-count and converge
//! within the backend's stated [`crate::UserData::totals_lag`]. A backend that promises more
//! (the embedded one's totals are exact at once) says so in its own tests.
//!
//! A backend's test crate lists the cases with [`conformance_cases!`](crate::conformance_cases).
#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::bulk::seed::{Generator, SeedOptions};
use crate::{
    BrowseQuery, CatalogChanges, Credit, Department, Edit, FilmographyQuery, Genre, MovieId, MovieRecord,
    MovieSort, Person, PersonId, Position, RatingTotals, SearchQuery, SimilarQuery, Store, StoreError,
    UserId, UserPage, keys, text,
};

/// The catalog every backend is checked against.
pub const OPTIONS: SeedOptions = SeedOptions { movies: 3_000, people: Some(1_500), seed: 42 };

/// Declares one `#[tokio::test]` per conformance case, each calling `$open()` for a
/// `(guard, Store)` holding the catalog of [`OPTIONS`]: every case (`conformance_cases!(open)`),
/// the catalog reads only (`conformance_cases!(catalog_reads: open)`, for a second
/// configuration of a backend's read path, or a store the read cases share: they write
/// nothing), the user-data writes only (`conformance_cases!(user_writes: open)`, each on a
/// fresh store), the catalog writes (`catalog_writes`), or the cases named.
#[macro_export]
macro_rules! conformance_cases {
    (catalog_reads: $open:path) => {
        $crate::conformance_cases!($open:
            movies_by_id_keep_order_and_nulls,
            people_by_id,
            credits_in_billing_order,
            filmography_pages_newest_first,
            search_is_case_and_accent_insensitive_and_ranked,
            search_pages_do_not_overlap,
            search_rejects_empty_and_oversized,
            browse_orders_and_filters,
            browse_pages_cover_everything_once,
            browse_rejects_bad_ranges,
            similar_shares_primary_genre,
            genres_count_every_movie,
            stats_and_ping,
            closed_store_refuses_calls,
        );
    };
    (catalog_writes: $open:path) => {
        $crate::conformance_cases!(catalog_writes: $open, skip_if None);
    };
    (catalog_writes: $open:path, skip_if $skip:expr) => {
        $crate::conformance_cases!($open, skip_if $skip =>
            an_edit_moves_every_derived_row,
            new_credits_move_filmographies,
            removed_movies_leave_every_read_path,
            new_movies_and_people_are_found_everywhere,
            invalid_changes_write_nothing,
            the_audit_log_says_who_changed_what,
            a_change_derived_from_an_old_record_is_refused,
        );
    };
    (user_writes: $open:path) => {
        $crate::conformance_cases!($open:
            ratings_replace_and_totals_never_double_count,
            ratings_leave_catalog_movies_as_loaded,
            bad_writes_write_nothing,
            user_lists_page_newest_first_and_stay_private,
        );
    };
    ($open:path) => {
        $crate::conformance_cases!(catalog_reads: $open);
        $crate::conformance_cases!(user_writes: $open);
    };
    ($open:path: $($case:ident),* $(,)?) => {
        $crate::conformance_cases!($open, skip_if None => $($case),*);
    };
    // `skip_if`: why the backend under test cannot run these cases here, or `None`.
    ($open:path, skip_if $skip:expr => $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let skip: Option<&str> = $skip;
                if let Some(reason) = skip {
                    eprintln!("skipped: {reason}");
                    return;
                }
                let (_guard, store) = $open().await;
                $crate::conformance::$case(store).await;
            }
        )*
    };
}

fn generator() -> Generator {
    Generator::new(&OPTIONS)
}

pub async fn movies_by_id_keep_order_and_nulls(store: Store) {
    let g = generator();
    let ids = [MovieId(5), MovieId(999_999), MovieId(1), MovieId(5)];
    let got = store.catalog.movies(&ids).await.expect("movies");
    assert_eq!(got.len(), 4);
    assert_eq!(got[0].as_ref(), Some(&g.movie(4).movie));
    assert_eq!(got[1], None);
    assert_eq!(got[2].as_ref(), Some(&g.movie(0).movie));
    assert_eq!(got[3], got[0]);
    assert!(store.catalog.movies(&[]).await.expect("empty batch").is_empty());
}

pub async fn people_by_id(store: Store) {
    let g = generator();
    let got = store.catalog.people(&[PersonId(2), PersonId(0), PersonId(1_500)]).await.expect("people");
    assert_eq!(got[0].as_ref(), Some(&g.person(1)));
    assert_eq!(got[1], None);
    assert_eq!(got[2].as_ref(), Some(&g.person(1_499)));
}

pub async fn credits_in_billing_order(store: Store) {
    let g = generator();
    let got = store.catalog.credits(&[MovieId(10), MovieId(0), MovieId(11)]).await.expect("credits");
    assert_eq!(*got[0], g.movie(9).credits);
    assert!(got[1].is_empty());
    assert_eq!(*got[2], g.movie(10).credits);
    assert!(got[0].iter().take_while(|c| c.is_cast()).count() >= 4, "cast comes first");
}

pub async fn filmography_pages_newest_first(store: Store) {
    let g = generator();
    // Person 1 is the most popular actor: many credits.
    let person = PersonId(1);
    let mut expected: Vec<(u64, u64, MovieId)> = Vec::new();
    for i in 0..OPTIONS.movies {
        let r = g.movie(i);
        for (ordinal, c) in r.credits.iter().enumerate() {
            if c.person == person {
                expected.push((
                    keys::filmography(r.movie.year, r.movie.popularity),
                    (r.movie.id.0 << 8) | ordinal as u64,
                    r.movie.id,
                ));
            }
        }
    }
    expected.sort();
    assert!(expected.len() > 25, "the top actor should have many credits, has {}", expected.len());
    let mut after = None;
    let mut seen = Vec::new();
    loop {
        let q = FilmographyQuery { person, first: 10, after };
        let page = store.catalog.filmographies(&[q]).await.expect("filmography").remove(0);
        assert!(page.items.len() <= 10);
        seen.extend(page.items.iter().map(|(_, e)| e.movie));
        after = page.items.last().map(|(p, _)| *p);
        if !page.has_next {
            break;
        }
    }
    assert_eq!(seen, expected.iter().map(|e| e.2).collect::<Vec<_>>());
    let years: Vec<_> = seen.iter().map(|id| g.movie(id.0 - 1).movie.year).collect();
    assert!(years.windows(2).all(|w| w[0] >= w[1]), "newest first");
    let unknown = store
        .catalog
        .filmographies(&[FilmographyQuery { person: PersonId(77_777), first: 5, after: None }])
        .await
        .expect("unknown person");
    assert!(unknown[0].items.is_empty() && !unknown[0].has_next);
}

fn expected_search(g: &Generator, query: &str) -> Vec<MovieId> {
    let words = text::words(query);
    let mut hits: Vec<(u64, u64)> = (0..OPTIONS.movies)
        .map(|i| g.movie(i).movie)
        .filter(|m| text::matches(&words, &text::words(&m.title).join(" ")))
        .map(|m| (keys::popularity(m.popularity), m.id.0))
        .collect();
    hits.sort();
    hits.into_iter().map(|(_, id)| MovieId(id)).collect()
}

pub async fn search_is_case_and_accent_insensitive_and_ranked(store: Store) {
    let g = generator();
    for query in ["star", "STAR", "the gho", "cafe", "CAFÉ", "amelie", "s", "fiancee", "noel"] {
        let page = store
            .catalog
            .search(&SearchQuery { text: query.into(), first: 100, after: None })
            .await
            .expect("search");
        let got: Vec<MovieId> = page.items.iter().map(|(_, id)| *id).collect();
        let expected = expected_search(&g, query);
        assert!(!expected.is_empty(), "{query} should match something in the demo catalog");
        assert_eq!(got, expected.iter().take(100).copied().collect::<Vec<_>>(), "query {query}");
        assert_eq!(page.has_next, expected.len() > 100, "query {query}");
    }
    let none = store
        .catalog
        .search(&SearchQuery { text: "zzzzqx".into(), first: 10, after: None })
        .await
        .expect("search");
    assert!(none.items.is_empty() && !none.has_next);
}

pub async fn search_pages_do_not_overlap(store: Store) {
    let g = generator();
    let expected = expected_search(&g, "the");
    assert!(expected.len() > 250);
    let mut after = None;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let page = store
            .catalog
            .search(&SearchQuery { text: "the".into(), first: 100, after })
            .await
            .expect("search");
        seen.extend(page.items.iter().map(|(_, id)| *id));
        after = page.items.last().map(|(p, _)| *p);
    }
    assert_eq!(seen, expected[..300]);
}

pub async fn search_rejects_empty_and_oversized(store: Store) {
    for (text, first) in [("  ", 10), ("!!!", 10), ("star", 101), ("a b c d e f g h i", 10)] {
        let err = store
            .catalog
            .search(&SearchQuery { text: text.into(), first, after: None })
            .await
            .expect_err(text);
        assert!(err.is_client_error(), "{text}: {err}");
    }
}

fn expected_browse(
    g: &Generator,
    genre: Option<Genre>,
    from: Option<u16>,
    to: Option<u16>,
    sort: MovieSort,
) -> Vec<MovieId> {
    let mut rows: Vec<(u64, u64)> = (0..OPTIONS.movies)
        .map(|i| g.movie(i).movie)
        .filter(|m| genre.is_none_or(|genre| m.genres.contains(&genre)))
        .filter(|m| from.is_none_or(|f| m.year.is_some_and(|y| y >= f)))
        .filter(|m| to.is_none_or(|t| m.year.is_some_and(|y| y <= t)))
        .map(|m| {
            let key = match sort {
                MovieSort::Popularity => keys::popularity(m.popularity),
                MovieSort::Rating => keys::rating(&m),
                MovieSort::ReleaseDate => keys::release(&m),
            };
            (key, m.id.0)
        })
        .collect();
    rows.sort();
    rows.into_iter().map(|(_, id)| MovieId(id)).collect()
}

pub async fn browse_orders_and_filters(store: Store) {
    let g = generator();
    let drama = Genre::from_name("Drama");
    let cases = [
        (None, None, None),
        (drama, None, None),
        (drama, Some(1990), Some(1999)),
        (None, Some(2020), None),
        (Genre::from_name("Western"), None, Some(1960)),
        (Genre::from_name("News"), None, None),
    ];
    for (genre, year_from, year_to) in cases {
        for sort in MovieSort::ALL {
            let q = BrowseQuery { genre, year_from, year_to, sort, first: 50, after: None };
            let page = store.catalog.browse(&q).await.expect("browse");
            let expected = expected_browse(&g, genre, year_from, year_to, sort);
            let got: Vec<MovieId> = page.items.iter().map(|(_, id)| *id).collect();
            assert_eq!(got, expected.iter().take(50).copied().collect::<Vec<_>>(), "{q:?}");
            assert_eq!(page.has_next, expected.len() > 50, "{q:?}");
        }
    }
}

pub async fn browse_pages_cover_everything_once(store: Store) {
    let g = generator();
    let genre = Genre::from_name("Comedy");
    let expected = expected_browse(&g, genre, Some(1950), Some(2026), MovieSort::Rating);
    let mut after: Option<Position> = None;
    let mut seen = Vec::new();
    loop {
        let q = BrowseQuery {
            genre,
            year_from: Some(1950),
            year_to: Some(2026),
            sort: MovieSort::Rating,
            first: 100,
            after,
        };
        let page = store.catalog.browse(&q).await.expect("browse");
        seen.extend(page.items.iter().map(|(_, id)| *id));
        after = page.items.last().map(|(p, _)| *p);
        if !page.has_next {
            break;
        }
    }
    assert_eq!(seen, expected);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), seen.len());
}

pub async fn browse_rejects_bad_ranges(store: Store) {
    let q = BrowseQuery {
        genre: None,
        year_from: Some(2000),
        year_to: Some(1990),
        sort: MovieSort::Popularity,
        first: 10,
        after: None,
    };
    assert!(matches!(store.catalog.browse(&q).await, Err(StoreError::InvalidInput(_))));
    let q = BrowseQuery { year_from: None, year_to: None, first: 1000, ..q };
    assert!(matches!(store.catalog.browse(&q).await, Err(StoreError::InvalidInput(_))));
}

pub async fn similar_shares_primary_genre(store: Store) {
    let g = generator();
    let queries: Vec<SimilarQuery> = (1..=20).map(|i| SimilarQuery { movie: MovieId(i), first: 5 }).collect();
    let got = store.catalog.similar(&queries).await.expect("similar");
    assert_eq!(got.len(), 20);
    for (q, similar) in queries.iter().zip(&got) {
        let movie = g.movie(q.movie.0 - 1).movie;
        assert!(!similar.is_empty() && similar.len() <= 5, "{:?}", q.movie);
        assert!(!similar.contains(&q.movie));
        for id in similar {
            let other = g.movie(id.0 - 1).movie;
            assert!(other.genres.contains(&movie.genres[0]), "{id} shares {:?}", movie.genres[0]);
            assert!(other.year.unwrap_or(0).abs_diff(movie.year.unwrap_or(0)) <= 2);
        }
    }
    assert!(
        store.catalog.similar(&[SimilarQuery { movie: MovieId(999_999), first: 5 }]).await.expect("unknown")
            [0]
        .is_empty()
    );
}

pub async fn genres_count_every_movie(store: Store) {
    let g = generator();
    let counts = store.catalog.genres().await.expect("genres");
    assert_eq!(counts.len(), Genre::all().count());
    for c in &counts {
        let expected =
            (0..OPTIONS.movies).filter(|&i| g.movie(i).movie.genres.contains(&c.genre)).count() as u64;
        assert_eq!(c.movies, expected, "{}", c.genre.name());
    }
}

pub async fn stats_and_ping(store: Store) {
    store.lifecycle.ping().await.expect("ping");
    let stats = store.catalog.stats().await.expect("stats");
    assert_eq!(stats.movies, OPTIONS.movies);
    assert_eq!(stats.people, OPTIONS.people());
}

pub async fn closed_store_refuses_calls(store: Store) {
    store.lifecycle.close().await.expect("close");
    assert!(matches!(store.lifecycle.ping().await, Err(StoreError::Closed)));
    assert!(matches!(store.catalog.movies(&[MovieId(1)]).await, Err(StoreError::Closed)));
}

fn user(id: &str) -> UserId {
    UserId::new(id).expect("valid user id")
}

/// Polls `rating_totals` of `movie` until it equals `expected`, for at most the backend's
/// stated lag (plus scheduling slack); the last value seen otherwise.
async fn totals_within_lag(store: &Store, movie: MovieId, expected: RatingTotals) -> RatingTotals {
    let deadline = Instant::now() + store.users.totals_lag() + Duration::from_secs(1);
    loop {
        let got = store.users.rating_totals(&[movie]).await.expect("totals")[0];
        if got == expected || Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn ratings_replace_and_totals_never_double_count(store: Store) {
    let movie = MovieId(7);
    let (alice, bob) = (user("alice"), user("bob"));
    assert_eq!(store.users.rating_totals(&[movie]).await.expect("totals"), [RatingTotals::default()]);
    store.users.rate(&alice, movie, 10).await.expect("rate");
    store.users.rate(&alice, movie, 2).await.expect("re-rate");
    // A retried write (the client did not see the first acknowledgement) changes nothing.
    store.users.rate(&alice, movie, 2).await.expect("retried re-rate");
    store.users.rate(&bob, movie, 6).await.expect("rate");
    let totals = totals_within_lag(&store, movie, RatingTotals { sum: 8, count: 2 }).await;
    assert_eq!(totals, RatingTotals { sum: 8, count: 2 }, "alice's re-rate replaced her first score");
    let both = store.users.rating_totals(&[MovieId(8), movie]).await.expect("batch");
    assert_eq!(both, [RatingTotals::default(), totals], "one entry per input, in order");

    let mine = store.users.user_ratings(&alice, &[movie, MovieId(8)]).await.expect("mine");
    assert_eq!(mine[0].map(|r| r.score), Some(2), "read-your-writes on the user's own rows");
    assert_eq!(mine[1], None);
    assert!(store.users.delete_rating(&alice, movie).await.expect("delete"));
    assert!(!store.users.delete_rating(&alice, movie).await.expect("delete twice"), "already gone");
    store.users.delete_rating(&bob, movie).await.expect("delete");
    let back = totals_within_lag(&store, movie, RatingTotals::default()).await;
    assert_eq!(back, RatingTotals::default(), "every user score was removed exactly once");
}

pub async fn ratings_leave_catalog_movies_as_loaded(store: Store) {
    let movie = MovieId(9);
    let loaded = generator().movie(8).movie;
    store.users.rate(&user("carol"), movie, 1).await.expect("rate");
    let read = store.catalog.movies(&[movie]).await.expect("movies").remove(0);
    assert_eq!(read.as_ref(), Some(&loaded), "catalog rows never carry users' ratings");
    let totals = totals_within_lag(&store, movie, RatingTotals { sum: 1, count: 1 }).await;
    let summary = loaded.rating.with(totals);
    assert_eq!(summary.count, loaded.rating.count + 1);
    let expected = (f64::from(loaded.rating.average) * f64::from(loaded.rating.count) + 1.0)
        / f64::from(loaded.rating.count + 1);
    assert!((f64::from(summary.average) - expected).abs() < 1e-3, "{} vs {expected}", summary.average);
}

pub async fn bad_writes_write_nothing(store: Store) {
    let alice = user("alice");
    for score in [0, 11] {
        let err = store.users.rate(&alice, MovieId(3), score).await.expect_err("out of range");
        assert!(matches!(err, StoreError::InvalidInput(_)), "{err}");
    }
    let err = store.users.rate(&alice, MovieId(999_999), 5).await.expect_err("unknown movie");
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    let err = store.users.add_to_watchlist(&alice, MovieId(999_999)).await.expect_err("unknown movie");
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    let page = UserPage { first: 10, after: None };
    assert!(store.users.ratings_page(&alice, page).await.expect("ratings").items.is_empty());
    assert!(store.users.watchlist_page(&alice, page).await.expect("watchlist").items.is_empty());
    assert_eq!(store.users.user_ratings(&alice, &[MovieId(3)]).await.expect("mine")[0], None);
    assert!(UserId::new("").is_err());
    assert!(UserId::new("a\nb").is_err());
    assert!(store.users.ratings_page(&alice, UserPage { first: 0, after: None }).await.is_err());
    let totals = store.users.rating_totals(&[MovieId(3), MovieId(999_999)]).await.expect("totals");
    assert_eq!(totals, [RatingTotals::default(); 2], "refused writes count nowhere");
}

pub async fn user_lists_page_newest_first_and_stay_private(store: Store) {
    let (alice, bob) = (user("alice"), user("bob"));
    for id in 1..=5 {
        store.users.add_to_watchlist(&alice, MovieId(id)).await.expect("add");
        store.users.rate(&alice, MovieId(id), u8::try_from(id).expect("small")).await.expect("rate");
        // Distinct timestamps so the order is the order of the writes.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let first = store.users.add_to_watchlist(&alice, MovieId(1)).await.expect("add again");
    store.users.add_to_watchlist(&bob, MovieId(9)).await.expect("bob's");

    let page = store.users.watchlist_page(&alice, UserPage { first: 3, after: None }).await.expect("page");
    let ids: Vec<u64> = page.items.iter().map(|(_, e)| e.movie.0).collect();
    assert_eq!(ids, [5, 4, 3], "newest first; adding again kept the first entry");
    assert!(page.has_next);
    let after = page.items.last().map(|(p, _)| *p);
    let rest = store.users.watchlist_page(&alice, UserPage { first: 3, after }).await.expect("page");
    let ids: Vec<u64> = rest.items.iter().map(|(_, e)| e.movie.0).collect();
    assert_eq!(ids, [2, 1]);
    assert!(!rest.has_next);
    assert_eq!(rest.items[1].1.added_at_ms, first.added_at_ms);

    let ratings =
        store.users.ratings_page(&alice, UserPage { first: 10, after: None }).await.expect("ratings");
    let scores: Vec<u8> = ratings.items.iter().map(|(_, r)| r.score).collect();
    assert_eq!(scores, [5, 4, 3, 2, 1]);
    let bobs = store.users.watchlist_page(&bob, UserPage { first: 10, after: None }).await.expect("bob");
    assert_eq!(bobs.items.len(), 1, "lists are per user");

    assert!(store.users.remove_from_watchlist(&alice, MovieId(3)).await.expect("remove"));
    assert!(!store.users.remove_from_watchlist(&alice, MovieId(3)).await.expect("remove twice"));
    let left = store.users.watchlist_page(&alice, UserPage { first: 10, after: None }).await.expect("page");
    assert_eq!(left.items.len(), 4);
}

// Live catalog writes (`crate::CatalogWrites`).

fn edit(action: &str) -> Edit {
    Edit { editor: "conformance".into(), action: action.into() }
}

async fn search_ids(store: &Store, query: &str) -> Vec<MovieId> {
    let page = store
        .catalog
        .search(&SearchQuery { text: query.into(), first: 100, after: None })
        .await
        .expect("search");
    page.items.into_iter().map(|(_, id)| id).collect()
}

async fn browse_ids(store: &Store, genre: Option<Genre>, year: Option<u16>) -> Vec<MovieId> {
    let q = BrowseQuery {
        genre,
        year_from: year,
        year_to: year,
        sort: MovieSort::Popularity,
        first: 100,
        after: None,
    };
    store.catalog.browse(&q).await.expect("browse").items.into_iter().map(|(_, id)| id).collect()
}

/// Every entry of `person`'s filmography, paging through it.
async fn filmography(store: &Store, person: PersonId) -> Vec<crate::FilmographyEntry> {
    let (mut entries, mut after) = (Vec::new(), None);
    loop {
        let q = FilmographyQuery { person, first: 100, after };
        let page = store.catalog.filmographies(&[q]).await.expect("filmography").remove(0);
        after = page.items.last().map(|(p, _)| *p);
        entries.extend(page.items.into_iter().map(|(_, e)| e));
        if !page.has_next {
            return entries;
        }
    }
}

async fn filmography_ids(store: &Store, person: PersonId) -> Vec<MovieId> {
    filmography(store, person).await.into_iter().map(|e| e.movie).collect()
}

async fn genre_count(store: &Store, genre: Genre) -> u64 {
    store
        .catalog
        .genres()
        .await
        .expect("genres")
        .into_iter()
        .find(|c| c.genre == genre)
        .map_or(0, |c| c.movies)
}

fn genre(name: &str) -> Genre {
    Genre::from_name(name).expect("a genre")
}

pub async fn an_edit_moves_every_derived_row(store: Store) {
    let old = generator().movie(4);
    let id = old.movie.id;
    let (old_genre, new_genre) = (
        old.movie.genres[0],
        if old.movie.genres.contains(&genre("Western")) { genre("Film-Noir") } else { genre("Western") },
    );
    let old_year = old.movie.year;
    let mut new = old.clone();
    new.movie.title = "Zyzzyva Quartermaine".into();
    new.movie.year = Some(1801);
    new.movie.release_date = None;
    new.movie.genres = vec![new_genre];
    new.movie.popularity = 1.0e6;
    let (old_count, new_count) = (genre_count(&store, old_genre).await, genre_count(&store, new_genre).await);
    let old_words = text::words(&old.movie.title);
    let old_query = old_words.iter().max_by_key(|w| w.len()).expect("a word").clone();
    assert!(search_ids(&store, &old_query).await.contains(&id), "found under its old title first");

    let changes = CatalogChanges { movies: vec![new.clone()], ..CatalogChanges::default() };
    let applied = store.edits.apply(changes.clone(), edit("test")).await.expect("apply");
    assert_eq!(applied.movies, [id]);
    assert!(applied.lists.search_prefixes.iter().any(|p| "zyzzyva".starts_with(p.as_str())));
    assert!(applied.lists.browse_genres.contains(&new_genre.code()));
    assert!(applied.lists.browse_genres.contains(&old_genre.code()));
    assert!(applied.lists.genre_counts);

    assert_eq!(store.catalog.movies(&[id]).await.expect("movies")[0].as_ref(), Some(&new.movie));
    assert_eq!(store.edits.records(&[id]).await.expect("records")[0].as_ref(), Some(&new));
    assert_eq!(search_ids(&store, "zyzzyva quart").await, [id], "found under its new title");
    if !text::matches(&text::words(&old_query), "zyzzyva quartermaine") {
        assert!(!search_ids(&store, &old_query).await.contains(&id), "gone from its old title's search");
    }
    assert_eq!(browse_ids(&store, Some(new_genre), Some(1801)).await, [id], "in its new genre and year");
    assert_eq!(browse_ids(&store, None, None).await.first(), Some(&id), "first by its new popularity");
    assert!(
        !browse_ids(&store, Some(old_genre), old_year).await.contains(&id),
        "gone from its old partition"
    );
    assert_eq!(genre_count(&store, new_genre).await, new_count + 1);
    assert_eq!(genre_count(&store, old_genre).await, old_count - 1);
    for credit in &old.credits {
        let entries = filmography(&store, credit.person).await;
        let entry = entries.iter().find(|e| e.movie == id).map(|e| e.year);
        assert_eq!(entry, Some(Some(1801)), "{}'s filmography carries the new year", credit.person);
    }
    let again = store.edits.apply(changes, edit("test")).await.expect("apply again");
    assert!(!again.changed_anything(), "the same record again changes nothing: {again:?}");
    assert_eq!(again.unchanged, 1);
}

pub async fn new_credits_move_filmographies(store: Store) {
    let old = generator().movie(9);
    let id = old.movie.id;
    let newcomer = PersonId(1_499);
    let mut new = old.clone();
    new.credits = vec![Credit { person: newcomer, department: Department::Acting, role: "Hero".into() }];
    let applied = store
        .edits
        .apply(CatalogChanges { movies: vec![new.clone()], ..CatalogChanges::default() }, edit("test"))
        .await
        .expect("apply");
    assert!(applied.filmographies.contains(&newcomer));
    assert_eq!(store.catalog.credits(&[id]).await.expect("credits")[0].as_slice(), new.credits.as_slice());
    assert!(filmography_ids(&store, newcomer).await.contains(&id));
    for credit in old.credits.iter().filter(|c| c.person != newcomer) {
        assert!(applied.filmographies.contains(&credit.person));
        assert!(
            !filmography_ids(&store, credit.person).await.contains(&id),
            "{} lost the credit",
            credit.person
        );
    }
}

pub async fn removed_movies_leave_every_read_path(store: Store) {
    let old = generator().movie(2);
    let id = old.movie.id;
    let before = store.catalog.stats().await.expect("stats");
    let counts: Vec<u64> = {
        let mut counts = Vec::new();
        for g in &old.movie.genres {
            counts.push(genre_count(&store, *g).await);
        }
        counts
    };
    let alice = user("alice");
    store.users.add_to_watchlist(&alice, id).await.expect("watch");
    let changes = CatalogChanges { removed_movies: vec![id, MovieId(999_999)], ..CatalogChanges::default() };
    let applied = store.edits.apply(changes, edit("test")).await.expect("apply");
    assert_eq!(applied.removed_movies, [id]);
    assert_eq!(applied.unknown_removals, ["tt0999999"]);

    assert_eq!(store.catalog.movies(&[id]).await.expect("movies"), [None]);
    assert!(store.catalog.credits(&[id]).await.expect("credits")[0].is_empty());
    assert_eq!(store.edits.records(&[id]).await.expect("records"), [None]);
    let words = text::words(&old.movie.title);
    assert!(!search_ids(&store, &words.join(" ")).await.contains(&id), "gone from search");
    assert!(
        !browse_ids(&store, Some(old.movie.genres[0]), old.movie.year).await.contains(&id),
        "gone from browse"
    );
    for credit in &old.credits {
        assert!(!filmography_ids(&store, credit.person).await.contains(&id), "gone from {}", credit.person);
    }
    for (g, count) in old.movie.genres.iter().zip(counts) {
        assert_eq!(genre_count(&store, *g).await, count - 1, "{}", g.name());
    }
    let after = store.catalog.stats().await.expect("stats");
    assert_eq!(after.movies, before.movies - 1);
    let similar = store
        .catalog
        .similar(&[SimilarQuery { movie: MovieId(id.0 + 1), first: 100 }])
        .await
        .expect("similar");
    assert!(!similar[0].contains(&id), "gone from similar");
    // Users' rows naming it stay (their owners see a movie that is no longer there); new ones
    // are refused.
    let watchlist =
        store.users.watchlist_page(&alice, UserPage { first: 10, after: None }).await.expect("watchlist");
    assert_eq!(watchlist.items.iter().map(|(_, e)| e.movie).collect::<Vec<_>>(), [id]);
    let err = store.users.rate(&alice, id, 5).await.expect_err("a removed movie");
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    let again = store
        .edits
        .apply(CatalogChanges { removed_movies: vec![id], ..CatalogChanges::default() }, edit("test"))
        .await
        .expect("remove again");
    assert_eq!(again.unknown_removals, [id.to_string()], "a re-run removal is reported, not an error");
}

pub async fn new_movies_and_people_are_found_everywhere(store: Store) {
    let before = store.catalog.stats().await.expect("stats");
    let person = Person {
        id: PersonId(9_000_001),
        name: "Quillon Vantablack".into(),
        birth_year: Some(1970),
        death_year: None,
        known_for_department: Some(Department::Directing),
        popularity: 3.0,
    };
    let mut record: MovieRecord = generator().movie(0);
    record.movie.id = MovieId(9_000_001);
    record.movie.title = "Vantablack Horizon".into();
    record.credits =
        vec![Credit { person: person.id, department: Department::Directing, role: "Director".into() }];
    let changes = CatalogChanges {
        movies: vec![record.clone()],
        people: vec![person.clone()],
        ..CatalogChanges::default()
    };
    let applied = store.edits.apply(changes, edit("test")).await.expect("apply");
    assert_eq!(
        (applied.movies.as_slice(), applied.people.as_slice()),
        ([record.movie.id].as_slice(), [person.id].as_slice())
    );
    assert_eq!(
        store.catalog.movies(&[record.movie.id]).await.expect("movies")[0].as_ref(),
        Some(&record.movie)
    );
    assert_eq!(store.catalog.people(&[person.id]).await.expect("people")[0].as_ref(), Some(&person));
    assert_eq!(store.edits.person_records(&[person.id]).await.expect("people")[0].as_ref(), Some(&person));
    assert_eq!(search_ids(&store, "vantablack").await, [record.movie.id]);
    assert_eq!(filmography_ids(&store, person.id).await, [record.movie.id]);
    let after = store.catalog.stats().await.expect("stats");
    assert_eq!((after.movies, after.people), (before.movies + 1, before.people + 1));
    let mut renamed = person.clone();
    renamed.name = "Quillon Vantablack Jr.".into();
    let applied = store
        .edits
        .apply(CatalogChanges { people: vec![renamed.clone()], ..CatalogChanges::default() }, edit("test"))
        .await
        .expect("rename");
    assert_eq!(applied.people, [person.id]);
    assert_eq!(store.catalog.people(&[person.id]).await.expect("people")[0].as_ref(), Some(&renamed));
    assert_eq!(store.catalog.stats().await.expect("stats").people, before.people + 1, "a rename adds nobody");
}

pub async fn invalid_changes_write_nothing(store: Store) {
    let good = {
        let mut r = generator().movie(5);
        r.movie.title = "Perfectly Fine".into();
        r
    };
    let mut bad = generator().movie(6);
    bad.movie.title = "   ".into();
    let mut too_many_genres = generator().movie(7);
    too_many_genres.movie.genres = Genre::all().take(4).collect();
    let mut control = generator().movie(7);
    control.movie.title = "Bell\u{7}".into();
    let mut dead_first = generator().person(3);
    dead_first.birth_year = Some(1990);
    dead_first.death_year = Some(1980);
    let mut unborn = generator().person(4);
    unborn.birth_year = Some(crate::model::current_year() + 1);
    let mut dated_but_yearless = generator().movie(8);
    dated_but_yearless.movie.year = None;
    dated_but_yearless.movie.release_date = crate::Date::new(1999, 5, 1);
    let cases = [
        CatalogChanges { movies: vec![good.clone(), bad], ..CatalogChanges::default() },
        CatalogChanges { movies: vec![good.clone(), too_many_genres], ..CatalogChanges::default() },
        CatalogChanges { movies: vec![good.clone(), control], ..CatalogChanges::default() },
        CatalogChanges { movies: vec![good.clone()], people: vec![dead_first], ..CatalogChanges::default() },
        CatalogChanges { movies: vec![good.clone()], people: vec![unborn], ..CatalogChanges::default() },
        CatalogChanges { movies: vec![good.clone(), dated_but_yearless], ..CatalogChanges::default() },
        CatalogChanges {
            movies: vec![good.clone()],
            removed_movies: vec![good.movie.id],
            ..CatalogChanges::default()
        },
        CatalogChanges {
            movies: (0..crate::writes::MAX_CHANGES as u64 + 1).map(|i| generator().movie(i)).collect(),
            ..CatalogChanges::default()
        },
    ];
    for changes in cases {
        let err = store.edits.apply(changes, edit("test")).await.expect_err("refused");
        assert!(matches!(err, StoreError::InvalidInput(_)), "{err}");
    }
    assert_eq!(
        store.catalog.movies(&[good.movie.id]).await.expect("movies")[0].as_ref(),
        Some(&generator().movie(5).movie),
        "the valid record of a refused apply was not written either"
    );
    assert!(
        store.edits.audit_page(UserPage { first: 10, after: None }).await.expect("audit").items.is_empty()
    );
}

pub async fn the_audit_log_says_who_changed_what(store: Store) {
    let mut first = generator().movie(10);
    first.movie.overview = Some("Corrected synopsis.".into());
    let alice = Edit { editor: "alice".into(), action: "updateMovie".into() };
    store
        .edits
        .apply(CatalogChanges { movies: vec![first.clone()], ..CatalogChanges::default() }, alice.clone())
        .await
        .expect("apply");
    // A change that changes nothing is not recorded.
    store
        .edits
        .apply(CatalogChanges { movies: vec![first.clone()], ..CatalogChanges::default() }, alice.clone())
        .await
        .expect("apply");
    let bob = Edit { editor: "bob".into(), action: "removeMovie".into() };
    store
        .edits
        .apply(CatalogChanges { removed_movies: vec![MovieId(12)], ..CatalogChanges::default() }, bob.clone())
        .await
        .expect("apply");
    let page = store.edits.audit_page(UserPage { first: 1, after: None }).await.expect("audit");
    assert!(page.has_next);
    let newest = &page.items[0].1;
    assert_eq!((&newest.edit, newest.removed_movies.as_slice()), (&bob, [MovieId(12)].as_slice()));
    let rest =
        store.edits.audit_page(UserPage { first: 10, after: Some(page.items[0].0) }).await.expect("audit");
    assert!(!rest.has_next);
    let records: Vec<_> = rest.items.iter().map(|(_, r)| (&r.edit, r.movies.clone())).collect();
    assert_eq!(records, [(&alice, vec![first.movie.id])], "newest first, the no-op left out");
    assert!(rest.items[0].1.at_ms <= newest.at_ms);
}

pub async fn a_change_derived_from_an_old_record_is_refused(store: Store) {
    use crate::writes::Base;
    let read = generator().movie(20);
    let id = read.movie.id;
    // Another editor's change lands between this editor's read and write.
    let mut theirs = read.clone();
    theirs.movie.title = "Their Title".into();
    let first = CatalogChanges {
        movies: vec![theirs.clone()],
        based_on: vec![Base::Movie(id, Some(read.clone()))],
        ..CatalogChanges::default()
    };
    store.edits.apply(first, edit("updateMovie")).await.expect("the first editor's change");
    let mut mine = read.clone();
    mine.credits.clear();
    let stale = CatalogChanges {
        movies: vec![mine.clone()],
        based_on: vec![Base::Movie(id, Some(read))],
        ..CatalogChanges::default()
    };
    let err =
        store.edits.apply(stale, edit("updateMovie")).await.expect_err("derived from a record that changed");
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert_eq!(
        store.edits.records(&[id]).await.expect("records")[0].as_ref(),
        Some(&theirs),
        "theirs stands"
    );
    // Derived again from what is stored, it applies.
    let mut mine = theirs.clone();
    mine.credits.clear();
    let fresh = CatalogChanges {
        movies: vec![mine.clone()],
        based_on: vec![Base::Movie(id, Some(theirs))],
        ..CatalogChanges::default()
    };
    store.edits.apply(fresh, edit("updateMovie")).await.expect("applies");
    assert_eq!(store.edits.records(&[id]).await.expect("records")[0].as_ref(), Some(&mine));
    let person = generator().person(30);
    let mut renamed = person.clone();
    renamed.name = "Someone Else".into();
    let absent = CatalogChanges {
        people: vec![renamed],
        based_on: vec![Base::Person(person.id, None)],
        ..CatalogChanges::default()
    };
    let err = store.edits.apply(absent, edit("updatePerson")).await.expect_err("the person exists");
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
}
