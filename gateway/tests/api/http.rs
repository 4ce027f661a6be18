//! HTTP behaviour: status codes, content negotiation, GraphQL-shaped errors for bad input,
//! health, metrics and GraphiQL. No input may produce a 5xx.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{first_code, seeded_dir, spawn_app, spawn_with, test_config};

#[tokio::test]
async fn malformed_requests_get_graphql_shaped_400s() {
    let app = spawn_app().await;
    let cases: [(&str, &str); 6] = [
        ("{bad json", "not valid JSON"),
        ("{}", "no `query`"),
        (r#"{"query": ""}"#, "no `query`"),
        (r#"{"query": 42}"#, "not a GraphQL request"),
        (r#"{"query": "{ genres { name } }", "variables": [1]}"#, "must be a JSON object"),
        (r#"[{"query": "{ genres { name } }"}]"#, "batched requests are not enabled"),
    ];
    for (body, message) in cases {
        let response = app
            .client
            .post(app.url("/graphql"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 400, "{body}");
        let json: Value = response.json().await.expect("json");
        assert_eq!(first_code(&json), "BAD_REQUEST", "{body}");
        assert!(json["errors"][0]["message"].as_str().expect("message").contains(message), "{body}: {json}");
    }
    let response = app
        .client
        .get(app.url("/graphql?variables=%7B"))
        .header("accept", "application/json")
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn media_types_and_methods() {
    let app = spawn_app().await;
    let wrong_type = app
        .client
        .post(app.url("/graphql"))
        .header("content-type", "text/plain")
        .body("{ genres { name } }")
        .send()
        .await
        .expect("post");
    assert_eq!(wrong_type.status(), 415);
    let json: Value = wrong_type.json().await.expect("json");
    assert_eq!(first_code(&json), "UNSUPPORTED_MEDIA_TYPE");

    let not_acceptable = app
        .client
        .post(app.url("/graphql"))
        .header("accept", "text/csv")
        .json(&json!({ "query": "{ genres { name } }" }))
        .send()
        .await
        .expect("post");
    assert_eq!(not_acceptable.status(), 406);

    let put = app
        .client
        .put(app.url("/graphql"))
        .json(&json!({ "query": "{ genres { name } }" }))
        .send()
        .await
        .expect("put");
    assert_eq!(put.status(), 405);
    assert_eq!(put.headers()["allow"], "GET, POST");

    let missing = app.client.get(app.url("/nope")).send().await.expect("get");
    assert_eq!(missing.status(), 404);
    let json: Value = missing.json().await.expect("json");
    assert_eq!(first_code(&json), "NOT_FOUND");
}

#[tokio::test]
async fn validation_errors_are_400_only_for_the_graphql_response_type() {
    let app = spawn_app().await;
    let query = json!({ "query": "{ movie(id: \"tt0000001\") { nonsense } }" });
    let spec = app
        .client
        .post(app.url("/graphql"))
        .header("accept", "application/graphql-response+json")
        .json(&query)
        .send()
        .await
        .expect("post");
    assert_eq!(spec.status(), 400);
    assert!(
        spec.headers()["content-type"].to_str().expect("ct").starts_with("application/graphql-response+json")
    );
    let legacy = app
        .client
        .post(app.url("/graphql"))
        .header("accept", "application/json")
        .json(&query)
        .send()
        .await
        .expect("post");
    assert_eq!(legacy.status(), 200);
    let body: Value = legacy.json().await.expect("json");
    assert!(body["errors"][0]["message"].as_str().expect("message").contains("nonsense"));

    // A field error is a partial success: 200 with data, in both media types.
    let partial = app
        .client
        .post(app.url("/graphql"))
        .header("accept", "application/graphql-response+json")
        .json(&json!({ "query": "{ genres { name } movie(id: \"bad\") { id } }" }))
        .send()
        .await
        .expect("post");
    assert_eq!(partial.status(), 200);
    let body: Value = partial.json().await.expect("json");
    assert!(body["data"]["genres"].is_array());
    assert_eq!(first_code(&body), "BAD_USER_INPUT");
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let dir = seeded_dir();
    let mut config = test_config(dir.path());
    config.http.body_limit_bytes = 1024;
    let app = spawn_with(config).await;
    let big = format!("{{ genres {{ name }} }} # {}", "x".repeat(2048));
    let response =
        app.client.post(app.url("/graphql")).json(&json!({ "query": big })).send().await.expect("post");
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.expect("json");
    assert_eq!(first_code(&body), "PAYLOAD_TOO_LARGE");
}

#[tokio::test]
async fn garbage_never_yields_a_server_error() {
    let app = spawn_app().await;
    let bodies = [
        "",
        "null",
        "\"\"",
        "[]",
        "{\"query\": null}",
        "{\"query\": \"{\"}",
        "{\"query\": \"{ movie(id: 1) { id } }\"}",
        "{\"query\": \"query { __typename }\", \"operationName\": \"Nope\"}",
        "\u{0}\u{1}\u{2}",
        "{\"query\": \"{ search(query: \\\"\u{1F600}\u{0301}\\\") { edges { cursor } } }\"}",
        "{\"query\": \"{ browse(first: -1) { edges { cursor } } }\"}",
        "{\"query\": \"{ movies(ids: []) { id } }\"}",
        "{\"query\": \"subscription { x }\"}",
        "{\"query\": \"mutation { x }\"}",
    ];
    for body in bodies {
        let response = app
            .client
            .post(app.url("/graphql"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("post");
        assert!(response.status().as_u16() < 500, "{body:?} gave {}", response.status());
        let json: Value = response.json().await.expect("every answer is JSON");
        assert!(json.get("data").is_some() || json.get("errors").is_some(), "{body:?}: {json}");
    }
    for query in ["%ZZ", "query=%7B&variables=nope", "operationName=x"] {
        let response = app.client.get(format!("{}?{query}", app.url("/graphql"))).send().await.expect("get");
        assert!(response.status().as_u16() < 500, "{query}");
    }
}

#[tokio::test]
async fn health_metrics_and_graphiql() {
    let app = spawn_app().await;
    let health = app.client.get(app.url("/healthz")).send().await.expect("healthz");
    assert_eq!(health.status(), 200);
    let ready = app.client.get(app.url("/readyz")).send().await.expect("readyz");
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.expect("json");
    assert_eq!(body["region"], "test-region");

    app.data("{ genres { name } }", json!({})).await;
    let text = app.client.get(app.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(text.contains("http_request_duration_seconds_bucket"), "{text}");
    let graphql_ok = [("region", "test-region"), ("route", "/graphql"), ("status", "200")];
    assert_eq!(app.metric("http_requests_total", &graphql_ok).await, 1.0);
    let genres = [("region", "test-region"), ("backend", "embedded"), ("op", "genres")];
    assert_eq!(app.metric("store_calls_total", &genres).await, 1.0);
    assert!(app.metric("http_requests_total", &[("route", "/readyz"), ("status", "200")]).await >= 1.0);
    assert_eq!(app.metric("gateway_ready", &[("region", "test-region")]).await, 1.0);

    let page =
        app.client.get(app.url("/graphql")).header("accept", "text/html").send().await.expect("graphiql");
    assert_eq!(page.status(), 200);
    assert!(page.text().await.expect("html").contains("graphiql"));
}

/// `/graphql/read` answers GETs exactly as `/graphql` does (same body, same caching headers)
/// and takes nothing else: it is the path a CDN may fail over between regions.
#[tokio::test]
async fn graphql_read_serves_the_same_gets_and_refuses_writes() {
    let app = spawn_app().await;
    let query = [("query", "{ movie(id: \"tt0000042\") { title year } }")];
    let get = |path: &'static str| app.client.get(app.url(path)).query(&query).send();
    let (main, read) = (get("/graphql").await.expect("get"), get("/graphql/read").await.expect("get"));
    assert_eq!((main.status(), read.status()), (StatusCode::OK, StatusCode::OK));
    for name in ["cache-control", "content-type", "vary"] {
        assert_eq!(main.headers().get(name), read.headers().get(name), "{name}");
    }
    let (main, read): (Value, Value) = (main.json().await.expect("json"), read.json().await.expect("json"));
    assert_eq!(main, read);
    assert!(read["data"]["movie"]["title"].is_string(), "{read}");

    let post = app
        .client
        .post(app.url("/graphql/read"))
        .json(&json!({ "query": "mutation { rateMovie(movieId: \"tt0000042\", score: 7) { score } }" }))
        .send()
        .await
        .expect("post");
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["allow"], "GET, HEAD");
    let body: Value = post.json().await.expect("a GraphQL body");
    assert_eq!(first_code(&body), "METHOD_NOT_ALLOWED");
    let mutation = app
        .client
        .get(app.url("/graphql/read"))
        .query(&[("query", "mutation { rateMovie(movieId: \"tt0000042\", score: 7) { score } }")])
        .send()
        .await
        .expect("get");
    assert_eq!(mutation.status(), 405, "a mutation over GET is refused here as on /graphql");
}

/// The origin secret's previous value is empty outside a rotation (the deployment's secret
/// keeps the key): that is no second value. An empty current value is refused at start.
#[tokio::test]
async fn an_empty_previous_origin_secret_is_none_and_an_empty_current_one_is_refused() {
    let dir = seeded_dir();
    let mut config = test_config(dir.path());
    config.http.origin_secret = Some("0123456789abcdef0123456789abcdef".to_owned().into());
    config.http.origin_secret_previous = Some(String::new().into());
    let app = spawn_with(config.clone()).await;
    assert_eq!(app.client.get(app.url("/healthz")).send().await.expect("get").status(), 200);
    drop(app);
    config.http.origin_secret = Some(String::new().into());
    let Err(error) = marquee_gateway::startup::Application::build(config).await else {
        panic!("an empty origin secret was accepted")
    };
    assert!(error.to_string().contains("http.origin_secret (and _previous) must be at least 16"), "{error}");
}
