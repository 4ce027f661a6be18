//! The GraphQL spec and the GraphQL-over-HTTP spec, to the letter, over real HTTP: field
//! errors become nulls that propagate to the nearest nullable parent, request errors have no
//! `data`, and every `/graphql` response is labelled with the negotiated media type and
//! `Vary`, whatever stage answered it.

use reqwest::header::{ACCEPT, CONTENT_TYPE, ETAG, VARY};
use serde_json::{Value, json};

use crate::helpers::{TestApp, first_code, spawn_app};

const SPEC: &str = "application/graphql-response+json";

/// POSTs `query` accepting the spec's media type; the status, content type and body text.
async fn post_spec(app: &TestApp, query: &str) -> (u16, String, String) {
    let response = app
        .client
        .post(app.url("/graphql"))
        .header(ACCEPT, SPEC)
        .json(&json!({ "query": query }))
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let content_type = header(&response, CONTENT_TYPE.as_str());
    (status, content_type, response.text().await.expect("body"))
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("<none>").to_owned()
}

fn parse(body: &str) -> Value {
    serde_json::from_str(body).expect("a JSON body")
}

/// The paths of `body`'s errors.
fn paths(body: &Value) -> Vec<Value> {
    body["errors"].as_array().map(|e| e.iter().map(|e| e["path"].clone()).collect()).unwrap_or_default()
}

#[tokio::test]
async fn field_errors_become_nulls_that_propagate_to_the_nearest_nullable_parent() {
    let app = spawn_app().await;

    // A nullable field that failed: null, with its error at its path; its sibling unaffected.
    let (status, content_type, text) =
        post_spec(&app, r#"{ a: movie(id: "bogus") { title } b: movie(id: "tt0000001") { title } }"#).await;
    assert_eq!((status, content_type.as_str()), (200, "application/graphql-response+json; charset=utf-8"));
    let body = parse(&text);
    assert!(text.starts_with(r#"{"data":{"a":null,"b":{"title":"#), "{text}");
    assert_eq!(paths(&body), vec![json!(["a"])]);
    assert_eq!(first_code(&body), "BAD_USER_INPUT");

    // The only root field failing still leaves `data` an object, and the status 200.
    let (status, _, text) = post_spec(&app, r#"{ movie(id: "bogus") { title } }"#).await;
    assert_eq!(status, 200);
    assert_eq!(parse(&text)["data"], json!({ "movie": null }), "{text}");

    // A non-null field (cast: [Credit!]!) that failed nulls its movie, the nearest nullable.
    let (status, _, text) =
        post_spec(&app, r#"{ movie(id: "tt0000001") { title cast(first: 500) { character } } }"#).await;
    assert_eq!(status, 200);
    let body = parse(&text);
    assert_eq!(body["data"], json!({ "movie": null }), "{text}");
    assert_eq!(paths(&body), vec![json!(["movie", "cast"])]);

    // Several levels: each similar movie's failed cast nulls that movie (Movie! in [Movie!]!),
    // which nulls the non-null list, which nulls the outer movie.
    let (_, _, text) = post_spec(
        &app,
        r#"{ movie(id: "tt0000100") { title similar(first: 2) { title cast(first: 500) { character } } } }"#,
    )
    .await;
    let body = parse(&text);
    assert_eq!(body["data"], json!({ "movie": null }), "{text}");
    assert_eq!(paths(&body).len(), 2, "one error per failed field: {text}");
    assert!(paths(&body).iter().all(|p| p[0] == "movie" && p[1] == "similar" && p[3] == "cast"), "{text}");

    // List items: movies(ids:) is [Movie]!, so each failed item is null and the list stays.
    let (_, _, text) = post_spec(
        &app,
        r#"{ movies(ids: ["tt0000001", "tt0000002"]) { title cast(first: 500) { character } } genres { name } }"#,
    )
    .await;
    let body = parse(&text);
    assert_eq!(body["data"]["movies"], json!([null, null]), "{text}");
    assert!(body["data"]["genres"].as_array().is_some_and(|g| !g.is_empty()), "siblings stay: {text}");
    let mut got = paths(&body);
    got.sort_by_key(Value::to_string);
    assert_eq!(got, vec![json!(["movies", 0, "cast"]), json!(["movies", 1, "cast"])]);

    // Errors inside fragments, under aliases: the alias is the path, the null propagates.
    let (_, _, text) = post_spec(
        &app,
        r#"{ x: movie(id: "tt0000001") { ...Card } y: movie(id: "tt0000002") { t: title } }
            fragment Card on Movie { t: title c: cast(first: 500) { character } }"#,
    )
    .await;
    let body = parse(&text);
    assert_eq!(body["data"]["x"], Value::Null, "{text}");
    assert!(body["data"]["y"]["t"].is_string(), "{text}");
    assert_eq!(paths(&body), vec![json!(["x", "c"])]);

    // A non-null root field that failed nulls `data` itself: still an executed request, 200.
    let (status, _, text) =
        post_spec(&app, r#"{ genres { name } search(query: "", first: 5) { edges { cursor } } }"#).await;
    assert_eq!(status, 200, "{text}");
    let body = parse(&text);
    assert!(body.as_object().is_some_and(|b| b.contains_key("data")), "{text}");
    assert_eq!(body["data"], Value::Null);
    assert_eq!(paths(&body), vec![json!(["search"])]);

    // Field order stays the query's, nulls included.
    let (_, _, text) = post_spec(
        &app,
        r#"{ z: movie(id: "tt0000001") { year title } a: movie(id: "bogus") { title } m: movie(id: "tt0000002") { title } }"#,
    )
    .await;
    assert!(text.starts_with(r#"{"data":{"z":{"year":"#), "{text}");
    let at = |key: &str| text.find(key).unwrap_or(usize::MAX);
    assert!(at(r#""a":null"#) < at(r#""m":{"#), "{text}");
}

#[tokio::test]
async fn request_errors_have_no_data_and_a_4xx_under_the_spec_media_type() {
    let app = spawn_app().await;
    for (query, code) in [
        ("{ nope }", None),
        ("{ movie(id: ", None),
        (
            r#"{ browse(first: 100) { edges { node { cast(first: 100) { person { filmography(first: 100) { edges { node { movie { title } } } } } } } } } }"#,
            Some("QUERY_TOO_COMPLEX"),
        ),
    ] {
        let (status, content_type, text) = post_spec(&app, query).await;
        assert_eq!(status, 400, "{query}: {text}");
        assert!(content_type.starts_with(SPEC), "{content_type}");
        let body = parse(&text);
        assert!(!body.as_object().is_some_and(|b| b.contains_key("data")), "no data entry: {text}");
        assert!(body["errors"][0]["message"].is_string(), "{text}");
        if let Some(code) = code {
            assert_eq!(first_code(&body), code);
        }
        // Under plain JSON: 200, and still no `data`.
        let body = app.graphql(query, json!({})).await;
        assert!(!body.as_object().is_some_and(|b| b.contains_key("data")), "no data entry: {body}");
    }
}

#[tokio::test]
async fn every_graphql_response_is_labelled_with_the_negotiated_type_and_varies() {
    let app = spawn_app().await;
    let hash = "0".repeat(64);
    let apq = json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } }).to_string();
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        (
            "unknown APQ hash",
            app.client.get(app.url("/graphql")).query(&[("extensions", apq.as_str())]),
            400,
            "PERSISTED_QUERY_NOT_FOUND",
        ),
        (
            "hash mismatch",
            app.client.post(app.url("/graphql")).json(&json!({
                "query": "{ genres { name } }",
                "extensions": { "persistedQuery": { "version": 1, "sha256Hash": hash } } })),
            400,
            "PERSISTED_QUERY_HASH_MISMATCH",
        ),
        (
            "body not JSON",
            app.client.post(app.url("/graphql")).header(CONTENT_TYPE, "application/json").body("{"),
            400,
            "BAD_REQUEST",
        ),
        (
            "extensions not an object (POST)",
            app.client
                .post(app.url("/graphql"))
                .json(&json!({ "query": "{ genres { name } }", "extensions": 3 })),
            400,
            "BAD_REQUEST",
        ),
        (
            "extensions not an object (GET)",
            app.client
                .get(app.url("/graphql"))
                .query(&[("query", "{ genres { name } }"), ("extensions", "[1]")]),
            400,
            "BAD_REQUEST",
        ),
        (
            "bad token",
            app.client
                .get(app.url("/graphql"))
                .query(&[("query", "{ genres { name } }")])
                .bearer_auth("nope"),
            401,
            "INVALID_TOKEN",
        ),
        (
            "mutation over GET",
            app.client
                .get(app.url("/graphql"))
                .query(&[("query", "mutation { deleteRating(movieId: \"tt0000001\") }")]),
            405,
            "METHOD_NOT_ALLOWED",
        ),
        (
            "POST that is not JSON",
            app.client
                .post(app.url("/graphql"))
                .header(CONTENT_TYPE, "text/plain")
                .body("{ genres { name } }"),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
    ];
    for (what, request, status, code) in cases {
        let response = request.header(ACCEPT, SPEC).send().await.expect("request");
        assert_eq!(response.status().as_u16(), status, "{what}");
        assert_eq!(
            header(&response, "content-type"),
            "application/graphql-response+json; charset=utf-8",
            "{what}"
        );
        assert_eq!(header(&response, VARY.as_str()), "Accept, Authorization", "{what}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(first_code(&body), code, "{what}: {body}");
    }
    // The same unknown hash under plain JSON: 200, labelled JSON, varying all the same.
    let response = app
        .client
        .get(app.url("/graphql"))
        .query(&[("extensions", apq.as_str())])
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), "application/json; charset=utf-8");
    assert_eq!(header(&response, VARY.as_str()), "Accept, Authorization");
    // 406 when neither type is acceptable, still GraphQL-shaped.
    let response = app
        .client
        .get(app.url("/graphql"))
        .query(&[("query", "{ genres { name } }")])
        .header(ACCEPT, "text/csv")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 406);
    assert_eq!(header(&response, VARY.as_str()), "Accept, Authorization");
    assert_eq!(first_code(&response.json().await.expect("json")), "NOT_ACCEPTABLE");
}

#[tokio::test]
async fn representations_of_one_body_have_different_strong_etags() {
    let app = spawn_app().await;
    let fetch = |accept: &'static str| {
        app.client
            .get(app.url("/graphql"))
            .query(&[("query", "{ genres { name } }")])
            .header(ACCEPT, accept)
            .send()
    };
    let json_response = fetch("application/json").await.expect("json");
    let spec_response = fetch(SPEC).await.expect("spec");
    let (json_tag, spec_tag) = (header(&json_response, ETAG.as_str()), header(&spec_response, ETAG.as_str()));
    assert!(json_tag.starts_with('"') && spec_tag.starts_with('"'), "strong tags: {json_tag} {spec_tag}");
    assert_ne!(json_tag, spec_tag);
    assert_eq!(json_response.text().await.expect("body"), spec_response.text().await.expect("body"));
    // Each tag revalidates its own representation only.
    let revalidate = |accept: &'static str, tag: String| {
        app.client
            .get(app.url("/graphql"))
            .query(&[("query", "{ genres { name } }")])
            .header(ACCEPT, accept)
            .header("if-none-match", tag)
            .send()
    };
    assert_eq!(revalidate(SPEC, spec_tag.clone()).await.expect("304").status(), 304);
    assert_eq!(revalidate(SPEC, json_tag.clone()).await.expect("200").status(), 200);
    assert_eq!(revalidate("application/json", json_tag).await.expect("304").status(), 304);
}

#[tokio::test]
async fn graphiql_is_revalidated_and_varies() {
    let app = spawn_app().await;
    let response =
        app.client.get(app.url("/graphql")).header(ACCEPT, "text/html").send().await.expect("graphiql");
    assert_eq!(response.status(), 200);
    assert!(header(&response, "content-type").starts_with("text/html"));
    assert_eq!(header(&response, "cache-control"), "no-cache");
    assert_eq!(header(&response, VARY.as_str()), "Accept, Authorization");
    // By default its scripts come from the gateway itself, pinned by their integrity.
    let page = response.text().await.expect("page");
    assert!(
        page.contains("src=\"/graphiql/assets/graphiql@4.1.2/graphiql.min.js\" integrity=\"sha384-"),
        "{page}"
    );
}

/// POSTs `query` with `variables` accepting the spec's media type; the status and the body.
async fn post_spec_with(app: &TestApp, query: &str, variables: Value) -> (u16, Value) {
    let response = app
        .client
        .post(app.url("/graphql"))
        .header(ACCEPT, SPEC)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, parse(&response.text().await.expect("body")))
}

#[tokio::test]
async fn a_document_validated_before_still_refuses_variables_of_the_wrong_type() {
    let app = spawn_app().await;
    let query =
        "query M($id: ID!, $first: Int!) { movie(id: $id) { title cast(first: $first) { character } } }";
    // The same document with other whitespace: text the gateway has never validated.
    let fresh = |n: usize| format!("{query}{}", " ".repeat(n));
    let (status, body) = post_spec_with(&app, query, json!({"id": "tt0000010", "first": 2})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["data"]["movie"]["title"].is_string(), "{body}");

    for (n, bad) in [
        json!({"id": "tt0000010", "first": "two"}),
        json!({"id": "tt0000010", "first": 2.5}),
        json!({"id": "tt0000010", "first": null}),
        json!({"id": "tt0000010"}),
        json!({"id": false, "first": 2}),
        json!({"id": ["1"], "first": 2}),
    ]
    .into_iter()
    .enumerate()
    {
        let (status, known) = post_spec_with(&app, query, bad.clone()).await;
        let (fresh_status, first_time) = post_spec_with(&app, &fresh(n + 1), bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {known}");
        assert!(!known.as_object().is_some_and(|b| b.contains_key("data")), "no data entry: {known}");
        assert_eq!(
            (status, &known),
            (fresh_status, &first_time),
            "{bad}: the same answer as a first validation"
        );
    }

    let (status, body) = post_spec_with(&app, query, json!({"id": "tt0000010", "first": 1})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["movie"]["cast"].as_array().map(Vec::len), Some(1), "{body}");
}
