//! Signed-in users over real HTTP: ratings and watchlists through the mutations, `me` and
//! `Movie.myRating`; anonymous callers refused with a clear code; invalid writes write nothing;
//! caller-specific responses are never cacheable; mutations never run over GET; acknowledged
//! writes survive a restart.

use serde_json::{Value, json};

use marquee_gateway::auth::{Authenticator, generate_pem};
use marquee_gateway::config::Config;

use crate::helpers::{TestApp, first_code, seeded_dir, spawn_with, test_config};

/// A config whose signing key (and development tokens) let the test mint user tokens.
pub(crate) fn user_config(dir: &std::path::Path) -> Config {
    let key = dir.join("signing.pem");
    if !key.exists() {
        std::fs::write(&key, generate_pem().expect("key")).expect("write key");
    }
    let mut config = test_config(dir);
    config.auth.signing_key_files = vec![key];
    config.auth.signing_keys = None;
    config.auth.dev_tokens = true;
    config.rate_limit.enabled = false;
    config
}

pub(crate) async fn token(config: &Config, user: &str) -> String {
    let auth = Authenticator::new(&config.auth).await.expect("auth");
    auth.issue_dev_user(user, std::time::Duration::from_secs(600)).expect("token").token
}

/// POSTs `query` (as `token`'s holder) and returns the body, asserting a 200.
pub(crate) async fn run(app: &TestApp, token: Option<&str>, query: &str, variables: Value) -> Value {
    let mut request =
        app.client.post(app.url("/graphql")).json(&json!({ "query": query, "variables": variables }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("post");
    assert_eq!(response.status(), 200, "{query}");
    response.json().await.expect("json")
}

const RATE: &str =
    "mutation($m: ID!, $s: Int!) { rateMovie(movieId: $m, score: $s) { movieId score ratedAt } }";
const SUMMARY: &str = r#"query($m: ID!) { movie(id: $m) { rating { count } myRating { score } } }"#;
const ME: &str = "{ me { id ratings(first: 10) { edges { node { score movie { id } } } } \
                   watchlist(first: 10) { edges { node { movieId } } } } }";

#[tokio::test]
async fn anonymous_callers_get_public_data_and_a_clear_code_for_user_fields() {
    let dir = seeded_dir();
    let app = spawn_with(user_config(dir.path())).await;
    let guest: Value =
        app.client.post(app.url("/auth/anonymous")).send().await.expect("post").json().await.expect("json");
    let guest = guest["token"].as_str().expect("token").to_owned();
    for token in [None, Some(guest.as_str())] {
        let me = run(&app, token, ME, json!({})).await;
        assert_eq!(first_code(&me), "UNAUTHENTICATED", "{me}");
        assert!(me["data"]["me"].is_null());
        let rated = run(&app, token, RATE, json!({ "m": "tt0000001", "s": 7 })).await;
        assert_eq!(first_code(&rated), "UNAUTHENTICATED", "{rated}");
        let movie = run(&app, token, SUMMARY, json!({ "m": "tt0000001" })).await;
        assert_eq!(first_code(&movie), "UNAUTHENTICATED", "{movie}");
        assert!(
            movie["data"]["movie"]["rating"]["count"].is_number(),
            "public fields still resolve: {movie}"
        );
        assert!(movie["data"]["movie"]["myRating"].is_null());
    }
}

#[tokio::test]
async fn ratings_replace_never_double_count_and_survive_a_restart() {
    let dir = seeded_dir();
    let config = user_config(dir.path());
    let alice = token(&config, "alice").await;
    let bob = token(&config, "bob").await;
    let app = spawn_with(config.clone()).await;
    let before = run(&app, None, r#"{ movie(id: "tt0000002") { rating { count } } }"#, json!({})).await;
    let base = before["data"]["movie"]["rating"]["count"].as_i64().expect("count");

    let first = run(&app, Some(&alice), RATE, json!({ "m": "tt0000002", "s": 9 })).await;
    assert_eq!(first["data"]["rateMovie"]["score"], 9, "{first}");
    assert_eq!(first["data"]["rateMovie"]["movieId"], "tt0000002");
    assert!(first["data"]["rateMovie"]["ratedAt"].as_str().expect("time").ends_with('Z'));
    run(&app, Some(&alice), RATE, json!({ "m": "tt0000002", "s": 4 })).await;
    run(&app, Some(&bob), RATE, json!({ "m": "tt0000002", "s": 8 })).await;

    let seen = run(&app, Some(&alice), SUMMARY, json!({ "m": "tt0000002" })).await;
    assert!(seen.get("errors").is_none(), "{seen}");
    assert_eq!(seen["data"]["movie"]["rating"]["count"].as_i64(), Some(base + 2), "alice counted once");
    assert_eq!(seen["data"]["movie"]["myRating"]["score"], 4, "her latest score");
    let bobs = run(&app, Some(&bob), SUMMARY, json!({ "m": "tt0000002" })).await;
    assert_eq!(bobs["data"]["movie"]["myRating"]["score"], 8, "myRating is the caller's own");

    let add = "mutation($m: ID!) { addToWatchlist(movieId: $m) { movieId addedAt movie { title } } }";
    let added = run(&app, Some(&alice), add, json!({ "m": "tt0000003" })).await;
    assert!(added["data"]["addToWatchlist"]["movie"]["title"].is_string(), "{added}");
    run(&app, Some(&alice), add, json!({ "m": "tt0000004" })).await;
    let remove = "mutation($m: ID!) { removeFromWatchlist(movieId: $m) }";
    assert_eq!(
        run(&app, Some(&alice), remove, json!({ "m": "tt0000003" })).await["data"]["removeFromWatchlist"],
        true
    );
    assert_eq!(
        run(&app, Some(&alice), remove, json!({ "m": "tt0000003" })).await["data"]["removeFromWatchlist"],
        false
    );

    // Stop and start again on the same directory: every acknowledged write is there.
    app.stop().await.expect("stops");
    let app = spawn_with(config).await;
    let me = run(&app, Some(&alice), ME, json!({})).await;
    assert!(me.get("errors").is_none(), "{me}");
    assert_eq!(me["data"]["me"]["id"], "alice");
    let ratings = me["data"]["me"]["ratings"]["edges"].as_array().expect("edges");
    assert_eq!(ratings.len(), 1);
    assert_eq!(ratings[0]["node"]["score"], 4);
    assert_eq!(ratings[0]["node"]["movie"]["id"], "tt0000002");
    assert_eq!(me["data"]["me"]["watchlist"]["edges"], json!([{ "node": { "movieId": "tt0000004" } }]));

    let delete = "mutation { deleteRating(movieId: \"tt0000002\") }";
    assert_eq!(run(&app, Some(&alice), delete, json!({})).await["data"]["deleteRating"], true);
    let after = run(&app, Some(&alice), SUMMARY, json!({ "m": "tt0000002" })).await;
    assert_eq!(after["data"]["movie"]["rating"]["count"].as_i64(), Some(base + 1), "only bob's remains");
    assert!(after["data"]["movie"]["myRating"].is_null());
}

#[tokio::test]
async fn invalid_writes_are_typed_errors_and_write_nothing() {
    let dir = seeded_dir();
    let config = user_config(dir.path());
    let alice = token(&config, "alice").await;
    let app = spawn_with(config).await;
    for (variables, code) in [
        (json!({ "m": "tt9999999", "s": 5 }), "NOT_FOUND"),
        (json!({ "m": "tt0000001", "s": 11 }), "BAD_USER_INPUT"),
        (json!({ "m": "tt0000001", "s": 0 }), "BAD_USER_INPUT"),
        (json!({ "m": "tt0000001", "s": 300 }), "BAD_USER_INPUT"),
        (json!({ "m": "not-an-id", "s": 5 }), "BAD_USER_INPUT"),
    ] {
        let body = run(&app, Some(&alice), RATE, variables.clone()).await;
        assert_eq!(first_code(&body), code, "{variables}: {body}");
        assert!(body["data"].is_null(), "{body}");
    }
    let added =
        run(&app, Some(&alice), "mutation { addToWatchlist(movieId: \"tt9999999\") { movieId } }", json!({}))
            .await;
    assert_eq!(first_code(&added), "NOT_FOUND");
    let me = run(&app, Some(&alice), ME, json!({})).await;
    assert_eq!(me["data"]["me"]["ratings"]["edges"], json!([]), "nothing was written: {me}");
    assert_eq!(me["data"]["me"]["watchlist"]["edges"], json!([]));
}

#[tokio::test]
async fn caller_specific_responses_are_private_and_mutations_never_run_over_get() {
    let dir = seeded_dir();
    let config = user_config(dir.path());
    let alice = token(&config, "alice").await;
    let app = spawn_with(config).await;
    let get = |query: &'static str, token: Option<String>| {
        let mut request = app.client.get(app.url("/graphql")).query(&[("query", query)]);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let private = get("{ me { id } }", Some(alice.clone())).await.expect("get");
    assert_eq!(private.status(), 200);
    assert_eq!(private.headers()["cache-control"], "private, no-store");
    assert!(private.headers().get("etag").is_none());
    get("{ me { id } }", Some(alice.clone())).await.expect("get");
    let hits = app.metric("cache_requests_total", &[("cache", "response"), ("result", "hit")]).await;
    assert_eq!(hits, 0.0, "private responses never enter the response cache");
    let mixed = get(r#"{ movie(id: "tt0000001") { title myRating { score } } }"#, Some(alice.clone()))
        .await
        .expect("get");
    assert_eq!(
        mixed.headers()["cache-control"],
        "private, no-store",
        "one private field makes it all private"
    );
    let public = get(r#"{ movie(id: "tt0000001") { title } }"#, Some(alice.clone())).await.expect("get");
    assert!(public.headers()["cache-control"].to_str().expect("ascii").starts_with("public"));
    assert_eq!(public.headers()["vary"], "Accept, Authorization");

    let mutation =
        get("mutation { addToWatchlist(movieId: \"tt0000001\") { movieId } }", Some(alice.clone()))
            .await
            .expect("get");
    assert_eq!(mutation.status(), 405);
    assert_eq!(mutation.headers()["allow"], "POST");
    let body: Value = mutation.json().await.expect("json");
    assert_eq!(first_code(&body), "METHOD_NOT_ALLOWED");
    let me = run(&app, Some(&alice), ME, json!({})).await;
    assert_eq!(me["data"]["me"]["watchlist"]["edges"], json!([]), "the GET wrote nothing");
}

#[tokio::test]
async fn public_responses_name_what_they_show_and_a_rating_drops_them_from_the_response_cache() {
    let dir = seeded_dir();
    let config = user_config(dir.path());
    let alice = token(&config, "alice").await;
    let app = spawn_with(config).await;
    let query = r#"{ a: movie(id: "tt0000046") { rating { count } } b: movie(id: "tt0000047") { title } }"#;
    let get = || app.client.get(app.url("/graphql")).query(&[("query", query)]).send();
    let count = |body: &Value| body["data"]["a"]["rating"]["count"].as_i64().expect("count");
    let hits = async || app.metric("cache_requests_total", &[("cache", "response"), ("result", "hit")]).await;

    // The movies it shows are its surrogate keys (a rating or an editor's correction purges
    // them), for Varnish's xkey and for CDNs that purge by tag.
    let first = get().await.expect("get");
    assert_eq!(first.headers()["xkey"], "tt0000046 tt0000047");
    assert_eq!(first.headers()["surrogate-key"], "tt0000046 tt0000047");
    let base = count(&first.json().await.expect("json"));
    let before = hits().await;
    let again = get().await.expect("get");
    assert_eq!(hits().await, before + 1.0, "answered from the response cache");
    assert_eq!(again.headers()["xkey"], "tt0000046 tt0000047", "a hit names its keys too");
    assert_eq!(count(&again.json().await.expect("json")), base);

    // A rating of it drops the cached response at once (its max-age is an hour).
    let rated = run(&app, Some(&alice), RATE, json!({ "m": "tt0000046", "s": 8 })).await;
    assert_eq!(rated["data"]["rateMovie"]["score"], 8, "{rated}");
    let after = get().await.expect("get");
    assert_eq!(count(&after.json().await.expect("json")), base + 1, "not the cached answer");

    // A response showing nothing a write changes names no key.
    let typename =
        app.client.get(app.url("/graphql")).query(&[("query", "{ __typename }")]).send().await.expect("get");
    assert!(typename.headers().get("xkey").is_none() && typename.headers().get("surrogate-key").is_none());
}
