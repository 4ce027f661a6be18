//! The rig end to end, as its users meet it: `xtask rig up` starts both regions of
//! `regions/` (the gateways built by this workspace's test build), clients in each region's
//! subnet resolve the API's name through the rig's geo-DNS and send through their region's
//! CDN edge, and `xtask rig down` stops everything by PID, also when a check fails.
//!
//! What it shows: a client lands in its own region; a rating written through eu-west reads
//! back through us-east, and reaches us-east's caches and both regions' edges within 2 s (and
//! so does an editor's correction taken in us-east, through the catalog's change log); the
//! edge caches a partner's persisted GET (miss, then hit with an `Age`), answers
//! `If-None-Match` with 304, never stores a signed-in caller's answer; only requests through
//! an edge (which adds the origin secret) pass the load balancer, and a gateway reached
//! around it believes no `X-Forwarded-For`; `terraform apply` of
//! `terraform/environments/local` drains a region from geo-DNS (and refuses to drain them
//! all); the failover drill (`xtask drill`, short) loses no acknowledged rating, its planned
//! drain fails no request, and with the two data centers of the rig's Cassandra cluster cut
//! apart both regions keep taking ratings, every one readable in both and every total exact
//! once joined; a gateway drained with SIGTERM under load leaves the load balancer
//! with no failed request; with every gateway of a region gone the edge still answers what it
//! holds, sends the reads it does not hold to the other region, refuses writes at once with a
//! GraphQL-shaped 503, and geo-DNS moves the region's clients away.
//!
//! It uses the rig's fixed loopback ports (regions/*.toml): stop a rig you run by hand first.
//! The edge's rules for stale copies, which take longer than a test to show with the
//! catalog's hour-long answers, are checked against a scripted origin (`regions/rig/edge.vtc`).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use marquee_bench::dns::{ClientRoute, RegionResolver};
use reqwest::dns::{Name, Resolve};
use serde_json::{Value, json};

const DNS: &str = "127.0.0.1:18053";
const API: &str = "http://api.marquee.test:18080";
const US_CLIENT: &str = "127.10.0.1";
const EU_CLIENT: &str = "127.20.0.1";
const MOVIE_CARD: &str = "movie-card-v1";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").to_owned()
}

fn xtask(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xtask")).args(args).current_dir(root()).output().expect("running xtask")
}

/// The rig, stopped by `xtask rig down` when dropped.
struct Rig;

impl Rig {
    fn up() -> Rig {
        let gateway = root().join("target/debug/gateway");
        assert!(gateway.exists(), "{} is built by the workspace's tests", gateway.display());
        let down = xtask(&["rig", "down"]);
        assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
        let rig = Rig;
        let up = xtask(&["rig", "up", "--gateway-bin", gateway.to_str().expect("utf-8")]);
        assert!(
            up.status.success(),
            "rig up failed:\n{}\n{}",
            String::from_utf8_lossy(&up.stdout),
            String::from_utf8_lossy(&up.stderr)
        );
        rig
    }

    /// The PIDs of the parts whose name starts with `prefix`, from `target/rig/rig.json`.
    fn pids(prefix: &str) -> Vec<u32> {
        let state: Value =
            serde_json::from_slice(&std::fs::read(root().join("target/rig/rig.json")).expect("rig.json"))
                .expect("json");
        state["parts"]
            .as_array()
            .expect("parts")
            .iter()
            .filter(|p| p["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
            .map(|p| u32::try_from(p["pid"].as_u64().expect("pid")).expect("pid"))
            .collect()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let down = xtask(&["rig", "down"]);
        if !down.status.success() {
            eprintln!("rig down: {}", String::from_utf8_lossy(&down.stderr));
        }
    }
}

fn route(client: &str) -> ClientRoute {
    ClientRoute { dns: DNS.parse().expect("dns"), source: client.parse().expect("client") }
}

/// A client of the region `client` belongs to.
fn client_in(client: &str) -> reqwest::Client {
    marquee_bench::load::client(Duration::from_secs(10), Some(&route(client)))
}

async fn resolve(client: &str) -> Vec<IpAddr> {
    let resolver = RegionResolver::new(&route(client));
    let addrs = resolver.resolve(Name::from_str("api.marquee.test").expect("name")).await.expect("resolves");
    addrs.map(|a: SocketAddr| a.ip()).collect()
}

/// What geo-DNS's health checks declared, from its log: which edge went down or up, and why.
fn health_checks() -> String {
    let log = std::fs::read_to_string(root().join("target/rig/logs/geo-DNS.log")).unwrap_or_default();
    log.lines().filter(|line| line.contains("monitoring declaring")).collect::<Vec<_>>().join("\n")
}

/// The rig's Prometheus HTTP API at `path_and_query`, as JSON.
async fn prometheus(path_and_query: &str) -> Value {
    reqwest::get(format!("http://127.0.0.1:19090{path_and_query}"))
        .await
        .expect("prometheus")
        .json()
        .await
        .expect("json")
}

/// The rig's Prometheus's answer to the instant query `expr` (encoded here).
async fn prometheus_query(expr: &str) -> Value {
    let mut url = reqwest::Url::parse("http://127.0.0.1:19090/api/v1/query").expect("url");
    url.query_pairs_mut().append_pair("query", expr);
    reqwest::get(url).await.expect("prometheus").json().await.expect("json")
}

/// The region whose gateway answers `/readyz` for a new client at `client`.
async fn region_of(client: &str) -> String {
    let ready: Value = client_in(client)
        .get(format!("{API}/readyz"))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    ready["region"].as_str().expect("a region").to_owned()
}

fn kill(pid: u32, signal: &str) {
    let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().expect("kill");
    assert!(status.success());
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
}

/// A development token for `user`, signed with the rig's key (every region verifies it).
fn token(user: &str) -> String {
    issue(&["--user", user])
}

/// A development token for `user` with the editor role.
fn editor_token(user: &str) -> String {
    issue(&["--user", user, "--editor"])
}

/// `gateway token ARGS` with the rig's key.
fn issue(args: &[&str]) -> String {
    let key = root().join("target/rig/signing-key.pem");
    let output = Command::new(root().join("target/debug/gateway"))
        .args(["--config", "regions/us-east.toml", "token"])
        .args(args)
        .env("MARQUEE_AUTH__SIGNING_KEY_FILES", format!("[\"{}\"]", key.display()))
        .env("MARQUEE_AUTH__DEV_TOKENS", "true")
        .env("MARQUEE_LOG__FILTER", "error")
        .current_dir(root())
        .output()
        .expect("gateway token");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("utf-8").trim().to_owned()
}

async fn post(client: &reqwest::Client, token: Option<&str>, query: &str) -> Value {
    let mut request = client.post(format!("{API}/graphql")).json(&json!({ "query": query }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("post");
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

/// POSTs `query` through the client's region and returns the response itself.
async fn post_response(client: &reqwest::Client, token: Option<&str>, query: &str) -> reqwest::Response {
    let mut request = client.post(format!("{API}/graphql")).json(&json!({ "query": query }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("post")
}

/// A persisted GET of the partner's movie card.
async fn movie_card(client: &reqwest::Client, movie: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    persisted(client, MOVIE_CARD, movie, headers).await
}

/// A persisted GET of the partner's operation `id` for `movie`.
async fn persisted(
    client: &reqwest::Client,
    id: &str,
    movie: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let variables = json!({ "id": movie }).to_string();
    let mut request = client.get(format!("{API}/graphql")).query(&[("id", id), ("variables", &variables)]);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("get")
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// `terraform apply` of the rig's environment with `drained_regions` set to `regions` (HCL).
fn drain(regions: &str) -> std::process::Output {
    xtask(&[
        "terraform",
        "-chdir=terraform/environments/local",
        "apply",
        "-input=false",
        "-auto-approve",
        "-no-color",
        &format!("-var=drained_regions={regions}"),
    ])
}

#[test]
fn two_regions_on_one_machine() {
    let _rig = Rig::up();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(checks());
}

async fn checks() {
    let (us, eu) = (client_in(US_CLIENT), client_in(EU_CLIENT));

    // Each client lands in its own region: its edge by DNS, its gateways behind it.
    for _ in 0..10 {
        for (client, edge) in [(US_CLIENT, [127, 0, 1, 1]), (EU_CLIENT, [127, 0, 2, 1])] {
            let answers = resolve(client).await;
            assert_eq!(
                answers,
                [IpAddr::from(edge)],
                "{client}; geo-DNS's health checks:\n{}",
                health_checks()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (client, region) in [(&us, "us-east"), (&eu, "eu-west")] {
        let ready: Value =
            client.get(format!("{API}/readyz")).send().await.expect("readyz").json().await.expect("json");
        assert_eq!(ready["region"], region, "{ready}");
    }

    // Only what came through an edge reaches a gateway: the edge adds the origin secret. A
    // client going around its edge to the load balancer is refused; one reaching a gateway
    // directly, even from the proxies' own network and naming another client in
    // X-Forwarded-For, is taken for itself (its anonymous token carries its own address).
    let around = eu.post("http://127.0.0.1:18110/graphql").json(&json!({ "query": "{ genres { name } }" }));
    let refused = around.send().await.expect("load balancer");
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.expect("a GraphQL body");
    assert_eq!(body["errors"][0]["extensions"]["code"], "FORBIDDEN", "{body}");
    let health = eu.get("http://127.0.0.1:18110/readyz/region").send().await.expect("health");
    assert_eq!(health.status(), 200, "the health URL stays open to the health checks");
    let address_of = |token: &Value| -> String {
        use base64::Engine as _;
        let token = token["token"].as_str().expect("a token");
        let claims = token.split('.').nth(1).expect("claims");
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims).expect("base64");
        serde_json::from_slice::<Value>(&claims).expect("json")["addr"].as_str().expect("addr").to_owned()
    };
    let direct: Value = reqwest::Client::new()
        .post("http://127.0.0.1:18111/auth/anonymous")
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .expect("gateway")
        .json()
        .await
        .expect("token");
    assert_eq!(address_of(&direct), "127.0.0.1", "a spoofed X-Forwarded-For without the secret: {direct}");
    let through: Value =
        eu.post(format!("{API}/auth/anonymous")).send().await.expect("edge").json().await.expect("token");
    assert_eq!(address_of(&through), EU_CLIENT, "through the edge the client is named: {through}");

    // Every gateway found its region's Redis Cluster by name, through [dns] (the rig's DNS):
    // the cache tier is up and the invalidation bus live.
    for gateway in ["127.0.0.1:18111", "127.0.0.1:18112", "127.0.0.1:18211", "127.0.0.1:18212"] {
        let started = Instant::now();
        loop {
            let metrics = reqwest::get(format!("http://{gateway}/metrics"))
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text");
            let value = |name: &str| {
                metrics
                    .lines()
                    .find(|l| l.starts_with(name))
                    .and_then(|l| l.rsplit(' ').next())
                    .map(str::to_owned)
            };
            let (degraded, live) = (value("cache_l2_degraded"), value("cache_invalidation_bus_live"));
            if degraded.as_deref() == Some("0") && live.as_deref() == Some("1") {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{gateway}: degraded {degraded:?}, bus live {live:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // Prometheus scrapes every gateway, each series labelled with its region.
    let started = Instant::now();
    loop {
        let answer: Value = prometheus("/api/v1/query?query=up").await;
        let mut up: Vec<String> = answer["data"]["result"]
            .as_array()
            .map(|series| {
                series
                    .iter()
                    .filter(|s| s["value"][1] == "1")
                    .map(|s| s["metric"]["instance"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        up.sort();
        if up == ["127.0.0.1:18111", "127.0.0.1:18112", "127.0.0.1:18211", "127.0.0.1:18212"] {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "scraped and up: {up:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let regions: Value =
        prometheus("/api/v1/query?query=count%20by%20(region)%20(http_requests_total)").await;
    let mut labelled: Vec<&str> = regions["data"]["result"]
        .as_array()
        .expect("result")
        .iter()
        .filter_map(|s| s["metric"]["region"].as_str())
        .collect();
    labelled.sort_unstable();
    assert_eq!(labelled, ["eu-west", "us-east"], "{regions}");

    // It evaluates Marquee's alerting rules (regions/monitoring/rules.yml), every one healthy,
    // and counts both gateways of each region in rotation.
    let rules: Value = prometheus("/api/v1/rules").await;
    let loaded: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
        .collect();
    assert!(loaded.iter().any(|r| r["name"] == "RegionHasNoGatewayInRotation"), "{rules}");
    assert!(loaded.iter().all(|r| r["health"] != "err"), "a rule fails to evaluate: {rules}");
    // ...and sends what fires to the rig's Alertmanager.
    let alertmanagers: Value = prometheus("/api/v1/alertmanagers").await;
    let active = &alertmanagers["data"]["activeAlertmanagers"];
    assert!(
        active
            .as_array()
            .is_some_and(|a| a.iter().any(|m| m["url"].as_str().is_some_and(|u| u.contains(":19093/")))),
        "{alertmanagers}"
    );
    let started = Instant::now();
    loop {
        let answer: Value = prometheus("/api/v1/query?query=region:gateways_in_rotation:sum").await;
        let mut in_rotation: Vec<(String, String)> = answer["data"]["result"]
            .as_array()
            .expect("result")
            .iter()
            .map(|s| {
                (s["metric"]["region"].as_str().unwrap_or_default().to_owned(), s["value"][1].to_string())
            })
            .collect();
        in_rotation.sort();
        let two = "\"2\"".to_owned();
        if in_rotation == [("eu-west".to_owned(), two.clone()), ("us-east".to_owned(), two)] {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "gateways in rotation: {in_rotation:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // One gateway of each region is its rating reconciler, and its passes are recent.
    let started = Instant::now();
    loop {
        let query = "max by (region) (store_reconciler_lease_held) == 1 and on (region) \
                     (time() - max by (region) (store_reconciler_last_pass_timestamp_seconds) < 30)";
        let answer = prometheus_query(query).await;
        let mut reconciling: Vec<&str> = answer["data"]["result"]
            .as_array()
            .expect("result")
            .iter()
            .filter_map(|s| s["metric"]["region"].as_str())
            .collect();
        reconciling.sort_unstable();
        if reconciling == ["eu-west", "us-east"] {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(40), "regions with a live reconciler: {answer}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // A request sent with a W3C traceparent through the region's edge (Varnish) and load
    // balancer (HAProxy) continues that trace in the gateway, which exports it to the rig's
    // Jaeger: the gateway's request span is the client's span's child.
    let (trace, client_span) = ("5ca1ab1e0000000000000000c0ffee01", "00000000000dec0d");
    let traced = us
        .post(format!("{API}/graphql"))
        .header("traceparent", format!("00-{trace}-{client_span}-01"))
        .json(
            &json!({ "query": r#"{ movie(id: "tt0000042") { title cast(first: 2) { person { name } } } }"# }),
        )
        .send()
        .await
        .expect("post");
    assert_eq!(traced.status(), 200);
    let started = Instant::now();
    let found = loop {
        let answer =
            reqwest::get(format!("http://127.0.0.1:19686/api/traces/{trace}")).await.expect("jaeger");
        if answer.status() == 200 {
            let body: Value = answer.json().await.expect("json");
            let spans = body["data"][0]["spans"].as_array().cloned().unwrap_or_default();
            if spans.iter().any(|s| s["operationName"] == "dataloader.batch")
                && spans.iter().any(|s| s["operationName"] == "POST /graphql")
            {
                break body;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the trace reached Jaeger");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let spans = found["data"][0]["spans"].as_array().expect("spans");
    let request = spans.iter().find(|s| s["operationName"] == "POST /graphql").expect("the request span");
    let parents: Vec<&Value> = request["references"].as_array().expect("references").iter().collect();
    assert!(
        parents.iter().any(|r| r["refType"] == "CHILD_OF" && r["spanID"] == client_span),
        "the gateway's span continues the client's: {request}"
    );
    let process = request["processID"].as_str().expect("process");
    assert_eq!(found["data"][0]["processes"][process]["serviceName"], "marquee-gateway-us-east", "{found}");

    // A rating written through eu-west reads back through us-east (below).
    let alice = token("alice");

    // ...and reaches us-east's caches within 2 s: both us-east gateways hold the movie's
    // totals (in memory and in the region's Redis) when eu-west takes a rating of it.
    let totals = r#"{ movie(id: "tt0000043") { rating { count } } }"#;
    let count = |body: Value| body["data"]["movie"]["rating"]["count"].as_i64().expect("count");
    let base = count(post(&us, None, totals).await);
    for _ in 0..4 {
        assert_eq!(count(post(&us, None, totals).await), base);
    }
    let rated =
        post(&eu, Some(&alice), r#"mutation { rateMovie(movieId: "tt0000043", score: 8) { score } }"#).await;
    assert_eq!(rated["data"]["rateMovie"]["score"], 8, "{rated}");
    let written = Instant::now();
    // Several reads per check: the load balancer spreads them over both gateways.
    loop {
        let mut counts = Vec::new();
        for _ in 0..4 {
            counts.push(count(post(&us, None, totals).await));
        }
        if counts.iter().all(|c| *c == base + 1) {
            break;
        }
        assert!(written.elapsed() < Duration::from_secs(2), "us-east still shows {counts:?} after 2 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("an eu-west rating reached us-east's caches {:?} after it was taken", written.elapsed());

    let rated =
        post(&eu, Some(&alice), r#"mutation { rateMovie(movieId: "tt0000042", score: 7) { score } }"#).await;
    assert_eq!(rated["data"]["rateMovie"]["score"], 7, "{rated}");
    // The data centers are 150 ms apart: the rating is in us-east once replicated (a user's
    // own region reads its writes at once; geo-DNS keeps a user in one region).
    let written = Instant::now();
    loop {
        let mine = post(&us, Some(&alice), r#"{ movie(id: "tt0000042") { myRating { score } } }"#).await;
        if mine["data"]["movie"]["myRating"]["score"] == 7 {
            break;
        }
        assert!(
            written.elapsed() < Duration::from_secs(2),
            "not in us-east 2 s after eu-west took it: {mine}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("an eu-west rating read back through us-east {:?} after it was taken", written.elapsed());

    // The edge: a partner's persisted GET is a miss, then a hit with its age.
    let first = movie_card(&us, "tt0000077", &[]).await;
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "x-cache"), "MISS");
    let etag = header(&first, "etag").to_owned();
    assert!(!etag.is_empty());
    let card = first.text().await.expect("body");
    let second = movie_card(&us, "tt0000077", &[]).await;
    assert_eq!((second.status().as_u16(), header(&second, "x-cache")), (200, "HIT"));
    assert!(header(&second, "age").parse::<u64>().is_ok(), "an Age header");
    assert_eq!(second.text().await.expect("body"), card);
    // ...whatever the client library adds to `extensions`, in any parameter order.
    let apollo = us
        .get(format!("{API}/graphql"))
        .query(&[
            ("variables", r#"{"id":"tt0000077"}"#),
            (
                "extensions",
                r#"{"clientLibrary":{"name":"@apollo/client","version":"4.0.0"},"persistedQuery":{"version":1,"sha256Hash":"movie-card-v1"}}"#,
            ),
        ])
        .send()
        .await
        .expect("get");
    let apollo_first = header(&apollo, "x-cache").to_owned();
    let apollo = us
        .get(format!("{API}/graphql"))
        .query(&[
            (
                "extensions",
                r#"{"clientLibrary":{"name":"@apollo/client","version":"4.1.0"},"persistedQuery":{"version":1,"sha256Hash":"movie-card-v1"}}"#,
            ),
            ("variables", r#"{"id":"tt0000077"}"#),
        ])
        .send()
        .await
        .expect("get");
    assert_eq!(
        (apollo_first.as_str(), header(&apollo, "x-cache")),
        ("MISS", "HIT"),
        "one entry per operation"
    );
    // A conditional GET is answered by the edge.
    let conditional = movie_card(&us, "tt0000077", &[("if-none-match", &etag)]).await;
    assert_eq!((conditional.status().as_u16(), header(&conditional, "x-cache")), (304, "HIT"));

    // A partner's cached persisted GET of a movie's rating, at both regions' edges, shows a
    // rating taken in eu-west within 2 s: the responses name the movie as a surrogate key,
    // eu-west's gateway purges its edge, and the us-east gateway that applies the change
    // from the log purges us-east's.
    let rating = async |client: &reqwest::Client| {
        let response = persisted(client, "movie-rating-v1", "tt0000045", &[]).await;
        assert_eq!(response.status(), 200);
        let cache = header(&response, "x-cache").to_owned();
        assert_eq!(header(&response, "xkey"), "", "surrogate keys stay at the edge");
        let body: Value = response.json().await.expect("json");
        (body["data"]["movie"]["rating"]["count"].as_i64().expect("count"), cache)
    };
    let (base, _) = rating(&us).await;
    for client in [&us, &eu] {
        let _ = rating(client).await;
        assert_eq!(rating(client).await, (base, "HIT".to_owned()), "cached at the edge");
    }
    let rated =
        post(&eu, Some(&alice), r#"mutation { rateMovie(movieId: "tt0000045", score: 6) { score } }"#).await;
    assert_eq!(rated["data"]["rateMovie"]["score"], 6, "{rated}");
    let written = Instant::now();
    for (client, region) in [(&eu, "eu-west"), (&us, "us-east")] {
        loop {
            let (count, _) = rating(client).await;
            if count == base + 1 {
                break;
            }
            assert!(
                written.elapsed() < Duration::from_secs(2),
                "{region}'s edge still shows {count} after 2 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!("{region}'s edge shows the new rating {:?} after it was taken", written.elapsed());
    }
    // ...and caches the new answer again. A client cannot purge it.
    assert_eq!(rating(&us).await, (base + 1, "HIT".to_owned()));
    let purge = us
        .request(reqwest::Method::from_bytes(b"PURGE").expect("method"), format!("{API}/"))
        .header("xkey-purge", "tt0000045 ratings")
        .send()
        .await
        .expect("purge");
    assert_eq!(purge.status(), 403, "only the region's gateways may purge");
    assert_eq!(rating(&us).await, (base + 1, "HIT".to_owned()), "still cached");

    // An editor's correction taken in us-east reaches a partner's cached movie card at both
    // regions' edges within 2 s: us-east's gateway purges its edge as it applies the change,
    // and the eu-west gateway that claims it from the catalog's change log purges eu-west's.
    let card_title = async |client: &reqwest::Client| {
        let response = movie_card(client, "tt0000046", &[]).await;
        assert_eq!(response.status(), 200);
        let cache = header(&response, "x-cache").to_owned();
        let body: Value = response.json().await.expect("json");
        (body["data"]["movie"]["title"].as_str().expect("title").to_owned(), cache)
    };
    let (old_title, _) = card_title(&us).await;
    assert_ne!(old_title, "Zyzzyva Quartermaine", "each rig serves a freshly seeded catalog");
    for client in [&us, &eu] {
        let _ = card_title(client).await;
        assert_eq!(card_title(client).await, (old_title.clone(), "HIT".to_owned()), "cached at the edge");
    }
    let editor = editor_token("eddie");
    let corrected = post(
        &us,
        Some(&editor),
        r#"mutation { updateMovie(id: "tt0000046", input: { title: "Zyzzyva Quartermaine" }) { title } }"#,
    )
    .await;
    assert_eq!(corrected["data"]["updateMovie"]["title"], "Zyzzyva Quartermaine", "{corrected}");
    let written = Instant::now();
    for (client, region) in [(&us, "us-east"), (&eu, "eu-west")] {
        while card_title(client).await.0 != "Zyzzyva Quartermaine" {
            assert!(
                written.elapsed() < Duration::from_secs(2),
                "{region}'s edge shows the old title after 2 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!("{region}'s edge shows the correction {:?} after it was taken", written.elapsed());
    }

    // A signed-in caller's answer is never stored, so never served to anyone else.
    let bob = token("bob");
    let url = format!("{API}/graphql");
    let private_query = [("query", r#"{ movie(id: "tt0000042") { myRating { score } } }"#)];
    for _ in 0..2 {
        let response = us.get(&url).query(&private_query).bearer_auth(&alice).send().await.expect("get");
        assert_eq!(header(&response, "x-cache"), "PASS");
        assert!(header(&response, "cache-control").contains("private"));
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["data"]["movie"]["myRating"]["score"], 7, "{body}");
    }
    let response = us.get(&url).query(&private_query).bearer_auth(&bob).send().await.expect("get");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["data"]["movie"]["myRating"], Value::Null, "bob sees his own answer: {body}");

    // Every query of the SREs' dashboard (regions/monitoring/dashboard.json) runs on the rig's
    // Prometheus and, now that both regions have served traffic, finds series (the alerts
    // panel only when one fires).
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("regions/monitoring/dashboard.json")).expect("dashboard"),
    )
    .expect("JSON");
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a query").replace("$region", ".*");
            // A rate needs two scrapes (5 s apart) of what the traffic above counted.
            let started = Instant::now();
            loop {
                let answer = prometheus_query(&expr).await;
                assert_eq!(answer["status"], "success", "{}: {expr}: {answer}", panel["title"]);
                if expr.contains("ALERTS")
                    || answer["data"]["result"].as_array().is_some_and(|r| !r.is_empty())
                {
                    break;
                }
                if started.elapsed() > Duration::from_secs(30) {
                    let raw = prometheus("/api/v1/query?query=http_requests_total").await;
                    panic!(
                        "{}: {expr} finds no series on the rig: {answer}\nhttp_requests_total: {raw}",
                        panel["title"]
                    );
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            queried += 1;
        }
    }
    assert!(queried >= 15, "{queried} dashboard queries");

    // An SRE drains eu-west the way production does it, with Terraform: the apply re-renders
    // the geo-DNS zone from the traffic policy and reloads PowerDNS, and EU clients move to
    // us-east. Draining every region is refused and changes nothing; undraining brings the
    // EU clients back.
    let us_edge = IpAddr::from([127, 0, 1, 1]);
    let eu_edge = IpAddr::from([127, 0, 2, 1]);
    let drained = drain(r#"["eu-west"]"#);
    assert!(drained.status.success(), "drain: {}", String::from_utf8_lossy(&drained.stderr));
    let started = Instant::now();
    while resolve(EU_CLIENT).await != [us_edge] {
        assert!(started.elapsed() < Duration::from_secs(5), "EU clients were not moved by the drain");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "terraform apply (eu-west drained): EU clients resolve to us-east {:?} after it",
        started.elapsed()
    );
    assert_eq!(resolve(US_CLIENT).await, [us_edge]);
    assert_eq!(region_of(EU_CLIENT).await, "us-east", "a new EU client is served by us-east");
    let everything = drain(r#"["eu-west", "us-east"]"#);
    assert!(!everything.status.success(), "draining every region is refused");
    let said = String::from_utf8_lossy(&everything.stdout).into_owned()
        + &String::from_utf8_lossy(&everything.stderr);
    assert!(said.contains("Refusing to drain every region"), "{said}");
    for client in [US_CLIENT, EU_CLIENT] {
        assert_eq!(resolve(client).await, [us_edge], "a refused apply changes nothing");
    }
    let restored = drain("[]");
    assert!(restored.status.success(), "undrain: {}", String::from_utf8_lossy(&restored.stderr));
    let started = Instant::now();
    while resolve(EU_CLIENT).await != [eu_edge] {
        assert!(started.elapsed() < Duration::from_secs(5), "EU clients did not return to eu-west");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(resolve(US_CLIENT).await, [us_edge]);

    // The failover drill, short: eu-west drained with Terraform and its gateways stopped,
    // started, undrained; then SIGKILLed, its load balancer blackholed, its edge killed, its
    // Redis Cluster killed, each restarted, under load from both regions. The planned drain
    // and the stop after it fail nothing, the unplanned loss of every gateway fails no GET
    // (the edge sends them to us-east), and no acknowledged rating is lost (the drill exits
    // non-zero then too).
    let out = root().join("target/drill-test");
    let drill = xtask(&[
        "drill",
        "--phase-secs",
        "4",
        "--clients",
        "2",
        "--rate",
        "5",
        "--partition-secs",
        "15",
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert!(
        drill.status.success(),
        "the drill failed:\n{}\n{}",
        String::from_utf8_lossy(&drill.stdout),
        String::from_utf8_lossy(&drill.stderr)
    );
    let results: Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).expect("results.json"))
            .expect("json");
    assert!(results["writes"]["acknowledged"].as_u64().is_some_and(|n| n > 0), "{}", results["writes"]);
    assert_eq!(results["writes"]["lost"], 0);
    let steps = results["steps"].as_array().expect("steps");
    let step = |label: &str| steps.iter().find(|s| s["event"]["label"] == label).expect(label);
    for planned in ["drain", "stop"] {
        for region in ["eu-west", "us-east"] {
            let failed = &step(planned)["clients"][region]["failed"];
            assert_eq!(failed, 0, "the planned {planned} failed {region} requests: {}", step(planned));
        }
    }
    // The report lists each step's alerts; a planned drain, and the stop of the drained
    // region's gateways, page nobody (the drain silences the region's alerts).
    for planned in ["drain", "stop"] {
        let alerts = step(planned)["alerts"].as_array().expect("the step's alerts");
        assert!(
            alerts.iter().all(|a| a["severity"] != "page" || a["silenced"] == true),
            "the planned {planned} paged: {alerts:?}"
        );
    }
    let killed = &step("kill")["clients"]["eu-west"];
    let (gets, failed_gets) =
        (killed["gets"].as_u64().expect("gets"), killed["failed_gets"].as_u64().expect("n"));
    assert!(gets > 0 && failed_gets * 100 <= gets, "GETs failed while eu-west had no gateway: {killed}");
    // Cut apart, both regions keep taking ratings in their own data center; once joined, every
    // rating is readable in both, and every total the drill changed is exact in both.
    for region in ["eu-west", "us-east"] {
        let cut = &step("partition")["clients"][region];
        assert!(
            cut["writes"].as_u64().is_some_and(|n| n > 0),
            "no rating sent from {region} while cut: {cut}"
        );
        assert_eq!(
            cut["failed_writes"], 0,
            "ratings failed in {region} while the data centers were cut apart: {cut}"
        );
    }
    let partition = &results["partition"];
    assert!(partition["ratings_before_heal"].as_u64().is_some_and(|n| n > 0), "{partition}");
    let found_after = partition["ratings_found_after_heal_s"].as_f64().unwrap_or(f64::MAX);
    assert!(found_after < 90.0, "ratings not readable everywhere within 90 s of the heal: {partition}");
    let exact_after = partition["totals_exact_after_heal_s"].as_f64().unwrap_or(f64::MAX);
    assert!(exact_after < found_after + 30.0, "totals not exact within 30 s of the replay: {partition}");
    // ...and each region's caches and edge caught up: partners read the same rating of every
    // movie rated during the cut through either region's edge.
    assert!(partition["movies_compared"].as_u64().is_some_and(|n| n > 0), "{partition}");
    let agree_after = partition["answers_agree_after_heal_s"].as_f64().unwrap_or(f64::MAX);
    assert!(agree_after < found_after + 30.0, "the edges disagreed 30 s after the replay: {partition}");
    assert!(out.join("failover.svg").exists() && out.join("report.md").exists());

    // A gateway drained with SIGTERM under load: no request fails. Eight us-east clients, each
    // at 40 requests a second (under the per-client rate limit), for six seconds.
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut workers = Vec::new();
    for worker in 0..8u64 {
        let client = client_in(&format!("127.10.0.{}", 11 + worker));
        let (sent, failed) = (sent.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            let mut pace = tokio::time::interval(Duration::from_millis(25));
            let mut i = worker;
            while Instant::now() < deadline && sent.load(Ordering::Relaxed) < 5_000 {
                pace.tick().await;
                i += 8;
                let query = format!(r#"{{ movie(id: "tt{:07}") {{ title }} }}"#, 1 + i % 4000);
                let status =
                    match client.post(format!("{API}/graphql")).json(&json!({ "query": query })).send().await
                    {
                        Ok(response) => response.status().as_u16(),
                        Err(_) => 0,
                    };
                sent.fetch_add(1, Ordering::Relaxed);
                if status != 200 {
                    eprintln!("drain: a request got {status}");
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let gateways = Rig::pids("us-east gateway");
    assert_eq!(gateways.len(), 2);
    kill(gateways[0], "TERM");
    for worker in workers {
        worker.await.expect("worker");
    }
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(sent > 100, "load was sent: {sent}");
    assert_eq!(failed, 0, "{failed} of {sent} requests failed while a gateway drained");
    assert!(!alive(gateways[0]), "the drained gateway has stopped");

    // Every gateway of us-east gone: the edge answers what it holds, sends the reads it does
    // not hold to eu-west's load balancer, and refuses a POST at once (it may be a write: it
    // is never sent to another region).
    kill(gateways[1], "KILL");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let held = movie_card(&us, "tt0000077", &[]).await;
    assert_eq!((held.status().as_u16(), header(&held, "x-cache")), (200, "HIT"));
    assert_eq!(held.text().await.expect("body"), card);
    // (Movies outside the drill's hot set, so no edge holds them yet.)
    for (i, movie) in ["tt0000901", "tt0000902", "tt0000903"].iter().enumerate() {
        let started = Instant::now();
        let elsewhere = movie_card(&us, movie, &[]).await;
        assert_eq!(elsewhere.status(), 200, "read {i} answered by the next region");
        assert_eq!(header(&elsewhere, "x-marquee-edge-fallback"), "1");
        assert!(started.elapsed() < Duration::from_secs(2), "without waiting: {:?}", started.elapsed());
        let body: Value = elsewhere.json().await.expect("json");
        assert!(body["data"]["movie"]["title"].is_string() && body.get("errors").is_none(), "{body}");
    }
    // Once the edge's probe has seen the region down (1 s), a POST is refused by the edge.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = Instant::now();
    let write = post_response(
        &us,
        Some(&token("carol")),
        "mutation { rateMovie(movieId: \"tt0000078\", score: 7) { score } }",
    )
    .await;
    assert_eq!(write.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(2), "failed fast: {:?}", started.elapsed());
    assert_eq!(header(&write, "retry-after"), "5");
    let refusal: Value = write.json().await.expect("a JSON body");
    assert_eq!(refusal["errors"][0]["extensions"]["code"], "ORIGIN_UNAVAILABLE", "{refusal}");

    // ...and geo-DNS moves us-east's clients to eu-west once the region's health URL fails.
    let started = Instant::now();
    while resolve(US_CLIENT).await != [IpAddr::from([127, 0, 2, 1])] {
        assert!(started.elapsed() < Duration::from_secs(20), "us-east clients were not moved");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "geo-DNS moved us-east's clients to eu-west {:?} after the last gateway died",
        started.elapsed()
    );
    assert_eq!(region_of(US_CLIENT).await, "eu-west", "a new us-east client is served by eu-west");
}

/// The edge's VCL against Varnish's own test tool (`varnishtest`, from Debian's `varnish`):
/// a scripted origin lets it show what the rig's real gateways cannot in a test's time, since
/// their answers live an hour: stale-while-revalidate, stale-if-error after a failed refresh
/// and with no healthy origin, and the cache key. See `regions/rig/edge.vtc`.
#[test]
fn the_edge_serves_stale_copies_and_keys_as_documented() {
    let edge = root().join("regions/rig/edge.vcl");
    let output = Command::new("varnishtest")
        .arg("-D")
        .arg(format!("edge={}", edge.display()))
        .arg(root().join("regions/rig/edge.vtc"))
        .output()
        .expect("varnishtest (Debian's varnish; `cargo xtask ci` installs it)");
    assert!(
        output.status.success(),
        "regions/rig/edge.vtc failed:\n{}",
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|l| !l.contains("vsl|"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
