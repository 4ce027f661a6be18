//! HTTP caching: public GETs get Cache-Control from the fields' hints (the minimum wins), a
//! strong ETag and 304 on a match; POSTs and responses with errors are never stored.

use serde_json::json;

use crate::helpers::{TestApp, spawn_app};

async fn get(app: &TestApp, query: &str, if_none_match: Option<&str>) -> reqwest::Response {
    let mut request =
        app.client.get(app.url("/graphql")).query(&[("query", query)]).header("accept", "application/json");
    if let Some(tag) = if_none_match {
        request = request.header("if-none-match", tag);
    }
    request.send().await.expect("get")
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn public_gets_are_cacheable_with_the_smallest_max_age() {
    let app = spawn_app().await;
    let movie = get(&app, r#"{ movie(id: "tt0000001") { title cast { person { name } } } }"#, None).await;
    assert_eq!(movie.status(), 200);
    assert_eq!(
        header(&movie, "cache-control"),
        Some("public, max-age=3600, s-maxage=3600, stale-while-revalidate=60, stale-if-error=86400")
    );
    assert_eq!(header(&movie, "vary"), Some("Accept, Authorization"));
    assert!(header(&movie, "etag").is_some_and(|t| t.starts_with('"') && t.len() == 34));

    let mixed =
        get(&app, r#"{ genres { name } search(query: "star") { edges { node { title } } } }"#, None).await;
    assert!(
        header(&mixed, "cache-control").is_some_and(|v| v.starts_with("public, max-age=300,")),
        "the list's hint wins"
    );
}

#[tokio::test]
async fn etags_are_stable_and_answer_304() {
    let app = spawn_app().await;
    let query =
        r#"{ browse(first: 5) { edges { node { id title similar { id } cast(first: 3) { character } } } } }"#;
    let first = get(&app, query, None).await;
    let tag = header(&first, "etag").expect("etag").to_owned();
    let second = get(&app, query, None).await;
    assert_eq!(header(&second, "etag"), Some(tag.as_str()), "the same query gives the same bytes");

    let unchanged = get(&app, query, Some(&tag)).await;
    assert_eq!(unchanged.status(), 304);
    assert_eq!(header(&unchanged, "etag"), Some(tag.as_str()));
    assert!(header(&unchanged, "cache-control").is_some_and(|v| v.starts_with("public")));
    assert!(unchanged.bytes().await.expect("body").is_empty());

    let changed = get(&app, query, Some("\"0000\"")).await;
    assert_eq!(changed.status(), 200);
    let weak = get(&app, query, Some(&format!("W/{tag}"))).await;
    assert_eq!(weak.status(), 304);
}

#[tokio::test]
async fn posts_and_errors_are_never_stored() {
    let app = spawn_app().await;
    let post = app
        .client
        .post(app.url("/graphql"))
        .json(&json!({ "query": r#"{ movie(id: "tt0000001") { title } }"# }))
        .send()
        .await
        .expect("post");
    assert_eq!(header(&post, "cache-control"), Some("no-store"));
    assert!(header(&post, "etag").is_none());

    let error = get(&app, r#"{ movie(id: "not-an-id") { title } }"#, None).await;
    assert_eq!(header(&error, "cache-control"), Some("no-store"));
    assert!(header(&error, "etag").is_none());
    let invalid = get(&app, "{ nope }", None).await;
    assert_eq!(header(&invalid, "cache-control"), Some("no-store"));
}
