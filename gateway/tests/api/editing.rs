//! Editors correct the catalog over real HTTP: `updateMovie`, `updatePerson` and
//! `removeMovie` need an editor token (`FORBIDDEN` for other users, `UNAUTHENTICATED` without
//! a token), are validated as strictly as an import row, and drop every copy they made stale:
//! the entity cache, the response cache, and the region's CDN edge by surrogate key.

use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use serde_json::{Value, json};

use marquee_gateway::auth::Authenticator;
use marquee_gateway::config::Config;
use marquee_store::text;

use crate::helpers::{first_code, generator, seeded_dir, spawn_with};
use crate::users::{run as post, token, user_config};

async fn editor_token(config: &Config, user: &str) -> String {
    let auth = Authenticator::new(&config.auth).await.expect("auth");
    auth.issue_dev_editor(user, std::time::Duration::from_secs(600)).expect("token").token
}

const UPDATE_MOVIE: &str = "mutation($id: ID!, $input: MovieInput!) { \
    updateMovie(id: $id, input: $input) { id title year genres } }";
const UPDATE_PERSON: &str =
    "mutation($id: ID!, $input: PersonInput!) { updatePerson(id: $id, input: $input) { id name birthYear } }";
const REMOVE: &str = "mutation($id: ID!) { removeMovie(id: $id) }";

/// A stand-in CDN edge on a real socket: records the `xkey-purge` of every PURGE it gets.
async fn edge() -> (String, Arc<Mutex<Vec<String>>>) {
    let purges = Arc::new(Mutex::new(Vec::new()));
    let seen = purges.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap| {
        let seen = seen.clone();
        async move {
            if let Some(keys) = headers.get("xkey-purge").and_then(|v| v.to_str().ok()) {
                seen.lock().expect("lock").push(keys.to_owned());
            }
            "purged"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, purges)
}

#[tokio::test]
async fn an_editors_correction_reaches_every_cache_and_the_edge() {
    let dir = seeded_dir();
    let mut config = user_config(dir.path());
    let (edge_url, purges) = edge().await;
    config.cdn.purge_urls = vec![edge_url];
    let editor = editor_token(&config, "eddie").await;
    let app = spawn_with(config).await;
    let old = generator().movie(45).movie;
    let words = text::words(&old.title);
    let longest = words.iter().max_by_key(|w| w.len()).expect("a word").clone();

    // Warm every tier: a cached public GET and the entity cache behind it.
    let query = format!(
        r#"{{ movie(id: "tt0000046") {{ title }} search(query: "{longest}", first: 100) {{ edges {{ node {{ id }} }} }} }}"#
    );
    let get = || app.client.get(app.url("/graphql")).query(&[("query", query.as_str())]).send();
    let first = get().await.expect("get");
    let keys = first.headers()["xkey"].to_str().expect("text").to_owned();
    assert!(keys.split(' ').any(|k| k == "tt0000046"), "{keys}");
    assert!(keys.split(' ').any(|k| k.starts_with("search:")), "the search partition is a key: {keys}");
    let body: Value = first.json().await.expect("json");
    assert_eq!(body["data"]["movie"]["title"], old.title.as_str());
    let hits = async || app.metric("cache_requests_total", &[("cache", "response"), ("result", "hit")]).await;
    let before = hits().await;
    get().await.expect("get");
    assert_eq!(hits().await, before + 1.0, "answered from the response cache");

    let input =
        json!({ "title": "Zyzzyva Quartermaine", "genres": ["Western"], "year": 1960, "releaseDate": null });
    let updated = post(&app, Some(&editor), UPDATE_MOVIE, json!({ "id": "tt0000046", "input": input })).await;
    assert!(updated.get("errors").is_none(), "{updated}");
    assert_eq!(
        updated["data"]["updateMovie"],
        json!({ "id": "tt0000046", "title": "Zyzzyva Quartermaine", "year": 1960, "genres": ["Western"] })
    );

    // Every read path shows the correction at once on this gateway.
    let body: Value = get().await.expect("get").json().await.expect("json");
    assert_eq!(body["data"]["movie"]["title"], "Zyzzyva Quartermaine", "not the cached answer: {body}");
    let posted = post(&app, None, r#"{ movie(id: "tt0000046") { title } }"#, json!({})).await;
    assert_eq!(posted["data"]["movie"]["title"], "Zyzzyva Quartermaine", "not the entity cache's copy");
    let found =
        post(&app, None, r#"{ search(query: "zyzzyva") { edges { node { id } } } }"#, json!({})).await;
    assert_eq!(found["data"]["search"]["edges"], json!([{ "node": { "id": "tt0000046" } }]));
    let western = post(
        &app,
        None,
        r#"{ browse(genre: "Western", yearFrom: 1960, yearTo: 1960, first: 100) { edges { node { id } } } }"#,
        json!({}),
    )
    .await;
    assert!(
        western["data"]["browse"]["edges"]
            .as_array()
            .expect("edges")
            .contains(&json!({ "node": { "id": "tt0000046" } }))
    );

    // The edge was told, naming the movie and the lists the change moved.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let purged = loop {
        let seen = purges.lock().expect("lock").join(" ");
        if seen.contains("tt0000046") || std::time::Instant::now() > deadline {
            break seen;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let purged: Vec<&str> = purged.split(' ').collect();
    for key in ["tt0000046", "search:zy", "browse:western", "browse:any", "genres", "ratings"] {
        assert!(purged.contains(&key), "the purge names {key}: {purged:?}");
    }
    assert!(
        purged.iter().any(|k| k.starts_with("nm")),
        "the movie's people's filmographies moved: {purged:?}"
    );
}

#[tokio::test]
async fn only_editors_may_correct_and_bad_corrections_write_nothing() {
    let dir = seeded_dir();
    let config = user_config(dir.path());
    let (editor, alice) = (editor_token(&config, "eddie").await, token(&config, "alice").await);
    let app = spawn_with(config).await;
    let title = generator().movie(4).movie.title;
    let vars = json!({ "id": "tt0000005", "input": { "title": "Hijacked" } });
    for (who, code) in [(None, "UNAUTHENTICATED"), (Some(alice.as_str()), "FORBIDDEN")] {
        for (mutation, vars) in [
            (UPDATE_MOVIE, vars.clone()),
            (UPDATE_PERSON, json!({ "id": "nm0000001", "input": { "name": "Hijacked" } })),
            (REMOVE, json!({ "id": "tt0000005" })),
        ] {
            let body = post(&app, who, mutation, vars).await;
            assert_eq!(first_code(&body), code, "{body}");
            assert!(body["data"].is_null(), "{body}");
        }
    }
    let cases = [
        (json!({ "year": 1700 }), "BAD_USER_INPUT"),
        (json!({ "year": 70000 }), "BAD_USER_INPUT"),
        (json!({ "title": " " }), "BAD_USER_INPUT"),
        (json!({ "genres": ["Nope"] }), "BAD_USER_INPUT"),
        (json!({ "genres": ["Drama", "Drama"] }), "BAD_USER_INPUT"),
        (json!({ "releaseDate": "2001-02-30" }), "BAD_USER_INPUT"),
        (json!({ "originalLanguage": "english" }), "BAD_USER_INPUT"),
        (
            json!({ "credits": [{ "personId": "nm0999999", "department": "ACTING", "role": "Ghost" }] }),
            "BAD_USER_INPUT",
        ),
        (
            json!({ "credits": [{ "personId": "tt0000001", "department": "ACTING", "role": "Ghost" }] }),
            "BAD_USER_INPUT",
        ),
    ];
    for (input, code) in cases {
        let body =
            post(&app, Some(&editor), UPDATE_MOVIE, json!({ "id": "tt0000005", "input": input })).await;
        assert_eq!(first_code(&body), code, "{input}: {body}");
    }
    let unknown = post(&app, Some(&editor), UPDATE_MOVIE, json!({ "id": "tt0999999", "input": {} })).await;
    assert_eq!(first_code(&unknown), "NOT_FOUND", "{unknown}");
    let person = post(
        &app,
        Some(&editor),
        UPDATE_PERSON,
        json!({ "id": "nm0000001", "input": { "birthYear": 2000, "deathYear": 1990 } }),
    )
    .await;
    assert_eq!(first_code(&person), "BAD_USER_INPUT", "{person}");
    let after = post(&app, None, r#"{ movie(id: "tt0000005") { title } }"#, json!({})).await;
    assert_eq!(after["data"]["movie"]["title"], title.as_str(), "nothing was written");
    // Over GET, no mutation runs at all.
    let over_get = app
        .client
        .get(app.url("/graphql"))
        .query(&[("query", r#"mutation { removeMovie(id: "tt0000005") }"#)])
        .bearer_auth(&editor)
        .send()
        .await
        .expect("get");
    assert_eq!(over_get.status(), 405);
}

#[tokio::test]
async fn a_removed_movie_leaves_the_catalog_and_watchlists_show_it_as_null() {
    let dir = seeded_dir();
    let config = user_config(dir.path());
    let (editor, alice) = (editor_token(&config, "eddie").await, token(&config, "alice").await);
    let app = spawn_with(config).await;
    let old = generator().movie(9).movie;
    let watch = "mutation { addToWatchlist(movieId: \"tt0000010\") { movieId } }";
    assert!(post(&app, Some(&alice), watch, json!({})).await.get("errors").is_none());
    let search = format!(
        r#"{{ search(query: "{}", first: 100) {{ edges {{ node {{ id }} }} }} }}"#,
        text::words(&old.title).join(" ")
    );
    let listed = post(&app, None, &search, json!({})).await;
    assert!(listed.to_string().contains("tt0000010"), "{listed}");

    let removed = post(&app, Some(&editor), REMOVE, json!({ "id": "tt0000010" })).await;
    assert_eq!(removed["data"]["removeMovie"], true, "{removed}");
    let again = post(&app, Some(&editor), REMOVE, json!({ "id": "tt0000010" })).await;
    assert_eq!(again["data"]["removeMovie"], false, "already gone: {again}");

    let movie = post(
        &app,
        None,
        r#"{ movie(id: "tt0000010") { title } movies(ids: ["tt0000010", "tt0000011"]) { id } }"#,
        json!({}),
    )
    .await;
    assert_eq!(movie["data"], json!({ "movie": null, "movies": [null, { "id": "tt0000011" }] }), "{movie}");
    let listed = post(&app, None, &search, json!({})).await;
    assert!(!listed.to_string().contains("tt0000010"), "gone from search: {listed}");
    let me = post(
        &app,
        Some(&alice),
        "{ me { watchlist(first: 10) { edges { node { movieId movie { title } } } } } }",
        json!({}),
    )
    .await;
    assert!(me.get("errors").is_none(), "the list still answers: {me}");
    assert_eq!(
        me["data"]["me"]["watchlist"]["edges"],
        json!([{ "node": { "movieId": "tt0000010", "movie": null } }])
    );
    let rate = post(
        &app,
        Some(&alice),
        "mutation { rateMovie(movieId: \"tt0000010\", score: 5) { score } }",
        json!({}),
    )
    .await;
    assert_eq!(first_code(&rate), "NOT_FOUND", "{rate}");
}

#[tokio::test]
async fn a_renamed_person_shows_in_every_cast_at_once() {
    let dir = seeded_dir();
    let config = user_config(dir.path());
    let editor = editor_token(&config, "eddie").await;
    let app = spawn_with(config).await;
    let record = generator().movie(0);
    let person = record.credits[0].person;
    let cast = r#"{ movie(id: "tt0000001") { cast(first: 1) { person { id name } } } }"#;
    let before = post(&app, None, cast, json!({})).await;
    assert_eq!(before["data"]["movie"]["cast"][0]["person"]["id"], person.to_string().as_str());
    let renamed = post(
        &app,
        Some(&editor),
        UPDATE_PERSON,
        json!({ "id": person.to_string(), "input": { "name": "Renamed Person", "birthYear": 1901 } }),
    )
    .await;
    assert_eq!(renamed["data"]["updatePerson"]["name"], "Renamed Person", "{renamed}");
    let after = post(&app, None, cast, json!({})).await;
    assert_eq!(after["data"]["movie"]["cast"][0]["person"]["name"], "Renamed Person");
}
