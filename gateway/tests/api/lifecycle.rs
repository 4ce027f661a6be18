//! Restart persistence, readiness while draining, and graceful shutdown with a request in
//! flight.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use marquee_store::bulk::seed::{Generator, SeedOptions};

use marquee_gateway::config::StoreConfig;

use crate::helpers::{
    CATALOG, scylla_config, seed_into, seed_store, seeded_dir, spawn_with, store_config, test_config,
};

const QUERY: &str = r#"{ movie(id: "tt0000007") { title cast(first: 2) { person { name } } } }"#;

#[tokio::test]
async fn a_restart_keeps_all_data() {
    let dir = seeded_dir();
    let app = spawn_with(test_config(dir.path())).await;
    let before = app.data(QUERY, json!({})).await;
    app.stop().await.expect("clean stop");
    let app = spawn_with(test_config(dir.path())).await;
    let after = app.data(QUERY, json!({})).await;
    assert_eq!(before, after);
    assert!(after["movie"]["title"].is_string());
}

#[tokio::test]
async fn draining_turns_readiness_off_then_finishes_in_flight_requests() {
    let dir = seeded_dir();
    let mut config = test_config(dir.path());
    config.http.drain_delay_ms = marquee_gateway::config::Millis(600);
    let mut app = spawn_with(config).await;
    assert_eq!(app.client.get(app.url("/readyz")).send().await.expect("readyz").status(), 200);

    // A request in flight: headers and half the body sent before shutdown begins.
    let body = serde_json::to_vec(&json!({ "query": QUERY })).expect("json");
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.expect("connect");
    let head = format!(
        "POST /graphql HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        app.addr,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    let (first, rest) = body.split_at(body.len() / 2);
    stream.write_all(first).await.expect("first half");
    tokio::time::sleep(Duration::from_millis(100)).await;

    app.begin_stop();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let ready = app.client.get(app.url("/readyz")).send().await.expect("still answering while draining");
    assert_eq!(ready.status(), 503);
    assert_eq!(app.metric("gateway_ready", &[]).await, 0.0, "draining is out of rotation");
    // Traffic that still arrives during the drain delay is served.
    let served =
        app.client.post(app.url("/graphql")).json(&json!({ "query": QUERY })).send().await.expect("served");
    assert_eq!(served.status(), 200);

    // Wait until the listener has closed (the drain delay is over), then finish the request.
    let closed = async {
        while tokio::net::TcpStream::connect(app.addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .expect("the listener closes after the drain delay");
    stream.write_all(rest).await.expect("second half");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"title\""), "{response}");

    tokio::time::timeout(Duration::from_secs(10), app.stopped())
        .await
        .expect("stops in time")
        .expect("clean stop");
    // The store was closed: the data directory can be opened again.
    marquee_gateway::store::open(&store_config(dir.path())).await.expect("store released");
}

/// Embedded: a seed run beside a serving gateway publishes a new generation, which the gateway
/// serves within `store.catalog_poll_ms`, without a restart: the movie and its cast through
/// the response cache and the entity cache are the new generation's, users' data is kept,
/// editors' changes go to the new generation, and the replaced one is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reseeding_switches_generations_while_a_gateway_serves() {
    let dir = seeded_dir();
    let mut config = test_config(dir.path());
    if let StoreConfig::Embedded(embedded) = &mut config.store {
        embedded.catalog_poll_ms = marquee_gateway::config::Millis(100);
    }
    let app = spawn_with(config).await;
    let get = async || -> serde_json::Value {
        let response =
            app.client.get(app.url("/graphql")).query(&[("query", QUERY)]).send().await.expect("GET");
        assert_eq!(response.status(), 200);
        response.json::<serde_json::Value>().await.expect("json")["data"].clone()
    };
    let before = get().await;
    assert_eq!(get().await, before, "cached");
    let other = SeedOptions { seed: CATALOG.seed + 1, ..CATALOG };
    let _keyspace = seed_into(dir.path(), &other); // beside a running gateway
    let expected = Generator::new(&other).movie(6);
    let published = std::time::Instant::now();
    let now = loop {
        let now = get().await;
        if now["movie"]["title"] == expected.movie.title.as_str() {
            break now;
        }
        assert_eq!(now, before, "the old generation, whole, until the switch");
        assert!(published.elapsed() < Duration::from_secs(10), "still serving the old catalog: {now}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let generations = std::fs::read_dir(dir.path())
        .expect("ls")
        .filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().starts_with("catalog-")))
        .count();
    assert_eq!(generations, 1, "the replaced generation was removed");
    app.stop().await.expect("clean stop");
    let restarted = spawn_with(test_config(dir.path())).await;
    assert_eq!(
        restarted.data(QUERY, json!({})).await,
        now,
        "the switched gateway answered as a fresh one does"
    );
}

/// ScyllaDB: a catalog load published while a gateway serves is picked up without a restart
/// (within `store.catalog_poll_ms`): the movie, its cast and the people read through the entity
/// cache and the response cache are the new generation's, although both held the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_on_scylladb_serves_a_newly_published_catalog_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let StoreConfig::Scylla(mut options) = scylla_config(dir.path()) else { unreachable!("a scylla config") };
    options.catalog_poll_ms = 200;
    let store = StoreConfig::Scylla(options);
    let first = SeedOptions { movies: 300, people: Some(200), seed: 5 };
    let _keyspace = seed_store(&store, &first);
    let app = spawn_with(test_config_over(dir.path(), &store)).await;
    let get = async || -> serde_json::Value {
        let response =
            app.client.get(app.url("/graphql")).query(&[("query", QUERY)]).send().await.expect("GET");
        assert_eq!(response.status(), 200);
        response.json::<serde_json::Value>().await.expect("json")["data"].clone()
    };
    let hits = async || app.metric("cache_requests_total", &[("cache", "response"), ("result", "hit")]).await;
    let before = get().await;
    assert_eq!(before["movie"]["title"], Generator::new(&first).movie(6).movie.title);
    assert_eq!(get().await, before);
    assert!(hits().await >= 1.0, "the second GET came from the response cache");

    let second = SeedOptions { seed: 6, ..first };
    let _second = seed_store(&store, &second);
    let expected = Generator::new(&second).movie(6).movie.title;
    assert_ne!(before["movie"]["title"], expected, "the two catalogs differ");
    let published = std::time::Instant::now();
    loop {
        let now = get().await;
        if now["movie"]["title"] == expected {
            // Its cast is the new generation's too (credits and people from the entity cache).
            let names: Vec<&serde_json::Value> =
                now["movie"]["cast"].as_array().expect("cast").iter().map(|c| &c["person"]["name"]).collect();
            let restarted = spawn_with(test_config_over(dir.path(), &store)).await;
            let cold = restarted.data(QUERY, json!({})).await;
            let cold_names: Vec<&serde_json::Value> = cold["movie"]["cast"]
                .as_array()
                .expect("cast")
                .iter()
                .map(|c| &c["person"]["name"])
                .collect();
            assert_eq!(names, cold_names, "the running gateway answers as a fresh one does");
            break;
        }
        assert!(published.elapsed() < Duration::from_secs(10), "still serving the old catalog: {now}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("a newly published catalog was served {:?} after its load returned", published.elapsed());
}

/// A test deployment over `store` (with a signing key of its own, as a shared store needs).
fn test_config_over(dir: &std::path::Path, store: &StoreConfig) -> marquee_gateway::config::Config {
    let mut config = test_config(dir);
    config.store = store.clone();
    config.auth.signing_keys = Some(marquee_gateway::auth::generate_pem().expect("key").into());
    config
}

/// `/readyz` answers from the background store probe: a store that stops answering keeps the
/// gateway in rotation for `UNREADY_AFTER` (a pause of every gateway's store at once must not
/// empty the region), then `/readyz` turns 503 with the reason, and 200 again by itself once
/// the store answers. The store is a CQL stand-in node of this test's own, taken down by
/// closing its listener (its data outlives it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_rides_out_a_store_pause_and_reports_an_outage() {
    use marquee_cql_standin::{DEFAULT_DATA_CENTER, StandIn};
    use marquee_gateway::store::health::{PROBE_INTERVAL, UNREADY_AFTER};
    use std::time::Instant;

    let node = StandIn::new(DEFAULT_DATA_CENTER).expect("stand-in");
    let (addr, serving) = node.serve_on(([127, 0, 0, 1], 0).into()).await.expect("serve");
    let dir = tempfile::tempdir().expect("tempdir");
    let StoreConfig::Scylla(mut options) = scylla_config(dir.path()) else { unreachable!("a scylla config") };
    options.contact_points = vec![addr.to_string()];
    options.local_dc = DEFAULT_DATA_CENTER.into();
    options.replication = [(DEFAULT_DATA_CENTER.to_owned(), 1)].into();
    options.await_schema_agreement = false;
    options.request_timeout_ms = 500;
    let store = StoreConfig::Scylla(options);
    let _keyspace = seed_store(&store, &SeedOptions { movies: 50, people: Some(30), seed: 5 });
    let app = spawn_with(test_config_over(dir.path(), &store)).await;
    let ready = async || -> (u16, serde_json::Value) {
        let response = app.client.get(app.url("/readyz")).send().await.expect("readyz");
        (response.status().as_u16(), response.json().await.expect("json"))
    };
    assert_eq!(ready().await.0, 200);

    serving.abort();
    assert!(serving.await.expect_err("aborted").is_cancelled());
    let gone = Instant::now();
    // The probe's last answer came at most one interval before the node went.
    let surely_ready = UNREADY_AFTER - PROBE_INTERVAL - Duration::from_millis(500);
    let mut checks = 0;
    while gone.elapsed() < surely_ready {
        let (status, body) = ready().await;
        if gone.elapsed() < surely_ready {
            assert_eq!(status, 200, "out of rotation {:?} after the store went: {body}", gone.elapsed());
            checks += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(checks >= 5, "only {checks} checks while the store was gone");
    let store_error =
        app.client.post(app.url("/graphql")).json(&json!({ "query": QUERY })).send().await.expect("query");
    let store_error: serde_json::Value = store_error.json().await.expect("json");
    assert_eq!(store_error["errors"][0]["extensions"]["code"], "SERVICE_UNAVAILABLE", "{store_error}");

    let deadline = gone + UNREADY_AFTER + PROBE_INTERVAL + Duration::from_secs(5);
    let body = loop {
        let (status, body) = ready().await;
        if status == 503 {
            break body;
        }
        assert!(Instant::now() < deadline, "still ready {:?} after the store went", gone.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(body["status"], "store unavailable", "{body}");
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
    // What the alerts see (regions/monitoring/rules.yml): this gateway out of rotation.
    assert_eq!(app.metric("gateway_ready", &[]).await, 0.0);

    let (_, _serving) = node.serve_on(addr).await.expect("serve again on the same address");
    let back = Instant::now();
    while ready().await.0 != 200 {
        assert!(back.elapsed() < Duration::from_secs(30), "not ready 30 s after the store came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(app.data(QUERY, json!({})).await["movie"]["title"].is_string());
    assert_eq!(app.metric("gateway_ready", &[]).await, 1.0);
}
