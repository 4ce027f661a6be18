//! Persisted queries over real HTTP: the Apollo APQ round trip (GET and POST), the partner
//! manifest by id and hot reload, safelist mode, and the in-process response cache that answers
//! hot persisted GETs without touching the store.

use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use marquee_gateway::config::Config;

use crate::helpers::{DataDir, TestApp, first_code, reader_dir, spawn_with};

const GENRES: &str = "query Genres { genres { name movieCount } }";
const MOVIE: &str =
    "query Movie($id: ID!) { movie(id: $id) { id title cast(first: 3) { person { name } } } }";

fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn apq(hash: &str) -> String {
    json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } }).to_string()
}

fn manifest(operations: &[(&str, &str, &str)]) -> String {
    let operations: Vec<Value> = operations
        .iter()
        .map(|(id, kind, body)| json!({ "id": id, "name": id, "type": kind, "body": body }))
        .collect();
    json!({ "format": "apollo-persisted-query-manifest", "version": 1, "operations": operations }).to_string()
}

/// The gateway's configuration over `dir`'s store. (These tests only read the catalog: a
/// manifest's mutation is refused over GET, never run.)
fn config(dir: &DataDir, change: impl FnOnce(&mut Config)) -> Config {
    let mut config = dir.test_config();
    config.rate_limit.enabled = false;
    change(&mut config);
    config
}

async fn get(app: &TestApp, params: &[(&str, &str)]) -> reqwest::Response {
    app.client.get(app.url("/graphql")).query(params).send().await.expect("get")
}

async fn get_json(app: &TestApp, params: &[(&str, &str)]) -> (reqwest::StatusCode, Value) {
    let response = get(app, params).await;
    (response.status(), response.json().await.expect("json"))
}

#[tokio::test]
async fn apq_round_trip_over_get_and_post() {
    let dir = reader_dir();
    let app = spawn_with(config(&dir, |_| {})).await;
    let hash = sha256(GENRES);
    let ext = apq(&hash);

    // What Apollo Client sends first: the hash alone. A miss is never cacheable.
    let miss = get(&app, &[("extensions", &ext)]).await;
    assert_eq!(miss.status(), 200);
    assert_eq!(miss.headers()["cache-control"], "no-store");
    let body: Value = miss.json().await.expect("json");
    assert_eq!(first_code(&body), "PERSISTED_QUERY_NOT_FOUND");
    let strict = app
        .client
        .get(app.url("/graphql"))
        .query(&[("extensions", &ext)])
        .header("accept", "application/graphql-response+json")
        .send()
        .await
        .expect("get");
    assert_eq!(strict.status(), 400, "a request error under the GraphQL response type");

    // The retry with the text registers it; from then on the hash alone runs it.
    let (status, registered) = get_json(&app, &[("query", GENRES), ("extensions", &ext)]).await;
    assert_eq!(status, 200);
    assert!(registered["data"]["genres"].is_array(), "{registered}");
    let (_, by_hash) = get_json(&app, &[("extensions", &ext)]).await;
    assert_eq!(by_hash, registered);

    // The text must hash to the hash sent with it.
    let (_, mismatch) = get_json(&app, &[("query", "{ genres { name } }"), ("extensions", &ext)]).await;
    assert_eq!(first_code(&mismatch), "PERSISTED_QUERY_HASH_MISMATCH");
    let (_, version) = get_json(
        &app,
        &[("extensions", &json!({ "persistedQuery": { "version": 2, "sha256Hash": hash } }).to_string())],
    )
    .await;
    assert_eq!(first_code(&version), "BAD_REQUEST");

    // POST works the same way.
    let post_hash = sha256(MOVIE);
    let post = |with_query: bool| {
        let mut body = json!({
            "variables": { "id": "tt0000001" },
            "extensions": { "persistedQuery": { "version": 1, "sha256Hash": post_hash } },
        });
        if with_query {
            body["query"] = MOVIE.into();
        }
        app.client.post(app.url("/graphql")).json(&body).send()
    };
    let first: Value = post(false).await.expect("post").json().await.expect("json");
    assert_eq!(first_code(&first), "PERSISTED_QUERY_NOT_FOUND");
    let second: Value = post(true).await.expect("post").json().await.expect("json");
    assert_eq!(second["data"]["movie"]["id"], "tt0000001", "{second}");
    let third: Value = post(false).await.expect("post").json().await.expect("json");
    assert_eq!(third, second);
}

#[tokio::test]
async fn manifest_operations_run_by_id_and_reload_when_the_file_changes() {
    let dir = reader_dir();
    let path = dir.path().join("manifest.json");
    let rate = "mutation Rate { rateMovie(movieId: \"tt0000001\", score: 5) { score } }";
    std::fs::write(&path, manifest(&[("genres-v1", "query", GENRES), ("rate-v1", "mutation", rate)]))
        .expect("write");
    let manifest_path = path.clone();
    let app = spawn_with(config(&dir, move |c| {
        c.persisted_queries.manifest_file = Some(manifest_path);
        c.persisted_queries.reload_ms = marquee_gateway::config::Millis(20);
    }))
    .await;

    let (_, by_id) = get_json(&app, &[("id", "genres-v1")]).await;
    assert!(by_id["data"]["genres"].is_array(), "{by_id}");
    let (_, by_document_id) = get_json(&app, &[("documentId", "genres-v1")]).await;
    assert_eq!(by_document_id, by_id);
    let (_, by_extension) = get_json(&app, &[("extensions", &apq(&sha256(GENRES)))]).await;
    assert_eq!(by_extension, by_id, "the APQ hash of a manifest operation's text runs it");
    let (_, unknown) = get_json(&app, &[("id", "nope")]).await;
    assert_eq!(first_code(&unknown), "PERSISTED_QUERY_NOT_FOUND");
    let mutation = get(&app, &[("id", "rate-v1")]).await;
    assert_eq!(mutation.status(), 405, "a manifest mutation still never runs over GET");

    // Publish a new operation: the running gateway picks it up without a restart.
    std::fs::write(&path, manifest(&[("genres-v1", "query", GENRES), ("movie-v1", "query", MOVIE)]))
        .expect("write");
    let variables = json!({ "id": "tt0000002" }).to_string();
    let mut reloaded = Value::Null;
    for _ in 0..200 {
        let (_, body) = get_json(&app, &[("id", "movie-v1"), ("variables", &variables)]).await;
        if body["data"]["movie"]["id"] == "tt0000002" {
            reloaded = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(reloaded.is_object(), "the new manifest was loaded within 5 s");

    // A broken file keeps the last good manifest.
    std::fs::write(&path, "{ not json").expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, still) = get_json(&app, &[("id", "movie-v1"), ("variables", &variables)]).await;
    assert_eq!(still, reloaded);
}

#[tokio::test]
async fn safelist_mode_runs_manifest_operations_only() {
    let dir = reader_dir();
    let path = dir.path().join("manifest.json");
    std::fs::write(&path, manifest(&[("genres-v1", "query", GENRES)])).expect("write");
    let app = spawn_with(config(&dir, |c| {
        c.persisted_queries.manifest_file = Some(path);
        c.persisted_queries.safelist = true;
    }))
    .await;
    let app = &app;
    let post = |body: Value| async move {
        let response = app.client.post(app.url("/graphql")).json(&body).send().await.expect("post");
        response.json::<Value>().await.expect("json")
    };
    let ad_hoc = post(json!({ "query": "{ genres { name } }" })).await;
    assert_eq!(first_code(&ad_hoc), "PERSISTED_QUERY_NOT_IN_LIST");
    assert!(ad_hoc.get("data").is_none(), "nothing executed");
    let register = "{ movie(id: \"tt0000001\") { title } }";
    let apq_attempt = post(json!({ "query": register, "extensions": { "persistedQuery": { "version": 1, "sha256Hash": sha256(register) } } })).await;
    assert_eq!(first_code(&apq_attempt), "PERSISTED_QUERY_NOT_IN_LIST", "no registration in safelist mode");
    let same_text = post(json!({ "query": GENRES })).await;
    assert!(same_text["data"]["genres"].is_array(), "the manifest's own text runs: {same_text}");
    let (_, by_id) = get_json(app, &[("id", "genres-v1")]).await;
    assert!(by_id["data"]["genres"].is_array());
}

#[tokio::test]
async fn hot_persisted_gets_are_answered_from_the_response_cache() {
    let dir = reader_dir();
    let path = dir.path().join("manifest.json");
    std::fs::write(&path, manifest(&[("movie-v1", "query", MOVIE)])).expect("write");
    let app = spawn_with(config(&dir, |c| c.persisted_queries.manifest_file = Some(path))).await;
    let hits = || app.metric("cache_requests_total", &[("cache", "response"), ("result", "hit")]);
    let misses = || app.metric("cache_requests_total", &[("cache", "response"), ("result", "miss")]);

    let vars = json!({ "id": "tt0000005" }).to_string();
    let first = get(&app, &[("id", "movie-v1"), ("variables", &vars)]).await;
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("age").is_none(), "executed, not cached");
    let etag = first.headers()["etag"].clone();
    let body = first.bytes().await.expect("body");
    assert_eq!((hits().await, misses().await), (0.0, 1.0));

    let calls = app.request_store_calls().await;
    let again = get(&app, &[("id", "movie-v1"), ("variables", &vars)]).await;
    assert_eq!(again.status(), 200);
    assert!(again.headers().contains_key("age"));
    assert_eq!(again.headers()["etag"], etag);
    assert!(again.headers()["cache-control"].to_str().expect("ascii").starts_with("public, max-age=3600"));
    assert_eq!(again.bytes().await.expect("body"), body, "the same bytes");
    assert_eq!(app.request_store_calls().await, calls, "a hit touches no store");
    assert_eq!(hits().await, 1.0);

    // The same request by hash and through the query text is the same document.
    let by_text = get(&app, &[("query", MOVIE), ("variables", &vars)]).await.bytes().await.expect("body");
    assert_eq!(by_text, body);
    assert_eq!(hits().await, 2.0);

    // What Apollo Client 4 adds to GET extensions (`clientLibrary`, its version) does not
    // change the response, so it does not split the cache: any client version hits.
    let apq_with = |version: &str| {
        json!({
            "persistedQuery": { "version": 1, "sha256Hash": sha256(MOVIE) },
            "clientLibrary": { "name": "@apollo/client", "version": version },
        })
        .to_string()
    };
    for version in ["4.3.8", "4.4.0"] {
        let response = get(&app, &[("extensions", &apq_with(version)), ("variables", &vars)]).await;
        assert!(response.headers().contains_key("age"), "a hit for client {version}");
        assert_eq!(response.bytes().await.expect("body"), body);
    }
    assert_eq!(hits().await, 4.0);
    let not_modified = app
        .client
        .get(app.url("/graphql"))
        .query(&[("id", "movie-v1"), ("variables", &vars)])
        .header("if-none-match", etag)
        .send()
        .await
        .expect("get");
    assert_eq!(not_modified.status(), 304);

    // `Cache-Control: no-cache` (a forced reload) skips the stored copy and executes.
    let calls = app.request_store_calls().await;
    let entity_hits = || app.metric("cache_requests_total", &[("cache", "movies"), ("result", "hit")]);
    let entity_hits_before = entity_hits().await;
    let reload = app
        .client
        .get(app.url("/graphql"))
        .query(&[("id", "movie-v1"), ("variables", &vars)])
        .header("cache-control", "no-cache")
        .send()
        .await
        .expect("get");
    assert!(reload.headers().get("age").is_none());
    assert!(entity_hits().await > entity_hits_before, "it executed, reading the movie from the entity cache");
    assert_eq!(app.metric("cache_requests_total", &[("cache", "response"), ("result", "bypass")]).await, 1.0);

    // Other variables are another entry.
    let other = json!({ "id": "tt0000006" }).to_string();
    get(&app, &[("id", "movie-v1"), ("variables", &other)]).await;
    assert_eq!(misses().await, 2.0);
    assert!(app.request_store_calls().await > calls);
}

#[tokio::test]
async fn private_and_errored_responses_are_never_cached_and_the_cache_can_be_off() {
    let dir = reader_dir();
    let app = spawn_with(config(&dir, |_| {})).await;
    for _ in 0..2 {
        let bad = get(&app, &[("query", "{ movie(id: \"bad\") { title } }")]).await;
        assert_eq!(bad.headers()["cache-control"], "no-store");
    }
    assert_eq!(app.metric("cache_requests_total", &[("cache", "response"), ("result", "hit")]).await, 0.0);

    let off_dir = reader_dir();
    let off = spawn_with(config(&off_dir, |c| c.response_cache.enabled = false)).await;
    for _ in 0..2 {
        get(&off, &[("query", GENRES)]).await;
    }
    assert_eq!(off.metric("cache_requests_total", &[("cache", "response")]).await, 0.0);
    assert_eq!(off.metric("store_calls_total", &[("op", "genres")]).await, 2.0, "each GET executed");
}

#[tokio::test]
async fn the_introspection_token_lets_tooling_introspect_a_safelisted_gateway() {
    let dir = reader_dir();
    let path = dir.path().join("manifest.json");
    std::fs::write(&path, manifest(&[("genres-v1", "query", GENRES)])).expect("write");
    let token_file = dir.path().join("introspection-token");
    std::fs::write(&token_file, "tooling-0123456789abcdef\n").expect("write");
    let app = spawn_with(config(&dir, |c| {
        c.persisted_queries.manifest_file = Some(path);
        c.persisted_queries.safelist = true;
        c.persisted_queries.introspection_token_file = Some(token_file);
    }))
    .await;
    let introspect = "query IntrospectionQuery { __schema { queryType { name } types { name } } }";
    let post = |token: Option<&'static str>, query: &'static str| {
        let mut request = app.client.post(app.url("/graphql")).json(&json!({ "query": query }));
        if let Some(token) = token {
            request = request.header("marquee-introspection-token", token);
        }
        request.send()
    };
    let allowed: Value =
        post(Some("tooling-0123456789abcdef"), introspect).await.expect("post").json().await.expect("json");
    assert_eq!(allowed["data"]["__schema"]["queryType"]["name"], "Query", "{allowed}");
    let refused: Value = post(None, introspect).await.expect("post").json().await.expect("json");
    assert_eq!(first_code(&refused), "PERSISTED_QUERY_NOT_IN_LIST");
    let catalog: Value = post(Some("tooling-0123456789abcdef"), "{ genres { movieCount } }")
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert_eq!(first_code(&catalog), "PERSISTED_QUERY_NOT_IN_LIST", "the token opens introspection only");
    // Over GET (cacheable by a CDN) the token is not honoured.
    let over_get = app
        .client
        .get(app.url("/graphql"))
        .query(&[("query", introspect)])
        .header("marquee-introspection-token", "tooling-0123456789abcdef")
        .send()
        .await
        .expect("get");
    assert_eq!(first_code(&over_get.json().await.expect("json")), "PERSISTED_QUERY_NOT_IN_LIST");
}
