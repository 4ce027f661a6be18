//! The store conformance suite against the ScyllaDB backend, over the real `scylla` driver and
//! the CQL wire protocol: against a real cluster when `SCYLLA_URI` is set (`host:port`, with
//! `SCYLLA_DC` naming its data center), else against the in-memory CQL stand-in
//! (`marquee-cql-standin`), which ignores clustering bounds, TTL and LWT and has one node
//! (see its docs for what that does not prove). Each test that writes gets its own keyspace;
//! the catalog-read cases share one per test run on a real cluster.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use marquee_cql_standin::KeyspaceGuard;
use marquee_store::bulk::BulkLoad;
use marquee_store::bulk::seed::seed;
use marquee_store::conformance::OPTIONS;
use marquee_store::{MovieId, RatingTotals, Store, UserId};
use marquee_store_scylla::{ScyllaBulk, ScyllaOptions, ScyllaStore, migrate};

/// A fresh keyspace on the cluster under test, dropped with its guard.
fn options() -> (KeyspaceGuard, ScyllaOptions) {
    static KEYSPACES: AtomicUsize = AtomicUsize::new(0);
    let keyspace =
        format!("conformance_{}_{}", std::process::id(), KEYSPACES.fetch_add(1, Ordering::Relaxed));
    let mut options = marquee_cql_standin::test_cluster().scylla_options(keyspace);
    options.reconcile_interval_ms = 200;
    (KeyspaceGuard::new(&options), options)
}

/// A migrated keyspace holding the conformance catalog.
async fn seeded() -> (KeyspaceGuard, ScyllaOptions) {
    let (keyspace, options) = options();
    migrate(&options).await.expect("migrate");
    let bulk = ScyllaBulk::new(options.clone(), tokio::runtime::Handle::current());
    tokio::task::spawn_blocking(move || {
        let sink = bulk.sink("conformance").expect("sink");
        seed(&OPTIONS, sink, &mut |_| {}).expect("seed")
    })
    .await
    .expect("seeding thread");
    (keyspace, options)
}

async fn scylla() -> (KeyspaceGuard, Store) {
    let (keyspace, options) = seeded().await;
    let store = ScyllaStore::open(&options).await.expect("open");
    (keyspace, Store::new(Arc::new(store)))
}

/// The conformance catalog for the cases that only read it: on a real cluster under nextest,
/// one keyspace the whole run shares (`marquee_cql_standin::shared_keyspace`), else a fresh one.
async fn scylla_catalog() -> (Option<KeyspaceGuard>, Store) {
    let runtime = tokio::runtime::Handle::current();
    let shared = tokio::task::spawn_blocking(move || {
        marquee_cql_standin::shared_keyspace("conformance", |keyspace| {
            let mut options = marquee_cql_standin::test_cluster().scylla_options(keyspace);
            options.reconcile_interval_ms = 200;
            runtime.block_on(migrate(&options)).expect("migrate");
            let sink = ScyllaBulk::new(options, runtime.clone()).sink("conformance").expect("sink");
            seed(&OPTIONS, sink, &mut |_| {}).expect("seed");
        })
    })
    .await
    .expect("seeding thread");
    let Some(keyspace) = shared else {
        let (guard, store) = scylla().await;
        return (Some(guard), store);
    };
    let mut options = marquee_cql_standin::test_cluster().scylla_options(keyspace);
    options.reconcile_interval_ms = 200;
    let store = ScyllaStore::open(&options).await.expect("open");
    (None, Store::new(Arc::new(store)))
}

marquee_store::conformance_cases!(catalog_reads: scylla_catalog);
marquee_store::conformance_cases!(user_writes: scylla);

/// Live catalog writes, on a real cluster only: they take a lock with a lightweight
/// transaction, which the stand-in does not run (CI runs them on Cassandra).
mod catalog_writes {
    use super::*;

    marquee_store::conformance_cases!(catalog_writes: scylla, skip_if marquee_cql_standin::without_lwt());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_raters_converge_to_exact_totals() {
    let (_keyspace, options) = seeded().await;
    let store = Arc::new(ScyllaStore::open(&options).await.expect("open"));
    let other_region = Arc::new(ScyllaStore::open(&options).await.expect("open"));
    let movie = MovieId(7);
    let mut writes = Vec::new();
    for i in 0..40u8 {
        let store = if i % 2 == 0 { store.clone() } else { other_region.clone() };
        writes.push(tokio::spawn(async move {
            let user = UserId::new(format!("rater-{i}")).expect("user");
            use marquee_store::UserData;
            store.rate(&user, movie, 1 + i % 10).await.expect("rate");
            store.rate(&user, movie, 10 - i % 10).await.expect("re-rate");
        }));
    }
    for write in writes {
        write.await.expect("writer");
    }
    let expected = RatingTotals { sum: (0..40u64).map(|i| 10 - i % 10).sum(), count: 40 };
    totals_reach(&store, movie, expected).await;
}

/// Waits for `movie`'s totals to equal `expected`, failing after the store's stated lag.
async fn totals_reach(store: &ScyllaStore, movie: MovieId, expected: RatingTotals) {
    use marquee_store::UserData;
    let deadline = Instant::now() + store.totals_lag();
    loop {
        let totals = store.rating_totals(&[movie]).await.expect("totals");
        if totals == [expected] {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "totals {totals:?} did not reach {expected:?} within {:?}",
            store.totals_lag()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_completes_an_unfinished_load_and_gateways_never_see_it() {
    let (_keyspace, options) = seeded().await;
    let served = ScyllaStore::open(&options).await.expect("open");
    let first = served.generation();
    let bulk = ScyllaBulk::new(options.clone(), tokio::runtime::Handle::current());
    let generator = marquee_store::bulk::seed::Generator::new(&OPTIONS);
    let bulk = tokio::task::spawn_blocking(move || {
        let mut sink = bulk.sink("reseed").expect("sink");
        sink.put_movie(&generator.movie(0)).expect("one movie");
        drop(sink);
        bulk
    })
    .await
    .expect("loader");
    let reopened = ScyllaStore::open(&options).await.expect("reopen");
    assert_eq!(reopened.generation(), first, "an unfinished load is not served");
    tokio::task::spawn_blocking(move || {
        let sink = bulk.sink("reseed").expect("sink");
        seed(&OPTIONS, sink, &mut |_| {}).expect("rerun")
    })
    .await
    .expect("loader");
    let after = ScyllaStore::open(&options).await.expect("reopen");
    assert_eq!(after.generation(), first + 1, "the rerun completed the unfinished generation");
    use marquee_store::CatalogReads;
    assert_eq!(after.stats().await.expect("stats").movies, OPTIONS.movies);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rating_replicated_from_another_region_reaches_the_totals_through_the_reconciler() {
    use marquee_store::UserData;
    let (_keyspace, options) = seeded().await;
    let store = ScyllaStore::open(&options).await.expect("open");
    // What replication brings from another region: a user's row in a bucket and the bucket's
    // change, with none of this region's gateways having recomputed that bucket.
    let session = scylla::client::session_builder::SessionBuilder::new()
        .known_nodes(&options.contact_points)
        .auto_await_schema_agreement(options.await_schema_agreement)
        .build()
        .await
        .expect("connect");
    let movie = 12_i64;
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis();
    let keyspace = &options.keyspace;
    session
        .query_unpaged(
            format!(
                "INSERT INTO {keyspace}.movie_ratings (movie, bucket, user_id, score) VALUES (?, ?, ?, ?)"
            ),
            (movie, 5_i32, "far-away", 7_i32),
        )
        .await
        .expect("replicated row");
    session
        .query_unpaged(
            format!("INSERT INTO {keyspace}.rating_changes (slot, movie, bucket) VALUES (?, ?, ?)"),
            ((now_ms / 1000) as i64, movie, 5_i32),
        )
        .await
        .expect("replicated change");
    let expected = RatingTotals { sum: 7, count: 1 };
    assert_eq!(store.rating_totals(&[MovieId(12)]).await.expect("totals"), [RatingTotals::default()]);
    totals_reach(&store, MovieId(12), expected).await;
}

/// Every finished apply is listed in the catalog's change log, after its rows: another
/// region's store (here a second store on the keyspace, as a gateway of another region opens
/// it) finds it under the second it finished in, with what it changed, and serves the counts
/// it moved once it has read it, without waiting for its generation poll. On a real cluster
/// only (the writer's lock is a lightweight transaction).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_apply_is_listed_in_the_change_log_with_what_it_changed() {
    use marquee_store::{CatalogReads, CatalogWrites, Edit};
    if let Some(why) = marquee_cql_standin::without_lwt() {
        eprintln!("skipped: {why}");
        return;
    }
    let (_keyspace, options) = seeded().await;
    let writer = ScyllaStore::open(&options).await.expect("open");
    let elsewhere = ScyllaStore::open(&options).await.expect("open");
    let before = elsewhere.stats().await.expect("stats").movies;
    let generator = marquee_store::bulk::seed::Generator::new(&OPTIONS);
    let mut added = generator.movie(0);
    added.movie.id = MovieId(OPTIONS.movies + 1);
    added.movie.title = "Zyzzyva Quartermaine".into();
    let started =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let changes = marquee_store::CatalogChanges { movies: vec![added], ..Default::default() };
    let edit = Edit { editor: "eddie".into(), action: "add a title".into() };
    let applied = writer.apply(changes, edit).await.expect("apply");
    assert_eq!(applied.movies, [MovieId(OPTIONS.movies + 1)]);
    let finished =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();

    let mut listed = Vec::new();
    for second in started..=finished {
        listed.extend(elsewhere.catalog_log(second).await.expect("log").expect("a log"));
    }
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].applied, applied);
    assert!(listed[0].stamp > 0);
    assert_eq!(elsewhere.stats().await.expect("stats").movies, before + 1, "counts taken with the log");
    assert!(
        elsewhere.catalog_log(finished + 5).await.expect("log").expect("a log").is_empty(),
        "nothing listed in a second without applies"
    );
}
