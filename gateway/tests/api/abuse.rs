//! Requests an attacker would send, each small, each of a kind that once cost seconds of CPU or
//! gigabytes of memory (the documents are in `schema/tests/fixtures/adversarial/`): each must
//! now be refused before it runs, or be answered within a small budget. The last test runs
//! them against the real binary and holds the process to budgets of CPU time and peak memory.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use marquee_gateway::config::RateLimitConfig;

use crate::helpers::{
    BIN, TestApp, first_code, isolated, seeded_dir, served_url, spawn_app, spawn_with, test_config,
};

const FAN_OUT: &str = include_str!("../../../schema/tests/fixtures/adversarial/fragment-fan-out.graphql");
const INTROSPECTION_FAN_OUT: &str =
    include_str!("../../../schema/tests/fixtures/adversarial/introspection-fan-out.graphql");
const INTROSPECTION_NESTING: &str =
    include_str!("../../../schema/tests/fixtures/adversarial/introspection-nesting.graphql");
const VARIABLE_DEFAULTS: &str =
    include_str!("../../../schema/tests/fixtures/adversarial/variable-defaults.graphql");
const UNUSED_SPREADS: &str =
    include_str!("../../../schema/tests/fixtures/adversarial/unused-spreads.graphql");
const REPEATED_SPREADS: &str =
    include_str!("../../../schema/tests/fixtures/adversarial/repeated-spreads.graphql");
const FRAGMENT_CYCLE: &str =
    include_str!("../../../schema/tests/fixtures/adversarial/fragment-cycle.graphql");
const INTROSPECTION: &str = include_str!("../../../schema/tests/fixtures/introspection.graphql");

/// Every adversarial document, with the code it is refused with.
const REFUSED: [(&str, &str, &str); 7] = [
    ("fragment fan-out", FAN_OUT, "QUERY_TOO_COMPLEX"),
    ("aliased introspection fan-out", INTROSPECTION_FAN_OUT, "TOO_MANY_ALIASES"),
    ("nested introspection lists", INTROSPECTION_NESTING, "QUERY_TOO_COMPLEX"),
    ("page sizes in variable defaults", VARIABLE_DEFAULTS, "QUERY_TOO_COMPLEX"),
    ("a fragment spread by a thousand unused ones", UNUSED_SPREADS, "QUERY_TOO_COMPLEX"),
    ("repeated spreads of one fragment", REPEATED_SPREADS, "QUERY_TOO_COMPLEX"),
    ("fragments spreading each other in a cycle", FRAGMENT_CYCLE, "GRAPHQL_VALIDATION_FAILED"),
];

async fn post(app: &TestApp, query: &str, variables: Value) -> reqwest::Response {
    app.client
        .post(app.url("/graphql"))
        .header("accept", "application/graphql-response+json")
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .expect("post")
}

#[tokio::test]
async fn adversarial_documents_are_refused_before_anything_runs() {
    let app = spawn_app().await;
    for (what, query, code) in REFUSED {
        let calls = app.request_store_calls().await;
        let response = post(&app, query, json!({})).await;
        assert_eq!(response.status(), 400, "{what}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(first_code(&body), code, "{what}: {body}");
        assert!(body.get("data").is_none_or(Value::is_null), "{what}: nothing executed");
        assert_eq!(app.request_store_calls().await, calls, "{what}: no store call");
    }
    // The variable-default document runs when the variable is sent small.
    let small = post(&app, VARIABLE_DEFAULTS, json!({ "n": 2 })).await;
    assert_eq!(small.status(), 200);
    let body: Value = small.json().await.expect("json");
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(body["data"]["a0"]["edges"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn the_standard_introspection_query_still_runs() {
    let app = spawn_app().await;
    let body = app.data(INTROSPECTION, json!({})).await;
    assert_eq!(body["__schema"]["queryType"]["name"], "Query");
    let types = body["__schema"]["types"].as_array().expect("types");
    assert!(types.iter().any(|t| t["name"] == "Movie"), "Movie is described");
}

#[tokio::test]
async fn skip_and_include_see_variable_defaults() {
    let app = spawn_app().await;
    let query = r#"query($full: Boolean = false, $brief: Boolean = true) {
        movie(id: "tt0000001") { title year @include(if: $full) runtimeMinutes @skip(if: $brief) } }"#;
    let movie = &app.data(query, json!({})).await["movie"];
    assert!(movie.get("title").is_some());
    assert!(movie.get("year").is_none(), "@include(if: false) by default: {movie}");
    assert!(movie.get("runtimeMinutes").is_none(), "@skip(if: true) by default: {movie}");
    let sent = &app.data(query, json!({ "full": true, "brief": false })).await["movie"];
    assert!(sent.get("year").is_some() && sent.get("runtimeMinutes").is_some(), "{sent}");
}

#[tokio::test]
async fn the_response_budget_ends_what_the_estimate_lets_through() {
    let dir = seeded_dir();
    let mut config = test_config(dir.path());
    config.graphql.limits.max_response_fields = 200;
    let app = spawn_with(config).await;
    // 1 + 100 × 3 estimated, under the complexity limit; over 200 fields when it runs.
    let response = post(&app, "{ browse(first: 100) { edges { node { id title } } } }", json!({})).await;
    let body: Value = response.json().await.expect("json");
    assert_eq!(first_code(&body), "RESPONSE_TOO_LARGE", "{body}");
    assert!(body["data"].is_null(), "no partial data: {body}");
    assert_eq!(body["errors"].as_array().map(Vec::len), Some(1), "one error, not one per field");
    let fits = app.data("{ browse(first: 20) { edges { node { id title } } } }", json!({})).await;
    assert_eq!(fits["browse"]["edges"].as_array().map(Vec::len), Some(20));
}

/// Writes `request` on a fresh connection and reads until the server closes it or 10 s pass.
async fn raw(app: &TestApp, request: &[u8]) -> String {
    let mut socket = TcpStream::connect(app.addr).await.expect("connect");
    // The server may answer (and close) before the whole request is written.
    let _ = socket.write_all(request).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
}

fn json_body(response: &str) -> Value {
    let (_, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {response}"))
}

#[tokio::test]
async fn errors_from_the_http_layer_itself_are_graphql_shaped() {
    let dir = seeded_dir();
    let mut config = test_config(dir.path());
    config.http.max_header_bytes = 128 * 1024;
    let wide = spawn_with(config).await;
    let app = spawn_app().await;

    let header = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(40_000));
    let response = raw(&app, header.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 431 "), "{response}");
    assert!(response.contains("content-type: application/json"), "{response}");
    assert_eq!(first_code(&json_body(&response)), "REQUEST_HEADER_FIELDS_TOO_LARGE");

    let uri = format!("GET /graphql?query={} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
    let response = raw(&wide, uri.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 414 "), "{response}");
    assert_eq!(first_code(&json_body(&response)), "URI_TOO_LONG");

    let response = raw(&app, b"BLAH BLAH BLAH\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 400 "), "{response}");
    assert_eq!(first_code(&json_body(&response)), "BAD_REQUEST");

    // The router's own refusals (a method a route does not take) get bodies too.
    let response = app.client.post(app.url("/healthz")).send().await.expect("post");
    assert_eq!(response.status(), 405);
    assert!(response.headers().contains_key("allow"));
    assert_eq!(first_code(&response.json().await.expect("json")), "METHOD_NOT_ALLOWED");
    assert!(app.metric("http_connections_closed_total", &[("reason", "protocol_error")]).await >= 2.0);
}

/// Sends `request` and reads one response (head and `content-length` body).
async fn exchange(socket: &mut TcpStream, request: &str) -> String {
    socket.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    let mut byte = [0u8; 1];
    while !response.ends_with(b"\r\n\r\n") {
        assert_eq!(socket.read(&mut byte).await.expect("read"), 1, "closed mid-head: {response:?}");
        response.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&response).to_ascii_lowercase();
    let length: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    let mut content = vec![0u8; length];
    socket.read_exact(&mut content).await.expect("body");
    response.extend_from_slice(&content);
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn refusals_keep_the_connection_or_say_they_close_it() {
    let dir = seeded_dir();
    let mut config = test_config(dir.path());
    config.rate_limit = RateLimitConfig { enabled: true, per_second: 1, burst: 3 };
    let app = spawn_with(config).await;
    let get = "GET /graphql?query=%7Bgenres%7Bname%7D%7D HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer not.a.token\r\n\r\n";
    // Refusals of requests without a body (401s, then 429s once the address is spent) leave
    // the connection as it was.
    let mut socket = TcpStream::connect(app.addr).await.expect("connect");
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let response = exchange(&mut socket, get).await;
        assert!(response.contains("\"code\""), "a GraphQL-shaped body: {response}");
        assert!(!response.to_ascii_lowercase().contains("connection: close"), "{response}");
        statuses.push(response[9..12].to_owned());
    }
    assert_eq!(statuses[..3], ["401", "401", "401"], "{statuses:?}");
    assert!(statuses[3..].iter().all(|s| s == "429"), "{statuses:?}");
    let response = exchange(&mut socket, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 200"), "the same connection still serves: {response}");

    // A refusal decided before the body was read says the connection closes, and it does.
    let body = r#"{"query":"{ genres { name } }"}"#;
    let post = format!(
        "POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut socket = TcpStream::connect(app.addr).await.expect("connect");
    let response = exchange(&mut socket, &post).await;
    assert!(response.starts_with("HTTP/1.1 429"), "{response}");
    assert!(response.to_ascii_lowercase().contains("connection: close"), "{response}");
    assert!(closed_by_server(&mut socket).await);

    // A request whose body was read keeps its connection.
    let app = spawn_app().await;
    let post = post.replace("Authorization: Bearer x\r\n", "");
    let mut socket = TcpStream::connect(app.addr).await.expect("connect");
    for _ in 0..3 {
        let response = exchange(&mut socket, &post).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(!response.to_ascii_lowercase().contains("connection: close"), "{response}");
    }
}

#[tokio::test]
async fn two_authorization_headers_are_a_bad_request() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/graphql"))
        .header("authorization", "Bearer one")
        .header("authorization", "Bearer two")
        .json(&json!({ "query": "{ genres { name } }" }))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 400);
    let challenge = response.headers()["www-authenticate"].to_str().expect("ascii").to_owned();
    assert!(challenge.contains("invalid_request"), "{challenge}");
    assert_eq!(first_code(&response.json().await.expect("json")), "BAD_REQUEST");
}

#[tokio::test]
async fn bad_tokens_are_checked_at_the_address_rate_only() {
    let dir = seeded_dir();
    let mut config = test_config(dir.path());
    config.rate_limit = RateLimitConfig { enabled: true, per_second: 1, burst: 3 };
    let app = spawn_with(config).await;
    let mut statuses = Vec::new();
    for i in 0..10 {
        let response = app
            .client
            .post(app.url("/graphql"))
            .bearer_auth(format!("not.a.token{i}"))
            .json(&json!({ "query": "{ genres { name } }" }))
            .send()
            .await
            .expect("post");
        statuses.push(response.status().as_u16());
    }
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert!((3..=4).contains(&checked), "the burst (plus at most one refill) is checked: {statuses:?}");
    assert!(statuses.iter().skip(checked).all(|s| *s == 429), "then refused unchecked: {statuses:?}");
}

/// Reads from `socket` until the server closes it; false if it is still open after 10 s.
async fn closed_by_server(socket: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    read.await.is_ok()
}

#[tokio::test]
async fn silent_slow_and_idle_connections_are_closed() {
    let dir = seeded_dir();
    let mut config = test_config(dir.path());
    config.http.header_read_timeout_ms = marquee_gateway::config::Millis(300);
    config.http.idle_timeout_ms = marquee_gateway::config::Millis(600);
    let app = spawn_with(config).await;

    // Connects and never sends a byte.
    let mut silent = TcpStream::connect(app.addr).await.expect("connect");
    // Sends a request head one byte at a time, slower than the header limit allows.
    let mut slow = TcpStream::connect(app.addr).await.expect("connect");
    let trickle = tokio::spawn(async move {
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa".iter() {
            if slow.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        closed_by_server(&mut slow).await
    });
    // Makes one request, then keeps the connection open doing nothing.
    let mut idle = TcpStream::connect(app.addr).await.expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.expect("a response");
    assert_eq!(&first, b"HTTP/1.1 200");

    assert!(closed_by_server(&mut silent).await, "a silent connection is closed");
    assert!(trickle.await.expect("task"), "a trickling head is cut off");
    assert!(closed_by_server(&mut idle).await, "an idle keep-alive connection is closed");
    assert!(app.metric("http_connections_closed_total", &[("reason", "header_timeout")]).await >= 2.0);
    assert!(app.metric("http_connections_closed_total", &[("reason", "idle_timeout")]).await >= 1.0);
    // Requests that keep coming are not affected.
    assert_eq!(app.client.get(app.url("/healthz")).send().await.expect("get").status(), 200);
}

#[tokio::test]
async fn clients_beyond_the_connection_cap_wait_for_a_slot() {
    let dir = seeded_dir();
    let mut config = test_config(dir.path());
    config.http.max_connections = 2;
    config.http.header_read_timeout_ms = marquee_gateway::config::Millis(60_000);
    let app = spawn_with(config).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(TcpStream::connect(app.addr).await.expect("connect"));
    }
    // Both slots are taken: a third client is queued, not served.
    let mut third = TcpStream::connect(app.addr).await.expect("the kernel accepts into the backlog");
    third.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.expect("write");
    let mut response = Vec::new();
    let waiting = tokio::time::timeout(Duration::from_millis(500), third.read_to_end(&mut response)).await;
    assert!(waiting.is_err(), "not served while the cap is reached");
    drop(held.pop());
    tokio::time::timeout(Duration::from_secs(10), third.read_to_end(&mut response))
        .await
        .expect("served once a slot frees")
        .expect("read");
    assert!(String::from_utf8_lossy(&response).starts_with("HTTP/1.1 200"));
    drop(held);
    let metrics =
        app.client.get(app.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("http_connections_max{region=\"test-region\"} 2"), "{metrics}");
    assert!(app.metric("http_connections_limit_reached_total", &[]).await >= 1.0);
}

/// CPU seconds (user + system) the process `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat.rsplit_once(')').expect("comm").1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / 100.0
}

/// The process's peak resident memory, in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
    line.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()).expect("kB") / 1024
}

/// The real binary, under a 1,024 open-file limit, through every class of abuse at once and one
/// after another: each request stays within a CPU budget, the process within a memory budget,
/// and the file-descriptor limit never breaks accepting. Before, in a release build, these
/// requests took up to 17 s of CPU and 5.6 GB of memory each, and a fragment cycle crashed the
/// process (its validation recursed without end).
#[tokio::test]
async fn abuse_costs_the_real_process_little_cpu_and_memory() {
    // This test opens a thousand sockets of its own.
    let _ = rlimit::increase_nofile_limit(4096);
    let dir = seeded_dir();
    let mut child = isolated(&mut Command::new("sh"))
        .arg("-c")
        .arg(format!("ulimit -n 1024 && exec {BIN} --listen 127.0.0.1:0 --data-dir {}", dir.path().display()))
        .env("MARQUEE_DEMO__MOVIES", "0")
        .env("MARQUEE_RATE_LIMIT__ENABLED", "false")
        .env("MARQUEE_HTTP__HEADER_READ_TIMEOUT_MS", "1000")
        .env("MARQUEE_LOG__FILTER", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gateway starts");
    let pid = child.id();
    let url = served_url(&mut child).await;
    let client = reqwest::Client::new();
    let send = |query: &'static str| {
        let client = client.clone();
        let url = url.clone();
        async move {
            client
                .post(&url)
                .json(&json!({ "query": query }))
                .send()
                .await
                .expect("post")
                .bytes()
                .await
                .expect("body")
        }
    };

    const CPU_BUDGET_SECONDS: f64 = 1.0;
    for (what, query, code) in REFUSED {
        let before = cpu_seconds(pid);
        let body = send(query).await;
        let used = cpu_seconds(pid) - before;
        assert!(String::from_utf8_lossy(&body).contains(code), "{what}: {}", String::from_utf8_lossy(&body));
        assert!(used < CPU_BUDGET_SECONDS, "{what} cost {used:.2} s of CPU");
    }
    let before = cpu_seconds(pid);
    let body = send(INTROSPECTION).await;
    assert!(body.len() < 1_000_000, "the full introspection is {} bytes", body.len());
    assert!(cpu_seconds(pid) - before < CPU_BUDGET_SECONDS, "the standard introspection query");
    // Several at once: four of each.
    let before = cpu_seconds(pid);
    let all = REFUSED.iter().flat_map(|(_, q, _)| std::iter::repeat_n(*q, 4)).map(send);
    futures::future::join_all(all).await;
    assert!(cpu_seconds(pid) - before < CPU_BUDGET_SECONDS * 4.0, "twenty refusals at once");

    // A thousand idle sockets against 1,024 file descriptors: the cap fits under the limit, so
    // accepting never fails; the sockets are closed after the header timeout; service resumes.
    let metrics = client.get(url.replace("/graphql", "/metrics")).send().await.expect("metrics");
    let metrics = metrics.text().await.expect("text");
    let cap: u64 = metrics
        .lines()
        .find(|l| l.starts_with("http_connections_max"))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
        .expect("http_connections_max");
    assert!(cap < 1024, "the cap ({cap}) leaves room under the open-file limit");
    let addr = url.trim_start_matches("http://").trim_end_matches("/graphql").to_owned();
    let mut idle = Vec::new();
    for _ in 0..1_000 {
        if let Ok(Ok(socket)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(&addr)).await
        {
            idle.push(socket);
        }
    }
    let served =
        tokio::time::timeout(Duration::from_secs(30), client.get(url.replace("/graphql", "/healthz")).send())
            .await
            .expect("served within the header timeout plus the queue")
            .expect("healthz");
    assert_eq!(served.status(), 200);
    drop(idle);

    let peak = peak_rss_mib(pid);
    assert!(peak < 256, "peak RSS {peak} MiB");
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let output =
        tokio::task::spawn_blocking(move || child.wait_with_output()).await.expect("task").expect("wait");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("Too many open files"), "{stderr}");
}

#[tokio::test]
async fn behind_trusted_proxies_each_forwarded_client_has_its_own_rate() {
    // The test's connections come from 127.0.0.1: first as a trusted proxy (the region's
    // load balancer), then as an untrusted client forging the header.
    let dir = seeded_dir();
    let mut config = test_config(dir.path());
    config.rate_limit = RateLimitConfig { enabled: true, per_second: 1, burst: 3 };
    config.http.trusted_proxies = vec!["127.0.0.0/8".parse().expect("net")];
    let app = spawn_with(config).await;
    let statuses = |forwarded_for: &'static str| {
        let app = &app;
        async move {
            let mut statuses = Vec::new();
            for _ in 0..5 {
                let response = app
                    .client
                    .post(app.url("/graphql"))
                    .header("x-forwarded-for", forwarded_for)
                    .json(&json!({ "query": "{ genres { name } }" }))
                    .send()
                    .await
                    .expect("post");
                statuses.push(response.status().as_u16());
            }
            statuses
        }
    };
    // A client at 203.0.113.7, behind a CDN node (127.0.2.1) and the load balancer (the peer).
    assert_eq!(statuses("203.0.113.7, 127.0.2.1").await, [200, 200, 200, 429, 429]);
    // Another client behind the same proxies still has its whole burst: limits are per client,
    // not per proxy; and what a client writes left of the proxies' entries is not believed.
    assert_eq!(statuses("203.0.113.7, 198.51.100.1, 127.0.2.1").await, [200, 200, 200, 429, 429]);

    let dir = seeded_dir();
    let mut config = test_config(dir.path());
    config.rate_limit = RateLimitConfig { enabled: true, per_second: 1, burst: 3 };
    let app = spawn_with(config).await;
    let mut statuses = Vec::new();
    for i in 0..5 {
        let response = app
            .client
            .post(app.url("/graphql"))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .json(&json!({ "query": "{ genres { name } }" }))
            .send()
            .await
            .expect("post");
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429], "no trusted proxy: the header buys nothing");
}
