//! The store conformance suite against the embedded backend, plus what this backend promises
//! beyond it: rating totals exact the moment a write returns. The catalog-read cases run twice:
//! with reads on the calling worker (the default) and on the blocking pool.

use std::sync::Arc;

use marquee_store::bulk::BulkLoad;
use marquee_store::bulk::seed::seed;
use marquee_store::conformance::OPTIONS;
use marquee_store::{MovieId, RatingTotals, Store, UserId};
use marquee_store_embedded::{EmbeddedBulk, EmbeddedOptions, EmbeddedStore};

/// A fresh store over the conformance catalog, opened with `options`.
fn open_with(options: &EmbeddedOptions) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = EmbeddedBulk::new(dir.path(), 64 << 20).sink("conformance").expect("sink");
    seed(&OPTIONS, sink, &mut |_| {}).expect("seed");
    let store = EmbeddedStore::open(dir.path(), options).expect("open");
    (dir, Store::new(Arc::new(store)))
}

async fn embedded() -> (tempfile::TempDir, Store) {
    open_with(&EmbeddedOptions::default())
}

marquee_store::conformance_cases!(embedded);

/// Live catalog writes: an apply moves every derived row, in one unit.
mod catalog_writes {
    use super::*;

    marquee_store::conformance_cases!(catalog_writes: embedded);
}

/// The catalog reads again with `inline_reads` off: the same answers from the blocking pool.
mod on_the_blocking_pool {
    use super::*;

    async fn pooled() -> (tempfile::TempDir, Store) {
        open_with(&EmbeddedOptions { inline_reads: false, ..EmbeddedOptions::default() })
    }

    marquee_store::conformance_cases!(catalog_reads: pooled);
}

#[tokio::test]
async fn totals_are_exact_when_the_write_returns() {
    let (_guard, store) = embedded().await;
    assert!(store.users.totals_lag().is_zero());
    let user = UserId::new("dave").expect("user");
    for score in [3, 9, 4] {
        store.users.rate(&user, MovieId(11), score).await.expect("rate");
        let totals = store.users.rating_totals(&[MovieId(11)]).await.expect("totals");
        assert_eq!(totals, [RatingTotals { sum: u64::from(score), count: 1 }]);
    }
}

#[tokio::test]
async fn an_unfinished_load_leaves_the_catalog_and_no_files_behind() {
    let (dir, _store) = embedded().await;
    let before = ls(dir.path());
    let bulk = EmbeddedBulk::new(dir.path(), 16 << 20);
    let mut sink = bulk.sink("conformance").expect("sink");
    let record = marquee_store::bulk::seed::Generator::new(&OPTIONS).movie(0);
    sink.put_movie(&record).expect("put");
    drop(sink); // a load that failed half-way
    assert_eq!(ls(dir.path()), before, "the link, one generation and the user data, as before");
    assert!(before.iter().any(|f| f == "users.redb") && before.iter().any(|f| f.starts_with("catalog-")));
    drop(_store);
    let reopened = EmbeddedStore::open(dir.path(), &EmbeddedOptions::default()).expect("open");
    let stats = marquee_store::CatalogReads::stats(&reopened).await.expect("stats");
    assert_eq!(stats.movies, OPTIONS.movies, "the published catalog is untouched");
}

fn ls(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_change_to_a_generation_a_newer_load_replaced_is_refused() {
    let (dir, store) = embedded().await;
    let sink = EmbeddedBulk::new(dir.path(), 16 << 20).sink("newer").expect("sink");
    seed(
        &marquee_store::bulk::seed::SeedOptions { movies: 10, people: Some(10), seed: 1 },
        sink,
        &mut |_| {},
    )
    .expect("a newer load");
    let edit = marquee_store::Edit { editor: "eddie".into(), action: "removeMovie".into() };
    let changes = marquee_store::CatalogChanges { removed_movies: vec![MovieId(1)], ..Default::default() };
    let err = store.edits.apply(changes, edit).await.expect_err("its changes would be lost");
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("newer catalog generation"), "{err}");
}

#[tokio::test]
async fn a_serving_store_switches_to_a_newly_published_generation() {
    let dir = tempfile::tempdir().expect("tempdir");
    seed(&OPTIONS, EmbeddedBulk::new(dir.path(), 64 << 20).sink("first").expect("sink"), &mut |_| {})
        .expect("seed");
    let store = Arc::new(EmbeddedStore::open(dir.path(), &EmbeddedOptions::default()).expect("open"));
    let faces = Store::new(store.clone());
    let mut changes = faces.lifecycle.catalog_changes().expect("the embedded store says when it switches");
    let first_id = faces.lifecycle.catalog_id();
    let user = UserId::new("dave").expect("user");
    faces.users.rate(&user, MovieId(3), 9).await.expect("rate");
    assert!(!store.switch_if_published().expect("nothing new"), "nothing to switch to");

    let other = marquee_store::bulk::seed::SeedOptions { movies: 50, people: Some(40), seed: 77 };
    seed(&other, EmbeddedBulk::new(dir.path(), 16 << 20).sink("second").expect("sink"), &mut |_| {})
        .expect("a load beside the serving store");
    // Until it switches, the store serves the generation it opened, whole.
    let first = marquee_store::bulk::seed::Generator::new(&OPTIONS).movie(2).movie;
    assert_eq!(faces.catalog.movies(&[MovieId(3)]).await.expect("movies")[0].as_ref(), Some(&first));
    assert!(store.switch_if_published().expect("switch"), "a new generation was published");
    let second = marquee_store::bulk::seed::Generator::new(&other).movie(2).movie;
    assert_eq!(faces.catalog.movies(&[MovieId(3)]).await.expect("movies")[0].as_ref(), Some(&second));
    assert_eq!(faces.catalog.stats().await.expect("stats").movies, 50);
    assert!(changes.has_changed().expect("open"), "the caches are told");
    assert_ne!(*changes.borrow_and_update(), first_id);
    assert_eq!(faces.lifecycle.catalog_id(), *changes.borrow());
    let mine = faces.users.user_ratings(&user, &[MovieId(3)]).await.expect("ratings");
    assert_eq!(mine[0].map(|r| r.score), Some(9), "users' data outlives the catalog");
    let edit = marquee_store::Edit { editor: "eddie".into(), action: "removeMovie".into() };
    let removal = marquee_store::CatalogChanges { removed_movies: vec![MovieId(3)], ..Default::default() };
    let applied = faces.edits.apply(removal, edit).await.expect("changes go to the new generation");
    assert_eq!(applied.removed_movies, [MovieId(3)]);
}
