//! What each read costs the cluster: the statements and sequential round trips of the README's
//! queries and of the reads that would fan out at production size, counted per call
//! (`marquee_store::statements`) over the real driver, against a real cluster when
//! `SCYLLA_URI` is set, else the CQL stand-in (see `conformance.rs`). On the stand-in, which
//! ignores clustering bounds, a page after a cursor reads from the partition's start, so
//! those figures are upper bounds of a real cluster's. Every answer is checked against the
//! embedded backend holding the same catalog.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use marquee_cql_standin::KeyspaceGuard;
use marquee_store::bulk::BulkLoad;
use marquee_store::bulk::seed::seed;
use marquee_store::conformance::OPTIONS;
use marquee_store::statements::{Counted, counted};
use marquee_store::{
    BrowseQuery, CatalogReads, Genre, Movie, MovieId, MovieRecord, MovieSort, Page, Position, RatingSummary,
    SearchQuery,
};
use marquee_store_embedded::{EmbeddedBulk, EmbeddedOptions, EmbeddedStore};
use marquee_store_scylla::{ScyllaBulk, ScyllaOptions, ScyllaStore, collect_generations, migrate};

/// A fresh keyspace, dropped with its guard.
fn options() -> (KeyspaceGuard, ScyllaOptions) {
    static KEYSPACES: AtomicUsize = AtomicUsize::new(0);
    let options = marquee_cql_standin::test_cluster().scylla_options(format!(
        "statements_{}_{}",
        std::process::id(),
        KEYSPACES.fetch_add(1, Ordering::Relaxed)
    ));
    (KeyspaceGuard::new(&options), options)
}

/// The same catalog in a fresh keyspace and in an embedded data directory.
async fn both(
    load: impl Fn(&dyn BulkLoad) + Send + Sync + 'static,
) -> (ScyllaStore, EmbeddedStore, (tempfile::TempDir, KeyspaceGuard)) {
    let (keyspace, options) = options();
    migrate(&options).await.expect("migrate");
    let dir = tempfile::tempdir().expect("data dir");
    let (scylla, embedded) = (
        ScyllaBulk::new(options.clone(), tokio::runtime::Handle::current()),
        EmbeddedBulk::new(dir.path(), 64 << 20),
    );
    tokio::task::spawn_blocking(move || {
        load(&scylla);
        load(&embedded);
    })
    .await
    .expect("loading thread");
    let store = ScyllaStore::open(&options).await.expect("open");
    let embedded = EmbeddedStore::open(dir.path(), &EmbeddedOptions::default()).expect("open embedded");
    (store, embedded, (dir, keyspace))
}

/// One call's answer and cost, after checking the answer is the embedded backend's.
async fn browse(scylla: &ScyllaStore, embedded: &EmbeddedStore, q: &BrowseQuery) -> (Page<MovieId>, Counted) {
    let (page, cost) = counted(scylla.browse(q)).await;
    let page = page.expect("browse");
    assert_eq!(page, embedded.browse(q).await.expect("embedded browse"), "{q:?}");
    (page, cost)
}

async fn search(scylla: &ScyllaStore, embedded: &EmbeddedStore, q: &SearchQuery) -> (Page<MovieId>, Counted) {
    let (page, cost) = counted(scylla.search(q)).await;
    let page = page.expect("search");
    assert_eq!(page, embedded.search(q).await.expect("embedded search"), "{q:?}");
    (page, cost)
}

fn query(genre: Option<&str>, years: Option<(u16, u16)>, sort: MovieSort, first: usize) -> BrowseQuery {
    BrowseQuery {
        genre: genre.map(|g| Genre::from_name(g).expect("genre")),
        year_from: years.map(|y| y.0),
        year_to: years.map(|y| y.1),
        sort,
        first,
        after: None,
    }
}

fn text(text: &str, first: usize, after: Option<Position>) -> SearchQuery {
    SearchQuery { text: text.into(), first, after }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_queries_read_few_partitions() {
    let (store, embedded, _dir) = both(|bulk| {
        seed(&OPTIONS, bulk.sink("statements").expect("sink"), &mut |_| {}).expect("seed");
    })
    .await;

    // A movie with its cast: one statement per movie, per credits list, per person, each
    // batch read concurrently.
    let ids: Vec<MovieId> = (1..=20).map(MovieId).collect();
    let (movies, cost) = counted(store.movies(&ids)).await;
    assert_eq!(movies.expect("movies").len(), 20);
    assert_eq!(cost, Counted { statements: 20, round_trips: 1 });

    // Browse without filters: the order's top partition, whatever the sort or genre.
    for sort in MovieSort::ALL {
        for genre in [None, Some("Drama"), Some("Sci-Fi")] {
            let (page, cost) = browse(&store, &embedded, &query(genre, None, sort, 10)).await;
            assert_eq!(page.items.len(), 10);
            assert_eq!(cost, Counted { statements: 1, round_trips: 1 }, "{sort:?} {genre:?}");
        }
    }
    // The README's browse: one partition per year of the range, read at once.
    let (_, cost) =
        browse(&store, &embedded, &query(Some("Sci-Fi"), Some((1990, 1999)), MovieSort::Rating, 10)).await;
    assert_eq!(cost, Counted { statements: 10, round_trips: 1 });

    // The README's searches: the eight buckets of one prefix, read at once.
    let (_, cost) = search(&store, &embedded, &text("cafe ghost", 5, None)).await;
    assert!(cost.statements <= 16 && cost.round_trips <= 3, "{cost:?}");
    let (first, cost) = search(&store, &embedded, &text("star", 5, None)).await;
    assert_eq!(cost, Counted { statements: 8, round_trips: 1 });
    let after = first.items.last().map(|(pos, _)| *pos);
    let (_, cost) = search(&store, &embedded, &text("star", 5, after)).await;
    assert!(cost.statements <= 16 && cost.round_trips <= 2, "{cost:?}");
}

/// Movies of the large catalog: every other one's title is "Zebra", the rest "Yakka", and
/// only the least popular is both, so a search for both walks one word's whole prefix.
const LARGE: u64 = 24_000;
/// Years the large catalog spreads over (so a fan-out would read this many partitions).
const YEARS: u64 = 30;

fn large_movie(id: u64) -> MovieRecord {
    let title = match id {
        1 => "Zebra Yakka",
        _ if id % 2 == 1 => "Zebra",
        _ => "Yakka",
    };
    let genre = Genre::from_name(if id.is_multiple_of(3) { "Comedy" } else { "Drama" }).expect("genre");
    MovieRecord {
        movie: Movie {
            id: MovieId(id),
            title: title.into(),
            original_title: None,
            year: Some(1990 + (id % YEARS) as u16),
            release_date: None,
            runtime_minutes: None,
            genres: vec![genre],
            overview: None,
            original_language: None,
            poster_path: None,
            popularity: id as f32 / 10.0,
            rating: RatingSummary { average: (id % 97) as f32 / 10.0, count: (id % 1_000) as u32 },
        },
        credits: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_sized_orders_read_one_partition_and_rare_words_few_round_trips() {
    let (store, embedded, _dir) = both(|bulk| {
        let mut sink = bulk.sink("large").expect("sink");
        for id in 1..=LARGE {
            sink.put_movie(&large_movie(id)).expect("movie");
        }
        sink.finish().expect("finish");
        // What the load reports per table: every movie's row, in statements that batch a
        // partition's rows (the browse and search partitions take many rows each).
        if let Some(written) = bulk.written() {
            let table = |name: &str| written.iter().find(|t| t.table == name).copied().expect("table");
            assert_eq!(table("movies_by_id").rows, LARGE);
            assert_eq!(table("credits_by_movie").rows, LARGE);
            let (browse, search) = (table("movies_by_genre_year"), table("title_search"));
            assert!(browse.rows > 7 * LARGE && browse.statements * 10 < browse.rows, "{browse:?}");
            assert!(search.rows > 4 * LARGE && search.statements * 10 < search.rows, "{search:?}");
        }
    })
    .await;

    // Every page of the first 10,000 rows of an unfiltered order is one statement.
    let mut q = query(None, None, MovieSort::Popularity, 100);
    for _ in 0..3 {
        let (page, cost) = browse(&store, &embedded, &q).await;
        assert_eq!(cost, Counted { statements: 1, round_trips: 1 });
        q.after = page.items.last().map(|(pos, _)| *pos);
    }
    // A page that reaches past the top partition merges the years: one read of the top
    // partition, then every year's partition at once.
    let (deep, _) =
        browse(&store, &embedded, &BrowseQuery { first: 100, ..query(None, None, MovieSort::Rating, 1) })
            .await;
    let mut after = deep.items.last().map(|(pos, _)| *pos);
    let mut seen = 100;
    while seen < 9_950 {
        let page = embedded
            .browse(&BrowseQuery { after, ..query(None, None, MovieSort::Rating, 100) })
            .await
            .expect("page");
        after = page.items.last().map(|(pos, _)| *pos);
        seen += page.items.len();
    }
    let (page, cost) =
        browse(&store, &embedded, &BrowseQuery { after, ..query(None, None, MovieSort::Rating, 100) }).await;
    assert_eq!(page.items.len(), 100);
    // The stand-in reads the top partition from its start, in pages of `page_size` (1,000).
    let top_reads = if marquee_cql_standin::test_cluster().stand_in { 10 } else { 1 };
    assert_eq!(cost, Counted { statements: top_reads + YEARS as u32, round_trips: top_reads + 1 });

    // A genre order is its own top partition.
    let (page, cost) =
        browse(&store, &embedded, &query(Some("Comedy"), None, MovieSort::ReleaseDate, 50)).await;
    assert!(page.items.iter().all(|(_, id)| id.0.is_multiple_of(3)));
    assert_eq!(cost, Counted { statements: 1, round_trips: 1 });

    // Two common words that meet once, in the least popular movie: the search walks 12,001
    // entries of one prefix in its eight buckets, with growing pages fetched together.
    let (page, cost) = search(&store, &embedded, &text("zebra yakka", 10, None)).await;
    assert_eq!(page.items.iter().map(|(_, id)| *id).collect::<Vec<_>>(), vec![MovieId(1)]);
    eprintln!("rare-together search: {cost:?}");
    assert!(cost.round_trips <= 30, "{cost:?}");
    assert!(cost.statements <= 8 * 8, "{cost:?}");
    // A common word's first page is one page of each bucket.
    let (page, cost) = search(&store, &embedded, &text("zebra", 20, None)).await;
    assert_eq!(page.items.len(), 20);
    assert_eq!(cost, Counted { statements: 8, round_trips: 1 });
}

/// The metric the gateway exports is what this test counts: a store wrapped as the gateway
/// wraps it reports the same figures (checked in the gateway's tests); here, the figures of
/// two calls made at once do not mix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_count_their_own_statements() {
    let (store, _embedded, _dir) = both(|bulk| {
        seed(&OPTIONS, bulk.sink("statements").expect("sink"), &mut |_| {}).expect("seed");
    })
    .await;
    let store = Arc::new(store);
    let ids: Vec<MovieId> = (1..=7).map(MovieId).collect();
    let (a, b) = tokio::join!(counted(store.movies(&ids)), counted(store.movies(&ids[..3])));
    assert_eq!((a.1.statements, b.1.statements), (7, 3));
}

/// A load killed part way (its sink dropped: its writes in flight stop, as a killed process's
/// do) is completed by running it again, which skips the people and movies the first run had
/// written whole and leaves the same catalog as a load that never stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_load_resumes_without_rewriting_what_it_wrote() {
    // A buffer this small is sent whole every few thousand movies of this catalog, moving
    // the progress a rerun resumes from.
    let (_keyspace, options) = options();
    let options = ScyllaOptions { load_buffer_rows: 8_192, ..options };
    migrate(&options).await.expect("migrate");
    let runtime = tokio::runtime::Handle::current();
    let killed = ScyllaBulk::new(options.clone(), runtime.clone());
    let killed = tokio::task::spawn_blocking(move || {
        let mut sink = killed.sink("large").expect("sink");
        for id in 1..=LARGE * 2 / 3 {
            sink.put_movie(&large_movie(id)).expect("movie");
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
        drop(sink);
        killed
    })
    .await
    .expect("first run");
    let rows = |bulk: &ScyllaBulk, table: &str| {
        bulk.written().expect("figures").iter().find(|t| t.table == table).map(|t| t.rows).expect("table")
    };
    let first = rows(&killed, "movies_by_id");
    assert!(first > 0, "the first run wrote movies before it was stopped");

    let rerun = ScyllaBulk::new(options.clone(), runtime);
    let rerun = tokio::task::spawn_blocking(move || {
        let mut sink = rerun.sink("large").expect("sink");
        for id in 1..=LARGE {
            sink.put_movie(&large_movie(id)).expect("movie");
        }
        sink.finish().expect("finish");
        rerun
    })
    .await
    .expect("rerun");
    let second = rows(&rerun, "movies_by_id");
    eprintln!("the killed run wrote {first} movies; the rerun wrote {second} of {LARGE}");
    assert!(second < LARGE, "the rerun skipped the movies written whole ({second} of {LARGE} written again)");
    assert!(
        second >= LARGE - first,
        "the rerun wrote every movie the first run had not ({second} after {first})"
    );

    // The same catalog as the embedded backend's, loaded once.
    let dir = tempfile::tempdir().expect("data dir");
    let embedded = EmbeddedBulk::new(dir.path(), 64 << 20);
    tokio::task::spawn_blocking(move || {
        let mut sink = embedded.sink("large").expect("sink");
        for id in 1..=LARGE {
            sink.put_movie(&large_movie(id)).expect("movie");
        }
        sink.finish().expect("finish");
    })
    .await
    .expect("embedded load");
    let embedded = EmbeddedStore::open(dir.path(), &EmbeddedOptions::default()).expect("open embedded");
    let store = ScyllaStore::open(&options).await.expect("open");
    assert_eq!(store.stats().await.expect("stats"), embedded.stats().await.expect("stats"));
    let ids: Vec<MovieId> = (1..=LARGE).map(MovieId).collect();
    for chunk in ids.chunks(500) {
        assert_eq!(store.movies(chunk).await.expect("movies"), embedded.movies(chunk).await.expect("movies"));
    }
    for sort in MovieSort::ALL {
        browse(&store, &embedded, &query(None, None, sort, 100)).await;
        browse(&store, &embedded, &query(Some("Comedy"), Some((1995, 2004)), sort, 100)).await;
    }
    search(&store, &embedded, &text("zebra yakka", 10, None)).await;
    search(&store, &embedded, &text("yakka", 100, None)).await;
}

/// Old generations go once every gateway has left them: kept within the grace period, then
/// every partition of theirs deleted, while the current one keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn superseded_generations_are_removed_after_their_grace() {
    let (_keyspace, options) = options();
    migrate(&options).await.expect("migrate");
    let bulk = Arc::new(ScyllaBulk::new(options.clone(), tokio::runtime::Handle::current()));
    for source in ["first", "second"] {
        let bulk = bulk.clone();
        tokio::task::spawn_blocking(move || {
            let mut sink = bulk.sink(source).expect("sink");
            for id in 1..=300 {
                sink.put_movie(&large_movie(id)).expect("movie");
            }
            sink.finish().expect("finish");
        })
        .await
        .expect("load");
    }
    let store = ScyllaStore::open(&options).await.expect("open");
    let current = store.generation();

    let hour = std::time::Duration::from_secs(3600);
    let kept = collect_generations(&options, hour, false).await.expect("gc");
    assert!(kept.removed.is_empty(), "{kept:?}");
    assert_eq!(kept.kept.len(), 2, "{kept:?}");

    // An hour and a bit after the current generation was published.
    let published = std::time::SystemTime::now() - std::time::Duration::from_secs(3_700);
    let published = published.duration_since(std::time::UNIX_EPOCH).expect("time").as_millis() as i64;
    execute(
        &options,
        "INSERT INTO {ks}.catalog_generations (generation, published_at) VALUES (?, ?)",
        (current, published),
    )
    .await;
    let dry = collect_generations(&options, hour, true).await.expect("dry gc");
    assert_eq!(dry.removed, vec![current - 1]);
    let old_rows = movie_rows(&options, current - 1).await;
    assert_eq!(old_rows, 300, "a dry run deletes nothing");
    let done = collect_generations(&options, hour, false).await.expect("gc");
    assert_eq!(done.removed, vec![current - 1]);
    assert_eq!(done.partitions, dry.partitions);
    assert!(done.partitions > 600, "movies, credits, browse and search partitions: {}", done.partitions);
    assert_eq!(movie_rows(&options, current - 1).await, 0);
    assert_eq!(movie_rows(&options, current).await, 300, "the current generation is untouched");
    let again = collect_generations(&options, hour, false).await.expect("gc again");
    assert!(again.removed.is_empty() && again.kept.len() == 1, "{again:?}");

    // Rows of a removed generation written late, and of a generation nobody lists (a load
    // that stopped before its row was written), are swept; a newer unlisted one is not.
    for generation in [current - 1, -7, current + 5] {
        execute(
            &options,
            "INSERT INTO {ks}.movies_by_id (generation, movie, body) VALUES (?, ?, ?)",
            (generation, 1i64, vec![0u8]),
        )
        .await;
    }
    let swept = collect_generations(&options, hour, false).await.expect("sweep");
    assert_eq!((swept.partitions, swept.orphaned), (2, 1), "{swept:?}");
    assert_eq!(movie_rows(&options, current - 1).await, 0);
    assert_eq!(movie_rows(&options, -7).await, 0);
    assert_eq!(movie_rows(&options, current + 5).await, 1);
    // A removed generation's number is never given to a new load.
    let next = bulk.clone();
    tokio::task::spawn_blocking(move || {
        let mut sink = next.sink("third").expect("sink");
        sink.put_movie(&large_movie(1)).expect("movie");
        sink.finish().expect("finish");
    })
    .await
    .expect("load");
    let reopened = ScyllaStore::open(&options).await.expect("open");
    assert_eq!(reopened.generation(), current + 1);
    // The store still serves its generation whole.
    let ids: Vec<MovieId> = (1..=300).map(MovieId).collect();
    assert!(store.movies(&ids).await.expect("movies").iter().all(Option::is_some));
    let (page, _) = counted(store.browse(&query(None, None, MovieSort::Popularity, 100))).await;
    assert_eq!(page.expect("browse").items.len(), 100);
}

/// A session of its own on the cluster under test, outside the store.
async fn session(options: &ScyllaOptions) -> scylla::client::session::Session {
    scylla::client::session_builder::SessionBuilder::new()
        .known_nodes(&options.contact_points)
        .build()
        .await
        .expect("session")
}

/// Runs `cql` (`{ks}` is the keyspace) outside the store, as an operator or a stopped
/// process would have.
async fn execute(options: &ScyllaOptions, cql: &str, values: impl scylla::serialize::row::SerializeRow) {
    let session = session(options).await;
    let statement = session.prepare(cql.replace("{ks}", &options.keyspace)).await.expect("prepare");
    session.execute_unpaged(&statement, values).await.expect("execute");
}

/// How many of the first 300 movies `generation` holds in `movies_by_id`.
async fn movie_rows(options: &ScyllaOptions, generation: i64) -> usize {
    let session = session(options).await;
    let select =
        format!("SELECT body FROM {}.movies_by_id WHERE generation = ? AND movie = ?", options.keyspace);
    let select = session.prepare(select).await.expect("prepare");
    let mut found = 0;
    for movie in 1..=300i64 {
        let rows = session.execute_unpaged(&select, (generation, movie)).await.expect("read");
        found += rows.into_rows_result().expect("rows").rows_num();
    }
    found
}

/// What a rerun resumes: only an unfinished generation newer than every published one and
/// not being removed, so `current` never moves backwards and never lands on a generation
/// whose rows a removal is deleting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_never_resumes_behind_a_newer_load_or_into_a_removal() {
    let (_keyspace, options) = options();
    let options = ScyllaOptions { load_buffer_rows: 8_192, ..options };
    migrate(&options).await.expect("migrate");
    let bulk = Arc::new(ScyllaBulk::new(options.clone(), tokio::runtime::Handle::current()));
    let load = |source: &'static str, movies: u64, finish: bool| {
        let bulk = bulk.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let mut sink = bulk.sink(source).expect("sink");
                for id in 1..=movies {
                    sink.put_movie(&large_movie(id)).expect("movie");
                }
                if finish {
                    sink.finish().expect("finish");
                } else {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
            })
            .await
            .expect("load");
        }
    };
    load("a", 8_000, false).await; // generation 1, stopped
    load("b", 300, true).await; // generation 2, published
    load("a", 8_000, true).await; // not generation 1: it would move current backwards
    let store = ScyllaStore::open(&options).await.expect("open");
    assert_eq!(store.generation(), 3);
    assert_eq!(store.stats().await.expect("stats").movies, 8_000);
    drop(store);

    load("c", 8_000, false).await; // generation 4, stopped
    // A removal that stopped after marking it.
    execute(
        &options,
        "INSERT INTO {ks}.catalog_generations (generation, state) VALUES (?, ?)",
        (4i64, "removing"),
    )
    .await;
    load("c", 300, true).await;
    let store = ScyllaStore::open(&options).await.expect("open");
    assert_eq!(store.generation(), 5, "a generation being removed is not resumed");
    assert_eq!(store.stats().await.expect("stats").movies, 300);
    let done = collect_generations(&options, std::time::Duration::ZERO, false).await.expect("gc");
    assert_eq!(done.removed, vec![1, 2, 3, 4], "{done:?}");

    // A load is not published once gc has begun removing it, nor behind a load published
    // while it ran.
    let (bulk, marker, handle) = (bulk.clone(), options.clone(), tokio::runtime::Handle::current());
    tokio::task::spawn_blocking(move || {
        let mut removed = bulk.sink("d").expect("sink");
        removed.put_movie(&large_movie(1)).expect("movie");
        handle.block_on(execute(
            &marker,
            "INSERT INTO {ks}.catalog_generations (generation, state) VALUES (?, ?)",
            (6i64, "removing"),
        ));
        let error = removed.finish().expect_err("a generation being removed is not published");
        assert!(error.to_string().contains("removing"), "{error}");

        let mut slow = bulk.sink("e").expect("sink");
        slow.put_movie(&large_movie(1)).expect("movie");
        let mut fast = bulk.sink("f").expect("sink");
        fast.put_movie(&large_movie(2)).expect("movie");
        fast.finish().expect("the newer load publishes");
        let error = slow.finish().expect_err("an older load is not published after a newer one");
        assert!(error.to_string().contains("was published while"), "{error}");
    })
    .await
    .expect("loads");
    let store = ScyllaStore::open(&options).await.expect("open");
    assert_eq!(store.stats().await.expect("stats").movies, 1);
    assert_eq!(store.movies(&[MovieId(2)]).await.expect("movie")[0].as_ref().map(|m| m.id), Some(MovieId(2)));
}
