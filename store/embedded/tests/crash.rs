//! Live catalog writes survive a process killed mid-apply: the test runs a second copy of
//! itself that applies changes in a loop, kills it (SIGKILL) at a random moment, reopens the
//! data directory and checks that every acknowledged apply is there, that no apply is there
//! in part, and that the derived rows (search) agree with the records.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use marquee_store::bulk::BulkLoad;
use marquee_store::bulk::seed::{Generator, SeedOptions, seed};
use marquee_store::{CatalogChanges, CatalogReads, CatalogWrites, Edit, MovieId, SearchQuery};
use marquee_store_embedded::{EmbeddedBulk, EmbeddedOptions, EmbeddedStore};

/// Set in the child: the data directory it applies changes to.
const CHILD: &str = "MARQUEE_TEST_APPLY_CHILD";
const OPTIONS: SeedOptions = SeedOptions { movies: 500, people: Some(300), seed: 9 };
/// Movies every apply retitles, all at once.
const MOVIES: u64 = 40;

/// The title of movie `index` after round `round`.
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

fn open(dir: &Path) -> EmbeddedStore {
    EmbeddedStore::open(dir, &EmbeddedOptions::default()).expect("open")
}

/// The child's body: applies round after round, printing each acknowledgement. Does nothing
/// when run as an ordinary test.
#[test]
fn child_applier() {
    let Some(dir) = std::env::var_os(CHILD) else { return };
    let store = open(Path::new(&dir));
    let start: u64 = std::env::var("MARQUEE_TEST_APPLY_FROM").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    for round in start.. {
        let edit = Edit { editor: "crash-test".into(), action: format!("round {round}") };
        runtime.block_on(store.apply(changes(round), edit)).expect("apply");
        println!("acked {round}");
    }
}

async fn search(store: &EmbeddedStore, text: &str) -> Vec<MovieId> {
    let page =
        store.search(&SearchQuery { text: text.into(), first: 100, after: None }).await.expect("search");
    page.items.into_iter().map(|(_, id)| id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_mid_apply_leaves_whole_applies_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    seed(&OPTIONS, EmbeddedBulk::new(dir.path(), 32 << 20).sink("crash").expect("sink"), &mut |_| {})
        .expect("seed");
    let mut next = 0;
    let ids: Vec<MovieId> = (1..=MOVIES).map(MovieId).collect();
    for kill in 0..8u64 {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args(["child_applier", "--exact", "--nocapture", "--test-threads", "1"])
            .env(CHILD, dir.path())
            .env("MARQUEE_TEST_APPLY_FROM", next.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("child");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        // Let it acknowledge a few rounds, then kill it somewhere inside the next ones.
        let wanted = 3 + kill;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut acked = None;
        while acked.is_none_or(|a| a < next + wanted) {
            assert!(Instant::now() < deadline, "the child acknowledged nothing for a minute");
            let Some(line) = lines.next() else { panic!("the child stopped before it was killed") };
            if let Some(round) = line.expect("a line").strip_prefix("acked ") {
                acked = round.trim().parse().ok();
            }
        }
        std::thread::sleep(Duration::from_micros(kill * 4_300));
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        // Acknowledgements printed before the kill and not read yet.
        for line in lines.map_while(Result::ok) {
            if let Some(round) = line.strip_prefix("acked ") {
                acked = round.trim().parse().ok();
            }
        }
        let acked = acked.expect("an acknowledged round");

        let store = open(dir.path());
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
        let audit =
            store.audit_page(marquee_store::UserPage { first: 1, after: None }).await.expect("audit").items;
        assert_eq!(
            audit[0].1.edit.action,
            format!("round {state}"),
            "the last apply's audit record is there"
        );
        // Whatever the open finished is handed over for the caches, once.
        let recovered = store.recovered();
        let movies: Vec<MovieId> = recovered.iter().flat_map(|a| a.movies.clone()).collect();
        assert!(recovered.is_empty() || movies == ids, "{movies:?}");
        assert!(store.recovered().is_empty(), "taken once");
        drop(store);
        next = state + 1;
    }
}
