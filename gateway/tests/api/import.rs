//! `gateway import imdb` against hand-written fixtures in IMDb's format (one of them
//! gzipped), including bad rows, then served and queried.

use std::path::PathBuf;

use std::path::Path;

use marquee_gateway::{progress, store};
use marquee_store::StoreError;
use marquee_store::bulk::imdb::ImportReport;
use serde_json::{Value, json};

use crate::helpers::{CATALOG, seeded_dir, spawn_with, store_config, test_config};

/// `gateway import imdb --dir dir` into the store over `data_dir`.
fn import(dir: &Path, data_dir: &Path) -> Result<ImportReport, StoreError> {
    progress::import_imdb(store::bulk(&store_config(data_dir)).as_ref(), dir)
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/imdb")
}

#[tokio::test]
async fn imports_fixtures_and_reports_bad_rows_by_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = import(&fixtures(), dir.path()).expect("import succeeds despite bad rows");
    assert_eq!(report.stats.movies, 5);
    assert_eq!(report.stats.people, 12);
    let file = |name: &str| {
        report.files.iter().find(|f| f.file == name).unwrap_or_else(|| panic!("{name} reported"))
    };

    let ratings = file("title.ratings.tsv");
    assert_eq!((ratings.rows, ratings.imported, ratings.bad), (7, 6, 1));
    assert_eq!(ratings.bad_rows[0].line, 7);
    assert!(ratings.bad_rows[0].reason.contains("averageRating"));

    let basics = file("title.basics.tsv");
    assert_eq!((basics.rows, basics.imported, basics.ignored, basics.bad), (10, 5, 1, 4));
    let lines: Vec<u64> = basics.bad_rows.iter().map(|b| b.line).collect();
    assert_eq!(lines, [7, 8, 9, 11]);
    assert!(basics.bad_rows[0].reason.contains("expected 9 tab-separated fields"));
    assert!(basics.bad_rows[1].reason.contains("startYear"));
    assert!(basics.bad_rows[2].reason.contains("unknown genre `Polka`"));
    assert!(basics.bad_rows[3].reason.contains("out of order or repeated"));

    let principals = file("title.principals.tsv.gz");
    assert_eq!((principals.rows, principals.imported, principals.ignored, principals.bad), (16, 14, 1, 1));
    assert_eq!(principals.bad_rows[0].line, 11);

    let names = file("name.basics.tsv");
    assert_eq!((names.rows, names.imported, names.ignored, names.bad), (16, 12, 1, 3));
    assert_eq!(names.bad_rows.iter().map(|b| b.line).collect::<Vec<_>>(), [11, 15, 17]);
    assert_eq!(names.bad_rows[2].reason, "not valid UTF-8");
    assert_eq!(report.bad_rows(), 9);
    let printed = report.to_string();
    assert!(printed.contains("line 9: unknown genre `Polka`"), "{printed}");

    let app = spawn_with(test_config(dir.path())).await;
    let data = app
        .data(
            r#"{ movie(id: "tt0111161") { title year runtimeMinutes genres rating { average count }
                 cast { character billingOrder person { name birthYear } } crew { job person { name } } } }"#,
            json!({}),
        )
        .await;
    assert_eq!(
        data["movie"],
        json!({
            "title": "The Shawshank Redemption", "year": 1994, "runtimeMinutes": 142, "genres": ["Drama"],
            "rating": { "average": 9.3, "count": 3_000_000 },
            "cast": [
                { "character": "Andy Dufresne", "billingOrder": 1, "person": { "name": "Tim Robbins", "birthYear": 1958 } },
                { "character": "Ellis Boyd \"Red\" Redding", "billingOrder": 2, "person": { "name": "Morgan Freeman", "birthYear": 1937 } }
            ],
            "crew": [{ "job": "Director", "person": { "name": "Frank Darabont" } }]
        })
    );
    let data = app
        .data(r#"{ search(query: "amelie") { edges { node { title originalTitle } } } }"#, json!({}))
        .await;
    assert_eq!(
        data["search"]["edges"][0]["node"],
        json!({ "title": "Amélie", "originalTitle": "Le Fabuleux Destin d'Amélie Poulain" })
    );
    let data =
        app.data(r#"{ browse(sort: RATING, first: 2) { edges { node { title } } } }"#, json!({})).await;
    assert_eq!(data["browse"]["edges"][0]["node"]["title"], "The Shawshank Redemption");
    let data =
        app.data(r#"{ movie(id: "tt1375666") { cast { character person { name } } } }"#, json!({})).await;
    assert_eq!(data["movie"]["cast"][1], json!({ "character": "Ghost", "person": Value::Null }));
    let data = app.data(r#"{ person(id: "nm0000338") { knownForDepartment filmography { edges { node { movie { title } job } } } } }"#, json!({})).await;
    assert_eq!(data["person"]["knownForDepartment"], "PRODUCTION");
    let jobs: Vec<&str> = data["person"]["filmography"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"]["job"].as_str().expect("job"))
        .collect();
    assert_eq!(jobs, ["Director", "screenplay by"]);
}

#[tokio::test]
async fn a_failed_import_leaves_the_catalog_untouched() {
    let data_dir = seeded_dir();
    let broken = tempfile::tempdir().expect("tempdir");
    for name in ["title.basics.tsv", "title.ratings.tsv"] {
        std::fs::copy(fixtures().join(name), broken.path().join(name)).expect("copy");
    }
    let err = import(broken.path(), data_dir.path()).expect_err("name.basics is missing");
    assert!(err.to_string().contains("name.basics"), "{err}");

    std::fs::write(broken.path().join("name.basics.tsv"), "id\tname\n").expect("write");
    let err = import(broken.path(), data_dir.path()).expect_err("bad header");
    assert!(err.to_string().contains("header"), "{err}");

    let store = store::open(&store_config(data_dir.path())).await.expect("open");
    assert_eq!(
        store.catalog.stats().await.expect("stats").movies,
        CATALOG.movies,
        "the seeded catalog is still there"
    );
    // (That a failed load leaves no files behind is the backend's own test.)
}
