//! Live catalog writes on ScyllaDB survive a writer killed mid-apply: the test runs a second
//! copy of itself that applies changes in a loop against the cluster, kills it (SIGKILL) at a
//! random moment, and then applies through a store of its own, which first finishes what the
//! killed writer left once its lock has lapsed. Every acknowledged apply is there, none is
//! there in part, and the derived rows (search) agree with the records.
//!
//! On a real cluster only (`SCYLLA_URI`): the writer's lock is a lightweight transaction,
//! which the in-memory stand-in does not run.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use marquee_store::bulk::BulkLoad;
use marquee_store::bulk::seed::{Generator, SeedOptions, seed};
use marquee_store::{
    CatalogChanges, CatalogReads, CatalogWrites, Edit, MovieId, SearchQuery, StoreError, UserPage,
};
use marquee_store_scylla::{ScyllaBulk, ScyllaOptions, ScyllaStore, migrate};

/// Set in the child: the keyspace it applies changes to.
const CHILD: &str = "MARQUEE_TEST_APPLY_KEYSPACE";
const OPTIONS: SeedOptions = SeedOptions { movies: 300, people: Some(200), seed: 9 };
/// Movies every apply retitles, all at once.
const MOVIES: u64 = 40;

fn title(round: u64, index: u64) -> String {
    let word = if round.is_multiple_of(2) { "alpha" } else { "bravo" };
    format!("Kestrel {word} {index}")
}

fn changes(round: u64) -> CatalogChanges {
    let g = Generator::new(&OPTIONS);
    let movies = (0..MOVIES)
        .map(|i| {
            let mut record = g.movie(i);
            record.movie.title = title(round, i);
            record
        })
        .collect();
    CatalogChanges { movies, ..CatalogChanges::default() }
}

fn options(keyspace: &str) -> ScyllaOptions {
    marquee_cql_standin::test_cluster().scylla_options(keyspace)
}

/// The child's body: applies round after round, printing each acknowledgement. Does nothing
/// when run as an ordinary test.
#[test]
fn child_applier() {
    let Ok(keyspace) = std::env::var(CHILD) else { return };
    let start: u64 = std::env::var("MARQUEE_TEST_APPLY_FROM").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let store = ScyllaStore::open(&options(&keyspace)).await.expect("open");
        let mut round = start;
        let mut failures = 0;
        loop {
            let edit = Edit { editor: "crash-test".into(), action: format!("round {round}") };
            match store.apply(changes(round), edit).await {
                Ok(_) => {
                    println!("acked {round}");
                    round += 1;
                    failures = 0;
                }
                // A busy cluster times a statement out now and then; an editor retries, and
                // so does the child (whatever the failed apply wrote, the retry finishes).
                Err(StoreError::Unavailable(error)) if failures < 5 => {
                    failures += 1;
                    eprintln!("child: round {round} failed ({error}); retrying");
                }
                Err(error) => panic!("child: round {round} failed: {error}"),
            }
        }
    });
}

async fn search(store: &ScyllaStore, text: &str) -> Vec<MovieId> {
    let page =
        store.search(&SearchQuery { text: text.into(), first: 100, after: None }).await.expect("search");
    page.items.into_iter().map(|(_, id)| id).collect()
}

/// An apply that changes nothing, retried while the killed writer's lock has not lapsed: it
/// finishes whatever that writer left.
async fn finish_what_was_left(store: &ScyllaStore) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let g = Generator::new(&OPTIONS);
    loop {
        let unchanged =
            CatalogChanges { movies: vec![g.movie(OPTIONS.movies - 1)], ..CatalogChanges::default() };
        let edit = Edit { editor: "crash-test".into(), action: "no-op".into() };
        match store.apply(unchanged, edit).await {
            Ok(applied) => {
                assert!(!applied.changed_anything(), "{applied:?}");
                return;
            }
            Err(StoreError::Unavailable(error)) if Instant::now() < deadline => {
                eprintln!("waiting for the killed writer's lock to lapse: {error}");
            }
            Err(error) => panic!("the apply after the kill failed: {error}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_killed_mid_apply_leaves_whole_applies_only() {
    if let Some(why) = marquee_cql_standin::without_lwt() {
        eprintln!("skipped: {why}");
        return;
    }
    let keyspace = format!("crash_{}", std::process::id());
    let options = options(&keyspace);
    let _keyspace = marquee_cql_standin::KeyspaceGuard::new(&options);
    migrate(&options).await.expect("migrate");
    let bulk = ScyllaBulk::new(options.clone(), tokio::runtime::Handle::current());
    tokio::task::spawn_blocking(move || seed(&OPTIONS, bulk.sink("crash").expect("sink"), &mut |_| {}))
        .await
        .expect("seeding thread")
        .expect("seed");
    let ids: Vec<MovieId> = (1..=MOVIES).map(MovieId).collect();
    let mut next = 0;
    for kill in 0..2u64 {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args(["child_applier", "--exact", "--nocapture", "--test-threads", "1"])
            .env(CHILD, &keyspace)
            .env("MARQUEE_TEST_APPLY_FROM", next.to_string())
            .stdout(Stdio::piped())
            // Its failures show in this test's output.
            .stderr(Stdio::inherit())
            .spawn()
            .expect("child");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut acked = None;
        while acked.is_none_or(|a| a < next + 1 + kill) {
            assert!(Instant::now() < deadline, "the child acknowledged nothing for two minutes");
            let Some(line) = lines.next() else { panic!("the child stopped before it was killed") };
            if let Some(round) = line.expect("a line").strip_prefix("acked ") {
                acked = round.trim().parse().ok();
            }
        }
        // Somewhere inside the next apply (each takes a few hundred statements).
        std::thread::sleep(Duration::from_millis(150 + kill * 170));
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        for line in lines.map_while(Result::ok) {
            if let Some(round) = line.strip_prefix("acked ") {
                acked = round.trim().parse().ok();
            }
        }
        let acked = acked.expect("an acknowledged round");

        let store = ScyllaStore::open(&options).await.expect("open");
        finish_what_was_left(&store).await;
        let movies = store.movies(&ids).await.expect("movies");
        let titles: Vec<String> = movies.into_iter().map(|m| m.expect("a movie").title).collect();
        let last = acked + 1;
        let state = if titles.iter().enumerate().all(|(i, t)| *t == title(acked, i as u64)) {
            acked
        } else if titles.iter().enumerate().all(|(i, t)| *t == title(last, i as u64)) {
            last
        } else {
            panic!("after round {acked}, the titles are neither round {acked} nor {last}, whole: {titles:?}");
        };
        let (now, then) = if state.is_multiple_of(2) { ("alpha", "bravo") } else { ("bravo", "alpha") };
        let mut found = search(&store, &format!("kestrel {now}")).await;
        found.sort();
        assert_eq!(found, ids, "search agrees with the records (round {state})");
        assert!(
            search(&store, &format!("kestrel {then}")).await.is_empty(),
            "no search row of another round"
        );
        let audit = store.audit_page(UserPage { first: 1, after: None }).await.expect("audit").items;
        assert_eq!(
            audit[0].1.edit.action,
            format!("round {state}"),
            "the last apply's audit record is there"
        );
        let recovered = store.recovered();
        let movies: Vec<MovieId> = recovered.iter().flat_map(|a| a.movies.clone()).collect();
        assert!(recovered.is_empty() || movies == ids, "{movies:?}");
        assert!(store.recovered().is_empty(), "taken once");
        let stats = store.stats().await.expect("stats");
        assert_eq!(stats.movies, OPTIONS.movies, "retitles leave the count as it was");
        eprintln!("kill {kill}: after round {acked} acknowledged, the catalog is round {state}");
        next = state + 1;
    }
}
