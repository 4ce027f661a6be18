//! Query limits: depth, complexity, aliases and root fields are refused with stable codes
//! before anything executes.

use serde_json::{Value, json};

use crate::helpers::{TestApp, first_code, spawn_app};

async fn refused(app: &TestApp, query: &str, code: &str) {
    let calls_before = app.metric("store_calls_total", &[]).await;
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
    assert_eq!(app.metric("store_calls_total", &[]).await, calls_before, "no store call for a refused query");
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
async fn introspection_is_not_limited_by_depth() {
    let app = spawn_app().await;
    let query = "{ __schema { queryType { name } types { name kind fields { name args { name type { kind name ofType {
        kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } type { kind name ofType { kind name
        ofType { kind name ofType { kind name } } } } } } } }";
    let body = app.data(query, json!({})).await;
    assert_eq!(body["__schema"]["queryType"]["name"], "Query");
}
