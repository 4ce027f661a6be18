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
    assert_eq!(report.stats.movies, 6);
    assert_eq!(report.stats.people, 12);
    let file = |name: &str| {
        report.files.iter().find(|f| f.file == name).unwrap_or_else(|| panic!("{name} reported"))
    };

    let ratings = file("title.ratings.tsv");
    assert_eq!((ratings.rows, ratings.imported, ratings.bad), (7, 6, 1));
    assert_eq!(ratings.bad_rows[0].line, 7);
    assert!(ratings.bad_rows[0].reason.contains("averageRating"));

    let basics = file("title.basics.tsv");
    assert_eq!((basics.rows, basics.imported, basics.ignored, basics.bad), (11, 6, 1, 4));
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
    assert_eq!(jobs, ["Director", "Screenplay by"], "one casing for every job");

    // A title nobody has rated has no average, not a score of 0.
    let data = app.data(r#"{ movie(id: "tt2000000") { title rating { average count } } }"#, json!({})).await;
    assert_eq!(
        data["movie"],
        json!({ "title": "Nobody Rated Yet", "rating": { "average": null, "count": 0 } })
    );
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

fn delta_fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/imdb-delta")
}

/// `gateway import imdb --incremental` while a gateway serves the data directory: the delta
/// goes through the directory's spool, every cache drops what changed, and a second run
/// changes nothing.
#[tokio::test]
async fn a_delta_applies_while_serving_and_a_rerun_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    import(&fixtures(), dir.path()).expect("full import");
    let app = spawn_with(test_config(dir.path())).await;
    let shawshank = r#"{ movie(id: "tt0111161") { runtimeMinutes genres rating { average count }
        cast { character person { name } } crew { job person { name } } } }"#;
    let get = || app.client.get(app.url("/graphql")).query(&[("query", shawshank)]).send();
    let before: Value = get().await.expect("get").json().await.expect("json");
    assert_eq!(before["data"]["movie"]["runtimeMinutes"], 142);

    let report =
        marquee_gateway::delta::hand_over(&delta_fixtures(), dir.path(), std::time::Duration::from_secs(60))
            .await
            .expect("the serving gateway applies the delta");
    for line in [
        "2 titles changed, 1 people changed, 2 titles removed, 1 people removed",
        "1 people ignored",
        "removal of ids the catalog does not have: tt0000404",
        "line 5: primaryTitle is missing",
        "line 4: tt5555555 has no row in the delta's title.basics",
        "line 5: `xx1` is neither a title id nor a name id",
    ] {
        assert!(report.contains(line), "{line:?} in {report}");
    }

    // The cached GET is not served stale: the changed title, with its new credits.
    let after: Value = get().await.expect("get").json().await.expect("json");
    assert_eq!(
        after["data"]["movie"],
        json!({
            "runtimeMinutes": 144, "genres": ["Drama", "Crime"], "rating": { "average": 9.2, "count": 3_100_000 },
            "cast": [
                { "character": "Andy Dufresne", "person": { "name": "Tim Robbins" } },
                { "character": "Ellis Boyd \"Red\" Redding", "person": { "name": "Morgan Freeman" } }
            ],
            "crew": [{ "job": "Director", "person": { "name": "Quill Nova" } }]
        })
    );
    let rest = app
        .data(
            r#"{ removed: movie(id: "tt0108052") { title } reclassified: movie(id: "tt0211915") { title }
                 gone: person(id: "nm0000229") { name } new: person(id: "nm9999991") { name }
                 search(query: "zyzzyva") { edges { node { id title year } } } }"#,
            json!({}),
        )
        .await;
    assert_eq!(
        rest,
        json!({
            "removed": null, "reclassified": null, "gone": null, "new": { "name": "Quill Nova" },
            "search": { "edges": [{ "node": { "id": "tt9999991", "title": "Zyzzyva Nights", "year": 2024 } }] }
        })
    );

    let again =
        marquee_gateway::delta::hand_over(&delta_fixtures(), dir.path(), std::time::Duration::from_secs(60))
            .await
            .expect("a second run");
    assert!(
        again.contains("0 titles changed, 0 people changed, 0 titles removed, 0 people removed, 4 unchanged"),
        "{again}"
    );
    let spool: Vec<String> = std::fs::read_dir(dir.path().join(marquee_gateway::delta::SPOOL_DIR))
        .expect("spool")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(spool.len(), 2, "{spool:?}");
    assert!(spool.iter().all(|name| name.ends_with(".done")), "{spool:?}");
}

/// With no gateway serving the directory, the command applies the delta itself.
#[tokio::test]
async fn a_delta_applies_to_a_directory_no_gateway_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    import(&fixtures(), dir.path()).expect("full import");
    let backend = store::open(&store_config(dir.path())).await.expect("open");
    let edit = marquee_store::Edit { editor: "ops".into(), action: "import imdb --incremental".into() };
    let mut units = Vec::new();
    let report = marquee_gateway::delta::apply(
        &delta_fixtures(),
        backend.edits.as_ref(),
        edit,
        marquee_gateway::delta::Share::ALL,
        &mut |done, all| {
            units.push((done, all));
        },
    )
    .await
    .expect("applied");
    assert_eq!((report.movies, report.people, report.removed_movies, report.removed_people), (2, 1, 2, 1));
    assert_eq!(units, [(0, 3), (1, 3), (2, 3), (3, 3)]);
    let audit = backend
        .edits
        .audit_page(marquee_store::UserPage { first: 10, after: None })
        .await
        .expect("audit")
        .items;
    assert_eq!(audit.len(), 3, "one record per unit");
    assert!(audit.iter().all(|(_, r)| r.edit.editor == "ops"));
    backend.lifecycle.close().await.expect("close");
}

/// Handing a delta over: one that does not read is refused at once, and one no gateway takes
/// within the wait is withdrawn, applied nowhere.
#[tokio::test]
async fn a_delta_nobody_takes_is_withdrawn_and_one_that_does_not_read_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = tempfile::tempdir().expect("empty");
    let refused =
        marquee_gateway::delta::hand_over(empty.path(), dir.path(), std::time::Duration::from_secs(1))
            .await
            .expect_err("no delta files");
    assert!(refused.to_string().contains("holds no delta"), "{refused}");
    let spool = dir.path().join(marquee_gateway::delta::SPOOL_DIR);
    std::fs::create_dir(&spool).expect("a spool no gateway follows");
    let waited = marquee_gateway::delta::hand_over(
        &delta_fixtures(),
        dir.path(),
        std::time::Duration::from_millis(300),
    )
    .await
    .expect_err("nobody applies it");
    assert!(waited.to_string().contains("withdrawn"), "{waited}");
    let names: Vec<String> = std::fs::read_dir(&spool)
        .expect("spool")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].ends_with(".withdrawn"), "{names:?}");
}
