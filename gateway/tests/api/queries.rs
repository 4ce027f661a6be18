//! Every query of the public surface, checked against the deterministic generator.

use marquee_store::{Genre, keys, text};
use serde_json::{Value, json};

use crate::helpers::{CATALOG, first_code, generator, spawn_reader};

#[tokio::test]
async fn movie_by_id_has_every_field() {
    let app = spawn_reader().await;
    let expected = generator().movie(41);
    let m = &expected.movie;
    let data = app
        .data(
            r#"query($id: ID!) { movie(id: $id) { id title originalTitle year releaseDate runtimeMinutes genres overview
                originalLanguage posterUrl popularity rating { average count } } }"#,
            json!({ "id": m.id.to_string() }),
        )
        .await;
    let got = &data["movie"];
    assert_eq!(got["id"], m.id.to_string());
    assert_eq!(got["title"], m.title);
    assert_eq!(got["originalTitle"], json!(m.original_title));
    assert_eq!(got["year"], json!(m.year));
    assert_eq!(got["releaseDate"], json!(m.release_date.map(|d| d.to_string())));
    assert_eq!(got["runtimeMinutes"], json!(m.runtime_minutes));
    assert_eq!(got["genres"], json!(m.genres.iter().map(|g| g.name()).collect::<Vec<_>>()));
    assert_eq!(got["overview"], json!(m.overview));
    assert_eq!(got["originalLanguage"], json!(m.original_language));
    assert_eq!(
        got["posterUrl"],
        json!(m.poster_path.as_ref().map(|p| format!("https://images.marquee.example{p}")))
    );
    assert_eq!(got["rating"]["count"], json!(m.rating.count));
    assert!((got["popularity"].as_f64().expect("f64") - f64::from(m.popularity)).abs() < 1e-3);
    let missing = app.data(r#"{ movie(id: "tt9999999") { id } }"#, json!({})).await;
    assert_eq!(missing["movie"], Value::Null);
    // A backend with a client driver reports its figures; the embedded one has none.
    let driver_requests = app.metric("store_driver_requests_total", &[("backend", "scylla")]).await;
    if crate::helpers::on_scylla() {
        assert!(driver_requests > 0.0, "{driver_requests}");
        assert!(app.metric("store_driver_connections", &[("backend", "scylla")]).await >= 1.0);
    } else {
        assert_eq!(driver_requests, 0.0);
    }
}

#[tokio::test]
async fn movies_keep_order_with_nulls() {
    let app = spawn_reader().await;
    let data =
        app.data(r#"{ movies(ids: ["tt0000003", "tt8888888", "tt0000001"]) { id } }"#, json!({})).await;
    assert_eq!(data["movies"], json!([{ "id": "tt0000003" }, null, { "id": "tt0000001" }]));
    let ids: Vec<String> = (1..=101).map(|i| format!("tt{i:07}")).collect();
    let body = app.graphql("query($ids: [ID!]!) { movies(ids: $ids) { id } }", json!({ "ids": ids })).await;
    assert_eq!(first_code(&body), "BAD_USER_INPUT");
}

#[tokio::test]
async fn cast_crew_and_people() {
    let app = spawn_reader().await;
    let record = generator().movie(9);
    let data = app
        .data(
            r#"{ movie(id: "tt0000010") { cast(first: 3) { character billingOrder department job person { id name } }
                 crew(job: "director") { job department character person { id } } } }"#,
            json!({}),
        )
        .await;
    let cast: Vec<_> = record.credits.iter().filter(|c| c.is_cast()).take(3).collect();
    let got = data["movie"]["cast"].as_array().expect("cast");
    assert_eq!(got.len(), 3);
    for (i, (g, c)) in got.iter().zip(&cast).enumerate() {
        assert_eq!(g["person"]["id"], c.person.to_string());
        assert_eq!(g["billingOrder"], i + 1);
        assert_eq!(g["department"], "ACTING");
        assert_eq!(g["job"], Value::Null);
        assert_eq!(g["person"]["name"], generator().person(c.person.0 - 1).name);
    }
    let director = record.credits.iter().find(|c| c.role == "Director").expect("director");
    assert_eq!(
        data["movie"]["crew"],
        json!([{ "job": "Director", "department": "DIRECTING", "character": null, "person": { "id": director.person.to_string() } }])
    );
}

#[tokio::test]
async fn person_filmography_pages_through_every_credit() {
    let app = spawn_reader().await;
    let g = generator();
    let person = g.person(0);
    let mut expected = Vec::new();
    for i in 0..CATALOG.movies {
        let r = g.movie(i);
        for (ordinal, c) in r.credits.iter().enumerate() {
            if c.person == person.id {
                expected.push((
                    keys::filmography(r.movie.year, r.movie.popularity),
                    (r.movie.id.0 << 8) | ordinal as u64,
                    r.movie.id.to_string(),
                ));
            }
        }
    }
    expected.sort();
    let data = app
        .data(r#"{ person(id: "nm0000001") { id name birthYear deathYear knownForDepartment } }"#, json!({}))
        .await;
    assert_eq!(data["person"]["name"], person.name);
    assert_eq!(data["person"]["knownForDepartment"], "ACTING");
    let mut after = Value::Null;
    let mut seen = Vec::new();
    loop {
        let data = app
            .data(
                r#"query($after: String) { person(id: "nm0000001") { filmography(first: 7, after: $after) {
                    edges { cursor node { movie { id year } character department } } pageInfo { hasNextPage endCursor } } } }"#,
                json!({ "after": after }),
            )
            .await;
        let f = &data["person"]["filmography"];
        for edge in f["edges"].as_array().expect("edges") {
            seen.push(edge["node"]["movie"]["id"].as_str().expect("id").to_owned());
        }
        if !f["pageInfo"]["hasNextPage"].as_bool().expect("bool") {
            break;
        }
        after = f["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(seen, expected.into_iter().map(|e| e.2).collect::<Vec<_>>());
}

#[tokio::test]
async fn search_is_ranked_accent_insensitive_and_paged() {
    let app = spawn_reader().await;
    let g = generator();
    let words = text::words("cafe");
    let mut expected: Vec<(u64, String)> = (0..CATALOG.movies)
        .map(|i| g.movie(i).movie)
        .filter(|m| text::matches(&words, &text::words(&m.title).join(" ")))
        .map(|m| (keys::popularity(m.popularity), m.id.to_string()))
        .collect();
    expected.sort();
    assert!(expected.len() > 3, "the demo catalog has café titles");
    let query = r#"query($q: String!, $after: String) { search(query: $q, first: 2, after: $after) {
        edges { cursor node { id title } } pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }"#;
    let mut seen = Vec::new();
    let mut after = Value::Null;
    loop {
        let data = app.data(query, json!({ "q": "CAFÉ", "after": after })).await;
        let s = &data["search"];
        for e in s["edges"].as_array().expect("edges") {
            assert!(
                text::words(e["node"]["title"].as_str().expect("title"))
                    .iter()
                    .any(|w| w.starts_with("cafe"))
            );
            seen.push(e["node"]["id"].as_str().expect("id").to_owned());
        }
        assert_eq!(s["pageInfo"]["hasPreviousPage"], false);
        if !s["pageInfo"]["hasNextPage"].as_bool().expect("bool") {
            break;
        }
        after = s["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(seen, expected.into_iter().map(|e| e.1).collect::<Vec<_>>());

    let bad =
        app.graphql(r#"{ search(query: "star", after: "garbage") { edges { cursor } } }"#, json!({})).await;
    assert_eq!(first_code(&bad), "INVALID_CURSOR");
    let data = app.data(r#"{ browse(first: 1) { pageInfo { endCursor } } }"#, json!({})).await;
    let browse_cursor = data["browse"]["pageInfo"]["endCursor"].clone();
    let replayed = app.graphql(query, json!({ "q": "star", "after": browse_cursor })).await;
    assert_eq!(first_code(&replayed), "INVALID_CURSOR");
    let empty = app.graphql(r#"{ search(query: "  ") { edges { cursor } } }"#, json!({})).await;
    assert_eq!(first_code(&empty), "BAD_USER_INPUT");
    let too_many =
        app.graphql(r#"{ search(query: "star", first: 101) { edges { cursor } } }"#, json!({})).await;
    assert_eq!(first_code(&too_many), "BAD_USER_INPUT");
    assert!(too_many["errors"][0]["message"].as_str().expect("message").contains("between 0 and 100"));
}

#[tokio::test]
async fn browse_sorts_and_filters() {
    let app = spawn_reader().await;
    let g = generator();
    let drama = Genre::from_name("Drama").expect("genre");
    let mut expected: Vec<(u64, String)> = (0..CATALOG.movies)
        .map(|i| g.movie(i).movie)
        .filter(|m| m.genres.contains(&drama) && m.year.is_some_and(|y| (1980..=2010).contains(&y)))
        .map(|m| (keys::release(&m), m.id.to_string()))
        .collect();
    expected.sort();
    let data = app
        .data(
            r#"{ browse(genre: "drama", yearFrom: 1980, yearTo: 2010, sort: RELEASE_DATE, first: 15) {
                edges { node { id year genres } } pageInfo { hasNextPage } } }"#,
            json!({}),
        )
        .await;
    let ids: Vec<&str> = data["browse"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"]["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, expected.iter().take(15).map(|e| e.1.as_str()).collect::<Vec<_>>());
    assert_eq!(data["browse"]["pageInfo"]["hasNextPage"], expected.len() > 15);

    for sort in ["POPULARITY", "RATING"] {
        let data = app
            .data(&format!("{{ browse(sort: {sort}, first: 30) {{ edges {{ node {{ popularity rating {{ average count }} }} }} }} }}"), json!({}))
            .await;
        let edges = data["browse"]["edges"].as_array().expect("edges");
        assert_eq!(edges.len(), 30);
        let key = |e: &Value| match sort {
            "POPULARITY" => e["node"]["popularity"].as_f64().expect("f64"),
            _ => {
                let count = e["node"]["rating"]["count"].as_u64().expect("u64") as u32;
                // Only a movie nobody rated has no average.
                let average = e["node"]["rating"]["average"].as_f64();
                assert_eq!(average.is_none(), count == 0, "{e}");
                f64::from(keys::weighted_rating(average.unwrap_or_default() as f32, count))
            }
        };
        assert!(edges.windows(2).all(|w| key(&w[0]) >= key(&w[1]) - 0.06), "{sort} order");
    }
    let unknown = app.graphql(r#"{ browse(genre: "Polka") { edges { cursor } } }"#, json!({})).await;
    assert_eq!(first_code(&unknown), "BAD_USER_INPUT");
    let backwards =
        app.graphql(r#"{ browse(yearFrom: 2000, yearTo: 1990) { edges { cursor } } }"#, json!({})).await;
    assert_eq!(first_code(&backwards), "BAD_USER_INPUT");
    let silly = app.graphql(r#"{ browse(yearFrom: -5) { edges { cursor } } }"#, json!({})).await;
    assert_eq!(first_code(&silly), "BAD_USER_INPUT");
}

#[tokio::test]
async fn genres_and_similar() {
    let app = spawn_reader().await;
    let g = generator();
    let data = app.data("{ genres { name movieCount } }", json!({})).await;
    let genres = data["genres"].as_array().expect("genres");
    assert_eq!(genres.len(), Genre::all().count());
    let comedy = genres.iter().find(|x| x["name"] == "Comedy").expect("comedy");
    let expected = (0..CATALOG.movies)
        .filter(|&i| g.movie(i).movie.genres.contains(&Genre::from_name("Comedy").expect("genre")))
        .count();
    assert_eq!(comedy["movieCount"], expected);

    let movie = g.movie(99).movie;
    let data =
        app.data(r#"{ movie(id: "tt0000100") { similar(first: 4) { id genres year } } }"#, json!({})).await;
    let similar = data["movie"]["similar"].as_array().expect("similar");
    assert!(!similar.is_empty() && similar.len() <= 4);
    for s in similar {
        assert_ne!(s["id"], "tt0000100");
        assert!(s["genres"].as_array().expect("genres").contains(&json!(movie.genres[0].name())));
    }
}

#[tokio::test]
async fn invalid_ids_are_typed_errors() {
    let app = spawn_reader().await;
    for query in [
        r#"{ movie(id: "nm0000001") { id } }"#,
        r#"{ movie(id: "'; DROP") { id } }"#,
        r#"{ person(id: "tt1") { id } }"#,
    ] {
        let body = app.graphql(query, json!({})).await;
        assert_eq!(first_code(&body), "BAD_USER_INPUT", "{query}: {body}");
        assert!(body["errors"][0]["message"].as_str().expect("message").contains("ids look like"));
    }
}

#[tokio::test]
async fn get_requests_follow_the_spec() {
    let app = spawn_reader().await;
    let response = app
        .client
        .get(app.url("/graphql"))
        .query(&[
            ("query", "query($id: ID!) { movie(id: $id) { id } }"),
            ("variables", r#"{"id":"tt0000002"}"#),
        ])
        .header("accept", "application/graphql-response+json")
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("application/graphql-response+json")
    );
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["data"]["movie"]["id"], "tt0000002");
}

#[tokio::test]
async fn response_fields_follow_query_order() {
    let app = spawn_reader().await;
    let query = r#"{ genres { movieCount name } m: movie(id: "tt0000005") { similar(first: 2) { id } crew { job } cast(first: 2) { person { name id } character } title } }"#;
    let mut bodies = Vec::new();
    for _ in 0..5 {
        let response =
            app.client.post(app.url("/graphql")).json(&json!({ "query": query })).send().await.expect("post");
        bodies.push(response.text().await.expect("text"));
    }
    let body = &bodies[0];
    assert!(bodies.iter().all(|b| b == body), "identical queries give identical bodies");
    let at = |needle: &str| body.find(needle).unwrap_or_else(|| panic!("{needle} in {body}"));
    assert!(at("\"genres\"") < at("\"m\""));
    assert!(at("\"movieCount\"") < at("\"name\""));
    assert!(
        at("\"similar\"") < at("\"crew\"")
            && at("\"crew\"") < at("\"cast\"")
            && at("\"cast\"") < at("\"title\"")
    );
    assert!(at("\"character\"") > at("\"person\""));
}

/// What the gateway reports of its store's statements: over ScyllaDB, an unfiltered browse
/// page is one statement (its order's top partition) and a README browse one per year of its
/// range, read at once; the embedded backend sends none and reports none.
#[tokio::test]
async fn store_statements_are_reported_per_operation() {
    let app = spawn_reader().await;
    let figures = |op: &'static str| {
        let app = &app;
        async move {
            let labels = [("op", op)];
            (
                app.metric("store_statements_per_call_sum", &labels).await,
                app.metric("store_round_trips_per_call_sum", &labels).await,
                app.metric("store_statements_per_call_count", &labels).await,
            )
        }
    };
    let before = figures("browse").await;
    app.data(r#"{ browse(first: 20) { edges { node { id } } } }"#, json!({})).await;
    let unfiltered = figures("browse").await;
    app.data(
        r#"{ browse(genre: "Sci-Fi", yearFrom: 1990, yearTo: 1999, sort: RATING, first: 10) { edges { node { id } } } }"#,
        json!({}),
    )
    .await;
    let ranged = figures("browse").await;
    let delta = |a: (f64, f64, f64), b: (f64, f64, f64)| (b.0 - a.0, b.1 - a.1, b.2 - a.2);
    if crate::helpers::on_scylla() {
        assert_eq!(delta(before, unfiltered), (1.0, 1.0, 1.0), "(statements, round trips, calls)");
        assert_eq!(delta(unfiltered, ranged), (10.0, 1.0, 1.0), "(statements, round trips, calls)");
    } else {
        assert_eq!(ranged, (0.0, 0.0, 0.0), "the embedded backend sends no statements");
    }
}
