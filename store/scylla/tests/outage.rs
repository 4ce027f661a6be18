//! A CQL node going away and coming back under an open store: calls fail fast with a
//! retryable error while it is gone (the API answers `SERVICE_UNAVAILABLE` and `/readyz` 503
//! for those), and the driver reconnects by itself once it is back, with no reopening. Runs on
//! the in-process CQL stand-in, whose data outlives its listener.

use std::sync::Arc;
use std::time::{Duration, Instant};

use marquee_cql_standin::{DEFAULT_DATA_CENTER, StandIn};
use marquee_store::bulk::BulkLoad;
use marquee_store::bulk::seed::{SeedOptions, seed};
use marquee_store::{CatalogReads, Lifecycle, MovieId};
use marquee_store_scylla::{ScyllaBulk, ScyllaOptions, ScyllaStore, migrate};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_fails_retryably_while_the_node_is_down_and_recovers_by_itself() {
    let (node, addr, serving, options) = serve_migrated().await;
    let bulk = ScyllaBulk::new(options.clone(), tokio::runtime::Handle::current());
    let catalog = SeedOptions { movies: 50, people: Some(30), seed: 5 };
    tokio::task::spawn_blocking(move || {
        seed(&catalog, bulk.sink("outage").expect("sink"), &mut |_| {}).expect("seed")
    })
    .await
    .expect("seeding");
    let store = Arc::new(ScyllaStore::open(&options).await.expect("open"));
    let title = store.movies(&[MovieId(3)]).await.expect("movie")[0].clone().expect("exists").title;

    serving.abort();
    assert!(serving.await.expect_err("aborted").is_cancelled());
    let started = Instant::now();
    // The node's connections close as their tasks are cancelled, a moment after the listener:
    // a read may still be answered in that moment, never for long.
    let down = loop {
        match store.movies(&[MovieId(3)]).await {
            Err(error) => break error,
            Ok(_) => {
                assert!(
                    started.elapsed() < Duration::from_secs(2),
                    "still answering after the node went down"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert!(down.is_retryable(), "{down}");
    assert!(store.ping().await.expect_err("the node is down").is_retryable());
    assert!(started.elapsed() < Duration::from_secs(5), "failed in {:?}", started.elapsed());

    let (_, serving) = node.serve_on(addr).await.expect("the same address again");
    reconnected(&store).await;
    let again = store.movies(&[MovieId(3)]).await.expect("movie after the node came back");
    assert_eq!(again[0].as_ref().map(|m| m.title.clone()), Some(title));

    // A node that restarted has forgotten every prepared statement: the driver prepares its
    // statements again and must get the same ids back.
    serving.abort();
    assert!(serving.await.expect_err("aborted").is_cancelled());
    let restarted = StandIn::new(DEFAULT_DATA_CENTER).expect("stand-in");
    let (_, _serving) = restarted.serve_on(addr).await.expect("rebind");
    // The readiness read needs the keyspace's tables on the (empty) node.
    migrate(&options).await.expect("migrate the restarted node");
    reconnected(&store).await;
}

/// Waits for the store's ping to succeed again.
async fn reconnected(store: &ScyllaStore) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(error) = store.ping().await {
        assert!(Instant::now() < deadline, "the driver did not reconnect within 30 s: {error}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A catalog load while its node goes away for a moment: the writes that fail (refused,
/// broken connections, timeouts) are retried with backoff, and the load completes with every
/// row, where one failed write used to end it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_load_rides_out_its_node_going_away_and_coming_back() {
    let (node, addr, mut serving, options) = serve_migrated().await;
    let bulk = ScyllaBulk::new(options.clone(), tokio::runtime::Handle::current());
    let (outage, mut outage_due) = tokio::sync::mpsc::unbounded_channel();
    let catalog = SeedOptions { movies: 3_000, people: Some(1_500), seed: 9 };
    let loading = tokio::task::spawn_blocking(move || {
        seed(&catalog, bulk.sink("outage-load").expect("sink"), &mut |progress| {
            // The people are sent; the movies are about to be.
            if matches!(progress, marquee_store::bulk::Progress::Phase { name: "movies", .. }) {
                outage.send(()).expect("the test waits");
            }
        })
    });
    outage_due.recv().await.expect("the load advanced");
    serving.abort();
    assert!(serving.await.expect_err("aborted").is_cancelled());
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(!loading.is_finished(), "the load ended while its node was away");
    serving = node.serve_on(addr).await.expect("the same address again").1;
    let stats = loading.await.expect("loading").expect("the load completes");
    assert_eq!((stats.movies, stats.people), (3_000, 1_500));
    let store = ScyllaStore::open(&options).await.expect("open");
    let last = store.movies(&[MovieId(2_999), MovieId(1)]).await.expect("movies");
    assert!(last[0].is_some() && last[1].is_some(), "{last:?}");
    assert_eq!(store.stats().await.expect("stats").movies, 3_000);
    serving.abort();
}

/// A stand-in node serving on a free loopback port, its keyspace migrated, with the options
/// of a store on it (short timeouts, so an outage shows at once).
async fn serve_migrated()
-> (StandIn, std::net::SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>, ScyllaOptions) {
    let node = StandIn::new(DEFAULT_DATA_CENTER).expect("stand-in");
    let (addr, serving) = node.serve_on(([127, 0, 0, 1], 0).into()).await.expect("serve");
    let options = ScyllaOptions {
        contact_points: vec![addr.to_string()],
        replication: [(DEFAULT_DATA_CENTER.to_owned(), 1)].into(),
        await_schema_agreement: false,
        request_timeout_ms: 500,
        ..ScyllaOptions::default()
    };
    migrate(&options).await.expect("migrate");
    (node, addr, serving, options)
}
