//! Traces: the real `gateway` binary exports its spans over OTLP/HTTP to a receiver inside the
//! test (a real HTTP server decoding the protobuf the OpenTelemetry collector accepts). One
//! nested query sent with a W3C `traceparent` arrives as one tree: the client's span, the
//! request, its stages, a span per dataloader batch with its size and one store call under
//! each. Callers cannot make every request a trace. A collector that hangs costs requests
//! nothing, and what it loses is counted.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Attr;
use prost::Message;
use serde_json::{Value, json};

use crate::helpers::{gateway_command, served_url};

/// A span as received, with its attributes as text.
#[derive(Clone, Debug)]
struct Received {
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    attributes: HashMap<String, String>,
    service: String,
}

/// An OTLP/HTTP trace receiver on a port of its own.
struct Receiver {
    endpoint: String,
    spans: Arc<Mutex<Vec<Received>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        let spans: Arc<Mutex<Vec<Received>>> = Arc::default();
        let kept = spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| {
                let kept = kept.clone();
                async move {
                    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
                    let mut kept = kept.lock().expect("lock");
                    for resource in request.resource_spans {
                        let service = resource
                            .resource
                            .iter()
                            .flat_map(|r| &r.attributes)
                            .find(|kv| kv.key == "service.name")
                            .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
                            .unwrap_or_default();
                        for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                            kept.push(Received {
                                trace_id: hex(&span.trace_id),
                                span_id: hex(&span.span_id),
                                parent: hex(&span.parent_span_id),
                                name: span.name,
                                attributes: span
                                    .attributes
                                    .into_iter()
                                    .map(|kv| {
                                        (kv.key, text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
                                    })
                                    .collect(),
                                service: service.clone(),
                            });
                        }
                    }
                    // An empty ExportTraceServiceResponse.
                    ([(axum::http::header::CONTENT_TYPE, "application/x-protobuf")], Vec::<u8>::new())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        Receiver { endpoint, spans, server }
    }

    /// The spans of `trace` received so far.
    fn trace(&self, trace: &str) -> Vec<Received> {
        self.spans.lock().expect("lock").iter().filter(|s| s.trace_id == trace).cloned().collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: Option<&Attr>) -> String {
    match value {
        Some(Attr::StringValue(s)) => s.clone(),
        Some(Attr::IntValue(i)) => i.to_string(),
        Some(Attr::BoolValue(b)) => b.to_string(),
        Some(Attr::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// A running gateway, stopped (SIGTERM) when dropped, so a failed assertion leaves none behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

/// A gateway over a small demo catalog exporting to `endpoint` with the `[telemetry]`
/// settings in `env`, logging JSON lines (with tower-http's per-request lines) into the
/// returned buffer.
async fn gateway(
    dir: &std::path::Path,
    endpoint: &str,
    env: &[(&str, &str)],
) -> (Running, String, Arc<Mutex<Vec<String>>>) {
    let mut child = gateway_command()
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .env("MARQUEE_DEMO__MOVIES", "300")
        .env("MARQUEE_REGION", "trace-test")
        .env("MARQUEE_TELEMETRY__OTLP_ENDPOINT", endpoint)
        .env("MARQUEE_LOG__FORMAT", "json")
        .env("MARQUEE_LOG__FILTER", "info,tower_http=debug")
        .envs(env.iter().map(|(key, value)| (format!("MARQUEE_TELEMETRY__{key}"), value)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gateway starts");
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let stderr = child.stderr.take().expect("stderr is piped");
    let kept = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            kept.lock().expect("lock").push(line);
        }
    });
    let url = served_url(&mut child).await;
    (Running(child), url, lines)
}

const NESTED: &str =
    "query Nested($ids: [ID!]!) { movies(ids: $ids) { title cast(first: 3) { person { id name } } } }";

#[tokio::test]
async fn a_nested_query_arrives_as_one_tree_under_the_callers_span() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // The gateway keeps no trace of its own choosing, and one caller-sampled trace a second.
    let (child, url, logs) = gateway(
        dir.path(),
        &receiver.endpoint,
        &[("SAMPLING_RATIO", "0"), ("CLIENT_SAMPLED_PER_SECOND", "1")],
    )
    .await;
    let client = reqwest::Client::new();

    let (trace, caller_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let ids = ["tt0000001", "tt0000002", "tt0000003"];
    let body: Value = client
        .post(&url)
        .header("traceparent", format!("00-{trace}-{caller_span}-01"))
        .header("tracestate", "edge=varnish")
        .json(&json!({ "query": NESTED, "variables": { "ids": ids } }))
        .send()
        .await
        .expect("query")
        .json()
        .await
        .expect("json");
    assert!(body["errors"].is_null(), "{body}");
    let people: std::collections::HashSet<&str> = body["data"]["movies"]
        .as_array()
        .expect("movies")
        .iter()
        .flat_map(|m| m["cast"].as_array().expect("cast"))
        .map(|c| c["person"]["id"].as_str().expect("id"))
        .collect();
    assert!(!people.is_empty(), "the demo movies have casts: {body}");

    // A request whose caller decided not to sample is not exported (the ratio is 0)...
    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    let status = client
        .post(&url)
        .header("traceparent", format!("00-{unsampled}-b7ad6b7169203331-00"))
        .json(&json!({ "query": NESTED, "variables": { "ids": ids } }))
        .send()
        .await
        .expect("query")
        .status();
    assert_eq!(status, 200);
    // ...and a caller asking for a trace on every request gets about one a second.
    let forced: Vec<String> = (0..20).map(|i| format!("{:032x}", 0xf00d_0000_u128 + i)).collect();
    for trace in &forced {
        let status = client
            .post(&url)
            .header("traceparent", format!("00-{trace}-b7ad6b7169203331-01"))
            .json(&json!({ "query": "{ genres { name } }" }))
            .send()
            .await
            .expect("query")
            .status();
        assert_eq!(status, 200);
    }

    // Spans are batched for half a second before they are posted.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let spans = loop {
        let spans = receiver.trace(trace);
        let batches = spans.iter().filter(|s| s.name == "dataloader.batch").count();
        if spans.iter().any(|s| s.name == "POST /graphql") && batches >= 3 {
            // Let the rest of the export arrive.
            tokio::time::sleep(Duration::from_secs(1)).await;
            break receiver.trace(trace);
        }
        assert!(tokio::time::Instant::now() < deadline, "the trace arrived: {spans:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let by_id: HashMap<&str, &Received> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let children = |parent: &Received| -> Vec<&Received> {
        spans.iter().filter(|s| s.parent == parent.span_id).collect()
    };
    let one = |name: &str| -> &Received {
        let found: Vec<&Received> = spans.iter().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "one {name} span: {spans:#?}");
        found[0]
    };

    // The request continues the caller's trace, under the caller's span.
    let request = one("POST /graphql");
    assert_eq!(request.parent, caller_span, "{request:?}");
    assert_eq!(request.service, "marquee-gateway-trace-test");
    assert_eq!(request.attributes.get("status").map(String::as_str), Some("200"), "{request:?}");
    assert_eq!(request.attributes.get("route").map(String::as_str), Some("/graphql"));
    // Every other span descends from it.
    for span in &spans {
        let mut at = span;
        while at.span_id != request.span_id {
            at = by_id.get(at.parent.as_str()).unwrap_or_else(|| panic!("{span:?} hangs off the request"));
        }
    }

    // Its stages.
    let persisted = one("persisted_query");
    assert_eq!(persisted.parent, request.span_id);
    assert_eq!(persisted.attributes.get("by").map(String::as_str), Some("text"));
    let graphql = one("graphql");
    assert_eq!(graphql.parent, request.span_id);
    let stages: Vec<&str> = children(graphql).iter().map(|s| s.name.as_str()).collect();
    for stage in ["analyze", "validate", "execute", "serialize"] {
        assert!(stages.contains(&stage), "{stage} under graphql: {stages:?}");
    }

    // Each dataloader batch, with its size, runs under execution, and makes one store call;
    // a level's keys come in one batch, or in a few when its resolvers were not all polled
    // before the batch left (the batch delay is 0), each key in one of them.
    let execute = one("execute");
    let batches: Vec<&Received> = spans.iter().filter(|s| s.name == "dataloader.batch").collect();
    let mut keys: HashMap<String, usize> = HashMap::new();
    for batch in &batches {
        assert_eq!(batch.parent, execute.span_id, "{batch:?}");
        let calls = children(batch);
        assert_eq!(calls.len(), 1, "one store call per batch: {batch:?} {calls:?}");
        assert_eq!(calls[0].name, "store");
        assert_eq!(calls[0].attributes.get("keys"), batch.attributes.get("keys"), "{calls:?}");
        *keys.entry(batch.attributes["loader"].clone()).or_default() +=
            batch.attributes["keys"].parse::<usize>().expect("a number");
    }
    let expected: HashMap<String, usize> =
        [("movie".into(), 3), ("credits".into(), 3), ("person".into(), people.len())].into();
    assert_eq!(keys, expected, "keys per loader, over {} batches: {batches:#?}", batches.len());

    // Nothing names what the caller asked for: no movie id from the variables, no query text.
    for span in &spans {
        for (key, value) in &span.attributes {
            assert!(
                !value.contains("tt000000")
                    && !value.contains("nm000")
                    && !value.contains("Nested")
                    && !value.contains("query"),
                "{}: {key}={value}",
                span.name
            );
        }
    }

    // The unsampled request's spans were not exported, nor most of the forced ones.
    assert!(receiver.trace(unsampled).is_empty(), "{:?}", receiver.trace(unsampled));
    let kept = forced.iter().filter(|t| !receiver.trace(t).is_empty()).count();
    assert!(kept <= forced.len() / 2, "{kept} of {} caller-sampled requests traced", forced.len());

    // The request's log lines carry the trace id.
    let logged = logs.lock().expect("lock").clone();
    let line = logged
        .iter()
        .find(|l| l.contains("finished processing request") && l.contains(trace))
        .unwrap_or_else(|| panic!("a request log line with the trace id: {logged:#?}"));
    let line: Value = serde_json::from_str(line).expect("a JSON log line");
    assert_eq!(line["span"]["trace_id"], trace, "{line}");

    // And the exporter counts what it sent.
    let metrics = client
        .get(url.replace("/graphql", "/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let exported = metric(&metrics, "trace_spans_total{outcome=\"exported\"");
    assert!(exported >= spans.len() as f64, "{exported} exported: {metrics}");
    // Background work (the readiness probe's ping every second) and probes and scrapes (the
    // /metrics above) make no trace of their own.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let background: Vec<Received> = receiver
        .spans
        .lock()
        .expect("lock")
        .iter()
        .filter(|s| s.trace_id != trace && !forced.contains(&s.trace_id))
        .cloned()
        .collect();
    assert!(background.is_empty(), "only the request's trace: {background:#?}");
    drop(child);
    receiver.server.abort();
}

#[tokio::test]
async fn a_collector_that_hangs_costs_requests_nothing_and_what_it_loses_is_counted() {
    // A collector that accepts connections and never answers: a listener nobody accepts on
    // (the kernel completes the handshakes), held for the whole test.
    let hanging = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", hanging.local_addr().expect("addr"));
    let dir = tempfile::tempdir().expect("tempdir");
    // Each export waits 2 s for its answer; meanwhile nothing empties the queue of 16.
    let settings = [("EXPORT_TIMEOUT_MS", "2000"), ("QUEUE_SPANS", "16")];
    let (child, url, _logs) = gateway(dir.path(), &endpoint, &settings).await;
    let client = reqwest::Client::new();
    let metrics_url = url.replace("/graphql", "/metrics");
    // Requests keep coming (at most 400, for at most 30 s) until the queue has overflowed and
    // an export has timed out; every one is answered.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for sent in 0.. {
        let response = client
            .post(&url)
            .json(&json!({ "query": NESTED, "variables": { "ids": ["tt0000001", "tt0000002"] } }))
            .send()
            .await
            .expect("query");
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.expect("json");
        assert!(body["errors"].is_null(), "{body}");
        let metrics = client.get(&metrics_url).send().await.expect("metrics").text().await.expect("text");
        let failed = metric(&metrics, "trace_spans_total{outcome=\"dropped_export_failed\"");
        let full = metric(&metrics, "trace_spans_total{outcome=\"dropped_queue_full\"");
        if failed > 0.0 && full > 0.0 {
            assert_eq!(metric(&metrics, "trace_spans_total{outcome=\"exported\""), 0.0, "{metrics}");
            break;
        }
        assert!(
            sent < 400 && tokio::time::Instant::now() < deadline,
            "lost spans are counted after {sent} requests: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(child);
    drop(hanging);
}

/// The value of the first series in `metrics` whose line starts with `prefix`.
fn metric(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{prefix} in {metrics}"))
}
