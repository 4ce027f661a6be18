//! The ScyllaDB backend on a real multi-data-center cluster: Apache Cassandra from Maven
//! Central (`marquee-cassandra-cluster`), one network namespace per data center, a link
//! between them that is slowed and cut. Each test starts a cluster of its own (the faults
//! would disturb others), so these run as root, one at a time (`.config/nextest.toml`).
//!
//! - A catalog load is published only once every data center holds it: during a partition it
//!   fails, and the other region keeps serving the generation it had.
//! - Each region's store talks to its own data center only, and a write in one reads back in
//!   the other once the link carries it.
//! - Readiness proves LOCAL_QUORUM: one node of three down still answers, two down turns it
//!   unready, and it recovers by itself when they return.
//! - A re-rate or a removal from a gateway whose clock is 5 s behind (Debian's `faketime`)
//!   wins over the write it replaces.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use marquee_cassandra_cluster::{CassandraCluster, Link, Spec};
use marquee_store::bulk::BulkLoad;
use marquee_store::bulk::seed::{SeedOptions, seed};
use marquee_store::{CatalogReads, Lifecycle, MovieId, UserData, UserId};
use marquee_store_scylla::{ScyllaBulk, ScyllaOptions, ScyllaStore, migrate};

const EAST: &str = "us-east";
const WEST: &str = "eu-west";

/// Starts `spec` off the async workers.
async fn start(spec: Spec) -> CassandraCluster {
    tokio::task::spawn_blocking(move || CassandraCluster::start(&spec).expect("Cassandra cluster"))
        .await
        .expect("starting thread")
}

fn options(cluster: &CassandraCluster, local_dc: &str, replication: &[(&str, u32)]) -> ScyllaOptions {
    ScyllaOptions {
        contact_points: cluster.contact_points(local_dc),
        local_dc: local_dc.into(),
        keyspace: "replication".into(),
        replication: replication.iter().map(|(dc, rf)| ((*dc).to_owned(), *rf)).collect(),
        reconcile_interval_ms: 200,
        catalog_poll_ms: 200,
        ..ScyllaOptions::default()
    }
}

/// Loads a small generated catalog under `source`.
async fn load(options: &ScyllaOptions, source: &'static str, seed_value: u64) -> Result<(), String> {
    let bulk = ScyllaBulk::new(options.clone(), tokio::runtime::Handle::current());
    let catalog = SeedOptions { movies: 40, people: Some(20), seed: seed_value };
    tokio::task::spawn_blocking(move || {
        let sink = bulk.sink(source).map_err(|e| e.to_string())?;
        seed(&catalog, sink, &mut |_| {}).map(|_| ()).map_err(|e| e.to_string())
    })
    .await
    .expect("loading thread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_is_published_only_once_every_data_center_holds_it() {
    let cluster = start(Spec::one_node_each(&[EAST, WEST])).await;
    let replication = [(EAST, 1), (WEST, 1)];
    let east = options(&cluster, EAST, &replication);
    let west = options(&cluster, WEST, &replication);
    migrate(&east).await.expect("migrate");
    load(&east, "first", 1).await.expect("first load");
    let west_store = ScyllaStore::open(&west).await.expect("eu-west opens");
    let first = west_store.generation();

    // Each region reads through its own data center, and sees the other's writes.
    let user = UserId::new("traveller").expect("user");
    west_store.rate(&user, MovieId(7), 9).await.expect("rated in eu-west");
    let east_store = ScyllaStore::open(&east).await.expect("us-east opens");
    assert_eq!(east_store.generation(), first);
    let read = east_store.user_ratings(&user, &[MovieId(7)]).await.expect("read in us-east");
    assert_eq!(read[0].as_ref().map(|r| r.score), Some(9), "a write in eu-west reads back in us-east");
    // No connection to the other region's nodes: only eu-west's store had any.
    drop(west_store);
    let west_node: std::net::SocketAddr = cluster.contact_points(WEST)[0].parse().expect("address");
    let deadline = Instant::now() + Duration::from_secs(10);
    while established_to(west_node) > 0 {
        assert!(Instant::now() < deadline, "connections to eu-west remain with only us-east's store open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    east_store.movies(&[MovieId(3)]).await.expect("read in us-east");
    assert_eq!(established_to(west_node), 0, "us-east's store connected to eu-west's node");
    let west_store = ScyllaStore::open(&west).await.expect("eu-west opens again");
    let mut west_changes = west_store.catalog_changes().expect("the store follows new generations");

    // Cut apart, a load in us-east cannot reach a quorum in eu-west: it fails, and neither
    // region serves it.
    cluster.set_link(Link { round_trip: Duration::from_millis(100), cut: true });
    let refused = load(&east, "second", 2).await;
    assert!(refused.is_err(), "a load during a partition must fail, not publish to one side");
    assert_eq!(ScyllaStore::open(&west).await.expect("eu-west").generation(), first);
    assert_eq!(ScyllaStore::open(&east).await.expect("us-east").generation(), first);
    // Both sides keep serving their own clients meanwhile, the generation they had (the
    // running stores look for a new one every 200 ms).
    west_store.movies(&[MovieId(3)]).await.expect("eu-west serves during the partition");
    east_store.movies(&[MovieId(3)]).await.expect("us-east serves during the partition");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!((west_store.generation(), east_store.generation()), (first, first));
    assert!(!west_changes.has_changed().expect("open"), "no switch to an unpublished load");

    cluster.set_link(Link { round_trip: Duration::from_millis(100), cut: false });
    tokio::task::block_in_place(|| cluster.wait_until_all_up()).expect("healed");
    load(&east, "second", 2).await.expect("the rerun after healing");
    let reopened = ScyllaStore::open(&west).await.expect("eu-west reopens");
    assert_eq!(reopened.generation(), first + 1, "eu-west serves the load once it holds it");
    assert_eq!(reopened.stats().await.expect("stats").movies, 40);
    // ...and the stores that were running switch to it without a restart, and say so.
    tokio::time::timeout(Duration::from_secs(5), west_changes.changed())
        .await
        .expect("eu-west's running store switched within 5 s")
        .expect("open");
    assert_eq!(*west_changes.borrow(), reopened.catalog_id());
    assert_eq!(west_store.generation(), first + 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while east_store.generation() != first + 1 {
        assert!(
            Instant::now() < deadline,
            "us-east's running store still serves {}",
            east_store.generation()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// This process's established TCP connections to `to` (from `/proc/net/tcp`, whose
/// addresses are hex in host byte order).
fn established_to(to: std::net::SocketAddr) -> usize {
    let std::net::SocketAddr::V4(to) = to else { return 0 };
    let want = format!("{:08X}:{:04X}", u32::from_le_bytes(to.ip().octets()), to.port());
    let table = std::fs::read_to_string("/proc/self/net/tcp").expect("/proc/self/net/tcp");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(2) == Some(&want.as_str()) && fields.get(3) == Some(&"01")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_holds_with_one_node_of_three_down_and_not_with_two() {
    let mut spec = Spec::one_node_each(&[EAST]);
    spec.data_centers = vec![(EAST.to_owned(), 3)];
    let mut cluster = start(spec).await;
    let mut east = options(&cluster, EAST, &[(EAST, 3)]);
    east.request_timeout_ms = 1_000;
    migrate(&east).await.expect("migrate");
    load(&east, "three nodes", 3).await.expect("load");
    let store = Arc::new(ScyllaStore::open(&east).await.expect("open"));
    store.ping().await.expect("ready with three nodes");

    tokio::task::block_in_place(|| cluster.stop_node(2)).expect("stop one");
    wait_for(&store, true, "one node of three down: LOCAL_QUORUM still answers").await;
    let user = UserId::new("quorum").expect("user");
    store.rate(&user, MovieId(5), 6).await.expect("writes at LOCAL_QUORUM with two of three");

    tokio::task::block_in_place(|| cluster.stop_node(1)).expect("stop another");
    wait_for(&store, false, "two nodes of three down: no LOCAL_QUORUM").await;

    tokio::task::block_in_place(|| cluster.start_node(1)).expect("restart");
    wait_for(&store, true, "back to two of three: ready again without reopening").await;
    let read = store.user_ratings(&user, &[MovieId(5)]).await.expect("read");
    assert_eq!(read[0].as_ref().map(|r| r.score), Some(6));
}

/// Waits up to 60 s for `ping` to succeed (`ready`) or fail.
async fn wait_for(store: &ScyllaStore, ready: bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ping = store.ping().await;
        if ping.is_ok() == ready {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: ping is {ping:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The write a clock-skewed gateway makes, run by [`a_write_from_a_clock_behind_wins`] in a
/// process of its own under `faketime`: set by `MARQUEE_SKEWED` (`contact dc keyspace action
/// user movie score`), a no-op otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by a_write_from_a_clock_behind_wins under faketime"]
async fn skewed_writer() {
    let Ok(spec) = std::env::var("MARQUEE_SKEWED") else { return };
    let words: Vec<&str> = spec.split_whitespace().collect();
    let [contact, dc, keyspace, action, user, movie, score] = words[..] else {
        panic!("MARQUEE_SKEWED: {spec}")
    };
    let options = ScyllaOptions {
        contact_points: vec![contact.to_owned()],
        local_dc: dc.to_owned(),
        keyspace: keyspace.to_owned(),
        replication: [(dc.to_owned(), 1)].into(),
        ..ScyllaOptions::default()
    };
    let store = ScyllaStore::open(&options).await.expect("open under faketime");
    let user = UserId::new(user).expect("user");
    let movie = MovieId(movie.parse().expect("movie"));
    match action {
        "rate" => {
            store.rate(&user, movie, score.parse().expect("score")).await.expect("rate");
        }
        "remove" => assert!(store.delete_rating(&user, movie).await.expect("remove")),
        other => panic!("unknown action {other}"),
    }
}

/// Runs [`skewed_writer`] under `faketime -f -5s`, and checks it acknowledged.
fn skewed(cluster: &CassandraCluster, keyspace: &str, action: &str, user: &str, movie: u64, score: u8) {
    let exe = std::env::current_exe().expect("test binary");
    let spec =
        format!("{} {EAST} {keyspace} {action} {user} {movie} {score}", cluster.contact_points(EAST)[0]);
    let out = Command::new("faketime")
        .args(["-f", "-5s"])
        .arg(exe)
        .args(["--exact", "skewed_writer", "--ignored", "--nocapture"])
        .env("MARQUEE_SKEWED", spec)
        // Only wall-clock time is 5 s behind; timers keep the real monotonic clock.
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .output()
        .expect("faketime (Debian's faketime package)");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "the skewed writer failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_from_a_clock_behind_wins() {
    let cluster = start(Spec::one_node_each(&[EAST])).await;
    let mut east = options(&cluster, EAST, &[(EAST, 1)]);
    east.keyspace = "skew".into();
    migrate(&east).await.expect("migrate");
    load(&east, "skew", 4).await.expect("load");
    let store = ScyllaStore::open(&east).await.expect("open");
    let user = UserId::new("skewed-user").expect("user");

    store.rate(&user, MovieId(9), 8).await.expect("rated on time");
    tokio::task::block_in_place(|| skewed(&cluster, "skew", "rate", "skewed-user", 9, 3));
    let read = store.user_ratings(&user, &[MovieId(9)]).await.expect("read");
    assert_eq!(
        read[0].as_ref().map(|r| r.score),
        Some(3),
        "the re-rate 5 s behind was acknowledged, so it wins"
    );
    let page =
        store.ratings_page(&user, marquee_store::UserPage { first: 10, after: None }).await.expect("page");
    assert_eq!(page.items.iter().map(|(_, r)| r.score).collect::<Vec<_>>(), [3], "one entry, the new score");

    store.rate(&user, MovieId(9), 10).await.expect("re-rated on time");
    tokio::task::block_in_place(|| skewed(&cluster, "skew", "remove", "skewed-user", 9, 0));
    let read = store.user_ratings(&user, &[MovieId(9)]).await.expect("read");
    assert_eq!(read[0], None, "the removal 5 s behind was acknowledged, so it wins");
    totals_reach(&store, 9, 0).await;

    // A rating after a removal: the removal is remembered, so the late clock still writes
    // after it.
    store.rate(&user, MovieId(9), 7).await.expect("rated on time");
    assert!(store.delete_rating(&user, MovieId(9)).await.expect("removed on time"));
    tokio::task::block_in_place(|| skewed(&cluster, "skew", "rate", "skewed-user", 9, 6));
    let read = store.user_ratings(&user, &[MovieId(9)]).await.expect("read");
    assert_eq!(read[0].as_ref().map(|r| r.score), Some(6), "the rating 5 s behind a removal wins");
    totals_reach(&store, 9, 1).await;
}

/// Waits for `movie`'s rating count to be `count`, within the store's stated lag.
async fn totals_reach(store: &ScyllaStore, movie: u64, count: u64) {
    let deadline = Instant::now() + store.totals_lag();
    loop {
        let totals = store.rating_totals(&[MovieId(movie)]).await.expect("totals");
        if totals[0].count == count {
            return;
        }
        assert!(Instant::now() < deadline, "totals {totals:?}, expected {count} ratings");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_adds_a_region_refuses_dropping_one_and_gateways_check_the_tables() {
    let cluster = start(Spec::one_node_each(&[EAST, WEST])).await;
    let mut east = options(&cluster, EAST, &[(EAST, 1)]);
    east.keyspace = "growing".into();
    let report = migrate(&east).await.expect("migrate");
    assert_eq!(report.engine, "Cassandra");
    assert_eq!(report.replication_change, None);
    load(&east, "one region", 5).await.expect("load");

    // A second region in [store] replication: the keyspace is altered (CREATE ... IF NOT
    // EXISTS alone would ignore it), and the report says what to run there.
    let both = [(EAST, 1), (WEST, 1)];
    east.replication = both.iter().map(|(dc, rf)| ((*dc).to_owned(), *rf)).collect();
    let report = migrate(&east).await.expect("migrate to two regions");
    let change = report.replication_change.expect("a replication change");
    assert!(change.contains("'eu-west': 1") && change.contains("nodetool rebuild -- us-east"), "{change}");
    // What the operator runs in the new data center, then its gateways serve the catalog.
    tokio::task::block_in_place(|| cluster.nodetool(1, &["rebuild", "--", EAST])).expect("nodetool rebuild");
    let mut west = options(&cluster, WEST, &both);
    west.keyspace = "growing".into();
    let west_store = ScyllaStore::open(&west).await.expect("eu-west serves after the rebuild");
    assert_eq!(west_store.stats().await.expect("stats").movies, 40);
    assert!(migrate(&east).await.expect("again").replication_change.is_none(), "idempotent");

    // Dropping a region is refused (it drops replicas).
    east.replication = [(EAST.to_owned(), 1)].into();
    let refused = migrate(&east).await.expect_err("removing eu-west").to_string();
    assert!(refused.contains("eu-west 1 -> 0"), "{refused}");

    // A keyspace one version ahead (a newer build migrated it, this one is rolling out) is
    // served; two ahead is not; a table that lost a column is named.
    let session = scylla::client::session_builder::SessionBuilder::new()
        .known_nodes(cluster.contact_points(EAST))
        .build()
        .await
        .expect("connect");
    let next = marquee_store_scylla::SCHEMA_VERSION + 1;
    session
        .query_unpaged(
            "INSERT INTO growing.schema_versions (version, name, applied_at) VALUES (?, 'next', 0)",
            (next,),
        )
        .await
        .expect("record the next version");
    ScyllaStore::open(&east).await.expect("a build serves the next version");
    session
        .query_unpaged(
            "INSERT INTO growing.schema_versions (version, name, applied_at) VALUES (?, 'later', 0)",
            (next + 1,),
        )
        .await
        .expect("record a later version");
    let too_new = ScyllaStore::open(&east).await.err().expect("two versions ahead").to_string();
    assert!(too_new.contains("deploy a newer gateway"), "{too_new}");
    session
        .query_unpaged("DELETE FROM growing.schema_versions WHERE version = ?", (next + 1,))
        .await
        .expect("forget it");
    session.query_unpaged("ALTER TABLE growing.people_by_id DROP body", ()).await.expect("drop a column");
    let broken = ScyllaStore::open(&east).await.err().expect("a table lost a column").to_string();
    assert!(broken.contains("people_by_id.body is missing"), "{broken}");
}

/// The bucket of a user's rows among a movie's totals, as the store computes it (FNV-1a of
/// the id, modulo 64: `store/scylla/src/users.rs`): users of one bucket share a total row.
fn bucket_of(user: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in user.bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    hash % 64
}

/// `count` users named `prefix-i` whose rows fall in `bucket`.
fn users_in_bucket(prefix: &str, bucket: u64, count: usize) -> Vec<String> {
    (0..).map(|i| format!("{prefix}-{i}")).filter(|u| bucket_of(u) == bucket).take(count).collect()
}

/// Each of `users` rates `movie` in `store` with `score`.
async fn rate_all(store: &ScyllaStore, users: &[String], movie: u64, score: u8) {
    for user in users {
        let user = UserId::new(user.clone()).expect("user");
        store.rate(&user, MovieId(movie), score).await.expect("rated during the partition");
    }
}

/// Waits up to `within` for `store` to read `user`'s rating of `movie` (replication arrived).
async fn arrives(store: &ScyllaStore, user: &str, movie: u64, within: Duration) {
    let user = UserId::new(user).expect("user");
    let deadline = Instant::now() + within;
    while store.user_ratings(&user, &[MovieId(movie)]).await.expect("read")[0].is_none() {
        assert!(Instant::now() < deadline, "{user:?}'s rating of {movie} never arrived");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until each side sees the other down (gossip's failure detector, slower when the
/// machine is loaded: a JVM that paused declines to convict anyone for a while).
fn both_see_a_partition(cluster: &CassandraCluster) {
    for node in [0, 1] {
        let deadline = Instant::now() + Duration::from_secs(150);
        loop {
            let status = cluster.nodetool(node, &["status"]).expect("status");
            if status.lines().any(|l| l.starts_with("DN ")) {
                break;
            }
            let nodes: Vec<&str> = status.lines().filter(|l| l.starts_with(['U', 'D'])).collect();
            assert!(Instant::now() < deadline, "node {node} never saw the other down: {nodes:?}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Waits up to `within` for `movie`'s totals in `store` to be `exact`; how long it took.
async fn totals_become(
    store: &ScyllaStore,
    movie: u64,
    exact: marquee_store::RatingTotals,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let totals = store.rating_totals(&[MovieId(movie)]).await.expect("totals")[0];
        if totals == exact {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "totals {totals:?}, expected {exact:?} within {within:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_partition_heals_every_total_becomes_exact_in_both_regions() {
    let cluster = start(Spec::one_node_each(&[EAST, WEST])).await;
    let replication = [(EAST, 1), (WEST, 1)];
    let (mut east, mut west) = (options(&cluster, EAST, &replication), options(&cluster, WEST, &replication));
    east.keyspace = "partition".into();
    west.keyspace = "partition".into();
    migrate(&east).await.expect("migrate");
    load(&east, "partition", 6).await.expect("load");
    let east_store = ScyllaStore::open(&east).await.expect("us-east");
    let west_store = ScyllaStore::open(&west).await.expect("eu-west");

    // Healed within the hint window: the coordinators keep hints and replay them, marks
    // included, and each region's reconciler re-derives the seconds whose marks came late.
    // Every rater is in one bucket, so each side's total row for it counts only its own
    // users, and whichever replicates last would win without the re-derivation.
    let (east_users, west_users) = (users_in_bucket("east", 17, 12), users_in_bucket("west", 17, 9));
    // Linked, a rating's totals arrive with it: the reconcilers' looks find nothing to fix, so
    // they hand no movie to the change followers (which heard of it from the log already).
    rate_all(&west_store, &users_in_bucket("linked", 3, 3), 13, 5).await;
    totals_become(&east_store, 13, marquee_store::RatingTotals { sum: 15, count: 3 }, Duration::from_secs(5))
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(east_store.rederived_totals().await.expect("rederived"), []);
    assert_eq!(west_store.rederived_totals().await.expect("rederived"), []);
    cluster.set_link(Link { round_trip: Duration::from_millis(150), cut: true });
    tokio::task::block_in_place(|| both_see_a_partition(&cluster));
    rate_all(&east_store, &east_users, 11, 8).await;
    rate_all(&west_store, &west_users, 11, 3).await;
    // Each side counts its own while cut apart: both keep taking writes.
    assert_eq!(east_store.rating_totals(&[MovieId(11)]).await.expect("totals")[0].count, 12);
    assert_eq!(west_store.rating_totals(&[MovieId(11)]).await.expect("totals")[0].count, 9);
    // Long enough that every regular look at those seconds (the last 75 s after them, for
    // batchlog replays) has passed before the rows can arrive.
    tokio::time::sleep(Duration::from_secs(80)).await;
    // Both regions' reconcilers stop before the heal, and new ones take the leases once they
    // lapse: each starts its looks 75 s back, before which the cut began, but reads the other
    // region's marks from where the last one left them (`reconcile_cursors`), so the marks
    // replayed meanwhile still count as late. (Without that, nothing would re-derive the
    // totals: each side's row would count only its own raters.)
    drop((east_store, west_store));
    cluster.set_link(Link { round_trip: Duration::from_millis(150), cut: false });
    tokio::task::block_in_place(|| cluster.wait_until_all_up()).expect("healed");
    let healed = Instant::now();
    let east_store = ScyllaStore::open(&east).await.expect("us-east again");
    let west_store = ScyllaStore::open(&west).await.expect("eu-west again");
    arrives(&east_store, &west_users[8], 11, Duration::from_secs(90)).await;
    arrives(&west_store, &east_users[11], 11, Duration::from_secs(90)).await;
    let replayed = healed.elapsed();
    let exact = marquee_store::RatingTotals { sum: 12 * 8 + 9 * 3, count: 21 };
    let east_after = totals_become(&east_store, 11, exact, Duration::from_secs(60)).await;
    let west_after = totals_become(&west_store, 11, exact, Duration::from_secs(60)).await;
    eprintln!(
        "hints replayed {replayed:?} after healing; totals exact {east_after:?} (us-east) and {:?} (eu-west) after that",
        east_after.max(west_after)
    );
    // Within the leases' lapse (15 s after the last renewal) and a check (5 s).
    assert!(east_after.max(west_after) < Duration::from_secs(30), "exact more than 30 s after the replay");
    // The rows came too late for the change log's followers, so each region's reconciler
    // hands the movie of the seconds it re-derived to its gateway's follower (taken once).
    // (The totals are written before the movie is noted, and the other region's new
    // reconciler may take its lease a check later: allow that.)
    for store in [&east_store, &west_store] {
        let mut noted = store.rederived_totals().await.expect("rederived");
        let deadline = Instant::now() + Duration::from_secs(20);
        while noted.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            noted = store.rederived_totals().await.expect("rederived");
        }
        assert_eq!(noted, [MovieId(11)]);
    }

    // Beyond the hint window (3 s here): nothing replays, so the other side gets the rows and
    // their marks only from a repair, and reconciles on its own once they arrive.
    for node in [0, 1] {
        tokio::task::block_in_place(|| cluster.nodetool(node, &["setmaxhintwindow", "3000"]))
            .expect("hint window");
    }
    cluster.set_link(Link { round_trip: Duration::from_millis(150), cut: true });
    tokio::task::block_in_place(|| both_see_a_partition(&cluster));
    tokio::time::sleep(Duration::from_secs(4)).await;
    rate_all(&west_store, &users_in_bucket("late", 5, 5), 12, 6).await;
    cluster.set_link(Link { round_trip: Duration::from_millis(150), cut: false });
    tokio::task::block_in_place(|| cluster.wait_until_all_up()).expect("healed");
    tokio::time::sleep(Duration::from_secs(15)).await;
    let last_late = users_in_bucket("late", 5, 5).pop().expect("a user");
    let late = UserId::new(last_late.clone()).expect("user");
    let missing = east_store.user_ratings(&late, &[MovieId(12)]).await.expect("read");
    assert_eq!(missing[0], None, "past the hint window, nothing replays the rows");
    tokio::task::block_in_place(|| cluster.nodetool(0, &["repair", "-full", "partition"])).expect("repair");
    arrives(&east_store, &last_late, 12, Duration::from_secs(30)).await;
    let exact = marquee_store::RatingTotals { sum: 30, count: 5 };
    let after_repair = totals_become(&east_store, 12, exact, Duration::from_secs(60)).await;
    eprintln!("after the repair, totals exact {after_repair:?} after the rows arrived");

    // `gateway reconcile --check` finds every listed total exact in both regions now, and
    // finds one that is not: a totals row overwritten behind the store's back (nothing in the
    // change log, so no reconciler touches it) until `gateway reconcile --since`, the
    // operator's way to exact totals at once, re-derives it. The row is movie 13's, rated
    // linked minutes ago: past every look, and its marks came in time. (Movie 12's seconds
    // were marked late, so their later looks would re-derive an overwritten row of theirs
    // before the check saw it.)
    let ten_minutes_ago = std::time::SystemTime::now() - Duration::from_secs(600);
    let since = ten_minutes_ago.duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as u64;
    for store in [&east_store, &west_store] {
        let found = store.check_totals(since, u64::MAX).await.expect("check");
        assert!(found.buckets >= 2 && found.inexact == 0, "{found:?}");
    }
    let session = scylla::client::session_builder::SessionBuilder::new()
        .known_nodes(cluster.contact_points(EAST))
        .build()
        .await
        .expect("session");
    let mut wrong = scylla::statement::unprepared::Statement::new(
        "INSERT INTO partition.rating_totals (movie, bucket, score_sum, ratings) VALUES (13, 3, 1, 1)",
    );
    wrong.set_consistency(scylla::statement::Consistency::All);
    session.query_unpaged(wrong, ()).await.expect("overwriting a total");
    for store in [&east_store, &west_store] {
        let found = store.check_totals(since, u64::MAX).await.expect("check");
        assert_eq!(found.inexact, 1, "{found:?}");
    }
    let started =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let done = east_store.reconcile_since(since).await.expect("reconcile");
    assert!(done.slots >= 600 && done.buckets == 3, "{done:?}");
    assert_eq!((done.fixed, done.told), (1, 3), "{done:?}");
    assert_eq!(east_store.rating_totals(&[MovieId(12)]).await.expect("totals")[0], exact);
    // Every movie it re-derived is in the change log again, where every gateway's change
    // follower, in both regions, takes it as a new rating (caches dropped, edges purged).
    let finished =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for store in [&east_store, &west_store] {
        let mut told = std::collections::BTreeSet::new();
        for second in started..=finished {
            told.extend(store.rating_changes(second).await.expect("changes").unwrap_or_default());
        }
        assert_eq!(told, [11, 12, 13].map(MovieId).into(), "told anew");
    }
    for store in [&east_store, &west_store] {
        let found = store.check_totals(since, u64::MAX).await.expect("check");
        assert_eq!(found.inexact, 0, "{found:?}");
        let linked = marquee_store::RatingTotals { sum: 15, count: 3 };
        assert_eq!(store.rating_totals(&[MovieId(13)]).await.expect("totals")[0], linked);
    }
}
