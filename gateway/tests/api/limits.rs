//! Query limits (depth, complexity, aliases, root fields: refused with stable codes before
//! anything executes) and the per-identity rate limit.

use serde_json::{Value, json};

use marquee_gateway::config::RateLimitConfig;

use crate::helpers::{TestApp, first_code, seeded_dir, spawn_app, spawn_with, test_config};

async fn refused(app: &TestApp, query: &str, code: &str) {
    let calls_before = app.request_store_calls().await;
    let response = app
        .client
        .post(app.url("/graphql"))
        .header("accept", "application/graphql-response+json")
        .json(&json!({ "query": query }))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 400, "{query}");
    let body: Value = response.json().await.expect("json");
    assert_eq!(first_code(&body), code, "{body}");
    assert!(body.get("data").is_none_or(Value::is_null), "nothing executed: {body}");
    assert_eq!(app.request_store_calls().await, calls_before, "no store call for a refused query");
}

#[tokio::test]
async fn each_limit_has_its_code() {
    let app = spawn_app().await;
    let deep = r#"{ movie(id: "tt0000001") { cast { person { filmography { edges { node { movie { cast { person {
        filmography { edges { node { movie { title } } } } } } } } } } } } } }"#;
    refused(&app, deep, "QUERY_TOO_DEEP").await;
    refused(
        &app,
        "{ browse(first: 100) { edges { node { cast(first: 100) { person { name } } } } } }",
        "QUERY_TOO_COMPLEX",
    )
    .await;
    let aliases: String = (0..31).map(|i| format!("t{i}: title ")).collect();
    refused(&app, &format!(r#"{{ movie(id: "tt0000001") {{ {aliases} }} }}"#), "TOO_MANY_ALIASES").await;
    let roots: String = (0..21).map(|i| format!("g{i}: genres {{ name }} ")).collect();
    refused(&app, &format!("{{ {roots} }}"), "TOO_MANY_ROOT_FIELDS").await;
    // Variables count: a small literal page is fine, the same page through a variable too.
    let query =
        "query($n: Int!) { browse(first: $n) { edges { node { cast(first: 100) { person { name } } } } } }";
    let ok = app.graphql(query, json!({ "n": 2 })).await;
    assert!(ok.get("errors").is_none(), "{ok}");
    let too_big = app.graphql(query, json!({ "n": 100 })).await;
    assert_eq!(first_code(&too_big), "QUERY_TOO_COMPLEX");
}

#[tokio::test]
async fn introspection_nesting_is_not_counted_in_max_depth() {
    let app = spawn_app().await;
    let query = "{ __schema { queryType { name } types { name kind fields { name args { name type { kind name ofType {
        kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } type { kind name ofType { kind name
        ofType { kind name ofType { kind name } } } } } } } }";
    let body = app.data(query, json!({})).await;
    assert_eq!(body["__schema"]["queryType"]["name"], "Query");
}

#[tokio::test]
async fn over_the_rate_gets_429_with_retry_after() {
    let dir = seeded_dir();
    let mut config = test_config(dir.path());
    config.rate_limit = RateLimitConfig { enabled: true, per_second: 1, burst: 3 };
    let app = spawn_with(config).await;
    for _ in 0..3 {
        app.data("{ genres { name } }", json!({})).await;
    }
    let response = app
        .client
        .post(app.url("/graphql"))
        .json(&json!({ "query": "{ genres { name } }" }))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 429);
    let retry_after: u64 =
        response.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=2).contains(&retry_after), "retry after {retry_after}");
    let body: Value = response.json().await.expect("json");
    assert_eq!(first_code(&body), "RATE_LIMITED");
    // Health checks and metrics are never limited.
    assert_eq!(app.client.get(app.url("/readyz")).send().await.expect("readyz").status(), 200);
    assert_eq!(app.metric("http_requests_total", &[("route", "/graphql"), ("status", "429")]).await, 1.0);
}

#[tokio::test]
async fn a_request_over_the_time_limit_gets_504() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = seeded_dir();
    let mut config = test_config(dir.path());
    config.http.request_timeout_ms = marquee_gateway::config::Millis(300);
    let app = spawn_with(config).await;
    // A client that announces a body and never sends it: the handler waits on the body inside
    // the time limit, so the limit is what ends the request.
    let mut socket = tokio::net::TcpStream::connect(app.addr).await.expect("connect");
    let head = "POST /graphql HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                Content-Length: 100\r\n\r\n{\"query\":";
    socket.write_all(head.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = socket.read(&mut buf).await.expect("read");
            response.extend_from_slice(&buf[..n]);
            if n == 0 || response.windows(4).any(|w| w == b"\r\n\r\n") && response.ends_with(b"}") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the gateway answered instead of waiting forever");
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 504"), "{text}");
    assert!(text.contains("\"TIMEOUT\""), "{text}");
}
