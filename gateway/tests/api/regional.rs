//! Two gateways of one region over real HTTP: one keyspace (the ScyllaDB backend, on the
//! in-process CQL stand-in) and one Redis Cluster of three masters (real `redis-server`
//! processes on loopback, stopped by PID). Entities and APQ registrations are shared, N
//! concurrent misses cost one store call, a rating taken by one gateway shows on the other
//! within the bound, a master killed under traffic fails no request, the rate limit holds
//! for the region rather than per gateway, and a flood of APQ registrations that fills the
//! cluster does not switch the tier off.

use std::time::{Duration, Instant};

use marquee_gateway::auth::{Authenticator, generate_pem};
use marquee_gateway::config::Config;
use marquee_gateway::config::RedisConfig;
use marquee_gateway::persisted::sha256_hex;
use marquee_redis_cluster::RedisCluster;
use serde_json::{Value, json};

use crate::helpers::{CATALOG, TestApp, scylla_config, seed_store, spawn_with, test_config};

/// Two gateways sharing a keyspace and a Redis Cluster.
struct Region {
    cluster: RedisCluster,
    config: Config,
    a: TestApp,
    b: TestApp,
    _dir: tempfile::TempDir,
    _keyspace: Option<marquee_cql_standin::KeyspaceGuard>,
}

async fn region(adjust: impl FnOnce(&mut Config)) -> Region {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3))
        .await
        .expect("starting")
        .expect("a Redis Cluster (is redis-server installed? `cargo xtask ci` installs it)");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = scylla_config(dir.path());
    let keyspace = seed_store(&store, &CATALOG);
    let key = dir.path().join("signing.pem");
    std::fs::write(&key, generate_pem().expect("key")).expect("write key");
    let mut config = test_config(dir.path());
    config.store = store;
    config.auth.signing_key_files = vec![key];
    config.auth.signing_keys = None;
    config.auth.dev_tokens = true;
    // Generous, so that a loaded test machine does not turn hits into misses.
    config.redis = Some(RedisConfig {
        seeds: cluster.seeds(),
        command_timeout_ms: marquee_gateway::config::Millis(500),
        ..Default::default()
    });
    adjust(&mut config);
    let a = spawn_with(config.clone()).await;
    let b = spawn_with(config.clone()).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while a.metric("cache_invalidation_bus_live", &[]).await < 1.0
        || b.metric("cache_invalidation_bus_live", &[]).await < 1.0
    {
        assert!(Instant::now() < deadline, "the gateways did not join the invalidation bus");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Region { cluster, config, a, b, _dir: dir, _keyspace: keyspace }
}

const MOVIE: &str = "query($m: ID!) { movie(id: $m) { id title } }";
const COUNT: &str = "query($m: ID!) { movie(id: $m) { rating { count } } }";

/// POSTs `query` and returns the response's status and body.
async fn post(app: &TestApp, token: Option<&str>, query: &str, variables: Value) -> (u16, Value) {
    let mut request =
        app.client.post(app.url("/graphql")).json(&json!({ "query": query, "variables": variables }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("post");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn store_calls(app: &TestApp, op: &str) -> f64 {
    app.metric("store_calls_total", &[("op", op)]).await
}

async fn l2(app: &TestApp, cache: &str, result: &str) -> f64 {
    app.metric("cache_requests_total", &[("cache", cache), ("tier", "l2"), ("result", result)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_region_shares_entities_and_persisted_queries_and_loads_a_miss_once() {
    let region = region(|c| c.rate_limit.enabled = false).await;
    let (a, b) = (&region.a, &region.b);

    // An entity read through a is found in Redis by b: no store call on b.
    let movie = json!({ "m": "tt0000042" });
    let from_a = a.data(MOVIE, movie.clone()).await;
    let before = store_calls(b, "movies").await;
    assert_eq!(b.data(MOVIE, movie).await, from_a);
    assert_eq!(store_calls(b, "movies").await, before, "b read a's entry from Redis");
    assert!(l2(b, "movies", "hit").await >= 1.0);

    // Single flight: 16 concurrent requests missing the same movie cost one store call.
    let before = store_calls(b, "movies").await;
    let requests = (0..16).map(|_| b.data(MOVIE, json!({ "m": "tt0000077" })));
    let answers = futures::future::join_all(requests).await;
    assert!(answers.iter().all(|answer| answer["movie"]["id"] == "tt0000077"), "{answers:?}");
    assert_eq!(store_calls(b, "movies").await - before, 1.0, "16 concurrent misses, one store read");

    // An APQ hash registered through a runs through b.
    let query = "{ genres { name movieCount } }";
    let hash = sha256_hex(query);
    let extensions = json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } }).to_string();
    let get = |app: &TestApp| {
        app.client.get(app.url("/graphql")).query(&[("extensions", extensions.as_str())]).send()
    };
    let unknown: Value = get(b).await.expect("get").json().await.expect("json");
    assert_eq!(unknown["errors"][0]["extensions"]["code"], "PERSISTED_QUERY_NOT_FOUND", "{unknown}");
    let registered = a
        .client
        .post(a.url("/graphql"))
        .json(&json!({ "query": query, "extensions": { "persistedQuery": { "version": 1, "sha256Hash": hash } } }))
        .send()
        .await
        .expect("register");
    assert_eq!(registered.status(), 200);
    let through_b = get(b).await.expect("get");
    assert_eq!(through_b.status(), 200);
    let body: Value = through_b.json().await.expect("json");
    assert!(body["data"]["genres"].as_array().is_some_and(|g| !g.is_empty()), "{body}");
    assert!(l2(b, "apq", "hit").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rating_taken_by_one_gateway_shows_on_the_other_within_a_second() {
    let region = region(|c| c.rate_limit.enabled = false).await;
    let (a, b) = (&region.a, &region.b);
    let auth = Authenticator::new(&region.config.auth).await.expect("auth");
    let alice = auth.issue_dev_user("alice", Duration::from_secs(600)).expect("token").token;
    let count = async |app: &TestApp| {
        app.data(COUNT, json!({ "m": "tt0000005" })).await["movie"]["rating"]["count"]
            .as_i64()
            .expect("count")
    };

    // b holds the totals in memory: reading them again costs no store call.
    let base = count(b).await;
    let calls = store_calls(b, "rating_totals").await;
    assert_eq!(count(b).await, base);
    assert_eq!(store_calls(b, "rating_totals").await, calls, "b answers from its own cache");

    let (status, rated) = post(a, Some(&alice), RATE, json!({ "m": "tt0000005", "s": 7 })).await;
    assert_eq!((status, rated.get("errors")), (200, None), "{rated}");
    let written = Instant::now();
    while count(b).await != base + 1 {
        assert!(written.elapsed() < Duration::from_secs(1), "b still shows the old totals after 1 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(b.metric("cache_invalidations_total", &[("event", "received")]).await >= 1.0);
    assert_eq!(count(a).await, base + 1, "and a reads its own write");
}

const RATE: &str = "mutation($m: ID!, $s: Int!) { rateMovie(movieId: $m, score: $s) { score } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_traffic_fails_no_request() {
    let mut region = region(|c| {
        c.rate_limit.per_second = 1_000_000;
        c.rate_limit.burst = 1_000_000;
    })
    .await;
    let stop_at = Instant::now() + Duration::from_secs(4);
    let mut workers = Vec::new();
    for (worker, app) in [&region.a, &region.b, &region.a, &region.b].into_iter().enumerate() {
        let client = app.client.clone();
        let url = app.url("/graphql");
        workers.push(tokio::spawn(async move {
            let (mut sent, mut failed) = (0u32, Vec::new());
            while Instant::now() < stop_at && sent < 5_000 {
                // Ids cycle over part of the catalog, so both tiers are hit and missed.
                let id = format!("tt{:07}", 1 + (sent * 4 + worker as u32) % 1_500);
                let response =
                    client.post(&url).json(&json!({ "query": MOVIE, "variables": { "m": id } })).send().await;
                sent += 1;
                match response {
                    Ok(r) if r.status() == 200 => {
                        let body: Value = r.json().await.unwrap_or(Value::Null);
                        if body.get("errors").is_some() || body["data"]["movie"]["id"] != id {
                            failed.push(body.to_string());
                        }
                    }
                    Ok(r) => failed.push(format!("status {}", r.status())),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (sent, failed)
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    region.cluster.kill(0).expect("kill a master");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let cluster = region.cluster;
    let mut cluster = tokio::task::spawn_blocking(move || {
        let mut cluster = cluster;
        cluster.restart(0).expect("restart");
        cluster
    })
    .await
    .expect("restarting");
    let (mut sent, mut failed) = (0, Vec::new());
    for worker in workers {
        let (s, f) = worker.await.expect("worker");
        sent += s;
        failed.extend(f);
    }
    assert!(
        failed.is_empty(),
        "{} of {sent} requests failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(sent > 100, "only {sent} requests were sent");
    let (a, b) = (&region.a, &region.b);
    let felt = l2(a, "movies", "error").await
        + l2(a, "movies", "skipped").await
        + l2(b, "movies", "error").await
        + l2(b, "movies", "skipped").await;
    assert!(felt > 0.0, "the kill never reached the cache tier");
    cluster.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_holds_for_the_region_and_falls_back_when_redis_is_gone() {
    let mut region = region(|c| {
        c.rate_limit.per_second = 1;
        c.rate_limit.burst = 4;
    })
    .await;
    let mut allowed = 0;
    for app in [&region.a, &region.a, &region.a, &region.a, &region.b, &region.b, &region.b, &region.b] {
        let (status, body) = post(app, None, MOVIE, json!({ "m": "tt0000001" })).await;
        match status {
            200 => allowed += 1,
            429 => assert_eq!(body["errors"][0]["extensions"]["code"], "RATE_LIMITED", "{body}"),
            other => panic!("status {other}: {body}"),
        }
    }
    // A burst of 4 for the region (plus at most one refilled during the test), not 4 per gateway.
    assert!((4..=5).contains(&allowed), "{allowed} of 8 allowed");
    assert_eq!(region.a.metric("rate_limiter_fallbacks_total", &[]).await, 0.0);

    for node in 0..3 {
        region.cluster.kill(node).expect("kill");
    }
    let (status, body) = post(&region.b, None, MOVIE, json!({ "m": "tt0000001" })).await;
    assert_eq!(status, 200, "b's own limiter decides while Redis is gone: {body}");
    assert!(region.b.metric("rate_limiter_fallbacks_total", &[]).await >= 1.0);
}

/// Registers `query` under its APQ hash through `app` (a stock client's POST).
async fn register(app: &TestApp, query: &str) -> u16 {
    let extensions = json!({ "persistedQuery": { "version": 1, "sha256Hash": sha256_hex(query) } });
    let response = app
        .client
        .post(app.url("/graphql"))
        .json(&json!({ "query": query, "extensions": extensions }))
        .send()
        .await
        .expect("register");
    response.status().as_u16()
}

/// A hash-only GET of `query`'s APQ hash through `app`: the status and the error code, if any.
async fn by_hash(app: &TestApp, query: &str) -> (u16, Value) {
    let extensions =
        json!({ "persistedQuery": { "version": 1, "sha256Hash": sha256_hex(query) } }).to_string();
    let response = app
        .client
        .get(app.url("/graphql"))
        .query(&[("extensions", extensions.as_str())])
        .send()
        .await
        .expect("get");
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, body["errors"][0]["extensions"]["code"].clone())
}

/// A query of about `bytes` bytes (a comment pads it), distinct per `n`.
fn padded(n: usize, bytes: usize) -> String {
    format!("# registration {n} {}\n{{ __typename }}", "x".repeat(bytes))
}

/// Clients flooding the region with APQ registrations: a cluster run with Redis's default
/// policy (`noeviction`) fills up and refuses writes, which must cost the region nothing but
/// the sharing of new entries (the tier stays up, reads keep hitting); run with `allkeys-lru`
/// as docs/redis.md tells operators to, it evicts and keeps sharing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apq_flood_fills_the_cluster_without_switching_the_tier_off() {
    let region = region(|c| c.rate_limit.enabled = false).await;
    let (a, b) = (&region.a, &region.b);
    let movie = json!({ "m": "tt0000042" });
    let from_a = a.data(MOVIE, movie.clone()).await;

    // Full under `noeviction`: every write is refused with OOM, reads are still answered.
    region.cluster.config_set("maxmemory-policy", "noeviction").expect("policy");
    region.cluster.config_set("maxmemory", "1").expect("maxmemory");
    for n in 0..40 {
        assert_eq!(register(a, &padded(n, 1_000)).await, 200, "registration {n} is answered");
    }
    assert!(a.metric("redis_writes_refused_total", &[]).await >= 40.0, "the cluster refused the writes");
    assert_eq!(a.metric("cache_l2_degraded", &[]).await, 0.0, "a full cluster is not a failing one");
    assert_eq!(by_hash(a, &padded(39, 1_000)).await.0, 200, "a keeps its own registration");
    assert_eq!(
        by_hash(b, &padded(39, 1_000)).await.1,
        "PERSISTED_QUERY_NOT_FOUND",
        "the refused registration was not shared (the client registers again through b)"
    );
    // Right after the refusals, b still reads a's entry from Redis: the breaker stayed closed.
    let (hits, calls) = (l2(b, "movies", "hit").await, store_calls(b, "movies").await);
    assert_eq!(b.data(MOVIE, movie).await, from_a);
    assert_eq!(l2(b, "movies", "hit").await, hits + 1.0, "b's lookup reached Redis and hit");
    assert_eq!(store_calls(b, "movies").await, calls);
    assert_eq!(l2(b, "movies", "skipped").await + l2(a, "movies", "skipped").await, 0.0);

    // Under `allkeys-lru` the flood evicts older keys and every registration is shared.
    region.cluster.config_set("maxmemory-policy", "allkeys-lru").expect("policy");
    region.cluster.config_set("maxmemory", "4mb").expect("maxmemory");
    let refused = a.metric("redis_writes_refused_total", &[]).await;
    let flood = 400;
    for n in 100..100 + flood {
        assert_eq!(register(a, &padded(n, 30_000)).await, 200, "registration {n} is answered");
    }
    assert_eq!(
        a.metric("redis_writes_refused_total", &[]).await,
        refused,
        "an evicting cluster refuses nothing"
    );
    let evicted: u64 = region
        .cluster
        .info("stats")
        .expect("info")
        .iter()
        .flat_map(|info| info.lines())
        .filter_map(|line| line.strip_prefix("evicted_keys:"))
        .map(|n| n.trim().parse::<u64>().expect("evicted_keys"))
        .sum();
    assert!(evicted > 0, "{flood} registrations of 30 kB fit in 3 × 4 MB only by eviction");
    assert_eq!(
        by_hash(b, &padded(100 + flood - 1, 30_000)).await.0,
        200,
        "the newest registration is shared"
    );
    assert_eq!(a.metric("cache_l2_degraded", &[]).await + b.metric("cache_l2_degraded", &[]).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_cluster_costs_one_timeout_per_second_and_keeps_the_staleness_bound() {
    let mut region = region(|c| {
        c.rate_limit.per_second = 1_000_000;
        c.rate_limit.burst = 1_000_000;
        if let Some(redis) = &mut c.redis {
            redis.command_timeout_ms = marquee_gateway::config::Millis(100);
        }
    })
    .await;
    let auth = Authenticator::new(&region.config.auth).await.expect("auth");
    let alice = auth.issue_dev_user("alice", Duration::from_secs(600)).expect("token").token;
    let count = async |app: &TestApp| {
        app.data(COUNT, json!({ "m": "tt0000009" })).await["movie"]["rating"]["count"]
            .as_i64()
            .expect("count")
    };
    let base = count(&region.b).await;
    assert_eq!(count(&region.b).await, base, "b holds the totals in memory");

    // Every node stops answering without closing its connections (a network that drops
    // packets): calls time out instead of failing fast, and no invalidation gets through.
    for node in 0..3 {
        region.cluster.freeze(node).expect("freeze");
    }
    let (status, rated) = post(&region.a, Some(&alice), RATE, json!({ "m": "tt0000009", "s": 3 })).await;
    assert_eq!((status, rated.get("errors")), (200, None), "the write does not need Redis: {rated}");
    let written = Instant::now();
    while count(&region.b).await != base + 1 {
        // The bus falls silent within a second, and b stops answering from its own memory.
        assert!(written.elapsed() < Duration::from_secs(2), "b still shows the old totals after 2 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(region.b.metric("cache_invalidation_bus_live", &[]).await, 0.0);

    let started = Instant::now();
    let mut sent = 0;
    while sent < 200 && started.elapsed() < Duration::from_secs(4) {
        let id = format!("tt{:07}", 100 + sent);
        let (status, body) = post(&region.a, None, MOVIE, json!({ "m": id })).await;
        assert_eq!((status, &body["data"]["movie"]["id"]), (200, &json!(id)), "{body}");
        sent += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    let a = &region.a;
    let waited = l2(a, "movies", "error").await;
    let skipped = l2(a, "movies", "skipped").await;
    // While the cluster fails, one call per second probes it and times out; the rest leave it
    // alone (the probe may be the rate limiter's, a heartbeat or an entity lookup).
    assert!(skipped > 0.0, "the breaker never opened");
    assert!(
        waited <= seconds.ceil() + 2.0,
        "{waited} lookups waited for a frozen cluster in {seconds:.1} s ({sent} requests)"
    );
    assert!(a.metric("rate_limiter_fallbacks_total", &[]).await >= 1.0);

    // Thawed: the bus is live again and b's cache is used again.
    for node in 0..3 {
        region.cluster.thaw(node).expect("thaw");
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while region.b.metric("cache_invalidation_bus_live", &[]).await < 1.0 {
        assert!(Instant::now() < deadline, "the bus did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count(&region.b).await, base + 1);
}

/// A gateway of another region: the same keyspace (on the stand-in, one data center: the rig
/// test shows two), its own Redis Cluster.
async fn other_region(region: &Region, name: &str) -> (RedisCluster, TestApp) {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3))
        .await
        .expect("starting")
        .expect("a second Redis Cluster");
    let mut config = region.config.clone();
    config.region = name.to_owned();
    config.redis = Some(RedisConfig {
        seeds: cluster.seeds(),
        command_timeout_ms: marquee_gateway::config::Millis(500),
        ..Default::default()
    });
    let app = spawn_with(config).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while app.metric("cache_invalidation_bus_live", &[]).await < 1.0 {
        assert!(Instant::now() < deadline, "the other region's gateway did not join its bus");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (cluster, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rating_taken_in_one_region_reaches_the_other_regions_caches_within_two_seconds() {
    let mut region = region(|c| c.rate_limit.enabled = false).await;
    let (eu_cluster, eu) = other_region(&region, "eu-west").await;
    let (a, b) = (&region.a, &region.b);
    let auth = Authenticator::new(&region.config.auth).await.expect("auth");
    let alice = auth.issue_dev_user("alice", Duration::from_secs(600)).expect("token").token;
    let count = async |app: &TestApp| {
        app.data(COUNT, json!({ "m": "tt0000011" })).await["movie"]["rating"]["count"]
            .as_i64()
            .expect("count")
    };

    // Both gateways of the first region hold the totals in memory (and in their Redis).
    let base = count(a).await;
    assert_eq!(count(b).await, base);
    let calls = store_calls(b, "rating_totals").await;
    assert_eq!(count(b).await, base);
    assert_eq!(store_calls(b, "rating_totals").await, calls, "b answers from its own cache");

    // A rating taken in the other region: neither of this region's gateways took it, its bus
    // carried nothing, yet both show it within 2 s, from the store's change log.
    let (status, rated) = post(&eu, Some(&alice), RATE, json!({ "m": "tt0000011", "s": 9 })).await;
    assert_eq!((status, rated.get("errors")), (200, None), "{rated}");
    let written = Instant::now();
    for app in [a, b] {
        while count(app).await != base + 1 {
            assert!(written.elapsed() < Duration::from_secs(2), "the old totals after 2 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    eprintln!("another region's rating reached both gateways' caches {:?} after it", written.elapsed());
    // Exactly one gateway of the region applied it for both (whichever claimed it first).
    let followed = async || {
        a.metric("cache_invalidations_total", &[("event", "followed")]).await
            + b.metric("cache_invalidations_total", &[("event", "followed")]).await
    };
    assert_eq!(followed().await, 1.0, "the change came from the log, applied once in the region");
    // Each gateway's follower says it reads both logs up to now (what ChangeFollowerBehind in
    // regions/monitoring/rules.yml watches).
    for app in [a, b] {
        let ticked = app.metric("change_follower_last_tick_timestamp_seconds", &[]).await;
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64();
        assert!((now - ticked).abs() < 5.0, "the follower last ticked at {ticked}, now {now}");
        for log in ["ratings", "catalog"] {
            assert_eq!(app.metric("change_follower_unread_seconds", &[("log", log)]).await, 0.0, "{log}");
        }
    }
    // ...and the region's totals stay cached after it: the next reads cost no store call.
    let calls = store_calls(b, "rating_totals").await;
    assert_eq!(count(b).await, base + 1);
    assert_eq!(store_calls(b, "rating_totals").await, calls);

    // With the other region's Redis gone, its writes still succeed at once, and still reach
    // this region's caches through the log.
    let movie12 = async |app: &TestApp| {
        app.data(COUNT, json!({ "m": "tt0000012" })).await["movie"]["rating"]["count"]
            .as_i64()
            .expect("count")
    };
    let base12 = movie12(a).await;
    assert_eq!(movie12(a).await, base12, "cached");
    drop(eu_cluster);
    let started = Instant::now();
    let (status, rated) = post(&eu, Some(&alice), RATE, json!({ "m": "tt0000012", "s": 4 })).await;
    assert_eq!((status, rated.get("errors")), (200, None), "{rated}");
    assert!(started.elapsed() < Duration::from_secs(2), "the write did not wait: {:?}", started.elapsed());
    let written = Instant::now();
    while movie12(a).await != base12 + 1 {
        assert!(written.elapsed() < Duration::from_secs(2), "the old totals after 2 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = followed().await;

    // This region's Redis stops answering while another region's change arrives: the claim
    // fails, and the change is claimed again once Redis answers (not taken for claimed by
    // another gateway, which would leave it applied by nobody).
    let deferred = async || {
        a.metric("cache_invalidations_total", &[("event", "follow_deferred")]).await
            + b.metric("cache_invalidations_total", &[("event", "follow_deferred")]).await
    };
    for node in 0..3 {
        region.cluster.freeze(node).expect("freeze");
    }
    let (status, rated) = post(&eu, Some(&alice), RATE, json!({ "m": "tt0000013", "s": 6 })).await;
    assert_eq!((status, rated.get("errors")), (200, None), "{rated}");
    let frozen = Instant::now();
    while deferred().await < 1.0 {
        assert!(frozen.elapsed() < Duration::from_secs(3), "no claim failed while Redis was frozen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for node in 0..3 {
        region.cluster.thaw(node).expect("thaw");
    }
    // Redis takes a few seconds to answer again after a freeze (reconnects, the breaker's
    // probe); the change waits for it, past the log's window of a few seconds.
    while followed().await < before + 1.0 {
        assert!(frozen.elapsed() < Duration::from_secs(20), "the deferred change was never applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("the deferred change was applied {:?} after Redis froze", frozen.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(followed().await, before + 1.0, "applied once, by one gateway");
}

const UPDATE_MOVIE: &str =
    "mutation($id: ID!, $input: MovieInput!) { updateMovie(id: $id, input: $input) { id title } }";

/// An editor's correction taken in another region reaches both of this region's gateways
/// within 2 s, through the catalog's change log in the store, applied once for the region.
/// On a real cluster only: catalog writes take a lock by lightweight transaction, which the
/// CQL stand-in does not run (CI runs this on Cassandra).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_editors_change_in_another_region_reaches_this_regions_caches_within_two_seconds() {
    if let Some(why) = marquee_cql_standin::without_lwt() {
        eprintln!("skipped: {why}");
        return;
    }
    let region = region(|c| c.rate_limit.enabled = false).await;
    let (_eu_cluster, eu) = other_region(&region, "eu-west").await;
    let (a, b) = (&region.a, &region.b);
    let auth = Authenticator::new(&region.config.auth).await.expect("auth");
    let editor = auth.issue_dev_editor("eddie", Duration::from_secs(600)).expect("token").token;
    let title = async |app: &TestApp| movie_title(app, "tt0000046").await;

    // Both gateways of this region hold the movie in their caches.
    let old = title(a).await;
    assert_eq!(title(b).await, old);
    let calls = store_calls(b, "movies").await;
    assert_eq!(title(b).await, old);
    assert_eq!(store_calls(b, "movies").await, calls, "b answers from its cache");
    let followed = async || {
        a.metric("cache_invalidations_total", &[("event", "followed")]).await
            + b.metric("cache_invalidations_total", &[("event", "followed")]).await
    };
    let before = followed().await;

    // Corrected in the other region: nothing reached this region's bus, yet both gateways show
    // it within 2 s.
    let input =
        json!({ "title": "Zyzzyva Quartermaine", "genres": ["Western"], "year": 1960, "releaseDate": null });
    let (status, updated) =
        post(&eu, Some(&editor), UPDATE_MOVIE, json!({ "id": "tt0000046", "input": input })).await;
    assert_eq!((status, updated.get("errors")), (200, None), "{updated}");
    let shown = until_titled([a, b], "tt0000046", "Zyzzyva Quartermaine", Duration::from_secs(2)).await;
    eprintln!("another region's correction reached both gateways {shown:?} after it");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(followed().await, before + 1.0, "the change came from the log, applied once in the region");
    // The derived rows were written with it: this region's search finds it by its new title.
    let found = a.data("{ search(query: \"zyzzyva\") { edges { node { id } } } }", json!({})).await;
    assert_eq!(found["search"]["edges"], json!([{ "node": { "id": "tt0000046" } }]));

    // A delta applied by `gateway import imdb --incremental` (its own store, as the command
    // opens it, no gateway's caches) reaches both gateways the same way.
    let old = movie_title(a, "tt0000047").await;
    assert_eq!(movie_title(b, "tt0000047").await, old);
    let delta = tempfile::tempdir().expect("delta dir");
    for (file, text) in [
        (
            "title.basics.tsv",
            "tconst\ttitleType\tprimaryTitle\toriginalTitle\tisAdult\tstartYear\tendYear\truntimeMinutes\tgenres\n\
             tt0000047\tmovie\tZyzzyva Nights\tZyzzyva Nights\t0\t2024\t\\N\t95\tDrama\n",
        ),
        ("title.principals.tsv", "tconst\tordering\tnconst\tcategory\tjob\tcharacters\n"),
        ("title.ratings.tsv", "tconst\taverageRating\tnumVotes\n"),
        ("name.basics.tsv", "nconst\tprimaryName\tbirthYear\tdeathYear\tprimaryProfession\tknownForTitles\n"),
        ("removed.tsv", "id\n"),
    ] {
        std::fs::write(delta.path().join(file), text).expect("delta file");
    }
    let command = marquee_gateway::store::open(&region.config.store).await.expect("the command's store");
    let edit = marquee_store::Edit { editor: "ops".into(), action: "import imdb --incremental".into() };
    let report = marquee_gateway::delta::apply(
        delta.path(),
        command.edits.as_ref(),
        edit,
        marquee_gateway::delta::Share::ALL,
        &mut |_, _| {},
    )
    .await
    .expect("the delta applies on ScyllaDB");
    assert_eq!(report.movies, 1, "{report}");
    let shown = until_titled([a, b], "tt0000047", "Zyzzyva Nights", Duration::from_secs(2)).await;
    eprintln!("a delta reached both gateways {shown:?} after it was applied");
    command.lifecycle.close().await.expect("close");

    // A delta applied by a command whose clock is 30 s behind (Debian's `faketime`) is listed
    // under a second the followers' 3 s window has left: their sweep of the catalog's log
    // finds it, long before the caches' TTL would have.
    let marquee_gateway::config::StoreConfig::Scylla(options) = &region.config.store else {
        panic!("a ScyllaDB region")
    };
    let replication: Vec<String> =
        options.replication.iter().map(|(dc, rf)| format!("\"{dc}\" = {rf}")).collect();
    let config_dir = tempfile::tempdir().expect("config dir");
    let config = config_dir.path().join("command.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nbackend = \"scylla\"\ncontact_points = {:?}\nkeyspace = \"{}\"\nlocal_dc = \"{}\"\nreplication = {{ {} }}\n",
            options.contact_points,
            options.keyspace,
            options.local_dc,
            replication.join(", ")
        ),
    )
    .expect("config");
    std::fs::write(
        delta.path().join("title.basics.tsv"),
        "tconst\ttitleType\tprimaryTitle\toriginalTitle\tisAdult\tstartYear\tendYear\truntimeMinutes\tgenres\n\
         tt0000048\tmovie\tZyzzyva Late\tZyzzyva Late\t0\t2024\t\\N\t95\tDrama\n",
    )
    .expect("delta file");
    let old = movie_title(a, "tt0000048").await;
    assert_eq!(movie_title(b, "tt0000048").await, old);
    let before = followed().await;
    let mut skewed = std::process::Command::new("faketime");
    skewed.args(["-f", "-30s", crate::helpers::BIN, "--config"]).arg(&config);
    skewed.args(["import", "imdb", "--incremental", "--dir"]).arg(delta.path());
    let output = tokio::task::spawn_blocking(move || crate::helpers::isolated(&mut skewed).output())
        .await
        .expect("task")
        .expect("faketime (`cargo xtask ci` installs it)");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // The sweep goes round in about 10 s on each gateway; the response cache alone keeps a
    // copy 60 s.
    let shown = until_titled([a, b], "tt0000048", "Zyzzyva Late", Duration::from_secs(25)).await;
    eprintln!("a delta listed 30 s late reached both gateways {shown:?} after it was applied");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(followed().await, before + 1.0, "found by a sweep, applied once in the region");
}

/// The title `app` shows for the movie `id`.
async fn movie_title(app: &TestApp, id: &str) -> String {
    app.data(MOVIE, json!({ "m": id })).await["movie"]["title"].as_str().expect("title").to_owned()
}

/// Waits until both of `apps` show `title` for the movie `id`, failing after `bound`; returns
/// how long it took.
async fn until_titled(apps: [&TestApp; 2], id: &str, title: &str, bound: Duration) -> Duration {
    let started = Instant::now();
    for app in apps {
        while movie_title(app, id).await != title {
            assert!(started.elapsed() < bound, "the old title of {id} after {bound:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    started.elapsed()
}

/// A cluster secured as ElastiCache runs with transit encryption and an AUTH token (TLS only,
/// `requirepass`): gateways with its CA and password share entities through it; a gateway
/// that cannot verify it, or has the wrong password, or no TLS, never uses it and still
/// answers every request from the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_tls_and_auth_is_shared_and_one_that_cannot_be_trusted_is_never_used() {
    let security = marquee_redis_cluster::Security {
        tls_names: Some(vec!["localhost".into()]),
        password: Some("correct horse battery staple".into()),
    };
    let cluster = tokio::task::spawn_blocking(move || RedisCluster::start_secured(3, &security))
        .await
        .expect("starting")
        .expect("a TLS Redis Cluster");
    let ca = cluster.ca_file().expect("the cluster's CA").to_owned();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = scylla_config(dir.path());
    let _keyspace = seed_store(&store, &CATALOG);
    let gateway = |tls: bool, ca: Option<std::path::PathBuf>, password: &str| {
        let mut config = test_config(dir.path());
        config.store = store.clone();
        config.auth.signing_keys = Some(generate_pem().expect("key").into());
        config.rate_limit.enabled = false;
        config.redis = Some(RedisConfig {
            // Seeds by name, as ElastiCache's configuration endpoint is: the certificate names
            // it, and nodes announced by address are checked against it.
            seeds: cluster.seeds().iter().map(|s| s.replace("127.0.0.1", "localhost")).collect(),
            command_timeout_ms: marquee_gateway::config::Millis(500),
            tls,
            tls_ca_file: ca,
            username: Some("default".into()),
            password: Some(password.to_owned().into()),
            ..Default::default()
        });
        spawn_with(config)
    };
    let password = "correct horse battery staple";
    let a = gateway(true, Some(ca.clone()), password).await;
    let b = gateway(true, Some(ca.clone()), password).await;
    let movie = json!({ "m": "tt0000042" });
    let expected = a.data(MOVIE, movie.clone()).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let before = store_calls(&b, "movies").await;
        assert_eq!(b.data(MOVIE, json!({ "m": "tt0000043" })).await["movie"]["id"], "tt0000043");
        let _ = a.data(MOVIE, movie.clone()).await;
        let hits_before = l2(&b, "movies", "hit").await;
        assert_eq!(b.data(MOVIE, movie.clone()).await, expected);
        if l2(&b, "movies", "hit").await > hits_before && store_calls(&b, "movies").await - before <= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "b never read a's entry from the TLS cluster");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let untrusted = [
        ("the wrong password", gateway(true, Some(ca.clone()), "wrong").await),
        ("no CA for a private certificate", gateway(true, None, password).await),
        ("plain text to a TLS-only cluster", gateway(false, None, password).await),
    ];
    for (why, app) in &untrusted {
        for id in ["tt0000042", "tt0000044", "tt0000045"] {
            let answer = app.data(MOVIE, json!({ "m": id })).await;
            assert_eq!(answer["movie"]["id"], id, "{why}: served from the store");
        }
        assert_eq!(l2(app, "movies", "hit").await, 0.0, "{why}: nothing read from the cluster");
        assert_eq!(app.metric("cache_l2_degraded", &[]).await, 1.0, "{why}: the tier is marked degraded");
    }
}
