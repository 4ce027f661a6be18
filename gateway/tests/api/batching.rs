//! The batching guarantee: a page of 20 movies with their casts and each cast member's person
//! costs one store call per entity kind per level, read from `store_calls_total`; entities
//! already loaded cost none (the entity cache).

use std::collections::HashSet;

use serde_json::json;

use crate::helpers::spawn_app;

const OPS: [&str; 6] = ["browse", "movies", "credits", "people", "filmographies", "similar"];

async fn calls(app: &crate::helpers::TestApp) -> Vec<f64> {
    let mut out = Vec::new();
    for op in OPS {
        out.push(app.metric("store_calls_total", &[("op", op), ("region", "test-region")]).await);
    }
    out
}

#[tokio::test]
async fn nested_page_costs_one_store_call_per_kind_per_level() {
    let app = spawn_app().await;
    let before = calls(&app).await;
    let people_batches_before = app.metric("dataloader_batch_size_sum", &[("loader", "person")]).await;
    let data = app
        .data(
            r#"{ browse(first: 20) { edges { node { id title cast(first: 10) { character person { id name } } } } } }"#,
            json!({}),
        )
        .await;
    let after = calls(&app).await;
    let delta: Vec<f64> = before.iter().zip(&after).map(|(b, a)| a - b).collect();
    assert_eq!(delta, [1.0, 1.0, 1.0, 1.0, 0.0, 0.0], "calls per op {OPS:?}");

    let edges = data["browse"]["edges"].as_array().expect("edges");
    assert_eq!(edges.len(), 20);
    let people: HashSet<&str> = edges
        .iter()
        .flat_map(|e| e["node"]["cast"].as_array().expect("cast"))
        .map(|c| c["person"]["id"].as_str().expect("id"))
        .collect();
    assert!(people.len() > 50, "the page should involve many people, got {}", people.len());
    let batched =
        app.metric("dataloader_batch_size_sum", &[("loader", "person")]).await - people_batches_before;
    assert_eq!(batched as usize, people.len(), "one batch carried every distinct person");

    // One level deeper: each person's filmography, and each credit's movie.
    let before = calls(&app).await;
    app.data(
        r#"{ browse(first: 20) { edges { node { cast(first: 5) { person { filmography(first: 3) { edges { node { movie { title } } } } } } similar(first: 3) { id } } } } }"#,
        json!({}),
    )
    .await;
    let after = calls(&app).await;
    let delta: Vec<f64> = before.iter().zip(&after).map(|(b, a)| a - b).collect();
    // browse; movies for the page, then (one batch) for similar and filmography movies at the
    // level below; filmographies; similar. The page's credits and people were loaded by the
    // query above: the entity cache answers them without a store call.
    assert_eq!(delta[0], 1.0, "browse");
    assert!(delta[1] <= 2.0, "movies (the page's own are cached): {}", delta[1]);
    assert_eq!(&delta[2..], [0.0, 0.0, 1.0, 1.0], "credits, people (cached), filmographies, similar");
}
