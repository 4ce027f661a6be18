//! The open-loop driver. Request i is due at `start + i / rate`, whatever happened to earlier
//! ones: a slow response delays nothing else, and latency is measured from the moment a
//! request was due (not from when it was finally sent), so queueing in the client or the
//! server shows up in the numbers instead of hiding behind a slower send rate (coordinated
//! omission). Every run is bounded by a duration and a request count, and targets must be
//! loopback addresses.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::workload::{Dialect, Generator, Method, Op, Planned};

/// Hard ceilings, whatever the command line says.
pub const MAX_DURATION: Duration = Duration::from_secs(900);
/// Most requests one run may send.
pub const MAX_REQUESTS: u64 = 10_000_000;

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The target is not on this machine.
    #[error("{0} is not a loopback address; load tests only target this machine")]
    NotLoopback(String),
    /// The target URL is malformed.
    #[error("bad target URL {0}")]
    BadUrl(String),
    /// The rate or bounds are out of range.
    #[error("{0}")]
    Bounds(String),
}

/// A target: a base URL on loopback.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// Name in reports.
    pub name: String,
    /// `http://127.0.0.1:port`.
    pub base_url: String,
    /// Sent with every request (e.g. `Cache-Control: no-cache` to bypass response caches).
    pub headers: Vec<(String, String)>,
    /// The schema it speaks.
    pub dialect: Dialect,
}

impl Target {
    /// Checks that `base_url` is `http://` on a loopback address.
    pub fn new(name: impl Into<String>, base_url: impl Into<String>) -> Result<Target, LoadError> {
        let base_url = base_url.into().trim_end_matches('/').to_owned();
        let rest = base_url.strip_prefix("http://").ok_or_else(|| LoadError::BadUrl(base_url.clone()))?;
        let host = rest.split('/').next().unwrap_or("");
        let host =
            host.rsplit_once(':').map_or(host, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
        let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return Err(LoadError::NotLoopback(host.to_owned()));
        }
        Ok(Target { name: name.into(), base_url, headers: Vec::new(), dialect: Dialect::Marquee })
    }

    /// A target by name, for a client that resolves names through a [`crate::dns::ClientRoute`]
    /// (whose resolver refuses any answer that is not loopback): `http://` with any host.
    pub fn named(name: impl Into<String>, base_url: impl Into<String>) -> Result<Target, LoadError> {
        let base_url = base_url.into().trim_end_matches('/').to_owned();
        if !base_url.starts_with("http://") {
            return Err(LoadError::BadUrl(base_url));
        }
        Ok(Target { name: name.into(), base_url, headers: Vec::new(), dialect: Dialect::Marquee })
    }
}

/// How much load, for how long.
#[derive(Clone, Debug, Serialize)]
pub struct LoadSpec {
    /// Requests per second.
    pub rate: f64,
    /// Longest the run lasts.
    pub duration: Duration,
    /// Most requests the run sends.
    pub max_requests: u64,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Requests allowed in flight before new ones are counted as client overload.
    pub max_in_flight: usize,
    /// Open loop: most requests on the wire at once (each holds a connection); requests due
    /// while all are busy wait for one, and that wait counts in their latency, as behind a
    /// load balancer's connection pool.
    pub connections: usize,
    /// Saturation mode: this many connections each send their next request as soon as the
    /// last one is answered (closed loop: measures capacity; `rate` is ignored).
    pub saturate: Option<usize>,
}

impl LoadSpec {
    fn check(&self) -> Result<(), LoadError> {
        if self.connections == 0 || self.connections > 4096 {
            return Err(LoadError::Bounds("connections must be 1 to 4096".into()));
        }
        if self.saturate.is_some_and(|n| n == 0 || n > 4096) {
            return Err(LoadError::Bounds("saturation connections must be 1 to 4096".into()));
        }
        if self.saturate.is_none() && !(self.rate.is_finite() && self.rate > 0.0 && self.rate <= 1_000_000.0)
        {
            return Err(LoadError::Bounds(format!("rate {} is not in (0, 1e6]", self.rate)));
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            return Err(LoadError::Bounds(format!("duration must be in (0, {MAX_DURATION:?}]")));
        }
        if self.max_requests == 0 || self.max_requests > MAX_REQUESTS {
            return Err(LoadError::Bounds(format!("max requests must be in [1, {MAX_REQUESTS}]")));
        }
        Ok(())
    }
}

/// How one request ended.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Ok,
    Status(u16),
    GraphqlErrors,
    Timeout,
    Transport,
    Overload,
}

impl Outcome {
    fn label(self) -> String {
        match self {
            Outcome::Ok => "ok".into(),
            Outcome::Status(s) => format!("http_{s}"),
            Outcome::GraphqlErrors => "graphql_errors".into(),
            Outcome::Timeout => "timeout".into(),
            Outcome::Transport => "transport".into(),
            Outcome::Overload => "client_overload".into(),
        }
    }
}

struct Sample {
    op: Op,
    /// Seconds since the run started, when the request was due.
    second: usize,
    latency_us: u64,
    outcome: Outcome,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 60 s at 3 significant digits; values above are clamped.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant bounds are valid")
}

/// Latency percentiles of a histogram, in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th.
    pub p90_ms: f64,
    /// 95th.
    pub p95_ms: f64,
    /// 99th.
    pub p99_ms: f64,
    /// 99.9th.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Percentiles {
    /// Of `h` (microseconds).
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// One second of a run.
#[derive(Clone, Debug, Serialize)]
pub struct SecondStats {
    /// Seconds since start.
    pub second: usize,
    /// Requests due in this second that completed OK.
    pub ok: u64,
    /// Requests due in this second that failed.
    pub errors: u64,
    /// Median latency (ms).
    pub p50_ms: f64,
    /// 99th percentile latency (ms).
    pub p99_ms: f64,
    /// Largest latency (ms).
    pub max_ms: f64,
}

/// Everything a run (or several slices of one target) measured.
pub struct Recorder {
    all: Histogram<u64>,
    ok: Histogram<u64>,
    per_op: BTreeMap<Op, Histogram<u64>>,
    per_second: Vec<(Histogram<u64>, u64, u64)>,
    outcomes: BTreeMap<String, u64>,
    /// Wall time spent sending load (sum over slices).
    pub elapsed: Duration,
    /// Requests scheduled.
    pub sent: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            all: histogram(),
            ok: histogram(),
            per_op: BTreeMap::new(),
            per_second: Vec::new(),
            outcomes: BTreeMap::new(),
            elapsed: Duration::ZERO,
            sent: 0,
        }
    }
}

impl Recorder {
    fn record(&mut self, s: &Sample, second_offset: usize) {
        let latency = s.latency_us.clamp(1, 60_000_000);
        let _ = self.all.record(latency);
        let second = s.second + second_offset;
        if self.per_second.len() <= second {
            self.per_second.resize_with(second + 1, || (histogram(), 0, 0));
        }
        let slot = &mut self.per_second[second];
        let _ = slot.0.record(latency);
        if s.outcome == Outcome::Ok {
            let _ = self.ok.record(latency);
            let _ = self.per_op.entry(s.op).or_insert_with(histogram).record(latency);
            slot.1 += 1;
        } else {
            slot.2 += 1;
        }
        *self.outcomes.entry(s.outcome.label()).or_insert(0) += 1;
    }

    /// Adds `other`'s samples; its per-second series continues after this one's.
    pub fn absorb(&mut self, other: &Recorder) {
        let _ = self.all.add(&other.all);
        let _ = self.ok.add(&other.ok);
        for (op, h) in &other.per_op {
            let _ = self.per_op.entry(*op).or_insert_with(histogram).add(h);
        }
        self.per_second.extend(other.per_second.iter().cloned());
        for (k, v) in &other.outcomes {
            *self.outcomes.entry(k.clone()).or_insert(0) += v;
        }
        self.elapsed += other.elapsed;
        self.sent += other.sent;
    }

    /// Completed requests (any outcome).
    pub fn completed(&self) -> u64 {
        self.all.len()
    }

    /// Requests that did not end OK, by kind.
    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.outcomes.iter().filter(|(k, _)| k.as_str() != "ok").map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Latency of every completed request, errors included.
    pub fn latency(&self) -> Percentiles {
        Percentiles::of(&self.all)
    }

    /// Latency per request kind (successful requests only).
    pub fn per_op(&self) -> BTreeMap<&'static str, Percentiles> {
        self.per_op.iter().map(|(op, h)| (op.name(), Percentiles::of(h))).collect()
    }

    /// The per-second series.
    pub fn seconds(&self) -> Vec<SecondStats> {
        self.per_second
            .iter()
            .enumerate()
            .map(|(second, (h, ok, errors))| SecondStats {
                second,
                ok: *ok,
                errors: *errors,
                p50_ms: h.value_at_quantile(0.5) as f64 / 1000.0,
                p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
                max_ms: h.max() as f64 / 1000.0,
            })
            .collect()
    }

    /// Successful requests per second of load.
    pub fn throughput(&self) -> f64 {
        let ok = self.outcomes.get("ok").copied().unwrap_or(0);
        if self.elapsed.is_zero() { 0.0 } else { ok as f64 / self.elapsed.as_secs_f64() }
    }
}

/// A shared HTTP client tuned for load: plain HTTP/1.1, a large idle pool, no proxies; with a
/// `route`, a client of one region (see [`crate::dns`]).
pub fn client(timeout: Duration, route: Option<&crate::dns::ClientRoute>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(4096).tcp_nodelay(true);
    if let Some(route) = route {
        builder = builder.dns_resolver(crate::dns::RegionResolver::new(route)).local_address(route.source);
    }
    builder.timeout(timeout).build().unwrap_or_default()
}

async fn send(client: &reqwest::Client, target: &Target, planned: Planned) -> Outcome {
    let url = format!("{}{}", target.base_url, planned.path);
    let mut request = match planned.method {
        Method::Get => client.get(url),
        Method::Post => {
            client.post(url).header("content-type", "application/json").body(planned.body.unwrap_or_default())
        }
    };
    if let Some(token) = planned.token {
        request = request.bearer_auth(&*token);
    }
    for (name, value) in &target.headers {
        request = request.header(name, value);
    }
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            match response.bytes().await {
                Ok(body) if status == 200 => {
                    if body.windows(9).any(|w| w == b"\"errors\":") {
                        Outcome::GraphqlErrors
                    } else {
                        Outcome::Ok
                    }
                }
                Ok(_) => Outcome::Status(status),
                Err(e) if e.is_timeout() => Outcome::Timeout,
                Err(_) => Outcome::Transport,
            }
        }
        Err(e) if e.is_timeout() => Outcome::Timeout,
        Err(_) => Outcome::Transport,
    }
}

/// Sends load from `generator` to `target` (open loop at `spec.rate`, or closed loop when
/// `spec.saturate` is set) and records it into `recorder`, whose per-second series continues
/// after what it already holds.
pub async fn run(
    client: &reqwest::Client,
    target: &Target,
    generator: &mut Generator,
    spec: &LoadSpec,
    recorder: &mut Recorder,
) -> Result<(), LoadError> {
    spec.check()?;
    if let Some(connections) = spec.saturate {
        saturate(client, target, generator, spec, connections, recorder).await;
        return Ok(());
    }
    let second_offset = recorder.per_second.len();
    let (tx, mut rx) = mpsc::unbounded_channel::<Sample>();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let period = Duration::from_secs_f64(1.0 / spec.rate);
    let start = Instant::now();
    let deadline = start + spec.duration;
    let mut sent = 0u64;
    let target = Arc::new(target.clone());
    let wire = Arc::new(tokio::sync::Semaphore::new(spec.connections));
    let collector = async {
        while let Some(sample) = rx.recv().await {
            recorder.record(&sample, second_offset);
        }
    };
    let scheduler = async {
        while sent < spec.max_requests {
            let due = start + period.mul_f64(sent as f64);
            if due >= deadline {
                break;
            }
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
            }
            let planned = generator.next_request();
            let second = due.duration_since(start).as_secs() as usize;
            sent += 1;
            if in_flight.load(Ordering::Relaxed) >= spec.max_in_flight {
                let _ = tx.send(Sample { op: planned.op, second, latency_us: 0, outcome: Outcome::Overload });
                continue;
            }
            in_flight.fetch_add(1, Ordering::Relaxed);
            let (client, target, tx, in_flight, wire) =
                (client.clone(), Arc::clone(&target), tx.clone(), Arc::clone(&in_flight), Arc::clone(&wire));
            tokio::spawn(async move {
                let op = planned.op;
                let outcome = match wire.acquire().await {
                    Ok(_permit) => send(&client, &target, planned).await,
                    Err(_) => Outcome::Transport,
                };
                let latency_us = u64::try_from(due.elapsed().as_micros()).unwrap_or(u64::MAX);
                in_flight.fetch_sub(1, Ordering::Relaxed);
                let _ = tx.send(Sample { op, second, latency_us, outcome });
            });
        }
        drop(tx);
    };
    tokio::join!(scheduler, collector);
    // Until the last reply: a target that falls behind stretches this, lowering its throughput.
    recorder.elapsed += start.elapsed();
    recorder.sent += sent;
    Ok(())
}

/// Closed loop: `connections` worker tasks, each sending its next request when the last
/// returns, until the duration or the request budget runs out. Each worker draws from its own
/// fork of the generator. Latency is each request's own.
async fn saturate(
    client: &reqwest::Client,
    target: &Target,
    generator: &mut Generator,
    spec: &LoadSpec,
    connections: usize,
    recorder: &mut Recorder,
) {
    let second_offset = recorder.per_second.len();
    let budget = Arc::new(std::sync::atomic::AtomicU64::new(spec.max_requests));
    let target = Arc::new(target.clone());
    let start = Instant::now();
    let deadline = start + spec.duration;
    let (tx, mut rx) = mpsc::unbounded_channel::<Sample>();
    for worker in 0..connections {
        let mut generator = generator.fork(worker as u64);
        let (client, target, tx, budget) =
            (client.clone(), Arc::clone(&target), tx.clone(), Arc::clone(&budget));
        tokio::spawn(async move {
            while Instant::now() < deadline
                && budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1)).is_ok()
            {
                let planned = generator.next_request();
                let op = planned.op;
                let sent_at = Instant::now();
                let outcome = send(&client, &target, planned).await;
                let second = sent_at.duration_since(start).as_secs() as usize;
                let latency_us = u64::try_from(sent_at.elapsed().as_micros()).unwrap_or(u64::MAX);
                let _ = tx.send(Sample { op, second, latency_us, outcome });
            }
        });
    }
    drop(tx);
    while let Some(sample) = rx.recv().await {
        recorder.record(&sample, second_offset);
    }
    recorder.elapsed += start.elapsed();
    recorder.sent += spec.max_requests - budget.load(Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_are_accepted() {
        assert!(Target::new("a", "http://127.0.0.1:8080").is_ok());
        assert!(Target::new("a", "http://localhost:8080/").is_ok());
        assert!(Target::new("a", "http://[::1]:8080").is_ok());
        assert!(matches!(Target::new("a", "http://10.0.0.1:8080"), Err(LoadError::NotLoopback(_))));
        assert!(matches!(Target::new("a", "http://example.com"), Err(LoadError::NotLoopback(_))));
        assert!(Target::new("a", "https://127.0.0.1").is_err());
    }

    #[test]
    fn bounds_are_enforced() {
        let spec = |rate: f64, secs: u64, max: u64| LoadSpec {
            rate,
            duration: Duration::from_secs(secs),
            max_requests: max,
            timeout: Duration::from_secs(1),
            max_in_flight: 10,
            connections: 8,
            saturate: None,
        };
        assert!(spec(100.0, 10, 1000).check().is_ok());
        assert!(spec(0.0, 10, 1000).check().is_err());
        assert!(spec(100.0, 0, 1000).check().is_err());
        assert!(spec(100.0, 10_000, 1000).check().is_err());
        assert!(spec(100.0, 10, 0).check().is_err());
    }
}
